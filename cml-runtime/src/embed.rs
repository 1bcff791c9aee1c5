//! What `fhe_model!` embeds in generated code, and the runtime it calls.
//!
//! The macro compiles a spec at build time and writes the result as
//! `static` images made only of constants: the integer program (weights,
//! constants, tables), the input encoder, the output decoder and the chosen
//! FHE parameters. At run time [`Runtime::new`] turns an image back into the
//! runtime types once, and the generated typed methods call it.
//!
//! FHE methods of generated code are wrapped in [`__fhe!`](crate::__fhe),
//! which expands to nothing when this crate is built without its `fhe`
//! feature, so that generated code compiles (clear and simulate only) without
//! `tfhe`.

use crate::encoding::Encoding;
use crate::error::{DataError, Error};
use crate::models::{Decoder, Encoder, Prediction};
use crate::params::FheParams;
use crate::program::{Analysis, Interval, Op, Program, Table};
use crate::quant::Quantizer;
use crate::spec::{Link, Standardize, Task};

/// A program as constants.
#[derive(Debug)]
pub struct ProgramImage {
    /// Range `(lo, hi)` of each input.
    pub inputs: &'static [(i64, i64)],
    /// Ops in order.
    pub ops: &'static [OpImage],
    /// Lookup tables.
    pub tables: &'static [TableImage],
    /// Output value ids.
    pub outputs: &'static [usize],
    /// Groups of values of which at most one is nonzero
    /// ([`Program::exclusive`]).
    pub exclusive: &'static [&'static [usize]],
}

/// One op as constants (see [`Op`]).
#[derive(Debug)]
pub enum OpImage {
    /// `constant + Σ weight · value`.
    Linear {
        /// `(value, weight)` pairs.
        terms: &'static [(usize, i64)],
        /// Constant.
        constant: i64,
    },
    /// A table lookup.
    Lut {
        /// Value read.
        input: usize,
        /// Table index.
        table: usize,
    },
    /// Rounding of low bits.
    Round {
        /// Value rounded.
        input: usize,
        /// Low bits removed.
        bits: u32,
        /// Exact or approximate.
        exact: bool,
    },
}

/// A lookup table as constants (see [`Table`]).
#[derive(Debug)]
pub struct TableImage {
    /// Name for reports.
    pub name: &'static str,
    /// Input of entry 0.
    pub offset: i64,
    /// Entries.
    pub entries: &'static [i64],
}

/// A compiled model as constants.
#[derive(Debug)]
pub struct ModelImage {
    /// Spec name.
    pub name: &'static str,
    /// The integer program.
    pub program: ProgramImage,
    /// Standardization `(mean, scale)`, if any.
    pub standardize: Option<(&'static [f64], &'static [f64])>,
    /// One input quantizer per feature.
    pub quantizers: &'static [Quantizer],
    /// Digit split of the quantized features (see [`Encoder::low_bits`]).
    pub low_bits: Option<u8>,
    /// Features that take a missing value (see [`Encoder::missing`]).
    pub missing: &'static [usize],
    /// Output scales.
    pub scales: &'static [f64],
    /// Output zero points.
    pub zero_points: &'static [i64],
    /// Classification or regression.
    pub task: Task,
    /// Inverse link.
    pub link: Link,
    /// FHE parameters chosen at compile time.
    pub params: FheParams,
}

impl ProgramImage {
    /// The runtime program.
    pub fn to_program(&self) -> Program {
        let mut p = Program::new(
            self.inputs
                .iter()
                .map(|&(lo, hi)| Interval::new(lo, hi))
                .collect(),
        );
        for t in self.tables {
            p.add_table(Table {
                name: t.name.to_owned(),
                offset: t.offset,
                entries: t.entries.to_vec(),
            });
        }
        for op in self.ops {
            p.push(match op {
                OpImage::Linear { terms, constant } => Op::Linear {
                    terms: terms.to_vec(),
                    constant: *constant,
                },
                OpImage::Lut { input, table } => Op::Lut {
                    input: *input,
                    table: *table,
                },
                OpImage::Round { input, bits, exact } => Op::Round {
                    input: *input,
                    bits: *bits,
                    exact: *exact,
                },
            });
        }
        p.outputs = self.outputs.to_vec();
        p.exclusive = self.exclusive.iter().map(|g| g.to_vec()).collect();
        p
    }
}

/// The runtime form of a [`ModelImage`], built once per generated type.
#[derive(Debug)]
pub struct Runtime {
    /// The program.
    pub program: Program,
    /// Its analysis.
    pub analysis: Analysis,
    /// Client-side encoder.
    pub encoder: Encoder,
    /// Client-side decoder.
    pub decoder: Decoder,
    /// FHE parameters.
    pub params: FheParams,
    /// Ranges of the outputs (for decryption).
    pub output_ranges: Vec<Interval>,
    /// Where each value sits in the torus.
    pub encoding: Encoding,
}

impl Runtime {
    /// Rebuilds the runtime types from an image.
    ///
    /// # Panics
    /// Only if the image was not produced by `fhe_model!`: the macro
    /// analyzes the same program at compile time and refuses to emit one
    /// that does not analyze.
    pub fn new(image: &ModelImage) -> Self {
        let program = image.program.to_program();
        let analysis = program
            .analyze()
            .expect("fhe_model! images are analyzed at compile time");
        let output_ranges = program
            .outputs
            .iter()
            .map(|&o| analysis.values[o].range)
            .collect();
        let encoding = Encoding::of(&program, &analysis);
        Self {
            encoder: Encoder {
                standardize: image.standardize.map(|(mean, scale)| Standardize {
                    mean: mean.to_vec(),
                    scale: scale.to_vec(),
                }),
                quantizers: image.quantizers.to_vec(),
                low_bits: image.low_bits,
                missing: image.missing.to_vec(),
            },
            decoder: Decoder {
                scales: image.scales.to_vec(),
                zero_points: image.zero_points.to_vec(),
                task: image.task,
                link: image.link,
            },
            params: image.params,
            output_ranges,
            encoding,
            analysis,
            program,
        }
    }

    /// The deployment bundles of this model ([`crate::bundle`]).
    pub fn bundle(&self, id: crate::bundle::Identity<'_>) -> crate::bundle::ServerBundle {
        crate::bundle::from_parts(
            id,
            &self.program,
            &self.analysis,
            &self.encoder,
            &self.decoder,
            &self.params,
        )
    }

    /// Quantizes one sample.
    pub fn quantize(&self, x: &[f64]) -> Result<Vec<i64>, DataError> {
        self.encoder.encode(x)
    }

    /// Clear prediction (exact integers).
    pub fn predict(&self, x: &[f64]) -> Result<Prediction, Error> {
        let q = self.quantize(x)?;
        let out = self.program.eval_clear(&q)?;
        Ok(self.decoder.predict(self.decoder.scores(&out)))
    }

    /// Simulated prediction (the same integers, no cryptography).
    pub fn simulate(&self, x: &[f64]) -> Result<Prediction, Error> {
        let q = self.quantize(x)?;
        let sim = crate::backend::simulate::Simulator::new(&self.program, &self.params);
        let out = sim.run(&q)?;
        Ok(self.decoder.predict(self.decoder.scores(&out)))
    }
}

#[cfg(feature = "fhe")]
mod fhe {
    use super::Runtime;
    use crate::backend::tfhe::{ClientKey, EncryptedInput, EncryptedOutput, EvaluationKeys};
    use crate::error::{Error, FheError};
    use crate::models::Prediction;

    impl Runtime {
        /// Generates a client key and its evaluation keys.
        pub fn keygen(&self) -> (ClientKey, EvaluationKeys) {
            let client = ClientKey::generate(&self.params);
            let keys = client.evaluation_keys();
            (client, keys)
        }

        /// Quantizes and encrypts one sample.
        pub fn encrypt(&self, client: &ClientKey, x: &[f64]) -> Result<EncryptedInput, Error> {
            if client.params() != &self.params {
                return Err(FheError::Mismatch(
                    "this client key was generated for another model's parameters".into(),
                )
                .into());
            }
            let q = self.quantize(x)?;
            Ok(client.encrypt(&q, self.encoding.inputs(&self.program))?)
        }

        /// Runs the program on encrypted inputs (server side).
        pub fn run(
            &self,
            keys: &EvaluationKeys,
            input: &EncryptedInput,
        ) -> Result<EncryptedOutput, FheError> {
            keys.run(&self.program, input)
        }

        /// Decrypts and decodes outputs.
        pub fn decrypt(
            &self,
            client: &ClientKey,
            output: &EncryptedOutput,
        ) -> Result<Prediction, Error> {
            let bits = self.encoding.outputs(&self.program);
            let out = client.decrypt(output, &self.output_ranges, &bits)?;
            Ok(self.decoder.predict(self.decoder.scores(&out)))
        }
    }
}

/// Copies the first `N` values into an array (generated code's typed scores).
pub fn to_array<const N: usize>(values: &[f64]) -> [f64; N] {
    let mut out = [0.0; N];
    for (o, v) in out.iter_mut().zip(values) {
        *o = *v;
    }
    out
}

/// Keeps its input when this crate has the `fhe` feature, drops it
/// otherwise. `fhe_model!` wraps the FHE methods of generated types in it.
#[cfg(feature = "fhe")]
#[doc(hidden)]
#[macro_export]
macro_rules! __fhe {
    ($($item:item)*) => { $($item)* };
}

/// Keeps its input when this crate has the `fhe` feature, drops it
/// otherwise. `fhe_model!` wraps the FHE methods of generated types in it.
#[cfg(not(feature = "fhe"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __fhe {
    ($($item:item)*) => {};
}

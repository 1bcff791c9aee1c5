//! Model families lowered to integer programs, and the compiled model that
//! predicts in clear, in simulation or under FHE.
//!
//! ```
//! use cml_runtime::{CompiledModel, Mode, ModelSpec};
//! use cml_runtime::models::CompileOptions;
//!
//! let spec = ModelSpec::from_yaml_str(r#"
//! format: cml/v1
//! name: tiny
//! model:
//!   linear:
//!     estimator: logistic_regression
//!     task: classification
//!     link: sigmoid
//!     features: [a, b]
//!     classes: [no, yes]
//!     coefficients: [[2.0, -1.0]]
//!     intercepts: [0.5]
//! quantization:
//!   input_ranges: [[0.0, 1.0], [0.0, 1.0]]
//! "#, "tiny.yaml").unwrap();
//! let model = CompiledModel::compile(&spec, &CompileOptions::default()).unwrap();
//! let x = ndarray::array![[1.0, 0.0], [0.0, 1.0]];
//! let p = model.predict(x.view(), Mode::Clear).unwrap();
//! assert_eq!(p[0].class(), Some(1));
//! assert_eq!(p[1].class(), Some(0));
//! ```

pub mod linear;
pub mod nn;
pub mod tree;

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backend;
use crate::encoding::Encoding;
use crate::error::{DataError, Error};
use crate::params::{self, FheParams, Needs, PFail};
use crate::program::{Analysis, Program};
use crate::quant::Quantizer;
use crate::spec::{Link, ModelKind, ModelSpec, Standardize, Task};

/// How to run a prediction (Concrete ML's `fhe=` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Exact integers in clear (`fhe="disable"`).
    Clear,
    /// The same integers through the simulator, which can inject bootstrap
    /// failures at their predicted rate (`fhe="simulate"`).
    Simulate,
    /// Real TFHE: encrypt, run on ciphertexts, decrypt (`fhe="execute"`).
    Execute,
}

/// Options of [`CompiledModel::compile`].
#[derive(Debug, Clone, Default)]
pub struct CompileOptions<'a> {
    /// Data to calibrate input ranges on, when the spec has none.
    pub calibration: Option<ArrayView2<'a, f64>>,
    /// Failure-probability target.
    pub p_fail: PFail,
}

/// Client-side input encoding: standardization then quantization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// Standardization applied first, if any.
    pub standardize: Option<Standardize>,
    /// One quantizer per feature.
    pub quantizers: Vec<Quantizer>,
    /// When set, each quantized feature `q` is sent as two program inputs,
    /// `q >> b` and `q mod 2^b` (tree ensembles); otherwise as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_bits: Option<u8>,
    /// Features that may be missing (NaN), in increasing order: a missing
    /// one is sent as its lowest grid value, and after every feature's
    /// digits comes one *missing bit* per listed feature (1: missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<usize>,
}

impl Encoder {
    /// Quantizes one row of features into the program's inputs.
    pub fn encode(&self, x: &[f64]) -> Result<Vec<i64>, DataError> {
        let q = self.quantize(x)?;
        let mut inputs: Vec<i64> = match self.low_bits {
            None => q,
            Some(b) => {
                let mask = (1i64 << b) - 1;
                q.iter().flat_map(|&v| [v >> b, v & mask]).collect()
            }
        };
        inputs.extend(self.missing.iter().map(|&j| i64::from(x[j].is_nan())));
        Ok(inputs)
    }

    /// Checks that the encoder can encode any row without overflow or
    /// panic (what a bundle read from a file must satisfy): quantizers of
    /// 1–32 bits with a nonzero finite scale and an ordered integer range,
    /// standardization of the right length with positive finite scales,
    /// missing-value features in range and increasing, 1–32 low bits.
    pub fn check(&self) -> Result<(), String> {
        for (j, q) in self.quantizers.iter().enumerate() {
            // The width first: the other checks shift by it.
            let ok = (1..=32).contains(&q.n_bits)
                && (q.offset == 0 || q.offset == 1i64 << (q.n_bits - 1))
                && q.scale.is_finite()
                && q.scale != 0.0
                && q.zero_point.unsigned_abs() <= 1 << 40;
            if !ok || q.q_min() > q.q_max() {
                return Err(format!("feature {j}: quantizer {q:?} is not one cml makes"));
            }
        }
        if let Some(b) = self.low_bits {
            if !(1..=32).contains(&b) {
                return Err(format!("{b} low bits per feature"));
            }
        }
        if let Some(s) = &self.standardize {
            let n = self.quantizers.len();
            if s.mean.len() != n || s.scale.len() != n {
                return Err(format!(
                    "standardization of {} and {} values for {n} features",
                    s.mean.len(),
                    s.scale.len()
                ));
            }
            if !s.mean.iter().all(|m| m.is_finite())
                || !s.scale.iter().all(|v| v.is_finite() && *v > 0.0)
            {
                return Err(
                    "standardization with a non-finite mean or a non-positive scale".into(),
                );
            }
        }
        if !self.missing.windows(2).all(|w| w[0] < w[1])
            || self
                .missing
                .last()
                .is_some_and(|&j| j >= self.quantizers.len())
        {
            return Err(format!(
                "missing-value features {:?} are not increasing feature indices",
                self.missing
            ));
        }
        Ok(())
    }

    /// Number of program inputs: the digits of every feature, then the
    /// missing bits.
    pub fn n_inputs(&self) -> usize {
        let digits = if self.low_bits.is_some() { 2 } else { 1 };
        digits * self.quantizers.len() + self.missing.len()
    }

    /// Quantizes one row of features, one integer per feature (a missing
    /// value of a [`Encoder::missing`] feature becomes its lowest grid
    /// value).
    pub fn quantize(&self, x: &[f64]) -> Result<Vec<i64>, DataError> {
        if x.len() != self.quantizers.len() {
            return Err(DataError::Shape {
                expected: self.quantizers.len(),
                found: x.len(),
            });
        }
        x.iter()
            .enumerate()
            .map(|(j, &v)| {
                if v.is_nan() && self.missing.binary_search(&j).is_ok() {
                    return Ok(self.quantizers[j].q_min());
                }
                if !v.is_finite() {
                    return Err(DataError::NotFinite {
                        row: 0,
                        feature: j,
                        value: v,
                    });
                }
                let v = match &self.standardize {
                    Some(s) => (v - s.mean[j]) / s.scale[j],
                    None => v,
                };
                Ok(self.quantizers[j].quantize(v))
            })
            .collect()
    }
}

/// Client-side output decoding: dequantization then the inverse link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoder {
    /// Real value of one integer step, per output.
    pub scales: Vec<f64>,
    /// Integer that stands for a zero score, per output.
    pub zero_points: Vec<i64>,
    /// Classification or regression.
    pub task: Task,
    /// Inverse link.
    pub link: Link,
}

impl Decoder {
    /// Real scores from output integers: `scale · (q − zero_point)`.
    pub fn scores(&self, out: &[i64]) -> Vec<f64> {
        out.iter()
            .zip(self.scales.iter().zip(&self.zero_points))
            .map(|(&q, (s, z))| s * (q as f64 - *z as f64))
            .collect()
    }

    /// A prediction from real scores.
    pub fn predict(&self, scores: Vec<f64>) -> Prediction {
        Prediction::from_scores(scores, self.task, self.link)
    }
}

/// The model's answer for one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Raw scores (decision function or linear predictor) before the link.
    pub scores: Vec<f64>,
    /// The predicted class index or value.
    pub output: Output,
    /// Class probabilities, for probabilistic classifiers.
    pub probabilities: Option<Vec<f64>>,
}

/// A predicted class or value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Index into the class names.
    Class(usize),
    /// Regression value.
    Value(f64),
}

impl Prediction {
    /// Applies the task's decision rule and the link to raw scores.
    pub fn from_scores(scores: Vec<f64>, task: Task, link: Link) -> Self {
        match task {
            Task::Classification => {
                let class = if scores.len() == 1 {
                    usize::from(scores[0] > 0.0)
                } else {
                    argmax(&scores)
                };
                let probabilities = match link {
                    Link::Sigmoid => {
                        let p = 1.0 / (1.0 + (-scores[0]).exp());
                        Some(vec![1.0 - p, p])
                    }
                    Link::Softmax => Some(softmax(&scores)),
                    Link::Identity | Link::Exp => None,
                };
                Self {
                    output: Output::Class(class),
                    scores,
                    probabilities,
                }
            }
            Task::Regression => {
                let value = match link {
                    Link::Exp => scores[0].exp(),
                    _ => scores[0],
                };
                Self {
                    output: Output::Value(value),
                    scores,
                    probabilities: None,
                }
            }
        }
    }

    /// The class index, for classifiers.
    pub fn class(&self) -> Option<usize> {
        match self.output {
            Output::Class(c) => Some(c),
            Output::Value(_) => None,
        }
    }

    /// The predicted value as a number (class index for classifiers).
    pub fn value(&self) -> f64 {
        match self.output {
            Output::Class(c) => c as f64,
            Output::Value(v) => v,
        }
    }
}

fn argmax(xs: &[f64]) -> usize {
    xs.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn softmax(xs: &[f64]) -> Vec<f64> {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = xs.iter().map(|x| (x - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// A model ready to run: its integer program, the client's encoder and
/// decoder, and the crypto parameters chosen for it.
#[derive(Debug)]
pub struct CompiledModel {
    /// The spec it was compiled from.
    pub spec: ModelSpec,
    /// The integer program.
    pub program: Program,
    /// Ranges and noise of every value.
    pub analysis: Analysis,
    /// Client-side input encoding.
    pub encoder: Encoder,
    /// Client-side output decoding.
    pub decoder: Decoder,
    /// Crypto parameters for the program.
    pub params: FheParams,
    /// Where each value sits in the torus.
    pub encoding: Encoding,
    #[cfg(feature = "fhe")]
    keys: std::sync::OnceLock<(backend::tfhe::ClientKey, backend::tfhe::EvaluationKeys)>,
}

impl CompiledModel {
    /// Checks the spec, quantizes the model, builds its program and chooses
    /// its parameters.
    pub fn compile(spec: &ModelSpec, options: &CompileOptions<'_>) -> Result<Self, Error> {
        spec.check(format!("spec `{}`", spec.name))?;
        let (program, encoder, decoder) = match &spec.model {
            ModelKind::Linear(l) => {
                let low = linear::lower(l, &spec.quantization, options.calibration)?;
                (low.program, low.encoder, low.decoder)
            }
            ModelKind::Ensemble(e) => {
                let low = tree::lower(e, &spec.quantization, options.calibration, options.p_fail)?;
                (low.program, low.encoder, low.decoder)
            }
            ModelKind::Network(n) => {
                let low = nn::lower(n, &spec.quantization, options.calibration)?;
                (low.program, low.encoder, low.decoder)
            }
        };
        Self::from_parts(spec.clone(), program, encoder, decoder, options.p_fail)
    }

    /// Assembles a compiled model from an already built program.
    pub fn from_parts(
        spec: ModelSpec,
        program: Program,
        encoder: Encoder,
        decoder: Decoder,
        p_fail: PFail,
    ) -> Result<Self, Error> {
        let analysis = program.analyze()?;
        let params = params::choose(&Needs::of(&program, &analysis), p_fail)?;
        let encoding = Encoding::of(&program, &analysis);
        Ok(Self {
            spec,
            program,
            analysis,
            encoder,
            decoder,
            params,
            encoding,
            #[cfg(feature = "fhe")]
            keys: std::sync::OnceLock::new(),
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.encoder.quantizers.len()
    }

    /// The float model's prediction for one sample (no quantization).
    pub fn predict_float(&self, x: &[f64]) -> Result<Prediction, DataError> {
        self.check_row(x, 0)?;
        let scores = match &self.spec.model {
            ModelKind::Linear(l) => linear::float_scores(l, x),
            ModelKind::Ensemble(e) => e.float_scores(x),
            ModelKind::Network(n) => n.float_scores(x),
        };
        Ok(self.decoder.predict(scores))
    }

    fn check_row(&self, x: &[f64], row: usize) -> Result<(), DataError> {
        if x.len() != self.n_features() {
            return Err(DataError::Shape {
                expected: self.n_features(),
                found: x.len(),
            });
        }
        let missing_ok = |j: usize| self.encoder.missing.binary_search(&j).is_ok();
        match x
            .iter()
            .enumerate()
            .position(|(j, v)| !(v.is_finite() || (v.is_nan() && missing_ok(j))))
        {
            Some(feature) => Err(DataError::NotFinite {
                row,
                feature,
                value: x[feature],
            }),
            None => Ok(()),
        }
    }

    /// The proven range of each output, which decryption needs.
    pub fn output_ranges(&self) -> Vec<crate::program::Interval> {
        self.program
            .outputs
            .iter()
            .map(|&o| self.analysis.values[o].range)
            .collect()
    }

    /// Quantizes one sample into the program's integer inputs.
    pub fn quantize(&self, x: &[f64]) -> Result<Vec<i64>, DataError> {
        self.encoder.encode(x)
    }

    /// Decodes the program's integer outputs into a prediction.
    pub fn decode(&self, out: &[i64]) -> Prediction {
        self.decoder.predict(self.decoder.scores(out))
    }

    /// Predicts every row of `x`, in parallel over rows.
    pub fn predict(&self, x: ArrayView2<'_, f64>, mode: Mode) -> Result<Vec<Prediction>, Error> {
        if x.ncols() != self.n_features() {
            return Err(DataError::Shape {
                expected: self.n_features(),
                found: x.ncols(),
            }
            .into());
        }
        for (i, row) in x.rows().into_iter().enumerate() {
            self.check_row(row.as_slice().unwrap_or(&row.to_vec()), i)?;
        }
        let rows: Vec<Vec<f64>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
        match mode {
            Mode::Clear => rows
                .par_iter()
                .map(|r| {
                    let q = self.quantize(r)?;
                    Ok(self.decode(&self.program.eval_clear(&q)?))
                })
                .collect(),
            Mode::Simulate => {
                let sim = backend::simulate::Simulator::new(&self.program, &self.params);
                rows.par_iter()
                    .map(|r| {
                        let q = self.quantize(r)?;
                        Ok(self.decode(&sim.run(&q)?))
                    })
                    .collect()
            }
            Mode::Execute => self.predict_execute(&rows),
        }
    }

    #[cfg(feature = "fhe")]
    fn predict_execute(&self, rows: &[Vec<f64>]) -> Result<Vec<Prediction>, Error> {
        let (client, server) = self.keys();
        rows.par_iter()
            .map(|r| {
                let ct = self.encrypt(client, r)?;
                let out = server.run(&self.program, &ct)?;
                self.decrypt(client, &out)
            })
            .collect()
    }

    /// Client: quantizes and encrypts one sample, each input at its width.
    #[cfg(feature = "fhe")]
    pub fn encrypt(
        &self,
        client: &backend::tfhe::ClientKey,
        x: &[f64],
    ) -> Result<backend::tfhe::EncryptedInput, Error> {
        let q = self.quantize(x)?;
        Ok(client.encrypt(&q, self.encoding.inputs(&self.program))?)
    }

    /// Client: decrypts outputs into the program's integers.
    #[cfg(feature = "fhe")]
    pub fn decrypt_integers(
        &self,
        client: &backend::tfhe::ClientKey,
        output: &backend::tfhe::EncryptedOutput,
    ) -> Result<Vec<i64>, Error> {
        let bits = self.encoding.outputs(&self.program);
        Ok(client.decrypt(output, &self.output_ranges(), &bits)?)
    }

    /// Client: decrypts and decodes outputs into a prediction.
    #[cfg(feature = "fhe")]
    pub fn decrypt(
        &self,
        client: &backend::tfhe::ClientKey,
        output: &backend::tfhe::EncryptedOutput,
    ) -> Result<Prediction, Error> {
        Ok(self.decode(&self.decrypt_integers(client, output)?))
    }

    #[cfg(not(feature = "fhe"))]
    fn predict_execute(&self, _rows: &[Vec<f64>]) -> Result<Vec<Prediction>, Error> {
        Err(crate::error::FheError::Mismatch(
            "this build of cml-runtime has no `fhe` feature: Mode::Execute is unavailable".into(),
        )
        .into())
    }

    /// The keys [`Mode::Execute`] uses, generated on first use.
    #[cfg(feature = "fhe")]
    pub fn keys(&self) -> &(backend::tfhe::ClientKey, backend::tfhe::EvaluationKeys) {
        self.keys.get_or_init(|| {
            let client = backend::tfhe::ClientKey::generate(&self.params);
            let server = client.evaluation_keys();
            (client, server)
        })
    }
}

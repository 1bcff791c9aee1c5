//! Real TFHE execution through `tfhe`'s `core_crypto` layer.
//!
//! Keys are split by role, as a type-level fact:
//! - [`ClientKey`] holds the secret keys: it generates the evaluation keys,
//!   encrypts inputs and decrypts outputs. It never leaves the client; its
//!   serialization is explicit ([`ClientKey::to_bytes`]) and of its own kind.
//! - [`EvaluationKeys`] hold only public material (keyswitching and bootstrap
//!   keys): everything a server needs to run a program, nothing that decrypts.
//!
//! Every value is one LWE ciphertext with its message at
//! `Δ = 2^(64 − message_bits)`. Linear ops with clear integer weights are
//! leveled (wrapping `u64` arithmetic on the ciphertext, which is exact for
//! signed weights modulo 2^64). A table lookup shifts its input to start at 0,
//! keyswitches to the small key, applies a centered modulus switch and blind
//! rotation over an accumulator that holds the table, and extracts the result
//! under the input key.
//!
//! ```no_run
//! use cml_runtime::backend::tfhe::ClientKey;
//! use cml_runtime::params::{choose, Needs, PFail};
//! use cml_runtime::program::{Interval, Op, Program};
//!
//! let mut p = Program::new(vec![Interval::new(0, 255); 2]);
//! let y = p.push(Op::Linear { terms: vec![(0, 3), (1, -2)], constant: 7 });
//! p.outputs = vec![y];
//! let a = p.analyze().unwrap();
//! let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
//! let client = ClientKey::generate(&params);
//! let server = client.evaluation_keys();
//! let e = cml_runtime::encoding::Encoding::of(&p, &a);
//! let ct = client.encrypt(&[10, 20], e.inputs(&p)).unwrap();
//! let out = server.run(&p, &ct).unwrap();
//! let ranges: Vec<_> = p.outputs.iter().map(|&o| a.values[o].range).collect();
//! let out = client.decrypt(&out, &ranges, &e.outputs(&p)).unwrap();
//! assert_eq!(out, vec![3 * 10 - 2 * 20 + 7]);
//! ```

pub mod calibrate;
mod envelope;
mod pbs;
mod schedule;

use serde::{Deserialize, Serialize};
use tfhe::core_crypto::prelude::*;

use crate::encoding::Encoding;
use crate::error::{FheError, ProgramError};
use crate::params::{check, FheParams, Needs, PbsParams};
use crate::program::{Analysis, Interval, Program};
use envelope::{check_seed, conformance, from_bytes, to_bytes};
use schedule::Graph;
pub use schedule::RunStats;

/// Default size limit when reading serialized objects (4 GiB).
pub const DEFAULT_SIZE_LIMIT: u64 = 4 << 30;

/// Bytes allowed beyond an object's payload in the `max_bytes` bounds: the
/// envelope's header (kind, version, parameters) and `tfhe`'s framing of
/// each entity (sizes, seeds, moduli), a few hundred bytes today.
pub const ENVELOPE_SLACK: u64 = 16 << 10;

fn gaussian(std: f64) -> DynamicDistribution<u64> {
    DynamicDistribution::new_gaussian_from_std_dev(StandardDev(std))
}

fn native() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

/// The secret side of a keypair: the GLWE key inputs are encrypted under
/// (flattened, it is the LWE key of every value) and, with tables, the small
/// LWE key bootstraps start from.
#[derive(Clone, Serialize, Deserialize)]
struct SecretKeys {
    glwe: GlweSecretKeyOwned<u64>,
    small: Option<LweSecretKeyOwned<u64>>,
}

/// The client's secret key: generates evaluation keys, encrypts, decrypts.
#[derive(Clone)]
pub struct ClientKey {
    params: FheParams,
    keys: SecretKeys,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Seeded (compressed) evaluation keys: the form a client uploads.
#[derive(Clone, Serialize, Deserialize)]
pub struct CompressedEvaluationKeys {
    params: FheParams,
    ksk: Option<SeededLweKeyswitchKeyOwned<u64>>,
    bsk: Option<SeededLweBootstrapKeyOwned<u64>>,
    /// The light bootstrap key ([`crate::params::LightPbs`]), if the
    /// parameters have one.
    bsk_light: Option<SeededLweBootstrapKeyOwned<u64>>,
}

/// The server's evaluation keys: public material only.
pub struct EvaluationKeys {
    params: FheParams,
    ksk: Option<LweKeyswitchKeyOwned<u64>>,
    bsk: Option<FourierLweBootstrapKeyOwned>,
    bsk_light: Option<FourierLweBootstrapKeyOwned>,
}

impl std::fmt::Debug for EvaluationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluationKeys")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Encrypted program inputs: the values are the coefficients of seeded GLWE
/// ciphertexts (one body polynomial per `N` values, one seed for all masks).
#[derive(Clone, Serialize, Deserialize)]
pub struct EncryptedInput {
    params: FheParams,
    count: usize,
    cts: SeededGlweCiphertextListOwned<u64>,
}

/// Encrypted program outputs, each modulus-switched to
/// `2^(bits + output_extra_bits)` and bit-packed (the form sent back to the
/// client), with the width of each.
#[derive(Clone, Serialize, Deserialize)]
pub struct EncryptedOutput {
    params: FheParams,
    bits: Vec<u32>,
    cts: Vec<CompressedModulusSwitchedLweCiphertext<u64>>,
}

impl ClientKey {
    /// Generates fresh secret keys for `params`.
    pub fn generate(params: &FheParams) -> Self {
        let mut seeder = new_seeder();
        let mut secret = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
        let glwe = GlweSecretKey::generate_new_binary(
            GlweDimension(params.input_glwe_dimension),
            PolynomialSize(params.input_polynomial_size),
            &mut secret,
        );
        let small = params
            .pbs
            .map(|p| LweSecretKey::generate_new_binary(LweDimension(p.lwe_dimension), &mut secret));
        let keys = SecretKeys { glwe, small };
        Self {
            params: *params,
            keys,
        }
    }

    /// The parameters this key was generated for.
    pub fn params(&self) -> &FheParams {
        &self.params
    }

    /// Generates the seeded evaluation keys (the upload form).
    pub fn compressed_evaluation_keys(&self) -> CompressedEvaluationKeys {
        let mut seeder = new_seeder();
        let (ksk, bsk, bsk_light) = match (&self.keys.small, self.params.pbs) {
            (Some(small), Some(p)) => {
                let small_std = self.params.small_noise_std().unwrap_or(0.0);
                let ksk = allocate_and_generate_new_seeded_lwe_keyswitch_key(
                    &self.keys.glwe.as_lwe_secret_key(),
                    small,
                    DecompositionBaseLog(p.ks_base_log as usize),
                    DecompositionLevelCount(p.ks_level as usize),
                    gaussian(small_std),
                    native(),
                    seeder.as_mut(),
                );
                let mut bsk = |base_log: u32, level: u32| {
                    par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
                        small,
                        &self.keys.glwe,
                        DecompositionBaseLog(base_log as usize),
                        DecompositionLevelCount(level as usize),
                        gaussian(self.params.input_noise_std()),
                        native(),
                        seeder.as_mut(),
                    )
                };
                let main = bsk(p.pbs_base_log, p.pbs_level);
                let light = self.params.light.map(|l| bsk(l.base_log, l.level));
                (Some(ksk), Some(main), light)
            }
            _ => (None, None, None),
        };
        CompressedEvaluationKeys {
            params: self.params,
            ksk,
            bsk,
            bsk_light,
        }
    }

    /// Generates the evaluation keys, ready to run.
    pub fn evaluation_keys(&self) -> EvaluationKeys {
        self.compressed_evaluation_keys().decompress()
    }

    /// Encrypts integer program inputs, each at its width (`bits`, from the
    /// program's [`Encoding`]). Each value must fit its width.
    pub fn encrypt(&self, values: &[i64], bits: &[u32]) -> Result<EncryptedInput, FheError> {
        if bits.len() != values.len() {
            return Err(FheError::Mismatch(format!(
                "{} inputs for {} input widths",
                values.len(),
                bits.len()
            )));
        }
        for (&v, &b) in values.iter().zip(bits) {
            let limit = 1i128 << (b.clamp(1, 64) - 1);
            if (v as i128) >= 2 * limit || (v as i128) < -limit {
                return Err(FheError::Mismatch(format!(
                    "input {v} does not fit its {b}-bit message space"
                )));
            }
        }
        let big_n = self.params.input_polynomial_size;
        let glwe_count = values.len().div_ceil(big_n).max(1);
        let mut encoded = vec![0u64; glwe_count * big_n];
        for ((slot, &v), &b) in encoded.iter_mut().zip(values).zip(bits) {
            *slot = (v as u64).wrapping_shl(64 - b.clamp(1, 64));
        }
        let mut seeder = new_seeder();
        let mut cts = SeededGlweCiphertextList::new(
            0u64,
            self.keys.glwe.glwe_dimension().to_glwe_size(),
            PolynomialSize(big_n),
            GlweCiphertextCount(glwe_count),
            seeder.seed().into(),
            native(),
        );
        encrypt_seeded_glwe_ciphertext_list(
            &self.keys.glwe,
            &mut cts,
            &PlaintextList::from_container(encoded),
            gaussian(self.params.input_noise_std()),
            seeder.as_mut(),
        );
        Ok(EncryptedInput {
            params: self.params,
            count: values.len(),
            cts,
        })
    }

    /// Decrypts program outputs; `ranges` are the outputs' proven ranges
    /// (from the program's analysis), used to lift each value out of the
    /// modular message space, and `bits` their widths (from its [`Encoding`]).
    pub fn decrypt(
        &self,
        out: &EncryptedOutput,
        ranges: &[Interval],
        bits: &[u32],
    ) -> Result<Vec<i64>, FheError> {
        if out.params != self.params {
            return Err(FheError::Mismatch(
                "outputs were computed under other parameters than this key's".into(),
            ));
        }
        if out.cts.len() != ranges.len() || out.bits != bits {
            return Err(FheError::Mismatch(format!(
                "{} encrypted outputs of widths {:?} for {} output ranges of widths {bits:?}",
                out.cts.len(),
                out.bits,
                ranges.len()
            )));
        }
        let key = self.keys.glwe.as_lwe_secret_key();
        Ok(out
            .cts
            .iter()
            .zip(ranges)
            .zip(bits)
            .map(|((ct, range), &bits)| {
                let log_modulus = self.params.output_log_modulus(bits);
                let modulus_mask = low_mask(log_modulus);
                let message_mask = low_mask(bits);
                let delta_log = log_modulus - bits;
                let switched = ct.extract();
                let dot = switched.mask().zip(key.as_ref()).fold(0u64, |acc, (a, s)| {
                    acc.wrapping_add((a as u64).wrapping_mul(*s))
                });
                let phase = (switched.body() as u64).wrapping_sub(dot) & modulus_mask;
                let m = if delta_log == 0 {
                    phase
                } else {
                    phase.wrapping_add(1u64 << (delta_log - 1)) >> delta_log
                };
                let lo = range.lo as u64;
                (m.wrapping_sub(lo) & message_mask).wrapping_add(lo) as i64
            })
            .collect())
    }

    /// Serializes the secret key (keep it on the client).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        to_bytes("client key", &self.params, &self.keys)
    }

    /// Reads a secret key written by [`ClientKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8], limit: u64) -> Result<Self, FheError> {
        let (params, keys): (FheParams, SecretKeys) = from_bytes("client key", bytes, limit)?;
        let ok = keys.glwe.glwe_dimension().0 == params.input_glwe_dimension
            && keys.glwe.polynomial_size().0 == params.input_polynomial_size
            && match (&keys.small, params.pbs) {
                (None, None) => true,
                (Some(small), Some(p)) => small.lwe_dimension().0 == p.lwe_dimension,
                _ => false,
            };
        if !ok {
            return Err(conformance("client key"));
        }
        Ok(Self { params, keys })
    }
}

impl CompressedEvaluationKeys {
    /// The parameters these keys were generated for.
    pub fn params(&self) -> &FheParams {
        &self.params
    }

    /// Expands the seeds and converts the bootstrap key to the Fourier domain.
    pub fn decompress(self) -> EvaluationKeys {
        let ksk = self.ksk.map(|k| k.decompress_into_lwe_keyswitch_key());
        let fourier = |b: SeededLweBootstrapKeyOwned<u64>| {
            let standard = b.par_decompress_into_lwe_bootstrap_key();
            let mut fourier = FourierLweBootstrapKey::new(
                standard.input_lwe_dimension(),
                standard.glwe_size(),
                standard.polynomial_size(),
                standard.decomposition_base_log(),
                standard.decomposition_level_count(),
            );
            par_convert_standard_lwe_bootstrap_key_to_fourier(&standard, &mut fourier);
            fourier
        };
        EvaluationKeys {
            params: self.params,
            ksk,
            bsk: self.bsk.map(fourier),
            bsk_light: self.bsk_light.map(fourier),
        }
    }

    /// Serializes the keys.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        to_bytes(
            "evaluation keys",
            &self.params,
            &(&self.ksk, &self.bsk, &self.bsk_light),
        )
    }

    /// The most bytes seeded keys for `params` take serialized: the seeded
    /// keyswitching key (one body per level of each input coefficient) and
    /// bootstrap keys (one body polynomial per row and level of each GGSW),
    /// plus [`ENVELOPE_SLACK`]. [`from_bytes`](Self::from_bytes) refuses
    /// anything longer before reading it, whatever limit it is given.
    pub fn max_bytes(params: &FheParams) -> u64 {
        let payload = params.pbs.map_or(0, |p| {
            let ksk = params.input_lwe_dimension * p.ks_level as usize;
            let levels = p.pbs_level + params.light.map_or(0, |l| l.level);
            let bsk =
                p.lwe_dimension * (p.glwe_dimension + 1) * levels as usize * p.polynomial_size;
            (ksk + bsk) as u64 * 8
        });
        payload + ENVELOPE_SLACK
    }

    /// Reads keys written by [`CompressedEvaluationKeys::to_bytes`], checking
    /// that they conform to `expected` parameters. At most
    /// `min(limit, max_bytes(expected))` bytes are read.
    pub fn from_bytes(bytes: &[u8], limit: u64, expected: &FheParams) -> Result<Self, FheError> {
        let limit = limit.min(Self::max_bytes(expected));
        type Parts = (
            Option<SeededLweKeyswitchKeyOwned<u64>>,
            Option<SeededLweBootstrapKeyOwned<u64>>,
            Option<SeededLweBootstrapKeyOwned<u64>>,
        );
        let (params, (ksk, bsk, bsk_light)): (FheParams, Parts) =
            from_bytes("evaluation keys", bytes, limit)?;
        if params != *expected {
            return Err(FheError::Mismatch(
                "evaluation keys were generated for other parameters".into(),
            ));
        }
        let bsk_ok = |b: &SeededLweBootstrapKeyOwned<u64>, p: &PbsParams, base: u32, level: u32| {
            b.input_lwe_dimension().0 == p.lwe_dimension
                && b.glwe_size().0 == p.glwe_dimension + 1
                && b.polynomial_size().0 == p.polynomial_size
                && b.decomposition_base_log().0 == base as usize
                && b.decomposition_level_count().0 == level as usize
                && b.ciphertext_modulus().is_native_modulus()
        };
        let ok = match (params.pbs, &ksk, &bsk) {
            (None, None, None) => params.light.is_none() && bsk_light.is_none(),
            (Some(p), Some(k), Some(b)) => {
                k.input_key_lwe_dimension().0 == params.input_lwe_dimension
                    && k.output_key_lwe_dimension().0 == p.lwe_dimension
                    && k.decomposition_base_log().0 == p.ks_base_log as usize
                    && k.decomposition_level_count().0 == p.ks_level as usize
                    && k.ciphertext_modulus().is_native_modulus()
                    && bsk_ok(b, &p, p.pbs_base_log, p.pbs_level)
                    && match (params.light, &bsk_light) {
                        (None, None) => true,
                        (Some(l), Some(b)) => bsk_ok(b, &p, l.base_log, l.level),
                        _ => false,
                    }
            }
            _ => false,
        };
        if !ok {
            return Err(conformance("evaluation keys"));
        }
        for seed in ksk
            .iter()
            .map(|k| k.compression_seed())
            .chain(bsk.iter().chain(&bsk_light).map(|b| b.compression_seed()))
        {
            check_seed("evaluation keys", &seed)?;
        }
        Ok(Self {
            params,
            ksk,
            bsk,
            bsk_light,
        })
    }
}

impl EncryptedInput {
    /// Number of encrypted values.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Serializes the ciphertexts (seeded form).
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        to_bytes("encrypted input", &self.params, &(self.count, &self.cts))
    }

    /// The most bytes an encrypted input of `count` values under `params`
    /// takes serialized (one body polynomial per `N` values, plus
    /// [`ENVELOPE_SLACK`]): the limit a server that knows its program's input
    /// count passes to [`from_bytes`](Self::from_bytes).
    pub fn max_bytes(params: &FheParams, count: usize) -> u64 {
        let big_n = params.input_polynomial_size.max(1);
        (count.div_ceil(big_n).max(1) * big_n) as u64 * 8 + ENVELOPE_SLACK
    }

    /// Reads ciphertexts, checking they conform to `expected` parameters.
    pub fn from_bytes(bytes: &[u8], limit: u64, expected: &FheParams) -> Result<Self, FheError> {
        let (params, (count, cts)): (FheParams, (usize, SeededGlweCiphertextListOwned<u64>)) =
            from_bytes("encrypted input", bytes, limit)?;
        let slots = cts.glwe_ciphertext_count().0 * cts.polynomial_size().0;
        if params != *expected
            || cts.glwe_size().to_glwe_dimension().0 != params.input_glwe_dimension
            || cts.polynomial_size().0 != params.input_polynomial_size
            || !cts.ciphertext_modulus().is_native_modulus()
            || count > slots
            || slots - count >= params.input_polynomial_size.max(1) && count > 0
        {
            return Err(conformance("encrypted input"));
        }
        check_seed("encrypted input", &cts.compression_seed())?;
        Ok(Self { params, count, cts })
    }

    /// Expands the seeds and extracts one LWE ciphertext per value (a flat
    /// buffer per value, under the flattened GLWE key).
    fn extract(&self) -> Vec<Vec<u64>> {
        let glwes = self.cts.clone().decompress_into_glwe_ciphertext_list();
        let big_n = self.params.input_polynomial_size;
        let size = self.params.input_lwe_dimension + 1;
        (0..self.count)
            .map(|i| {
                let mut lwe = LweCiphertext::new(0u64, LweSize(size), native());
                extract_lwe_sample_from_glwe_ciphertext(
                    &glwes.get(i / big_n),
                    &mut lwe,
                    MonomialDegree(i % big_n),
                );
                lwe.into_container()
            })
            .collect()
    }
}

impl EncryptedOutput {
    /// Number of encrypted values.
    pub fn len(&self) -> usize {
        self.cts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.cts.is_empty()
    }

    /// Serializes the ciphertexts.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FheError> {
        to_bytes("encrypted output", &self.params, &(&self.bits, &self.cts))
    }

    /// The most bytes encrypted outputs of widths `bits` under `params` take
    /// serialized (each packed at its switched modulus, with 64 bytes of
    /// framing, plus [`ENVELOPE_SLACK`]): the limit a client that knows the
    /// program's outputs passes to [`from_bytes`](Self::from_bytes).
    pub fn max_bytes(params: &FheParams, bits: &[u32]) -> u64 {
        bits.iter()
            .map(|&b| params.output_bytes(b) as u64 + 64)
            .sum::<u64>()
            + ENVELOPE_SLACK
    }

    /// Reads ciphertexts, checking they conform to `expected` parameters.
    pub fn from_bytes(bytes: &[u8], limit: u64, expected: &FheParams) -> Result<Self, FheError> {
        use tfhe::conformance::ParameterSetConformant;
        type Parts = (Vec<u32>, Vec<CompressedModulusSwitchedLweCiphertext<u64>>);
        let (params, (bits, cts)): (FheParams, Parts) =
            from_bytes("encrypted output", bytes, limit)?;
        let dimension = LweDimension(params.input_lwe_dimension);
        let conformant = |ct: &CompressedModulusSwitchedLweCiphertext<u64>, b: u32| {
            (1..=64).contains(&b)
                && ct.is_conformant(&CompressedModulusSwitchedLweCiphertextConformanceParams {
                    ct_params: LweCiphertextConformanceParams {
                        lwe_dim: dimension,
                        ct_modulus: native(),
                    },
                    ms_decompression_type: MsDecompressionType::ClassicPbs {
                        br_input_modulus_log: CiphertextModulusLog(
                            params.output_log_modulus(b) as usize
                        ),
                        br_input_lwe_dim: dimension,
                    },
                })
        };
        if params != *expected
            || bits.len() != cts.len()
            || !cts.iter().zip(&bits).all(|(c, &b)| conformant(c, b))
        {
            return Err(conformance("encrypted output"));
        }
        Ok(Self { params, bits, cts })
    }
}

impl EvaluationKeys {
    /// The parameters these keys were generated for.
    pub fn params(&self) -> &FheParams {
        &self.params
    }

    /// Checks that these keys' parameters serve `program`
    /// ([`check`]: sizes cml uses, every table input
    /// and output within the failure target), whichever cost model chose
    /// them.
    pub fn check_program(&self, program: &Program) -> Result<(), FheError> {
        self.checked_analysis(program).map(|_| ())
    }

    /// [`check_program`](Self::check_program), returning the analysis and
    /// the needs it checked.
    fn checked_analysis(&self, program: &Program) -> Result<(Analysis, Needs), FheError> {
        let analysis = program
            .analyze()
            .map_err(|e| FheError::Mismatch(e.to_string()))?;
        let needs = Needs::of(program, &analysis);
        if needs.pbs_count > 0 && self.bsk.is_none() {
            return Err(FheError::Mismatch(
                "the program has table lookups but these keys have no bootstrap key".into(),
            ));
        }
        if self.params.light.is_some() != self.bsk_light.is_some() {
            return Err(FheError::Mismatch(
                "these keys' light bootstrap key does not match their parameters".into(),
            ));
        }
        check(&needs, &self.params).map_err(|e| match e {
            FheError::Mismatch(why) => FheError::Mismatch(format!(
                "these keys' parameters do not serve this program: {why}"
            )),
            other => other,
        })?;
        Ok((analysis, needs))
    }

    /// Runs `program` on encrypted inputs. The server learns nothing of the
    /// inputs or outputs: it holds no secret key.
    pub fn run(
        &self,
        program: &Program,
        input: &EncryptedInput,
    ) -> Result<EncryptedOutput, FheError> {
        self.run_with_stats(program, input).map(|(out, _)| out)
    }

    /// [`run`](Self::run), also returning what the run did: bootstraps, and
    /// the time the threads spent in them against the wall time.
    ///
    /// Bootstraps run on rayon's pool as a dependency graph: each starts as
    /// soon as its input is computed, so independent lookups (other trees,
    /// other neurons, other samples run side by side) keep every core busy.
    pub fn run_with_stats(
        &self,
        program: &Program,
        input: &EncryptedInput,
    ) -> Result<(EncryptedOutput, RunStats), FheError> {
        if input.params != self.params {
            return Err(FheError::Mismatch(
                "inputs were encrypted under other parameters than these keys'".into(),
            ));
        }
        if input.len() != program.inputs.len() {
            return Err(FheError::Mismatch(
                ProgramError::Arity {
                    expected: program.inputs.len(),
                    found: input.len(),
                }
                .to_string(),
            ));
        }
        let (analysis, needs) = self.checked_analysis(program)?;
        let encoding = Encoding::of(program, &analysis);
        let light =
            crate::params::light_lookups_with(program, &analysis, &encoding, &needs, &self.params);
        let graph = Graph::new(self, program, &analysis, &encoding, light);
        let (values, stats) = graph.run(input.extract());
        // Only the top bits matter to the client: switch the modulus down and
        // pack (the rounding noise is in the output failure probability).
        let bits = encoding.outputs(program);
        let cts = program
            .outputs
            .iter()
            .zip(&bits)
            .map(|(&o, &b)| {
                let log_modulus = CiphertextModulusLog(self.params.output_log_modulus(b) as usize);
                let ct = LweCiphertext::from_container(values[o].as_slice(), native());
                lwe_ciphertext_modulus_switch::<u64, u64, _>(ct, log_modulus).compress::<u64>()
            })
            .collect();
        let output = EncryptedOutput {
            params: self.params,
            bits,
            cts,
        };
        Ok((output, stats))
    }
}

macro_rules! summary_debug {
    ($ty:ty, $($field:literal => $value:expr),*) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let this = self;
                f.debug_struct(stringify!($ty))
                    $(.field($field, &$value(this)))*
                    .finish_non_exhaustive()
            }
        }
    };
}

summary_debug!(CompressedEvaluationKeys, "params" => |k: &Self| k.params, "bootstrap" => |k: &Self| k.bsk.is_some());
summary_debug!(EncryptedInput, "values" => |c: &Self| c.count, "params" => |c: &Self| c.params);
summary_debug!(EncryptedOutput, "values" => |c: &Self| c.len(), "bits" => |c: &Self| c.bits.clone());

/// The `bits` lowest bits set.
fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

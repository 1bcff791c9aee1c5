//! Crypto parameters chosen per program from its bit-widths and weight norms.
//!
//! Every value is encrypted as an LWE ciphertext of `message_bits` bits of
//! message space at `Δ = 2^(64 − message_bits)` (one width for the whole
//! program, with a padding bit when it has tables). Inputs are packed as the
//! coefficients of GLWE ciphertexts. A program without tables needs only that
//! GLWE key: `N` covers the inputs and `k` is the smallest that keeps the
//! output decryptions under the failure target at 132-bit security. A program
//! with tables uses the KS-PBS pattern (values under a GLWE key of dimension
//! `k·N` as an LWE key; keyswitch to a small key of dimension `n`; modulus
//! switch to `2N`; blind rotation), and the search below picks `n`, `k`,
//! `N` and both decompositions to minimise the estimated cost of one
//! bootstrap while meeting the failure target on every table input and every
//! output. The reasoning is written up in `docs/fhe.md`.
//!
//! ```
//! use cml_runtime::params::{choose, Needs, PFail};
//!
//! // A 20-bit dot product of 30 inputs with 8-bit weights, no tables.
//! let needs = Needs::leveled(20, 127.0 * 127.0 * 30.0);
//! let p = choose(&needs, PFail::default()).unwrap();
//! assert!(p.pbs.is_none());
//! assert!(p.predicted.log2_p_fail_output <= -40.0);
//! ```

use serde::{Deserialize, Serialize};

use crate::error::FheError;
use crate::noise;
use crate::program::{Analysis, Program};

/// The failure-probability target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PFail {
    /// Each bootstrap and each decryption fails with probability at most `2^x`.
    PerOp(f64),
    /// One whole evaluation fails with probability at most `2^x`.
    Global(f64),
}

impl Default for PFail {
    /// `2^-40` per operation, Concrete ML's default.
    fn default() -> Self {
        Self::PerOp(-40.0)
    }
}

impl PFail {
    /// The per-operation `log2` target for a program of `ops` bootstraps and decryptions.
    pub fn per_op_log2(self, ops: usize) -> f64 {
        match self {
            Self::PerOp(x) => x,
            // Union bound: each of `ops` failures shares the global budget.
            Self::Global(x) => x - (ops.max(1) as f64).log2(),
        }
    }

    fn validate(self) -> Result<(), FheError> {
        let x = match self {
            Self::PerOp(x) | Self::Global(x) => x,
        };
        if x.is_finite() && x < 0.0 {
            Ok(())
        } else {
            Err(FheError::BadPFail(x))
        }
    }
}

/// What a program asks of the parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Needs {
    /// Message space in bits, padding included.
    pub message_bits: u32,
    /// Worst Σw² over fresh encryptions, among table inputs.
    pub lut_fresh: f64,
    /// Worst Σw² over bootstrap outputs, among table inputs.
    pub lut_bootstrapped: f64,
    /// Worst Σw² over fresh encryptions, among outputs.
    pub out_fresh: f64,
    /// Worst Σw² over bootstrap outputs, among outputs.
    pub out_bootstrapped: f64,
    /// Bootstraps per evaluation.
    pub pbs_count: usize,
    /// Decrypted outputs per evaluation.
    pub outputs: usize,
    /// Encrypted inputs per evaluation (they are packed into GLWE ciphertexts).
    pub inputs: usize,
}

impl Needs {
    /// Needs of a program without tables: one `bits`-wide output with Σw² = `fresh`.
    pub fn leveled(bits: u32, fresh: f64) -> Self {
        Self {
            message_bits: bits,
            lut_fresh: 0.0,
            lut_bootstrapped: 0.0,
            out_fresh: fresh,
            out_bootstrapped: 0.0,
            pbs_count: 0,
            outputs: 1,
            inputs: 1,
        }
    }

    /// Reads the needs off an analyzed program. The message width is the
    /// widest value's, plus one padding bit for the whole program when it has
    /// tables (their inputs need it; one width serves every value).
    pub fn of(program: &Program, analysis: &Analysis) -> Self {
        let mut needs = Self {
            message_bits: 1,
            lut_fresh: 0.0,
            lut_bootstrapped: 0.0,
            out_fresh: 0.0,
            out_bootstrapped: 0.0,
            pbs_count: program.pbs_count(),
            outputs: program.outputs.len(),
            inputs: program.inputs.len(),
        };
        let padding = u32::from(needs.pbs_count > 0);
        for v in &analysis.values {
            needs.message_bits = needs.message_bits.max(v.range.bits() + padding);
        }
        for (input, _) in program.lut_inputs() {
            let n = analysis.values[input].noise;
            needs.lut_fresh = needs.lut_fresh.max(n.fresh);
            needs.lut_bootstrapped = needs.lut_bootstrapped.max(n.bootstrapped);
        }
        for &o in &program.outputs {
            let n = analysis.values[o].noise;
            needs.out_fresh = needs.out_fresh.max(n.fresh);
            needs.out_bootstrapped = needs.out_bootstrapped.max(n.bootstrapped);
        }
        needs
    }
}

/// Parameters of the keyswitch + bootstrap pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PbsParams {
    /// Dimension `n` of the small LWE key bootstraps start from.
    pub lwe_dimension: usize,
    /// GLWE dimension `k`.
    pub glwe_dimension: usize,
    /// Polynomial size `N`.
    pub polynomial_size: usize,
    /// Bootstrap decomposition base (log2).
    pub pbs_base_log: u32,
    /// Bootstrap decomposition levels.
    pub pbs_level: u32,
    /// Keyswitch decomposition base (log2).
    pub ks_base_log: u32,
    /// Keyswitch decomposition levels.
    pub ks_level: u32,
}

/// Predicted failure probabilities (log2) of the chosen parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    /// Worst table input (one bootstrap); `-inf` without tables.
    pub log2_p_fail_pbs: f64,
    /// Worst output decryption.
    pub log2_p_fail_output: f64,
    /// One whole evaluation (union bound).
    pub log2_p_fail_program: f64,
    /// Estimated cost of one bootstrap (keyswitch included), in milliseconds
    /// on one core of the reference machine.
    pub pbs_ms: f64,
}

/// A complete parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FheParams {
    /// Message space in bits, padding included: `Δ = 2^(64 − message_bits)`.
    pub message_bits: u32,
    /// GLWE dimension of the key inputs are encrypted under.
    pub input_glwe_dimension: usize,
    /// Polynomial size of that key: up to this many inputs share one GLWE
    /// ciphertext (and one mask).
    pub input_polynomial_size: usize,
    /// `k·N` of that key: the LWE dimension of every value's ciphertext.
    pub input_lwe_dimension: usize,
    /// Outputs are modulus-switched to `2^output_log_modulus` and bit-packed
    /// before they go back to the client (64: not switched).
    pub output_log_modulus: u32,
    /// Keyswitch and bootstrap parameters, when the program has tables.
    pub pbs: Option<PbsParams>,
    /// The target the parameters were chosen for.
    pub target: PFail,
    /// What the noise model predicts for them.
    pub predicted: Predicted,
}

impl FheParams {
    /// Standard deviation (relative) of fresh encryptions under the input key.
    pub fn input_noise_std(&self) -> f64 {
        noise::min_lwe_variance(self.input_lwe_dimension).sqrt()
    }

    /// Standard deviation (relative) of the small key's keyswitching key.
    pub fn small_noise_std(&self) -> Option<f64> {
        self.pbs
            .map(|p| noise::min_lwe_variance(p.lwe_dimension).sqrt())
    }

    /// `log2 Δ`: where the message sits in the 64-bit torus.
    pub fn log2_delta(&self) -> u32 {
        64 - self.message_bits
    }

    /// Size of one output ciphertext as sent back (switched and packed), in bytes.
    pub fn output_bytes(&self) -> usize {
        ((self.input_lwe_dimension + 1) * self.output_log_modulus as usize).div_ceil(8)
    }

    /// Size of one ciphertext under the input key, in bytes.
    pub fn ciphertext_bytes(&self) -> usize {
        (self.input_lwe_dimension + 1) * 8
    }

    /// Size of the bootstrap key in the Fourier domain, in bytes.
    pub fn bootstrap_key_bytes(&self) -> usize {
        self.pbs.map_or(0, |p| {
            let glwe_size = p.glwe_dimension + 1;
            p.lwe_dimension * glwe_size * glwe_size * p.pbs_level as usize * p.polynomial_size * 8
        })
    }

    /// Size of the keyswitching key, in bytes.
    pub fn keyswitch_key_bytes(&self) -> usize {
        self.pbs.map_or(0, |p| {
            self.input_lwe_dimension * p.ks_level as usize * (p.lwe_dimension + 1) * 8
        })
    }
}

/// Smallest and largest LWE dimensions searched.
const LWE_DIMENSIONS: std::ops::RangeInclusive<usize> = 384..=2048;
/// LWE dimension step of the search.
const LWE_STEP: usize = 1;
/// Polynomial sizes searched (log2).
const LOG2_POLY_SIZES: std::ops::RangeInclusive<u32> = 8..=16;
/// GLWE dimensions searched.
const GLWE_DIMENSIONS: std::ops::RangeInclusive<usize> = 1..=4;
/// Smallest polynomial size used to pack the inputs of a leveled program.
const MIN_PACKING_POLY_SIZE: usize = 8;
/// Largest `k·N`: bounds ciphertext and key sizes.
const MAX_GLWE_LWE_DIMENSION: usize = 1 << 16;

/// Cost of one bootstrap in arbitrary units: FFTs of the decomposed GLWE and
/// the Fourier-domain products, per blind-rotation step.
fn pbs_cost(n: usize, k: usize, big_n: usize, level: u32) -> f64 {
    let (kf, nf, lf) = ((k + 1) as f64, big_n as f64, level as f64);
    n as f64 * (kf * (lf + 1.0) * nf * nf.log2() + kf * kf * lf * nf)
}

/// Cost of one keyswitch in the same units.
fn ks_cost(n_in: usize, n_out: usize, level: u32) -> f64 {
    (n_in * level as usize * (n_out + 1)) as f64
}

/// Milliseconds per cost unit, calibrated on `tfhe`'s 4-bit set (n = 879,
/// N = 2048, k = 1, one level: about 20 ms per bootstrap on one core here).
const MS_PER_UNIT: f64 = 20.0 / 95.0e6;

/// `(base_log, level, variance)` of a decomposition.
type Decomposition = (u32, u32, f64);

/// Best decomposition base for each level count: the one with least variance.
fn best_bases(
    levels: std::ops::RangeInclusive<u32>,
    variance: impl Fn(u32, u32) -> f64,
) -> Vec<Decomposition> {
    levels
        .map(|level| {
            (1..=(60 / level).max(1))
                .map(|b| (b, level, variance(b, level)))
                .min_by(|a, b| a.2.total_cmp(&b.2))
                .unwrap_or((1, level, f64::INFINITY))
        })
        .collect()
}

/// Chooses how far outputs are modulus-switched before they are sent: the
/// fewest bits whose rounding noise takes at most 1/16 of the decoding
/// budget, then updates the predicted output failure probability.
fn switch_outputs(params: &mut FheParams, needs: &Needs, out_variance: f64, budget: f64) {
    let dimension = params.input_lwe_dimension;
    let log2_threshold = -(needs.message_bits as f64) - 1.0;
    let chosen = (needs.message_bits + 1..64)
        .find(|&m| {
            let ms = noise::plain_modulus_switch_variance(dimension, m);
            ms <= budget / 16.0 && out_variance + ms <= budget
        })
        .unwrap_or(64);
    params.output_log_modulus = chosen;
    let ms = if chosen < 64 {
        noise::plain_modulus_switch_variance(dimension, chosen)
    } else {
        0.0
    };
    let p_out = noise::log2_p_fail_for(out_variance + ms, log2_threshold);
    let p = &mut params.predicted;
    p.log2_p_fail_output = p_out;
    p.log2_p_fail_program = (needs.pbs_count as f64 * p.log2_p_fail_pbs.exp2()
        + needs.outputs.max(1) as f64 * p_out.exp2())
    .log2();
}

/// What the noise and cost models predict for given bootstrap parameters
/// (inputs under the GLWE key of the bootstrap), for any candidate set —
/// ours or a stock one.
pub fn predict(needs: &Needs, pbs: &PbsParams) -> Predicted {
    let log2_threshold = -(needs.message_bits as f64) - 1.0;
    let fail = |v: f64| noise::log2_p_fail_for(v, log2_threshold);
    let big = pbs.glwe_dimension * pbs.polynomial_size;
    let var_fresh = noise::min_lwe_variance(big);
    let var_pbs = noise::pbs_variance(
        pbs.lwe_dimension,
        pbs.glwe_dimension,
        pbs.polynomial_size,
        pbs.pbs_base_log,
        pbs.pbs_level,
    );
    let var_ks = noise::keyswitch_variance(big, pbs.lwe_dimension, pbs.ks_base_log, pbs.ks_level);
    let log2_big_n = pbs.polynomial_size.trailing_zeros();
    let var_ms = noise::modulus_switch_variance(pbs.lwe_dimension, log2_big_n + 1);
    let lut = needs.lut_fresh * var_fresh + needs.lut_bootstrapped * var_pbs + var_ks + var_ms;
    let out = needs.out_fresh * var_fresh + needs.out_bootstrapped * var_pbs;
    let (p_pbs, p_out) = (fail(lut), fail(out));
    let cost = pbs_cost(
        pbs.lwe_dimension,
        pbs.glwe_dimension,
        pbs.polynomial_size,
        pbs.pbs_level,
    ) + ks_cost(big, pbs.lwe_dimension, pbs.ks_level);
    Predicted {
        log2_p_fail_pbs: p_pbs,
        log2_p_fail_output: p_out,
        log2_p_fail_program: (needs.pbs_count as f64 * p_pbs.exp2()
            + needs.outputs as f64 * p_out.exp2())
        .log2(),
        pbs_ms: cost * MS_PER_UNIT,
    }
}

/// Picks the cheapest 128-bit-secure parameters that meet `target` for `needs`.
///
/// Deterministic, and memoized per process: the same needs and target give
/// the same parameters without searching again.
pub fn choose(needs: &Needs, target: PFail) -> Result<FheParams, FheError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    type Key = (Vec<u64>, u8, u64);
    static CACHE: OnceLock<Mutex<HashMap<Key, FheParams>>> = OnceLock::new();
    let (kind, x) = match target {
        PFail::PerOp(x) => (0, x),
        PFail::Global(x) => (1, x),
    };
    let key: Key = (
        vec![
            u64::from(needs.message_bits),
            needs.lut_fresh.to_bits(),
            needs.lut_bootstrapped.to_bits(),
            needs.out_fresh.to_bits(),
            needs.out_bootstrapped.to_bits(),
            needs.pbs_count as u64,
            needs.outputs as u64,
            needs.inputs as u64,
        ],
        kind,
        x.to_bits(),
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(hit);
    }
    let chosen = search(needs, target)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, chosen);
    }
    Ok(chosen)
}

/// The search behind [`choose`].
fn search(needs: &Needs, target: PFail) -> Result<FheParams, FheError> {
    target.validate()?;
    let ops = needs.pbs_count + needs.outputs;
    let log2_target = target.per_op_log2(ops);
    let z = noise::z_for_log2_p_fail(log2_target);
    // Errors below half a step decode correctly: threshold 2^-(bits+1).
    let log2_threshold = -(needs.message_bits as f64) - 1.0;
    let budget = (log2_threshold.exp2() / z).powi(2);
    let fail = |v: f64| noise::log2_p_fail_for(v, log2_threshold);

    if needs.pbs_count == 0 {
        // One GLWE ciphertext holds all inputs: N covers them, k sets security.
        let big_n = needs
            .inputs
            .next_power_of_two()
            .clamp(MIN_PACKING_POLY_SIZE, 1024);
        let mut best = f64::INFINITY;
        let first = LWE_DIMENSIONS.start().div_ceil(big_n);
        for k in first..=MAX_GLWE_LWE_DIMENSION / big_n {
            let dimension = k * big_n;
            let var = needs.out_fresh * noise::min_lwe_variance(dimension);
            best = best.min(fail(var));
            if var <= budget {
                let p_out = fail(var);
                let mut params = FheParams {
                    message_bits: needs.message_bits,
                    input_glwe_dimension: k,
                    input_polynomial_size: big_n,
                    input_lwe_dimension: dimension,
                    output_log_modulus: 64,
                    pbs: None,
                    target,
                    predicted: Predicted {
                        log2_p_fail_pbs: f64::NEG_INFINITY,
                        log2_p_fail_output: p_out,
                        log2_p_fail_program: p_out + (needs.outputs.max(1) as f64).log2(),
                        pbs_ms: 0.0,
                    },
                };
                switch_outputs(&mut params, needs, var, budget);
                return Ok(params);
            }
        }
        return Err(FheError::NoParameters {
            what: "the widest output".into(),
            bits: needs.message_bits,
            norm: needs.out_fresh.sqrt(),
            log2_p_fail: log2_target,
            best_log2_p_fail: best,
            hint: "use fewer input or weight bits, or a higher failure probability",
        });
    }

    // Both variances are linear in their input dimension, so the best base per
    // level count does not depend on it: tabulate once per key size.
    let ks_tables: Vec<(usize, Vec<Decomposition>)> = LWE_DIMENSIONS
        .step_by(LWE_STEP)
        .map(|n| {
            (
                n,
                best_bases(1..=12, |b, l| noise::keyswitch_variance(1, n, b, l)),
            )
        })
        .collect();
    let mut best: Option<(f64, FheParams)> = None;
    let mut least_excess = f64::INFINITY;
    for k in GLWE_DIMENSIONS {
        for log2_n in LOG2_POLY_SIZES {
            let big_n = 1usize << log2_n;
            let big = k * big_n;
            // The lookup table needs at least two slots per message value.
            if big > MAX_GLWE_LWE_DIMENSION || log2_n < needs.message_bits {
                continue;
            }
            let var_fresh = noise::min_lwe_variance(big);
            let pbs_per_n = best_bases(1..=6, |b, l| noise::pbs_variance(1, k, big_n, b, l));
            for (n, ks_per_n_in) in &ks_tables {
                let n = *n;
                let var_ms = noise::modulus_switch_variance(n, log2_n + 1);
                for &(pb, pl, pbs_unit) in &pbs_per_n {
                    let var_pbs = pbs_unit * n as f64;
                    let out = needs.out_fresh * var_fresh + needs.out_bootstrapped * var_pbs;
                    let lut_lin = needs.lut_fresh * var_fresh + needs.lut_bootstrapped * var_pbs;
                    for &(kb, kl, ks_unit) in ks_per_n_in {
                        let lut = lut_lin + ks_unit * big as f64 + var_ms;
                        let worst = lut.max(out);
                        if worst > budget {
                            least_excess = least_excess.min(worst);
                            continue;
                        }
                        let cost = pbs_cost(n, k, big_n, pl) + ks_cost(big, n, kl);
                        if best.as_ref().is_some_and(|(c, _)| *c <= cost) {
                            continue;
                        }
                        let pbs = PbsParams {
                            lwe_dimension: n,
                            glwe_dimension: k,
                            polynomial_size: big_n,
                            pbs_base_log: pb,
                            pbs_level: pl,
                            ks_base_log: kb,
                            ks_level: kl,
                        };
                        best = Some((
                            cost,
                            FheParams {
                                message_bits: needs.message_bits,
                                input_glwe_dimension: k,
                                input_polynomial_size: big_n,
                                input_lwe_dimension: big,
                                output_log_modulus: 64,
                                pbs: Some(pbs),
                                target,
                                predicted: predict(needs, &pbs),
                            },
                        ));
                    }
                }
            }
        }
    }
    let best_fail = fail(least_excess);
    if let Some((_, params)) = &mut best {
        let pbs = params.pbs.expect("set in the search above");
        let out = needs.out_fresh * noise::min_lwe_variance(params.input_lwe_dimension)
            + needs.out_bootstrapped
                * noise::pbs_variance(
                    pbs.lwe_dimension,
                    pbs.glwe_dimension,
                    pbs.polynomial_size,
                    pbs.pbs_base_log,
                    pbs.pbs_level,
                );
        switch_outputs(params, needs, out, budget);
    }
    best.map(|(_, p)| p).ok_or(FheError::NoParameters {
        what: "the widest table input".into(),
        bits: needs.message_bits,
        norm: (needs.lut_fresh + needs.lut_bootstrapped).sqrt(),
        log2_p_fail: log2_target,
        best_log2_p_fail: best_fail,
        hint: "round the value to fewer bits before the table, use fewer bits, or a higher failure probability",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leveled_dimension_grows_with_width() {
        let narrow = choose(&Needs::leveled(10, 1000.0), PFail::default()).unwrap();
        let wide = choose(&Needs::leveled(24, 1000.0), PFail::default()).unwrap();
        assert!(narrow.input_lwe_dimension < wide.input_lwe_dimension);
        assert!(wide.predicted.log2_p_fail_output <= -40.0);
    }

    #[test]
    fn impossible_width_is_refused_with_the_limit() {
        let err = choose(&Needs::leveled(60, 1e6), PFail::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("60 bits"), "{msg}");
        assert!(msg.contains("2^-40.0"), "{msg}");
    }

    #[test]
    fn bad_target_is_refused() {
        assert!(matches!(
            choose(&Needs::leveled(8, 1.0), PFail::PerOp(3.0)),
            Err(FheError::BadPFail(_))
        ));
    }

    fn lut_needs(bits: u32) -> Needs {
        Needs {
            message_bits: bits + 1,
            lut_fresh: 1.0,
            lut_bootstrapped: 0.0,
            out_fresh: 0.0,
            out_bootstrapped: 1.0,
            pbs_count: 1,
            outputs: 1,
            inputs: 1,
        }
    }

    #[test]
    fn pbs_parameters_meet_target_and_grow_with_precision() {
        let mut last = 0.0;
        for bits in 1..=8 {
            let p = choose(&lut_needs(bits), PFail::default()).unwrap();
            assert!(p.predicted.log2_p_fail_pbs <= -40.0);
            assert!(p.predicted.pbs_ms >= last, "{bits}: {p:?}");
            last = p.predicted.pbs_ms;
        }
    }

    #[test]
    fn global_target_is_split() {
        assert_eq!(PFail::Global(-40.0).per_op_log2(1024), -50.0);
    }
}

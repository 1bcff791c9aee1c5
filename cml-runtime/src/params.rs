//! Crypto parameters chosen per program from its bit-widths and weight norms.
//!
//! Every value is an LWE ciphertext at its own scale `Δ = 2^(64 − bits)`
//! ([`Encoding`]: values joined by linear ops share one width; table inputs
//! carry a padding bit). Inputs are packed as the coefficients of GLWE
//! ciphertexts. A program without tables needs only that GLWE key: `N`
//! covers the inputs and `k` is the smallest that keeps every output
//! decryption under the failure target at 132-bit security. A program with
//! tables uses the KS-PBS pattern (values under a GLWE key of dimension `k·N`
//! as an LWE key; keyswitch to a small key of dimension `n`; modulus switch to
//! `2N`; blind rotation), and the search below picks `n`, `k`, `N` and both
//! decompositions to minimise the estimated cost of one bootstrap while every
//! table input meets the target at its own width and every output at its
//! own. The reasoning is written up in `docs/fhe.md`.
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

use crate::cost::CostModel;
use crate::encoding::Encoding;
use crate::error::FheError;
use crate::noise;
use crate::program::{Analysis, Program, ValueId};

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

/// One value that must decode: its width and where its noise comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    /// Its message width in bits (padding included): the decoding threshold
    /// is `2^-(bits + 1)`.
    pub bits: u32,
    /// Σw² over fresh encryptions.
    pub fresh: f64,
    /// Σw² over bootstrap outputs.
    pub bootstrapped: f64,
}

/// What a program asks of the parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Needs {
    /// Table inputs (one bootstrap each), worst case per width.
    pub tables: Vec<Requirement>,
    /// Outputs (one decryption each), worst case per width.
    pub outputs: Vec<Requirement>,
    /// Bootstraps per evaluation.
    pub pbs_count: usize,
    /// Decrypted outputs per evaluation.
    pub output_count: usize,
    /// Encrypted inputs per evaluation (they are packed into GLWE ciphertexts).
    pub inputs: usize,
    /// Bootstraps that may run on a cheaper, noisier bootstrap key, grouped
    /// by what their outputs reach ([`LightClass`]).
    #[serde(default)]
    pub light: Vec<LightClass>,
}

/// Bootstraps whose outputs reach (through linear ops) only the table inputs
/// and outputs below, worst case per width: they may run on the light
/// bootstrap key ([`LightPbs`]) when every one of these still decodes with
/// *all* its bootstrapped noise at the light key's variance. That test is
/// conservative, so the values a heavy bootstrap feeds need nothing new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LightClass {
    /// Table inputs reached, worst case per width.
    pub tables: Vec<Requirement>,
    /// Outputs reached, worst case per width.
    pub outputs: Vec<Requirement>,
    /// Bootstraps per evaluation in this class.
    pub pbs: usize,
}

/// A second bootstrap key under the same small LWE and GLWE keys, with a
/// shorter decomposition: cheaper (fewer levels: fewer FFTs and products)
/// and noisier. A lookup runs on it when everything its output reaches
/// allows ([`LightClass`]); the rest run on the main key. No keyswitch is
/// needed between the two: they differ only in how the bootstrap key
/// decomposes. (Concrete's optimizer assigns whole parameter sets per
/// partition of the circuit, with keyswitches between them — Bergerat et
/// al., "Parameter Optimization and Larger Precision for (T)FHE", J.
/// Cryptology 2023; this is the case of that idea that costs no keyswitch.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LightPbs {
    /// Decomposition base (log2).
    pub base_log: u32,
    /// Decomposition levels (fewer than the main key's).
    pub level: u32,
}

/// Keeps, per width, the largest noise weights (a safe bound for every
/// requirement of that width).
fn worst_per_width(reqs: impl IntoIterator<Item = Requirement>) -> Vec<Requirement> {
    let mut out: Vec<Requirement> = Vec::new();
    for r in reqs {
        match out.iter_mut().find(|o| o.bits == r.bits) {
            Some(o) => {
                o.fresh = o.fresh.max(r.fresh);
                o.bootstrapped = o.bootstrapped.max(r.bootstrapped);
            }
            None => out.push(r),
        }
    }
    out.sort_by_key(|r| r.bits);
    out
}

impl Needs {
    /// Needs of a program without tables: one `bits`-wide output with Σw² = `fresh`.
    pub fn leveled(bits: u32, fresh: f64) -> Self {
        Self {
            tables: Vec::new(),
            outputs: vec![Requirement {
                bits,
                fresh,
                bootstrapped: 0.0,
            }],
            pbs_count: 0,
            output_count: 1,
            inputs: 1,
            light: Vec::new(),
        }
    }

    /// Reads the needs off an analyzed program, at the widths of its
    /// [`Encoding`].
    pub fn of(program: &Program, analysis: &Analysis) -> Self {
        let encoding = Encoding::of(program, analysis);
        let req = |v: usize| Requirement {
            bits: encoding.bits[v],
            fresh: analysis.values[v].noise.fresh,
            bootstrapped: analysis.values[v].noise.bootstrapped,
        };
        // Rounding extracts bit j of its input with a bootstrap that reads the
        // value scaled by 2^(b−1−j) as a 1-bit message (threshold 1/4): its
        // noise weights grow by 4^(b−1−j), plus the j bits already removed.
        let exact: Vec<bool> = program
            .ops
            .iter()
            .filter_map(|op| match op {
                crate::program::Op::Round { exact, .. } => Some(*exact),
                _ => None,
            })
            .collect();
        let extractions =
            program
                .rounds()
                .zip(exact)
                .filter(|(_, e)| *e)
                .flat_map(|((input, bits, _), _)| {
                    let b = encoding.bits[input];
                    let noise = analysis.values[input].noise;
                    (0..bits).map(move |j| {
                        let scale = 4f64.powi(b as i32 - 1 - j as i32);
                        Requirement {
                            bits: 1,
                            fresh: noise.fresh * scale,
                            bootstrapped: (noise.bootstrapped + f64::from(j)) * scale,
                        }
                    })
                });
        let mut light: Vec<LightClass> = Vec::new();
        for (_, class) in light_units(program, analysis, &encoding) {
            match light
                .iter_mut()
                .find(|c| c.tables == class.tables && c.outputs == class.outputs)
            {
                Some(c) => c.pbs += 1,
                None => light.push(class),
            }
        }
        Self {
            tables: worst_per_width(program.lut_inputs().map(|(v, _)| req(v)).chain(extractions)),
            outputs: worst_per_width(program.outputs.iter().map(|&v| req(v))),
            pbs_count: encoding.pbs_count(program),
            output_count: program.outputs.len(),
            inputs: program.inputs.len(),
            light,
        }
    }

    /// The widest table input (0 without tables).
    pub fn max_table_bits(&self) -> u32 {
        self.tables.iter().map(|r| r.bits).max().unwrap_or(0)
    }

    /// The widest value that must decode.
    pub fn max_bits(&self) -> u32 {
        self.tables
            .iter()
            .chain(&self.outputs)
            .map(|r| r.bits)
            .max()
            .unwrap_or(1)
    }
}

/// The bootstraps that could run on the light key, each as the lookup
/// outputs it computes (several for a fused group) and what they reach.
/// Bootstraps of exact rounding, and lookups whose output a rounding reads,
/// always run on the main key.
fn light_units(
    program: &Program,
    analysis: &Analysis,
    encoding: &Encoding,
) -> Vec<(Vec<ValueId>, LightClass)> {
    use crate::program::Op;
    let n_inputs = program.inputs.len();
    let n = program.n_values();
    let req = |v: usize| Requirement {
        bits: encoding.bits[v],
        fresh: analysis.values[v].noise.fresh,
        bootstrapped: analysis.values[v].noise.bootstrapped,
    };
    // Per lookup output: the table inputs and outputs its noise reaches.
    let mut tables: Vec<Vec<Requirement>> = vec![Vec::new(); n];
    let mut outputs: Vec<Vec<Requirement>> = vec![Vec::new(); n];
    let mut pinned = vec![false; n];
    let mut seen = vec![usize::MAX; n];
    let mut reach = |r: usize,
                     kind: u8,
                     tables: &mut [Vec<Requirement>],
                     outputs: &mut [Vec<Requirement>],
                     pinned: &mut [bool]| {
        // Walk back through linear ops to the bootstraps that feed `r`.
        let mut stack = vec![r];
        while let Some(v) = stack.pop() {
            if seen[v] == r * 3 + kind as usize {
                continue;
            }
            seen[v] = r * 3 + kind as usize;
            if v < n_inputs {
                continue;
            }
            match &program.ops[v - n_inputs] {
                Op::Linear { terms, .. } => stack.extend(terms.iter().map(|&(t, _)| t)),
                Op::Lut { .. } => match kind {
                    0 => tables[v].push(req(r)),
                    1 => outputs[v].push(req(r)),
                    _ => pinned[v] = true,
                },
                Op::Round {
                    exact: false,
                    input,
                    ..
                } => stack.push(*input),
                Op::Round { .. } => {}
            }
        }
    };
    for (v, _) in program.lut_inputs() {
        reach(v, 0, &mut tables, &mut outputs, &mut pinned);
    }
    for &v in &program.outputs {
        reach(v, 1, &mut tables, &mut outputs, &mut pinned);
    }
    for (input, _, _) in program.rounds() {
        reach(input, 2, &mut tables, &mut outputs, &mut pinned);
    }
    // One unit per bootstrap: a fused value's lookups share one.
    let mut units: Vec<(Vec<ValueId>, LightClass)> = Vec::new();
    let mut group: Vec<Option<usize>> = vec![None; n];
    for (i, op) in program.ops.iter().enumerate() {
        let Op::Lut { input, .. } = op else { continue };
        let v = n_inputs + i;
        let unit = match group[*input] {
            Some(u) if encoding.fused[*input] => u,
            _ => {
                units.push((
                    Vec::new(),
                    LightClass {
                        tables: Vec::new(),
                        outputs: Vec::new(),
                        pbs: 1,
                    },
                ));
                group[*input] = Some(units.len() - 1);
                units.len() - 1
            }
        };
        let (values, class) = &mut units[unit];
        values.push(v);
        class.tables.extend(tables[v].iter().copied());
        class.outputs.extend(outputs[v].iter().copied());
        if pinned[v] {
            class.pbs = 0;
        }
    }
    units
        .into_iter()
        .filter(|(_, c)| c.pbs > 0)
        .map(|(values, c)| {
            (
                values,
                LightClass {
                    tables: worst_per_width(c.tables),
                    outputs: worst_per_width(c.outputs),
                    pbs: 1,
                },
            )
        })
        .collect()
}

/// Whether the bootstraps of `class` may run on `params`' light key:
/// everything they reach decodes within the target with all its
/// bootstrapped noise at the light key's variance.
fn light_fits(params: &FheParams, needs: &Needs, class: &LightClass, light: LightPbs) -> bool {
    let Some(pbs) = params.pbs else { return false };
    let z = noise::z_for_log2_p_fail(
        params
            .target
            .per_op_log2(needs.pbs_count + needs.output_count),
    );
    let (var_fresh, _, var_ks, var_ms) = pbs_variances(&pbs);
    let var_light = noise::pbs_variance(
        pbs.lwe_dimension,
        pbs.glwe_dimension,
        pbs.polynomial_size,
        light.base_log,
        light.level,
    );
    class.tables.iter().all(|r| {
        r.fresh * var_fresh + r.bootstrapped * var_light + var_ks + var_ms <= budget(r.bits, z)
    }) && class.outputs.iter().all(|r| {
        let switched =
            output_switch_variance(params.input_lwe_dimension, r.bits, params.output_extra_bits);
        r.fresh * var_fresh + r.bootstrapped * var_light + switched <= budget(r.bits, z)
    })
}

/// Per value of `program`: whether it is a lookup output computed on the
/// light bootstrap key of `params` (none without one). The rule is
/// [`LightClass`]'s, so client and server agree without sending it.
pub fn light_lookups(program: &Program, analysis: &Analysis, params: &FheParams) -> Vec<bool> {
    let encoding = Encoding::of(program, analysis);
    let needs = Needs::of(program, analysis);
    light_lookups_with(program, analysis, &encoding, &needs, params)
}

/// [`light_lookups`] with the program's encoding and needs already at hand
/// (the server computes both for every run).
pub(crate) fn light_lookups_with(
    program: &Program,
    analysis: &Analysis,
    encoding: &Encoding,
    needs: &Needs,
    params: &FheParams,
) -> Vec<bool> {
    let mut light = vec![false; program.n_values()];
    let Some(key) = params.light else {
        return light;
    };
    for (values, class) in light_units(program, analysis, encoding) {
        if light_fits(params, needs, &class, key) {
            for v in values {
                light[v] = true;
            }
        }
    }
    light
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
    #[serde(with = "log2_probability")]
    pub log2_p_fail_pbs: f64,
    /// Worst output decryption.
    #[serde(with = "log2_probability")]
    pub log2_p_fail_output: f64,
    /// One whole evaluation (union bound).
    #[serde(with = "log2_probability")]
    pub log2_p_fail_program: f64,
    /// Estimated cost of one bootstrap (keyswitch included), in milliseconds
    /// on one core, by the cost model in force when the parameters were
    /// chosen ([`crate::cost`]).
    pub pbs_ms: f64,
    /// Bootstraps per evaluation on the light key ([`LightPbs`]).
    #[serde(default)]
    pub light_pbs: usize,
    /// Estimated cost of one of them, as `pbs_ms`.
    #[serde(default)]
    pub light_pbs_ms: f64,
}

/// A log2 probability that may be `-inf` (probability 0): binary formats
/// keep the float as it is; text formats (JSON, which has no infinities)
/// write `-inf` as `null`.
mod log2_probability {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            (*v != f64::NEG_INFINITY).then_some(*v).serialize(s)
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        if d.is_human_readable() {
            Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
        } else {
            f64::deserialize(d)
        }
    }
}

impl Predicted {
    /// Estimated server time of one evaluation of `pbs_count` bootstraps
    /// (leveled work left out), in milliseconds on one core.
    pub fn pbs_total_ms(&self, pbs_count: usize) -> f64 {
        let light = self.light_pbs.min(pbs_count);
        (pbs_count - light) as f64 * self.pbs_ms + light as f64 * self.light_pbs_ms
    }
}

/// A complete parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FheParams {
    /// Width of the widest value, padding included (each value's own width
    /// is in the program's [`Encoding`]).
    pub message_bits: u32,
    /// GLWE dimension of the key inputs are encrypted under.
    pub input_glwe_dimension: usize,
    /// Polynomial size of that key: up to this many inputs share one GLWE
    /// ciphertext (and one mask).
    pub input_polynomial_size: usize,
    /// `k·N` of that key: the LWE dimension of every value's ciphertext.
    pub input_lwe_dimension: usize,
    /// Outputs are modulus-switched to `2^(bits + output_extra_bits)` (at
    /// most 2^64) and bit-packed before they go back to the client.
    pub output_extra_bits: u32,
    /// Keyswitch and bootstrap parameters, when the program has tables.
    pub pbs: Option<PbsParams>,
    /// A second, cheaper bootstrap key for the lookups whose outputs allow
    /// its noise ([`LightClass`]).
    #[serde(default)]
    pub light: Option<LightPbs>,
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

    /// The modulus (log2) an output of `bits` is switched to before it is sent.
    pub fn output_log_modulus(&self, bits: u32) -> u32 {
        (bits + self.output_extra_bits).min(64)
    }

    /// Size of one output ciphertext of `bits` as sent back (switched and
    /// packed), in bytes.
    pub fn output_bytes(&self, bits: u32) -> usize {
        ((self.input_lwe_dimension + 1) * self.output_log_modulus(bits) as usize).div_ceil(8)
    }

    /// Size of one ciphertext under the input key, in bytes.
    pub fn ciphertext_bytes(&self) -> usize {
        (self.input_lwe_dimension + 1) * 8
    }

    /// Size of the bootstrap keys (the main one and the light one, if any)
    /// in the Fourier domain, in bytes.
    pub fn bootstrap_key_bytes(&self) -> usize {
        self.pbs.map_or(0, |p| {
            let glwe_size = p.glwe_dimension + 1;
            let levels = p.pbs_level + self.light.map_or(0, |l| l.level);
            p.lwe_dimension * glwe_size * glwe_size * levels as usize * p.polynomial_size * 8
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

/// Estimated milliseconds of one keyswitch + bootstrap with `pbs` from an
/// input key of dimension `big`, by the process's cost model.
fn pbs_ms(model: &CostModel, big: usize, pbs: &PbsParams) -> f64 {
    model.pbs_ms(
        pbs.lwe_dimension,
        pbs.glwe_dimension,
        pbs.polynomial_size,
        pbs.pbs_level,
    ) + model.keyswitch_ms(big, pbs.lwe_dimension, pbs.ks_level)
}

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

/// The widest requirement (for error messages).
fn widest(reqs: &[Requirement]) -> Requirement {
    reqs.iter()
        .max_by_key(|r| r.bits)
        .copied()
        .unwrap_or(Requirement {
            bits: 1,
            fresh: 0.0,
            bootstrapped: 0.0,
        })
}

fn threshold_log2(bits: u32) -> f64 {
    -(bits as f64) - 1.0
}

/// Variance allowed for a value of `bits` at `z` standard deviations.
fn budget(bits: u32, z: f64) -> f64 {
    (threshold_log2(bits).exp2() / z).powi(2)
}

/// Worst failure probability (log2) over requirements, given each one's variance.
fn worst_fail(reqs: &[Requirement], variance: impl Fn(&Requirement) -> f64) -> f64 {
    reqs.iter()
        .map(|r| noise::log2_p_fail_for(variance(r), threshold_log2(r.bits)))
        .fold(f64::NEG_INFINITY, f64::max)
}

fn union_bound(needs: &Needs, p_pbs: f64, p_out: f64) -> f64 {
    (needs.pbs_count as f64 * p_pbs.exp2() + needs.output_count.max(1) as f64 * p_out.exp2()).log2()
}

/// Variance the modulus switch of an output of `bits` to `bits + extra`
/// bits (at most 64: no switch) adds, under a key of `dimension`.
fn output_switch_variance(dimension: usize, bits: u32, extra: u32) -> f64 {
    let m = (bits + extra).min(64);
    if m >= 64 {
        0.0
    } else {
        noise::plain_modulus_switch_variance(dimension, m)
    }
}

/// Chooses how far outputs are modulus-switched before they are sent: the
/// fewest extra bits whose rounding noise takes at most 1/16 of every
/// output's decoding budget, then updates the predicted output failure.
fn switch_outputs(params: &mut FheParams, needs: &Needs, var_fresh: f64, var_pbs: f64, z: f64) {
    let dimension = params.input_lwe_dimension;
    let var = |r: &Requirement| r.fresh * var_fresh + r.bootstrapped * var_pbs;
    let ms = |r: &Requirement, extra: u32| output_switch_variance(dimension, r.bits, extra);
    let extra = (1..=64)
        .find(|&e| {
            needs.outputs.iter().all(|r| {
                let b = budget(r.bits, z);
                ms(r, e) <= b / 16.0 && var(r) + ms(r, e) <= b
            })
        })
        .unwrap_or(64);
    params.output_extra_bits = extra;
    let p_out = worst_fail(&needs.outputs, |r| var(r) + ms(r, extra));
    params.predicted.log2_p_fail_output = p_out;
    params.predicted.log2_p_fail_program =
        union_bound(needs, params.predicted.log2_p_fail_pbs, p_out);
}

/// Variances of one bootstrap candidate: (fresh, bootstrap output, keyswitch, modulus switch).
fn pbs_variances(pbs: &PbsParams) -> (f64, f64, f64, f64) {
    let big = pbs.glwe_dimension * pbs.polynomial_size;
    (
        noise::min_lwe_variance(big),
        noise::pbs_variance(
            pbs.lwe_dimension,
            pbs.glwe_dimension,
            pbs.polynomial_size,
            pbs.pbs_base_log,
            pbs.pbs_level,
        ),
        noise::keyswitch_variance(big, pbs.lwe_dimension, pbs.ks_base_log, pbs.ks_level),
        noise::modulus_switch_variance(pbs.lwe_dimension, pbs.polynomial_size.trailing_zeros() + 1),
    )
}

/// Variance (relative) of a table input at the moment its bootstrap decides,
/// under chosen parameters: its own noise (`fresh`, `bootstrapped` weights)
/// plus the keyswitch and the modulus switch. 0 without tables.
pub fn table_input_variance(params: &FheParams, fresh: f64, bootstrapped: f64) -> f64 {
    params.pbs.map_or(0.0, |pbs| {
        let (var_fresh, var_pbs, var_ks, var_ms) = pbs_variances(&pbs);
        fresh * var_fresh + bootstrapped * var_pbs + var_ks + var_ms
    })
}

/// What the noise and cost models predict for given bootstrap parameters
/// (inputs under the GLWE key of the bootstrap, outputs not switched), for
/// any candidate set — ours or a stock one.
pub fn predict(needs: &Needs, pbs: &PbsParams) -> Predicted {
    let (var_fresh, var_pbs, var_ks, var_ms) = pbs_variances(pbs);
    let p_pbs = worst_fail(&needs.tables, |r| {
        r.fresh * var_fresh + r.bootstrapped * var_pbs + var_ks + var_ms
    });
    let p_out = worst_fail(&needs.outputs, |r| {
        r.fresh * var_fresh + r.bootstrapped * var_pbs
    });
    let big = pbs.glwe_dimension * pbs.polynomial_size;
    Predicted {
        log2_p_fail_pbs: p_pbs,
        log2_p_fail_output: p_out,
        log2_p_fail_program: union_bound(needs, p_pbs, p_out),
        pbs_ms: pbs_ms(&crate::cost::active(), big, pbs),
        light_pbs: 0,
        light_pbs_ms: 0.0,
    }
}

/// Checks that `params` serve `needs`: the key sizes are ones the optimizer
/// may pick (so 128-bit security holds), every table input and every output
/// decodes within the parameters' own failure target, and outputs are
/// switched to no fewer bits than that target allows.
///
/// This does not ask for the optimizer's own choice: keys made with another
/// machine's cost profile ([`crate::cost`]) are as correct and as secure.
///
/// ```
/// use cml_runtime::params::{check, choose, Needs, PFail};
///
/// let needs = Needs::leveled(16, 1000.0);
/// let mut params = choose(&needs, PFail::default()).unwrap();
/// assert!(check(&needs, &params).is_ok());
/// params.input_glwe_dimension = 1; // a smaller key: not enough for 2^-40
/// params.input_lwe_dimension = params.input_polynomial_size;
/// assert!(check(&needs, &params).is_err());
/// ```
pub fn check(needs: &Needs, params: &FheParams) -> Result<(), FheError> {
    let bad = |why: String| Err(FheError::Mismatch(why));
    params.target.validate()?;
    if params.message_bits < needs.max_bits() {
        return bad(format!(
            "the program needs {} bits of message space, these parameters give {}",
            needs.max_bits(),
            params.message_bits
        ));
    }
    let (k, big_n) = (params.input_glwe_dimension, params.input_polynomial_size);
    if k.checked_mul(big_n) != Some(params.input_lwe_dimension)
        || !big_n.is_power_of_two()
        || params.input_lwe_dimension < *LWE_DIMENSIONS.start()
        || params.input_lwe_dimension > MAX_GLWE_LWE_DIMENSION
        || params.output_extra_bits == 0
        || params.output_extra_bits > 64
    {
        return bad("the input key's sizes are not ones cml uses".into());
    }
    let z = noise::z_for_log2_p_fail(
        params
            .target
            .per_op_log2(needs.pbs_count + needs.output_count),
    );
    let var_fresh = noise::min_lwe_variance(params.input_lwe_dimension);
    let var_pbs = match (&params.pbs, needs.pbs_count) {
        (None, 0) => 0.0,
        (None, _) => {
            return bad(
                "the program has table lookups but these parameters have no bootstrap".into(),
            )
        }
        (Some(pbs), _) => {
            let log2_n = pbs.polynomial_size.trailing_zeros();
            if pbs.glwe_dimension != k
                || pbs.polynomial_size != big_n
                || !LWE_DIMENSIONS.contains(&pbs.lwe_dimension)
                || !LOG2_POLY_SIZES.contains(&log2_n)
                || !GLWE_DIMENSIONS.contains(&pbs.glwe_dimension)
                || log2_n < needs.max_table_bits()
                || !(1..=6).contains(&pbs.pbs_level)
                || !(1..=12).contains(&pbs.ks_level)
                || pbs.pbs_base_log * pbs.pbs_level > 64
                || pbs.ks_base_log * pbs.ks_level > 64
                || pbs.pbs_base_log == 0
                || pbs.ks_base_log == 0
            {
                return bad("the bootstrap's sizes are not ones cml uses".into());
            }
            if let Some(light) = params.light {
                if !(1..pbs.pbs_level).contains(&light.level)
                    || light.base_log == 0
                    || light.base_log * light.level > 64
                {
                    return bad("the light bootstrap key's sizes are not ones cml uses".into());
                }
            }
            let (_, var_pbs, var_ks, var_ms) = pbs_variances(pbs);
            for r in &needs.tables {
                let var = r.fresh * var_fresh + r.bootstrapped * var_pbs + var_ks + var_ms;
                if var / budget(r.bits, z) > 1.0 {
                    return bad(format!(
                        "a {}-bit table input would fail more often than the target {:?}",
                        r.bits, params.target
                    ));
                }
            }
            var_pbs
        }
    };
    for r in &needs.outputs {
        let switched =
            output_switch_variance(params.input_lwe_dimension, r.bits, params.output_extra_bits);
        if r.fresh * var_fresh + r.bootstrapped * var_pbs + switched > budget(r.bits, z) {
            return bad(format!(
                "a {}-bit output would fail more often than the target {:?}",
                r.bits, params.target
            ));
        }
    }
    Ok(())
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
    let mut fields = vec![
        needs.pbs_count as u64,
        needs.output_count as u64,
        needs.inputs as u64,
        needs.tables.len() as u64,
    ];
    for r in needs.tables.iter().chain(&needs.outputs) {
        fields.extend([
            u64::from(r.bits),
            r.fresh.to_bits(),
            r.bootstrapped.to_bits(),
        ]);
    }
    for c in &needs.light {
        fields.extend([c.pbs as u64, c.tables.len() as u64, c.outputs.len() as u64]);
        for r in c.tables.iter().chain(&c.outputs) {
            fields.extend([
                u64::from(r.bits),
                r.fresh.to_bits(),
                r.bootstrapped.to_bits(),
            ]);
        }
    }
    let key: Key = (fields, kind, x.to_bits());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(hit);
    }
    let chosen = choose_with(needs, target, &crate::cost::active())?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, chosen);
    }
    Ok(chosen)
}

/// Adds a light bootstrap key ([`LightPbs`]) to chosen parameters where it
/// saves the most estimated time: the best base for each level count below
/// the main key's, and the lookups [`light_fits`] allows.
fn choose_light(params: &mut FheParams, needs: &Needs, model: &CostModel) {
    let Some(pbs) = params.pbs else { return };
    let big = pbs.glwe_dimension * pbs.polynomial_size;
    let main_ms = pbs_ms(model, big, &pbs);
    let options = best_bases(1..=pbs.pbs_level.saturating_sub(1), |b, l| {
        noise::pbs_variance(
            pbs.lwe_dimension,
            pbs.glwe_dimension,
            pbs.polynomial_size,
            b,
            l,
        )
    });
    let mut best: Option<(f64, LightPbs, usize)> = None;
    for (base_log, level, _) in options {
        let light = LightPbs { base_log, level };
        let count: usize = needs
            .light
            .iter()
            .filter(|c| light_fits(params, needs, c, light))
            .map(|c| c.pbs)
            .sum();
        let cheaper = PbsParams {
            pbs_base_log: base_log,
            pbs_level: level,
            ..pbs
        };
        let saving = count as f64 * (main_ms - pbs_ms(model, big, &cheaper));
        if count > 0 && saving > 0.0 && best.is_none_or(|(s, _, _)| saving > s) {
            best = Some((saving, light, count));
        }
    }
    if let Some((_, light, count)) = best {
        params.light = Some(light);
        params.predicted.light_pbs = count;
        let cheaper = PbsParams {
            pbs_base_log: light.base_log,
            pbs_level: light.level,
            ..pbs
        };
        params.predicted.light_pbs_ms = pbs_ms(&crate::cost::active(), big, &cheaper);
    }
}

/// [`choose`] with a given cost model, not memoized (for comparing models;
/// the estimate in `predicted.pbs_ms` is the process's model's).
pub fn choose_with(needs: &Needs, target: PFail, model: &CostModel) -> Result<FheParams, FheError> {
    target.validate()?;
    let log2_target = target.per_op_log2(needs.pbs_count + needs.output_count);
    let z = noise::z_for_log2_p_fail(log2_target);
    // How far past its budget the worst requirement is (≤ 1: feasible).
    let excess = |reqs: &[Requirement], var: &dyn Fn(&Requirement) -> f64| {
        reqs.iter()
            .map(|r| var(r) / budget(r.bits, z))
            .fold(0.0f64, f64::max)
    };

    if needs.pbs_count == 0 || needs.tables.is_empty() {
        // One GLWE ciphertext holds all inputs: N covers them, k sets security.
        let big_n = needs
            .inputs
            .next_power_of_two()
            .clamp(MIN_PACKING_POLY_SIZE, 1024);
        let mut least = f64::INFINITY;
        let first = LWE_DIMENSIONS.start().div_ceil(big_n);
        for k in first..=MAX_GLWE_LWE_DIMENSION / big_n {
            let dimension = k * big_n;
            let var_fresh = noise::min_lwe_variance(dimension);
            let over = excess(&needs.outputs, &|r| r.fresh * var_fresh);
            least = least.min(over);
            if over <= 1.0 {
                let mut params = FheParams {
                    message_bits: needs.max_bits(),
                    input_glwe_dimension: k,
                    input_polynomial_size: big_n,
                    input_lwe_dimension: dimension,
                    output_extra_bits: 64,
                    pbs: None,
                    light: None,
                    target,
                    predicted: Predicted {
                        log2_p_fail_pbs: f64::NEG_INFINITY,
                        log2_p_fail_output: f64::NEG_INFINITY,
                        log2_p_fail_program: f64::NEG_INFINITY,
                        pbs_ms: 0.0,
                        light_pbs: 0,
                        light_pbs_ms: 0.0,
                    },
                };
                switch_outputs(&mut params, needs, var_fresh, 0.0, z);
                return Ok(params);
            }
        }
        let worst = widest(&needs.outputs);
        return Err(FheError::NoParameters {
            what: "the widest output".into(),
            bits: worst.bits,
            norm: worst.fresh.sqrt(),
            log2_p_fail: log2_target,
            // The worst variance is `least` budgets: its threshold is z/√least σ.
            best_log2_p_fail: noise::log2_p_fail(z / least.sqrt()),
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
    let max_table_bits = needs.max_table_bits();
    let mut best: Option<(f64, FheParams)> = None;
    let mut least = f64::INFINITY;
    for k in GLWE_DIMENSIONS {
        for log2_n in LOG2_POLY_SIZES {
            let big_n = 1usize << log2_n;
            let big = k * big_n;
            // The lookup table needs at least two slots per message value.
            if big > MAX_GLWE_LWE_DIMENSION || log2_n < max_table_bits {
                continue;
            }
            let var_fresh = noise::min_lwe_variance(big);
            let pbs_per_n = best_bases(1..=6, |b, l| noise::pbs_variance(1, k, big_n, b, l));
            for (n, ks_per_n_in) in &ks_tables {
                let n = *n;
                let var_ms = noise::modulus_switch_variance(n, log2_n + 1);
                for &(pb, pl, pbs_unit) in &pbs_per_n {
                    let var_pbs = pbs_unit * n as f64;
                    let out = excess(&needs.outputs, &|r| {
                        r.fresh * var_fresh + r.bootstrapped * var_pbs
                    });
                    if out > 1.0 {
                        least = least.min(out);
                        continue;
                    }
                    for &(kb, kl, ks_unit) in ks_per_n_in {
                        let var_ks = ks_unit * big as f64;
                        let lut = excess(&needs.tables, &|r| {
                            r.fresh * var_fresh + r.bootstrapped * var_pbs + var_ks + var_ms
                        });
                        if lut > 1.0 {
                            least = least.min(lut);
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
                        let cost = pbs_ms(model, big, &pbs);
                        if best.as_ref().is_some_and(|(c, _)| *c <= cost) {
                            continue;
                        }
                        best = Some((
                            cost,
                            FheParams {
                                message_bits: needs.max_bits(),
                                input_glwe_dimension: k,
                                input_polynomial_size: big_n,
                                input_lwe_dimension: big,
                                output_extra_bits: 64,
                                pbs: Some(pbs),
                                light: None,
                                target,
                                predicted: predict(needs, &pbs),
                            },
                        ));
                    }
                }
            }
        }
    }
    match best {
        Some((_, mut params)) => {
            let pbs = params.pbs.expect("set in the search above");
            let (var_fresh, var_pbs, _, _) = pbs_variances(&pbs);
            switch_outputs(&mut params, needs, var_fresh, var_pbs, z);
            choose_light(&mut params, needs, model);
            Ok(params)
        }
        None => {
            let widest = widest(&needs.tables);
            Err(FheError::NoParameters {
                what: "the widest table input".into(),
                bits: widest.bits,
                norm: (widest.fresh + widest.bootstrapped).sqrt(),
                log2_p_fail: log2_target,
                best_log2_p_fail: noise::log2_p_fail(z / least.sqrt()),
                hint: "round the value to fewer bits before the table, use fewer bits, or a higher failure probability",
            })
        }
    }
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
            tables: vec![Requirement {
                bits: bits + 1,
                fresh: 1.0,
                bootstrapped: 0.0,
            }],
            outputs: vec![Requirement {
                bits: bits + 1,
                fresh: 0.0,
                bootstrapped: 1.0,
            }],
            pbs_count: 1,
            output_count: 1,
            inputs: 1,
            light: Vec::new(),
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

    /// Keys are checked for what they serve, not for being the optimizer's
    /// choice: parameters chosen with another machine's cost model pass, and
    /// parameters that are too noisy or of sizes cml does not use do not.
    #[test]
    fn check_accepts_any_serving_parameters_and_refuses_others() {
        let needs = lut_needs(4);
        let params = choose(&needs, PFail::default()).unwrap();
        assert!(check(&needs, &params).is_ok());
        // A machine where FFTs cost 50 times more picks other parameters,
        // which serve the program as well.
        let slow_fft = CostModel {
            fft: CostModel::BUILTIN.fft * 50.0,
            ..CostModel::BUILTIN
        };
        let other = choose_with(&needs, PFail::default(), &slow_fft).unwrap();
        assert_ne!(other.pbs, params.pbs);
        assert!(check(&needs, &other).is_ok());

        let err = |needs: &Needs, p: &FheParams| check(needs, p).unwrap_err().to_string();
        let mut noisy = needs.clone();
        noisy.tables[0].bootstrapped = 1e4;
        assert!(err(&noisy, &params).contains("5-bit table input would fail"));
        let mut wide = needs.clone();
        wide.outputs[0].bits = 12;
        assert!(err(&wide, &params).contains("needs 12 bits of message space"));
        let mut small = params;
        let mut pbs = small.pbs.unwrap();
        pbs.lwe_dimension = 100;
        small.pbs = Some(pbs);
        assert!(err(&needs, &small).contains("sizes are not ones cml uses"));
        let mut unswitched = params;
        unswitched.output_extra_bits = 1;
        assert!(err(&needs, &unswitched).contains("output would fail"));
        let mut no_pbs = params;
        no_pbs.pbs = None;
        assert!(err(&needs, &no_pbs).contains("no bootstrap"));
    }

    /// An ensemble in miniature: 1-bit comparisons feed 2-bit leaf indices,
    /// and 64 leaf values feed one wide sum. The sum needs the quiet main
    /// key for the leaves; the comparisons, whose outputs only reach narrow
    /// table inputs, run on the light key.
    #[test]
    fn comparisons_run_on_the_light_key_and_leaves_do_not() {
        use crate::program::{Interval, Op, Program, Table};
        let mut p = Program::new(vec![Interval::new(0, 7); 65]);
        let cmp = p.add_table(Table::from_fn("gt3", 0..=7, |x| i64::from(x > 3)));
        let leaf = p.add_table(Table::from_fn("leaf", 0..=2, |z| 40 * z - 60));
        let comparisons: Vec<usize> = (0..65)
            .map(|i| {
                p.push(Op::Lut {
                    input: i,
                    table: cmp,
                })
            })
            .collect();
        let leaves: Vec<usize> = comparisons
            .windows(2)
            .map(|w| {
                let z = p.push(Op::Linear {
                    terms: vec![(w[0], 1), (w[1], 1)],
                    constant: 0,
                });
                p.push(Op::Lut {
                    input: z,
                    table: leaf,
                })
            })
            .collect();
        let sum = p.push(Op::Linear {
            terms: leaves.iter().map(|&l| (l, 1)).collect(),
            constant: 0,
        });
        p.outputs = vec![sum];
        let analysis = p.analyze().unwrap();
        let needs = Needs::of(&p, &analysis);
        let params = choose(&needs, PFail::default()).unwrap();
        let main = params.pbs.unwrap();
        let light = params.light.expect("a light key pays here");
        assert!(light.level < main.pbs_level, "{params:?}");
        assert_eq!(params.predicted.light_pbs, comparisons.len());
        assert!(params.predicted.light_pbs_ms < params.predicted.pbs_ms);
        let on_light = light_lookups(&p, &analysis, &params);
        assert!(comparisons.iter().all(|&c| on_light[c]));
        assert!(leaves.iter().all(|&l| !on_light[l]));
        assert!(check(&needs, &params).is_ok());
        // A light key as long as the main one is not one cml makes.
        let mut odd = params;
        odd.light = Some(LightPbs {
            base_log: main.pbs_base_log,
            level: main.pbs_level,
        });
        assert!(check(&needs, &odd)
            .unwrap_err()
            .to_string()
            .contains("light bootstrap key"));
    }

    #[test]
    fn global_target_is_split() {
        assert_eq!(PFail::Global(-40.0).per_op_log2(1024), -50.0);
    }
}

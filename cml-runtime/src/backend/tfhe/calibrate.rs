//! Measuring the cost model's coefficients ([`crate::cost`]) on the machine
//! this runs on.
//!
//! Blind rotations are timed over a grid of GLWE dimension `k`, polynomial
//! size `N` and decomposition levels `ℓ`, each as a whole bootstrap
//! (accumulator, modulus switch, `n` rotation steps, sample extraction) with
//! a bootstrap key of realistic size, so that memory traffic is measured
//! too; keyswitches over a grid of input and output dimensions and levels.
//! The timings do not depend on key values, so the keys are filled with
//! arbitrary values (written, so that they occupy real memory) and no key
//! generation is needed; the inputs are random, so that no step is skipped. Each point is the fastest of a few runs on one thread. A
//! non-negative least-squares fit then gives the coefficients.

use std::time::Instant;

use tfhe::core_crypto::prelude::*;

use super::native;
use super::pbs::{blind_rotate, scratch};
use crate::cost::{keyswitch_units, nonnegative_least_squares, rotation_units, CostModel};

/// One timed bootstrap configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationSample {
    /// Rotation steps (the small LWE dimension).
    pub n: usize,
    /// GLWE dimension.
    pub k: usize,
    /// Polynomial size.
    pub big_n: usize,
    /// Decomposition levels.
    pub level: u32,
    /// Fastest run, nanoseconds.
    pub ns: f64,
}

/// One timed keyswitch configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyswitchSample {
    /// Input dimension.
    pub n_in: usize,
    /// Output dimension.
    pub n_out: usize,
    /// Decomposition levels.
    pub level: u32,
    /// Fastest run, nanoseconds.
    pub ns: f64,
}

/// What [`calibrate`] measured and the model fitted to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The fitted coefficients.
    pub model: CostModel,
    /// Bootstrap timings.
    pub rotations: Vec<RotationSample>,
    /// Keyswitch timings.
    pub keyswitches: Vec<KeyswitchSample>,
}

/// A grid point: `(k, N, ℓ)` of a bootstrap or `(n_in, n_out, ℓ)` of a
/// keyswitch.
pub type Point = (usize, usize, u32);

/// The grid [`calibrate`] measures: bootstraps and keyswitches; `quick`
/// keeps a few small points (for tests).
pub fn grid(quick: bool) -> (Vec<Point>, Vec<Point>) {
    if quick {
        return (
            vec![(1, 512, 1), (1, 1024, 2), (2, 512, 1), (1, 512, 3)],
            vec![(512, 300, 2), (1024, 300, 3), (1024, 500, 5)],
        );
    }
    // k·N up to 8192, and N up to 32768 for k = 1 (the 7- and 8-bit
    // tables' sizes), with fewer levels there to bound the key's memory.
    let mut rotations = Vec::new();
    for k in 1..=3usize {
        for log2_n in 9..=15u32 {
            let big_n = 1usize << log2_n;
            if k * big_n > 1 << 13 && !(k == 1 && big_n <= 1 << 15) {
                continue;
            }
            let levels = if big_n > 1 << 13 { 1..=2 } else { 1..=3 };
            for level in levels {
                rotations.push((k, big_n, level));
            }
        }
    }
    let mut keyswitches = Vec::new();
    for n_in in [1024, 2048, 4096] {
        for n_out in [600, 900] {
            for level in [2, 5, 8] {
                keyswitches.push((n_in, n_out, level));
            }
        }
    }
    (rotations, keyswitches)
}

/// Measures the grid (see [`grid`]) with `n` rotation steps per bootstrap
/// and `runs` runs per point, calling `progress` after each point, and fits
/// the model.
pub fn calibrate(
    quick: bool,
    n: usize,
    runs: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Calibration {
    let (rot_grid, ks_grid) = grid(quick);
    let total = rot_grid.len() + ks_grid.len();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rotations = Vec::new();
    for (i, &(k, big_n, level)) in rot_grid.iter().enumerate() {
        let ns = time_bootstrap(n, k, big_n, level, runs, &mut rng);
        rotations.push(RotationSample {
            n,
            k,
            big_n,
            level,
            ns,
        });
        progress(i + 1, total);
    }
    let mut keyswitches = Vec::new();
    for (i, &(n_in, n_out, level)) in ks_grid.iter().enumerate() {
        let ns = time_keyswitch(n_in, n_out, level, runs, &mut rng);
        keyswitches.push(KeyswitchSample {
            n_in,
            n_out,
            level,
            ns,
        });
        progress(rot_grid.len() + i + 1, total);
    }
    Calibration {
        model: fit(&rotations, &keyswitches),
        rotations,
        keyswitches,
    }
}

/// Fits the cost model to timings: `ns ≈ fft·n·x_fft + product·n·x_prod +
/// fixed` for bootstraps, `ns ≈ keyswitch·x_ks` for keyswitches, minimising
/// relative errors (each row divided by its time).
pub fn fit(rotations: &[RotationSample], keyswitches: &[KeyswitchSample]) -> CostModel {
    let rows: Vec<([f64; 3], f64)> = rotations
        .iter()
        .map(|r| {
            let (fft, product) = rotation_units(r.k, r.big_n, r.level);
            let n = r.n as f64;
            ([n * fft / r.ns, n * product / r.ns, 1.0 / r.ns], 1.0)
        })
        .collect();
    let [fft, product, fixed] = nonnegative_least_squares(&rows);
    let rows: Vec<([f64; 3], f64)> = keyswitches
        .iter()
        .map(|k| {
            (
                [keyswitch_units(k.n_in, k.n_out, k.level) / k.ns, 0.0, 0.0],
                1.0,
            )
        })
        .collect();
    let [keyswitch, _, _] = nonnegative_least_squares(&rows);
    CostModel {
        fft,
        product,
        keyswitch,
        fixed,
    }
}

/// Fastest of `runs` whole bootstraps with `n` steps.
fn time_bootstrap(
    n: usize,
    k: usize,
    big_n: usize,
    level: u32,
    runs: usize,
    rng: &mut XorShift,
) -> f64 {
    let mut bsk = FourierLweBootstrapKeyOwned::new(
        LweDimension(n),
        GlweDimension(k).to_glwe_size(),
        PolynomialSize(big_n),
        DecompositionBaseLog((60 / level).min(23) as usize),
        DecompositionLevelCount(level as usize),
    );
    // Written, so that the key sits in memory of its own (a zeroed
    // allocation maps one shared zero page, which stays in cache).
    for (i, c) in bsk.as_mut_view().data().iter_mut().enumerate() {
        let x = (i % 1021) as f64 * 1e-3;
        c.re = x;
        c.im = -x;
    }
    let (fft, mut buffers) = scratch(&bsk);
    let entries: Vec<u64> = (0..8).map(|_| rng.next()).collect();
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        let small: Vec<u64> = (0..=n).map(|_| rng.next()).collect();
        let start = Instant::now();
        let small = LweCiphertext::from_container(small, native());
        let acc = blind_rotate(&bsk, &fft, &mut buffers, small, &entries);
        let mut out = LweCiphertext::new(0u64, LweSize(k * big_n + 1), native());
        extract_lwe_sample_from_glwe_ciphertext(&acc, &mut out, MonomialDegree(0));
        best = best.min(start.elapsed().as_nanos() as f64);
        std::hint::black_box(&out);
    }
    best
}

/// Fastest of `runs` keyswitches.
fn time_keyswitch(n_in: usize, n_out: usize, level: u32, runs: usize, rng: &mut XorShift) -> f64 {
    let mut ksk = LweKeyswitchKey::new(
        0u64,
        DecompositionBaseLog((60 / level).min(20) as usize),
        DecompositionLevelCount(level as usize),
        LweDimension(n_in),
        LweDimension(n_out),
        native(),
    );
    // Written, as the bootstrap key above.
    for x in ksk.as_mut() {
        *x = rng.next();
    }
    let mut best = f64::INFINITY;
    for _ in 0..runs.max(1) {
        let input: Vec<u64> = (0..=n_in).map(|_| rng.next()).collect();
        let input = LweCiphertext::from_container(input, native());
        let mut out = LweCiphertext::new(0u64, LweSize(n_out + 1), native());
        let start = Instant::now();
        keyswitch_lwe_ciphertext(&ksk, &input, &mut out);
        best = best.min(start.elapsed().as_nanos() as f64);
        std::hint::black_box(&out);
    }
    best
}

/// A small deterministic generator for timing inputs (not for keys).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quick calibration gives a usable model whose estimates are close
    /// to the timings it was fitted on.
    #[test]
    fn a_quick_calibration_fits_its_timings() {
        let c = calibrate(true, 64, 3, &mut |_, _| {});
        assert!(c.model.validate().is_ok(), "{:?}", c.model);
        for r in &c.rotations {
            let est = c.model.pbs_ms(r.n, r.k, r.big_n, r.level) * 1e6;
            assert!(
                est / r.ns > 0.5 && est / r.ns < 2.0,
                "{r:?}: estimated {est} ns"
            );
        }
        for k in &c.keyswitches {
            let est = c.model.keyswitch_ms(k.n_in, k.n_out, k.level) * 1e6;
            assert!(
                est / k.ns > 0.5 && est / k.ns < 2.0,
                "{k:?}: estimated {est} ns"
            );
        }
    }
}

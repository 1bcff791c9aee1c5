//! The TFHE noise model: security curve, keyswitch, bootstrap and modulus
//! switch variances, and Gaussian failure probabilities.
//!
//! The formulas are those `tfhe` 1.8.2 publishes in
//! `core_crypto::commons::noise_formulas` (generated from Zama's noise analysis
//! for 132-bit security with binary secret keys); they are restated here so
//! that parameter choice runs without `tfhe` (inside the proc macro). A test in
//! `tests/fhe_noise_formulas.rs` checks they agree with `tfhe`'s.
//!
//! All variances are *relative*: the torus is `[0, 1)`, so a ciphertext
//! modulus `q = 2^64` error of standard deviation `σ · 2^64` has variance `σ²`.
//!
//! ```
//! use cml_runtime::noise;
//!
//! // Bigger keys allow less noise at the same security.
//! assert!(noise::min_lwe_variance(1024) < noise::min_lwe_variance(512));
//! // A 7-σ threshold fails about once in 2^38.
//! let p = noise::log2_p_fail(7.0);
//! assert!(p < -37.0 && p > -39.0);
//! ```

/// `log2` of the native ciphertext modulus.
pub const LOG2_Q: f64 = 64.0;

fn q() -> f64 {
    LOG2_Q.exp2()
}

/// Smallest Gaussian variance that keeps an LWE key of `dimension` at 132-bit
/// security (lattice-estimator fit).
pub fn min_lwe_variance(dimension: usize) -> f64 {
    (4.0 - 2.0 * LOG2_Q).exp2() + (5.31469187675068 - 0.0497829131652661 * dimension as f64).exp2()
}

/// Variance added by keyswitching from dimension `n_in` to `n_out` with
/// decomposition base `2^base_log` and `level` levels.
pub fn keyswitch_variance(n_in: usize, n_out: usize, base_log: u32, level: u32) -> f64 {
    let base = (base_log as f64).exp2();
    let l = level as f64;
    let q2 = q().powi(-2);
    l * n_in as f64 * min_lwe_variance(n_out) * (base * base / 12.0 + 1.0 / 6.0)
        + n_in as f64 * (q2 / 48.0 + base.powf(-2.0 * l) / 24.0)
    // (tfhe's formula also has −q_in⁻²/12 + q_out⁻²/12, which cancel for equal moduli.)
}

/// Variance of a bootstrap's output (FFT with 53-bit mantissas), for an input
/// LWE dimension `n`, GLWE dimension `k`, polynomial size `big_n` and
/// decomposition base `2^base_log` with `level` levels.
pub fn pbs_variance(n: usize, k: usize, big_n: usize, base_log: u32, level: u32) -> f64 {
    const MANTISSA: f64 = 53.0;
    let base = (base_log as f64).exp2();
    let l = level as f64;
    let (kf, nf) = (k as f64, big_n as f64);
    let q2 = q().powi(-2);
    let fft = 0.00705
        * (2.0 * (LOG2_Q - MANTISSA).max(0.0) + 2.0 * base_log as f64 - 2.0 * LOG2_Q).exp2()
        * l.powf(1.01827)
        * kf.powf(1.22003)
        * nf.powf(2.22003)
        * (kf + 1.0).powf(1.01827);
    let key = l * nf * min_lwe_variance(k * big_n) * (base * base / 12.0 + 1.0 / 6.0) * (kf + 1.0);
    let decomposition =
        0.5 * kf * nf * (q2 / 48.0 + base.powf(-2.0 * l) / 24.0) + base.powf(-2.0 * l) / 24.0;
    n as f64 * (fft + key - q2 / 24.0 + decomposition)
}

/// Variance added by the centered modulus switch of a dimension-`n` ciphertext
/// to modulus `2N` (`log2_new_modulus = log2(2N)`) before blind rotation.
pub fn modulus_switch_variance(n: usize, log2_new_modulus: u32) -> f64 {
    let q2 = q().powi(-2);
    let new2 = (log2_new_modulus as f64).exp2().powi(-2);
    n as f64 * (q2 / 24.0 + new2 / 48.0)
}

/// Variance added by the plain (rounding) modulus switch of a dimension-`n`
/// ciphertext from 2^64 to `2^log2_new_modulus`, as when outputs are
/// compressed before they are sent back.
pub fn plain_modulus_switch_variance(n: usize, log2_new_modulus: u32) -> f64 {
    let q2 = q().powi(-2);
    let new2 = (log2_new_modulus as f64).exp2().powi(-2);
    n as f64 * (q2 / 48.0 + new2 / 24.0) - q2 / 12.0 + new2 / 12.0
}

/// `log2` of the two-sided Gaussian tail `P(|e| > z·σ)`.
///
/// Uses the Chebyshev fit of `erfc` from *Numerical Recipes* (relative error
/// below 1.2e-7 everywhere), evaluated in the log domain so that tails down to
/// 2^-1000 stay exact.
pub fn log2_p_fail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    if x <= 0.0 {
        return 0.0;
    }
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -x * x - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    (t.ln() + poly) / std::f64::consts::LN_2
}

/// The `z` (threshold in standard deviations) at which [`log2_p_fail`] equals
/// `log2_p` (which must be negative).
pub fn z_for_log2_p_fail(log2_p: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 64.0f64);
    // Widen until the bracket holds the target (deep targets need large z).
    while log2_p_fail(hi) > log2_p && hi < 1e12 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if log2_p_fail(mid) > log2_p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Probability that an approximately rounded value lands one step off: its
/// offset `delta` from the rounded grid point and the noise `sigma` are both
/// in steps of the rounded value (`delta` in `[−1/2, 1/2)`). The next
/// bootstrap's box spans `±1/2` step: `Q((1/2 − δ)/σ) + Q((1/2 + δ)/σ)`.
pub fn approximate_rounding_error(delta: f64, sigma: f64) -> f64 {
    let q = |x: f64| 0.5 * log2_p_fail(x).exp2();
    if sigma <= 0.0 {
        return if delta <= -0.5 { 0.5 } else { 0.0 };
    }
    q((0.5 - delta) / sigma) + q((0.5 + delta) / sigma)
}

/// [`approximate_rounding_error`] averaged over offsets spread uniformly
/// over a step (inputs uniform within each rounded value): about
/// `σ·√(2/π)` for small `σ`.
pub fn approximate_rounding_error_mean(sigma: f64) -> f64 {
    let n = 2000;
    (0..n)
        .map(|i| approximate_rounding_error(-0.5 + (i as f64 + 0.5) / n as f64, sigma))
        .sum::<f64>()
        / n as f64
}

/// `log2` of the failure probability of decoding a value with `variance`
/// when the decoding threshold is `2^log2_threshold` (both relative).
pub fn log2_p_fail_for(variance: f64, log2_threshold: f64) -> f64 {
    if variance <= 0.0 {
        return f64::NEG_INFINITY;
    }
    log2_p_fail(log2_threshold.exp2() / variance.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_matches_known_values() {
        // P(|N(0,1)| > 1.959964) = 0.05; P(> 3) = 0.0026998.
        assert!((log2_p_fail(1.959964).exp2() - 0.05).abs() < 1e-6);
        assert!((log2_p_fail(3.0).exp2() / 0.0026998 - 1.0).abs() < 1e-4);
        // Deep tail against the asymptotic series.
        let z = 20.0f64;
        let x = z / 2f64.sqrt();
        let asym = (-x * x).exp() / (x * std::f64::consts::PI.sqrt()) * (1.0 - 0.5 / (x * x));
        assert!((log2_p_fail(z) - asym.log2()).abs() < 1e-3);
    }

    #[test]
    fn approximate_rounding_error_matches_its_small_noise_limit() {
        for sigma in [0.01, 0.03, 0.07] {
            let mean = approximate_rounding_error_mean(sigma);
            let limit = sigma * (2.0 / std::f64::consts::PI).sqrt();
            assert!(
                (mean / limit - 1.0).abs() < 0.02,
                "{sigma}: {mean} vs {limit}"
            );
        }
        // Far from the boundary nothing flips; at it, half the time.
        assert!(approximate_rounding_error(0.0, 0.05) < 1e-20);
        assert!((approximate_rounding_error(-0.5, 0.05) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn inverse_tail() {
        for target in [-8.0, -40.0, -64.0, -128.0, -1e4, -1e6] {
            let z = z_for_log2_p_fail(target);
            assert!(
                (log2_p_fail(z) - target).abs() < 1e-6 * target.abs(),
                "{target}"
            );
        }
    }
}

//! Uniform quantization, with Concrete ML's definitions so that a model
//! quantized by both gives the same integers.
//!
//! Asymmetric (inputs): `scale = (max - min) / (2^n - 1)`, integer
//! `zero_point = round(-min / scale)` for unsigned values, `q = clip(round(x / scale) + zero_point)`
//! with round-half-to-even (numpy's `rint`). Symmetric (weights):
//! `scale = max|w| / (2^(n-1) - 1)`, zero point 0, `q = clip(round(w / scale))`.
//!
//! ```
//! use cml_runtime::quant::Quantizer;
//!
//! let q = Quantizer::asymmetric(-1.0, 1.0, 8);
//! assert_eq!(q.quantize(-1.0), 0);
//! assert_eq!(q.quantize(1.0), 255);
//! assert!((q.dequantize(q.quantize(0.3)) - 0.3).abs() <= q.scale / 2.0);
//! ```

use serde::{Deserialize, Serialize};

/// Below this range width a quantizer falls back to a unit-width range, as
/// Concrete ML does for constant inputs.
pub const STABILITY_EPSILON: f64 = 1e-6;

/// One uniform quantizer: `x ≈ scale * (q - zero_point)`, `q` in `[q_min, q_max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    /// Bits of the integer representation.
    pub n_bits: u8,
    /// Real value of one integer step.
    pub scale: f64,
    /// Integer that represents real 0.
    pub zero_point: i64,
    /// Smallest integer.
    pub q_min: i64,
    /// Largest integer.
    pub q_max: i64,
}

impl Quantizer {
    /// An unsigned asymmetric quantizer over `[min, max]` (inputs).
    pub fn asymmetric(min: f64, max: f64, n_bits: u8) -> Self {
        let levels = ((1u64 << n_bits) - 1) as f64;
        let q_max = (1i64 << n_bits) - 1;
        if max - min < STABILITY_EPSILON {
            // A constant feature: represent it exactly with a unit step.
            let (scale, zero_point) = if min.abs() < STABILITY_EPSILON {
                (1.0, 0)
            } else {
                // The value itself is one step; zero maps below the grid.
                (min.abs(), if min > 0.0 { -1 } else { 1 }.clamp(0, q_max))
            };
            return Self {
                n_bits,
                scale,
                zero_point,
                q_min: 0,
                q_max,
            };
        }
        let scale = (max - min) / levels;
        let zero_point = (-min / scale).round_ties_even() as i64;
        Self {
            n_bits,
            scale,
            zero_point,
            q_min: 0,
            q_max,
        }
    }

    /// A signed symmetric quantizer for values in `[-max_abs, max_abs]` (weights):
    /// integers in `[-(2^(n-1) - 1), 2^(n-1) - 1]`, zero point 0.
    pub fn symmetric(max_abs: f64, n_bits: u8) -> Self {
        let q_max = (1i64 << (n_bits - 1)) - 1;
        let scale = if max_abs < STABILITY_EPSILON {
            1.0
        } else {
            max_abs / q_max as f64
        };
        Self {
            n_bits,
            scale,
            zero_point: 0,
            q_min: -q_max,
            q_max,
        }
    }

    /// The quantizer Concrete ML calibrates on `values`.
    pub fn calibrate_asymmetric(values: impl IntoIterator<Item = f64>, n_bits: u8) -> Option<Self> {
        let (min, max) = min_max(values)?;
        Some(Self::asymmetric(min, max, n_bits))
    }

    /// Quantizes one value: round half to even, then clip.
    pub fn quantize(&self, x: f64) -> i64 {
        let q = (x / self.scale).round_ties_even() + self.zero_point as f64;
        // NaN never reaches here (inputs are checked), but clamp keeps it total.
        if q.is_nan() {
            return self.zero_point.clamp(self.q_min, self.q_max);
        }
        (q.clamp(self.q_min as f64, self.q_max as f64)) as i64
    }

    /// The real value an integer stands for.
    pub fn dequantize(&self, q: i64) -> f64 {
        self.scale * (q - self.zero_point) as f64
    }
}

/// Minimum and maximum of finite values, `None` if there are none.
pub fn min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_maps_range_onto_grid() {
        let q = Quantizer::asymmetric(2.0, 10.0, 4);
        assert_eq!(q.q_max, 15);
        assert_eq!(q.quantize(2.0), 0);
        assert_eq!(q.quantize(10.0), 15);
        // Out of range clips.
        assert_eq!(q.quantize(-100.0), 0);
        assert_eq!(q.quantize(100.0), 15);
        for i in 0..=15 {
            let x = q.dequantize(i);
            assert_eq!(q.quantize(x), i);
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        let q = Quantizer {
            n_bits: 8,
            scale: 1.0,
            zero_point: 0,
            q_min: 0,
            q_max: 255,
        };
        assert_eq!(q.quantize(2.5), 2);
        assert_eq!(q.quantize(3.5), 4);
    }

    #[test]
    fn symmetric_is_narrow_and_centered() {
        let q = Quantizer::symmetric(3.0, 8);
        assert_eq!((q.q_min, q.q_max, q.zero_point), (-127, 127, 0));
        assert_eq!(q.quantize(3.0), 127);
        assert_eq!(q.quantize(-3.0), -127);
        assert_eq!(q.quantize(0.0), 0);
    }

    #[test]
    fn constant_range_is_exact() {
        let q = Quantizer::asymmetric(0.0, 0.0, 8);
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
    }
}

//! Uniform quantization with Concrete ML's definitions, so that a model
//! quantized by both gives the same integers (see
//! `tests/concrete_ml_parity.rs`).
//!
//! Asymmetric (Concrete ML's `UniformQuantizer`, for inputs and optionally
//! weights), over a calibration range `[rmin, rmax]` with `n` bits, signed
//! with `offset = 2^(n−1)` or unsigned with `offset = 0`:
//!
//! - `scale = (rmax − rmin) / (2^n − 1)`
//! - `zero_point = rint((rmax·(−offset) − rmin·(2^n − 1 − offset)) / (rmax − rmin))`
//!   (an integer, not clipped)
//! - `q = clip(rint(x / scale + zero_point), −offset, 2^n − 1 − offset)`
//!
//! where `rint` rounds half to even (numpy's). A range narrower than
//! [`STABILITY_EPSILON`] gets `offset = 0` and represents its one value
//! exactly. Symmetric (weights, the default): `scale = max|w| / (2^(n−1) − 1)`,
//! zero point 0, integers in `[−(2^(n−1) − 1), 2^(n−1) − 1]`.
//!
//! ```
//! use cml_runtime::quant::Quantizer;
//!
//! let q = Quantizer::asymmetric(-1.0, 1.0, 8, true);
//! assert_eq!((q.q_min(), q.q_max()), (-128, 127));
//! assert_eq!(q.quantize(-1.0), -128);
//! assert_eq!(q.quantize(1.0), 127);
//! assert!((q.dequantize(q.quantize(0.3)) - 0.3).abs() <= q.scale / 2.0);
//! ```

use serde::{Deserialize, Serialize};

/// Below this range width a quantizer represents its one value exactly, as
/// Concrete ML does for constant tensors.
pub const STABILITY_EPSILON: f64 = 1e-6;

/// One uniform quantizer: `x ≈ scale · (q − zero_point)`, `q` in
/// `[−offset, 2^n_bits − 1 − offset]` (or the narrow symmetric range).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantizer {
    /// Bits of the integer representation.
    pub n_bits: u8,
    /// Real value of one integer step.
    pub scale: f64,
    /// Integer that represents real 0 (may lie outside the integer range).
    pub zero_point: i64,
    /// Shift of the integer range: `2^(n−1)` when signed, 0 when unsigned.
    pub offset: i64,
    /// Narrow symmetric range `[−(2^(n−1) − 1), 2^(n−1) − 1]`.
    pub narrow: bool,
}

fn rint(x: f64) -> f64 {
    x.round_ties_even()
}

impl Quantizer {
    /// Concrete ML's asymmetric quantizer over `[rmin, rmax]`.
    pub fn asymmetric(rmin: f64, rmax: f64, n_bits: u8, signed: bool) -> Self {
        let levels = ((1u64 << n_bits) - 1) as f64;
        let offset = if signed { 1i64 << (n_bits - 1) } else { 0 };
        if rmax - rmin < STABILITY_EPSILON {
            let (scale, zero_point) = if rmax.abs() < STABILITY_EPSILON {
                (1.0, rint(-rmin) as i64)
            } else {
                (rmax, 0)
            };
            return Self {
                n_bits,
                scale,
                zero_point,
                offset: 0,
                narrow: false,
            };
        }
        let scale = (rmax - rmin) / levels;
        let zero_point =
            rint((rmax * (-offset as f64) - rmin * (levels - offset as f64)) / (rmax - rmin))
                as i64;
        Self {
            n_bits,
            scale,
            zero_point,
            offset,
            narrow: false,
        }
    }

    /// A signed narrow symmetric quantizer for values in `[−max_abs, max_abs]`.
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
            offset: 1 << (n_bits - 1),
            narrow: true,
        }
    }

    /// Smallest integer.
    pub fn q_min(&self) -> i64 {
        -self.offset + i64::from(self.narrow)
    }

    /// Largest integer.
    pub fn q_max(&self) -> i64 {
        (1i64 << self.n_bits) - 1 - self.offset
    }

    /// Quantizes one value: `clip(rint(x / scale + zero_point))`.
    pub fn quantize(&self, x: f64) -> i64 {
        let q = rint(x / self.scale + self.zero_point as f64);
        if q.is_nan() {
            // Inputs are checked to be finite before this; keep it total anyway.
            return self.zero_point.clamp(self.q_min(), self.q_max());
        }
        q.clamp(self.q_min() as f64, self.q_max() as f64) as i64
    }

    /// The real value an integer stands for: `scale · (q − zero_point)`.
    pub fn dequantize(&self, q: i64) -> f64 {
        self.scale * (q as f64 - self.zero_point as f64)
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
        for signed in [false, true] {
            let q = Quantizer::asymmetric(2.0, 10.0, 4, signed);
            assert_eq!(q.q_max() - q.q_min(), 15);
            assert_eq!(q.quantize(2.0), q.q_min());
            assert_eq!(q.quantize(10.0), q.q_max());
            // Out of range clips.
            assert_eq!(q.quantize(-100.0), q.q_min());
            assert_eq!(q.quantize(100.0), q.q_max());
            for i in q.q_min()..=q.q_max() {
                assert_eq!(q.quantize(q.dequantize(i)), i);
            }
        }
    }

    #[test]
    fn zero_point_may_leave_the_range() {
        // A strictly positive range: real 0 lies below the grid.
        let q = Quantizer::asymmetric(4.3, 7.9, 8, true);
        assert!(q.zero_point < q.q_min());
    }

    #[test]
    fn rounding_is_half_to_even_after_adding_the_zero_point() {
        let q = Quantizer {
            n_bits: 8,
            scale: 1.0,
            zero_point: 1,
            offset: 0,
            narrow: false,
        };
        // rint(2.5 + 1) = 4, whereas rint(2.5) + 1 would be 3.
        assert_eq!(q.quantize(2.5), 4);
        assert_eq!(q.quantize(1.5), 2);
    }

    #[test]
    fn symmetric_is_narrow_and_centered() {
        let q = Quantizer::symmetric(3.0, 8);
        assert_eq!((q.q_min(), q.q_max(), q.zero_point), (-127, 127, 0));
        assert_eq!(q.quantize(3.0), 127);
        assert_eq!(q.quantize(-3.0), -127);
        assert_eq!(q.quantize(0.0), 0);
    }

    #[test]
    fn constant_range_is_exact() {
        for v in [0.0, 3.0, -2.0] {
            let q = Quantizer::asymmetric(v, v, 8, true);
            assert_eq!(q.dequantize(q.quantize(v)), v);
        }
    }
}

//! Linear models lowered to one leveled dot product per output.
//!
//! Inputs are quantized as `x_j ≈ s_j (q_j − z_j)` (one quantizer per feature,
//! or one `s, z` for the whole tensor), weights as `v ≈ s_w (q_w − z_w)` where
//! `v_rj = w_rj s_j` per feature (so each feature's scale folds into its
//! weight) or `v = w` per tensor. With integer weights `W = q_w − z_w`,
//! output scale `S_r = s_w` (times `s` per tensor) and
//! `Z_r = Σ_j W_rj z_j`, the encrypted program computes
//!
//! `acc_r = Σ_j W_rj q_j + K_r`, with `K_r = rint(b_r / S_r + Z_r)`,
//!
//! and the client decodes `score_r = S_r (acc_r − 2 Z_r)`. Per tensor with
//! asymmetric weights these are exactly Concrete ML's integers (its circuit
//! computes `q_X @ q_W − z_w Σ q_X + q_b`). No table is needed: a linear model
//! costs no bootstrap.

use ndarray::ArrayView2;

use super::{Decoder, Encoder};
use crate::error::{DataError, Error};
use crate::program::{Interval, Op, Program};
use crate::quant::{min_max, Quantizer};
use crate::spec::{Granularity, LinearSpec, QuantizationSpec, WeightScheme};

/// The integer form of a linear model.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLowering {
    /// Input side: standardization and quantizers.
    pub encoder: Encoder,
    /// Integer weights `W = q_w − z_w`, one row per output.
    pub weights: Vec<Vec<i64>>,
    /// Weight quantizer of each row.
    pub weight_quantizers: Vec<Quantizer>,
    /// The program.
    pub program: Program,
    /// Output side: scales and link.
    pub decoder: Decoder,
}

/// Calibration ranges per quantizer: from the spec, else from data (after
/// `standardize`).
pub(super) fn input_ranges(
    q: &QuantizationSpec,
    n_features: usize,
    calibration: Option<ArrayView2<'_, f64>>,
    standardize: impl Fn(usize, f64) -> f64,
) -> Result<Vec<(f64, f64)>, Error> {
    if let Some(ranges) = &q.input_ranges {
        return Ok(ranges.iter().map(|[lo, hi]| (*lo, *hi)).collect());
    }
    let data = calibration.ok_or_else(|| {
        DataError::Empty(
            "the spec has no quantization.input_ranges and no calibration data was given".into(),
        )
    })?;
    if data.ncols() != n_features {
        return Err(DataError::Shape {
            expected: n_features,
            found: data.ncols(),
        }
        .into());
    }
    let standardize = &standardize;
    let column = |j: usize| {
        data.column(j)
            .iter()
            .map(move |&x| standardize(j, x))
            .collect::<Vec<_>>()
    };
    let empty = || DataError::Empty("calibration data has no finite rows".into());
    Ok(match q.input_granularity {
        Granularity::Feature => (0..n_features)
            .map(|j| min_max(column(j)).ok_or_else(empty))
            .collect::<Result<_, _>>()?,
        Granularity::Tensor => {
            vec![min_max((0..n_features).flat_map(column)).ok_or_else(empty)?]
        }
    })
}

fn weight_quantizer(values: &[f64], q: &QuantizationSpec) -> Quantizer {
    match q.weight_scheme {
        WeightScheme::Symmetric => {
            let max_abs = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            Quantizer::symmetric(max_abs, q.weight_bits)
        }
        WeightScheme::Asymmetric => {
            let (lo, hi) = min_max(values.iter().copied()).unwrap_or((0.0, 0.0));
            Quantizer::asymmetric(lo, hi, q.weight_bits, true)
        }
    }
}

/// Lowers a checked linear spec.
pub fn lower(
    linear: &LinearSpec,
    q: &QuantizationSpec,
    calibration: Option<ArrayView2<'_, f64>>,
) -> Result<LinearLowering, Error> {
    let n_features = linear.features.len();
    let standardize = |j: usize, x: f64| match &linear.standardize {
        Some(s) => (x - s.mean[j]) / s.scale[j],
        None => x,
    };
    let ranges = input_ranges(q, n_features, calibration, standardize)?;
    let quantizers: Vec<Quantizer> = ranges
        .iter()
        .map(|&(lo, hi)| Quantizer::asymmetric(lo, hi, q.input_bits, true))
        .collect();
    let per_tensor = q.input_granularity == Granularity::Tensor;
    let feature_quantizer = |j: usize| {
        if per_tensor {
            &quantizers[0]
        } else {
            &quantizers[j]
        }
    };

    // Effective float weights on the quantized inputs.
    let effective: Vec<Vec<f64>> = linear
        .coefficients
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, &w)| {
                    if per_tensor {
                        w
                    } else {
                        w * feature_quantizer(j).scale
                    }
                })
                .collect()
        })
        .collect();
    let tensor_wq = per_tensor.then(|| weight_quantizer(&effective.concat(), q));

    let mut program = Program::new(
        (0..n_features)
            .map(|j| {
                let fq = feature_quantizer(j);
                Interval::new(fq.q_min(), fq.q_max())
            })
            .collect(),
    );
    let mut weights = Vec::new();
    let mut weight_quantizers = Vec::new();
    let mut scales = Vec::new();
    let mut zero_points = Vec::new();
    for (row, &bias) in effective.iter().zip(&linear.intercepts) {
        let wq = tensor_wq.unwrap_or_else(|| weight_quantizer(row, q));
        let w_int: Vec<i64> = row
            .iter()
            .map(|&v| wq.quantize(v) - wq.zero_point)
            .collect();
        let scale = if per_tensor {
            quantizers[0].scale * wq.scale
        } else {
            wq.scale
        };
        let z: i64 = w_int
            .iter()
            .enumerate()
            .map(|(j, w)| w * feature_quantizer(j).zero_point)
            .sum();
        let k = (bias / scale + z as f64).round_ties_even();
        if !k.is_finite() || k.abs() > (1u64 << 52) as f64 {
            return Err(DataError::Empty(format!(
                "intercept {bias} is too large for the quantized output scale {scale:e}"
            ))
            .into());
        }
        let terms = w_int
            .iter()
            .enumerate()
            .filter(|(_, &w)| w != 0)
            .map(|(j, &w)| (j, w))
            .collect();
        let acc = program.push(Op::Linear {
            terms,
            constant: k as i64,
        });
        program.outputs.push(acc);
        weights.push(w_int);
        weight_quantizers.push(wq);
        scales.push(scale);
        zero_points.push(2 * z);
    }

    let encoder = Encoder {
        standardize: linear.standardize.clone(),
        quantizers: (0..n_features).map(|j| *feature_quantizer(j)).collect(),
        low_bits: None,
        missing: Vec::new(),
    };
    let decoder = Decoder {
        scales,
        zero_points,
        task: linear.task,
        link: linear.link,
    };
    Ok(LinearLowering {
        encoder,
        weights,
        weight_quantizers,
        program,
        decoder,
    })
}

/// Float scores of the unquantized model: `coefficients · standardize(x) + intercepts`.
pub fn float_scores(linear: &LinearSpec, x: &[f64]) -> Vec<f64> {
    linear
        .coefficients
        .iter()
        .zip(&linear.intercepts)
        .map(|(row, b)| {
            let dot: f64 = row
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    let xj = match &linear.standardize {
                        Some(s) => (x[j] - s.mean[j]) / s.scale[j],
                        None => x[j],
                    };
                    w * xj
                })
                .sum();
            dot + b
        })
        .collect()
}

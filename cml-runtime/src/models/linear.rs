//! Linear models lowered to one leveled dot product per output.
//!
//! With per-feature input quantizers `x_j ≈ s_j (q_j − z_j)`, the scores are
//! `score_r = Σ_j w_rj x_j + b_r ≈ Σ_j v_rj (q_j − z_j) + b_r` with effective
//! weights `v_rj = w_rj s_j`. Each row of `v` is quantized symmetrically
//! (`v_rj ≈ S_r · W_rj`), so the encrypted program computes
//!
//! `acc_r = Σ_j W_rj q_j + K_r`, `K_r = −Σ_j W_rj z_j + round(b_r / S_r)`
//!
//! and the client decodes `score_r = S_r · acc_r`. With one input quantizer
//! for the whole tensor (Concrete ML's choice) the input scale `s` factors
//! out: `v = w`, `S_r = s · scale_r`, which gives exactly Concrete ML's
//! integer weights. No table is needed: a linear model costs no bootstrap.

use ndarray::ArrayView2;

use super::{Decoder, Encoder};
use crate::error::{DataError, Error};
use crate::program::{Interval, Op, Program};
use crate::quant::{min_max, Quantizer};
use crate::spec::{Granularity, LinearSpec, QuantizationSpec};

/// The integer form of a linear model.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLowering {
    /// Input side: standardization and quantizers.
    pub encoder: Encoder,
    /// Integer weights `W`, one row per output.
    pub weights: Vec<Vec<i64>>,
    /// Weight quantizer of each row.
    pub weight_quantizers: Vec<Quantizer>,
    /// The program.
    pub program: Program,
    /// Output side: scales and link.
    pub decoder: Decoder,
}

/// Calibration ranges per quantizer: from the spec, else from data.
fn input_ranges(
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
        .map(|&(lo, hi)| Quantizer::asymmetric(lo, hi, q.input_bits))
        .collect();
    let feature_quantizer = |j: usize| match q.input_granularity {
        Granularity::Feature => &quantizers[j],
        Granularity::Tensor => &quantizers[0],
    };

    let mut program = Program::new(
        (0..n_features)
            .map(|j| {
                let fq = feature_quantizer(j);
                Interval::new(fq.q_min, fq.q_max)
            })
            .collect(),
    );
    let mut weights = Vec::new();
    let mut weight_quantizers = Vec::new();
    let mut output_scales = Vec::new();
    for (row, &bias) in linear.coefficients.iter().zip(&linear.intercepts) {
        let effective: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, &w)| match q.input_granularity {
                Granularity::Feature => w * feature_quantizer(j).scale,
                Granularity::Tensor => w,
            })
            .collect();
        let max_abs = effective.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let wq = Quantizer::symmetric(max_abs, q.weight_bits);
        let w_int: Vec<i64> = effective.iter().map(|&v| wq.quantize(v)).collect();
        let out_scale = match q.input_granularity {
            Granularity::Feature => wq.scale,
            Granularity::Tensor => wq.scale * quantizers[0].scale,
        };
        let zero_terms: i64 = w_int
            .iter()
            .enumerate()
            .map(|(j, w)| w * feature_quantizer(j).zero_point)
            .sum();
        let bias_int = (bias / out_scale).round_ties_even();
        if !bias_int.is_finite() || bias_int.abs() > (1u64 << 52) as f64 {
            return Err(DataError::Empty(format!(
                "intercept {bias} is too large for the quantized output scale {out_scale:e}"
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
            constant: bias_int as i64 - zero_terms,
        });
        program.outputs.push(acc);
        weights.push(w_int);
        weight_quantizers.push(wq);
        output_scales.push(out_scale);
    }

    let encoder = Encoder {
        standardize: linear.standardize.clone(),
        quantizers: (0..n_features).map(|j| *feature_quantizer(j)).collect(),
    };
    let decoder = Decoder {
        scales: output_scales,
        offsets: vec![0.0; linear.intercepts.len()],
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

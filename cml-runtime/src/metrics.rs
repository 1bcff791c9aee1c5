//! Accuracy and regression metrics.

/// Fraction of equal entries.
pub fn accuracy(predicted: &[f64], truth: &[f64]) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    let hits = predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    hits as f64 / truth.len() as f64
}

/// Mean squared error.
pub fn mse(predicted: &[f64], truth: &[f64]) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f64>()
        / truth.len() as f64
}

/// Coefficient of determination (scikit-learn's `r2_score`).
pub fn r2(predicted: &[f64], truth: &[f64]) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    let mean = truth.iter().sum::<f64>() / truth.len() as f64;
    let total: f64 = truth.iter().map(|t| (t - mean) * (t - mean)).sum();
    let residual: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    1.0 - residual / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_small_cases() {
        assert_eq!(accuracy(&[1.0, 0.0, 1.0, 1.0], &[1.0, 0.0, 0.0, 1.0]), 0.75);
        assert_eq!(mse(&[1.0, 2.0], &[1.0, 4.0]), 2.0);
        assert_eq!(r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert!((r2(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0])).abs() < 1e-15);
    }
}

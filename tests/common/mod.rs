//! Helpers shared by integration tests.

/// Two-sided 99.9% interval of a Poisson count with mean `m`: counts below
/// the first bound or above the second have probability under 0.05% each.
pub fn poisson_interval(m: f64) -> (u32, u32) {
    let pmf = |k: u32| {
        (-m + k as f64 * m.max(1e-300).ln() - (1..=k).map(|i| (i as f64).ln()).sum::<f64>()).exp()
    };
    let (mut cdf, mut k) = (0.0, 0u32);
    let mut lo = None;
    loop {
        cdf += pmf(k);
        if lo.is_none() && cdf > 0.0005 {
            lo = Some(k);
        }
        if cdf >= 0.9995 {
            return (lo.unwrap_or(0), k);
        }
        k += 1;
    }
}

//! Our restated noise formulas (usable without `tfhe`, inside the macro)
//! agree with the ones `tfhe` publishes.

use cml::noise;
use tfhe::core_crypto::commons::noise_formulas as nf;
use tfhe::core_crypto::prelude::*;

const Q: f64 = 18446744073709551616.0; // 2^64

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
}

#[test]
fn formulas_match_tfhe() {
    for n in [512usize, 742, 879, 1024, 2048, 4096] {
        close(
            noise::min_lwe_variance(n),
            nf::secure_noise::minimal_lwe_variance_for_132_bits_security_gaussian(
                LweDimension(n),
                Q,
            )
            .0,
        );
        for log_m in [20u32, 32, 40] {
            close(
                noise::plain_modulus_switch_variance(n, log_m),
                nf::modulus_switch::modulus_switch_additive_variance(
                    LweDimension(n),
                    Q,
                    (1u64 << log_m) as f64,
                )
                .0,
            );
        }
        for log_n in [9u32, 11, 14] {
            close(
                noise::modulus_switch_variance(n, log_n + 1),
                nf::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance(
                    LweDimension(n),
                    Q,
                    (1u64 << (log_n + 1)) as f64,
                )
                .0,
            );
        }
        for (b, l) in [(3u32, 5u32), (4, 4), (2, 8)] {
            close(
                noise::keyswitch_variance(2048, n, b, l),
                nf::lwe_keyswitch::keyswitch_additive_variance_132_bits_security_gaussian(
                    LweDimension(2048),
                    LweDimension(n),
                    DecompositionBaseLog(b as usize),
                    DecompositionLevelCount(l as usize),
                    Q,
                    Q,
                )
                .0,
            );
        }
        for (k, big_n, b, l) in [
            (1usize, 2048usize, 23u32, 1u32),
            (2, 1024, 15, 2),
            (1, 16384, 22, 1),
        ] {
            close(
                noise::pbs_variance(n, k, big_n, b, l),
                nf::lwe_programmable_bootstrap::pbs_variance_132_bits_security_gaussian_fft_mul(
                    LweDimension(n),
                    GlweDimension(k),
                    PolynomialSize(big_n),
                    DecompositionBaseLog(b as usize),
                    DecompositionLevelCount(l as usize),
                    53.0,
                    Q,
                )
                .0,
            );
        }
    }
}

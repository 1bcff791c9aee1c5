//! Table lookups (programmable bootstrapping) under real TFHE, on their own,
//! for 1- to 8-bit inputs: every decrypted result equals the clear table.

mod common;

use cml::encoding::Encoding;
use cml::params::{choose, Needs, PFail};
use cml::program::{Interval, Op, Program, Table};
use common::{poisson_interval, FheRunner};

/// `y = t[x + shift]` for `x` in `[0, 2^bits)`: one PBS whose input first goes
/// through a leveled op, so the keyswitch sees a linear combination.
fn table_program(bits: u32) -> Program {
    let hi = (1i64 << bits) - 1;
    let mut p = Program::new(vec![Interval::new(0, hi)]);
    // A signed shift exercises the offset before the bootstrap.
    let shifted = p.push(Op::Linear {
        terms: vec![(0, 1)],
        constant: -3,
    });
    // A non-linear, signed table: (v² mod 2^bits) − 2^(bits−1).
    let half = 1i64 << (bits - 1);
    let t = p.add_table(Table::from_fn("square", -3..=hi - 3, move |v| {
        (v * v).rem_euclid(1 << bits) - half
    }));
    let y = p.push(Op::Lut {
        input: shifted,
        table: t,
    });
    p.outputs = vec![y];
    p
}

fn check_bits(bits: u32, samples: &[i64]) {
    let program = table_program(bits);
    let analysis = program.analyze().unwrap();
    let params = choose(&Needs::of(&program, &analysis), PFail::default()).unwrap();
    assert!(params.pbs.is_some());
    assert!(params.predicted.log2_p_fail_pbs <= -40.0);
    let encoding = Encoding::of(&program, &analysis);
    // The table's input is bootstrapped at its own width (plus padding).
    assert_eq!(encoding.bits[program.inputs.len()], bits + 1);
    let fhe = FheRunner::new(&program, &params);
    for &x in samples {
        fhe.assert_exact(&[x]);
    }
}

/// Every input of the table for small precisions.
#[test]
fn tables_of_1_to_5_bits_are_exact_on_every_input() {
    for bits in 1..=5 {
        let all: Vec<i64> = (0..1i64 << bits).collect();
        check_bits(bits, &all);
    }
}

/// 6 and 7 bits: a spread of inputs including both ends.
#[test]
fn tables_of_6_and_7_bits_are_exact() {
    for bits in 6..=7 {
        let hi = (1i64 << bits) - 1;
        let samples: Vec<i64> = (0..=hi).step_by(5).chain([hi]).collect();
        check_bits(bits, &samples);
    }
}

/// 8 bits: the widest the foundation needs (trees and networks build on it).
#[test]
fn tables_of_8_bits_are_exact() {
    check_bits(8, &[0, 1, 2, 3, 77, 128, 200, 254, 255]);
}

/// A narrow table next to a wide accumulator bootstraps at the table's
/// width: a 4-bit square table whose output feeds a 15-bit sum runs with a
/// 5-bit bootstrap (N = 2048 at most), not an 16-bit one, and decrypts exactly.
#[test]
fn table_precision_follows_its_input_not_the_accumulator() {
    let mut p = Program::new(vec![Interval::new(0, 15), Interval::new(0, 1000)]);
    let t = p.add_table(Table::from_fn("square", 0..=15, |v| v * v));
    let sq = p.push(Op::Lut { input: 0, table: t });
    let acc = p.push(Op::Linear {
        terms: vec![(sq, 100), (1, 1)],
        constant: -7,
    });
    p.outputs = vec![acc, sq];
    let a = p.analyze().unwrap();
    let e = Encoding::of(&p, &a);
    assert_eq!(e.bits[0], 5);
    assert_eq!(e.bits[acc], 15);
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let pbs = params.pbs.unwrap();
    assert!(pbs.polynomial_size <= 2048, "{pbs:?}");
    assert_eq!(params.message_bits, 15);
    let fhe = FheRunner::new(&p, &params);
    for (x0, x1) in [(0, 0), (15, 1000), (7, 123), (3, 999), (12, 1)] {
        fhe.assert_exact(&[x0, x1]);
    }
}

/// Exact rounding before a table: a 10-bit value is rounded by 6 bits (six
/// 1-bit bootstraps), then a table reads the 5-bit result. Every input on
/// both sides of every rounding boundary decrypts to the clear result, and
/// the bootstrap is sized for the rounded width, not for 10 bits.
#[test]
fn exact_rounding_before_a_table() {
    let mut p = Program::new(vec![Interval::new(0, 1023)]);
    let r = p.push(Op::Round {
        input: 0,
        bits: 6,
        exact: true,
    });
    let t = p.add_table(Table::from_fn("triple", 0..=16, |v| 3 * v - 5));
    let y = p.push(Op::Lut { input: r, table: t });
    p.outputs = vec![y, r];
    let a = p.analyze().unwrap();
    assert_eq!(a.values[r].range, Interval::new(0, 16));
    assert_eq!(p.pbs_count(), 7);
    let e = Encoding::of(&p, &a);
    assert_eq!(e.bits[r], 6); // 5 bits + padding
    assert_eq!(e.bits[0], 12); // the input sits 2^6 finer
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let pbs = params.pbs.unwrap();
    assert!(pbs.polynomial_size <= 4096, "{pbs:?}");
    let fhe = FheRunner::new(&p, &params);
    let mut inputs: Vec<i64> = (0..16).flat_map(|k| [64 * k + 31, 64 * k + 32]).collect();
    inputs.extend([0, 1, 1000, 1023]);
    for x in inputs {
        fhe.assert_exact(&[x]);
    }
}

/// Many-LUT: three tables reading the same 3-bit value share one bootstrap
/// (the value's width grows by 2 bits, still under the 6-bit table that
/// sets N), so a prediction costs 2 bootstraps instead of 4, exactly.
#[test]
fn tables_on_one_value_share_a_bootstrap() {
    let mut p = Program::new(vec![Interval::new(0, 7), Interval::new(0, 63)]);
    let t_sq = p.add_table(Table::from_fn("square", 0..=7, |v| v * v));
    let t_neg = p.add_table(Table::from_fn("neg", 0..=7, |v| -3 * v));
    let t_par = p.add_table(Table::from_fn("parity", 0..=7, |v| v % 2));
    let t_z = p.add_table(Table::from_fn("half", 0..=63, |v| v / 2));
    let a1 = p.push(Op::Lut {
        input: 0,
        table: t_sq,
    });
    let a2 = p.push(Op::Lut {
        input: 0,
        table: t_neg,
    });
    let a3 = p.push(Op::Lut {
        input: 0,
        table: t_par,
    });
    let b = p.push(Op::Lut {
        input: 1,
        table: t_z,
    });
    p.outputs = vec![a1, a2, a3, b];
    let a = p.analyze().unwrap();
    let e = Encoding::of(&p, &a);
    assert!(e.fused[0] && !e.fused[1]);
    assert_eq!(e.bits[0], 6); // 3 bits + padding + 2 bits for 4 sub-tables
    assert_eq!(p.pbs_count(), 4);
    assert_eq!(e.pbs_count(&p), 2);
    let needs = Needs::of(&p, &a);
    assert_eq!(needs.pbs_count, 2);
    let params = choose(&needs, PFail::default()).unwrap();
    let fhe = FheRunner::new(&p, &params);
    for x in 0..8 {
        fhe.assert_exact(&[x, (x * 9 + 5) % 64]);
    }
}

/// Approximate rounding is free (no bootstrap): the low bits stay as an
/// offset of up to half a step, so values near a rounding boundary may land
/// one step off. The model (`noise::approximate_rounding_error`) predicts how
/// often; the observed count must not exceed its 99.9% Poisson bound, nor be
/// more than 4x below it.
#[test]
fn approximate_rounding_errors_match_their_model() {
    use cml::noise::approximate_rounding_error;
    use cml::params::table_input_variance;
    use cml::program::round_shift;

    let mut p = Program::new(vec![Interval::new(0, 1023)]);
    let r = p.push(Op::Round {
        input: 0,
        bits: 6,
        exact: false,
    });
    let t = p.add_table(Table::from_fn("triple", 0..=16, |v| 3 * v - 5));
    let y = p.push(Op::Lut { input: r, table: t });
    p.outputs = vec![y];
    let a = p.analyze().unwrap();
    assert_eq!(p.pbs_count(), 1);
    let e = Encoding::of(&p, &a);
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    // The table decides on the 6-bit coarse value: noise in its steps.
    let step = (-(e.bits[r] as f64)).exp2();
    let sigma = table_input_variance(&params, 1.0, 0.0).sqrt() / step;
    let fhe = FheRunner::new(&p, &params);
    let (mut errors, mut expected) = (0u32, 0.0f64);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..400 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = (state % 1024) as i64;
        let delta = x as f64 / 64.0 - round_shift(x, 6) as f64;
        expected += approximate_rounding_error(delta, sigma);
        let got = fhe.eval(&[x]);
        let want = p.eval_clear(&[x]).unwrap();
        if got != want {
            errors += 1;
            // An error is one step of the rounded value, never more.
            assert_eq!((got[0] - want[0]).abs(), 3, "input {x}");
        }
    }
    eprintln!("approximate rounding: {errors} off by one of 400, model expects {expected:.1} (σ = {sigma:.4} steps)");
    let (_, hi) = poisson_interval(expected);
    let (lo, _) = poisson_interval(expected / 4.0);
    assert!(
        errors <= hi,
        "{errors} errors, the model allows {expected:.1} (99.9% bound {hi})"
    );
    assert!(
        errors >= lo,
        "{errors} errors, the model is over 4x pessimistic ({expected:.1})"
    );
}

//! Keys and ciphertexts round-trip through bytes; bytes that are truncated,
//! corrupted, of another kind, over the size limit or for other parameters
//! give errors, never panics.

use cml::backend::tfhe::{ClientKey, CompressedEvaluationKeys, EncryptedInput, EncryptedOutput};
use cml::encoding::Encoding;
use cml::params::{choose, Needs, PFail};
use cml::program::{Interval, Op, Program, Table};
use cml::FheError;

const LIMIT: u64 = 1 << 30;

#[path = "common/small_program.rs"]
mod small_program;

/// A small program with one table lookup, so every key kind is exercised.
fn program() -> Program {
    small_program::small_program()
}

#[test]
fn everything_round_trips_and_bad_bytes_are_errors() {
    let p = program();
    let a = p.analyze().unwrap();
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let ranges: Vec<Interval> = p.outputs.iter().map(|&o| a.values[o].range).collect();
    let e = Encoding::of(&p, &a);
    let (in_bits, out_bits) = (e.inputs(&p).to_vec(), e.outputs(&p));

    let client = ClientKey::generate(&params);
    let client = ClientKey::from_bytes(&client.to_bytes().unwrap(), LIMIT).unwrap();
    let keys_bytes = client.compressed_evaluation_keys().to_bytes().unwrap();
    let server = CompressedEvaluationKeys::from_bytes(&keys_bytes, LIMIT, &params)
        .unwrap()
        .decompress();

    let input = client.encrypt(&[3, 2], &in_bits).unwrap();
    let input_bytes = input.to_bytes().unwrap();
    let input = EncryptedInput::from_bytes(&input_bytes, LIMIT, &params).unwrap();
    let out = server.run(&p, &input).unwrap();
    let out_bytes = out.to_bytes().unwrap();
    let out = EncryptedOutput::from_bytes(&out_bytes, LIMIT, &params).unwrap();
    assert_eq!(
        client.decrypt(&out, &ranges, &out_bits).unwrap(),
        vec![3, 7]
    );

    // Truncated at many points, and single bytes flipped: errors only.
    for bytes in [&keys_bytes, &input_bytes, &out_bytes] {
        for cut in [0, 1, 4, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(EncryptedInput::from_bytes(&bytes[..cut], LIMIT, &params).is_err());
            assert!(EncryptedOutput::from_bytes(&bytes[..cut], LIMIT, &params).is_err());
            assert!(CompressedEvaluationKeys::from_bytes(&bytes[..cut], LIMIT, &params).is_err());
        }
    }
    for i in (0..input_bytes.len()).step_by(7) {
        let mut bad = input_bytes.clone();
        bad[i] ^= 0xA5;
        // Flipping a ciphertext coefficient may still parse; sizes, kinds and
        // parameters may not. Either way: no panic.
        let _ = EncryptedInput::from_bytes(&bad, LIMIT, &params);
    }

    for i in (0..out_bytes.len()).step_by(5) {
        let mut bad = out_bytes.clone();
        bad[i] ^= 0x5A;
        // Whatever still parses must also decrypt without panicking.
        if let Ok(out) = EncryptedOutput::from_bytes(&bad, LIMIT, &params) {
            let _ = client.decrypt(&out, &ranges, &out_bits);
        }
    }

    // Wrong kind of object.
    let err = EncryptedOutput::from_bytes(&input_bytes, LIMIT, &params).unwrap_err();
    assert!(
        err.to_string().contains("these bytes hold encrypted input"),
        "{err}"
    );
    // Over the size limit.
    let err = CompressedEvaluationKeys::from_bytes(&keys_bytes, 1000, &params).unwrap_err();
    assert!(
        err.to_string().contains("exceed the 1000-byte limit"),
        "{err}"
    );
    // Not ours at all.
    let err = EncryptedInput::from_bytes(b"hello world", LIMIT, &params).unwrap_err();
    assert!(err.to_string().contains("bad header"), "{err}");
    // Other parameters.
    let mut other = params;
    other.message_bits += 1;
    assert!(matches!(
        EncryptedInput::from_bytes(&input_bytes, LIMIT, &other),
        Err(FheError::Deserialize { .. })
    ));
    assert!(matches!(
        CompressedEvaluationKeys::from_bytes(&keys_bytes, LIMIT, &other),
        Err(FheError::Mismatch(_))
    ));
}

#[test]
fn server_refuses_mismatched_inputs() {
    let p = program();
    let a = p.analyze().unwrap();
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let client = ClientKey::generate(&params);
    let server = client.evaluation_keys();
    let err = server
        .run(&p, &client.encrypt(&[1], &[4]).unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("program takes 2 inputs, got 1"),
        "{err}"
    );
    // A program wider than the keys' message space.
    let mut wide = Program::new(vec![Interval::new(0, 1 << 20); 2]);
    let s = wide.push(Op::Linear {
        terms: vec![(0, 1), (1, 1)],
        constant: 0,
    });
    wide.outputs = vec![s];
    let err = server
        .run(&wide, &client.encrypt(&[1, 1], &[4, 4]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("bits of message space"), "{err}");
    // Another program these keys serve (same widths, no more noise): it
    // runs, and decrypts to the clear result.
    let mut other = p.clone();
    other.tables[0] = Table::from_fn("double", 0..=9, |v| 2 * v);
    other.outputs = vec![other.outputs[0]];
    let oa = other.analyze().unwrap();
    let out = server
        .run(&other, &client.encrypt(&[1, 2], &[5, 5]).unwrap())
        .unwrap();
    let oe = Encoding::of(&other, &oa);
    let ranges = [oa.values[other.outputs[0]].range];
    assert_eq!(
        client.decrypt(&out, &ranges, &oe.outputs(&other)).unwrap(),
        other.eval_clear(&[1, 2]).unwrap()
    );
    // A program whose second table reads a value noisier than these keys
    // allow: a 1-bit value that is 2^20 times a bootstrap output (which is
    // always 0, so the range stays narrow while the noise grows).
    let mut noisy = Program::new(vec![Interval::new(0, 3); 2]);
    let zero = noisy.add_table(Table::from_fn("zero", 0..=3, |_| 0));
    let z = noisy.push(Op::Lut {
        input: 0,
        table: zero,
    });
    let s = noisy.push(Op::Linear {
        terms: vec![(z, 1 << 20)],
        constant: 1,
    });
    let t = noisy.add_table(Table::from_fn("id", 1..=1, |v| v));
    let y = noisy.push(Op::Lut { input: s, table: t });
    noisy.outputs = vec![y];
    let na = noisy.analyze().unwrap();
    assert_eq!(na.values[s].noise.bootstrapped, 2f64.powi(40));
    let bits = Encoding::of(&noisy, &na).inputs(&noisy).to_vec();
    let err = server
        .run(&noisy, &client.encrypt(&[1, 2], &bits).unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("these keys' parameters do not serve this program")
            && err.to_string().contains("table input would fail"),
        "{err}"
    );
    // Values outside their message space cannot be encrypted.
    let err = client.encrypt(&[1 << 40, 0], &[5, 5]).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

/// Keys with a light bootstrap key ([`cml::params::LightPbs`]) round-trip
/// and run; keys whose light key is missing or does not match the
/// parameters are refused.
#[test]
fn light_bootstrap_keys_round_trip_and_must_match() {
    use cml::params::{LightPbs, PbsParams};
    let p = program();
    let a = p.analyze().unwrap();
    let chosen = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let base = chosen.pbs.unwrap();
    // One level more on the main key (quieter), the chosen key as the light one.
    let params = cml::params::FheParams {
        pbs: Some(PbsParams {
            pbs_base_log: base.pbs_base_log.min(60 / (base.pbs_level + 1)),
            pbs_level: base.pbs_level + 1,
            ..base
        }),
        light: Some(LightPbs {
            base_log: base.pbs_base_log,
            level: base.pbs_level,
        }),
        ..chosen
    };
    let ranges: Vec<Interval> = p.outputs.iter().map(|&o| a.values[o].range).collect();
    let e = Encoding::of(&p, &a);
    let client = ClientKey::generate(&params);
    let keys_bytes = client.compressed_evaluation_keys().to_bytes().unwrap();
    let server = CompressedEvaluationKeys::from_bytes(&keys_bytes, LIMIT, &params)
        .unwrap()
        .decompress();
    let input = client.encrypt(&[1, 3], e.inputs(&p)).unwrap();
    let out = server.run(&p, &input).unwrap();
    assert_eq!(
        client.decrypt(&out, &ranges, &e.outputs(&p)).unwrap(),
        vec![3, 7]
    );
    // Read as keys without a light key, or with another one: refused.
    for other in [
        cml::params::FheParams {
            light: None,
            ..params
        },
        cml::params::FheParams {
            light: Some(LightPbs {
                base_log: base.pbs_base_log + 1,
                level: base.pbs_level,
            }),
            ..params
        },
    ] {
        // Larger than keys for `other` can be (no light key), or made for
        // other parameters: refused either way.
        let err = CompressedEvaluationKeys::from_bytes(&keys_bytes, LIMIT, &other).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("exceed") || msg.contains("other parameters"),
            "{msg}"
        );
    }
    // Keys made without a light key cannot claim one.
    let plain = ClientKey::generate(&chosen)
        .compressed_evaluation_keys()
        .to_bytes()
        .unwrap();
    let mut patched = params;
    patched.pbs = chosen.pbs;
    assert!(CompressedEvaluationKeys::from_bytes(&plain, LIMIT, &patched).is_err());
}

/// A small deterministic generator for the probes below (xorshift64*).
struct Probe(u64);

impl Probe {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Issue #12's probe, kept as a regression test: 2,000 copies of a valid
/// encrypted input with 1–8 random bytes replaced (a quarter also
/// truncated). Whatever `from_bytes` accepts must run to an output or an
/// error, never a panic. Before seeds were checked, a changed byte in the
/// seed's generator state (the last ~30 bytes) was accepted and made
/// `tfhe-csprng` index out of its buffer during `run`.
#[test]
fn altered_encrypted_inputs_run_or_error_never_panic() {
    let p = program();
    let a = p.analyze().unwrap();
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let e = Encoding::of(&p, &a);
    let client = ClientKey::generate(&params);
    let server = client.evaluation_keys();
    let valid = client
        .encrypt(&[3, 2], e.inputs(&p))
        .unwrap()
        .to_bytes()
        .unwrap();
    let mut rng = Probe(0x00C0_FFEE_D00D_F00D);
    let (mut accepted, mut ran, mut refused_seed) = (0, 0, 0);
    for copy in 0..2000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        if copy % 4 == 0 {
            bytes.truncate(rng.below(bytes.len()));
        }
        match EncryptedInput::from_bytes(&bytes, LIMIT, &params) {
            Ok(input) => {
                accepted += 1;
                if server.run(&p, &input).is_ok() {
                    ran += 1;
                }
            }
            Err(e) if e.to_string().contains("seed") => refused_seed += 1,
            Err(_) => {}
        }
    }
    eprintln!("accepted {accepted} of 2000 (ran {ran}), refused for their seed {refused_seed}");
    assert!(accepted > 0 && refused_seed > 0);
}

/// Every byte of the seeds at the end of seeded evaluation keys set to 0xFF
/// or 0x10 in turn: refused, or decompressed and run without a panic.
#[test]
fn altered_key_seeds_are_refused_or_expand_safely() {
    let p = program();
    let a = p.analyze().unwrap();
    let params = choose(&Needs::of(&p, &a), PFail::default()).unwrap();
    let e = Encoding::of(&p, &a);
    let client = ClientKey::generate(&params);
    let input = client.encrypt(&[1, 2], e.inputs(&p)).unwrap();
    let valid = client.compressed_evaluation_keys().to_bytes().unwrap();
    let mut refused_seed = 0;
    for offset in valid.len() - 48..valid.len() {
        for value in [0xFF, 0x10] {
            let mut bytes = valid.clone();
            bytes[offset] = value;
            match CompressedEvaluationKeys::from_bytes(&bytes, LIMIT, &params) {
                Ok(keys) => {
                    let _ = keys.decompress().run(&p, &input);
                }
                Err(e) if e.to_string().contains("seed") => refused_seed += 1,
                Err(_) => {}
            }
        }
    }
    assert!(refused_seed > 0);
}

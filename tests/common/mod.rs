//! Helpers shared by integration tests (each test binary uses a part).
#![allow(dead_code)]

use cml::backend::tfhe::{ClientKey, EvaluationKeys};
use cml::encoding::Encoding;
use cml::params::FheParams;
use cml::program::{Interval, Program};

/// Keys for one program, and the encrypt → run → decrypt round trip.
pub struct FheRunner<'a> {
    program: &'a Program,
    client: ClientKey,
    server: EvaluationKeys,
    encoding: Encoding,
    ranges: Vec<Interval>,
}

impl<'a> FheRunner<'a> {
    /// Generates keys for `params`, which must be the program's own.
    pub fn new(program: &'a Program, params: &FheParams) -> Self {
        let analysis = program.analyze().unwrap();
        let client = ClientKey::generate(params);
        let server = client.evaluation_keys();
        Self {
            ranges: program
                .outputs
                .iter()
                .map(|&o| analysis.values[o].range)
                .collect(),
            encoding: Encoding::of(program, &analysis),
            program,
            client,
            server,
        }
    }

    /// The decrypted outputs of one encrypted evaluation (which must run
    /// each of the program's bootstraps once).
    pub fn eval(&self, inputs: &[i64]) -> Vec<i64> {
        let ct = self
            .client
            .encrypt(inputs, self.encoding.inputs(self.program))
            .unwrap();
        let (out, stats) = self.server.run_with_stats(self.program, &ct).unwrap();
        assert_eq!(
            stats.bootstraps,
            self.encoding.pbs_count(self.program) as u64,
            "bootstraps run"
        );
        self.client
            .decrypt(&out, &self.ranges, &self.encoding.outputs(self.program))
            .unwrap()
    }

    /// Asserts that the encrypted evaluation equals the clear one.
    pub fn assert_exact(&self, inputs: &[i64]) {
        let want = self.program.eval_clear(inputs).unwrap();
        assert_eq!(self.eval(inputs), want, "inputs {inputs:?}");
    }
}

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

/// Deterministic xorshift for the mutation fuzzers.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Applies 1–4 random edits to `source`: deletions, inserted tokens, and
/// bytes replaced by one of `alphabet`.
pub fn mutate_bytes(rng: &mut Rng, source: &[u8], tokens: &[&[u8]], alphabet: &[u8]) -> Vec<u8> {
    let mut text = source.to_vec();
    for _ in 0..1 + rng.below(4) {
        if text.is_empty() {
            break;
        }
        let at = rng.below(text.len());
        match rng.below(3) {
            0 => {
                text.remove(at);
            }
            1 => {
                let t = tokens[rng.below(tokens.len())];
                text.splice(at..at, t.iter().copied());
            }
            _ => text[at] = alphabet[rng.below(alphabet.len())],
        }
    }
    text
}

//! Simulation: the program's integers without cryptography.
//!
//! By default a simulation equals the clear run. With
//! [`Simulator::with_failures`] each table lookup reads a neighbouring entry
//! with the bootstrap failure probability the parameters predict, which is
//! how a rare TFHE failure would show (the error is small and centered, so it
//! lands one message step away).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::ProgramError;
use crate::params::FheParams;
use crate::program::{Op, Program};

/// Runs a program on clear integers, optionally with modelled failures.
#[derive(Debug)]
pub struct Simulator<'a> {
    program: &'a Program,
    p_fail: f64,
    state: AtomicU64,
}

impl<'a> Simulator<'a> {
    /// A simulator without failure injection (equal to the clear run).
    pub fn new(program: &'a Program, _params: &FheParams) -> Self {
        Self {
            program,
            p_fail: 0.0,
            state: AtomicU64::new(0),
        }
    }

    /// A simulator whose table lookups fail with the probability the
    /// parameters predict (`2^log2_p_fail_pbs`), reproducibly from `seed`.
    pub fn with_failures(program: &'a Program, params: &FheParams, seed: u64) -> Self {
        Self {
            program,
            p_fail: params.predicted.log2_p_fail_pbs.exp2(),
            state: AtomicU64::new(seed),
        }
    }

    /// A uniform draw in [0, 1) (splitmix64).
    fn uniform(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs the program on quantized inputs.
    pub fn run(&self, inputs: &[i64]) -> Result<Vec<i64>, ProgramError> {
        if self.p_fail == 0.0 {
            return self.program.eval_clear(inputs);
        }
        self.program.check_inputs(inputs)?;
        let mut values = inputs.to_vec();
        for op in &self.program.ops {
            let v = match op {
                Op::Linear { terms, constant } => terms.iter().fold(*constant, |acc, &(v, w)| {
                    acc.wrapping_add(w.wrapping_mul(values[v]))
                }),
                Op::Round { input, bits, .. } => crate::program::round_shift(values[*input], *bits),
                Op::Lut { input, table } => {
                    let t = &self.program.tables[*table];
                    let mut x = values[*input];
                    let u = self.uniform();
                    if u < self.p_fail {
                        x += if u < self.p_fail / 2.0 { -1 } else { 1 };
                    }
                    let last = t.offset + t.entries.len() as i64 - 1;
                    t.get(x.clamp(t.offset, last)).unwrap_or(0)
                }
            };
            values.push(v);
        }
        Ok(self.program.outputs.iter().map(|&o| values[o]).collect())
    }
}

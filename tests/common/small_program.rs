//! The small program of the serialization tests and the ciphertext fuzz
//! targets: two 2-bit inputs, their weighted sum, one table on it (one
//! bootstrap), and both the table's output and the sum as outputs, so every
//! key and ciphertext kind is exercised. Shared by `tests/serialization.rs`,
//! `tests/memory_bombs.rs` and `fuzz/harness.rs`.

use cml::program::{Interval, Op, Program, Table};

/// `[(x0 + 2·x1) / 2, x0 + 2·x1]` for `x0, x1 ∈ [0, 3]`.
pub fn small_program() -> Program {
    let mut p = Program::new(vec![Interval::new(0, 3), Interval::new(0, 3)]);
    let s = p.push(Op::Linear {
        terms: vec![(0, 1), (1, 2)],
        constant: 0,
    });
    let t = p.add_table(Table::from_fn("half", 0..=9, |v| v / 2));
    let y = p.push(Op::Lut { input: s, table: t });
    p.outputs = vec![y, s];
    p
}

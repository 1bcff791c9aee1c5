//! The integer program: a small SSA of integer ops that every runner (clear,
//! simulate, TFHE, generated code) executes, with a proven range for every
//! value.
//!
//! Values `0..inputs.len()` are the encrypted inputs; op `i` defines value
//! `inputs.len() + i`. Ops are [`Op::Linear`] (clear integer weights and a
//! constant: dot products, sums, matmul rows, constant adds, all leveled in
//! TFHE) and [`Op::Lut`] (a table lookup: one programmable bootstrap).
//!
//! ```
//! use cml_runtime::program::{Interval, Op, Program, Table};
//!
//! // y = table[2·x0 − x1 + 3] for x0, x1 in [0, 3]
//! let mut p = Program::new(vec![Interval::new(0, 3), Interval::new(0, 3)]);
//! let acc = p.push(Op::Linear { terms: vec![(0, 2), (1, -1)], constant: 3 });
//! let t = p.add_table(Table::from_fn("double", 0..=9, |v| 2 * v));
//! let y = p.push(Op::Lut { input: acc, table: t });
//! p.outputs = vec![y];
//! let analysis = p.analyze().unwrap();
//! assert_eq!(analysis.values[acc].range, Interval::new(0, 9));
//! assert_eq!(p.eval_clear(&[3, 1]).unwrap(), vec![16]);
//! ```

use serde::{Deserialize, Serialize};

use crate::error::ProgramError;

/// Index of a value in a program.
pub type ValueId = usize;

/// Widest table input the TFHE runner supports (bits, padding excluded).
pub const MAX_TABLE_BITS: u32 = 10;

/// An inclusive integer range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    /// Smallest value.
    pub lo: i64,
    /// Largest value.
    pub hi: i64,
}

impl Interval {
    /// `[lo, hi]`; panics in debug builds if `lo > hi`.
    pub fn new(lo: i64, hi: i64) -> Self {
        debug_assert!(lo <= hi);
        Self { lo, hi }
    }

    /// Number of distinct values.
    pub fn span(&self) -> u128 {
        (self.hi as i128 - self.lo as i128 + 1) as u128
    }

    /// Bits needed to tell all values of the range apart.
    pub fn bits(&self) -> u32 {
        let span = self.span();
        if span <= 1 {
            1
        } else {
            128 - (span - 1).leading_zeros()
        }
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: i64) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// A lookup table indexed by `input - offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// A name for reports.
    pub name: String,
    /// Input value of entry 0.
    pub offset: i64,
    /// Output per input value.
    pub entries: Vec<i64>,
}

impl Table {
    /// Tabulates `f` on an input range.
    pub fn from_fn(
        name: impl Into<String>,
        inputs: std::ops::RangeInclusive<i64>,
        f: impl Fn(i64) -> i64,
    ) -> Self {
        Self {
            name: name.into(),
            offset: *inputs.start(),
            entries: inputs.map(f).collect(),
        }
    }

    /// Looks up `v`, `None` outside the table.
    pub fn get(&self, v: i64) -> Option<i64> {
        let i = v.checked_sub(self.offset)?;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.entries.get(i).copied())
    }

    /// Range of the outputs.
    pub fn output_range(&self) -> Interval {
        let lo = self.entries.iter().copied().min().unwrap_or(0);
        let hi = self.entries.iter().copied().max().unwrap_or(0);
        Interval::new(lo, hi)
    }
}

/// One op of the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `constant + Σ weight · value`, leveled in TFHE.
    Linear {
        /// `(value, clear integer weight)` pairs.
        terms: Vec<(ValueId, i64)>,
        /// Clear integer added.
        constant: i64,
    },
    /// `tables[table][input]`, one programmable bootstrap in TFHE.
    Lut {
        /// The value read.
        input: ValueId,
        /// Index into [`Program::tables`].
        table: usize,
    },
    /// `⌊(input + 2^(bits−1)) / 2^bits⌋`: rounds off the `bits` low bits, so
    /// that a table after it reads only the bits that matter. Exact in TFHE:
    /// one 1-bit bootstrap extracts each low bit, which is subtracted; the
    /// result is the rounded value at a `2^bits` coarser scale.
    Round {
        /// The value rounded.
        input: ValueId,
        /// Low bits removed (at least 1).
        bits: u32,
        /// Exact (one 1-bit bootstrap per bit), or approximate (free: the low
        /// bits stay as an offset of at most half a step, so in TFHE a value
        /// near a rounding boundary may land one step off, with the
        /// probability [`noise::approximate_rounding_error`](crate::noise::approximate_rounding_error) models).
        exact: bool,
    },
}

/// Greatest common divisor (`gcd(0, x) = x`).
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `⌊(v + 2^(bits−1)) / 2^bits⌋`, the semantics of [`Op::Round`].
pub fn round_shift(v: i64, bits: u32) -> i64 {
    let half = 1i128 << (bits - 1);
    ((v as i128 + half).div_euclid(1i128 << bits)) as i64
}

/// An integer program over encrypted inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Range of each input.
    pub inputs: Vec<Interval>,
    /// Ops, in order.
    pub ops: Vec<Op>,
    /// Tables used by [`Op::Lut`].
    pub tables: Vec<Table>,
    /// Values returned (decrypted by the client).
    pub outputs: Vec<ValueId>,
    /// Groups of values of which at most one is nonzero for any input (the
    /// leaves of one tree: exactly one is reached). A sum over members of
    /// one group then spans the hull of its terms, not their total, which
    /// can save bits of message space; [`eval_clear`](Self::eval_clear)
    /// checks the claim on every run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusive: Vec<Vec<ValueId>>,
}

/// Where a value's noise comes from, as sums of squared weights over fresh
/// encryptions and over bootstrap outputs. Its variance is
/// `fresh · σ²_fresh + bootstrapped · σ²_pbs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NoiseWeight {
    /// Σ w² over fresh input encryptions.
    pub fresh: f64,
    /// Σ w² over bootstrap outputs.
    pub bootstrapped: f64,
}

impl NoiseWeight {
    /// The weight 2-norm, counting both sources alike.
    pub fn norm2(&self) -> f64 {
        (self.fresh + self.bootstrapped).sqrt()
    }
}

/// Facts proven about one value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueInfo {
    /// Every value it can take.
    pub range: Interval,
    /// Its noise in TFHE relative to fresh and bootstrapped noise.
    pub noise: NoiseWeight,
}

/// The result of [`Program::analyze`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// One entry per value.
    pub values: Vec<ValueInfo>,
}

impl Analysis {
    /// The widest value of the program, in bits.
    pub fn max_bits(&self) -> u32 {
        self.values
            .iter()
            .map(|v| v.range.bits())
            .max()
            .unwrap_or(1)
    }
}

impl Program {
    /// A program with these inputs and nothing else yet.
    pub fn new(inputs: Vec<Interval>) -> Self {
        Self {
            inputs,
            ops: Vec::new(),
            tables: Vec::new(),
            outputs: Vec::new(),
            exclusive: Vec::new(),
        }
    }

    /// Declares that at most one of `values` is nonzero for any input (see
    /// [`exclusive`](Self::exclusive)); duplicates are dropped.
    ///
    /// ```
    /// use cml_runtime::program::{Interval, Op, Program, Table};
    ///
    /// // Two one-hot flags of x: never both set.
    /// let mut p = Program::new(vec![Interval::new(0, 3)]);
    /// let low = p.add_table(Table::from_fn("low", 0..=3, |x| if x < 2 { 40 } else { 0 }));
    /// let high = p.add_table(Table::from_fn("high", 0..=3, |x| if x < 2 { 0 } else { 50 }));
    /// let a = p.push(Op::Lut { input: 0, table: low });
    /// let b = p.push(Op::Lut { input: 0, table: high });
    /// let sum = p.push(Op::Linear { terms: vec![(a, 1), (b, 1)], constant: 0 });
    /// assert_eq!(p.analyze().unwrap().values[sum].range, Interval::new(0, 90));
    /// p.add_exclusive(vec![a, b]);
    /// assert_eq!(p.analyze().unwrap().values[sum].range, Interval::new(0, 50));
    /// ```
    pub fn add_exclusive(&mut self, mut values: Vec<ValueId>) {
        values.sort_unstable();
        values.dedup();
        if values.len() > 1 {
            self.exclusive.push(values);
        }
    }

    /// Moves common factors of the weights a table's output is read with
    /// into the table: when every use of a lookup's value is a [`Op::Linear`]
    /// term and all its weights share a factor `g > 1`, the table's entries
    /// are multiplied by `g` and the weights divided by it. Every value but
    /// the lookup's own keeps its range, and each sum then carries that
    /// bootstrap's noise with weight `w / g` instead of `w`: a bootstrap
    /// output's noise does not depend on the value it encodes. Returns how
    /// many lookups were changed.
    ///
    /// A tree's leaf index weights its path bits by ±2 (see
    /// [`crate::models::tree`]): folded, its table input's noise weight
    /// Σw² at depth 2 falls from 9 to 3.
    ///
    /// ```
    /// use cml_runtime::program::{Interval, Op, Program, Table};
    ///
    /// let mut p = Program::new(vec![Interval::new(0, 3), Interval::new(0, 1)]);
    /// let t = p.add_table(Table::from_fn("gt1", 0..=3, |x| i64::from(x > 1)));
    /// let c = p.push(Op::Lut { input: 0, table: t });
    /// let z = p.push(Op::Linear { terms: vec![(c, -2), (1, 1)], constant: 2 });
    /// p.outputs = vec![z];
    /// let before = p.eval_clear(&[3, 1]).unwrap();
    /// assert_eq!(p.fold_weights(), 1);
    /// assert_eq!(p.ops[1], Op::Linear { terms: vec![(c, -1), (1, 1)], constant: 2 });
    /// assert_eq!(p.tables[t].entries, vec![0, 0, 2, 2]);
    /// assert_eq!(p.eval_clear(&[3, 1]).unwrap(), before);
    /// ```
    pub fn fold_weights(&mut self) -> usize {
        let n_inputs = self.inputs.len();
        let n = self.n_values();
        // Per value: gcd of |weight| over its Linear uses; 0 = unused so far,
        // 1 = cannot fold (read by a table, a rounding or the client).
        let mut factor = vec![0u64; n];
        for &o in &self.outputs {
            factor[o] = 1;
        }
        for op in &self.ops {
            match op {
                Op::Linear { terms, .. } => {
                    for &(v, w) in terms {
                        factor[v] = gcd(factor[v], w.unsigned_abs());
                    }
                }
                Op::Lut { input, .. } | Op::Round { input, .. } => factor[*input] = 1,
            }
        }
        let mut table_uses = vec![0usize; self.tables.len()];
        for (_, t) in self.lut_inputs() {
            table_uses[t] += 1;
        }
        // Per value: the factor moved into its table (1: none).
        let mut folded_by = vec![1i64; n];
        for i in 0..self.ops.len() {
            let v = n_inputs + i;
            let Op::Lut { table, .. } = self.ops[i] else {
                continue;
            };
            let g = i64::try_from(factor[v]).unwrap_or(1);
            let entries: Option<Vec<i64>> = self.tables[table]
                .entries
                .iter()
                .map(|e| e.checked_mul(g))
                .collect();
            let (true, Some(entries)) = (g > 1, entries) else {
                continue;
            };
            let scaled = Table {
                name: format!("{}×{g}", self.tables[table].name),
                offset: self.tables[table].offset,
                entries,
            };
            let t = if table_uses[table] == 1 {
                self.tables[table] = scaled;
                table
            } else {
                table_uses[table] -= 1;
                self.add_table(scaled)
            };
            if let Op::Lut { table: old, .. } = &mut self.ops[i] {
                *old = t;
            }
            folded_by[v] = g;
        }
        for op in &mut self.ops {
            if let Op::Linear { terms, .. } = op {
                for (v, w) in terms.iter_mut() {
                    *w /= folded_by[*v];
                }
            }
        }
        folded_by.iter().filter(|&&g| g > 1).count()
    }

    /// Appends an op and returns the value it defines.
    pub fn push(&mut self, op: Op) -> ValueId {
        self.ops.push(op);
        self.inputs.len() + self.ops.len() - 1
    }

    /// Adds a table and returns its index.
    pub fn add_table(&mut self, table: Table) -> usize {
        self.tables.push(table);
        self.tables.len() - 1
    }

    /// Number of values (inputs and ops).
    pub fn n_values(&self) -> usize {
        self.inputs.len() + self.ops.len()
    }

    /// Number of programmable bootstraps one evaluation costs (one per
    /// table lookup, one per bit rounded off).
    pub fn pbs_count(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Lut { .. } => 1,
                Op::Round {
                    bits, exact: true, ..
                } => *bits as usize,
                Op::Round { exact: false, .. } => 0,
                Op::Linear { .. } => 0,
            })
            .sum()
    }

    /// The rounding ops: `(input, bits, output)`.
    pub fn rounds(&self) -> impl Iterator<Item = (ValueId, u32, ValueId)> + '_ {
        let n = self.inputs.len();
        self.ops
            .iter()
            .enumerate()
            .filter_map(move |(i, op)| match op {
                Op::Round { input, bits, .. } => Some((*input, *bits, n + i)),
                _ => None,
            })
    }

    /// The values read by tables, with the table index.
    pub fn lut_inputs(&self) -> impl Iterator<Item = (ValueId, usize)> + '_ {
        self.ops.iter().filter_map(|op| match op {
            Op::Lut { input, table } => Some((*input, *table)),
            Op::Linear { .. } | Op::Round { .. } => None,
        })
    }

    /// Proves a range and a noise weight for every value, checking that ops
    /// refer to earlier values, that nothing overflows 64 bits and that tables
    /// cover their inputs.
    ///
    /// Noise is tracked exactly as a combination of independent sources (each
    /// fresh input encryption, each bootstrap output), so a value that reaches
    /// a sum through several paths (`x + x`, or `y − x` with `y = x + z`)
    /// gets the variance of its net coefficient, not of each path apart.
    pub fn analyze(&self) -> Result<Analysis, ProgramError> {
        let n_inputs = self.inputs.len();
        let mut values: Vec<ValueInfo> = Vec::with_capacity(self.n_values());
        // Per value: its noise as (source value id, coefficient), sorted by source.
        let mut sources: Vec<Vec<(usize, f64)>> = Vec::with_capacity(self.n_values());
        for (i, &range) in self.inputs.iter().enumerate() {
            values.push(ValueInfo {
                range,
                noise: NoiseWeight {
                    fresh: 1.0,
                    bootstrapped: 0.0,
                },
            });
            sources.push(vec![(i, 1.0)]);
        }
        // Each value's exclusive group (its first, if several), checked.
        let mut group_of: std::collections::HashMap<ValueId, usize> = Default::default();
        for (g, group) in self.exclusive.iter().enumerate() {
            for &v in group {
                if v >= self.n_values() {
                    return Err(ProgramError::Dangling {
                        op: self.ops.len(),
                        value: v,
                    });
                }
                group_of.entry(v).or_insert(g);
            }
        }
        for (i, op) in self.ops.iter().enumerate() {
            let id = n_inputs + i;
            let get = |v: ValueId| {
                values
                    .get(v)
                    .copied()
                    .ok_or(ProgramError::Dangling { op: i, value: v })
            };
            let (info, noise_sources) = match op {
                Op::Linear { terms, constant } => {
                    let (mut lo, mut hi) = (*constant as i128, *constant as i128);
                    let mut combined: std::collections::BTreeMap<usize, f64> = Default::default();
                    // Net weight of each member of an exclusive group, by group.
                    let mut grouped: std::collections::BTreeMap<(usize, ValueId), i128> =
                        Default::default();
                    for &(v, w) in terms {
                        let x = get(v)?;
                        match group_of.get(&v) {
                            Some(&g) => *grouped.entry((g, v)).or_insert(0) += w as i128,
                            None => {
                                let (a, b) = (
                                    w as i128 * x.range.lo as i128,
                                    w as i128 * x.range.hi as i128,
                                );
                                lo += a.min(b);
                                hi += a.max(b);
                            }
                        }
                        for &(src, c) in &sources[v] {
                            *combined.entry(src).or_insert(0.0) += w as f64 * c;
                        }
                    }
                    // At most one member is nonzero: a group adds the hull of
                    // 0 and of each member's weighted range.
                    let mut hulls: std::collections::BTreeMap<usize, (i128, i128)> =
                        Default::default();
                    for (&(g, v), &w) in &grouped {
                        let r = values[v].range;
                        let (a, b) = (w * r.lo as i128, w * r.hi as i128);
                        let h = hulls.entry(g).or_insert((0, 0));
                        *h = (h.0.min(a.min(b)), h.1.max(a.max(b)));
                    }
                    for (a, b) in hulls.into_values() {
                        lo += a;
                        hi += b;
                    }
                    let fits = |v: i128| i64::try_from(v).is_ok();
                    // Keep headroom so spans and offsets stay in range.
                    if !fits(lo * 2) || !fits(hi * 2) {
                        return Err(ProgramError::Overflow { value: id });
                    }
                    let mut noise = NoiseWeight::default();
                    for (&src, &c) in &combined {
                        if src < n_inputs {
                            noise.fresh += c * c;
                        } else {
                            noise.bootstrapped += c * c;
                        }
                    }
                    let info = ValueInfo {
                        range: Interval::new(lo as i64, hi as i64),
                        noise,
                    };
                    (
                        info,
                        combined.into_iter().filter(|(_, c)| *c != 0.0).collect(),
                    )
                }
                Op::Lut { input, table } => {
                    let x = get(*input)?;
                    let t = self.tables.get(*table).ok_or(ProgramError::Dangling {
                        op: i,
                        value: *table,
                    })?;
                    let bits = x.range.bits();
                    if bits > MAX_TABLE_BITS {
                        return Err(ProgramError::TableTooWide {
                            table: *table,
                            bits,
                            max: MAX_TABLE_BITS,
                        });
                    }
                    let covers = t.get(x.range.lo).is_some() && t.get(x.range.hi).is_some();
                    if !covers {
                        return Err(ProgramError::TableSize {
                            table: *table,
                            expected: x.range.span() as usize,
                            found: t.entries.len(),
                        });
                    }
                    let used = &t.entries
                        [(x.range.lo - t.offset) as usize..=(x.range.hi - t.offset) as usize];
                    let lo = used.iter().copied().min().unwrap_or(0);
                    let hi = used.iter().copied().max().unwrap_or(0);
                    if i64::try_from(lo as i128 * 2).is_err()
                        || i64::try_from(hi as i128 * 2).is_err()
                    {
                        return Err(ProgramError::Overflow { value: id });
                    }
                    let info = ValueInfo {
                        range: Interval::new(lo, hi),
                        noise: NoiseWeight {
                            fresh: 0.0,
                            bootstrapped: 1.0,
                        },
                    };
                    (info, vec![(id, 1.0)])
                }
                Op::Round { input, bits, exact } => {
                    let x = get(*input)?;
                    if *bits == 0 || *bits >= 62 {
                        return Err(ProgramError::Overflow { value: id });
                    }
                    let range = Interval::new(
                        round_shift(x.range.lo, *bits),
                        round_shift(x.range.hi, *bits),
                    );
                    // The input's noise, plus (exact mode) one bootstrap output
                    // per bit extracted (a source of its own: this op's id).
                    let extracted = if *exact { f64::from(*bits) } else { 0.0 };
                    let mut noise_sources = sources[*input].clone();
                    if *exact {
                        noise_sources.push((id, extracted.sqrt()));
                    }
                    let info = ValueInfo {
                        range,
                        noise: NoiseWeight {
                            fresh: x.noise.fresh,
                            bootstrapped: x.noise.bootstrapped + extracted,
                        },
                    };
                    (info, noise_sources)
                }
            };
            values.push(info);
            sources.push(noise_sources);
        }
        for &o in &self.outputs {
            if o >= values.len() {
                return Err(ProgramError::Dangling {
                    op: self.ops.len(),
                    value: o,
                });
            }
        }
        Ok(Analysis { values })
    }

    /// Checks an input vector against the declared ranges.
    pub fn check_inputs(&self, inputs: &[i64]) -> Result<(), ProgramError> {
        if inputs.len() != self.inputs.len() {
            return Err(ProgramError::Arity {
                expected: self.inputs.len(),
                found: inputs.len(),
            });
        }
        for (i, (&v, r)) in inputs.iter().zip(&self.inputs).enumerate() {
            if !r.contains(v) {
                return Err(ProgramError::InputRange {
                    input: i,
                    value: v,
                    lo: r.lo,
                    hi: r.hi,
                });
            }
        }
        Ok(())
    }

    /// Runs the program on clear integers: the exact reference every other
    /// runner must match.
    pub fn eval_clear(&self, inputs: &[i64]) -> Result<Vec<i64>, ProgramError> {
        self.check_inputs(inputs)?;
        let mut values = Vec::with_capacity(self.n_values());
        values.extend_from_slice(inputs);
        for (i, op) in self.ops.iter().enumerate() {
            let v = match op {
                Op::Linear { terms, constant } => {
                    let mut acc = *constant as i128;
                    for &(v, w) in terms {
                        let x = *values
                            .get(v)
                            .ok_or(ProgramError::Dangling { op: i, value: v })?;
                        acc += w as i128 * x as i128;
                    }
                    i64::try_from(acc).map_err(|_| ProgramError::Overflow {
                        value: self.inputs.len() + i,
                    })?
                }
                Op::Lut { input, table } => {
                    let x = *values.get(*input).ok_or(ProgramError::Dangling {
                        op: i,
                        value: *input,
                    })?;
                    let t = &self.tables[*table];
                    t.get(x).ok_or(ProgramError::TableSize {
                        table: *table,
                        expected: (x - t.offset + 1).max(0) as usize,
                        found: t.entries.len(),
                    })?
                }
                Op::Round { input, bits, .. } => {
                    let x = *values.get(*input).ok_or(ProgramError::Dangling {
                        op: i,
                        value: *input,
                    })?;
                    round_shift(x, *bits)
                }
            };
            values.push(v);
        }
        for (g, group) in self.exclusive.iter().enumerate() {
            let mut set = group
                .iter()
                .filter(|&&v| values.get(v).is_some_and(|&x| x != 0));
            if let (Some(&a), Some(&b)) = (set.next(), set.next()) {
                return Err(ProgramError::NotExclusive {
                    group: g,
                    values: (a, b),
                });
            }
        }
        Ok(self.outputs.iter().map(|&o| values[o]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot_program() -> Program {
        let mut p = Program::new(vec![Interval::new(0, 255); 3]);
        let acc = p.push(Op::Linear {
            terms: vec![(0, 127), (1, -127), (2, 5)],
            constant: -10,
        });
        p.outputs = vec![acc];
        p
    }

    /// Two leaves of one tree: `a ∈ {0, 40}`, `b ∈ {0, 30}`, never both
    /// set. Their sum spans the hull [0, 40], a repeated member counts
    /// with its net weight, and a program whose claim is false is an error
    /// on the first input that shows it, not a wrong range.
    #[test]
    fn exclusive_groups_narrow_sums_and_are_checked() {
        let mut p = Program::new(vec![Interval::new(0, 3)]);
        let left = p.add_table(Table::from_fn(
            "left",
            0..=3,
            |x| if x < 2 { 40 } else { 0 },
        ));
        let right = p.add_table(Table::from_fn(
            "right",
            0..=3,
            |x| if x < 2 { 0 } else { 30 },
        ));
        let a = p.push(Op::Lut {
            input: 0,
            table: left,
        });
        let b = p.push(Op::Lut {
            input: 0,
            table: right,
        });
        let sum = p.push(Op::Linear {
            terms: vec![(a, 1), (b, 1), (0, 1)],
            constant: 5,
        });
        let twice = p.push(Op::Linear {
            terms: vec![(a, 1), (a, 1), (b, 1)],
            constant: 0,
        });
        p.outputs = vec![sum, twice];
        let wide = p.analyze().unwrap();
        assert_eq!(wide.values[sum].range, Interval::new(5, 78));
        assert_eq!(wide.values[twice].range, Interval::new(0, 110));
        p.add_exclusive(vec![b, a, b]);
        assert_eq!(p.exclusive, vec![vec![a, b]]);
        let narrow = p.analyze().unwrap();
        assert_eq!(narrow.values[sum].range, Interval::new(5, 48));
        assert_eq!(narrow.values[twice].range, Interval::new(0, 80));
        // The noise is that of every term, as before.
        assert_eq!(narrow.values[sum].noise, wide.values[sum].noise);
        for x in 0..4 {
            let out = p.eval_clear(&[x]).unwrap();
            assert!(narrow.values[sum].range.contains(out[0]), "x = {x}");
            assert!(narrow.values[twice].range.contains(out[1]), "x = {x}");
        }

        // A false claim: `a` and the input are both nonzero at x = 1.
        p.add_exclusive(vec![a, 0]);
        assert_eq!(
            p.eval_clear(&[1]),
            Err(ProgramError::NotExclusive {
                group: 1,
                values: (0, a)
            })
        );
        assert!(p.eval_clear(&[2]).is_ok());
        // A group naming a value that does not exist.
        p.exclusive.push(vec![a, 99]);
        assert!(matches!(
            p.analyze(),
            Err(ProgramError::Dangling { value: 99, .. })
        ));
    }

    #[test]
    fn bounds_are_tight_for_dot_products() {
        let p = dot_program();
        let a = p.analyze().unwrap();
        assert_eq!(
            a.values[3].range,
            Interval::new(-127 * 255 - 10, 132 * 255 - 10)
        );
        assert_eq!(a.values[3].noise.fresh, (127.0f64 * 127.0) * 2.0 + 25.0);
        assert_eq!(p.eval_clear(&[255, 0, 255]).unwrap(), vec![132 * 255 - 10]);
    }

    #[test]
    fn noise_counts_net_coefficients_per_source() {
        let mut p = Program::new(vec![Interval::new(0, 3); 2]);
        // x + x has four times the variance of x, not twice.
        let twice = p.push(Op::Linear {
            terms: vec![(0, 1), (0, 1)],
            constant: 0,
        });
        // y = x0 + x1, then y − x0 = x1: one unit of noise, not three.
        let y = p.push(Op::Linear {
            terms: vec![(0, 1), (1, 1)],
            constant: 0,
        });
        let back = p.push(Op::Linear {
            terms: vec![(y, 1), (0, -1)],
            constant: 0,
        });
        let a = p.analyze().unwrap();
        assert_eq!(a.values[twice].noise.fresh, 4.0);
        assert_eq!(a.values[back].noise.fresh, 1.0);
    }

    #[test]
    fn rounding_rounds_half_up_and_counts_its_bootstraps() {
        assert_eq!(round_shift(5, 1), 3);
        assert_eq!(round_shift(4, 2), 1);
        assert_eq!(round_shift(1, 2), 0);
        assert_eq!(round_shift(2, 2), 1);
        assert_eq!(round_shift(-3, 2), -1);
        let mut p = Program::new(vec![Interval::new(-100, 1000)]);
        let r = p.push(Op::Round {
            input: 0,
            bits: 3,
            exact: true,
        });
        p.outputs = vec![r];
        let a = p.analyze().unwrap();
        assert_eq!(a.values[r].range, Interval::new(-12, 125));
        assert_eq!(a.values[r].noise.bootstrapped, 3.0);
        assert_eq!(p.pbs_count(), 3);
        assert_eq!(p.eval_clear(&[1000]).unwrap(), vec![125]);
    }

    #[test]
    fn interval_bits() {
        assert_eq!(Interval::new(0, 0).bits(), 1);
        assert_eq!(Interval::new(0, 1).bits(), 1);
        assert_eq!(Interval::new(0, 255).bits(), 8);
        assert_eq!(Interval::new(-128, 127).bits(), 8);
        assert_eq!(Interval::new(0, 256).bits(), 9);
    }

    #[test]
    fn rejects_bad_programs() {
        let mut p = dot_program();
        p.ops.push(Op::Lut { input: 3, table: 0 });
        assert!(matches!(p.analyze(), Err(ProgramError::Dangling { .. })));
        let mut p = Program::new(vec![Interval::new(0, 7)]);
        let t = p.add_table(Table::from_fn("short", 0..=3, |v| v));
        p.push(Op::Lut { input: 0, table: t });
        assert_eq!(
            p.analyze(),
            Err(ProgramError::TableSize {
                table: 0,
                expected: 8,
                found: 4
            })
        );
        let mut p = Program::new(vec![Interval::new(0, i64::MAX / 2)]);
        p.push(Op::Linear {
            terms: vec![(0, 4)],
            constant: 0,
        });
        assert_eq!(p.analyze(), Err(ProgramError::Overflow { value: 1 }));
    }

    #[test]
    fn clear_run_checks_inputs() {
        let p = dot_program();
        assert_eq!(
            p.eval_clear(&[1, 2]),
            Err(ProgramError::Arity {
                expected: 3,
                found: 2
            })
        );
        assert!(matches!(
            p.eval_clear(&[256, 0, 0]),
            Err(ProgramError::InputRange { input: 0, .. })
        ));
    }
}

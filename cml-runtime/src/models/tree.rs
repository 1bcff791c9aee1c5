//! Tree ensembles lowered to table lookups on digits of the quantized
//! features, with leaf selection and the ensemble sum done under encryption.
//!
//! **Quantization.** Each feature gets its own unsigned `n`-bit quantizer
//! over its calibration range (Concrete ML's formulas):
//! `q = clip(rint(x / s + z), 0, 2^n − 1)`, standing for `x̂ = s (q − z)`.
//! A split "left when `x <= t`" becomes "left when `q <= T`" with `T` the
//! largest grid point whose `x̂ <= t`; for "left when `x < t`" (XGBoost) `T`
//! is the largest with `x̂ < t`. So the quantized model takes, on every
//! split, the branch the float model takes for the dequantized sample `x̂`. `T < 0` or `T >= 2^n − 1`
//! make the split constant and cost nothing. Leaf values are quantized with
//! one symmetric `leaf_bits` quantizer shared by all trees and outputs.
//!
//! **Digits.** The client sends each `q` as two digits, `h = q >> b` and `l =
//! q mod 2^b` (as `tfhe`'s radix integers do), so no table reads all `n`
//! bits. With `T = 2^b·T_h + T_l`:
//!
//! `q <= T  ⇔  h + [l > T_l] <= T_h`,
//!
//! one *carry* table on `l` (shared by every split with that `(feature,
//! T_l)`; none when `T_l = 2^b − 1`) and a comparison on `u = h + carry`,
//! whose range is `2^(n−b) + 1` values. `b` is chosen per model by the
//! parameter optimizer's cost estimate.
//!
//! **Comparisons** are one table each on `u`, `c = [u <= T_h] ∈ {0, 1}`,
//! shared by every split of the ensemble with the same `(feature, T)`.
//!
//! **Missing values.** A feature listed in the spec's `accepts_missing`
//! comes with a *missing bit* `m` (1: missing; the feature's digits are then
//! 0). A split with missing side `s` compares `v = u + (u_max + 1)·m ∈ [0,
//! 2 u_max + 1]` instead of `u`, in the same one table: `v > u_max` means
//! missing and gives `s`. A split constant on present values is `m` or `1 −
//! m` (no table) when the missing side differs, so missing values cost one
//! bit of table width and no bootstrap.
//!
//! **Leaf selection** (Hummingbird's GEMM form, as Concrete ML): the path
//! sum `S = Σ` over a leaf's ancestors of `c` (went left) or `1 − c` (went
//! right) is leveled, and the leaf is reached iff `S = k`, its number of
//! non-constant ancestors. One table on `k − S ∈ [0, k]` returns the leaf's
//! value (or 0). Two sibling leaves of a single-output tree share one table
//! on `c_p + 2 (k_p − S_p) ∈ [0, 2 k_p + 1]` (value 1: left leaf, 0: right
//! leaf, else not reached), one bit wider and noisier (`4 k_p + 1` noise
//! terms); up to which depth to pair them, and the digit split, are chosen
//! by the optimizer's cost estimate.
//!
//! **Aggregation.** Leaf outputs are written at the output's scale and
//! summed (leveled) over the whole ensemble with the base score, so the
//! server returns one encrypted score per output. Each tree's leaf outputs
//! form an exclusive group ([`Program::exclusive`]): exactly one leaf is
//! reached, so a tree adds the hull of its leaf values to the sum's range,
//! not their total, and the output needs fewer bits of message space. Binary scikit-learn
//! classifiers output one score, `p(class 1) − p(class 0)`.

use std::collections::HashMap;

use ndarray::ArrayView2;

use super::{Decoder, Encoder};
use crate::error::Error;
use crate::params::{self, Needs, PFail};
use crate::program::{Interval, Op, Program, Table, ValueId};
use crate::quant::Quantizer;
use crate::spec::{
    Aggregation, Comparison, EnsembleSpec, Link, Node, QuantizationSpec, Side, Task,
};

/// The integer form of a tree ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeLowering {
    /// Input side: quantizers and the digit split.
    pub encoder: Encoder,
    /// The program.
    pub program: Program,
    /// Output side.
    pub decoder: Decoder,
    /// What the lowering did.
    pub stats: TreeStats,
}

/// Counts of a tree lowering, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeStats {
    /// Splits in the ensemble.
    pub splits: usize,
    /// Leaves in the ensemble.
    pub leaves: usize,
    /// Splits whose quantized comparison is constant (no table).
    pub constant_splits: usize,
    /// Distinct `(feature, quantized threshold)` comparisons.
    pub distinct_comparisons: usize,
    /// Carry tables (distinct `(feature, low digit)` pairs).
    pub carries: usize,
    /// Bits of the low digit (0: one digit).
    pub low_bits: u8,
}

/// The quantized threshold of a split: the largest grid point `q` whose
/// dequantized value passes the comparison (`−1` when none does).
pub fn grid_threshold(qz: &Quantizer, threshold: f64, comparison: Comparison) -> i64 {
    let passes = |q: i64| {
        let x = qz.dequantize(q);
        match comparison {
            Comparison::Le => x <= threshold,
            Comparison::Lt => x < threshold,
        }
    };
    let (lo, hi) = (qz.q_min(), qz.q_max());
    let guess = (threshold / qz.scale + qz.zero_point as f64).floor();
    let mut t = if guess.is_finite() {
        (guess as i64).clamp(lo - 1, hi)
    } else {
        lo - 1
    };
    // Settle float rounding at the boundary exactly.
    while t >= lo && !passes(t) {
        t -= 1;
    }
    while t < hi && passes(t + 1) {
        t += 1;
    }
    t
}

/// Builds the program, sharing identical ops.
struct Builder {
    program: Program,
    linear: HashMap<(Vec<(ValueId, i64)>, i64), ValueId>,
    luts: HashMap<(ValueId, i64, Vec<i64>, bool), ValueId>,
}

impl Builder {
    fn linear(&mut self, mut terms: Vec<(ValueId, i64)>, constant: i64) -> ValueId {
        terms.sort_unstable();
        let key = (terms.clone(), constant);
        if let Some(&v) = self.linear.get(&key) {
            return v;
        }
        let v = self.program.push(Op::Linear { terms, constant });
        self.linear.insert(key, v);
        v
    }

    /// A lookup; `wide` tables write at the output's scale, so they are
    /// never shared with narrow ones (that would join the two clusters).
    fn lut(
        &mut self,
        name: &str,
        input: ValueId,
        range: Interval,
        f: impl Fn(i64) -> i64,
        wide: bool,
    ) -> ValueId {
        let table = Table::from_fn(name, range.lo..=range.hi, f);
        let key = (input, table.offset, table.entries.clone(), wide);
        if let Some(&v) = self.luts.get(&key) {
            return v;
        }
        let t = self.program.add_table(table);
        let v = self.program.push(Op::Lut { input, table: t });
        self.luts.insert(key, v);
        v
    }
}

struct Lowerer<'a> {
    spec: &'a EnsembleSpec,
    quantizers: &'a [Quantizer],
    low_bits: u8,
    pair_max_k: i64,
    b: Builder,
    carries: HashMap<(usize, i64), ValueId>,
    /// Per feature, its missing bit's input, if it takes missing values.
    missing_bits: Vec<Option<ValueId>>,
    /// Keyed by feature, grid threshold and (missing features) whether a
    /// missing value goes left.
    comparisons: HashMap<(usize, i64, Option<bool>), ValueId>,
    stats: TreeStats,
    /// Per output: terms of the final sum, and its constant.
    outputs: Vec<(Vec<(ValueId, i64)>, i64)>,
    /// Values the current tree's leaves add to the outputs: one leaf is
    /// reached, so at most one of them is nonzero.
    tree_values: Vec<ValueId>,
}

impl Lowerer<'_> {
    /// Input ids of feature `f`'s digits: `(high, low)`.
    fn digits(&self, f: usize) -> (ValueId, Option<ValueId>) {
        if self.low_bits == 0 {
            (f, None)
        } else {
            (2 * f, Some(2 * f + 1))
        }
    }

    /// The value a split on grid threshold `t` compares, `u`, and its
    /// threshold on `u`.
    fn u_of(&mut self, feature: usize, t: i64) -> Cmp {
        let qz = self.quantizers[feature];
        if t < qz.q_min() {
            return Cmp::Const(false);
        }
        if t >= qz.q_max() {
            return Cmp::Const(true);
        }
        let (high, low) = self.digits(feature);
        let Some(low) = low else {
            return Cmp::Le {
                u: high,
                t,
                u_max: qz.q_max(),
            };
        };
        let (n, b) = (qz.n_bits, self.low_bits);
        let mask = (1i64 << b) - 1;
        let (t_h, t_l) = (t >> b, t & mask);
        let h_max = (1i64 << (n - b)) - 1;
        if t_l == mask {
            return Cmp::Le {
                u: high,
                t: t_h,
                u_max: h_max,
            };
        }
        let carry = match self.carries.get(&(feature, t_l)) {
            Some(&c) => c,
            None => {
                let c = self.b.lut(
                    &format!("carry_x{feature}_gt{t_l}"),
                    low,
                    Interval::new(0, mask),
                    |l| i64::from(l > t_l),
                    false,
                );
                self.carries.insert((feature, t_l), c);
                self.stats.carries += 1;
                c
            }
        };
        let u = self.b.linear(vec![(high, 1), (carry, 1)], 0);
        Cmp::Le {
            u,
            t: t_h,
            u_max: h_max + 1,
        }
    }
}

/// A split's comparison: constant, or `u <= t` with `u` in `[0, u_max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Const(bool),
    Le { u: ValueId, t: i64, u_max: i64 },
}

/// A path condition: the comparison bit `c` and the side taken.
#[derive(Debug, Clone, Copy)]
struct Step {
    c: ValueId,
    left: bool,
}

impl Lowerer<'_> {
    /// The comparison bit of a split, or `Err(side)` when the split is
    /// constant.
    fn comparison(
        &mut self,
        feature: usize,
        threshold: f64,
        missing: Option<Side>,
    ) -> Result<ValueId, bool> {
        let qz = self.quantizers[feature];
        let t = grid_threshold(&qz, threshold, self.spec.comparison);
        let m = self.missing_bits[feature];
        // The spec check guarantees a side on every split of such a feature.
        let missing_left = m.map(|_| missing == Some(Side::Left));
        let key = (feature, t, missing_left);
        if let Some(&c) = self.comparisons.get(&key) {
            return Ok(c);
        }
        let c = match (self.u_of(feature, t), m, missing_left) {
            (Cmp::Const(side), None, _) => return Err(side),
            (Cmp::Const(side), Some(_), Some(ml)) if side == ml => return Err(side),
            // Left exactly when missing, or exactly when present.
            (Cmp::Const(_), Some(m), Some(true)) => m,
            (Cmp::Const(_), Some(m), _) => self.b.linear(vec![(m, -1)], 1),
            (Cmp::Le { u, t: th, u_max }, None, _) => self.b.lut(
                &format!("x{feature}_le{t}"),
                u,
                Interval::new(0, u_max),
                |u| i64::from(u <= th),
                false,
            ),
            (Cmp::Le { u, t: th, u_max }, Some(m), ml) => {
                let ml = i64::from(ml == Some(true));
                let v = self.b.linear(vec![(u, 1), (m, u_max + 1)], 0);
                self.b.lut(
                    &format!(
                        "x{feature}_le{t}_missing_{}",
                        if ml == 1 { "left" } else { "right" }
                    ),
                    v,
                    Interval::new(0, 2 * u_max + 1),
                    |v| if v > u_max { ml } else { i64::from(v <= th) },
                    false,
                )
            }
        };
        self.comparisons.insert(key, c);
        Ok(c)
    }

    /// `S` of a path as `(terms, constant)`, and its `k`.
    fn path_sum(path: &[Step]) -> (Vec<(ValueId, i64)>, i64, i64) {
        let mut terms = Vec::new();
        let mut constant = 0;
        for s in path {
            if s.left {
                terms.push((s.c, 1));
            } else {
                terms.push((s.c, -1));
                constant += 1;
            }
        }
        (terms, constant, path.len() as i64)
    }

    /// Adds `weight · value` to output `o`.
    fn emit(&mut self, o: usize, value: ValueId, weight: i64) {
        if weight != 0 {
            self.outputs[o].0.push((value, weight));
            self.tree_values.push(value);
        }
    }

    /// A leaf reached through `path`: adds its quantized values.
    fn leaf(&mut self, path: &[Step], values: &[(usize, i64)]) {
        if path.is_empty() {
            for &(o, v) in values {
                self.outputs[o].1 += v;
            }
            return;
        }
        let (terms, constant, k) = Self::path_sum(path);
        // z = k − S ∈ [0, k], 0 iff reached.
        let neg: Vec<(ValueId, i64)> = terms.iter().map(|&(v, w)| (v, -w)).collect();
        let z = self.b.linear(neg, k - constant);
        let range = Interval::new(0, k);
        if let [(o, v)] = values {
            let (o, v) = (*o, *v);
            if v != 0 {
                let out = self
                    .b
                    .lut("leaf", z, range, |z| if z == 0 { v } else { 0 }, true);
                self.emit(o, out, 1);
            }
        } else if values.iter().any(|&(_, v)| v != 0) {
            let flag = self
                .b
                .lut("leaf_flag", z, range, |z| i64::from(z == 0), true);
            for &(o, v) in values {
                self.emit(o, flag, v);
            }
        }
    }

    /// Two sibling leaves of a single-output tree under the split `c`,
    /// reached through `path`: one table.
    fn leaf_pair(&mut self, path: &[Step], c: ValueId, o: usize, v_left: i64, v_right: i64) {
        let (terms, constant, k) = Self::path_sum(path);
        // z = c + 2 (k − S) ∈ [0, 2k + 1]: 1 left leaf, 0 right leaf.
        let mut zt: Vec<(ValueId, i64)> = terms.iter().map(|&(v, w)| (v, -2 * w)).collect();
        zt.push((c, 1));
        let z = self.b.linear(zt, 2 * (k - constant));
        let range = Interval::new(0, 2 * k + 1);
        let out = self.b.lut(
            "leaf_pair",
            z,
            range,
            |z| match z {
                1 => v_left,
                0 => v_right,
                _ => 0,
            },
            true,
        );
        self.emit(o, out, 1);
    }

    /// Walks one tree.
    fn tree(
        &mut self,
        nodes: &[crate::spec::NodeSpec],
        leaf_values: &dyn Fn(usize) -> Vec<(usize, i64)>,
    ) {
        // (node, path to it)
        let mut stack: Vec<(usize, Vec<Step>)> = vec![(0, Vec::new())];
        while let Some((i, path)) = stack.pop() {
            match nodes[i].kind() {
                Some(Node::Leaf(_)) => {
                    self.stats.leaves += 1;
                    self.leaf(&path, &leaf_values(i));
                }
                Some(Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                }) => {
                    self.stats.splits += 1;
                    match self.comparison(feature, threshold, nodes[i].missing) {
                        Err(side) => {
                            self.stats.constant_splits += 1;
                            let (taken, dead) = if side { (left, right) } else { (right, left) };
                            let (splits, leaves) = count_nodes(nodes, dead);
                            self.stats.splits += splits;
                            self.stats.leaves += leaves;
                            stack.push((taken, path));
                        }
                        Ok(c) => {
                            let both_leaves = matches!(nodes[left].kind(), Some(Node::Leaf(_)))
                                && matches!(nodes[right].kind(), Some(Node::Leaf(_)));
                            let (lv, rv) = (leaf_values(left), leaf_values(right));
                            if (path.len() as i64) <= self.pair_max_k
                                && both_leaves
                                && lv.len() == 1
                                && rv.len() == 1
                                && lv[0].0 == rv[0].0
                            {
                                self.stats.leaves += 2;
                                self.leaf_pair(&path, c, lv[0].0, lv[0].1, rv[0].1);
                                continue;
                            }
                            let mut lp = path.clone();
                            lp.push(Step { c, left: true });
                            let mut rp = path;
                            rp.push(Step { c, left: false });
                            stack.push((right, rp));
                            stack.push((left, lp));
                        }
                    }
                }
                None => {}
            }
        }
    }
}

/// `(splits, leaves)` of the subtree under `root`.
fn count_nodes(nodes: &[crate::spec::NodeSpec], root: usize) -> (usize, usize) {
    let mut stack = vec![root];
    let (mut splits, mut leaves) = (0, 0);
    while let Some(i) = stack.pop() {
        match nodes[i].kind() {
            Some(Node::Split { left, right, .. }) => {
                splits += 1;
                stack.extend([left, right]);
            }
            _ => leaves += 1,
        }
    }
    (splits, leaves)
}

/// Leaf values of the model as lowered: binary scikit-learn classifiers
/// keep one score, `p(class 1) − p(class 0)`.
fn reduced_outputs(e: &EnsembleSpec) -> (usize, bool) {
    let binary = e.task == Task::Classification && e.link == Link::Identity && e.n_outputs() == 2;
    (if binary { 1 } else { e.n_outputs() }, binary)
}

/// Lowers a checked ensemble spec, choosing the digit split and leaf
/// pairing with the lowest estimated cost.
pub fn lower(
    e: &EnsembleSpec,
    q: &QuantizationSpec,
    calibration: Option<ArrayView2<'_, f64>>,
    p_fail: PFail,
) -> Result<TreeLowering, Error> {
    // The spec check guarantees per-feature granularity for ensembles.
    let quantizers: Vec<Quantizer> =
        super::linear::input_ranges(q, e.features.len(), calibration, |_, x| x)?
            .into_iter()
            .map(|(lo, hi)| Quantizer::asymmetric(lo, hi, q.input_bits, false))
            .collect();
    let n = q.input_bits;
    let mut best: Option<(f64, usize, TreeLowering)> = None;
    let mut last_err = None;
    // Splits near the middle keep both digits' tables narrow; pairing
    // sibling leaves saves bootstraps but its table input sums 2k + 1
    // noisy terms at depth k, so it is tried up to each depth.
    let splits = (n / 2).saturating_sub(1).max(1)..=(n / 2 + 1).min(n - 1);
    for low_bits in splits {
        for pair_max_k in [-1, 2, i64::MAX] {
            let low = lower_with(e, q, &quantizers, low_bits, pair_max_k);
            let analysis = low.program.analyze()?;
            let needs = Needs::of(&low.program, &analysis);
            match params::choose(&needs, p_fail) {
                Ok(p) => {
                    let cost = p.predicted.pbs_total_ms(needs.pbs_count);
                    let better = best.as_ref().is_none_or(|(c, count, _)| {
                        cost < *c - 1e-9 || (cost <= *c + 1e-9 && needs.pbs_count < *count)
                    });
                    if better {
                        best = Some((cost, needs.pbs_count, low));
                    }
                }
                Err(err) => last_err = Some(err),
            }
        }
    }
    match (best, last_err) {
        (Some((_, _, low)), _) => Ok(low),
        (None, Some(err)) => Err(err.into()),
        (None, None) => unreachable!("input_bits >= 2 gives at least one digit split"),
    }
}

/// Lowers with a given split of the features into digits (`low_bits` = 0:
/// one digit), pairing sibling leaves whose parent is at most `pair_max_k`
/// non-constant splits deep (−1: never).
pub fn lower_with(
    e: &EnsembleSpec,
    q: &QuantizationSpec,
    quantizers: &[Quantizer],
    low_bits: u8,
    pair_max_k: i64,
) -> TreeLowering {
    let n = q.input_bits;
    let (n_out, binary) = reduced_outputs(e);
    // Leaf values per output, after the binary reduction.
    let leaf_float = |tree: &crate::spec::TreeSpec, values: &[f64]| -> Vec<(usize, f64)> {
        match tree.output {
            Some(o) => vec![(o, values[0])],
            None if binary => vec![(0, values[1] - values[0])],
            None => values.iter().copied().enumerate().collect(),
        }
    };
    let max_abs = e
        .trees
        .iter()
        .flat_map(|t| {
            t.nodes.iter().filter_map(move |nd| match nd.kind() {
                Some(Node::Leaf(v)) => Some(leaf_float(t, v)),
                _ => None,
            })
        })
        .flatten()
        .fold(0.0f64, |m, (_, v)| m.max(v.abs()));
    let leaf_q = Quantizer::symmetric(max_abs, q.leaf_bits);
    let n_trees = e.trees.len() as f64;
    let out_scale = match e.aggregation {
        Aggregation::Mean => leaf_q.scale / n_trees,
        Aggregation::Sum => leaf_q.scale,
    };
    let base: Vec<f64> = if binary {
        vec![e.base_score[1] - e.base_score[0]]
    } else {
        e.base_score.clone()
    };

    let mut inputs: Vec<Interval> = if low_bits == 0 {
        quantizers
            .iter()
            .map(|qz| Interval::new(qz.q_min(), qz.q_max()))
            .collect()
    } else {
        let (hi, lo) = ((1i64 << (n - low_bits)) - 1, (1i64 << low_bits) - 1);
        quantizers
            .iter()
            .flat_map(|_| [Interval::new(0, hi), Interval::new(0, lo)])
            .collect()
    };
    let missing: Vec<usize> = e
        .missing_mask()
        .iter()
        .enumerate()
        .filter_map(|(j, &m)| m.then_some(j))
        .collect();
    let mut missing_bits = vec![None; quantizers.len()];
    for &j in &missing {
        missing_bits[j] = Some(inputs.len());
        inputs.push(Interval::new(0, 1));
    }
    let mut l = Lowerer {
        spec: e,
        quantizers,
        low_bits,
        pair_max_k,
        b: Builder {
            program: Program::new(inputs),
            linear: HashMap::new(),
            luts: HashMap::new(),
        },
        carries: HashMap::new(),
        missing_bits,
        comparisons: HashMap::new(),
        stats: TreeStats {
            low_bits,
            ..TreeStats::default()
        },
        outputs: base
            .iter()
            .map(|b| (Vec::new(), (b / out_scale).round_ties_even() as i64))
            .collect(),
        tree_values: Vec::new(),
    };
    for tree in &e.trees {
        let values = |i: usize| -> Vec<(usize, i64)> {
            match tree.nodes[i].kind() {
                Some(Node::Leaf(v)) => leaf_float(tree, v)
                    .into_iter()
                    .map(|(o, v)| (o, leaf_q.quantize(v)))
                    .collect(),
                _ => Vec::new(),
            }
        };
        l.tree(&tree.nodes, &values);
        let leaves = std::mem::take(&mut l.tree_values);
        l.b.program.add_exclusive(leaves);
    }
    l.stats.distinct_comparisons = l.comparisons.len();
    let outputs = std::mem::take(&mut l.outputs);
    for (mut terms, constant) in outputs {
        // Merge repeated values (a flag weighted into several outputs).
        terms.sort_unstable();
        terms.dedup_by(|a, b| {
            if a.0 == b.0 {
                b.1 += a.1;
                true
            } else {
                false
            }
        });
        let o = l.b.program.push(Op::Linear { terms, constant });
        l.b.program.outputs.push(o);
    }
    // Path bits weighted ±2 in leaf indices emit 0/±2 instead: less noise.
    l.b.program.fold_weights();
    TreeLowering {
        encoder: Encoder {
            standardize: None,
            quantizers: quantizers.to_vec(),
            low_bits: (low_bits > 0).then_some(low_bits),
            missing,
        },
        program: l.b.program,
        decoder: Decoder {
            scales: vec![out_scale; n_out],
            zero_points: vec![0; n_out],
            task: e.task,
            link: e.link,
        },
        stats: l.stats,
    }
}

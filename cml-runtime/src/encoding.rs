//! Where each value sits in the 64-bit torus.
//!
//! A value `v` with `b` bits of message space is encrypted as `v · 2^(64 − b)`.
//! Values joined by a linear op must share that scale (the op adds and
//! scales ciphertexts), so the values of a program fall into *clusters*
//! (connected through [`Op::Linear`]); each cluster gets the width of its
//! widest member, plus one padding bit when a member is read by a table
//! (the blind rotation is negacyclic: a table input must stay in the lower
//! half of the torus). A table lookup reads its input at the input's width
//! and writes its output at the output's — so a 4-bit table next to a
//! 17-bit accumulator bootstraps at 5 bits, not 18.
//!
//! ```
//! use cml_runtime::encoding::Encoding;
//! use cml_runtime::program::{Interval, Op, Program, Table};
//!
//! let mut p = Program::new(vec![Interval::new(0, 15), Interval::new(0, 1000)]);
//! let t = p.add_table(Table::from_fn("sq", 0..=15, |v| v * v));
//! let sq = p.push(Op::Lut { input: 0, table: t });
//! let acc = p.push(Op::Linear { terms: vec![(sq, 100), (1, 1)], constant: 0 });
//! p.outputs = vec![acc];
//! let e = Encoding::of(&p, &p.analyze().unwrap());
//! assert_eq!(e.bits[0], 5); // 4-bit table input + padding
//! assert_eq!(e.bits[acc], 15); // the accumulator's cluster: up to 23 500
//! assert_eq!(e.bits[sq], e.bits[acc]); // the table writes at its consumer's scale
//! ```
//!
//! A rounded value ([`Op::Round`]) sits at a `2^bits` coarser scale than its
//! input, so the input's cluster is `bits` wider than the output's.

use serde::{Deserialize, Serialize};

use crate::program::{Analysis, Op, Program, ValueId};

/// Message width (bits, padding included) of every value of a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encoding {
    /// Bits per value: the value is encrypted at `Δ = 2^(64 − bits)`.
    pub bits: Vec<u32>,
    /// Per value: whether all table lookups that read it share one bootstrap
    /// (many-LUT). Set when the value is read by several tables and widening
    /// its cluster by `⌈log2 k⌉` bits neither raises the program's widest
    /// table input nor leaves any value of the cluster that must decode
    /// noisier than one already at the new width: the parameters stay and
    /// `k − 1` bootstraps are saved.
    pub fused: Vec<bool>,
}

/// Variances (relative) of a fresh input, a bootstrap output, and the
/// keyswitch plus modulus switch of a lookup, under the reference set many-LUT
/// fusion is judged with: n = 844, k = 2, N = 1024, PBS 2^23 × 1, KS 2^3 × 5.
fn reference_variances() -> (f64, f64, f64) {
    use crate::noise;
    let (n, k, big_n) = (844, 2, 1024);
    (
        noise::min_lwe_variance(k * big_n),
        noise::pbs_variance(n, k, big_n, 23, 1),
        noise::keyswitch_variance(k * big_n, n, 3, 5) + noise::modulus_switch_variance(n, 11),
    )
}

fn find(parent: &mut [usize], mut v: usize) -> usize {
    while parent[v] != v {
        parent[v] = parent[parent[v]];
        v = parent[v];
    }
    v
}

impl Encoding {
    /// Assigns widths: one per cluster of linearly connected values.
    pub fn of(program: &Program, analysis: &Analysis) -> Self {
        let n = program.n_values();
        let mut parent: Vec<usize> = (0..n).collect();
        for (i, op) in program.ops.iter().enumerate() {
            if let Op::Linear { terms, .. } = op {
                let id = program.inputs.len() + i;
                for &(v, _) in terms {
                    let (a, b) = (find(&mut parent, id), find(&mut parent, v));
                    parent[a] = b;
                }
            }
        }
        let mut width = vec![1u32; n];
        let mut padded = vec![false; n];
        for v in 0..n {
            let root = find(&mut parent, v);
            width[root] = width[root].max(analysis.values[v].range.bits());
        }
        for (input, _) in program.lut_inputs() {
            let root = find(&mut parent, input);
            padded[root] = true;
        }
        let mut cluster_bits: Vec<u32> = (0..n)
            .map(|v| {
                let root = find(&mut parent, v);
                width[root] + u32::from(padded[root])
            })
            .collect();
        // A rounded value sits at a 2^bits coarser scale than its input:
        // widen whichever side is short until `in = out + bits` everywhere.
        let rounds: Vec<(usize, u32, usize)> = program
            .rounds()
            .map(|(i, r, o)| (find(&mut parent, i), r, find(&mut parent, o)))
            .collect();
        for _ in 0..=n {
            let mut changed = false;
            for &(i, r, o) in &rounds {
                if cluster_bits[i] < cluster_bits[o] + r {
                    cluster_bits[i] = (cluster_bits[o] + r).min(64);
                    changed = true;
                } else if cluster_bits[o] + r < cluster_bits[i] {
                    cluster_bits[o] = cluster_bits[i] - r;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // Many-LUT: k tables reading one value fit one bootstrap if the value
        // leaves k sub-tables of room, i.e. its cluster is ⌈log2 k⌉ bits wider.
        let mut readers = vec![0usize; n];
        for (input, _) in program.lut_inputs() {
            readers[input] += 1;
        }
        let widest_table = program
            .lut_inputs()
            .map(|(v, _)| cluster_bits[find(&mut parent, v)])
            .max()
            .unwrap_or(0);
        let round_clusters: Vec<usize> = rounds.iter().flat_map(|&(i, _, o)| [i, o]).collect();
        // A wider cluster also leaves its table inputs and outputs less room
        // for noise (a quarter of the variance per bit): fuse only where each
        // of them, at the new width, is no tighter than a value of its kind
        // already is (or than the reference set meets at 2^-40), so that the
        // program needs no costlier parameters and only its bootstrap count
        // falls. Tightness is variance over budget (×4 per bit)
        // under a fixed reference set (the one most bundled trees get), the
        // same on every machine: client and server must agree on encodings.
        let mut is_output = vec![false; n];
        for &o in &program.outputs {
            is_output[o] = true;
        }
        let (var_fresh, var_pbs, var_lookup) = reference_variances();
        let tightness = |v: usize, bits: u32, table: bool| {
            let w = analysis.values[v].noise;
            let constant = if table { var_lookup } else { 0.0 };
            4f64.powi(bits as i32) * (w.fresh * var_fresh + w.bootstrapped * var_pbs + constant)
        };
        // The tightest table input and output before any fusion, or what the
        // reference set allows at 2^-40, if more.
        let z = crate::noise::z_for_log2_p_fail(-40.0);
        let mut tightest = [0.25 / (z * z); 2];
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
        for v in 0..n {
            let root = find(&mut parent, v);
            members[root].push(v);
            let bits = cluster_bits[root];
            if readers[v] > 0 {
                tightest[0] = tightest[0].max(tightness(v, bits, true));
            }
            if is_output[v] {
                tightest[1] = tightest[1].max(tightness(v, bits, false));
            }
        }
        let mut fused = vec![false; n];
        for v in 0..n {
            if readers[v] < 2 {
                continue;
            }
            let root = find(&mut parent, v);
            let extra = readers[v].next_power_of_two().trailing_zeros();
            let wider = cluster_bits[root] + extra;
            let quiet = members[root].iter().all(|&m| {
                (readers[m] == 0 || tightness(m, wider, true) <= tightest[0])
                    && (!is_output[m] || tightness(m, wider, false) <= tightest[1])
            });
            // Rounded clusters are pinned to each other's widths: leave them.
            if wider <= widest_table && quiet && !round_clusters.contains(&root) {
                cluster_bits[root] = wider;
                fused[v] = true;
            }
        }
        let bits = (0..n)
            .map(|v| cluster_bits[find(&mut parent, v)].min(64))
            .collect();
        Self { bits, fused }
    }

    /// `log2 Δ` of a value.
    pub fn log2_delta(&self, v: ValueId) -> u32 {
        64 - self.bits[v]
    }

    /// Widths of the program's inputs.
    pub fn inputs<'a>(&'a self, program: &Program) -> &'a [u32] {
        &self.bits[..program.inputs.len()]
    }

    /// Widths of the program's outputs.
    pub fn outputs(&self, program: &Program) -> Vec<u32> {
        program.outputs.iter().map(|&o| self.bits[o]).collect()
    }

    /// Bootstraps per evaluation: one per table lookup, except that the
    /// lookups of a fused value share one, plus one per bit rounded off.
    pub fn pbs_count(&self, program: &Program) -> usize {
        let mut seen = vec![false; self.fused.len()];
        let mut count = 0;
        for op in &program.ops {
            match op {
                Op::Lut { input, .. } if self.fused[*input] => {
                    if !seen[*input] {
                        seen[*input] = true;
                        count += 1;
                    }
                }
                Op::Lut { .. } => count += 1,
                Op::Round {
                    bits, exact: true, ..
                } => count += *bits as usize,
                Op::Round { exact: false, .. } => {}
                Op::Linear { .. } => {}
            }
        }
        count
    }

    /// The widest value.
    pub fn max_bits(&self) -> u32 {
        self.bits.iter().copied().max().unwrap_or(1)
    }
}

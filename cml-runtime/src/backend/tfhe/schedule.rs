//! Running a program as a dependency graph.
//!
//! Every bootstrap (a table lookup, a fused group of lookups on one value,
//! an exact rounding) is a task that starts on the rayon pool as soon as its
//! input is computed; leveled operations (linear combinations, approximate
//! rounding) run inline on the thread that completes their last input. There
//! is no barrier between bootstrap depths: a deep tree's next comparison
//! starts while other trees' first ones still run, and several samples run
//! side by side share the same pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::pbs::PbsContext;
use super::EvaluationKeys;
use crate::encoding::Encoding;
use crate::program::{Analysis, Op, Program, Table};

/// What one encrypted run did: how many bootstraps and how long the threads
/// spent in them, against the wall time.
///
/// ```
/// use std::time::Duration;
/// use cml_runtime::backend::tfhe::RunStats;
///
/// let stats = RunStats {
///     bootstraps: 20,
///     busy: Duration::from_millis(900),
///     wall: Duration::from_millis(500),
/// };
/// // 0.9 s of bootstrapping in 0.5 s on 2 threads: 90 % of both busy.
/// assert!((stats.utilisation(2) - 0.9).abs() < 1e-9);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Bootstraps run (an exact rounding of `b` bits counts `b`).
    pub bootstraps: u64,
    /// Time spent in bootstraps, summed over all threads.
    pub busy: Duration,
    /// Wall time of the run.
    pub wall: Duration,
}

impl RunStats {
    /// The share of `threads` threads' time spent in bootstraps during the
    /// run (0 for an empty run).
    pub fn utilisation(&self, threads: usize) -> f64 {
        let available = self.wall.as_secs_f64() * threads.max(1) as f64;
        if available > 0.0 {
            self.busy.as_secs_f64() / available
        } else {
            0.0
        }
    }
}

/// A unit of work of the graph.
enum Node {
    /// A leveled operation: the op of value `out`.
    Leveled { out: usize },
    /// A single table lookup.
    Lut {
        out: usize,
        input: usize,
        table: usize,
    },
    /// Several tables on one fused value: one bootstrap.
    Many {
        input: usize,
        outs: Vec<(usize, usize)>,
    },
    /// Exact rounding: one bootstrap per bit, in sequence.
    Round { out: usize, input: usize, bits: u32 },
}

impl Node {
    fn is_bootstrap(&self) -> bool {
        !matches!(self, Node::Leveled { .. })
    }
}

/// One run of a program: its nodes, who reads each value, and the values
/// computed so far.
pub(super) struct Graph<'a> {
    keys: &'a EvaluationKeys,
    program: &'a Program,
    analysis: &'a Analysis,
    encoding: &'a Encoding,
    nodes: Vec<Node>,
    /// The nodes that read each value (each node once).
    readers: Vec<Vec<usize>>,
    /// Inputs each node still waits for.
    waiting: Vec<AtomicUsize>,
    values: Vec<OnceLock<Vec<u64>>>,
    /// Scratch spaces, one per thread that has bootstrapped so far.
    contexts: Mutex<Vec<PbsContext<'a>>>,
    /// Per value: a lookup output computed on the light bootstrap key.
    light: Vec<bool>,
    bootstraps: AtomicU64,
    busy_nanos: AtomicU64,
}

impl<'a> Graph<'a> {
    /// The graph of `program` (already checked against `keys`); `light`
    /// marks the lookups on the light bootstrap key
    /// ([`crate::params::light_lookups`]).
    pub(super) fn new(
        keys: &'a EvaluationKeys,
        program: &'a Program,
        analysis: &'a Analysis,
        encoding: &'a Encoding,
        light: Vec<bool>,
    ) -> Self {
        let n_inputs = program.inputs.len();
        let mut nodes = Vec::new();
        // The fused group reading each value, by node index.
        let mut group: Vec<Option<usize>> = vec![None; program.n_values()];
        for (i, op) in program.ops.iter().enumerate() {
            let out = n_inputs + i;
            match op {
                Op::Linear { .. } | Op::Round { exact: false, .. } => {
                    nodes.push(Node::Leveled { out })
                }
                Op::Round {
                    input,
                    bits,
                    exact: true,
                } => nodes.push(Node::Round {
                    out,
                    input: *input,
                    bits: *bits,
                }),
                Op::Lut { input, table } if encoding.fused[*input] => match group[*input] {
                    Some(g) => match &mut nodes[g] {
                        Node::Many { outs, .. } => outs.push((out, *table)),
                        _ => unreachable!("groups index Many nodes"),
                    },
                    None => {
                        group[*input] = Some(nodes.len());
                        nodes.push(Node::Many {
                            input: *input,
                            outs: vec![(out, *table)],
                        });
                    }
                },
                Op::Lut { input, table } => nodes.push(Node::Lut {
                    out,
                    input: *input,
                    table: *table,
                }),
            }
        }
        let mut readers = vec![Vec::new(); program.n_values()];
        let waiting = nodes
            .iter()
            .enumerate()
            .map(|(id, node)| {
                let mut inputs: Vec<usize> = match node {
                    Node::Leveled { out } => match &program.ops[out - n_inputs] {
                        Op::Linear { terms, .. } => terms.iter().map(|&(v, _)| v).collect(),
                        Op::Round { input, .. } | Op::Lut { input, .. } => vec![*input],
                    },
                    Node::Lut { input, .. }
                    | Node::Many { input, .. }
                    | Node::Round { input, .. } => {
                        vec![*input]
                    }
                };
                inputs.sort_unstable();
                inputs.dedup();
                for &v in &inputs {
                    readers[v].push(id);
                }
                AtomicUsize::new(inputs.len())
            })
            .collect();
        Self {
            keys,
            program,
            analysis,
            encoding,
            nodes,
            readers,
            waiting,
            values: (0..program.n_values()).map(|_| OnceLock::new()).collect(),
            contexts: Mutex::new(Vec::new()),
            light,
            bootstraps: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
        }
    }

    /// Runs the graph on the input ciphertexts; returns every value and what
    /// the run did.
    pub(super) fn run(self, inputs: Vec<Vec<u64>>) -> (Vec<Vec<u64>>, RunStats) {
        let start = Instant::now();
        rayon::scope(|scope| {
            // Nodes that read no value (a constant) are ready now.
            let ready: Vec<usize> = (0..self.nodes.len())
                .filter(|&n| self.waiting[n].load(Ordering::Relaxed) == 0)
                .collect();
            for n in ready {
                self.fire(scope, n);
            }
            for (v, ct) in inputs.into_iter().enumerate() {
                self.complete(scope, v, ct);
            }
        });
        let wall = start.elapsed();
        let stats = RunStats {
            bootstraps: self.bootstraps.into_inner(),
            busy: Duration::from_nanos(self.busy_nanos.into_inner()),
            wall,
        };
        let values = self
            .values
            .into_iter()
            .map(|v| v.into_inner().expect("every value is computed"))
            .collect();
        (values, stats)
    }

    /// Stores value `v` and starts what it made ready; leveled work that
    /// follows runs here, bootstraps go to the pool.
    fn complete<'s>(&'s self, scope: &rayon::Scope<'s>, v: usize, ct: Vec<u64>) {
        let mut done = vec![(v, ct)];
        while let Some((v, ct)) = done.pop() {
            if self.values[v].set(ct).is_err() {
                unreachable!("value {v} is computed once");
            }
            for &n in &self.readers[v] {
                if self.waiting[n].fetch_sub(1, Ordering::AcqRel) == 1 {
                    match self.nodes[n] {
                        Node::Leveled { out } => done.push((out, self.leveled(out))),
                        _ => self.fire(scope, n),
                    }
                }
            }
        }
    }

    /// Starts node `n`, whose inputs are all computed.
    fn fire<'s>(&'s self, scope: &rayon::Scope<'s>, n: usize) {
        if self.nodes[n].is_bootstrap() {
            scope.spawn(move |scope| {
                for (v, ct) in self.bootstrap(&self.nodes[n]) {
                    self.complete(scope, v, ct);
                }
            });
        } else if let Node::Leveled { out } = self.nodes[n] {
            let ct = self.leveled(out);
            self.complete(scope, out, ct);
        }
    }

    fn value(&self, v: usize) -> &[u64] {
        self.values[v].get().expect("inputs are computed first")
    }

    /// The leveled op of value `out`.
    fn leveled(&self, out: usize) -> Vec<u64> {
        match &self.program.ops[out - self.program.inputs.len()] {
            Op::Linear { terms, constant } => {
                let size = self.keys.params.input_lwe_dimension + 1;
                let mut acc = vec![0u64; size];
                for &(v, w) in terms {
                    let w = w as u64;
                    for (a, x) in acc.iter_mut().zip(self.value(v)) {
                        *a = a.wrapping_add(w.wrapping_mul(*x));
                    }
                }
                acc[size - 1] = acc[size - 1]
                    .wrapping_add((*constant as u64).wrapping_shl(self.encoding.log2_delta(out)));
                acc
            }
            // Approximate: the same ciphertext read at a 2^bits coarser
            // scale is v/2^bits, which the next bootstrap's centred boxes
            // round half up (up to noise near the boundaries).
            Op::Round { input, .. } => self.value(*input).to_vec(),
            Op::Lut { .. } => unreachable!("a lookup is a bootstrap"),
        }
    }

    /// Runs bootstrap node `node`; returns the values it computes.
    fn bootstrap(&self, node: &Node) -> Vec<(usize, Vec<u64>)> {
        let mut ctx = self
            .contexts
            .lock()
            .expect("no thread panics holding the pool")
            .pop()
            .unwrap_or_else(|| PbsContext::new(self.keys));
        let start = Instant::now();
        let (out, count) = match *node {
            Node::Lut { out, input, table } => {
                let io = (self.encoding.bits[input], self.encoding.log2_delta(out));
                let range = self.analysis.values[input].range;
                let table: &Table = &self.program.tables[table];
                let ct = ctx.lookup(self.value(input), range, io, table, self.light[out]);
                (vec![(out, ct)], 1)
            }
            Node::Many { input, ref outs } => {
                let tables: Vec<(u32, &Table)> = outs
                    .iter()
                    .map(|&(out, t)| (self.encoding.log2_delta(out), &self.program.tables[t]))
                    .collect();
                let range = self.analysis.values[input].range;
                // A fused group's lookups are one bootstrap: light together.
                let light = outs.iter().all(|&(out, _)| self.light[out]);
                let bits = self.encoding.bits[input];
                let cts = ctx.lookup_many(self.value(input), range, bits, &tables, light);
                (outs.iter().map(|&(out, _)| out).zip(cts).collect(), 1)
            }
            Node::Round { out, input, bits } => {
                let out_lo = self.analysis.values[out].range.lo;
                let in_bits = self.encoding.bits[input];
                let ct = ctx.round(self.value(input), in_bits, bits, out_lo);
                (vec![(out, ct)], u64::from(bits))
            }
            Node::Leveled { .. } => unreachable!("not a bootstrap"),
        };
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.bootstraps.fetch_add(count, Ordering::Relaxed);
        self.contexts
            .lock()
            .expect("no thread panics holding the pool")
            .push(ctx);
        out
    }
}

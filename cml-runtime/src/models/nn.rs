//! Neural networks lowered to leveled layers and one table per activated
//! neuron, post-training quantized from calibration data.
//!
//! **Values.** Every element of every tensor is either a clear constant or
//! an encrypted integer `v` standing for the real `scale · v + bias`. The
//! client quantizes the input per feature (Concrete ML's asymmetric
//! quantizer over the calibration range, `input_bits`).
//!
//! **Linear layers** (`dense`, `conv2d`) quantize their *effective* weights
//! `e_j = w_j · scale_j` (each input's scale folded in) with one symmetric
//! `weight_bits` quantizer per output neuron (so per output channel for a
//! convolution: per-channel weight scales), and compute the leveled
//! accumulator `Σ_j W_j v_j`; biases and the inputs' offsets stay in the
//! clear real `bias`. Average pooling and `binary` add/sub are *exact*
//! leveled sums: their integer weights are the ratios of the inputs' scales
//! (1 when they share one), at a scale fine enough that no ratio is off by
//! more than 2^-8.
//!
//! **Activations** fuse "requantize → activation chain → quantize for the
//! next layer" into one table per neuron. The accumulator is first rounded
//! ([`Op::Round`]) to its top `rounding_bits` bits — the accumulators of one
//! layer share a ciphertext width, so the bits removed are counted from the
//! widest of them — and the table maps each rounded value `u` to
//! `Q(f(scale · 2^r · u + bias))`, with `Q` the activation's output quantizer:
//! asymmetric, unsigned, `activation_bits`, one per channel, over the range
//! the float activation takes on the calibration data. A chain of only
//! affine functions (`add`, `mul`, …) costs nothing: it changes `scale` and
//! `bias`.
//!
//! **Max pooling** is `max(a, b) = a + relu(b − a)`, one table per pair on
//! values that share a scale (requantized through a table first when they do
//! not), and one table at the end that moves the result out of the window's
//! ciphertext width.
//!
//! **Outputs** are the last layer's accumulators, decrypted by the client,
//! which applies `link` (softmax, argmax) in clear.

use std::collections::HashMap;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::{Decoder, Encoder};
use crate::error::{DataError, Error, SpecError, SpecProblem};
use crate::program::{round_shift, Interval, Op, Program, Table, ValueId, MAX_TABLE_BITS};
use crate::quant::Quantizer;
use crate::spec::network::{
    self, channel_of, compose_affine, conv_taps, n_channels, numel, transpose_map,
    window_positions, ElementwiseSpec, LayerOp,
};
use crate::spec::{BinaryOp, FieldPath, Granularity, NetworkSpec, QuantizationSpec, RoundingMode};

/// Largest integer weight of a leveled sum.
const MAX_WEIGHT: f64 = (1u64 << 40) as f64;

/// Largest table input of clear-only evaluation (`--rounding auto`'s
/// unrounded reference).
const MAX_CLEAR_TABLE_BITS: u32 = 20;

/// Largest number of table entries of one program.
const MAX_TABLE_ENTRIES: u64 = 1 << 28;

/// Relative error allowed on the integer ratio of two scales in an exact sum.
const RATIO_TOLERANCE: f64 = 1.0 / 256.0;

/// One element of a tensor during lowering.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Elem {
    /// A clear constant.
    Const(f64),
    /// An encrypted integer `v` standing for `scale · v + bias`.
    Var { id: ValueId, scale: f64, bias: f64 },
}

/// What one layer became, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Layer name.
    pub name: String,
    /// Its op keyword.
    pub op: String,
    /// Bootstraps per evaluation (tables and exact-rounding extractions).
    pub pbs: usize,
    /// Widest table input, in bits (0 without tables).
    pub table_bits: u32,
    /// Widest accumulator it reads, in bits (0 when it reads no accumulator).
    pub accumulator_bits: u32,
    /// Low bits removed before its tables (0: no rounding).
    pub rounded_bits: u32,
}

/// The integer form of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkLowering {
    /// Input side: quantizers.
    pub encoder: Encoder,
    /// The program.
    pub program: Program,
    /// Output side.
    pub decoder: Decoder,
    /// One entry per layer.
    pub layers: Vec<LayerStats>,
}

/// Per-layer settings resolved from the spec's defaults and overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerBits {
    /// Weight bits (linear layers).
    pub weight: u8,
    /// Activation output bits.
    pub activation: u8,
    /// Accumulator bits kept before a table (`None`: no rounding).
    pub rounding: Option<u8>,
}

/// Options beyond the spec.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// Per-layer rounding bits that override the spec (index: layer), as
    /// `--rounding auto` chooses them.
    pub rounding: Option<Vec<Option<u8>>>,
    /// Build tables wider than the TFHE runner takes (clear evaluation only,
    /// to measure the unrounded model).
    pub allow_wide_tables: bool,
}

/// The resolved bits of every layer.
pub fn layer_bits(net: &NetworkSpec, q: &QuantizationSpec) -> Vec<LayerBits> {
    net.layers
        .iter()
        .map(|l| LayerBits {
            weight: l.weight_bits.unwrap_or(q.weight_bits),
            activation: l
                .activation_bits
                .or(q.activation_bits)
                .unwrap_or(q.input_bits),
            rounding: l.rounding_bits.or(q.rounding_bits),
        })
        .collect()
}

/// Builds the program, tracking ranges and ciphertext-width clusters as
/// [`Encoding`](crate::encoding::Encoding) will form them.
struct Builder {
    program: Program,
    ranges: Vec<Interval>,
    parent: Vec<usize>,
    cluster_bits: Vec<u32>,
    /// Table entries so far.
    entries: u64,
}

impl Builder {
    fn new(inputs: Vec<Interval>) -> Self {
        let n = inputs.len();
        Self {
            cluster_bits: inputs.iter().map(Interval::bits).collect(),
            ranges: inputs.clone(),
            parent: (0..n).collect(),
            entries: 0,
            program: Program::new(inputs),
        }
    }

    fn find(&mut self, mut v: usize) -> usize {
        while self.parent[v] != v {
            self.parent[v] = self.parent[self.parent[v]];
            v = self.parent[v];
        }
        v
    }

    fn push(&mut self, op: Op, range: Interval) -> ValueId {
        let id = self.program.push(op);
        self.ranges.push(range);
        self.parent.push(id);
        self.cluster_bits.push(range.bits());
        id
    }

    fn linear(&mut self, terms: Vec<(ValueId, i64)>, constant: i64) -> Result<ValueId, Error> {
        let (mut lo, mut hi) = (constant as i128, constant as i128);
        for &(v, w) in &terms {
            let r = self.ranges[v];
            let (a, b) = (w as i128 * r.lo as i128, w as i128 * r.hi as i128);
            lo += a.min(b);
            hi += a.max(b);
        }
        let limit = 1i128 << 52;
        if lo < -limit || hi > limit {
            return Err(DataError::Empty(format!(
                "an accumulator spans [{lo}, {hi}], more than 53 bits: use fewer weight or activation bits"
            ))
            .into());
        }
        let id = self.push(
            Op::Linear {
                terms: terms.clone(),
                constant,
            },
            Interval::new(lo as i64, hi as i64),
        );
        for (v, _) in terms {
            let (a, b) = (self.find(id), self.find(v));
            if a != b {
                self.parent[a] = b;
                self.cluster_bits[b] = self.cluster_bits[b].max(self.cluster_bits[a]);
            }
        }
        Ok(id)
    }

    fn round(&mut self, input: ValueId, bits: u32, exact: bool) -> ValueId {
        let r = self.ranges[input];
        let range = Interval::new(round_shift(r.lo, bits), round_shift(r.hi, bits));
        self.push(Op::Round { input, bits, exact }, range)
    }

    fn lut(
        &mut self,
        name: String,
        input: ValueId,
        max_bits: u32,
        f: impl Fn(i64) -> i64,
    ) -> Result<ValueId, Error> {
        let r = self.ranges[input];
        if r.bits() > max_bits {
            return Err(DataError::Empty(format!(
                "table `{name}` would read a {}-bit value, more than the {max_bits} bits accepted",
                r.bits()
            ))
            .into());
        }
        self.entries += r.span() as u64;
        if self.entries > MAX_TABLE_ENTRIES {
            return Err(DataError::Empty(format!(
                "the program's tables would hold more than {MAX_TABLE_ENTRIES} entries"
            ))
            .into());
        }
        let table = Table::from_fn(name, r.lo..=r.hi, f);
        let out = table.output_range();
        let t = self.program.add_table(table);
        Ok(self.push(Op::Lut { input, table: t }, out))
    }

    fn cluster_width(&mut self, v: ValueId) -> u32 {
        let root = self.find(v);
        self.cluster_bits[root]
    }
}

/// Per-channel calibration ranges of each layer's float output.
struct Calibration {
    /// Per layer, per channel: `(min, max)`.
    ranges: Vec<Vec<(f64, f64)>>,
}

fn calibrate(
    net: &NetworkSpec,
    shapes: &[Vec<usize>],
    data: ArrayView2<'_, f64>,
    per_tensor: bool,
) -> Result<Calibration, Error> {
    let mut ranges: Vec<Vec<Option<(f64, f64)>>> = shapes
        .iter()
        .map(|s| vec![None; n_channels(s, per_tensor)])
        .collect();
    for row in data.rows() {
        let x = row.to_vec();
        for (l, out) in net.float_layers_shaped(&x, shapes).iter().enumerate() {
            for (i, &v) in out.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let c = channel_of(&shapes[l], i, per_tensor);
                let r = &mut ranges[l][c];
                *r = Some(match *r {
                    None => (v, v),
                    Some((lo, hi)) => (lo.min(v), hi.max(v)),
                });
            }
        }
    }
    Ok(Calibration {
        ranges: ranges
            .into_iter()
            .map(|l| l.into_iter().map(|r| r.unwrap_or((0.0, 0.0))).collect())
            .collect(),
    })
}

/// The ranges the spec records, when every activated layer has them.
fn recorded_ranges(net: &NetworkSpec) -> Option<Vec<Vec<(f64, f64)>>> {
    net.layers
        .iter()
        .map(|l| match (&l.ranges, l.op()) {
            (Some(r), _) => Some(r.iter().map(|[lo, hi]| (*lo, *hi)).collect()),
            (None, Some(LayerOp::Activation(_) | LayerOp::MaxPool2d(_))) => None,
            (None, _) => Some(Vec::new()),
        })
        .collect()
}

/// Calibrates a network on data: the input ranges (per feature or per
/// tensor) and each activated layer's output ranges, written into the spec
/// so that it compiles without data (as `cml import-onnx` does).
pub fn record_calibration(
    net: &mut NetworkSpec,
    q: &mut QuantizationSpec,
    data: ArrayView2<'_, f64>,
) -> Result<(), Error> {
    let shapes = net.shapes().map_err(|(i, m)| layer_error(net, i, m))?;
    if data.ncols() != net.features.len() || data.nrows() == 0 {
        return Err(DataError::Shape {
            expected: net.features.len(),
            found: data.ncols(),
        }
        .into());
    }
    let per_tensor = q.input_granularity == Granularity::Tensor;
    let input = super::linear::input_ranges(
        &QuantizationSpec {
            input_ranges: None,
            ..q.clone()
        },
        net.features.len(),
        Some(data),
        |_, x| x,
    )?;
    let calibration = calibrate(net, &shapes, data, per_tensor)?;
    for (layer, ranges) in net.layers.iter_mut().zip(calibration.ranges) {
        let activated = matches!(
            layer.op(),
            Some(LayerOp::Activation(_) | LayerOp::MaxPool2d(_))
        );
        layer.ranges = activated.then(|| ranges.into_iter().map(|(lo, hi)| [lo, hi]).collect());
    }
    q.input_ranges = Some(input.into_iter().map(|(lo, hi)| [lo, hi]).collect());
    Ok(())
}

struct Lowerer<'a> {
    net: &'a NetworkSpec,
    shapes: Vec<Vec<usize>>,
    bits: Vec<LayerBits>,
    calibration: Calibration,
    per_tensor: bool,
    exact_rounding: bool,
    allow_wide: bool,
    b: Builder,
    stats: Vec<LayerStats>,
}

fn layer_error(net: &NetworkSpec, layer: usize, message: String) -> Error {
    Error::Spec(SpecError::Invalid {
        file: format!("network layer `{}`", net.layers[layer].name).into(),
        location: None,
        path: FieldPath::root()
            .key("model")
            .key("network")
            .key("layers")
            .index(layer),
        problem: SpecProblem::Layer(message),
    })
}

impl Lowerer<'_> {
    /// Splits `Σ terms + bias` into its encrypted part (value, effective
    /// real weight) and its clear constant.
    fn gather(terms: &[(Elem, f64)], bias: f64) -> (Vec<(ValueId, f64)>, f64) {
        let mut constant = bias;
        let mut vars: Vec<(ValueId, f64)> = Vec::with_capacity(terms.len());
        for &(e, w) in terms {
            match e {
                Elem::Const(c) => constant += w * c,
                Elem::Var { id, scale, bias } => {
                    constant += w * bias;
                    if w != 0.0 && scale != 0.0 {
                        vars.push((id, w * scale));
                    }
                }
            }
        }
        (vars, constant)
    }

    /// `constant + Σ e·v` with integer weights `round(e / step)`.
    fn emit(&mut self, vars: &[(ValueId, f64)], constant: f64, step: f64) -> Result<Elem, Error> {
        let mut merged: HashMap<ValueId, f64> = HashMap::new();
        for &(id, e) in vars {
            *merged.entry(id).or_insert(0.0) += (e / step).round_ties_even();
        }
        if !step.is_finite() || merged.values().any(|w| w.is_nan() || w.abs() > MAX_WEIGHT) {
            return Err(DataError::Empty(format!(
                "an integer weight would exceed 2^40 (step {step:e}): the layer's weights span too \
                 many orders of magnitude"
            ))
            .into());
        }
        let merged: HashMap<ValueId, i64> =
            merged.into_iter().map(|(k, w)| (k, w as i64)).collect();
        let mut int_terms: Vec<(ValueId, i64)> =
            merged.into_iter().filter(|(_, w)| *w != 0).collect();
        int_terms.sort_unstable();
        if int_terms.is_empty() {
            return Ok(Elem::Const(constant));
        }
        // A single unit term is the value itself: no op needed.
        let id = match int_terms.as_slice() {
            [(id, 1)] => *id,
            _ => self.b.linear(int_terms, 0)?,
        };
        Ok(Elem::Var {
            id,
            scale: step,
            bias: constant,
        })
    }

    /// An exact leveled sum (average pooling, residual add/sub).
    fn exact_sum(&mut self, terms: &[(Elem, f64)], bias: f64) -> Result<Elem, Error> {
        let (vars, constant) = Self::gather(terms, bias);
        if vars.is_empty() {
            return Ok(Elem::Const(constant));
        }
        let step = exact_step(&vars);
        self.emit(&vars, constant, step)
    }

    /// A linear layer: one `Σ w·x + b` per neuron, effective weights
    /// quantized to `bits` per neuron, then refined so that every neuron's
    /// proven accumulator span fills the widest one's (they share a
    /// ciphertext width, and the same bits are rounded off before their
    /// tables): `bits` is the precision of the widest neuron, the others get
    /// finer weights at no cost.
    fn weighted(
        &mut self,
        neurons: Vec<(Vec<(Elem, f64)>, f64)>,
        bits: u8,
    ) -> Result<Vec<Elem>, Error> {
        let q_max = ((1i64 << (bits - 1)) - 1) as f64;
        let gathered: Vec<(Vec<(ValueId, f64)>, f64)> = neurons
            .iter()
            .map(|(terms, bias)| Self::gather(terms, *bias))
            .collect();
        let span = |vars: &[(ValueId, f64)], step: f64, ranges: &[Interval]| -> f64 {
            vars.iter()
                .map(|&(id, e)| {
                    (e / step).round_ties_even().abs() * ranges[id].span().saturating_sub(1) as f64
                })
                .sum()
        };
        let steps: Vec<Option<f64>> = gathered
            .iter()
            .map(|(vars, _)| {
                let max_abs = vars.iter().fold(0.0f64, |m, (_, e)| m.max(e.abs()));
                (max_abs > 0.0).then(|| max_abs / q_max)
            })
            .collect();
        let spans: Vec<f64> = gathered
            .iter()
            .zip(&steps)
            .map(|((vars, _), step)| step.map_or(0.0, |s| span(vars, s, &self.b.ranges)))
            .collect();
        let widest = spans.iter().copied().fold(0.0, f64::max);
        let mut out = Vec::with_capacity(neurons.len());
        for (((vars, constant), step), sp) in gathered.iter().zip(&steps).zip(&spans) {
            let Some(step) = *step else {
                out.push(Elem::Const(*constant));
                continue;
            };
            // Finer by the ratio of spans, at most 2^12 (weights stay far
            // from overflowing and the refinement past that is moot).
            let refine = if *sp > 0.0 {
                (widest / sp).clamp(1.0, 4096.0)
            } else {
                1.0
            };
            out.push(self.emit(vars, *constant, step / refine)?);
        }
        Ok(out)
    }

    /// One table reading `e` (rounded first to the layer's bits), writing
    /// `quantizer(f(x))`.
    fn table(
        &mut self,
        layer: usize,
        e: Elem,
        f: &dyn Fn(f64) -> f64,
        q: &Quantizer,
    ) -> Result<Elem, Error> {
        let Elem::Var { id, scale, bias } = e else {
            let Elem::Const(c) = e else { unreachable!() };
            return Ok(Elem::Const(f(c)));
        };
        let acc = self.b.ranges[id];
        let acc_bits = acc.bits();
        let stats = &mut self.stats[layer];
        stats.accumulator_bits = stats.accumulator_bits.max(acc_bits);
        // Bits rounded off: counted from the layer's ciphertext width.
        let r = match self.bits[layer].rounding {
            Some(keep) if acc_bits > u32::from(keep) => {
                self.b.cluster_width(id).saturating_sub(u32::from(keep))
            }
            _ => 0,
        };
        let range = if r > 0 {
            Interval::new(round_shift(acc.lo, r), round_shift(acc.hi, r))
        } else {
            acc
        };
        let in_bits = range.bits();
        if in_bits > self.max_table_bits() {
            return Err(layer_error(
                self.net,
                layer,
                format!(
                    "a table would read a {in_bits}-bit accumulator, more than the {} \
                     bits a bootstrap takes: set quantization.rounding_bits (or this layer's \
                     rounding_bits) to at most {MAX_TABLE_BITS}, or use fewer weight/activation bits",
                    self.max_table_bits()
                ),
            ));
        }
        let scale = scale * (1u64 << r) as f64;
        let q = *q;
        let value = move |u: i64| q.quantize(f(scale * u as f64 + bias));
        // A table constant over its input's whole range (a neuron the
        // activation never lets through) is that constant: no bootstrap.
        let first = value(range.lo);
        if (range.lo..=range.hi).all(|u| value(u) == first) {
            return Ok(Elem::Const(q.dequantize(first)));
        }
        let input = if r > 0 {
            let stats = &mut self.stats[layer];
            stats.rounded_bits = stats.rounded_bits.max(r);
            if self.exact_rounding {
                stats.pbs += r as usize;
            }
            self.b.round(id, r, self.exact_rounding)
        } else {
            id
        };
        let stats = &mut self.stats[layer];
        stats.table_bits = stats.table_bits.max(in_bits);
        stats.pbs += 1;
        let name = format!("{}[{}]", self.net.layers[layer].name, input);
        let max_bits = self.max_table_bits();
        let out = self.b.lut(name, input, max_bits, value)?;
        Ok(Elem::Var {
            id: out,
            scale: q.scale,
            bias: -q.scale * q.zero_point as f64,
        })
    }

    /// The widest table input accepted: what a bootstrap takes, or more for
    /// clear-only evaluation.
    fn max_table_bits(&self) -> u32 {
        if self.allow_wide {
            MAX_CLEAR_TABLE_BITS
        } else {
            MAX_TABLE_BITS
        }
    }

    fn quantizer(&self, layer: usize, channel: usize) -> Quantizer {
        let (lo, hi) = self.calibration.ranges[layer][channel];
        Quantizer::asymmetric(lo, hi, self.bits[layer].activation, false)
    }

    fn lower_layer(
        &mut self,
        l: usize,
        ins: Vec<(Vec<Elem>, Vec<usize>)>,
    ) -> Result<Vec<Elem>, Error> {
        let net = self.net;
        let layer = &net.layers[l];
        let out_shape = self.shapes[l].clone();
        let (x, x_shape) = &ins[0];
        let op = layer
            .op()
            .ok_or_else(|| layer_error(net, l, "no single op".into()))?;
        Ok(match op {
            LayerOp::Dense(d) => {
                let neurons = d
                    .weights
                    .iter()
                    .zip(&d.bias)
                    .map(|(row, &bias)| {
                        (x.iter().copied().zip(row.iter().copied()).collect(), bias)
                    })
                    .collect();
                self.weighted(neurons, self.bits[l].weight)?
            }
            LayerOp::Conv2d(c) => {
                let neurons = conv_taps(x_shape, &out_shape, c)
                    .into_iter()
                    .map(|(o, taps)| {
                        let terms = taps.iter().map(|&(i, w)| (x[i], c.weights[w])).collect();
                        (terms, c.bias[o])
                    })
                    .collect();
                self.weighted(neurons, self.bits[l].weight)?
            }
            LayerOp::AvgPool2d(p) => {
                let full = (p.kernel[0] * p.kernel[1]) as f64;
                let mut out = Vec::new();
                for pos in window_positions(x_shape, &out_shape, p.kernel, p.strides, p.pads) {
                    let n = if p.count_include_pad {
                        full
                    } else {
                        pos.len() as f64
                    };
                    let terms: Vec<(Elem, f64)> = pos.iter().map(|&i| (x[i], 1.0 / n)).collect();
                    out.push(self.exact_sum(&terms, 0.0)?);
                }
                out
            }
            LayerOp::MaxPool2d(p) => self.max_pool(l, x, x_shape, &out_shape, p)?,
            LayerOp::Pad(p) => {
                let (c, h, w) = (x_shape[0], x_shape[1], x_shape[2]);
                let (oh, ow) = (out_shape[1], out_shape[2]);
                let mut y = vec![Elem::Const(0.0); c * oh * ow];
                for ch in 0..c {
                    for r in 0..h {
                        for col in 0..w {
                            y[(ch * oh + r + p[0]) * ow + col + p[1]] = x[(ch * h + r) * w + col];
                        }
                    }
                }
                y
            }
            LayerOp::Activation(chain) => self.activation(l, x, chain)?,
            LayerOp::Binary(op) => {
                let sign = match op {
                    BinaryOp::Add => 1.0,
                    BinaryOp::Sub => -1.0,
                };
                let y = &ins[1].0;
                let mut out = Vec::with_capacity(x.len());
                for (a, b) in x.iter().zip(y) {
                    out.push(self.exact_sum(&[(*a, 1.0), (*b, sign)], 0.0)?);
                }
                out
            }
            LayerOp::Reshape(_) => x.clone(),
            LayerOp::Transpose(perm) => transpose_map(x_shape, perm)
                .into_iter()
                .map(|i| x[i])
                .collect(),
        })
    }

    fn activation(
        &mut self,
        l: usize,
        x: &[Elem],
        chain: &[ElementwiseSpec],
    ) -> Result<Vec<Elem>, Error> {
        let shape = self.shapes[l].clone();
        let mut out = Vec::with_capacity(x.len());
        for (i, &e) in x.iter().enumerate() {
            if let Some((a, c)) = compose_affine(chain, i) {
                out.push(match e {
                    Elem::Const(v) => Elem::Const(a * v + c),
                    Elem::Var { .. } if a == 0.0 => Elem::Const(c),
                    Elem::Var { id, scale, bias } => Elem::Var {
                        id,
                        scale: a * scale,
                        bias: a * bias + c,
                    },
                });
                continue;
            }
            let q = self.quantizer(l, channel_of(&shape, i, self.per_tensor));
            let f = |v: f64| chain.iter().fold(v, |v, f| f.apply(i, v));
            out.push(self.table(l, e, &f, &q)?);
        }
        Ok(out)
    }

    fn max_pool(
        &mut self,
        l: usize,
        x: &[Elem],
        x_shape: &[usize],
        out_shape: &[usize],
        p: &network::PoolSpec,
    ) -> Result<Vec<Elem>, Error> {
        // Inputs of one channel must share a scale and bias, and be narrow:
        // requantize the channel through tables otherwise.
        let per_channel = numel(x_shape) / x_shape[0];
        let mut x = x.to_vec();
        let act_bits = u32::from(self.bits[l].activation);
        for ch in 0..x_shape[0] {
            let slice = &x[ch * per_channel..(ch + 1) * per_channel];
            let first = slice[0];
            let shared = slice.iter().all(|e| match (e, &first) {
                (
                    Elem::Var { scale, bias, id },
                    Elem::Var {
                        scale: s0,
                        bias: b0,
                        ..
                    },
                ) => {
                    *scale > 0.0
                        && scale == s0
                        && bias == b0
                        && self.b.ranges[*id].bits() <= act_bits + 1
                }
                _ => false,
            });
            if shared {
                continue;
            }
            // The max of requantized values is the requantized max (Q is
            // monotonic), so calibrate on this layer's own output range.
            let q = self.quantizer(l, if self.per_tensor { 0 } else { ch });
            for e in &mut x[ch * per_channel..(ch + 1) * per_channel] {
                *e = match self.table(l, *e, &|v| v, &q)? {
                    // A constant joins the max as a value of its own.
                    Elem::Const(c) => Elem::Var {
                        id: self.constant_value(l, c, &q)?,
                        scale: q.scale,
                        bias: -q.scale * q.zero_point as f64,
                    },
                    var => var,
                };
            }
        }
        let mut out = Vec::new();
        for pos in window_positions(x_shape, out_shape, p.kernel, p.strides, p.pads) {
            let vals: Vec<Elem> = pos.iter().map(|&i| x[i]).collect();
            let Elem::Var { scale, bias, .. } = vals[0] else {
                unreachable!("requantized above")
            };
            let ids: Vec<ValueId> = vals
                .iter()
                .map(|e| match e {
                    Elem::Var { id, .. } => *id,
                    Elem::Const(_) => unreachable!("requantized above"),
                })
                .collect();
            let (lo, hi) = ids.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &v| {
                (lo.min(self.b.ranges[v].lo), hi.max(self.b.ranges[v].hi))
            });
            // Pairwise tree: max(a, b) = a + relu(b − a).
            let mut level = ids;
            while level.len() > 1 {
                let mut next = Vec::with_capacity(level.len().div_ceil(2));
                for pair in level.chunks(2) {
                    if let [a, b] = *pair {
                        let d = self.b.linear(vec![(b, 1), (a, -1)], 0)?;
                        self.note_table(l, d);
                        let name = format!("{}.relu[{d}]", self.net.layers[l].name);
                        let t = self.b.lut(name, d, self.max_table_bits(), |v| v.max(0))?;
                        next.push(self.b.linear(vec![(a, 1), (t, 1)], 0)?);
                    } else {
                        next.push(pair[0]);
                    }
                }
                level = next;
            }
            // Out of the window's width, clamped to the inputs' true range.
            let m = level[0];
            self.note_table(l, m);
            let name = format!("{}.max[{m}]", self.net.layers[l].name);
            let id = self
                .b
                .lut(name, m, self.max_table_bits(), move |v| v.clamp(lo, hi))?;
            out.push(Elem::Var { id, scale, bias });
        }
        Ok(out)
    }

    fn note_table(&mut self, l: usize, input: ValueId) {
        let bits = self.b.ranges[input].bits();
        let s = &mut self.stats[l];
        s.pbs += 1;
        s.table_bits = s.table_bits.max(bits);
    }

    /// An encrypted value that always holds `q(c)`: a table on input 0
    /// whose every entry is that integer.
    fn constant_value(&mut self, l: usize, c: f64, q: &Quantizer) -> Result<ValueId, Error> {
        let v = q.quantize(c);
        self.note_table(l, 0);
        let name = format!("{}.const", self.net.layers[l].name);
        self.b.lut(name, 0, self.max_table_bits(), move |_| v)
    }
}

/// The smallest scale step at which every effective weight is an integer
/// to within [`RATIO_TOLERANCE`].
fn exact_step(vars: &[(ValueId, f64)]) -> f64 {
    let min_abs = vars
        .iter()
        .map(|(_, e)| e.abs())
        .filter(|e| *e > 0.0)
        .fold(f64::INFINITY, f64::min);
    let mut step = min_abs;
    for _ in 0..16 {
        let ok = vars.iter().all(|(_, e)| {
            let r = e / step;
            (r - r.round()).abs() <= RATIO_TOLERANCE * r.abs()
        });
        if ok {
            break;
        }
        step /= 2.0;
    }
    step
}

/// Lowers a checked network spec, calibrating on `calibration` (required:
/// activation ranges come from data).
pub fn lower(
    net: &NetworkSpec,
    q: &QuantizationSpec,
    calibration: Option<ArrayView2<'_, f64>>,
) -> Result<NetworkLowering, Error> {
    lower_with(net, q, calibration, &NetworkOptions::default())
}

/// [`lower`] with options.
pub fn lower_with(
    net: &NetworkSpec,
    q: &QuantizationSpec,
    calibration: Option<ArrayView2<'_, f64>>,
    options: &NetworkOptions,
) -> Result<NetworkLowering, Error> {
    let shapes = net.shapes().map_err(|(i, m)| layer_error(net, i, m))?;
    let n_features = net.features.len();
    let recorded = recorded_ranges(net);
    let data = match calibration {
        Some(d) if d.ncols() != n_features => {
            return Err(DataError::Shape {
                expected: n_features,
                found: d.ncols(),
            }
            .into())
        }
        Some(d) if d.nrows() > 0 => Some(d),
        _ if recorded.is_some() && q.input_ranges.is_some() => None,
        _ => {
            return Err(DataError::Empty(
                "the network spec records no calibration ranges and no calibration data (the \
                 train CSV) was given"
                    .into(),
            )
            .into())
        }
    };
    let per_tensor = q.input_granularity == Granularity::Tensor;
    let ranges = super::linear::input_ranges(q, n_features, data, |_, x| x)?;
    let quantizers: Vec<Quantizer> = (0..n_features)
        .map(|j| {
            let (lo, hi) = ranges[if per_tensor { 0 } else { j }];
            Quantizer::asymmetric(lo, hi, q.input_bits, false)
        })
        .collect();
    let mut bits = layer_bits(net, q);
    if let Some(r) = &options.rounding {
        for (b, r) in bits.iter_mut().zip(r) {
            b.rounding = *r;
        }
    }
    let calibration = match (recorded, data) {
        (Some(ranges), _) => Calibration { ranges },
        (None, Some(data)) => calibrate(net, &shapes, data, per_tensor)?,
        (None, None) => unreachable!("refused above"),
    };
    let inputs: Vec<Interval> = quantizers
        .iter()
        .map(|qz| Interval::new(qz.q_min(), qz.q_max()))
        .collect();
    let mut lw = Lowerer {
        net,
        shapes: shapes.clone(),
        bits,
        calibration,
        per_tensor,
        exact_rounding: q.rounding == RoundingMode::Exact,
        allow_wide: options.allow_wide_tables,
        b: Builder::new(inputs),
        stats: net
            .layers
            .iter()
            .map(|l| LayerStats {
                name: l.name.clone(),
                op: l.op_fields().first().copied().unwrap_or("").to_owned(),
                pbs: 0,
                table_bits: 0,
                accumulator_bits: 0,
                rounded_bits: 0,
            })
            .collect(),
    };
    let input: Vec<Elem> = quantizers
        .iter()
        .enumerate()
        .map(|(j, qz)| Elem::Var {
            id: j,
            scale: qz.scale,
            bias: -qz.scale * qz.zero_point as f64,
        })
        .collect();
    let mut outs: Vec<Vec<Elem>> = Vec::with_capacity(net.layers.len());
    for l in 0..net.layers.len() {
        let ins: Vec<(Vec<Elem>, Vec<usize>)> = net
            .layer_inputs(l)
            .into_iter()
            .map(|name| match net.resolve(l, name).ok().flatten() {
                None => (input.clone(), net.input_shape.clone()),
                Some(j) => (outs[j].clone(), shapes[j].clone()),
            })
            .collect();
        let y = lw.lower_layer(l, ins)?;
        outs.push(y);
    }
    let last = net.layers.len() - 1;
    let mut scales = Vec::new();
    let mut zero_points = Vec::new();
    for (k, e) in outs[last].iter().enumerate() {
        let Elem::Var { id, scale, bias } = *e else {
            return Err(layer_error(
                net,
                last,
                format!("output {k} is a constant: it does not depend on the input"),
            ));
        };
        let shift = (bias / scale).round_ties_even();
        if !shift.is_finite() || shift.abs() > (1u64 << 50) as f64 {
            return Err(layer_error(
                net,
                last,
                format!("output {k}'s bias {bias} is too large for its scale {scale:e}"),
            ));
        }
        let out = lw.b.linear(vec![(id, 1)], shift as i64)?;
        lw.b.program.outputs.push(out);
        scales.push(scale);
        zero_points.push(0);
    }
    let encoder = Encoder {
        standardize: None,
        quantizers,
        low_bits: None,
        missing: Vec::new(),
    };
    let decoder = Decoder {
        scales,
        zero_points,
        task: net.task,
        link: net.link,
    };
    Ok(NetworkLowering {
        encoder,
        program: lw.b.program,
        decoder,
        layers: lw.stats,
    })
}

/// Accuracy (classifiers) or R² (regressors) of the clear quantized program
/// on labelled rows.
pub fn clear_metric(
    lowering: &NetworkLowering,
    x: ArrayView2<'_, f64>,
    y: &[f64],
) -> Result<f64, Error> {
    use rayon::prelude::*;
    let rows: Vec<Vec<f64>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
    let preds: Vec<f64> = rows
        .par_iter()
        .map(|r| -> Result<f64, Error> {
            let q = lowering.encoder.encode(r)?;
            let out = lowering.program.eval_clear(&q)?;
            Ok(lowering
                .decoder
                .predict(lowering.decoder.scores(&out))
                .value())
        })
        .collect::<Result<_, _>>()?;
    Ok(match lowering.decoder.task {
        crate::spec::Task::Classification => crate::metrics::accuracy(&preds, y),
        crate::spec::Task::Regression => crate::metrics::r2(&preds, y),
    })
}

/// What `--rounding auto` chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundingChoice {
    /// Per layer: the accumulator bits kept (`None`: a layer without tables).
    pub bits: Vec<Option<u8>>,
    /// Metric of the quantized model without rounding (tables as wide as
    /// needed, evaluated in clear).
    pub unrounded: f64,
    /// Metric with the chosen rounding.
    pub chosen: f64,
    /// The budget: how far below `unrounded` the choice may go.
    pub budget: f64,
}

/// `--rounding auto`: the fewest accumulator bits kept before the tables
/// (from 2 up to 8) whose clear quantized metric on the calibration data
/// stays within `budget` of the unrounded quantized model, written for every
/// activated layer.
///
/// One bit count serves all layers: the program has one set of keys, so
/// every bootstrap costs what the widest table costs. A layer kept narrower
/// than the widest would save nothing (and in exact mode would cost one more
/// bootstrap per bit removed), so the per-layer choice is the global one.
pub fn choose_rounding(
    net: &NetworkSpec,
    q: &QuantizationSpec,
    data: ArrayView2<'_, f64>,
    y: &[f64],
    budget: f64,
) -> Result<RoundingChoice, Error> {
    let activated: Vec<bool> = net
        .layers
        .iter()
        .map(|l| matches!(l.op(), Some(LayerOp::Activation(_) | LayerOp::MaxPool2d(_))))
        .collect();
    let eval = |keep: Option<u8>, wide: bool| -> Result<f64, Error> {
        let bits: Vec<Option<u8>> = activated
            .iter()
            .map(|&a| if a { keep } else { None })
            .collect();
        let options = NetworkOptions {
            rounding: Some(bits),
            allow_wide_tables: wide,
        };
        let low = lower_with(net, q, Some(data), &options)?;
        clear_metric(&low, data, y)
    };
    let unrounded = eval(None, true)?;
    let mut chosen = None;
    for keep in 2..=8u8 {
        match eval(Some(keep), false) {
            Ok(m) if m >= unrounded - budget => {
                chosen = Some((keep, m));
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    let (keep, metric) = match chosen {
        Some(c) => c,
        None => (8, eval(Some(8), false)?),
    };
    let bits = activated.iter().map(|&a| a.then_some(keep)).collect();
    Ok(RoundingChoice {
        bits,
        unrounded,
        chosen: metric,
        budget,
    })
}

//! Neural networks: a small graph of layers over `(C, H, W)` or flat tensors.
//!
//! A network spec lists its layers in order. Each layer has a `name`, reads
//! the outputs of `inputs` (by default the previous layer; the network input
//! is called `input`) and holds exactly one op:
//!
//! - `dense` (fully connected; flattens its input), `conv2d` (groups 1,
//!   dilation 1), `avg_pool2d`, `max_pool2d`, `pad` (zeros),
//! - `activation`: a chain of element-wise functions applied in order (one
//!   table per neuron under FHE, whatever the chain's length),
//! - `binary: add | sub` of two tensors of one shape (residual connections),
//! - `reshape` and `transpose` (no cost: they only move values).
//!
//! Float semantics are those of PyTorch/ONNX in `f64`; the last layer's
//! output is the score vector, to which the client applies `link` after
//! decryption.

use serde::{Deserialize, Serialize};

use super::{Link, Task};

/// Largest number of elements of any tensor of a network.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 20;
/// Largest number of weights of one layer.
pub const MAX_LAYER_WEIGHTS: usize = 1 << 24;
/// Largest number of layers.
pub const MAX_LAYERS: usize = 4096;
/// Largest number of dimensions of a tensor (batch excluded).
pub const MAX_RANK: usize = 4;

/// Largest kernel side, stride or padding of a window op.
pub const MAX_WINDOW: usize = 1 << 16;
/// Largest work of one window layer: output elements × window size (× input
/// channels for a convolution).
pub const MAX_WINDOW_WORK: usize = 1 << 28;

/// The name of the network's input tensor in `inputs` lists.
pub const INPUT: &str = "input";

/// A neural network: layers over a typed input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Classification or regression.
    pub task: Task,
    /// Inverse link applied on the client to the last layer's outputs:
    /// `softmax` (or `identity`, same class) for classifiers with one output
    /// per class, `sigmoid` for one-logit binary classifiers, `identity` for
    /// regressors.
    pub link: Link,
    /// Feature names: the input tensor flattened in `(C, H, W)` order.
    pub features: Vec<String>,
    /// Class names, classifiers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Shape of one sample (batch excluded): `[n]` or `[C, H, W]`.
    pub input_shape: Vec<usize>,
    /// The layers, in order; the last one's output is the network's.
    pub layers: Vec<LayerSpec>,
}

/// One layer: a name, its inputs and exactly one op field.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Unique name (also used in reports).
    pub name: String,
    /// Names of the tensors read: earlier layers or `input`. Default: the
    /// previous layer (or `input` for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// Fully connected layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<DenseSpec>,
    /// 2-D convolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv2d: Option<Conv2dSpec>,
    /// Average pooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_pool2d: Option<PoolSpec>,
    /// Max pooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pool2d: Option<PoolSpec>,
    /// Zero padding of the two spatial dimensions: `[top, left, bottom, right]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<[usize; 4]>,
    /// Element-wise functions applied in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Vec<ElementwiseSpec>>,
    /// Sum or difference of two tensors of one shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryOp>,
    /// New shape, same elements in the same order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshape: Option<Vec<usize>>,
    /// Permutation of the dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transpose: Option<Vec<usize>>,
    /// This layer's weight bits (overrides `quantization.weight_bits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bits: Option<u8>,
    /// This activation's output bits (overrides `quantization.activation_bits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_bits: Option<u8>,
    /// Bits of the accumulator an activation reads (overrides
    /// `quantization.rounding_bits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding_bits: Option<u8>,
    /// Calibration range `[min, max]` of an activation's (or max pooling's)
    /// output, one per channel (one per element for vectors; one in all with
    /// `input_granularity: tensor`). Absent: calibrated from data when the
    /// model compiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<[f64; 2]>>,
}

/// A fully connected layer: `y = W · flatten(x) + b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    /// One row of input-size weights per output.
    pub weights: Vec<Vec<f64>>,
    /// One bias per output.
    pub bias: Vec<f64>,
}

/// A 2-D convolution over `(C, H, W)` (ONNX `Conv`, groups 1, dilation 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dSpec {
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Strides `[vertical, horizontal]`.
    #[serde(default = "ones")]
    pub strides: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    #[serde(default, skip_serializing_if = "is_zero4")]
    pub pads: [usize; 4],
    /// Weights flattened in `[out_channel][in_channel][row][column]` order.
    pub weights: Vec<f64>,
    /// One bias per output channel.
    pub bias: Vec<f64>,
}

/// A pooling window (ONNX `AveragePool` / `MaxPool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Window `[height, width]`.
    pub kernel: [usize; 2],
    /// Strides `[vertical, horizontal]`.
    #[serde(default = "ones")]
    pub strides: [usize; 2],
    /// Padding `[top, left, bottom, right]` (zeros for average pooling,
    /// ignored positions for max pooling).
    #[serde(default, skip_serializing_if = "is_zero4")]
    pub pads: [usize; 4],
    /// Average pooling: divide by the whole window, padding included
    /// (ONNX `count_include_pad = 1`), instead of by the real positions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count_include_pad: bool,
}

fn ones() -> [usize; 2] {
    [1, 1]
}

fn is_zero4(p: &[usize; 4]) -> bool {
    *p == [0; 4]
}

/// Two-tensor ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
}

/// One element-wise function. Parameters not listed for a function must be
/// absent; listed ones default to PyTorch's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementwiseSpec {
    /// The function.
    pub op: ElementwiseOp,
    /// `leaky_relu` (0.01), `elu` (1), `selu` (1.6733), `hard_sigmoid` (0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// `hard_sigmoid` (0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// `selu` (1.0507).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// `clip`: lower bound (none: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// `clip`: upper bound (none: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `add` / `sub` / `mul` / `div`: one constant for every element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// `add` / `sub` / `mul` / `div`: one constant per element of the
    /// tensor (flattened), instead of `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
}

/// The element-wise functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementwiseOp {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// `x` if `x >= 0`, else `alpha · x`.
    LeakyRelu,
    /// `clip(alpha · x + beta, 0, 1)`.
    HardSigmoid,
    /// `x · clip(x / 6 + 1/2, 0, 1)`.
    HardSwish,
    /// `clip(x, min, max)`.
    Clip,
    /// `x` if `x > 0`, else `alpha (e^x − 1)`.
    Elu,
    /// `gamma · elu_alpha(x)`.
    Selu,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x · Φ(x)` (the exact, `erf` form).
    Gelu,
    /// `x · sigmoid(x)`.
    Silu,
    /// The error function.
    Erf,
    /// `e^x`.
    Exp,
    /// `−x`.
    Neg,
    /// `x + c`.
    Add,
    /// `x − c`.
    Sub,
    /// `x · c`.
    Mul,
    /// `x / c`.
    Div,
}

impl ElementwiseOp {
    /// The spec keyword.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
            Self::LeakyRelu => "leaky_relu",
            Self::HardSigmoid => "hard_sigmoid",
            Self::HardSwish => "hard_swish",
            Self::Clip => "clip",
            Self::Elu => "elu",
            Self::Selu => "selu",
            Self::Softplus => "softplus",
            Self::Gelu => "gelu",
            Self::Silu => "silu",
            Self::Erf => "erf",
            Self::Exp => "exp",
            Self::Neg => "neg",
            Self::Add => "add",
            Self::Sub => "sub",
            Self::Mul => "mul",
            Self::Div => "div",
        }
    }

    /// The parameters this function takes (others must be absent).
    pub fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::LeakyRelu | Self::Elu => &["alpha"],
            Self::HardSigmoid => &["alpha", "beta"],
            Self::Selu => &["alpha", "gamma"],
            Self::Clip => &["min", "max"],
            Self::Add | Self::Sub | Self::Mul | Self::Div => &["value", "values"],
            _ => &[],
        }
    }

    /// Whether the function is `x ↦ a·x + c` (free under FHE when a chain
    /// holds nothing else).
    pub fn is_affine(self) -> bool {
        matches!(
            self,
            Self::Add | Self::Sub | Self::Mul | Self::Div | Self::Neg
        )
    }
}

impl ElementwiseSpec {
    /// A function without parameters.
    pub fn new(op: ElementwiseOp) -> Self {
        Self {
            op,
            alpha: None,
            beta: None,
            gamma: None,
            min: None,
            max: None,
            value: None,
            values: None,
        }
    }

    /// The constant of an arithmetic op for element `i`.
    fn constant(&self, i: usize) -> f64 {
        match (&self.values, self.value) {
            (Some(v), _) => v.get(i).copied().unwrap_or(f64::NAN),
            (None, Some(c)) => c,
            (None, None) => f64::NAN,
        }
    }

    /// Applies the function to element `i` of its tensor.
    pub fn apply(&self, i: usize, x: f64) -> f64 {
        use ElementwiseOp as E;
        let alpha = |d: f64| self.alpha.unwrap_or(d);
        match self.op {
            E::Relu => x.max(0.0),
            E::Sigmoid => sigmoid(x),
            E::Tanh => x.tanh(),
            E::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    alpha(0.01) * x
                }
            }
            E::HardSigmoid => (alpha(0.2) * x + self.beta.unwrap_or(0.5)).clamp(0.0, 1.0),
            E::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            E::Clip => x
                .max(self.min.unwrap_or(f64::NEG_INFINITY))
                .min(self.max.unwrap_or(f64::INFINITY)),
            E::Elu => elu(x, alpha(1.0)),
            E::Selu => self.gamma.unwrap_or(SELU_GAMMA) * elu(x, self.alpha.unwrap_or(SELU_ALPHA)),
            E::Softplus => {
                // ln(1 + e^x) without overflow.
                x.max(0.0) + (-x.abs()).exp().ln_1p()
            }
            E::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            E::Silu => x * sigmoid(x),
            E::Erf => erf(x),
            E::Exp => x.exp(),
            E::Neg => -x,
            E::Add => x + self.constant(i),
            E::Sub => x - self.constant(i),
            E::Mul => x * self.constant(i),
            E::Div => x / self.constant(i),
        }
    }

    /// `(a, c)` with `f(x) = a·x + c` for element `i`, for affine functions.
    pub fn affine(&self, i: usize) -> Option<(f64, f64)> {
        use ElementwiseOp as E;
        Some(match self.op {
            E::Add => (1.0, self.constant(i)),
            E::Sub => (1.0, -self.constant(i)),
            E::Mul => (self.constant(i), 0.0),
            E::Div => (1.0 / self.constant(i), 0.0),
            E::Neg => (-1.0, 0.0),
            _ => return None,
        })
    }
}

/// `(a, c)` with `chain(x) = a·x + c` for element `i`, when every function
/// of the chain is affine (`None` otherwise).
pub fn compose_affine(chain: &[ElementwiseSpec], i: usize) -> Option<(f64, f64)> {
    chain.iter().try_fold((1.0, 0.0), |(a, c), f| {
        let (fa, fc) = f.affine(i)?;
        Some((fa * a, fa * c + fc))
    })
}

/// SELU's default `alpha` (PyTorch and ONNX).
pub const SELU_ALPHA: f64 = 1.673_263_192_176_818_8;
/// SELU's default `gamma`.
pub const SELU_GAMMA: f64 = 1.050_700_987_355_480_5;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn elu(x: f64, alpha: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        alpha * x.exp_m1()
    }
}

/// The error function, to within 1.2e-7 (Numerical Recipes' `erfc`
/// Chebyshev fit), enough for tables whose inputs are a few bits.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

/// A checked layer's op, as [`LayerSpec::op`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerOp<'a> {
    /// Fully connected.
    Dense(&'a DenseSpec),
    /// Convolution.
    Conv2d(&'a Conv2dSpec),
    /// Average pooling.
    AvgPool2d(&'a PoolSpec),
    /// Max pooling.
    MaxPool2d(&'a PoolSpec),
    /// Zero padding.
    Pad(&'a [usize; 4]),
    /// Element-wise chain.
    Activation(&'a [ElementwiseSpec]),
    /// Two-tensor op.
    Binary(BinaryOp),
    /// New shape.
    Reshape(&'a [usize]),
    /// Dimension permutation.
    Transpose(&'a [usize]),
}

impl LayerSpec {
    /// A layer named `name` reading the previous layer; set one op field.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The op fields that are set, by keyword.
    pub fn op_fields(&self) -> Vec<&'static str> {
        [
            ("dense", self.dense.is_some()),
            ("conv2d", self.conv2d.is_some()),
            ("avg_pool2d", self.avg_pool2d.is_some()),
            ("max_pool2d", self.max_pool2d.is_some()),
            ("pad", self.pad.is_some()),
            ("activation", self.activation.is_some()),
            ("binary", self.binary.is_some()),
            ("reshape", self.reshape.is_some()),
            ("transpose", self.transpose.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| n)
        .collect()
    }

    /// The layer's op, `None` unless exactly one op field is set.
    pub fn op(&self) -> Option<LayerOp<'_>> {
        if self.op_fields().len() != 1 {
            return None;
        }
        Some(if let Some(d) = &self.dense {
            LayerOp::Dense(d)
        } else if let Some(c) = &self.conv2d {
            LayerOp::Conv2d(c)
        } else if let Some(p) = &self.avg_pool2d {
            LayerOp::AvgPool2d(p)
        } else if let Some(p) = &self.max_pool2d {
            LayerOp::MaxPool2d(p)
        } else if let Some(p) = &self.pad {
            LayerOp::Pad(p)
        } else if let Some(a) = &self.activation {
            LayerOp::Activation(a)
        } else if let Some(b) = self.binary {
            LayerOp::Binary(b)
        } else if let Some(s) = &self.reshape {
            LayerOp::Reshape(s)
        } else {
            LayerOp::Transpose(self.transpose.as_deref().unwrap_or(&[]))
        })
    }
}

/// The channel of flat index `i` in a tensor of `shape`: the first
/// dimension for `(C, H, W)`-like shapes, the element itself for vectors,
/// 0 when `per_tensor`.
pub fn channel_of(shape: &[usize], i: usize, per_tensor: bool) -> usize {
    if per_tensor {
        0
    } else if shape.len() <= 1 {
        i
    } else {
        i / (numel(shape) / shape[0]).max(1)
    }
}

/// Number of channels of a tensor of `shape` (see [`channel_of`]).
pub fn n_channels(shape: &[usize], per_tensor: bool) -> usize {
    if per_tensor {
        1
    } else if shape.len() <= 1 {
        numel(shape)
    } else {
        shape[0]
    }
}

/// Number of elements of a shape (saturating, so absurd shapes stay
/// comparable with the limits).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// Kernel sides and strides in `1..=MAX_WINDOW`, pads at most `MAX_WINDOW`.
fn check_window(kernel: [usize; 2], strides: [usize; 2], pads: [usize; 4]) -> Result<(), String> {
    let ok = kernel
        .iter()
        .chain(&strides)
        .all(|&k| (1..=MAX_WINDOW).contains(&k))
        && pads.iter().all(|&p| p <= MAX_WINDOW);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "kernel {kernel:?}, strides {strides:?} and pads {pads:?}: kernel sides and strides \
             1 to {MAX_WINDOW}, pads at most {MAX_WINDOW}"
        ))
    }
}

/// Output size of a window sliding over `size` positions.
pub fn window_out(size: usize, pad: usize, kernel: usize, stride: usize) -> Option<usize> {
    let padded = size.checked_add(pad)?;
    if kernel == 0 || stride == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// Row-major strides of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// How one output element of a spatial window op reads its input: for
/// output `(c, oy, ox)` the valid input positions `(c, y, x)` as flat
/// indices, and the window's full size (padding included).
pub fn window_positions(
    in_shape: &[usize],
    out_shape: &[usize],
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
) -> Vec<Vec<usize>> {
    let (c_n, h, w) = (in_shape[0], in_shape[1], in_shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = Vec::with_capacity(c_n * oh * ow);
    for c in 0..c_n {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut pos = Vec::with_capacity(kernel[0] * kernel[1]);
                for ky in 0..kernel[0] {
                    for kx in 0..kernel[1] {
                        let y = (oy * strides[0] + ky) as isize - pads[0] as isize;
                        let x = (ox * strides[1] + kx) as isize - pads[1] as isize;
                        if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                            pos.push((c * h + y as usize) * w + x as usize);
                        }
                    }
                }
                out.push(pos);
            }
        }
    }
    out
}

/// For each output element of a convolution, its `(input index, weight
/// index)` pairs (padding positions omitted) and its output channel.
pub fn conv_taps(
    in_shape: &[usize],
    out_shape: &[usize],
    conv: &Conv2dSpec,
) -> Vec<(usize, Vec<(usize, usize)>)> {
    let (c_in, h, w) = (in_shape[0], in_shape[1], in_shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let [kh, kw] = conv.kernel;
    let mut out = Vec::with_capacity(conv.out_channels * oh * ow);
    for o in 0..conv.out_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut taps = Vec::with_capacity(c_in * kh * kw);
                for c in 0..c_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = (oy * conv.strides[0] + ky) as isize - conv.pads[0] as isize;
                            let x = (ox * conv.strides[1] + kx) as isize - conv.pads[1] as isize;
                            if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                                let input = (c * h + y as usize) * w + x as usize;
                                let weight = ((o * c_in + c) * kh + ky) * kw + kx;
                                taps.push((input, weight));
                            }
                        }
                    }
                }
                out.push((o, taps));
            }
        }
    }
    out
}

/// Index map of a transpose: output flat index → input flat index.
pub fn transpose_map(in_shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| in_shape[p]).collect();
    let in_strides = strides_of(in_shape);
    let n = numel(&out_shape);
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    for _ in 0..n {
        map.push(idx.iter().zip(perm).map(|(&i, &p)| i * in_strides[p]).sum());
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    map
}

impl NetworkSpec {
    /// Number of outputs (scores): the size of the last layer's output.
    ///
    /// The spec must have passed [`ModelSpec::check`](super::ModelSpec::check).
    pub fn n_outputs(&self) -> usize {
        self.shapes()
            .ok()
            .and_then(|s| s.last().map(|s| numel(s)))
            .unwrap_or(0)
    }

    /// The names of each layer's inputs, defaults resolved.
    pub fn layer_inputs(&self, i: usize) -> Vec<&str> {
        match &self.layers[i].inputs {
            Some(names) => names.iter().map(String::as_str).collect(),
            None if i == 0 => vec![INPUT],
            None => vec![self.layers[i - 1].name.as_str()],
        }
    }

    /// Index of the tensor a name refers to among `i`'s predecessors: `None`
    /// for the network input, `Some(j)` for layer `j < i`.
    pub fn resolve(&self, i: usize, name: &str) -> Result<Option<usize>, String> {
        if name == INPUT {
            return Ok(None);
        }
        match self.layers[..i].iter().position(|l| l.name == name) {
            Some(j) => Ok(Some(j)),
            None if self.layers.iter().any(|l| l.name == name) => Err(format!(
                "`{name}` is defined after this layer (layers read earlier layers only)"
            )),
            None => Err(format!("no layer is named `{name}`")),
        }
    }

    /// Output shape of each layer, or a message naming the first layer
    /// whose shapes do not fit, with its index.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, (usize, String)> {
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let err = |m: String| (i, m);
            let mut ins = Vec::new();
            for name in self.layer_inputs(i) {
                let j = self.resolve(i, name).map_err(err)?;
                ins.push(match j {
                    None => self.input_shape.clone(),
                    Some(j) => shapes[j].clone(),
                });
            }
            let op = layer.op().ok_or_else(|| err("no single op".into()))?;
            let arity = if matches!(op, LayerOp::Binary(_)) {
                2
            } else {
                1
            };
            if ins.len() != arity {
                return Err(err(format!(
                    "reads {} tensor{}, this op takes {arity}",
                    ins.len(),
                    if ins.len() == 1 { "" } else { "s" }
                )));
            }
            let x = &ins[0];
            let spatial = |what: &str| -> Result<(usize, usize, usize), (usize, String)> {
                match x.as_slice() {
                    &[c, h, w] => Ok((c, h, w)),
                    _ => Err(err(format!("{what} needs a (C, H, W) input, found {x:?}"))),
                }
            };
            let out = match op {
                LayerOp::Dense(d) => {
                    let n_in = numel(x);
                    if let Some((r, row)) =
                        d.weights.iter().enumerate().find(|(_, r)| r.len() != n_in)
                    {
                        return Err(err(format!(
                            "weights row {r} has {} entries, the input has {n_in} elements",
                            row.len()
                        )));
                    }
                    vec![d.weights.len()]
                }
                LayerOp::Conv2d(c) => {
                    let (c_in, h, w) = spatial("conv2d")?;
                    let expected = c
                        .out_channels
                        .saturating_mul(c_in)
                        .saturating_mul(c.kernel[0])
                        .saturating_mul(c.kernel[1]);
                    if c.weights.len() != expected {
                        return Err(err(format!(
                            "{} weights, expected out_channels·in_channels·kh·kw = {}·{c_in}·{}·{} = {expected}",
                            c.weights.len(), c.out_channels, c.kernel[0], c.kernel[1]
                        )));
                    }
                    check_window(c.kernel, c.strides, c.pads).map_err(err)?;
                    let oh = window_out(h, c.pads[0] + c.pads[2], c.kernel[0], c.strides[0]);
                    let ow = window_out(w, c.pads[1] + c.pads[3], c.kernel[1], c.strides[1]);
                    match (oh, ow) {
                        (Some(oh), Some(ow)) => {
                            let work = numel(&[c.out_channels, oh, ow, c_in, c.kernel[0], c.kernel[1]]);
                            if work > MAX_WINDOW_WORK {
                                return Err(err(format!(
                                    "{work} multiply-adds, more than the {MAX_WINDOW_WORK} accepted"
                                )));
                            }
                            vec![c.out_channels, oh, ow]
                        }
                        _ => {
                            return Err(err(format!(
                                "kernel {:?} with strides {:?} and pads {:?} does not fit a {h}×{w} input",
                                c.kernel, c.strides, c.pads
                            )))
                        }
                    }
                }
                LayerOp::AvgPool2d(p) | LayerOp::MaxPool2d(p) => {
                    let (c, h, w) = spatial("pooling")?;
                    check_window(p.kernel, p.strides, p.pads).map_err(err)?;
                    if p.pads[0] >= p.kernel[0].max(1)
                        || p.pads[1] >= p.kernel[1].max(1)
                        || p.pads[2] >= p.kernel[0].max(1)
                        || p.pads[3] >= p.kernel[1].max(1)
                    {
                        return Err(err(format!(
                            "pads {:?} must be smaller than the kernel {:?}",
                            p.pads, p.kernel
                        )));
                    }
                    let oh = window_out(h, p.pads[0] + p.pads[2], p.kernel[0], p.strides[0]);
                    let ow = window_out(w, p.pads[1] + p.pads[3], p.kernel[1], p.strides[1]);
                    match (oh, ow) {
                        (Some(oh), Some(ow)) => {
                            let work = numel(&[c, oh, ow, p.kernel[0], p.kernel[1]]);
                            if work > MAX_WINDOW_WORK {
                                return Err(err(format!(
                                    "{work} window reads, more than the {MAX_WINDOW_WORK} accepted"
                                )));
                            }
                            vec![c, oh, ow]
                        }
                        _ => {
                            return Err(err(format!(
                                "kernel {:?} with strides {:?} does not fit a {h}×{w} input",
                                p.kernel, p.strides
                            )))
                        }
                    }
                }
                LayerOp::Pad(p) => {
                    let (c, h, w) = spatial("pad")?;
                    if p.iter().any(|&x| x > MAX_WINDOW) {
                        return Err(err(format!("pads {p:?}: at most {MAX_WINDOW} each")));
                    }
                    vec![
                        c,
                        h.saturating_add(p[0]).saturating_add(p[2]),
                        w.saturating_add(p[1]).saturating_add(p[3]),
                    ]
                }
                LayerOp::Activation(chain) => {
                    let n = numel(x);
                    for f in chain {
                        if let Some(v) = &f.values {
                            if v.len() != n {
                                return Err(err(format!(
                                    "`{}` has {} values, the tensor has {n} elements",
                                    f.op.name(),
                                    v.len()
                                )));
                            }
                        }
                    }
                    x.clone()
                }
                LayerOp::Binary(_) => {
                    if ins[0] != ins[1] {
                        return Err(err(format!(
                            "operands have shapes {:?} and {:?}",
                            ins[0], ins[1]
                        )));
                    }
                    x.clone()
                }
                LayerOp::Reshape(s) => {
                    if s.is_empty() || s.len() > MAX_RANK || numel(s) != numel(x) {
                        return Err(err(format!("cannot reshape {x:?} into {s:?}")));
                    }
                    s.to_vec()
                }
                LayerOp::Transpose(perm) => {
                    let mut seen = vec![false; x.len()];
                    let ok = perm.len() == x.len()
                        && perm
                            .iter()
                            .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
                    if !ok {
                        return Err(err(format!(
                            "{perm:?} is not a permutation of the {} dimensions of {x:?}",
                            x.len()
                        )));
                    }
                    perm.iter().map(|&p| x[p]).collect()
                }
            };
            if out.contains(&0) || numel(&out) > MAX_TENSOR_ELEMENTS {
                return Err(err(format!(
                    "output shape {out:?} is empty or over {MAX_TENSOR_ELEMENTS} elements"
                )));
            }
            shapes.push(out);
        }
        Ok(shapes)
    }

    /// The float network's outputs for one sample (flattened input in
    /// `(C, H, W)` order); every layer's output with
    /// [`float_layers`](Self::float_layers).
    ///
    /// The spec must have passed [`ModelSpec::check`](super::ModelSpec::check).
    pub fn float_scores(&self, x: &[f64]) -> Vec<f64> {
        self.float_layers(x).pop().unwrap_or_default()
    }

    /// Every layer's float output for one sample, flattened.
    pub fn float_layers(&self, x: &[f64]) -> Vec<Vec<f64>> {
        self.float_layers_shaped(x, &self.shapes().unwrap_or_default())
    }

    /// [`float_layers`](Self::float_layers) with the layers' shapes
    /// ([`shapes`](Self::shapes)) computed once by the caller.
    pub fn float_layers_shaped(&self, x: &[f64], shapes: &[Vec<usize>]) -> Vec<Vec<f64>> {
        if shapes.len() != self.layers.len() {
            return Vec::new();
        }
        let mut outs: Vec<Vec<f64>> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let ins: Vec<(&[f64], &[usize])> = self
                .layer_inputs(i)
                .into_iter()
                .map(|n| match self.resolve(i, n).ok().flatten() {
                    None => (x, self.input_shape.as_slice()),
                    Some(j) => (outs[j].as_slice(), shapes[j].as_slice()),
                })
                .collect();
            let (a, a_shape) = ins[0];
            let out_shape = &shapes[i];
            let y = match layer.op() {
                Some(LayerOp::Dense(d)) => d
                    .weights
                    .iter()
                    .zip(&d.bias)
                    .map(|(row, b)| row.iter().zip(a).map(|(w, v)| w * v).sum::<f64>() + b)
                    .collect(),
                Some(LayerOp::Conv2d(c)) => conv_taps(a_shape, out_shape, c)
                    .into_iter()
                    .map(|(o, taps)| {
                        taps.iter().map(|&(i, w)| a[i] * c.weights[w]).sum::<f64>() + c.bias[o]
                    })
                    .collect(),
                Some(LayerOp::AvgPool2d(p)) => {
                    let full = (p.kernel[0] * p.kernel[1]) as f64;
                    window_positions(a_shape, out_shape, p.kernel, p.strides, p.pads)
                        .into_iter()
                        .map(|pos| {
                            let n = if p.count_include_pad {
                                full
                            } else {
                                pos.len() as f64
                            };
                            pos.iter().map(|&i| a[i]).sum::<f64>() / n
                        })
                        .collect()
                }
                Some(LayerOp::MaxPool2d(p)) => {
                    window_positions(a_shape, out_shape, p.kernel, p.strides, p.pads)
                        .into_iter()
                        .map(|pos| pos.iter().map(|&i| a[i]).fold(f64::NEG_INFINITY, f64::max))
                        .collect()
                }
                Some(LayerOp::Pad(p)) => {
                    let (c, h, w) = (a_shape[0], a_shape[1], a_shape[2]);
                    let (oh, ow) = (out_shape[1], out_shape[2]);
                    let mut y = vec![0.0; c * oh * ow];
                    for ch in 0..c {
                        for r in 0..h {
                            for col in 0..w {
                                y[(ch * oh + r + p[0]) * ow + col + p[1]] =
                                    a[(ch * h + r) * w + col];
                            }
                        }
                    }
                    y
                }
                Some(LayerOp::Activation(chain)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| chain.iter().fold(v, |v, f| f.apply(i, v)))
                    .collect(),
                Some(LayerOp::Binary(op)) => {
                    let b = ins[1].0;
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| match op {
                            BinaryOp::Add => x + y,
                            BinaryOp::Sub => x - y,
                        })
                        .collect()
                }
                Some(LayerOp::Reshape(_)) => a.to_vec(),
                Some(LayerOp::Transpose(perm)) => transpose_map(a_shape, perm)
                    .into_iter()
                    .map(|i| a[i])
                    .collect(),
                None => Vec::new(),
            };
            outs.push(y);
        }
        outs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate() {
        // Reference values of erf.
        for (x, e) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-2.0, -0.995_322_265_018_952_7),
        ] {
            assert!((erf(x) - e).abs() < 2e-7, "erf({x})");
        }
    }

    #[test]
    fn transpose_map_permutes() {
        // (2, 3) → (3, 2)
        assert_eq!(transpose_map(&[2, 3], &[1, 0]), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn windows_skip_padding() {
        let pos = window_positions(&[1, 2, 2], &[1, 2, 2], [2, 2], [1, 1], [1, 1, 0, 0]);
        assert_eq!(pos[0], vec![0]);
        assert_eq!(pos[3], vec![0, 1, 2, 3]);
    }
}

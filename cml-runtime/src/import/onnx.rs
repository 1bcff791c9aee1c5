//! ONNX networks (PyTorch's TorchScript and dynamo exporters, opsets 13–20)
//! into a [`NetworkSpec`].
//!
//! The file is decoded with `prost` ([`onnx_proto`](super::onnx_proto),
//! generated once from the official `onnx.proto3`). The graph is walked in
//! topological order with the batch dimension taken as 1: every tensor is
//! either a clear constant (initializers, `Constant`, and whatever only
//! depends on them: the `Shape → Gather → Unsqueeze → Concat` chains of
//! `x.view(...)` fold away) or a tensor computed from the input, which
//! becomes a layer of the spec. Then:
//!
//! - chains of one-input element-wise ops merge into one `activation` layer
//!   (one table per neuron under FHE), and `Mul(x, g(x))` with `g` an
//!   element-wise chain of `x` becomes SiLU, GELU or hard-swish when it is
//!   one of them (checked numerically, whatever arrangement the exporter
//!   chose);
//! - affine ops right after a `dense` or `conv2d` (`BatchNormalization`,
//!   `Add`/`Sub`/`Mul`/`Div` by constants) fold into its weights and bias;
//!   a zero `Pad` before a `Conv` folds into its padding;
//! - a trailing `Softmax` / `LogSoftmax` / `ArgMax` (and `Sigmoid` of a
//!   single output) is left to the client: it sets the spec's `link`.
//!
//! Anything else is refused with the op, the node's name and its position.
//!
//! ```no_run
//! use cml_runtime::import::{onnx_file, OnnxOptions};
//!
//! let options = OnnxOptions {
//!     features: (0..64).map(|i| format!("pixel_{i}")).collect(),
//!     ..OnnxOptions::default()
//! };
//! let spec = onnx_file("specs/digits_mlp.onnx", &options).unwrap();
//! assert!(spec.network().is_some());
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use prost::Message;

use super::onnx_proto::{
    tensor_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, TensorProto,
};
use super::{snake_name, spec_name};
use crate::error::{ImportError, OnnxNode};
use crate::spec::network::{
    self, compose_affine, numel, ElementwiseOp, ElementwiseSpec, LayerOp, INPUT,
};
use crate::spec::{
    BinaryOp, Conv2dSpec, DataSpec, DenseSpec, LayerSpec, Link, ModelKind, ModelSpec, NetworkSpec,
    PoolSpec, QuantizationSpec, Source, Task, FORMAT_V1,
};

/// Largest ONNX file accepted.
pub const MAX_ONNX_BYTES: u64 = 512 * 1024 * 1024;
/// Largest number of elements of one constant tensor.
pub const MAX_CONSTANT_ELEMENTS: usize = 1 << 26;
/// Largest number of nodes of a graph.
pub const MAX_NODES: usize = 100_000;
/// Opsets (default domain) accepted.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=20;

/// Options of [`onnx_model`].
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// Spec name; default: the file stem, lowercased, other characters as `_`.
    pub name: Option<String>,
    /// Feature names, one per element of the flattened input (`(C, H, W)`
    /// order); default `x0`, `x1`, ….
    pub features: Vec<String>,
    /// Class names (default: `0`, `1`, … for a network with several outputs).
    pub classes: Option<Vec<String>>,
    /// Force regression (default: a network with one output and no trailing
    /// `Sigmoid` is a regressor, one with several outputs a classifier).
    pub regression: bool,
    /// Quantization settings written to the spec.
    pub quantization: QuantizationSpec,
    /// Data files to record in the spec.
    pub data: Option<DataSpec>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            name: None,
            features: Vec::new(),
            classes: None,
            regression: false,
            quantization: default_quantization(),
            data: None,
        }
    }
}

/// The network defaults the importer writes: 4-bit inputs, weights and
/// activations, accumulators rounded to 6 bits (Concrete ML's `n_bits=4`,
/// `rounding_threshold_bits=6`).
pub fn default_quantization() -> QuantizationSpec {
    QuantizationSpec {
        input_bits: 4,
        weight_bits: 4,
        activation_bits: Some(4),
        rounding_bits: Some(6),
        ..QuantizationSpec::default()
    }
}

/// Reads an ONNX file.
pub fn onnx_file(path: impl AsRef<Path>, options: &OnnxOptions) -> Result<ModelSpec, ImportError> {
    let path = path.as_ref();
    let io = |source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_ONNX_BYTES {
        return Err(ImportError::Onnx {
            file: path.to_path_buf(),
            node: None,
            message: format!(
                "{} bytes, more than the {MAX_ONNX_BYTES} accepted",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    onnx_model(&bytes, path, options)
}

/// Converts ONNX bytes; `origin` names the file in errors.
pub fn onnx_model(
    bytes: &[u8],
    origin: impl AsRef<Path>,
    options: &OnnxOptions,
) -> Result<ModelSpec, ImportError> {
    let file = origin.as_ref().to_path_buf();
    let fail = |message: String| ImportError::Onnx {
        file: file.clone(),
        node: None,
        message,
    };
    let model = ModelProto::decode(bytes)
        .map_err(|e| fail(format!("not an ONNX model (protobuf: {e})")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| fail("no opset for the default ONNX domain".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(fail(format!(
            "opset {opset} is not supported (opsets {} to {})",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    // Other domains may be imported as long as no node uses them (checked
    // per node).
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph".into()))?;
    let mut c = Converter::new(&file, graph)?;
    c.run()?;
    let (layers, link_hint) = c.finish()?;
    let mut net = NetworkSpec {
        task: Task::Regression,
        link: Link::Identity,
        features: Vec::new(),
        classes: None,
        input_shape: c.input_shape.clone(),
        layers,
    };
    postprocess(&mut net);
    let n_in = numel(&net.input_shape);
    net.features = if options.features.is_empty() {
        (0..n_in).map(|i| format!("x{i}")).collect()
    } else {
        options.features.clone()
    };
    if net.features.len() != n_in {
        return Err(fail(format!(
            "{} feature names for an input of shape {:?} ({n_in} elements)",
            net.features.len(),
            net.input_shape
        )));
    }
    let n_out = net.n_outputs();
    let classifier = !options.regression
        && (options.classes.is_some() || n_out > 1 || link_hint == Some(Link::Sigmoid));
    if classifier {
        net.task = Task::Classification;
        let n_classes = if n_out == 1 { 2 } else { n_out };
        let classes = options
            .classes
            .clone()
            .unwrap_or_else(|| (0..n_classes).map(|i| i.to_string()).collect());
        if classes.len() != n_classes {
            return Err(fail(format!(
                "{} class names given, the network has {n_out} output{} ({n_classes} classes)",
                classes.len(),
                if n_out == 1 { "" } else { "s" }
            )));
        }
        net.classes = Some(classes);
        net.link = if n_out == 1 {
            Link::Sigmoid
        } else {
            Link::Softmax
        };
    } else if link_hint == Some(Link::Sigmoid) {
        return Err(fail(
            "a trailing Sigmoid makes this a binary classifier, not a regressor".into(),
        ));
    }
    let spec = ModelSpec {
        format: FORMAT_V1.into(),
        name: options.name.clone().unwrap_or_else(|| spec_name(&file)),
        description: Some(format!(
            "Network imported from {} ({} layers, opset {opset}).",
            file.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            net.layers.len()
        )),
        source: Some(Source {
            library: if model.producer_name.is_empty() {
                "onnx".into()
            } else {
                model.producer_name.clone()
            },
            version: (!model.producer_version.is_empty()).then(|| model.producer_version.clone()),
            estimator: Some("onnx".into()),
        }),
        model: ModelKind::Network(net),
        quantization: options.quantization.clone(),
        data: options.data.clone(),
    };
    spec.check(&file)?;
    Ok(spec)
}

/// A clear constant tensor (batch dimension included where it has one).
#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    dims: Vec<usize>,
    data: Vec<f64>,
}

impl Tensor {
    fn scalar(v: f64) -> Self {
        Self {
            dims: Vec::new(),
            data: vec![v],
        }
    }

    fn vector(v: Vec<f64>) -> Self {
        Self {
            dims: vec![v.len()],
            data: v,
        }
    }

    fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
}

/// What a name of the graph holds.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// Known in clear (shared: names that alias it do not copy it).
    Const(Rc<Tensor>),
    /// Computed from the input: the layer that produces it (`None`: the
    /// input itself) and its shape without the batch dimension.
    Dyn {
        layer: Option<usize>,
        shape: Vec<usize>,
    },
}

struct Converter<'a> {
    file: &'a Path,
    graph: &'a GraphProto,
    values: HashMap<&'a str, Value>,
    layers: Vec<LayerSpec>,
    input_shape: Vec<usize>,
    /// Index of the node being converted (for errors).
    node: Option<usize>,
    used_names: HashSet<String>,
    /// Softmax / LogSoftmax / ArgMax nodes: `(node, output name)`.
    trailing: Vec<(usize, String)>,
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

impl<'a> Converter<'a> {
    fn new(file: &'a Path, graph: &'a GraphProto) -> Result<Self, ImportError> {
        let mut c = Self {
            file,
            graph,
            values: HashMap::new(),
            layers: Vec::new(),
            input_shape: Vec::new(),
            node: None,
            used_names: HashSet::new(),
            trailing: Vec::new(),
        };
        if graph.node.len() > MAX_NODES {
            return Err(c.err(format!(
                "{} nodes, more than the {MAX_NODES} accepted",
                graph.node.len()
            )));
        }
        for t in &graph.initializer {
            let tensor = c.tensor(t)?;
            c.values
                .insert(t.name.as_str(), Value::Const(Rc::new(tensor)));
        }
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !c.values.contains_key(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(c.err(format!(
                "the graph has {} inputs besides its initializers; cml takes networks with one",
                inputs.len()
            )));
        };
        let tensor_type = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t,
            _ => return Err(c.err(format!("input `{}` is not a tensor", input.name))),
        };
        let float = [
            tensor_proto::DataType::Float as i32,
            tensor_proto::DataType::Double as i32,
        ];
        if !float.contains(&tensor_type.elem_type) {
            return Err(c.err(format!(
                "input `{}` has element type {}, expected float",
                input.name,
                type_name(tensor_type.elem_type)
            )));
        }
        let dims = tensor_type
            .shape
            .as_ref()
            .map(|s| s.dim.as_slice())
            .unwrap_or_default();
        if dims.len() < 2 {
            return Err(c.err(format!(
                "input `{}` has rank {}, expected a batch dimension and at least one more",
                input.name,
                dims.len()
            )));
        }
        let mut shape = Vec::new();
        for (k, d) in dims.iter().enumerate().skip(1) {
            match &d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v))
                    if *v > 0 && (*v as u64) <= network::MAX_TENSOR_ELEMENTS as u64 =>
                {
                    shape.push(*v as usize)
                }
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) => {
                    return Err(c.err(format!(
                        "input `{}` dimension {k} is {v}, expected 1 to {}",
                        input.name,
                        network::MAX_TENSOR_ELEMENTS
                    )))
                }
                Some(tensor_shape_proto::dimension::Value::DimParam(p)) => {
                    return Err(c.err(format!(
                        "input `{}` dimension {k} is dynamic (`{p}`): only the batch dimension may be",
                        input.name
                    )))
                }
                None => {
                    return Err(c.err(format!(
                        "input `{}` dimension {k} has no size: only the batch dimension may be dynamic",
                        input.name
                    )))
                }
            }
        }
        if shape.len() > network::MAX_RANK || numel(&shape) > network::MAX_TENSOR_ELEMENTS {
            return Err(c.err(format!(
                "input `{}` of shape {shape:?} is too large",
                input.name
            )));
        }
        c.input_shape = shape.clone();
        c.values
            .insert(input.name.as_str(), Value::Dyn { layer: None, shape });
        Ok(c)
    }

    fn err(&self, message: impl Into<String>) -> ImportError {
        ImportError::Onnx {
            file: self.file.to_path_buf(),
            node: self.node.map(|i| {
                let n = &self.graph.node[i];
                OnnxNode {
                    index: i,
                    op: n.op_type.clone(),
                    name: n.name.clone(),
                }
            }),
            message: message.into(),
        }
    }

    /// Decodes a constant tensor, checking its size before allocating.
    fn tensor(&self, t: &TensorProto) -> Result<Tensor, ImportError> {
        let what = if t.name.is_empty() {
            "a constant".to_owned()
        } else {
            format!("constant `{}`", t.name)
        };
        if t.data_location == tensor_proto::DataLocation::External as i32
            || !t.external_data.is_empty()
        {
            return Err(self.err(format!(
                "{what} is stored in an external file: export with the weights inline"
            )));
        }
        let mut dims = Vec::with_capacity(t.dims.len());
        let mut n: usize = 1;
        for &d in &t.dims {
            if d < 0 || d as u64 > MAX_CONSTANT_ELEMENTS as u64 {
                return Err(self.err(format!(
                    "{what} has a dimension of {d}, expected 0 to {MAX_CONSTANT_ELEMENTS}"
                )));
            }
            n = n
                .checked_mul(d as usize)
                .filter(|n| *n <= MAX_CONSTANT_ELEMENTS)
                .ok_or_else(|| {
                    self.err(format!(
                        "{what} of shape {:?} has more than {MAX_CONSTANT_ELEMENTS} elements",
                        t.dims
                    ))
                })?;
            dims.push(d as usize);
        }
        use tensor_proto::DataType as D;
        let dt = t.data_type;
        let width = match dt {
            x if x == D::Float as i32 || x == D::Int32 as i32 => 4,
            x if x == D::Double as i32 || x == D::Int64 as i32 => 8,
            x if x == D::Bool as i32 || x == D::Uint8 as i32 || x == D::Int8 as i32 => 1,
            x if x == D::Float16 as i32 || x == D::Int16 as i32 || x == D::Uint16 as i32 => 2,
            _ => {
                return Err(self.err(format!(
                    "{what} has element type {}, which cml does not read",
                    type_name(dt)
                )))
            }
        };
        let data: Vec<f64> = if !t.raw_data.is_empty() {
            if t.raw_data.len() != n * width {
                return Err(self.err(format!(
                    "{what} of shape {:?} holds {} bytes, expected {}",
                    t.dims,
                    t.raw_data.len(),
                    n * width
                )));
            }
            let raw = &t.raw_data;
            let chunk = |i: usize| &raw[i * width..(i + 1) * width];
            (0..n)
                .map(|i| {
                    let b = chunk(i);
                    match dt {
                        x if x == D::Float as i32 => {
                            f32::from_le_bytes(b.try_into().unwrap()) as f64
                        }
                        x if x == D::Double as i32 => f64::from_le_bytes(b.try_into().unwrap()),
                        x if x == D::Int32 as i32 => {
                            i32::from_le_bytes(b.try_into().unwrap()) as f64
                        }
                        x if x == D::Int64 as i32 => {
                            i64::from_le_bytes(b.try_into().unwrap()) as f64
                        }
                        x if x == D::Int16 as i32 => {
                            i16::from_le_bytes(b.try_into().unwrap()) as f64
                        }
                        x if x == D::Uint16 as i32 => {
                            u16::from_le_bytes(b.try_into().unwrap()) as f64
                        }
                        x if x == D::Float16 as i32 => {
                            f16_to_f64(u16::from_le_bytes(b.try_into().unwrap()))
                        }
                        x if x == D::Int8 as i32 => b[0] as i8 as f64,
                        _ => b[0] as f64,
                    }
                })
                .collect()
        } else {
            let typed: Vec<f64> = match dt {
                x if x == D::Float as i32 => t.float_data.iter().map(|&v| v as f64).collect(),
                x if x == D::Double as i32 => t.double_data.clone(),
                x if x == D::Int64 as i32 => t.int64_data.iter().map(|&v| v as f64).collect(),
                x if x == D::Float16 as i32 => {
                    t.int32_data.iter().map(|&v| f16_to_f64(v as u16)).collect()
                }
                _ => t.int32_data.iter().map(|&v| v as f64).collect(),
            };
            if typed.len() != n {
                return Err(self.err(format!(
                    "{what} of shape {:?} holds {} values, expected {n}",
                    t.dims,
                    typed.len()
                )));
            }
            typed
        };
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(self.err(format!("{what} holds {} at element {i}", data[i])));
        }
        Ok(Tensor { dims, data })
    }

    fn value(&self, name: &str) -> Result<Value, ImportError> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| self.err(format!("reads `{name}`, which nothing defines")))
    }

    fn input(&self, node: &NodeProto, k: usize) -> Result<Value, ImportError> {
        match node.input.get(k).filter(|n| !n.is_empty()) {
            Some(name) => self.value(name),
            None => Err(self.err(format!("input {k} is missing"))),
        }
    }

    fn opt_const(&self, node: &NodeProto, k: usize) -> Result<Option<Tensor>, ImportError> {
        match node.input.get(k).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => match self.value(name)? {
                Value::Const(t) => Ok(Some(Rc::unwrap_or_clone(t))),
                Value::Dyn { .. } => Err(self.err(format!(
                    "input {k} (`{name}`) must be a constant, it depends on the network's input"
                ))),
            },
        }
    }

    fn constant(&self, node: &NodeProto, k: usize) -> Result<Tensor, ImportError> {
        self.opt_const(node, k)?
            .ok_or_else(|| self.err(format!("input {k} is missing")))
    }

    fn attr(&self, node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
        node.attribute.iter().find(|a| a.name == name)
    }

    fn attr_int(&self, node: &'a NodeProto, name: &str, default: i64) -> i64 {
        self.attr(node, name).map(|a| a.i).unwrap_or(default)
    }

    fn attr_float(&self, node: &'a NodeProto, name: &str, default: f64) -> f64 {
        self.attr(node, name).map(|a| a.f as f64).unwrap_or(default)
    }

    fn attr_ints(&self, node: &'a NodeProto, name: &str) -> Option<Vec<i64>> {
        self.attr(node, name).map(|a| a.ints.clone())
    }

    fn attr_string(&self, node: &'a NodeProto, name: &str) -> Option<String> {
        self.attr(node, name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    fn layer_name(&mut self, node: &NodeProto, index: usize) -> String {
        let base = snake_name(&node.name).trim_matches('_').to_owned();
        let base = if base.is_empty() || base == INPUT {
            format!("{}_{index}", node.op_type.to_ascii_lowercase())
        } else {
            base
        };
        let mut name = base.clone();
        let mut k = 1;
        while self.used_names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used_names.insert(name.clone());
        name
    }

    fn push(
        &mut self,
        node: &'a NodeProto,
        index: usize,
        inputs: &[Option<usize>],
        mut layer: LayerSpec,
        shape: Vec<usize>,
    ) -> Result<(), ImportError> {
        if shape.contains(&0)
            || numel(&shape) > network::MAX_TENSOR_ELEMENTS
            || shape.len() > network::MAX_RANK
        {
            return Err(self.err(format!("output shape {shape:?} is empty or too large")));
        }
        layer.name = self.layer_name(node, index);
        let names: Vec<String> = inputs
            .iter()
            .map(|i| match i {
                None => INPUT.to_owned(),
                Some(j) => self.layers[*j].name.clone(),
            })
            .collect();
        layer.inputs = Some(names);
        self.layers.push(layer);
        let out = node
            .output
            .first()
            .ok_or_else(|| self.err("the node has no output"))?;
        self.values.insert(
            out.as_str(),
            Value::Dyn {
                layer: Some(self.layers.len() - 1),
                shape,
            },
        );
        Ok(())
    }

    fn alias(&mut self, node: &'a NodeProto, v: Value) -> Result<(), ImportError> {
        let out = node
            .output
            .first()
            .ok_or_else(|| self.err("the node has no output"))?;
        self.values.insert(out.as_str(), v);
        Ok(())
    }

    /// Nodes in an order where each reads only what earlier ones define.
    fn order(&mut self) -> Result<Vec<usize>, ImportError> {
        let nodes = &self.graph.node;
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for o in &n.output {
                if o.is_empty() {
                    continue;
                }
                if self.values.contains_key(o.as_str()) || producer.insert(o.as_str(), i).is_some()
                {
                    self.node = Some(i);
                    return Err(self.err(format!("output `{o}` is defined twice")));
                }
            }
        }
        let deps: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                n.input
                    .iter()
                    .filter_map(|x| producer.get(x.as_str()).copied())
                    .collect()
            })
            .collect();
        // Iterative DFS post-order; a grey node seen again is a cycle.
        let mut state = vec![0u8; nodes.len()];
        let mut order = Vec::with_capacity(nodes.len());
        for root in 0..nodes.len() {
            if state[root] != 0 {
                continue;
            }
            let mut stack = vec![(root, 0usize)];
            state[root] = 1;
            while let Some(&mut (v, ref mut k)) = stack.last_mut() {
                if let Some(&d) = deps[v].get(*k) {
                    *k += 1;
                    match state[d] {
                        0 => {
                            state[d] = 1;
                            stack.push((d, 0));
                        }
                        1 => {
                            self.node = Some(d);
                            return Err(self.err("the graph has a cycle through this node"));
                        }
                        _ => {}
                    }
                } else {
                    state[v] = 2;
                    order.push(v);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }

    fn run(&mut self) -> Result<(), ImportError> {
        let order = self.order()?;
        for i in order {
            self.node = Some(i);
            let node = &self.graph.node[i];
            if !is_default_domain(&node.domain) {
                return Err(self.err(format!(
                    "op `{}` of domain `{}` is not supported",
                    node.op_type, node.domain
                )));
            }
            self.convert(node, i)?;
        }
        self.node = None;
        Ok(())
    }

    fn convert(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let op = node.op_type.as_str();
        // Ops on constants only fold, whatever they are.
        let all_const = !node.input.is_empty()
            && node
                .input
                .iter()
                .filter(|n| !n.is_empty())
                .all(|n| matches!(self.values.get(n.as_str()), Some(Value::Const(_))));
        match op {
            "Constant" => {
                let t = self.constant_node(node)?;
                return self.alias(node, Value::Const(Rc::new(t)));
            }
            "Identity" | "Dropout" => {
                let v = self.input(node, 0)?;
                return self.alias(node, v);
            }
            "Shape" => {
                let shape: Vec<f64> = match self.input(node, 0)? {
                    Value::Const(t) => t.dims.iter().map(|&d| d as f64).collect(),
                    Value::Dyn { shape, .. } => std::iter::once(1.0)
                        .chain(shape.iter().map(|&d| d as f64))
                        .collect(),
                };
                let n = shape.len() as i64;
                let clampi = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) } as usize;
                let start = clampi(self.attr_int(node, "start", 0));
                let end = clampi(self.attr_int(node, "end", n));
                let slice = shape[start..end.max(start)].to_vec();
                return self.alias(node, Value::Const(Rc::new(Tensor::vector(slice))));
            }
            _ => {}
        }
        if all_const {
            let t = self.fold(node)?;
            return self.alias(node, Value::Const(Rc::new(t)));
        }
        self.dynamic(node, index)
    }

    fn constant_node(&self, node: &NodeProto) -> Result<Tensor, ImportError> {
        let a = node
            .attribute
            .first()
            .ok_or_else(|| self.err("a Constant without a value"))?;
        Ok(match a.name.as_str() {
            "value" => self.tensor(a.t.as_ref().ok_or_else(|| self.err("empty value"))?)?,
            "value_float" => Tensor::scalar(a.f as f64),
            "value_int" => Tensor::scalar(a.i as f64),
            "value_floats" => Tensor::vector(a.floats.iter().map(|&v| v as f64).collect()),
            "value_ints" => Tensor::vector(a.ints.iter().map(|&v| v as f64).collect()),
            other => return Err(self.err(format!("Constant attribute `{other}` is not supported"))),
        })
    }

    /// Evaluates an op whose inputs are all constants.
    fn fold(&self, node: &NodeProto) -> Result<Tensor, ImportError> {
        let op = node.op_type.as_str();
        let t0 = self.constant(node, 0)?;
        Ok(match op {
            "Cast" | "Identity" | "Dropout" => t0,
            "Unsqueeze" => {
                let axes = self.axes(node)?;
                let rank = t0.dims.len() + axes.len();
                let mut dims = t0.dims.clone();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| {
                        norm_axis(a, rank).ok_or_else(|| self.err(format!("axis {a} out of range")))
                    })
                    .collect::<Result<_, _>>()?;
                axes.sort_unstable();
                for a in axes {
                    if a > dims.len() {
                        return Err(self.err(format!("axis {a} out of range")));
                    }
                    dims.insert(a, 1);
                }
                Tensor {
                    dims,
                    data: t0.data,
                }
            }
            "Squeeze" => {
                let axes = self.axes(node)?;
                let rank = t0.dims.len();
                let axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| {
                        norm_axis(a, rank).ok_or_else(|| self.err(format!("axis {a} out of range")))
                    })
                    .collect::<Result<_, _>>()?;
                let dims = t0
                    .dims
                    .iter()
                    .enumerate()
                    .filter(|(i, &d)| !(d == 1 && (axes.is_empty() || axes.contains(i))))
                    .map(|(_, &d)| d)
                    .collect();
                Tensor {
                    dims,
                    data: t0.data,
                }
            }
            "Gather" => {
                let idx = self.constant(node, 1)?;
                let axis = norm_axis(self.attr_int(node, "axis", 0), t0.dims.len().max(1))
                    .ok_or_else(|| self.err("axis out of range"))?;
                if t0.dims.is_empty() {
                    return Err(self.err("Gather on a scalar"));
                }
                let outer = numel(&t0.dims[..axis]);
                let n = t0.dims[axis];
                let inner = numel(&t0.dims[axis + 1..]);
                let total = outer
                    .checked_mul(idx.data.len())
                    .and_then(|x| x.checked_mul(inner))
                    .filter(|&x| x <= MAX_CONSTANT_ELEMENTS)
                    .ok_or_else(|| {
                        self.err(format!(
                            "the result has more than {MAX_CONSTANT_ELEMENTS} elements"
                        ))
                    })?;
                let mut data = Vec::with_capacity(total);
                for o in 0..outer {
                    for &k in &idx.data {
                        let k = k as i64;
                        let k = if k < 0 { k + n as i64 } else { k };
                        if k < 0 || k as usize >= n {
                            return Err(self.err(format!("index {k} out of range for {n}")));
                        }
                        let base = (o * n + k as usize) * inner;
                        data.extend_from_slice(&t0.data[base..base + inner]);
                    }
                }
                let mut dims = t0.dims[..axis].to_vec();
                dims.extend_from_slice(&idx.dims);
                dims.extend_from_slice(&t0.dims[axis + 1..]);
                Tensor { dims, data }
            }
            "Concat" => {
                let mut parts = Vec::new();
                let mut total = 0usize;
                for k in 0..node.input.len() {
                    let part = self.constant(node, k)?;
                    total = total.saturating_add(part.data.len());
                    if total > MAX_CONSTANT_ELEMENTS {
                        return Err(self.err(format!(
                            "the result has more than {MAX_CONSTANT_ELEMENTS} elements"
                        )));
                    }
                    parts.push(part);
                }
                if parts.iter().any(|p| p.dims.len() > 1) {
                    return Err(self.err("Concat of constants is folded for vectors only"));
                }
                Tensor::vector(parts.into_iter().flat_map(|p| p.data).collect())
            }
            "Reshape" => {
                let target = self.constant(node, 1)?.ints();
                let dims = resolve_reshape(&t0.dims, &target).ok_or_else(|| {
                    self.err(format!("cannot reshape {:?} into {target:?}", t0.dims))
                })?;
                Tensor {
                    dims,
                    data: t0.data,
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let t1 = self.constant(node, 1)?;
                let f = |a: f64, b: f64| match op {
                    "Add" => a + b,
                    "Sub" => a - b,
                    "Mul" => a * b,
                    _ => a / b,
                };
                if t1.data.len() == 1 {
                    Tensor {
                        dims: t0.dims.clone(),
                        data: t0.data.iter().map(|&a| f(a, t1.data[0])).collect(),
                    }
                } else if t0.data.len() == 1 {
                    Tensor {
                        dims: t1.dims.clone(),
                        data: t1.data.iter().map(|&b| f(t0.data[0], b)).collect(),
                    }
                } else if t0.dims == t1.dims {
                    Tensor {
                        dims: t0.dims.clone(),
                        data: t0
                            .data
                            .iter()
                            .zip(&t1.data)
                            .map(|(&a, &b)| f(a, b))
                            .collect(),
                    }
                } else {
                    return Err(self.err(
                        "broadcasting between two constant tensors is folded for scalars only",
                    ));
                }
            }
            "Neg" => Tensor {
                dims: t0.dims,
                data: t0.data.iter().map(|v| -v).collect(),
            },
            "Transpose" => {
                let perm = self.perm(node, t0.dims.len())?;
                let data = network::transpose_map(&t0.dims, &perm)
                    .into_iter()
                    .map(|i| t0.data[i])
                    .collect();
                Tensor {
                    dims: perm.iter().map(|&p| t0.dims[p]).collect(),
                    data,
                }
            }
            _ => {
                return Err(self.err(format!(
                    "op `{op}` on constants is not supported (cml folds Shape, Gather, Unsqueeze, \
                     Squeeze, Concat, Reshape, Transpose, Cast and arithmetic)"
                )))
            }
        })
    }

    fn axes(&self, node: &NodeProto) -> Result<Vec<i64>, ImportError> {
        if let Some(a) = self.attr_ints(node, "axes") {
            return Ok(a);
        }
        Ok(self
            .opt_const(node, 1)?
            .map(|t| t.ints())
            .unwrap_or_default())
    }

    fn perm(&self, node: &NodeProto, rank: usize) -> Result<Vec<usize>, ImportError> {
        let perm: Vec<usize> = match self.attr_ints(node, "perm") {
            Some(p) => p
                .iter()
                .map(|&a| {
                    norm_axis(a, rank)
                        .ok_or_else(|| self.err(format!("perm entry {a} out of range")))
                })
                .collect::<Result<_, _>>()?,
            None => (0..rank).rev().collect(),
        };
        let mut seen = vec![false; rank];
        if perm.len() != rank || !perm.iter().all(|&p| !std::mem::replace(&mut seen[p], true)) {
            return Err(self.err(format!(
                "{perm:?} is not a permutation of {rank} dimensions"
            )));
        }
        Ok(perm)
    }

    fn dyn_input(
        &self,
        node: &NodeProto,
        k: usize,
    ) -> Result<(Option<usize>, Vec<usize>), ImportError> {
        match self.input(node, k)? {
            Value::Dyn { layer, shape } => Ok((layer, shape)),
            Value::Const(_) => Err(self.err(format!(
                "input {k} is a constant where cml expects the network's data"
            ))),
        }
    }

    /// An element-wise layer on input 0.
    fn unary(
        &mut self,
        node: &'a NodeProto,
        index: usize,
        f: ElementwiseSpec,
    ) -> Result<(), ImportError> {
        let (src, shape) = self.dyn_input(node, 0)?;
        let layer = LayerSpec {
            activation: Some(vec![f]),
            ..LayerSpec::default()
        };
        self.push(node, index, &[src], layer, shape)
    }

    /// A constant broadcast to a tensor of `shape` (batch dimension 1).
    fn broadcast(&self, c: &Tensor, shape: &[usize]) -> Result<Vec<f64>, ImportError> {
        let full: Vec<usize> = std::iter::once(1).chain(shape.iter().copied()).collect();
        if c.dims.len() > full.len() {
            return Err(self.err(format!(
                "a constant of shape {:?} does not broadcast to {shape:?}",
                c.dims
            )));
        }
        let pad = full.len() - c.dims.len();
        let cd: Vec<usize> = std::iter::repeat_n(1, pad)
            .chain(c.dims.iter().copied())
            .collect();
        for (a, b) in cd.iter().zip(&full) {
            if *a != 1 && a != b {
                return Err(self.err(format!(
                    "a constant of shape {:?} does not broadcast to {shape:?}",
                    c.dims
                )));
            }
        }
        let cs = network::strides_of(&cd);
        let n = numel(&full);
        let fs = network::strides_of(&full);
        Ok((0..n)
            .map(|i| {
                let mut off = 0;
                for d in 0..full.len() {
                    let idx = (i / fs[d]) % full[d];
                    if cd[d] != 1 {
                        off += idx * cs[d];
                    }
                }
                c.data[off]
            })
            .collect())
    }

    fn arith(
        &self,
        op: ElementwiseOp,
        c: &Tensor,
        shape: &[usize],
    ) -> Result<ElementwiseSpec, ImportError> {
        let mut f = ElementwiseSpec::new(op);
        if c.data.len() == 1 {
            f.value = Some(c.data[0]);
        } else {
            let v = self.broadcast(c, shape)?;
            if v.iter().all(|x| *x == v[0]) {
                f.value = Some(v[0]);
            } else {
                f.values = Some(v);
            }
        }
        if op == ElementwiseOp::Div
            && (f.value == Some(0.0) || f.values.iter().flatten().any(|v| *v == 0.0))
        {
            return Err(self.err("division by a constant zero"));
        }
        Ok(f)
    }

    fn dynamic(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        use ElementwiseOp as E;
        let op = node.op_type.as_str();
        let simple = |op: E| ElementwiseSpec::new(op);
        match op {
            "Relu" => self.unary(node, index, simple(E::Relu)),
            "Sigmoid" => self.unary(node, index, simple(E::Sigmoid)),
            "Tanh" => self.unary(node, index, simple(E::Tanh)),
            "Erf" => self.unary(node, index, simple(E::Erf)),
            "Exp" => self.unary(node, index, simple(E::Exp)),
            "Neg" => self.unary(node, index, simple(E::Neg)),
            "Softplus" => self.unary(node, index, simple(E::Softplus)),
            "HardSwish" => self.unary(node, index, simple(E::HardSwish)),
            "LeakyRelu" => {
                let mut f = simple(E::LeakyRelu);
                f.alpha = Some(self.attr_float(node, "alpha", 0.01));
                self.unary(node, index, f)
            }
            "Elu" => {
                let mut f = simple(E::Elu);
                f.alpha = Some(self.attr_float(node, "alpha", 1.0));
                self.unary(node, index, f)
            }
            "Selu" => {
                let mut f = simple(E::Selu);
                f.alpha = Some(self.attr_float(node, "alpha", network::SELU_ALPHA));
                f.gamma = Some(self.attr_float(node, "gamma", network::SELU_GAMMA));
                self.unary(node, index, f)
            }
            "HardSigmoid" => {
                let mut f = simple(E::HardSigmoid);
                f.alpha = Some(self.attr_float(node, "alpha", 0.2));
                f.beta = Some(self.attr_float(node, "beta", 0.5));
                self.unary(node, index, f)
            }
            "Gelu" => {
                let approx = self
                    .attr_string(node, "approximate")
                    .unwrap_or_else(|| "none".into());
                if approx != "none" {
                    return Err(self.err(format!("Gelu with approximate=`{approx}` is not supported (only the exact erf form)")));
                }
                self.unary(node, index, simple(E::Gelu))
            }
            "Clip" => {
                let mut f = simple(E::Clip);
                f.min = self
                    .opt_const(node, 1)?
                    .map(|t| t.data.first().copied().unwrap_or(f64::NEG_INFINITY));
                f.max = self
                    .opt_const(node, 2)?
                    .map(|t| t.data.first().copied().unwrap_or(f64::INFINITY));
                self.unary(node, index, f)
            }
            "Add" | "Sub" | "Mul" | "Div" => self.binary(node, index),
            "Gemm" => self.gemm(node, index),
            "MatMul" => self.matmul(node, index),
            "Conv" => self.conv(node, index),
            "AveragePool" | "MaxPool" | "GlobalAveragePool" | "GlobalMaxPool" => {
                self.pool(node, index)
            }
            "BatchNormalization" => self.batch_norm(node, index),
            "Pad" => self.pad(node, index),
            "Flatten" => {
                let (src, shape) = self.dyn_input(node, 0)?;
                let axis = self.attr_int(node, "axis", 1);
                if axis != 1 {
                    return Err(self.err(format!(
                        "Flatten with axis {axis}: only axis 1 (keep the batch) is supported"
                    )));
                }
                self.reshape_to(node, index, src, &shape, vec![numel(&shape)])
            }
            "Reshape" => {
                let (src, shape) = self.dyn_input(node, 0)?;
                let target = self.constant(node, 1)?.ints();
                let full: Vec<usize> = std::iter::once(1).chain(shape.iter().copied()).collect();
                let dims = resolve_reshape(&full, &target)
                    .filter(|d| d.first() == Some(&1))
                    .ok_or_else(|| self.err(format!("cannot reshape {shape:?} (batch first) into {target:?} keeping the batch first")))?;
                self.reshape_to(node, index, src, &shape, dims[1..].to_vec())
            }
            "Squeeze" | "Unsqueeze" => {
                let (src, shape) = self.dyn_input(node, 0)?;
                let axes = self.axes(node)?;
                let full: Vec<usize> = std::iter::once(1).chain(shape.iter().copied()).collect();
                let dims = if op == "Squeeze" {
                    let rank = full.len();
                    let axes: Vec<usize> =
                        axes.iter().filter_map(|&a| norm_axis(a, rank)).collect();
                    if axes.contains(&0) {
                        return Err(self.err("Squeeze of the batch dimension"));
                    }
                    full.iter()
                        .enumerate()
                        .filter(|(i, &d)| {
                            !(d == 1 && *i > 0 && (axes.is_empty() || axes.contains(i)))
                        })
                        .map(|(_, &d)| d)
                        .collect::<Vec<_>>()
                } else {
                    let rank = full.len() + axes.len();
                    let mut dims = full.clone();
                    let mut axes: Vec<usize> =
                        axes.iter().filter_map(|&a| norm_axis(a, rank)).collect();
                    axes.sort_unstable();
                    if axes.contains(&0) {
                        return Err(self.err("Unsqueeze before the batch dimension"));
                    }
                    for a in axes {
                        if a > dims.len() {
                            return Err(self.err("axis out of range"));
                        }
                        dims.insert(a, 1);
                    }
                    dims
                };
                self.reshape_to(node, index, src, &shape, dims[1..].to_vec())
            }
            "Transpose" => {
                let (src, shape) = self.dyn_input(node, 0)?;
                let perm = self.perm(node, shape.len() + 1)?;
                if perm[0] != 0 {
                    return Err(self.err("Transpose that moves the batch dimension"));
                }
                let inner: Vec<usize> = perm[1..].iter().map(|p| p - 1).collect();
                if inner.iter().enumerate().all(|(i, &p)| i == p) {
                    let v = self.input(node, 0)?;
                    return self.alias(node, v);
                }
                let out: Vec<usize> = inner.iter().map(|&p| shape[p]).collect();
                let layer = LayerSpec {
                    transpose: Some(inner),
                    ..LayerSpec::default()
                };
                self.push(node, index, &[src], layer, out)
            }
            "Cast" => {
                let to = self.attr_int(node, "to", 1);
                if to != tensor_proto::DataType::Float as i32 as i64
                    && to != tensor_proto::DataType::Double as i32 as i64
                {
                    return Err(self.err(format!("Cast of the data to {}", type_name(to as i32))));
                }
                let v = self.input(node, 0)?;
                self.alias(node, v)
            }
            "Softmax" | "LogSoftmax" | "ArgMax" => {
                // Allowed only as the graph's last op; finish() checks.
                let (src, shape) = self.dyn_input(node, 0)?;
                let out = node
                    .output
                    .first()
                    .ok_or_else(|| self.err("the node has no output"))?;
                self.values
                    .insert(out.as_str(), Value::Dyn { layer: src, shape });
                self.trailing.push((index, out.clone()));
                Ok(())
            }
            _ => Err(self.err(format!("op `{op}` is not supported"))),
        }
    }

    fn reshape_to(
        &mut self,
        node: &'a NodeProto,
        index: usize,
        src: Option<usize>,
        shape: &[usize],
        out: Vec<usize>,
    ) -> Result<(), ImportError> {
        if out == shape {
            let v = self.input(node, 0)?;
            return self.alias(node, v);
        }
        if out.is_empty() || out.len() > network::MAX_RANK {
            return Err(self.err(format!(
                "shape {out:?}: rank 1 to {} only",
                network::MAX_RANK
            )));
        }
        let layer = LayerSpec {
            reshape: Some(out.clone()),
            ..LayerSpec::default()
        };
        self.push(node, index, &[src], layer, out)
    }

    fn binary(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        use ElementwiseOp as E;
        let op = node.op_type.as_str();
        let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
        match (a, b) {
            (
                Value::Dyn {
                    layer: la,
                    shape: sa,
                },
                Value::Dyn {
                    layer: lb,
                    shape: sb,
                },
            ) => {
                if sa != sb {
                    return Err(self.err(format!(
                        "operands of shapes {sa:?} and {sb:?}: broadcasting between two data tensors is not supported"
                    )));
                }
                match op {
                    "Add" | "Sub" => {
                        let layer = LayerSpec {
                            binary: Some(if op == "Add" {
                                BinaryOp::Add
                            } else {
                                BinaryOp::Sub
                            }),
                            ..LayerSpec::default()
                        };
                        self.push(node, index, &[la, lb], layer, sa)
                    }
                    "Mul" => {
                        let found = self
                            .product_of_chain(la, lb)
                            .map(|chain| (la, chain))
                            .or_else(|| self.product_of_chain(lb, la).map(|chain| (lb, chain)));
                        let Some((x, chain)) = found else {
                            return Err(self.err(
                                "Mul of two data tensors is supported only as x · g(x) = SiLU, GELU or \
                                 hard-swish (x times a chain of element-wise ops of x)",
                            ));
                        };
                        let layer = LayerSpec {
                            activation: Some(chain),
                            ..LayerSpec::default()
                        };
                        self.push(node, index, &[x], layer, sa)
                    }
                    _ => Err(self.err("division by the network's data is not supported")),
                }
            }
            (Value::Dyn { layer, shape }, Value::Const(c)) => {
                let f = match op {
                    "Add" => self.arith(E::Add, &c, &shape)?,
                    "Sub" => self.arith(E::Sub, &c, &shape)?,
                    "Mul" => self.arith(E::Mul, &c, &shape)?,
                    _ => self.arith(E::Div, &c, &shape)?,
                };
                let out = self.out_shape(&shape, &c)?;
                let l = LayerSpec {
                    activation: Some(vec![f]),
                    ..LayerSpec::default()
                };
                self.push(node, index, &[layer], l, out)
            }
            (Value::Const(c), Value::Dyn { layer, shape }) => {
                let chain = match op {
                    "Add" => vec![self.arith(E::Add, &c, &shape)?],
                    "Sub" => vec![
                        ElementwiseSpec::new(E::Neg),
                        self.arith(E::Add, &c, &shape)?,
                    ],
                    "Mul" => vec![self.arith(E::Mul, &c, &shape)?],
                    _ => return Err(self.err("division by the network's data is not supported")),
                };
                let out = self.out_shape(&shape, &c)?;
                let l = LayerSpec {
                    activation: Some(chain),
                    ..LayerSpec::default()
                };
                self.push(node, index, &[layer], l, out)
            }
            (Value::Const(_), Value::Const(_)) => unreachable!("constants fold"),
        }
    }

    /// A constant may not grow the data's shape.
    fn out_shape(&self, shape: &[usize], c: &Tensor) -> Result<Vec<usize>, ImportError> {
        if c.dims.len() > shape.len() + 1 {
            return Err(self.err(format!(
                "a constant of shape {:?} would broadcast the data {shape:?}",
                c.dims
            )));
        }
        Ok(shape.to_vec())
    }

    /// If `g` is a chain of one-input element-wise layers over `x`, and `x ·
    /// g(x)` is SiLU, GELU or hard-swish times a constant, that chain.
    fn product_of_chain(&self, x: Option<usize>, g: Option<usize>) -> Option<Vec<ElementwiseSpec>> {
        let mut chain: Vec<ElementwiseSpec> = Vec::new();
        let mut cur = g?;
        loop {
            let layer = &self.layers[cur];
            let fs = layer.activation.as_ref()?;
            if fs.iter().any(|f| f.values.is_some()) {
                return None;
            }
            chain.splice(0..0, fs.iter().cloned());
            let input = layer.inputs.as_ref()?.first()?;
            let src = if input == INPUT {
                None
            } else {
                Some(self.layers.iter().position(|l| &l.name == input)?)
            };
            if src == x {
                break;
            }
            cur = src?;
        }
        let h = |v: f64| v * chain.iter().fold(v, |v, f| f.apply(0, v));
        for op in [
            ElementwiseOp::Silu,
            ElementwiseOp::Gelu,
            ElementwiseOp::HardSwish,
        ] {
            let f = ElementwiseSpec::new(op);
            let probe = 3.0;
            let k = h(probe) / f.apply(0, probe);
            if !k.is_finite() || k == 0.0 {
                continue;
            }
            let matches = (-80..=80).all(|i| {
                let v = i as f64 / 10.0;
                (h(v) - k * f.apply(0, v)).abs() <= 1e-5 * (1.0 + v.abs())
            });
            if matches {
                let mut out = vec![f];
                if (k - 1.0).abs() > 1e-12 {
                    let mut m = ElementwiseSpec::new(ElementwiseOp::Mul);
                    m.value = Some(k);
                    out.push(m);
                }
                return Some(out);
            }
        }
        None
    }

    fn gemm(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let (src, shape) = self.dyn_input(node, 0)?;
        if self.attr_int(node, "transA", 0) != 0 {
            return Err(self.err("Gemm with transA = 1 (the data transposed) is not supported"));
        }
        let [k] = shape[..] else {
            return Err(self.err(format!(
                "Gemm on data of shape {shape:?}: expected a vector per sample"
            )));
        };
        let b = self.constant(node, 1)?;
        let alpha = self.attr_float(node, "alpha", 1.0);
        let beta = self.attr_float(node, "beta", 1.0);
        let trans_b = self.attr_int(node, "transB", 0) != 0;
        let [r, c] = b.dims[..] else {
            return Err(self.err(format!(
                "Gemm weights of shape {:?}: expected a matrix",
                b.dims
            )));
        };
        let (n, kk) = if trans_b { (r, c) } else { (c, r) };
        if kk != k {
            return Err(self.err(format!(
                "Gemm weights of shape {:?} (transB = {}) do not fit data of {k} elements",
                b.dims, trans_b as u8
            )));
        }
        let weights: Vec<Vec<f64>> = (0..n)
            .map(|o| {
                (0..k)
                    .map(|i| {
                        alpha
                            * if trans_b {
                                b.data[o * k + i]
                            } else {
                                b.data[i * n + o]
                            }
                    })
                    .collect()
            })
            .collect();
        let bias = match self.opt_const(node, 2)? {
            None => vec![0.0; n],
            Some(cst) => {
                let v = self.broadcast(&cst, &[n]).map_err(|_| {
                    self.err(format!(
                        "Gemm bias of shape {:?} does not fit {n} outputs",
                        cst.dims
                    ))
                })?;
                v.into_iter().map(|x| beta * x).collect()
            }
        };
        let layer = LayerSpec {
            dense: Some(DenseSpec { weights, bias }),
            ..LayerSpec::default()
        };
        self.push(node, index, &[src], layer, vec![n])
    }

    fn matmul(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let (src, shape) = self.dyn_input(node, 0)?;
        let [k] = shape[..] else {
            return Err(self.err(format!(
                "MatMul on data of shape {shape:?}: expected a vector per sample"
            )));
        };
        let b = match self.input(node, 1)? {
            Value::Const(t) => t,
            Value::Dyn { .. } => {
                return Err(self
                    .err("MatMul of two data tensors is not supported (weights must be constant)"))
            }
        };
        let [kk, n] = b.dims[..] else {
            return Err(self.err(format!(
                "MatMul weights of shape {:?}: expected a matrix",
                b.dims
            )));
        };
        if kk != k {
            return Err(self.err(format!(
                "MatMul weights of shape {:?} do not fit data of {k} elements",
                b.dims
            )));
        }
        let weights = (0..n)
            .map(|o| (0..k).map(|i| b.data[i * n + o]).collect())
            .collect();
        let layer = LayerSpec {
            dense: Some(DenseSpec {
                weights,
                bias: vec![0.0; n],
            }),
            ..LayerSpec::default()
        };
        self.push(node, index, &[src], layer, vec![n])
    }

    /// `[top, left, bottom, right]` from ONNX `pads`/`auto_pad`.
    fn window_pads(
        &self,
        node: &NodeProto,
        hw: [usize; 2],
        kernel: [usize; 2],
        strides: [usize; 2],
    ) -> Result<[usize; 4], ImportError> {
        let auto = self
            .attr_string(node, "auto_pad")
            .unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" | "" => {
                let p = self.attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 || p.iter().any(|&v| !(0..=1 << 16).contains(&v)) {
                    return Err(self.err(format!("pads {p:?}: expected 4 non-negative values")));
                }
                Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
            }
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut out = [0; 4];
                for d in 0..2 {
                    let o = hw[d].div_ceil(strides[d]);
                    let total = ((o - 1) * strides[d] + kernel[d]).saturating_sub(hw[d]);
                    let small = total / 2;
                    let (begin, end) = if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    out[d] = begin;
                    out[d + 2] = end;
                }
                Ok(out)
            }
            other => Err(self.err(format!("auto_pad `{other}` is not supported"))),
        }
    }

    fn pair(
        &self,
        node: &NodeProto,
        name: &str,
        default: usize,
    ) -> Result<[usize; 2], ImportError> {
        match self.attr_ints(node, name) {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| (1..=1 << 16).contains(&x)) => {
                Ok([v[0] as usize, v[1] as usize])
            }
            Some(v) => Err(self.err(format!(
                "{name} {v:?}: expected 2 positive values (2-D only)"
            ))),
        }
    }

    fn spatial(&self, shape: &[usize]) -> Result<[usize; 3], ImportError> {
        match shape[..] {
            [c, h, w] => Ok([c, h, w]),
            _ => Err(self.err(format!(
                "data of shape {shape:?}: expected (C, H, W) (2-D convolutions and pooling only)"
            ))),
        }
    }

    fn conv(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let (src, shape) = self.dyn_input(node, 0)?;
        let [c, h, w] = self.spatial(&shape)?;
        if self.attr_int(node, "group", 1) != 1 {
            return Err(self.err("Conv with groups other than 1 is not supported"));
        }
        if self.pair(node, "dilations", 1)? != [1, 1] {
            return Err(self.err("Conv with dilations other than 1 is not supported"));
        }
        let wt = match self.input(node, 1)? {
            Value::Const(t) => Rc::unwrap_or_clone(t),
            Value::Dyn { .. } => return Err(self.err("Conv weights must be constant")),
        };
        let [oc, ic, kh, kw] = wt.dims[..] else {
            return Err(self.err(format!(
                "Conv weights of shape {:?}: expected 4 dimensions",
                wt.dims
            )));
        };
        if ic != c {
            return Err(self.err(format!(
                "Conv weights of shape {:?} expect {ic} input channels, the data has {c}",
                wt.dims
            )));
        }
        if let Some(k) = self.attr_ints(node, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(self.err(format!(
                    "kernel_shape {k:?} disagrees with weights {:?}",
                    wt.dims
                )));
            }
        }
        let strides = self.pair(node, "strides", 1)?;
        let pads = self.window_pads(node, [h, w], [kh, kw], strides)?;
        let bias = match self.opt_const(node, 2)? {
            None => vec![0.0; oc],
            Some(b) if b.data.len() == oc => b.data,
            Some(b) => {
                return Err(self.err(format!(
                    "Conv bias of shape {:?} for {oc} output channels",
                    b.dims
                )))
            }
        };
        let conv = Conv2dSpec {
            out_channels: oc,
            kernel: [kh, kw],
            strides,
            pads,
            weights: wt.data,
            bias,
        };
        let oh = network::window_out(h, pads[0] + pads[2], kh, strides[0]);
        let ow = network::window_out(w, pads[1] + pads[3], kw, strides[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(self.err(format!("a {kh}×{kw} kernel does not fit the {h}×{w} data")));
        };
        let layer = LayerSpec {
            conv2d: Some(conv),
            ..LayerSpec::default()
        };
        self.push(node, index, &[src], layer, vec![oc, oh, ow])
    }

    fn pool(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let op = node.op_type.as_str();
        let (src, shape) = self.dyn_input(node, 0)?;
        let [c, h, w] = self.spatial(&shape)?;
        let global = op.starts_with("Global");
        let (kernel, strides, pads, include) = if global {
            ([h, w], [1, 1], [0; 4], false)
        } else {
            let kernel = self.pair(node, "kernel_shape", 0)?;
            if kernel.contains(&0) {
                return Err(self.err("kernel_shape is required"));
            }
            if self.attr_int(node, "ceil_mode", 0) != 0 {
                return Err(self.err("ceil_mode = 1 is not supported"));
            }
            if self.pair(node, "dilations", 1)? != [1, 1] {
                return Err(self.err("pooling with dilations other than 1 is not supported"));
            }
            let strides = self.pair(node, "strides", 1)?;
            let pads = self.window_pads(node, [h, w], kernel, strides)?;
            (
                kernel,
                strides,
                pads,
                self.attr_int(node, "count_include_pad", 0) != 0,
            )
        };
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(self.err("MaxPool's Indices output is not supported"));
        }
        let pool = PoolSpec {
            kernel,
            strides,
            pads,
            count_include_pad: include && op == "AveragePool",
        };
        let oh = network::window_out(h, pads[0] + pads[2], kernel[0], strides[0]);
        let ow = network::window_out(w, pads[1] + pads[3], kernel[1], strides[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(self.err(format!("a {kernel:?} window does not fit the {h}×{w} data")));
        };
        let layer = if op.contains("Max") {
            LayerSpec {
                max_pool2d: Some(pool),
                ..LayerSpec::default()
            }
        } else {
            LayerSpec {
                avg_pool2d: Some(pool),
                ..LayerSpec::default()
            }
        };
        self.push(node, index, &[src], layer, vec![c, oh, ow])
    }

    fn batch_norm(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let (src, shape) = self.dyn_input(node, 0)?;
        if self.attr_int(node, "training_mode", 0) != 0
            || node.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(self.err("BatchNormalization in training mode is not supported"));
        }
        let eps = self.attr_float(node, "epsilon", 1e-5);
        let ch = shape[0];
        let get = |k: usize| -> Result<Vec<f64>, ImportError> {
            let t = self.constant(node, k)?;
            if t.data.len() != ch {
                return Err(self.err(format!(
                    "input {k} has {} values for {ch} channels",
                    t.data.len()
                )));
            }
            Ok(t.data)
        };
        let (scale, b, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let per = numel(&shape) / ch;
        let mut a_vals = Vec::with_capacity(numel(&shape));
        let mut c_vals = Vec::with_capacity(numel(&shape));
        for c in 0..ch {
            if var[c] + eps <= 0.0 {
                return Err(self.err(format!("channel {c} has a variance of {}", var[c])));
            }
            let a = scale[c] / (var[c] + eps).sqrt();
            for _ in 0..per {
                a_vals.push(a);
                c_vals.push(b[c] - mean[c] * a);
            }
        }
        let mut mul = ElementwiseSpec::new(ElementwiseOp::Mul);
        mul.values = Some(a_vals);
        let mut add = ElementwiseSpec::new(ElementwiseOp::Add);
        add.values = Some(c_vals);
        let layer = LayerSpec {
            activation: Some(vec![mul, add]),
            ..LayerSpec::default()
        };
        self.push(node, index, &[src], layer, shape)
    }

    fn pad(&mut self, node: &'a NodeProto, index: usize) -> Result<(), ImportError> {
        let (src, shape) = self.dyn_input(node, 0)?;
        let [c, h, w] = self.spatial(&shape)?;
        let mode = self
            .attr_string(node, "mode")
            .unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(self.err(format!("Pad mode `{mode}` is not supported (zeros only)")));
        }
        if let Some(v) = self.opt_const(node, 2)? {
            if v.data.iter().any(|&x| x != 0.0) {
                return Err(self.err("Pad with a non-zero constant is not supported"));
            }
        }
        let pads = self.constant(node, 1)?.ints();
        let rank = 4;
        let axes: Vec<usize> = match self.opt_const(node, 3)? {
            Some(a) => a
                .ints()
                .iter()
                .map(|&x| {
                    norm_axis(x, rank).ok_or_else(|| self.err(format!("axis {x} out of range")))
                })
                .collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() || pads.iter().any(|&p| !(0..=1 << 16).contains(&p)) {
            return Err(self.err(format!(
                "pads {pads:?}: expected {} non-negative values",
                2 * axes.len()
            )));
        }
        let mut begin = [0usize; 4];
        let mut end = [0usize; 4];
        for (k, &a) in axes.iter().enumerate() {
            begin[a] = pads[k] as usize;
            end[a] = pads[k + axes.len()] as usize;
        }
        if begin[0] + begin[1] + end[0] + end[1] != 0 {
            return Err(self.err("Pad of the batch or channel dimension is not supported"));
        }
        let p = [begin[2], begin[3], end[2], end[3]];
        let layer = LayerSpec {
            pad: Some(p),
            ..LayerSpec::default()
        };
        self.push(
            node,
            index,
            &[src],
            layer,
            vec![c, h + p[0] + p[2], w + p[1] + p[3]],
        )
    }

    /// The layers that compute the graph's output, and the link a trailing
    /// op asks for.
    fn finish(&mut self) -> Result<(Vec<LayerSpec>, Option<Link>), ImportError> {
        let [output] = self.graph.output.as_slice() else {
            return Err(self.err(format!(
                "the graph has {} outputs; cml takes networks with one",
                self.graph.output.len()
            )));
        };
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.graph.node.iter().enumerate() {
            for x in &n.input {
                consumers.entry(x.as_str()).or_default().push(i);
            }
        }
        let trailing_nodes: HashSet<usize> = self.trailing.iter().map(|(i, _)| *i).collect();
        let mut link = None;
        for (i, out) in &self.trailing {
            let users = consumers.get(out.as_str()).cloned().unwrap_or_default();
            let last = *out == output.name
                || (!users.is_empty() && users.iter().all(|u| trailing_nodes.contains(u)));
            if !last {
                self.node = Some(*i);
                return Err(self.err(
                    "Softmax, LogSoftmax and ArgMax run on the client after decryption: they must be the graph's last ops",
                ));
            }
            link = Some(Link::Softmax);
        }
        let value = self.value(&output.name)?;
        let Value::Dyn {
            layer: Some(mut last),
            ..
        } = value
        else {
            return Err(
                self.err("the graph's output does not depend on its input through any layer")
            );
        };
        // A Sigmoid on a single output is the binary classifier's link.
        let single = self.layers[last]
            .activation
            .as_deref()
            .is_some_and(|a| a.len() == 1 && a[0].op == ElementwiseOp::Sigmoid);
        if link.is_none() && single {
            if let Some(input) = self.layers[last].inputs.as_ref().and_then(|i| i.first()) {
                if let Some(j) = self.layers.iter().position(|l| &l.name == input) {
                    let n_out = self.values.values().find_map(|v| match v {
                        Value::Dyn {
                            layer: Some(l),
                            shape,
                        } if *l == j => Some(numel(shape)),
                        _ => None,
                    });
                    if n_out == Some(1) {
                        last = j;
                        link = Some(Link::Sigmoid);
                    }
                }
            }
        }
        Ok((live_layers(&self.layers, last), link))
    }
}

/// The layers `last` depends on, in order, ending with `last`.
fn live_layers(layers: &[LayerSpec], last: usize) -> Vec<LayerSpec> {
    let index: HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    let mut live = vec![false; layers.len()];
    let mut stack = vec![last];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut live[i], true) {
            continue;
        }
        for name in layers[i].inputs.iter().flatten() {
            if let Some(&j) = index.get(name.as_str()) {
                stack.push(j);
            }
        }
    }
    layers[..=last]
        .iter()
        .zip(&live)
        .filter(|(_, l)| **l)
        .map(|(l, _)| l.clone())
        .collect()
}

fn norm_axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// ONNX `Reshape` target resolution (`0` copies a dimension, one `-1` is inferred).
fn resolve_reshape(dims: &[usize], target: &[i64]) -> Option<Vec<usize>> {
    let total = numel(dims);
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 => out.push(*dims.get(i)?),
            t if t > 0 => out.push(usize::try_from(t).ok()?),
            _ => return None,
        }
    }
    let known = numel(&out);
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return None;
        }
        out[i] = total / known;
    }
    (numel(&out) == total).then_some(out)
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

fn type_name(t: i32) -> String {
    tensor_proto::DataType::try_from(t)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("#{t}"))
}

/// Merges element-wise chains, folds affine ops into the linear layer before
/// them and zero padding into the convolution after it, and drops default
/// `inputs`.
fn postprocess(net: &mut NetworkSpec) {
    while simplify_once(net) {}
    for i in 0..net.layers.len() {
        let default = if i == 0 {
            INPUT.to_owned()
        } else {
            net.layers[i - 1].name.clone()
        };
        if net.layers[i].inputs.as_deref() == Some(std::slice::from_ref(&default)) {
            net.layers[i].inputs = None;
        }
    }
}

fn simplify_once(net: &mut NetworkSpec) -> bool {
    // A network whose shapes do not fit is left for the checks to report.
    let Ok(shapes) = net.shapes() else {
        return false;
    };
    let layers = &net.layers;
    let index: HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    let mut uses = vec![0usize; layers.len()];
    for l in layers {
        for n in l.inputs.iter().flatten() {
            if let Some(&j) = index.get(n.as_str()) {
                uses[j] += 1;
            }
        }
    }
    let single_source = |i: usize| -> Option<usize> {
        match layers[i].inputs.as_deref() {
            Some([n]) => index.get(n.as_str()).copied().filter(|&j| uses[j] == 1),
            _ => None,
        }
    };
    let last = layers.len() - 1;
    for i in 0..layers.len() {
        let Some(j) = single_source(i) else { continue };
        if j == last {
            continue;
        }
        let (li, lj) = (&layers[i], &layers[j]);
        let merged: Option<LayerSpec> = match (li.op(), lj.op()) {
            (Some(LayerOp::Activation(b)), Some(LayerOp::Activation(a))) => Some(LayerSpec {
                activation: Some(a.iter().chain(b).cloned().collect()),
                ..LayerSpec::default()
            }),
            (Some(LayerOp::Activation(chain)), Some(LayerOp::Dense(d))) => {
                let coeffs: Option<Vec<(f64, f64)>> = (0..d.weights.len())
                    .map(|k| compose_affine(chain, k))
                    .collect();
                coeffs.map(|coeffs| {
                    let mut d = d.clone();
                    for ((row, b), (a, c)) in d.weights.iter_mut().zip(&mut d.bias).zip(coeffs) {
                        row.iter_mut().for_each(|w| *w *= a);
                        *b = a * *b + c;
                    }
                    LayerSpec {
                        dense: Some(d),
                        ..LayerSpec::default()
                    }
                })
            }
            (Some(LayerOp::Activation(chain)), Some(LayerOp::Conv2d(c))) => {
                let n = numel(&shapes[j]);
                let per = n / c.out_channels.max(1);
                let coeffs: Vec<(f64, f64)> = (0..n)
                    .map(|k| compose_affine(chain, k))
                    .collect::<Option<_>>()
                    .unwrap_or_default();
                let uniform = per > 0
                    && coeffs.len() == n
                    && (0..c.out_channels).all(|o| {
                        coeffs[o * per..(o + 1) * per]
                            .iter()
                            .all(|x| *x == coeffs[o * per])
                    });
                uniform.then(|| {
                    let mut c = c.clone();
                    let k = c.weights.len() / c.out_channels;
                    for o in 0..c.out_channels {
                        let (a, b) = coeffs[o * per];
                        c.weights[o * k..(o + 1) * k]
                            .iter_mut()
                            .for_each(|w| *w *= a);
                        c.bias[o] = a * c.bias[o] + b;
                    }
                    LayerSpec {
                        conv2d: Some(c),
                        ..LayerSpec::default()
                    }
                })
            }
            (Some(LayerOp::Conv2d(c)), Some(LayerOp::Pad(p))) => {
                let mut c = c.clone();
                for (pad, extra) in c.pads.iter_mut().zip(p) {
                    *pad = pad.saturating_add(*extra);
                }
                Some(LayerSpec {
                    conv2d: Some(c),
                    ..LayerSpec::default()
                })
            }
            _ => None,
        };
        if let Some(mut m) = merged {
            m.name = li.name.clone();
            m.inputs = lj.inputs.clone();
            m.weight_bits = li.weight_bits.or(lj.weight_bits);
            net.layers[i] = m;
            net.layers.remove(j);
            return true;
        }
    }
    false
}

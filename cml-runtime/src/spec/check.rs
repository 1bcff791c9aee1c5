//! Semantic checks run on every spec after it deserializes.
//!
//! Each failure names the field path and, through the [`SourceMap`](super::SourceMap),
//! the line and column of the offending node.

use super::network::{self, LayerOp, NetworkSpec, INPUT};
use super::{
    EnsembleSpec, FieldPath, Granularity, LinearSpec, Link, LoadedSpec, ModelKind, Node, Task,
    WeightScheme, FORMAT_V1,
};
use crate::error::{SpecError, SpecProblem};

/// Inclusive range of bit counts accepted for inputs and weights.
pub const BITS_RANGE: std::ops::RangeInclusive<u8> = 2..=16;

struct Checker<'a> {
    loaded: &'a LoadedSpec,
}

impl Checker<'_> {
    fn fail(&self, path: FieldPath, problem: SpecProblem) -> SpecError {
        SpecError::Invalid {
            file: self.loaded.origin.clone(),
            location: self.loaded.source_map.locate(&path),
            path,
            problem,
        }
    }

    fn finite(&self, path: FieldPath, value: f64) -> Result<(), SpecError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(self.fail(path, SpecProblem::NotFinite(value)))
        }
    }

    fn len(&self, path: FieldPath, found: usize, expected: usize) -> Result<(), SpecError> {
        if found == expected {
            Ok(())
        } else {
            Err(self.fail(path, SpecProblem::Length { expected, found }))
        }
    }

    fn names(
        &self,
        path: FieldPath,
        names: &[String],
        what: &'static str,
    ) -> Result<(), SpecError> {
        if names.is_empty() {
            return Err(self.fail(path, SpecProblem::Empty(what)));
        }
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(self.fail(path.index(i), SpecProblem::Empty(what)));
            }
            if names[..i].contains(name) {
                return Err(self.fail(path.index(i), SpecProblem::Duplicate(name.clone())));
            }
        }
        Ok(())
    }
}

impl Checker<'_> {
    fn bits(&self, path: FieldPath, bits: u8) -> Result<(), SpecError> {
        if BITS_RANGE.contains(&bits) {
            Ok(())
        } else {
            Err(self.fail(
                path,
                SpecProblem::Bits {
                    found: bits,
                    min: *BITS_RANGE.start(),
                    max: *BITS_RANGE.end(),
                },
            ))
        }
    }

    fn all_finite(&self, path: FieldPath, values: &[f64]) -> Result<(), SpecError> {
        match values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(self.fail(path.index(i), SpecProblem::NotFinite(values[i]))),
            None => Ok(()),
        }
    }

    fn layer(&self, path: FieldPath, message: impl Into<String>) -> SpecError {
        self.fail(path, SpecProblem::Layer(message.into()))
    }

    /// Class names: required (at least 2, distinct) for classifiers,
    /// forbidden for regressors. Returns the class count of a classifier.
    fn classes(
        &self,
        path: FieldPath,
        classes: Option<&[String]>,
        task: Task,
    ) -> Result<Option<usize>, SpecError> {
        match (classes, task) {
            (Some(classes), Task::Classification) => {
                self.names(path.clone(), classes, "class name")?;
                if classes.len() < 2 {
                    return Err(self.fail(
                        path,
                        SpecProblem::Length {
                            expected: 2,
                            found: classes.len(),
                        },
                    ));
                }
                Ok(Some(classes.len()))
            }
            (None, Task::Classification) => Err(self.fail(path, SpecProblem::Missing("classes"))),
            (Some(_), Task::Regression) => Err(self.fail(path, SpecProblem::Unexpected("classes"))),
            (None, Task::Regression) => Ok(None),
        }
    }
}

/// Checks a deserialized spec.
pub(crate) fn check(loaded: &LoadedSpec) -> Result<(), SpecError> {
    let c = Checker { loaded };
    let spec = &loaded.spec;
    let root = FieldPath::root();

    if spec.format != FORMAT_V1 {
        return Err(c.fail(root.key("format"), SpecProblem::Format(spec.format.clone())));
    }
    let name_ok = !spec.name.is_empty()
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(c.fail(root.key("name"), SpecProblem::Name(spec.name.clone())));
    }

    let n_features = match &spec.model {
        ModelKind::Linear(linear) => {
            check_linear(&c, &root.key("model").key("linear"), linear)?;
            linear.features.len()
        }
        ModelKind::Ensemble(ensemble) => {
            check_ensemble(&c, &root.key("model").key("ensemble"), ensemble)?;
            if spec.quantization.input_granularity != Granularity::Feature {
                return Err(c.fail(
                    root.key("quantization").key("input_granularity"),
                    SpecProblem::Unexpected(
                        "input_granularity: tensor (trees quantize per feature)",
                    ),
                ));
            }
            ensemble.features.len()
        }
        ModelKind::Network(net) => {
            if spec.quantization.weight_scheme != WeightScheme::Symmetric {
                return Err(c.fail(
                    root.key("quantization").key("weight_scheme"),
                    SpecProblem::Unexpected(
                        "weight_scheme: asymmetric (networks quantize weights symmetrically, per neuron)",
                    ),
                ));
            }
            let tensor = spec.quantization.input_granularity == Granularity::Tensor;
            check_network(&c, &root.key("model").key("network"), net, tensor)?;
            net.features.len()
        }
    };
    let is_network = matches!(spec.model, ModelKind::Network(_));

    let q = &spec.quantization;
    let qpath = root.key("quantization");
    for (field, bits) in [
        ("input_bits", q.input_bits),
        ("weight_bits", q.weight_bits),
        ("leaf_bits", q.leaf_bits),
    ] {
        if !BITS_RANGE.contains(&bits) {
            return Err(c.fail(
                qpath.key(field),
                SpecProblem::Bits {
                    found: bits,
                    min: *BITS_RANGE.start(),
                    max: *BITS_RANGE.end(),
                },
            ));
        }
    }
    for (field, bits) in [
        ("activation_bits", q.activation_bits),
        ("rounding_bits", q.rounding_bits),
    ] {
        let Some(bits) = bits else { continue };
        if !is_network {
            return Err(c.fail(
                qpath.key(field),
                SpecProblem::Unexpected("a network setting in a model without layers"),
            ));
        }
        c.bits(qpath.key(field), bits)?;
    }
    if let Some(ranges) = &q.input_ranges {
        let rpath = qpath.key("input_ranges");
        let expected = match q.input_granularity {
            Granularity::Feature => n_features,
            Granularity::Tensor => 1,
        };
        c.len(rpath.clone(), ranges.len(), expected)?;
        for (i, [lo, hi]) in ranges.iter().copied().enumerate() {
            c.finite(rpath.index(i).index(0), lo)?;
            c.finite(rpath.index(i).index(1), hi)?;
            if lo > hi {
                return Err(c.fail(rpath.index(i), SpecProblem::Range { lo, hi }));
            }
        }
    }
    Ok(())
}

fn check_linear(c: &Checker<'_>, path: &FieldPath, linear: &LinearSpec) -> Result<(), SpecError> {
    let expected_task = linear.estimator.task();
    if linear.task != expected_task {
        return Err(c.fail(
            path.key("task"),
            SpecProblem::Task {
                estimator: format!("{:?}", linear.estimator),
                expected: expected_task,
            },
        ));
    }
    if !linear.estimator.allowed_links().contains(&linear.link) {
        return Err(c.fail(
            path.key("link"),
            SpecProblem::Link {
                link: linear.link.name(),
                estimator: format!("{:?}", linear.estimator),
            },
        ));
    }
    c.names(path.key("features"), &linear.features, "feature name")?;
    let n_features = linear.features.len();

    let rows = linear.coefficients.len();
    if rows == 0 {
        return Err(c.fail(
            path.key("coefficients"),
            SpecProblem::Empty("coefficient row"),
        ));
    }
    match c.classes(path.key("classes"), linear.classes.as_deref(), linear.task)? {
        Some(n_classes) => {
            let expected_rows = if n_classes == 2 { 1 } else { n_classes };
            c.len(path.key("coefficients"), rows, expected_rows)?;
            let expected_link_rows = match linear.link {
                super::Link::Sigmoid => Some(1),
                super::Link::Softmax => Some(n_classes.max(3)),
                _ => None,
            };
            if let Some(expected) = expected_link_rows {
                if rows != expected {
                    return Err(c.fail(
                        path.key("link"),
                        SpecProblem::Link {
                            link: linear.link.name(),
                            estimator: format!("{n_classes} classes"),
                        },
                    ));
                }
            }
        }
        // Several outputs would need a multi-output decoder; refuse
        // rather than silently predict from the first row.
        None => c.len(path.key("coefficients"), rows, 1)?,
    }
    for (r, row) in linear.coefficients.iter().enumerate() {
        let rpath = path.key("coefficients").index(r);
        c.len(rpath.clone(), row.len(), n_features)?;
        for (j, w) in row.iter().enumerate() {
            c.finite(rpath.index(j), *w)?;
        }
    }
    c.len(path.key("intercepts"), linear.intercepts.len(), rows)?;
    for (r, b) in linear.intercepts.iter().enumerate() {
        c.finite(path.key("intercepts").index(r), *b)?;
    }
    if let Some(std) = &linear.standardize {
        let spath = path.key("standardize");
        c.len(spath.key("mean"), std.mean.len(), n_features)?;
        c.len(spath.key("scale"), std.scale.len(), n_features)?;
        for (j, m) in std.mean.iter().enumerate() {
            c.finite(spath.key("mean").index(j), *m)?;
        }
        for (j, s) in std.scale.iter().enumerate() {
            c.finite(spath.key("scale").index(j), *s)?;
            if *s <= 0.0 {
                return Err(c.fail(spath.key("scale").index(j), SpecProblem::NotPositive(*s)));
            }
        }
    }
    Ok(())
}

/// Largest number of nodes in one tree.
pub const MAX_TREE_NODES: usize = 1 << 16;

fn check_ensemble(c: &Checker<'_>, path: &FieldPath, e: &EnsembleSpec) -> Result<(), SpecError> {
    let estimator = format!("{:?}", e.estimator);
    if e.task != e.estimator.task() {
        return Err(c.fail(
            path.key("task"),
            SpecProblem::Task {
                estimator,
                expected: e.estimator.task(),
            },
        ));
    }
    if !e.estimator.allowed_links().contains(&e.link) {
        return Err(c.fail(
            path.key("link"),
            SpecProblem::Link {
                link: e.link.name(),
                estimator,
            },
        ));
    }
    c.names(path.key("features"), &e.features, "feature name")?;
    let n_features = e.features.len();
    let n_outputs = e.n_outputs();
    if n_outputs == 0 {
        return Err(c.fail(path.key("base_score"), SpecProblem::Empty("base_score")));
    }
    for (k, b) in e.base_score.iter().enumerate() {
        c.finite(path.key("base_score").index(k), *b)?;
    }
    let expected = match c.classes(path.key("classes"), e.classes.as_deref(), e.task)? {
        Some(2) if e.link == Link::Sigmoid => 1,
        Some(n_classes) if e.link == Link::Sigmoid => {
            return Err(c.fail(
                path.key("link"),
                SpecProblem::Link {
                    link: e.link.name(),
                    estimator: format!("{n_classes} classes"),
                },
            ))
        }
        Some(n_classes) => n_classes,
        None => 1,
    };
    c.len(path.key("base_score"), n_outputs, expected)?;
    if e.trees.is_empty() {
        return Err(c.fail(path.key("trees"), SpecProblem::Empty("trees")));
    }
    if e.estimator.single_tree() {
        c.len(path.key("trees"), e.trees.len(), 1)?;
    }
    let mut missing = vec![false; n_features];
    for (k, name) in e.accepts_missing.iter().enumerate() {
        match e.features.iter().position(|f| f == name) {
            Some(j) if !missing[j] => missing[j] = true,
            Some(_) => {
                return Err(c.fail(
                    path.key("accepts_missing").index(k),
                    SpecProblem::FeatureName(format!("feature `{name}` is listed twice")),
                ))
            }
            None => {
                return Err(c.fail(
                    path.key("accepts_missing").index(k),
                    SpecProblem::FeatureName(format!(
                        "`{name}` is not one of the model's features"
                    )),
                ))
            }
        }
    }
    for (t, tree) in e.trees.iter().enumerate() {
        let tpath = path.key("trees").index(t);
        for (i, node) in tree.nodes.iter().enumerate() {
            if let (Some(f), None, None) = (node.feature, node.missing, &node.value) {
                if missing.get(f) == Some(&true) {
                    return Err(c.fail(
                        tpath.key("nodes").index(i),
                        SpecProblem::NodeKind(format!(
                            "feature `{}` accepts missing values, so this split needs \
                             `missing: left` or `missing: right`",
                            e.features[f]
                        )),
                    ));
                }
            }
        }
        let values = match tree.output {
            Some(o) if o >= n_outputs => {
                return Err(c.fail(
                    tpath.key("output"),
                    SpecProblem::Length {
                        expected: n_outputs,
                        found: o + 1,
                    },
                ))
            }
            Some(_) => 1,
            None => n_outputs,
        };
        check_tree(c, &tpath, &tree.nodes, n_features, values)?;
    }
    Ok(())
}

fn check_tree(
    c: &Checker<'_>,
    path: &FieldPath,
    nodes: &[super::NodeSpec],
    n_features: usize,
    values: usize,
) -> Result<(), SpecError> {
    let npath = path.key("nodes");
    if nodes.is_empty() {
        return Err(c.fail(npath, SpecProblem::Empty("nodes")));
    }
    if nodes.len() > MAX_TREE_NODES {
        return Err(c.fail(
            npath,
            SpecProblem::TreeShape(format!(
                "{} nodes, more than the {MAX_TREE_NODES} accepted",
                nodes.len()
            )),
        ));
    }
    let n_nodes = nodes.len();
    let mut parent: Vec<Option<usize>> = vec![None; n_nodes];
    for (i, node) in nodes.iter().enumerate() {
        let path = npath.index(i);
        match node.kind() {
            Some(Node::Split {
                feature,
                threshold,
                left,
                right,
            }) => {
                if feature >= n_features {
                    return Err(c.fail(
                        path.key("feature"),
                        SpecProblem::FeatureIndex {
                            index: feature,
                            n_features,
                        },
                    ));
                }
                c.finite(path.key("threshold"), threshold)?;
                for (field, child) in [("left", left), ("right", right)] {
                    let fpath = path.key(field);
                    if child >= n_nodes {
                        return Err(c.fail(
                            fpath,
                            SpecProblem::NodeIndex {
                                index: child,
                                n_nodes,
                            },
                        ));
                    }
                    if child == 0 {
                        return Err(c.fail(
                            fpath,
                            SpecProblem::TreeShape(format!(
                                "node {i} points back to the root (a cycle)"
                            )),
                        ));
                    }
                    if child == i {
                        return Err(c.fail(
                            fpath,
                            SpecProblem::TreeShape(format!("node {i} is its own child (a cycle)")),
                        ));
                    }
                    if let Some(p) = parent[child] {
                        return Err(c.fail(
                            fpath,
                            SpecProblem::TreeShape(format!(
                                "node {child} is a child of both node {p} and node {i} \
                                 (a cycle or a shared subtree)"
                            )),
                        ));
                    }
                    parent[child] = Some(i);
                }
            }
            Some(Node::Leaf(v)) => {
                c.len(path.key("value"), v.len(), values)?;
                for (k, x) in v.iter().enumerate() {
                    c.finite(path.key("value").index(k), *x)?;
                }
            }
            None => {
                let missing = if node.value.is_some() {
                    "a leaf must have only `value` (no `missing` side)".to_owned()
                } else {
                    let names = [
                        ("feature", node.feature.is_none()),
                        ("threshold", node.threshold.is_none()),
                        ("left", node.left.is_none()),
                        ("right", node.right.is_none()),
                    ];
                    let absent: Vec<&str> =
                        names.iter().filter(|(_, a)| *a).map(|(n, _)| *n).collect();
                    format!("missing `{}`", absent.join("`, `"))
                };
                return Err(c.fail(path, SpecProblem::NodeKind(missing)));
            }
        }
    }
    // Unique parents and a root that is nobody's child: every node but the
    // root needs a parent chain that ends at the root, else it sits on a
    // cycle or hangs off one.
    let mut reached = vec![false; n_nodes];
    reached[0] = true;
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if let Some(Node::Split { left, right, .. }) = nodes[i].kind() {
            for child in [left, right] {
                reached[child] = true;
                stack.push(child);
            }
        }
    }
    if let Some(i) = reached.iter().position(|r| !r) {
        let why = if parent[i].is_some() {
            "it lies on a cycle"
        } else {
            "no node points to it"
        };
        return Err(c.fail(
            npath.index(i),
            SpecProblem::TreeShape(format!("node {i} is not reachable from the root: {why}")),
        ));
    }
    Ok(())
}

fn check_network(
    c: &Checker<'_>,
    path: &FieldPath,
    net: &NetworkSpec,
    tensor_granularity: bool,
) -> Result<(), SpecError> {
    c.names(path.key("features"), &net.features, "feature name")?;
    let ishape = path.key("input_shape");
    if net.input_shape.is_empty()
        || net.input_shape.len() > network::MAX_RANK
        || net.input_shape.contains(&0)
    {
        return Err(c.layer(
            ishape,
            format!(
                "input_shape {:?} must have 1 to {} non-zero dimensions",
                net.input_shape,
                network::MAX_RANK
            ),
        ));
    }
    c.len(
        path.key("features"),
        net.features.len(),
        network::numel(&net.input_shape),
    )?;
    let lpath = path.key("layers");
    if net.layers.is_empty() {
        return Err(c.fail(lpath, SpecProblem::Empty("layers")));
    }
    if net.layers.len() > network::MAX_LAYERS {
        return Err(c.layer(
            lpath,
            format!(
                "{} layers, more than the {} accepted",
                net.layers.len(),
                network::MAX_LAYERS
            ),
        ));
    }
    for (i, layer) in net.layers.iter().enumerate() {
        let p = lpath.index(i);
        if layer.name.trim().is_empty() {
            return Err(c.fail(p.key("name"), SpecProblem::Empty("layer name")));
        }
        if layer.name == INPUT || net.layers[..i].iter().any(|l| l.name == layer.name) {
            return Err(c.fail(p.key("name"), SpecProblem::Duplicate(layer.name.clone())));
        }
        let fields = layer.op_fields();
        let Some(op) = layer.op() else {
            return Err(c.layer(
                p,
                if fields.is_empty() {
                    "a layer needs one op: dense, conv2d, avg_pool2d, max_pool2d, pad, \
                     activation, binary, reshape or transpose"
                        .to_owned()
                } else {
                    format!("a layer holds one op, found {}", fields.join(", "))
                },
            ));
        };
        let weighted = matches!(op, LayerOp::Dense(_) | LayerOp::Conv2d(_));
        let activated = matches!(op, LayerOp::Activation(_) | LayerOp::MaxPool2d(_));
        for (field, bits, allowed) in [
            ("weight_bits", layer.weight_bits, weighted),
            ("activation_bits", layer.activation_bits, activated),
            ("rounding_bits", layer.rounding_bits, activated),
        ] {
            let Some(bits) = bits else { continue };
            if !allowed {
                return Err(c.layer(
                    p.key(field),
                    format!("`{field}` does not apply to a {} layer", fields[0]),
                ));
            }
            c.bits(p.key(field), bits)?;
        }
        if let Some(ranges) = &layer.ranges {
            if !activated {
                return Err(c.layer(
                    p.key("ranges"),
                    format!("`ranges` does not apply to a {} layer", fields[0]),
                ));
            }
            for (k, [lo, hi]) in ranges.iter().copied().enumerate() {
                c.finite(p.key("ranges").index(k).index(0), lo)?;
                c.finite(p.key("ranges").index(k).index(1), hi)?;
                if lo > hi {
                    return Err(c.fail(p.key("ranges").index(k), SpecProblem::Range { lo, hi }));
                }
            }
        }
        match op {
            LayerOp::Dense(d) => {
                let dp = p.key("dense");
                if d.weights.is_empty() {
                    return Err(c.fail(dp.key("weights"), SpecProblem::Empty("weights")));
                }
                let n: usize = d.weights.iter().map(Vec::len).sum();
                if n > network::MAX_LAYER_WEIGHTS {
                    return Err(c.layer(
                        dp.key("weights"),
                        format!(
                            "{n} weights, more than the {} accepted",
                            network::MAX_LAYER_WEIGHTS
                        ),
                    ));
                }
                for (r, row) in d.weights.iter().enumerate() {
                    c.all_finite(dp.key("weights").index(r), row)?;
                }
                c.len(dp.key("bias"), d.bias.len(), d.weights.len())?;
                c.all_finite(dp.key("bias"), &d.bias)?;
            }
            LayerOp::Conv2d(conv) => {
                let cp = p.key("conv2d");
                if conv.out_channels == 0 {
                    return Err(c.fail(cp.key("out_channels"), SpecProblem::Empty("out_channels")));
                }
                for (field, v) in [("kernel", conv.kernel), ("strides", conv.strides)] {
                    if v.contains(&0) {
                        return Err(
                            c.layer(cp.key(field), format!("{field} {v:?} must be positive"))
                        );
                    }
                }
                if conv.weights.len() > network::MAX_LAYER_WEIGHTS {
                    return Err(c.layer(
                        cp.key("weights"),
                        format!(
                            "{} weights, more than the {} accepted",
                            conv.weights.len(),
                            network::MAX_LAYER_WEIGHTS
                        ),
                    ));
                }
                c.all_finite(cp.key("weights"), &conv.weights)?;
                c.len(cp.key("bias"), conv.bias.len(), conv.out_channels)?;
                c.all_finite(cp.key("bias"), &conv.bias)?;
            }
            LayerOp::AvgPool2d(pool) | LayerOp::MaxPool2d(pool) => {
                let key = fields[0];
                for (field, v) in [("kernel", pool.kernel), ("strides", pool.strides)] {
                    if v.contains(&0) {
                        return Err(c.layer(
                            p.key(key).key(field),
                            format!("{field} {v:?} must be positive"),
                        ));
                    }
                }
                if pool.count_include_pad && key == "max_pool2d" {
                    return Err(c.fail(
                        p.key(key).key("count_include_pad"),
                        SpecProblem::Unexpected("count_include_pad (average pooling only)"),
                    ));
                }
            }
            LayerOp::Activation(chain) => {
                let ap = p.key("activation");
                if chain.is_empty() {
                    return Err(c.fail(ap, SpecProblem::Empty("activation")));
                }
                for (k, f) in chain.iter().enumerate() {
                    check_elementwise(c, ap.index(k), f)?;
                }
            }
            LayerOp::Pad(_) | LayerOp::Binary(_) | LayerOp::Reshape(_) | LayerOp::Transpose(_) => {}
        }
        for (k, name) in net.layer_inputs(i).into_iter().enumerate() {
            if let Err(m) = net.resolve(i, name) {
                let ip = if layer.inputs.is_some() {
                    p.key("inputs").index(k)
                } else {
                    p.clone()
                };
                return Err(c.layer(ip, m));
            }
        }
    }
    let shapes = net.shapes().map_err(|(i, m)| {
        c.layer(
            lpath.index(i),
            format!("layer `{}`: {m}", net.layers[i].name),
        )
    })?;
    for (i, layer) in net.layers.iter().enumerate() {
        if let Some(ranges) = &layer.ranges {
            let expected = network::n_channels(&shapes[i], tensor_granularity);
            c.len(lpath.index(i).key("ranges"), ranges.len(), expected)?;
        }
    }
    let n_outputs = network::numel(shapes.last().map(Vec::as_slice).unwrap_or(&[]));
    match c.classes(path.key("classes"), net.classes.as_deref(), net.task)? {
        Some(n_classes) => {
            let ok = match net.link {
                Link::Sigmoid => n_classes == 2 && n_outputs == 1,
                Link::Softmax | Link::Identity => n_outputs == n_classes,
                Link::Exp => false,
            };
            if !ok {
                return Err(c.layer(
                    path.key("link"),
                    format!(
                        "link `{}` with {n_classes} classes does not fit the last layer's \
                         {n_outputs} outputs (sigmoid: one output for two classes; softmax or \
                         identity: one output per class)",
                        net.link.name()
                    ),
                ));
            }
        }
        None => {
            if !matches!(net.link, Link::Identity) {
                return Err(c.fail(
                    path.key("link"),
                    SpecProblem::Link {
                        link: net.link.name(),
                        estimator: "a regression network".into(),
                    },
                ));
            }
            if n_outputs != 1 {
                return Err(c.layer(
                    lpath.index(net.layers.len() - 1),
                    format!("a regression network has one output, the last layer has {n_outputs}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_elementwise(
    c: &Checker<'_>,
    path: FieldPath,
    f: &network::ElementwiseSpec,
) -> Result<(), SpecError> {
    let allowed = f.op.parameters();
    for (name, set) in [
        ("alpha", f.alpha.is_some()),
        ("beta", f.beta.is_some()),
        ("gamma", f.gamma.is_some()),
        ("min", f.min.is_some()),
        ("max", f.max.is_some()),
        ("value", f.value.is_some()),
        ("values", f.values.is_some()),
    ] {
        if set && !allowed.contains(&name) {
            return Err(c.layer(
                path.key(name),
                format!("`{}` takes no `{name}`", f.op.name()),
            ));
        }
    }
    for (name, v) in [
        ("alpha", f.alpha),
        ("beta", f.beta),
        ("gamma", f.gamma),
        ("min", f.min),
        ("max", f.max),
        ("value", f.value),
    ] {
        if let Some(v) = v {
            c.finite(path.key(name), v)?;
        }
    }
    if let Some(values) = &f.values {
        c.all_finite(path.key("values"), values)?;
    }
    if f.op.is_affine() && f.op != network::ElementwiseOp::Neg {
        match (&f.value, &f.values) {
            (Some(_), Some(_)) => {
                return Err(c.layer(
                    path,
                    format!("`{}` takes `value` or `values`, not both", f.op.name()),
                ))
            }
            (None, None) => return Err(c.fail(path, SpecProblem::Missing("value"))),
            _ => {}
        }
        if f.op == network::ElementwiseOp::Div {
            let zero = f.value == Some(0.0) || f.values.iter().flatten().any(|v| *v == 0.0);
            if zero {
                return Err(c.layer(path, "division by zero"));
            }
        }
    }
    if let (Some(lo), Some(hi)) = (f.min, f.max) {
        if lo > hi {
            return Err(c.fail(path, SpecProblem::Range { lo, hi }));
        }
    }
    Ok(())
}

//! XGBoost: [`xgboost_json`] and [`xgboost_bytes`] read XGBoost's own model
//! format, JSON or UBJSON (what `model.save_model("model.json")` or
//! `save_model("model.ubj")` writes), from 1.x to 3.x, `gbtree` booster,
//! numerical splits:
//!
//! - `binary:logistic` / `binary:logitraw` become a sigmoid classifier,
//!   `multi:softprob` / `multi:softmax` a softmax one (each tree adds to the
//!   class in `tree_info`, or, with `multi_strategy="multi_output_tree"`,
//!   to every class from its vector leaves), the squared-error family an
//!   identity-link regressor and `count:poisson`, `reg:gamma`, `reg:tweedie`
//!   an exp-link one;
//! - forests (`num_parallel_tree > 1`, `XGBRF*`) are sums of trees like
//!   any other booster;
//! - a split sends a sample left when `x < split_condition`
//!   ([`Comparison::Lt`]) and a missing value (NaN) to its `default_left`
//!   side; a leaf's value is its `split_condition` (learning rate
//!   included). Both are XGBoost `f32`s, read back as the exact `f32`;
//! - `base_score` is one number (1.x) or a bracketed vector, one per output
//!   (2.x, 3.x); the base margin is its logit for `binary:logistic`, its log
//!   for the exp-link objectives, itself otherwise.
//!
//! Categorical splits are refused with the feature's name.
//!
//! ```
//! use cml_runtime::import::{xgboost_json, ImportOptions};
//!
//! let json = r#"{"version": [1, 6, 2], "learner": {
//!   "feature_names": ["a", "b"], "feature_types": [],
//!   "learner_model_param": {"base_score": "5E-1", "num_class": "0", "num_feature": "2"},
//!   "objective": {"name": "reg:squarederror"},
//!   "gradient_booster": {"name": "gbtree", "model": {
//!     "tree_info": [0],
//!     "trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1],
//!                "split_indices": [1, 0, 0], "split_conditions": [0.5, -1.0, 2.0]}]}}}}"#;
//! let spec = xgboost_json(json, "model.json", &ImportOptions::default()).unwrap();
//! let e = spec.ensemble().unwrap();
//! assert_eq!(e.float_scores(&[0.0, 0.25]), vec![-0.5]); // 0.5 + (-1.0)
//! assert_eq!(e.float_scores(&[0.0, 0.75]), vec![2.5]);
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{spec_name, ImportOptions};
use crate::error::ImportError;
use crate::spec::{
    Aggregation, Comparison, EnsembleSpec, Link, ModelKind, ModelSpec, NodeSpec, Precision,
    QuantizationSpec, Side, Source, Task, TreeEstimator, TreeSpec, FORMAT_V1,
};

#[derive(Deserialize)]
struct Root {
    learner: Learner,
    #[serde(default)]
    version: Vec<u32>,
}

#[derive(Deserialize)]
struct Learner {
    #[serde(default)]
    feature_names: Vec<String>,
    #[serde(default)]
    feature_types: Vec<String>,
    gradient_booster: Booster,
    learner_model_param: ModelParam,
    objective: Objective,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    #[serde(default)]
    model: Option<GbModel>,
}

#[derive(Deserialize)]
struct GbModel {
    tree_info: Vec<usize>,
    trees: Vec<Tree>,
}

/// `default_left`: booleans in some JSON writers, 0/1 integers in others.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl Flag {
    fn is_set(self) -> bool {
        match self {
            Flag::Bool(b) => b,
            Flag::Int(i) => i != 0,
        }
    }
}

#[derive(Deserialize)]
struct Tree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    /// `null` for NaN (written for the leaves of vector-leaf trees).
    split_conditions: Vec<Option<f64>>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default)]
    default_left: Vec<Flag>,
    #[serde(default)]
    base_weights: Vec<Option<f64>>,
    /// 3.x vector-leaf trees: leaf `r`'s values at `[r k, (r + 1) k)`,
    /// with `r` in the leaf's `right_children`.
    #[serde(default)]
    leaf_weights: Option<Vec<Option<f64>>>,
    #[serde(default)]
    tree_param: Option<TreeParam>,
}

#[derive(Deserialize)]
struct TreeParam {
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

/// Reads an XGBoost JSON model (see the module docs). `origin` names the
/// file in errors.
pub fn xgboost_json(
    json: &str,
    origin: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let file = origin.as_ref().to_path_buf();
    let json = nan_as_null(json);
    let de = &mut serde_json::Deserializer::from_str(&json);
    let root: Root = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        ImportError::Json {
            file: file.clone(),
            line: inner.line(),
            column: inner.column(),
            path,
            message: inner.to_string(),
        }
    })?;
    convert(root, file, options)
}

/// Reads an XGBoost model in either of its formats: JSON, or UBJSON (its
/// binary form, what `save_model` writes for names not ending in `.json`).
pub fn xgboost_bytes(
    bytes: &[u8],
    origin: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let file = origin.as_ref().to_path_buf();
    if is_json(bytes) {
        let text = std::str::from_utf8(bytes).map_err(|e| ImportError::Binary {
            file: file.clone(),
            offset: e.valid_up_to(),
            message: "a JSON model must be UTF-8".into(),
        })?;
        return xgboost_json(text, file, options);
    }
    let value = super::ubjson::parse(bytes).map_err(|e| ImportError::Binary {
        file: file.clone(),
        offset: e.offset,
        message: format!("UBJSON: {}", e.message),
    })?;
    let root: Root = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ImportError::Field {
            file: file.clone(),
            field: path,
            message: err.into_inner().to_string(),
        }
    })?;
    convert(root, file, options)
}

/// XGBoost's JSON writer prints non-finite floats as bare `NaN`,
/// `Infinity` and `-Infinity`, which JSON has no syntax for: they become
/// `null` (outside strings), which the fields that may hold them read as
/// "no number". Same length is not kept; positions in errors then refer
/// to the rewritten text only after such a token.
fn nan_as_null(json: &str) -> std::borrow::Cow<'_, str> {
    if !json.contains("NaN") && !json.contains("Infinity") {
        return json.into();
    }
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else {
            let token = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|t| rest.starts_with(t));
            if let Some(t) = token {
                out.push_str("null");
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// Whether bytes look like a JSON document (an object whose first key is a
/// quoted string) rather than UBJSON (whose keys start with a length).
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    let mut it = bytes.iter().skip_while(|b| b.is_ascii_whitespace());
    it.next() == Some(&b'{') && matches!(it.find(|b| !b.is_ascii_whitespace()), Some(b'"' | b'}'))
}

/// Parses `base_score`: `"5E-1"` (1.x) or `"[5E-1]"`, `"[1E0,2E0]"` (2.x+).
fn base_scores(text: &str) -> Option<Vec<f64>> {
    let t = text.trim();
    let inner = match t.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => t,
    };
    let values: Option<Vec<f64>> = inner
        .split(',')
        .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect();
    values.filter(|v| !v.is_empty() && v.len() <= 1 << 16)
}

fn convert(root: Root, file: PathBuf, options: &ImportOptions) -> Result<ModelSpec, ImportError> {
    let bad = |field: String, message: String| ImportError::Field {
        file: file.clone(),
        field,
        message,
    };
    let learner = root.learner;
    if learner.gradient_booster.name != "gbtree" {
        return Err(bad(
            "learner.gradient_booster.name".into(),
            format!(
                "booster `{}` is not supported, only `gbtree`",
                learner.gradient_booster.name
            ),
        ));
    }
    let model = learner.gradient_booster.model.ok_or_else(|| {
        bad(
            "learner.gradient_booster.model".into(),
            "missing: no trees".into(),
        )
    })?;
    let param = &learner.learner_model_param;
    let count = |field: &str, text: &str| -> Result<usize, ImportError> {
        text.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= 1 << 20)
            .ok_or_else(|| {
                bad(
                    format!("learner.learner_model_param.{field}"),
                    format!("`{text}` is not a count"),
                )
            })
    };
    let base_scores = base_scores(&param.base_score).ok_or_else(|| {
        bad(
            "learner.learner_model_param.base_score".into(),
            format!(
                "`{}` is neither a finite number nor a bracketed list of them",
                param.base_score
            ),
        )
    })?;
    let n_features = count("num_feature", &param.num_feature)?;
    if n_features == 0 {
        return Err(bad(
            "learner.learner_model_param.num_feature".into(),
            "0 features".into(),
        ));
    }
    let num_class = match &param.num_class {
        Some(t) => count("num_class", t)?,
        None => 0,
    };
    if let Some(t) = &param.num_target {
        if count("num_target", t)? > 1 {
            return Err(bad(
                "learner.learner_model_param.num_target".into(),
                format!("{t} targets: multi-target regression is not supported"),
            ));
        }
    }

    let objective = learner.objective.name.as_str();
    let (estimator, task, link, n_outputs) = match objective {
        "binary:logistic" | "binary:logitraw" => (
            TreeEstimator::XgbClassifier,
            Task::Classification,
            Link::Sigmoid,
            1,
        ),
        "multi:softprob" | "multi:softmax" => {
            if num_class < 3 {
                return Err(bad(
                    "learner.learner_model_param.num_class".into(),
                    format!("{num_class} classes: a multiclass objective needs at least 3"),
                ));
            }
            (
                TreeEstimator::XgbClassifier,
                Task::Classification,
                Link::Softmax,
                num_class,
            )
        }
        "reg:squarederror"
        | "reg:linear"
        | "reg:absoluteerror"
        | "reg:pseudohubererror"
        | "reg:squaredlogerror"
        | "reg:quantileerror" => (
            TreeEstimator::XgbRegressor,
            Task::Regression,
            Link::Identity,
            1,
        ),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => {
            (TreeEstimator::XgbRegressor, Task::Regression, Link::Exp, 1)
        }
        other => {
            return Err(bad(
                "learner.objective.name".into(),
                format!(
                    "objective `{other}` is not supported (binary:logistic, binary:logitraw, \
                     multi:softprob, multi:softmax, reg:squarederror and the other \
                     identity-link regressions, count:poisson, reg:gamma, reg:tweedie)"
                ),
            ))
        }
    };
    let base_scores = match base_scores.len() {
        1 => vec![base_scores[0]; n_outputs],
        n if n == n_outputs => base_scores,
        n => {
            return Err(bad(
                "learner.learner_model_param.base_score".into(),
                format!("{n} values for a model with {n_outputs} output(s)"),
            ))
        }
    };
    // base_score is in the objective's output space; the trees add margins.
    // XGBoost converts it in single precision (`ProbToMargin` on a float),
    // and so do we, to reproduce its margins to the last bit it keeps.
    let base: Vec<f64> = base_scores
        .iter()
        .map(|&b| match objective {
            "binary:logistic" => {
                let p = b as f32;
                if p > 0.0 && p < 1.0 {
                    // `+ 0.0`: p = 0.5 gives a margin of +0, not −0.
                    Ok(f64::from(-(1.0 / p - 1.0).ln()) + 0.0)
                } else {
                    Err(format!("{b} is not a probability in (0, 1)"))
                }
            }
            _ if link == Link::Exp => {
                if b as f32 > 0.0 {
                    Ok(f64::from((b as f32).ln()))
                } else {
                    Err(format!("{b} is not positive, as `{objective}` needs"))
                }
            }
            _ => Ok(b),
        })
        .collect::<Result<_, _>>()
        .map_err(|m| bad("learner.learner_model_param.base_score".into(), m))?;

    let features = if learner.feature_names.is_empty() {
        (0..n_features).map(|j| format!("f{j}")).collect()
    } else if learner.feature_names.len() != n_features {
        return Err(bad(
            "learner.feature_names".into(),
            format!(
                "{} names for {n_features} features",
                learner.feature_names.len()
            ),
        ));
    } else {
        learner.feature_names
    };
    if let Some(j) = learner.feature_types.iter().position(|t| t == "c") {
        return Err(bad(
            format!("learner.feature_types[{j}]"),
            format!(
                "feature `{}` is categorical; categorical splits are not supported \
                 (one-hot encode it, or train with enable_categorical=False)",
                features.get(j).map_or("?", String::as_str)
            ),
        ));
    }

    if model.tree_info.len() != model.trees.len() {
        return Err(bad(
            "learner.gradient_booster.model.tree_info".into(),
            format!(
                "{} entries for {} trees",
                model.tree_info.len(),
                model.trees.len()
            ),
        ));
    }
    let mut trees = Vec::with_capacity(model.trees.len());
    for (t, (tree, &class)) in model.trees.iter().zip(&model.tree_info).enumerate() {
        trees.push(convert_tree(tree, t, class, n_outputs, &features, &file)?);
    }

    let classes = match (task, &options.classes) {
        (Task::Regression, _) => None,
        (Task::Classification, given) => {
            let k = if n_outputs == 1 { 2 } else { n_outputs };
            match given {
                Some(names) if names.len() != k => {
                    return Err(ImportError::Classes {
                        file,
                        given: names.len(),
                        expected: k,
                    })
                }
                Some(names) => Some(names.clone()),
                None => Some((0..k).map(|c| c.to_string()).collect()),
            }
        }
    };
    let name = options.name.clone().unwrap_or_else(|| spec_name(&file));
    let version = (!root.version.is_empty()).then(|| {
        root.version
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(".")
    });
    let spec = ModelSpec {
        format: FORMAT_V1.into(),
        name,
        description: Some(format!(
            "XGBoost `{objective}` model ({} trees), imported from {}",
            trees.len(),
            file.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        )),
        source: Some(Source {
            library: "xgboost".into(),
            version,
            estimator: Some(
                match task {
                    Task::Classification => "XGBClassifier",
                    Task::Regression => "XGBRegressor",
                }
                .into(),
            ),
        }),
        model: ModelKind::Ensemble(EnsembleSpec {
            estimator,
            task,
            link,
            features,
            classes,
            comparison: Comparison::Lt,
            precision: Precision::Single,
            accepts_missing: options.accepts_missing.clone(),
            aggregation: Aggregation::Sum,
            base_score: base,
            trees,
        }),
        quantization: QuantizationSpec {
            input_bits: options.input_bits,
            input_ranges: options.input_ranges.clone(),
            ..QuantizationSpec::default()
        },
        data: options.data.clone(),
    };
    // Shape checks (cycles, shared or unreachable nodes) on the result.
    spec.check(&file)?;
    Ok(spec)
}

/// One XGBoost tree: scalar leaves adding to `class`, or vector leaves
/// (`size_leaf_vector > 1`, `multi_output_tree`) adding to every output.
fn convert_tree(
    tree: &Tree,
    t: usize,
    class: usize,
    n_outputs: usize,
    features: &[String],
    file: &Path,
) -> Result<TreeSpec, ImportError> {
    let tpath = format!("learner.gradient_booster.model.trees[{t}]");
    let bad = |field: String, message: String| ImportError::Field {
        file: file.to_path_buf(),
        field: format!("{tpath}.{field}"),
        message,
    };
    let n = tree.left_children.len();
    if n == 0 {
        return Err(bad("left_children".into(), "no nodes".into()));
    }
    for (field, len) in [
        ("right_children", tree.right_children.len()),
        ("split_indices", tree.split_indices.len()),
        ("split_conditions", tree.split_conditions.len()),
    ] {
        if len != n {
            return Err(bad(
                field.into(),
                format!("{len} entries, but left_children has {n}"),
            ));
        }
    }
    if !tree.default_left.is_empty() && tree.default_left.len() != n {
        return Err(bad(
            "default_left".into(),
            format!(
                "{} entries, but left_children has {n}",
                tree.default_left.len()
            ),
        ));
    }
    let leaf_size = match tree
        .tree_param
        .as_ref()
        .and_then(|p| p.size_leaf_vector.as_deref())
    {
        None => 1,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(0 | 1) => 1,
            Ok(k) if k == n_outputs => k,
            _ => {
                return Err(bad(
                    "tree_param.size_leaf_vector".into(),
                    format!("`{text}`: the model has {n_outputs} output(s)"),
                ))
            }
        },
    };
    if leaf_size > 1 && tree.leaf_weights.is_none() && tree.base_weights.len() != n * leaf_size {
        return Err(bad(
            "base_weights".into(),
            format!(
                "{} entries, but {n} nodes with {leaf_size}-value leaves need {}",
                tree.base_weights.len(),
                n * leaf_size
            ),
        ));
    }
    if leaf_size == 1 && class >= n_outputs {
        return Err(ImportError::Field {
            file: file.to_path_buf(),
            field: format!("learner.gradient_booster.model.tree_info[{t}]"),
            message: format!("class {class}, but the model has {n_outputs} output(s)"),
        });
    }
    let child = |field: &str, i: usize, c: i64| -> Result<usize, ImportError> {
        usize::try_from(c).ok().filter(|&c| c < n).ok_or_else(|| {
            bad(
                format!("{field}[{i}]"),
                format!("child {c} does not exist: the tree has {n} nodes"),
            )
        })
    };
    // XGBoost stores thresholds and leaf values as f32; its JSON prints
    // them as short decimals. Back to the exact f32.
    let f32_value = |field: &str, i: usize, v: Option<f64>| -> Result<f64, ImportError> {
        match v.map(|v| f64::from(v as f32)) {
            Some(v) if v.is_finite() => Ok(v),
            Some(v) => Err(bad(format!("{field}[{i}]"), format!("{v} is not finite"))),
            None => Err(bad(format!("{field}[{i}]"), "NaN is not a number".into())),
        }
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let (l, r) = (tree.left_children[i], tree.right_children[i]);
        if l == -1 {
            nodes.push(NodeSpec::leaf(if leaf_size > 1 {
                // 2.x: the node's own slot of `base_weights`; 3.x: the slot
                // of `leaf_weights` its right child names.
                let (field, weights, slot) = match &tree.leaf_weights {
                    Some(w) => ("leaf_weights", w, usize::try_from(r).ok()),
                    None => ("base_weights", &tree.base_weights, Some(i)),
                };
                let slot = slot
                    .filter(|&j| (j + 1) * leaf_size <= weights.len())
                    .ok_or_else(|| {
                        bad(
                            format!("right_children[{i}]"),
                            format!(
                                "leaf {r} has no values in {field} ({} entries)",
                                weights.len()
                            ),
                        )
                    })?;
                (0..leaf_size)
                    .map(|k| {
                        let at = slot * leaf_size + k;
                        f32_value(field, at, weights[at])
                    })
                    .collect::<Result<_, _>>()?
            } else {
                vec![f32_value("split_conditions", i, tree.split_conditions[i])?]
            }));
            continue;
        }
        let (l, r) = (
            child("left_children", i, l)?,
            child("right_children", i, r)?,
        );
        let feature = usize::try_from(tree.split_indices[i])
            .ok()
            .filter(|&f| f < features.len())
            .ok_or_else(|| {
                bad(
                    format!("split_indices[{i}]"),
                    format!(
                        "feature {} is out of range: the model has {} features",
                        tree.split_indices[i],
                        features.len()
                    ),
                )
            })?;
        if tree.split_type.get(i).is_some_and(|&s| s != 0) {
            return Err(bad(
                format!("split_type[{i}]"),
                format!(
                    "a categorical split on feature `{}`; categorical splits are not supported",
                    features[feature]
                ),
            ));
        }
        let threshold = f32_value("split_conditions", i, tree.split_conditions[i])?;
        let mut node = NodeSpec::split(feature, threshold, l, r);
        node.missing =
            tree.default_left
                .get(i)
                .map(|d| if d.is_set() { Side::Left } else { Side::Right });
        nodes.push(node);
    }
    Ok(TreeSpec {
        output: (n_outputs > 1 && leaf_size == 1).then_some(class),
        nodes,
    })
}

/// Reads an XGBoost model file, JSON or UBJSON (the two are told apart by
/// their first bytes, not by the file's name).
pub fn xgboost_file(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let path = path.as_ref();
    let bytes = super::read_model_file(path)?;
    xgboost_bytes(&bytes, path, options)
}

/// The name [`xgboost_file`] had when only JSON was read; it reads both.
pub fn xgboost_json_file(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    xgboost_file(path, options)
}

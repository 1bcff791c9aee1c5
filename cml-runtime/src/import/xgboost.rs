//! XGBoost: [`xgboost_json`] reads XGBoost's own JSON model format (what
//! `model.save_model("model.json")` writes, `gbtree` booster, numerical
//! splits): `binary:logistic` / `binary:logitraw` become a sigmoid
//! classifier, `multi:softprob` / `multi:softmax` a softmax one (each tree
//! adds to the class in `tree_info`), `reg:squarederror` and the other
//! identity-link regression objectives a regressor. A split sends a sample
//! left when `x < split_condition` ([`Comparison::Lt`]); a leaf's value is
//! its `split_condition` (learning rate included). Both are XGBoost `f32`s
//! and are read back as the exact `f32` value. The base margin is
//! `logit(base_score)` for `binary:logistic`, `base_score` otherwise.
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

use std::path::Path;

use serde::Deserialize;

use super::{spec_name, ImportOptions};
use crate::error::ImportError;
use crate::spec::{
    Aggregation, Comparison, EnsembleSpec, Link, ModelKind, ModelSpec, NodeSpec, QuantizationSpec,
    Source, Task, TreeEstimator, TreeSpec, FORMAT_V1,
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

#[derive(Deserialize)]
struct Tree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f64>,
    #[serde(default)]
    split_type: Vec<i64>,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
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
    let de = &mut serde_json::Deserializer::from_str(json);
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
    let number = |field: &str, text: &str| -> Result<f64, ImportError> {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                bad(
                    format!("learner.learner_model_param.{field}"),
                    format!("`{text}` is not a finite number"),
                )
            })
    };
    let base_score = number("base_score", &param.base_score)?;
    let n_features = number("num_feature", &param.num_feature)?;
    if n_features < 1.0 || n_features.fract() != 0.0 || n_features > 1e6 {
        return Err(bad(
            "learner.learner_model_param.num_feature".into(),
            format!("`{}` is not a feature count", param.num_feature),
        ));
    }
    let n_features = n_features as usize;
    let num_class = match &param.num_class {
        Some(t) => number("num_class", t)? as usize,
        None => 0,
    };

    let objective = learner.objective.name.as_str();
    let (estimator, task, link, n_outputs, base) = match objective {
        "binary:logistic" => {
            if !(base_score > 0.0 && base_score < 1.0) {
                return Err(bad(
                    "learner.learner_model_param.base_score".into(),
                    format!("{base_score} is not a probability in (0, 1)"),
                ));
            }
            let margin = (base_score / (1.0 - base_score)).ln();
            (
                TreeEstimator::XgbClassifier,
                Task::Classification,
                Link::Sigmoid,
                1,
                margin,
            )
        }
        "binary:logitraw" => (
            TreeEstimator::XgbClassifier,
            Task::Classification,
            Link::Sigmoid,
            1,
            base_score,
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
                base_score,
            )
        }
        "reg:squarederror"
        | "reg:linear"
        | "reg:absoluteerror"
        | "reg:pseudohubererror"
        | "reg:squaredlogerror" => (
            TreeEstimator::XgbRegressor,
            Task::Regression,
            Link::Identity,
            1,
            base_score,
        ),
        other => {
            return Err(bad(
                "learner.objective.name".into(),
                format!(
                    "objective `{other}` is not supported (binary:logistic, binary:logitraw, \
                     multi:softprob, multi:softmax, reg:squarederror)"
                ),
            ))
        }
    };

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
        let tpath = format!("learner.gradient_booster.model.trees[{t}]");
        let n = tree.left_children.len();
        for (field, len) in [
            ("right_children", tree.right_children.len()),
            ("split_indices", tree.split_indices.len()),
            ("split_conditions", tree.split_conditions.len()),
        ] {
            if len != n {
                return Err(bad(
                    format!("{tpath}.{field}"),
                    format!("{len} entries, but left_children has {n}"),
                ));
            }
        }
        if n == 0 {
            return Err(bad(format!("{tpath}.left_children"), "no nodes".into()));
        }
        if let Some(i) = tree.split_type.iter().position(|&s| s != 0) {
            return Err(bad(
                format!("{tpath}.split_type[{i}]"),
                "categorical splits are not supported".into(),
            ));
        }
        if class >= n_outputs {
            return Err(bad(
                format!("learner.gradient_booster.model.tree_info[{t}]"),
                format!("class {class}, but the model has {n_outputs} output(s)"),
            ));
        }
        let child = |field: &str, i: usize, c: i64| -> Result<usize, ImportError> {
            usize::try_from(c).ok().filter(|&c| c < n).ok_or_else(|| {
                bad(
                    format!("{tpath}.{field}[{i}]"),
                    format!("child {c} does not exist: the tree has {n} nodes"),
                )
            })
        };
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let (l, r) = (tree.left_children[i], tree.right_children[i]);
            // XGBoost stores thresholds and leaf values as f32; its JSON
            // prints them as short decimals. Back to the exact f32.
            let value = f64::from(tree.split_conditions[i] as f32);
            if !value.is_finite() {
                return Err(bad(
                    format!("{tpath}.split_conditions[{i}]"),
                    format!("{value} is not finite"),
                ));
            }
            if l == -1 && r == -1 {
                nodes.push(NodeSpec::leaf(vec![value]));
                continue;
            }
            let (l, r) = (
                child("left_children", i, l)?,
                child("right_children", i, r)?,
            );
            let feature = usize::try_from(tree.split_indices[i])
                .ok()
                .filter(|&f| f < n_features)
                .ok_or_else(|| {
                    bad(
                        format!("{tpath}.split_indices[{i}]"),
                        format!(
                            "feature {} is out of range: the model has {n_features} features",
                            tree.split_indices[i]
                        ),
                    )
                })?;
            nodes.push(NodeSpec::split(feature, value, l, r));
        }
        trees.push(TreeSpec {
            output: (n_outputs > 1).then_some(class),
            nodes,
        });
    }

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
    let classes = (task == Task::Classification).then(|| {
        let k = if n_outputs == 1 { 2 } else { n_outputs };
        options
            .classes
            .clone()
            .unwrap_or_else(|| (0..k).map(|c| c.to_string()).collect())
    });
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
            aggregation: Aggregation::Sum,
            base_score: vec![base; n_outputs],
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

/// Reads an XGBoost JSON model file.
pub fn xgboost_json_file(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    if meta.len() > crate::spec::MAX_SPEC_BYTES {
        return Err(ImportError::Field {
            file: path.to_path_buf(),
            field: String::new(),
            message: format!(
                "{} bytes, more than the {} accepted",
                meta.len(),
                crate::spec::MAX_SPEC_BYTES
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    xgboost_json(&text, path, options)
}

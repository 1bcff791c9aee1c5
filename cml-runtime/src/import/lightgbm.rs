//! LightGBM: [`lightgbm_text`] reads the text model that
//! `booster.save_model("model.txt")` writes (LightGBM 3.x and 4.x).
//!
//! - `binary` becomes a sigmoid classifier, `multiclass` a softmax one (tree
//!   `t` adds to class `t mod num_tree_per_iteration`), the regression
//!   objectives (`regression`, `regression_l1`, `huber`, `fair`,
//!   `quantile`, `mape`) identity-link regressors and `poisson`, `gamma`,
//!   `tweedie` exp-link ones. Leaf values already hold the learning rate and
//!   the initial score, so the base score is 0; `boosting=rf` models
//!   (`average_output`) average their trees.
//! - A split sends a sample left when `x <= threshold` ([`Comparison::Le`]),
//!   compared in double precision ([`Precision::Double`]); thresholds are
//!   read as the exact doubles LightGBM printed.
//! - Missing values follow LightGBM's `decision_type`: with missing type
//!   `NaN` a missing value takes the split's default side; with `None`
//!   LightGBM compares it as `0.0`, so it takes the side `0.0` takes.
//!   Missing type `Zero` (`zero_as_missing=true`) treats every zero as
//!   missing, which cml cannot tell apart under encryption: refused, as are
//!   categorical splits, linear trees and `sigmoid` parameters other than 1,
//!   each with the tree, node and feature named.
//!
//! LightGBM replaces spaces in feature names with `_` when it trains; see
//! [`super::match_csv_names`] for how `cml import` matches them to a CSV.
//!
//! ```
//! use cml_runtime::import::{lightgbm_text, ImportOptions};
//!
//! let text = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\n\
//!     max_feature_idx=1\nobjective=regression\nfeature_names=a b\n\n\
//!     Tree=0\nnum_leaves=2\nnum_cat=0\nsplit_feature=1\nthreshold=0.5\n\
//!     decision_type=2\nleft_child=-1\nright_child=-2\nleaf_value=-1 2\n\
//!     shrinkage=1\n\nend of trees\n";
//! let spec = lightgbm_text(text, "model.txt", &ImportOptions::default()).unwrap();
//! let e = spec.ensemble().unwrap();
//! assert_eq!(e.float_scores(&[0.0, 0.5]), vec![-1.0]);
//! assert_eq!(e.float_scores(&[0.0, 0.75]), vec![2.0]);
//! assert_eq!(e.float_scores(&[0.0, f64::NAN]), vec![-1.0]); // as 0.0
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{spec_name, ImportOptions};
use crate::error::ImportError;
use crate::spec::{
    Aggregation, Comparison, EnsembleSpec, Link, ModelKind, ModelSpec, NodeSpec, Precision,
    QuantizationSpec, Side, Source, Task, TreeEstimator, TreeSpec, FORMAT_V1,
};

/// Most trees read from one file.
const MAX_TREES: usize = 1 << 16;

/// One `key=value` section: the header or a tree, with each key's line.
struct Section<'a> {
    values: HashMap<&'a str, (&'a str, usize)>,
    /// Line of the section's first line.
    line: usize,
}

struct Parser<'a> {
    file: &'a Path,
}

impl Parser<'_> {
    fn fail(&self, line: usize, message: impl Into<String>) -> ImportError {
        ImportError::Text {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    fn get<'s>(&self, s: &Section<'s>, key: &str) -> Result<(&'s str, usize), ImportError> {
        s.values
            .get(key)
            .copied()
            .ok_or_else(|| self.fail(s.line, format!("no `{key}=` line in this section")))
    }

    fn number<T: std::str::FromStr>(&self, s: &Section<'_>, key: &str) -> Result<T, ImportError> {
        let (v, line) = self.get(s, key)?;
        v.trim().parse().map_err(|_| {
            self.fail(
                line,
                format!("{key}: `{v}` is not a number of the right kind"),
            )
        })
    }

    /// A whitespace-separated list of exactly `n` values.
    fn list<T: std::str::FromStr>(
        &self,
        s: &Section<'_>,
        key: &str,
        n: usize,
    ) -> Result<Vec<T>, ImportError> {
        let (v, line) = self.get(s, key)?;
        let items: Vec<&str> = v.split_whitespace().collect();
        if items.len() != n {
            return Err(self.fail(line, format!("{key}: {} values, expected {n}", items.len())));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.parse().map_err(|_| {
                    self.fail(
                        line,
                        format!("{key}[{i}]: `{x}` is not a number of the right kind"),
                    )
                })
            })
            .collect()
    }
}

/// Splits the text into the header and the tree sections (`Tree=…` up to
/// `end of trees`).
fn sections(text: &str) -> (Section<'_>, Vec<Section<'_>>, bool) {
    let mut header = Section {
        values: HashMap::new(),
        line: 1,
    };
    let mut trees: Vec<Section<'_>> = Vec::new();
    let mut ended = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_end_matches('\r');
        if l == "end of trees" {
            ended = true;
            break;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        if key == "Tree" {
            trees.push(Section {
                values: HashMap::new(),
                line,
            });
        }
        let section = trees.last_mut().unwrap_or(&mut header);
        section.values.entry(key).or_insert((value, line));
    }
    (header, trees, ended)
}

/// Reads a LightGBM text model (see the module docs). `origin` names the
/// file in errors.
pub fn lightgbm_text(
    text: &str,
    origin: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let file: PathBuf = origin.as_ref().to_path_buf();
    let p = Parser { file: &file };
    if !text.starts_with("tree") {
        return Err(p.fail(1, "not a LightGBM text model: the first line is not `tree`"));
    }
    let (header, tree_sections, ended) = sections(text);
    if !ended {
        return Err(p.fail(
            text.lines().count(),
            "no `end of trees` line: the file is truncated",
        ));
    }
    let max_feature: usize = p.number(&header, "max_feature_idx")?;
    if max_feature >= 1 << 20 {
        return Err(p.fail(
            header.line,
            format!("max_feature_idx {max_feature} is too large"),
        ));
    }
    let n_features = max_feature + 1;
    let features: Vec<String> = match header.values.get("feature_names") {
        Some(_) => p.list(&header, "feature_names", n_features)?,
        None => (0..n_features).map(|j| format!("Column_{j}")).collect(),
    };
    let num_class: usize = p.number(&header, "num_class")?;
    let per_iteration: usize = p.number(&header, "num_tree_per_iteration")?;
    let (objective_line, obj_line_no) = p.get(&header, "objective")?;
    let mut words = objective_line.split_whitespace();
    let objective = words.next().unwrap_or("");
    let params: HashMap<&str, &str> = words.filter_map(|w| w.split_once(':')).collect();
    if let Some(s) = params.get("sigmoid") {
        if s.parse::<f64>().ok() != Some(1.0) {
            return Err(p.fail(
                obj_line_no,
                format!("objective parameter sigmoid:{s}: only sigmoid:1 is supported"),
            ));
        }
    }
    let (estimator, task, link, n_outputs) = match objective {
        "binary" => (
            TreeEstimator::LgbmClassifier,
            Task::Classification,
            Link::Sigmoid,
            1,
        ),
        "multiclass" | "softmax" => {
            if num_class < 3 || per_iteration != num_class {
                return Err(p.fail(
                    obj_line_no,
                    format!(
                        "multiclass with num_class={num_class} and \
                         num_tree_per_iteration={per_iteration}: expected at least 3 classes, \
                         one tree per class and iteration"
                    ),
                ));
            }
            (
                TreeEstimator::LgbmClassifier,
                Task::Classification,
                Link::Softmax,
                num_class,
            )
        }
        "regression" | "regression_l2" | "l2" | "mean_squared_error" | "mse" | "regression_l1"
        | "l1" | "huber" | "fair" | "quantile" | "mape" => (
            TreeEstimator::LgbmRegressor,
            Task::Regression,
            Link::Identity,
            1,
        ),
        "poisson" | "gamma" | "tweedie" => {
            (TreeEstimator::LgbmRegressor, Task::Regression, Link::Exp, 1)
        }
        other => {
            return Err(p.fail(
                obj_line_no,
                format!(
                    "objective `{other}` is not supported (binary, multiclass, the regression \
                     objectives, poisson, gamma, tweedie)"
                ),
            ))
        }
    };
    if n_outputs == 1 && per_iteration != 1 {
        return Err(p.fail(
            header.line,
            format!("num_tree_per_iteration={per_iteration} for a single-output objective"),
        ));
    }
    let average = header.values.contains_key("average_output")
        || text.lines().any(|l| l.trim_end() == "average_output");
    if average && n_outputs > 1 {
        return Err(p.fail(
            header.line,
            "a multiclass random forest (average_output) is not supported",
        ));
    }
    if tree_sections.is_empty() {
        return Err(p.fail(header.line, "no trees"));
    }
    if tree_sections.len() > MAX_TREES {
        return Err(p.fail(
            header.line,
            format!(
                "{} trees, more than the {MAX_TREES} accepted",
                tree_sections.len()
            ),
        ));
    }
    let mut trees = Vec::with_capacity(tree_sections.len());
    for (t, s) in tree_sections.iter().enumerate() {
        let mut tree = convert_tree(&p, s, &features)?;
        tree.output = (n_outputs > 1).then_some(t % n_outputs);
        trees.push(tree);
    }

    let classes = match (task, &options.classes) {
        (Task::Regression, _) => None,
        (Task::Classification, given) => {
            let k = n_outputs.max(2);
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
    let version = header
        .values
        .get("version")
        .map(|(v, _)| v.trim().to_owned());
    let spec = ModelSpec {
        format: FORMAT_V1.into(),
        name: options.name.clone().unwrap_or_else(|| spec_name(&file)),
        description: Some(format!(
            "LightGBM `{objective}` model ({} trees), imported from {}",
            trees.len(),
            file.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        )),
        source: Some(Source {
            library: "lightgbm".into(),
            version,
            estimator: Some(
                match task {
                    Task::Classification => "LGBMClassifier",
                    Task::Regression => "LGBMRegressor",
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
            comparison: Comparison::Le,
            precision: Precision::Double,
            accepts_missing: options.accepts_missing.clone(),
            aggregation: if average {
                Aggregation::Mean
            } else {
                Aggregation::Sum
            },
            base_score: vec![0.0; n_outputs],
            trees,
        }),
        quantization: QuantizationSpec {
            input_bits: options.input_bits,
            input_ranges: options.input_ranges.clone(),
            ..QuantizationSpec::default()
        },
        data: options.data.clone(),
    };
    spec.check(&file)?;
    Ok(spec)
}

/// One tree: internal node `i` becomes node `i`, leaf `j` node
/// `num_leaves − 1 + j`.
fn convert_tree(
    p: &Parser<'_>,
    s: &Section<'_>,
    features: &[String],
) -> Result<TreeSpec, ImportError> {
    let (tree_id, _) = p.get(s, "Tree")?;
    let num_leaves: usize = p.number(s, "num_leaves")?;
    if num_leaves == 0 || num_leaves > crate::spec::MAX_TREE_NODES {
        return Err(p.fail(s.line, format!("Tree={tree_id}: num_leaves={num_leaves}")));
    }
    if let Some((v, line)) = s.values.get("is_linear") {
        if v.trim() != "0" {
            return Err(p.fail(
                *line,
                format!("Tree={tree_id}: linear trees are not supported"),
            ));
        }
    }
    let leaves: Vec<f64> = p.list(s, "leaf_value", num_leaves)?;
    let (_, leaf_line) = p.get(s, "leaf_value")?;
    if let Some(j) = leaves.iter().position(|v| !v.is_finite()) {
        return Err(p.fail(leaf_line, format!("leaf_value[{j}] is not finite")));
    }
    let n_internal = num_leaves - 1;
    if n_internal == 0 {
        return Ok(TreeSpec {
            output: None,
            nodes: vec![NodeSpec::leaf(vec![leaves[0]])],
        });
    }
    let split_feature: Vec<i64> = p.list(s, "split_feature", n_internal)?;
    let thresholds: Vec<f64> = p.list(s, "threshold", n_internal)?;
    let decision: Vec<u32> = p.list(s, "decision_type", n_internal)?;
    let left: Vec<i64> = p.list(s, "left_child", n_internal)?;
    let right: Vec<i64> = p.list(s, "right_child", n_internal)?;
    let line_of = |key: &str| s.values.get(key).map_or(s.line, |&(_, l)| l);
    let node_of = |key: &str, i: usize, c: i64| -> Result<usize, ImportError> {
        let node = if c >= 0 {
            usize::try_from(c).ok().filter(|&c| c < n_internal)
        } else {
            usize::try_from(-(c + 1))
                .ok()
                .filter(|&j| j < num_leaves)
                .map(|j| n_internal + j)
        };
        node.ok_or_else(|| {
            p.fail(
                line_of(key),
                format!(
                    "Tree={tree_id}: {key}[{i}] = {c} names no node ({n_internal} splits, \
                     {num_leaves} leaves)"
                ),
            )
        })
    };
    let mut nodes = Vec::with_capacity(n_internal + num_leaves);
    for i in 0..n_internal {
        let feature = usize::try_from(split_feature[i])
            .ok()
            .filter(|&f| f < features.len())
            .ok_or_else(|| {
                p.fail(
                    line_of("split_feature"),
                    format!(
                        "Tree={tree_id}: split_feature[{i}] = {} is out of range: the model \
                         has {} features",
                        split_feature[i],
                        features.len()
                    ),
                )
            })?;
        let name = &features[feature];
        let dt = decision[i];
        if dt & 1 != 0 {
            return Err(p.fail(
                line_of("decision_type"),
                format!(
                    "Tree={tree_id}: node {i} is a categorical split on feature `{name}`; \
                     categorical splits are not supported (one-hot encode it)"
                ),
            ));
        }
        let threshold = thresholds[i];
        if !threshold.is_finite() {
            return Err(p.fail(
                line_of("threshold"),
                format!("Tree={tree_id}: threshold[{i}] is not finite"),
            ));
        }
        let default_left = dt & 2 != 0;
        let missing = match (dt >> 2) & 3 {
            0 => {
                if 0.0 <= threshold {
                    Side::Left
                } else {
                    Side::Right
                }
            }
            2 => {
                if default_left {
                    Side::Left
                } else {
                    Side::Right
                }
            }
            1 => {
                return Err(p.fail(
                    line_of("decision_type"),
                    format!(
                        "Tree={tree_id}: node {i} on feature `{name}` treats zeros as missing \
                         (zero_as_missing=true), which is not supported"
                    ),
                ))
            }
            other => {
                return Err(p.fail(
                    line_of("decision_type"),
                    format!("Tree={tree_id}: node {i}: unknown missing type {other}"),
                ))
            }
        };
        let mut node = NodeSpec::split(
            feature,
            threshold,
            node_of("left_child", i, left[i])?,
            node_of("right_child", i, right[i])?,
        );
        node.missing = Some(missing);
        nodes.push(node);
    }
    nodes.extend(leaves.iter().map(|&v| NodeSpec::leaf(vec![v])));
    Ok(TreeSpec {
        output: None,
        nodes,
    })
}

/// Reads a LightGBM text model file.
pub fn lightgbm_file(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let path = path.as_ref();
    let bytes = super::read_model_file(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| ImportError::Binary {
        file: path.to_path_buf(),
        offset: e.valid_up_to(),
        message: "a LightGBM text model must be UTF-8".into(),
    })?;
    lightgbm_text(text, path, options)
}

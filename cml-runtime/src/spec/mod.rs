//! Model specs: the serde AST of a trained model and its quantization, loading
//! from YAML with positioned errors, and the semantic checks every spec passes.
//!
//! The format is documented field by field in `docs/spec.md`. A minimal spec:
//!
//! ```
//! use cml_runtime::spec::ModelSpec;
//!
//! let yaml = r#"
//! format: cml/v1
//! name: tiny
//! model:
//!   linear:
//!     estimator: linear_regression
//!     task: regression
//!     link: identity
//!     features: [a, b]
//!     coefficients: [[0.5, -1.0]]
//!     intercepts: [2.0]
//! quantization:
//!   input_ranges: [[0.0, 1.0], [-1.0, 1.0]]
//! "#;
//! let spec = ModelSpec::from_yaml_str(yaml, "tiny.yaml").unwrap();
//! assert_eq!(spec.n_features(), 2);
//! ```

mod check;
pub use check::MAX_TREE_NODES;
pub mod dsl;
pub mod locate;
pub mod network;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use locate::{FieldPath, Location, SourceMap};
pub use network::{
    BinaryOp, Conv2dSpec, DenseSpec, ElementwiseOp, ElementwiseSpec, LayerOp, LayerSpec,
    NetworkSpec, PoolSpec,
};

use crate::error::SpecError;

/// The only spec format this version reads.
pub const FORMAT_V1: &str = "cml/v1";

/// Largest spec file accepted, to bound work on hostile input.
pub const MAX_SPEC_BYTES: u64 = 64 * 1024 * 1024;

/// A trained model and its quantization: the one AST every front-end lowers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Format tag, must be `cml/v1`.
    pub format: String,
    /// Model name: lowercase letters, digits and `_`.
    pub name: String,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the trained model came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// The trained model itself.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub model: ModelKind,
    /// How inputs and weights are quantized.
    #[serde(default)]
    pub quantization: QuantizationSpec,
    /// Bundled data files, relative to the spec file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSpec>,
}

/// Provenance of a trained model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Library that trained the model (`scikit-learn`, …).
    pub library: String,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Estimator class name in that library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimator: Option<String>,
}

/// Model families. Each is a YAML mapping key under `model:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelKind {
    /// Generalized linear models: `scores = coefficients · x + intercepts`.
    Linear(LinearSpec),
    /// Decision trees, random forests and gradient-boosted trees.
    Ensemble(EnsembleSpec),
    /// Neural networks (MLPs, CNNs), see [`network`].
    Network(NetworkSpec),
}

/// A tree ensemble: one decision tree, a random forest or gradient-boosted
/// trees.
///
/// Float semantics: each feature is rounded to `f32` when `precision` is
/// [`Precision::Single`] (scikit-learn trees and XGBoost compare in single
/// precision; LightGBM and `HistGradientBoosting*` in double), every tree
/// is walked from node 0 (left when `x <= threshold` for
/// [`Comparison::Le`], `x < threshold` for [`Comparison::Lt`]; a missing
/// value, NaN, goes to the split's [`NodeSpec::missing`] side), the reached
/// leaves' values are aggregated per output ([`Aggregation`]) and
/// `base_score` is added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    /// Which estimator was trained.
    pub estimator: TreeEstimator,
    /// Classification or regression.
    pub task: Task,
    /// Inverse link applied on the client: `identity` for scikit-learn
    /// (scores are class probabilities or values), `sigmoid` / `softmax` for
    /// XGBoost classifiers (scores are margins).
    pub link: Link,
    /// Feature names, one per input column.
    pub features: Vec<String>,
    /// Class names, classifiers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// How a split compares a feature with its threshold.
    pub comparison: Comparison,
    /// The precision the library compares features in.
    #[serde(default, skip_serializing_if = "Precision::is_single")]
    pub precision: Precision,
    /// Features that may be missing (NaN, an empty CSV cell) at prediction
    /// time: every split on one of them has a [`NodeSpec::missing`] side,
    /// and the client sends one more bit per such feature. Missing values
    /// of other features are errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepts_missing: Vec<String>,
    /// How tree outputs combine.
    pub aggregation: Aggregation,
    /// Added to each aggregated output; its length is the number of outputs.
    pub base_score: Vec<f64>,
    /// The trees.
    pub trees: Vec<TreeSpec>,
}

/// The tree estimators an ensemble spec can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeEstimator {
    /// scikit-learn `DecisionTreeClassifier`.
    DecisionTreeClassifier,
    /// scikit-learn `DecisionTreeRegressor`.
    DecisionTreeRegressor,
    /// scikit-learn `RandomForestClassifier`.
    RandomForestClassifier,
    /// scikit-learn `RandomForestRegressor`.
    RandomForestRegressor,
    /// XGBoost `XGBClassifier` (binary or multiclass).
    XgbClassifier,
    /// XGBoost `XGBRegressor`.
    XgbRegressor,
    /// scikit-learn `ExtraTreesClassifier`.
    ExtraTreesClassifier,
    /// scikit-learn `ExtraTreesRegressor`.
    ExtraTreesRegressor,
    /// scikit-learn `GradientBoostingClassifier` (binary or multiclass).
    GradientBoostingClassifier,
    /// scikit-learn `GradientBoostingRegressor`.
    GradientBoostingRegressor,
    /// scikit-learn `HistGradientBoostingClassifier` (numeric features).
    HistGradientBoostingClassifier,
    /// scikit-learn `HistGradientBoostingRegressor` (numeric features).
    HistGradientBoostingRegressor,
    /// LightGBM `LGBMClassifier` (binary or multiclass).
    LgbmClassifier,
    /// LightGBM `LGBMRegressor`.
    LgbmRegressor,
}

impl TreeEstimator {
    /// The task this estimator solves.
    pub fn task(self) -> Task {
        match self {
            Self::DecisionTreeClassifier
            | Self::RandomForestClassifier
            | Self::XgbClassifier
            | Self::ExtraTreesClassifier
            | Self::GradientBoostingClassifier
            | Self::HistGradientBoostingClassifier
            | Self::LgbmClassifier => Task::Classification,
            _ => Task::Regression,
        }
    }

    /// Whether the model is a single tree.
    pub fn single_tree(self) -> bool {
        matches!(
            self,
            Self::DecisionTreeClassifier | Self::DecisionTreeRegressor
        )
    }

    /// Whether the model is boosted: its trees' outputs are summed into
    /// margins.
    pub fn boosted(self) -> bool {
        matches!(
            self,
            Self::XgbClassifier
                | Self::XgbRegressor
                | Self::GradientBoostingClassifier
                | Self::GradientBoostingRegressor
                | Self::HistGradientBoostingClassifier
                | Self::HistGradientBoostingRegressor
                | Self::LgbmClassifier
                | Self::LgbmRegressor
        )
    }

    /// The links its predictions may use: boosted classifiers output
    /// margins (sigmoid, softmax), boosted regressors a value or a log
    /// (Poisson, Gamma, Tweedie objectives: exp); scikit-learn trees and
    /// forests output probabilities or values.
    pub fn allowed_links(self) -> &'static [Link] {
        match (self.boosted(), self.task()) {
            (true, Task::Classification) => &[Link::Sigmoid, Link::Softmax],
            (true, Task::Regression) => &[Link::Identity, Link::Exp],
            (false, _) => &[Link::Identity],
        }
    }
}

/// How a split compares: the sample goes to the left child when the
/// comparison holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `x <= threshold` (scikit-learn).
    Le,
    /// `x < threshold` (XGBoost).
    Lt,
}

/// The precision a library compares features with thresholds in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Features are rounded to `f32` first (scikit-learn trees, XGBoost).
    #[default]
    Single,
    /// Features are compared as `f64` (LightGBM, `HistGradientBoosting*`).
    Double,
}

impl Precision {
    /// Whether this is the default, [`Precision::Single`].
    pub fn is_single(&self) -> bool {
        *self == Self::Single
    }

    /// A feature value as the library compares it.
    pub fn round(self, x: f64) -> f64 {
        match self {
            Self::Single => f64::from(x as f32),
            Self::Double => x,
        }
    }
}

/// Where a split sends a sample whose feature is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// To the `left` child.
    Left,
    /// To the `right` child.
    Right,
}

/// How the trees' outputs combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Average over trees (scikit-learn forests; one tree is a forest of one).
    Mean,
    /// Sum over trees (gradient boosting).
    Sum,
}

/// One tree: node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSpec {
    /// The one output this tree adds to (XGBoost multiclass: the class);
    /// its leaves then hold one value. Absent: leaves hold one value per
    /// output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<usize>,
    /// Nodes, split or leaf.
    pub nodes: Vec<NodeSpec>,
}

/// A node: a split (`feature`, `threshold`, `left`, `right`) or a leaf
/// (`value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Split: index of the feature compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<usize>,
    /// Split: the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Split: the node taken when the comparison holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<usize>,
    /// Split: the node taken otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<usize>,
    /// Leaf: its value per output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Vec<f64>>,
    /// Split: where a missing value goes (the library's learned default
    /// branch). Required on splits of [`EnsembleSpec::accepts_missing`]
    /// features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Side>,
}

/// A checked node, as [`NodeSpec::kind`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node<'a> {
    /// A split.
    Split {
        /// Feature index.
        feature: usize,
        /// Threshold.
        threshold: f64,
        /// Child taken when the comparison holds.
        left: usize,
        /// The other child.
        right: usize,
    },
    /// A leaf and its values.
    Leaf(&'a [f64]),
}

impl NodeSpec {
    /// A split node.
    pub fn split(feature: usize, threshold: f64, left: usize, right: usize) -> Self {
        Self {
            feature: Some(feature),
            threshold: Some(threshold),
            left: Some(left),
            right: Some(right),
            value: None,
            missing: None,
        }
    }

    /// A leaf node.
    pub fn leaf(value: Vec<f64>) -> Self {
        Self {
            feature: None,
            threshold: None,
            left: None,
            right: None,
            value: Some(value),
            missing: None,
        }
    }

    /// The node's shape, or `None` when its fields mix a split and a leaf
    /// or miss some (which [`ModelSpec::check`] reports).
    pub fn kind(&self) -> Option<Node<'_>> {
        match (
            self.feature,
            self.threshold,
            self.left,
            self.right,
            &self.value,
        ) {
            (None, None, None, None, Some(_)) if self.missing.is_some() => None,
            (Some(feature), Some(threshold), Some(left), Some(right), None) => Some(Node::Split {
                feature,
                threshold,
                left,
                right,
            }),
            (None, None, None, None, Some(v)) => Some(Node::Leaf(v)),
            _ => None,
        }
    }
}

impl EnsembleSpec {
    /// Number of outputs (scores).
    pub fn n_outputs(&self) -> usize {
        self.base_score.len()
    }

    /// Per feature, whether it is listed in `accepts_missing`.
    pub fn missing_mask(&self) -> Vec<bool> {
        self.features
            .iter()
            .map(|f| self.accepts_missing.contains(f))
            .collect()
    }

    /// The float model's scores for one sample (see the type's docs).
    ///
    /// The spec must have passed [`ModelSpec::check`].
    pub fn float_scores(&self, x: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.n_outputs()];
        for tree in &self.trees {
            let mut i = 0;
            loop {
                match tree.nodes[i].kind() {
                    Some(Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    }) => {
                        let v = self.precision.round(x[feature]);
                        let go_left = if v.is_nan() {
                            tree.nodes[i].missing == Some(Side::Left)
                        } else {
                            match self.comparison {
                                Comparison::Le => v <= threshold,
                                Comparison::Lt => v < threshold,
                            }
                        };
                        i = if go_left { left } else { right };
                    }
                    Some(Node::Leaf(values)) => {
                        match tree.output {
                            Some(o) => out[o] += values[0],
                            None => out.iter_mut().zip(values).for_each(|(o, v)| *o += v),
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
        let n_trees = self.trees.len() as f64;
        out.iter()
            .zip(&self.base_score)
            .map(|(s, b)| match self.aggregation {
                Aggregation::Mean => s / n_trees + b,
                Aggregation::Sum => s + b,
            })
            .collect()
    }
}

/// A linear model (regression, classification or GLM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    /// Which estimator was trained.
    pub estimator: LinearEstimator,
    /// Classification or regression.
    pub task: Task,
    /// Inverse link applied on the client after decryption.
    pub link: Link,
    /// Feature names, one per input column.
    pub features: Vec<String>,
    /// Class names, classifiers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// One row of `features.len()` weights per output.
    pub coefficients: Vec<Vec<f64>>,
    /// One intercept per output.
    pub intercepts: Vec<f64>,
    /// Standardization applied in clear on the client before quantization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardize: Option<Standardize>,
}

/// The estimators a linear spec can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearEstimator {
    /// scikit-learn `LinearRegression`.
    LinearRegression,
    /// `Ridge`.
    Ridge,
    /// `Lasso`.
    Lasso,
    /// `ElasticNet`.
    ElasticNet,
    /// `LogisticRegression` (binary or multinomial).
    LogisticRegression,
    /// `LinearSVC`.
    LinearSvc,
    /// `LinearSVR`.
    LinearSvr,
    /// `PoissonRegressor` (log link).
    PoissonRegressor,
    /// `GammaRegressor` (log link).
    GammaRegressor,
    /// `TweedieRegressor` (identity or log link).
    TweedieRegressor,
}

impl LinearEstimator {
    /// The task this estimator solves.
    pub fn task(self) -> Task {
        match self {
            Self::LogisticRegression | Self::LinearSvc => Task::Classification,
            _ => Task::Regression,
        }
    }

    /// The links this estimator's predictions may use.
    pub fn allowed_links(self) -> &'static [Link] {
        match self {
            Self::LogisticRegression => &[Link::Sigmoid, Link::Softmax],
            Self::LinearSvc => &[Link::Identity],
            Self::PoissonRegressor | Self::GammaRegressor => &[Link::Exp],
            Self::TweedieRegressor => &[Link::Identity, Link::Exp],
            _ => &[Link::Identity],
        }
    }
}

/// Classification or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Outputs a class.
    Classification,
    /// Outputs a real value.
    Regression,
}

/// Inverse link function, applied on the client to the decrypted scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Scores are the prediction (regression) or decision values (classification).
    Identity,
    /// Logistic function of one score (binary classification).
    Sigmoid,
    /// Softmax over the scores (multinomial classification).
    Softmax,
    /// `exp(score)` (log-link GLMs).
    Exp,
}

impl Link {
    /// The spec keyword of this link.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Sigmoid => "sigmoid",
            Self::Softmax => "softmax",
            Self::Exp => "exp",
        }
    }
}

/// Per-feature standardization `(x - mean) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardize {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature scale (standard deviation), positive.
    pub scale: Vec<f64>,
}

/// Quantization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizationSpec {
    /// Bits per quantized input (default 8, as Concrete ML).
    #[serde(default = "default_bits")]
    pub input_bits: u8,
    /// Bits per quantized weight (default 8).
    #[serde(default = "default_bits")]
    pub weight_bits: u8,
    /// Bits per quantized leaf value of a tree ensemble (default 8). Leaves
    /// are summed without bootstrapping, so this sets accuracy and output
    /// width, not table width.
    #[serde(default = "default_bits", skip_serializing_if = "is_default_bits")]
    pub leaf_bits: u8,
    /// One quantizer per feature (and one weight quantizer per output), or one
    /// for the whole input tensor and one for the whole weight matrix
    /// (Concrete ML's choice).
    #[serde(default)]
    pub input_granularity: Granularity,
    /// Symmetric weights (zero point 0), or asymmetric as Concrete ML.
    #[serde(default)]
    pub weight_scheme: WeightScheme,
    /// Calibration range `[min, max]` per feature. Absent: calibrate from data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_ranges: Option<Vec<[f64; 2]>>,
    /// Networks: bits of each activation's output, the next layer's input
    /// (default: `input_bits`). A layer's `activation_bits` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_bits: Option<u8>,
    /// Networks: an activation's accumulator is rounded to its top
    /// `rounding_bits` bits before its table (Concrete ML's
    /// `rounding_threshold_bits`). Absent: no rounding (tables as wide as the
    /// accumulators, at most 10 bits). A layer's `rounding_bits` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding_bits: Option<u8>,
    /// Networks: how accumulators are rounded.
    #[serde(default, skip_serializing_if = "RoundingMode::is_default")]
    pub rounding: RoundingMode,
}

/// How a network's accumulators are rounded before their tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Free: the low bits stay as an offset of at most half a step, so a
    /// value near a rounding boundary may land one step off (Concrete ML's
    /// `APPROXIMATE`).
    #[default]
    Approximate,
    /// Exact: one 1-bit bootstrap per bit removed (Concrete ML's `EXACT`).
    Exact,
}

impl RoundingMode {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_bits() -> u8 {
    8
}

fn is_default_bits(bits: &u8) -> bool {
    *bits == default_bits()
}

impl Default for QuantizationSpec {
    fn default() -> Self {
        Self {
            input_bits: default_bits(),
            weight_bits: default_bits(),
            leaf_bits: default_bits(),
            input_granularity: Granularity::default(),
            weight_scheme: WeightScheme::default(),
            input_ranges: None,
            activation_bits: None,
            rounding_bits: None,
            rounding: RoundingMode::default(),
        }
    }
}

/// How many quantizers the inputs get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One scale and zero point per feature (default: best accuracy).
    #[default]
    Feature,
    /// One scale and zero point for all features (Concrete ML's linear models).
    Tensor,
}

/// How weights are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightScheme {
    /// Narrow symmetric range, zero point 0 (default: no zero-point term).
    #[default]
    Symmetric,
    /// Asymmetric over `[min, max]` of the weights (Concrete ML's choice).
    Asymmetric,
}

/// Bundled data files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Training split (calibration), CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// Test split with the float model's saved outputs, CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
}

/// A spec together with where it came from, for resolving data paths and
/// positioning later errors.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The checked spec.
    pub spec: ModelSpec,
    /// The file it was read from (or a label for in-memory sources).
    pub origin: PathBuf,
    /// Positions of its nodes.
    pub source_map: SourceMap,
}

impl LoadedSpec {
    /// Resolves a path from the spec's `data` section against the spec's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        self.origin
            .parent()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|| path.to_path_buf())
    }

    /// The resolved training CSV, if the spec names one.
    pub fn train_path(&self) -> Option<PathBuf> {
        let data = self.spec.data.as_ref()?;
        data.train.as_deref().map(|p| self.resolve(p))
    }

    /// The resolved test CSV, if the spec names one.
    pub fn test_path(&self) -> Option<PathBuf> {
        let data = self.spec.data.as_ref()?;
        data.test.as_deref().map(|p| self.resolve(p))
    }
}

impl ModelSpec {
    /// Parses and checks a YAML spec. `origin` names the source in errors.
    pub fn from_yaml_str(source: &str, origin: impl AsRef<Path>) -> Result<Self, SpecError> {
        Self::load_str(source, origin).map(|loaded| loaded.spec)
    }

    /// Parses and checks a YAML spec, keeping its origin and node positions.
    pub fn load_str(source: &str, origin: impl AsRef<Path>) -> Result<LoadedSpec, SpecError> {
        let origin = origin.as_ref().to_path_buf();
        let source_map = SourceMap::build(source);
        let de = serde_yaml::Deserializer::from_str(source);
        let spec: ModelSpec = serde_path_to_error::deserialize(de).map_err(|err| {
            let path = FieldPath::parse(&err.path().to_string());
            let inner = err.into_inner();
            let location = inner
                .location()
                .map(|l| Location {
                    line: l.line(),
                    column: l.column(),
                })
                .or_else(|| source_map.locate(&path));
            SpecError::Syntax {
                file: origin.clone(),
                location,
                message: clean_serde_message(&inner.to_string(), &path),
                path,
            }
        })?;
        let loaded = LoadedSpec {
            spec,
            origin,
            source_map,
        };
        check::check(&loaded)?;
        Ok(loaded)
    }

    /// Reads, parses and checks a spec file: the DSL for `.cml` files, YAML
    /// otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<LoadedSpec, SpecError> {
        let path = path.as_ref();
        let io = |source| SpecError::Io {
            file: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge {
                file: path.to_path_buf(),
                bytes: meta.len(),
                limit: MAX_SPEC_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        if path.extension().is_some_and(|e| e == "cml") {
            Self::load_dsl_str(&text, path)
        } else {
            Self::load_str(&text, path)
        }
    }

    /// Runs the semantic checks on a spec built in code (files are checked
    /// when they load). Errors name `origin` and the field, without a line.
    pub fn check(&self, origin: impl AsRef<Path>) -> Result<(), SpecError> {
        check::check(&LoadedSpec {
            spec: self.clone(),
            origin: origin.as_ref().to_path_buf(),
            source_map: SourceMap::default(),
        })
    }

    /// The linear model, if this spec holds one.
    pub fn linear(&self) -> Option<&LinearSpec> {
        match &self.model {
            ModelKind::Linear(l) => Some(l),
            _ => None,
        }
    }

    /// The tree ensemble, if this spec holds one.
    pub fn ensemble(&self) -> Option<&EnsembleSpec> {
        match &self.model {
            ModelKind::Ensemble(e) => Some(e),
            _ => None,
        }
    }

    /// The neural network, if this spec holds one.
    pub fn network(&self) -> Option<&NetworkSpec> {
        match &self.model {
            ModelKind::Network(n) => Some(n),
            _ => None,
        }
    }

    /// Feature names.
    pub fn features(&self) -> &[String] {
        match &self.model {
            ModelKind::Linear(l) => &l.features,
            ModelKind::Ensemble(e) => &e.features,
            ModelKind::Network(n) => &n.features,
        }
    }

    /// Per feature, whether the model takes a missing value there (only
    /// ensembles with `accepts_missing` do).
    pub fn accepts_missing(&self) -> Vec<bool> {
        match &self.model {
            ModelKind::Ensemble(e) => e.missing_mask(),
            _ => vec![false; self.features().len()],
        }
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.features().len()
    }

    /// Classification or regression.
    pub fn task(&self) -> Task {
        match &self.model {
            ModelKind::Linear(l) => l.task,
            ModelKind::Ensemble(e) => e.task,
            ModelKind::Network(n) => n.task,
        }
    }

    /// Class names (classifiers).
    pub fn classes(&self) -> Option<&[String]> {
        match &self.model {
            ModelKind::Linear(l) => l.classes.as_deref(),
            ModelKind::Ensemble(e) => e.classes.as_deref(),
            ModelKind::Network(n) => n.classes.as_deref(),
        }
    }

    /// Serializes back to YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the
/// position ourselves.
pub(crate) fn clean_serde_message(message: &str, path: &FieldPath) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    // It may also start with the path or an ancestor of it, which the error
    // prints already.
    let full = path.to_string();
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && full.starts_with(head) => rest.to_owned(),
        _ => message.to_owned(),
    }
}

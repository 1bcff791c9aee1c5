//! Typed errors. Each says what was wrong and where: the spec file, line,
//! column and field; the expected and found shape of data; the limit an FHE
//! program passed.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use crate::spec::{FieldPath, Location, Task};

/// Prints an optional location as `:line:col`.
struct At<'a>(&'a Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(loc) => write!(f, ":{loc}"),
            None => Ok(()),
        }
    }
}

/// Prints `field `path`: ` unless the path is the document root.
struct Field<'a>(&'a FieldPath);

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_root() {
            Ok(())
        } else {
            write!(f, "field `{}`: ", self.0)
        }
    }
}

/// A spec that cannot be read, parsed or accepted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file could not be read.
    #[error("{}: cannot read spec: {source}", file.display())]
    Io {
        /// The spec file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_SPEC_BYTES`](crate::spec::MAX_SPEC_BYTES).
    #[error("{}: spec is {bytes} bytes, more than the {limit}-byte limit", file.display())]
    TooLarge {
        /// The spec file.
        file: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// YAML that does not parse into the spec structure (unknown or missing
    /// field, wrong type, bad syntax).
    #[error("{}{}: {}{message}", file.display(), At(location), Field(path))]
    Syntax {
        /// The spec file.
        file: PathBuf,
        /// Where in it.
        location: Option<Location>,
        /// The field being read.
        path: FieldPath,
        /// The parser's message.
        message: String,
    },
    /// A spec that parses but is not a valid model.
    #[error("{}{}: {}{problem}", file.display(), At(location), Field(path))]
    Invalid {
        /// The spec file.
        file: PathBuf,
        /// Where in it.
        location: Option<Location>,
        /// The offending field.
        path: FieldPath,
        /// What is wrong with it.
        problem: SpecProblem,
    },
}

impl SpecError {
    /// The field path the error points at, if any.
    pub fn path(&self) -> Option<&FieldPath> {
        match self {
            Self::Syntax { path, .. } | Self::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The source position the error points at, if known.
    pub fn location(&self) -> Option<Location> {
        match self {
            Self::Syntax { location, .. } | Self::Invalid { location, .. } => *location,
            _ => None,
        }
    }
}

/// What is wrong with a field of a spec that parsed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SpecProblem {
    /// Unsupported `format`.
    #[error("unsupported format `{0}`, expected `cml/v1`")]
    Format(String),
    /// Bad model name.
    #[error("name `{0}` must be non-empty lowercase letters, digits and `_`")]
    Name(String),
    /// Wrong number of elements.
    #[error("expected {expected} element{}, found {found}", if *expected == 1 { "" } else { "s" })]
    Length {
        /// Expected count.
        expected: usize,
        /// Found count.
        found: usize,
    },
    /// NaN or infinite number.
    #[error("number must be finite, found {0}")]
    NotFinite(f64),
    /// Zero or negative where a positive number is needed.
    #[error("number must be positive, found {0}")]
    NotPositive(f64),
    /// Bits outside the accepted range.
    #[error("{found} bits is out of range, expected {min} to {max}")]
    Bits {
        /// The value found.
        found: u8,
        /// Smallest accepted.
        min: u8,
        /// Largest accepted.
        max: u8,
    },
    /// A calibration range with min above max.
    #[error("range [{lo}, {hi}] has min above max")]
    Range {
        /// Min.
        lo: f64,
        /// Max.
        hi: f64,
    },
    /// Empty list or name.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Repeated name.
    #[error("duplicate name `{0}`")]
    Duplicate(String),
    /// A required field is missing.
    #[error("`{0}` is required here")]
    Missing(&'static str),
    /// A field that does not belong here.
    #[error("`{0}` is not allowed here")]
    Unexpected(&'static str),
    /// Task does not match the estimator.
    #[error("estimator {estimator} is a {expected:?} model")]
    Task {
        /// The estimator.
        estimator: String,
        /// Its task.
        expected: Task,
    },
    /// Link not allowed for the estimator or class count.
    #[error("link `{link}` is not valid for {estimator}")]
    Link {
        /// The link.
        link: &'static str,
        /// The estimator or class count it conflicts with.
        estimator: String,
    },
    /// A split names a feature that does not exist.
    #[error("feature index {index} is out of range: the model has {n_features} features")]
    FeatureIndex {
        /// The index found.
        index: usize,
        /// Number of features.
        n_features: usize,
    },
    /// A child index past the end of the tree.
    #[error("child {index} does not exist: the tree has {n_nodes} nodes")]
    NodeIndex {
        /// The index found.
        index: usize,
        /// Number of nodes.
        n_nodes: usize,
    },
    /// A node that is neither a complete split nor a leaf.
    #[error(
        "a node is a split (`feature`, `threshold`, `left`, `right`) or a leaf (`value`): {0}"
    )]
    NodeKind(String),
    /// Children that do not form a tree rooted at node 0.
    #[error("not a tree: {0}")]
    TreeShape(String),
    /// A network layer that does not fit its inputs or its neighbours.
    #[error("{0}")]
    Layer(String),
    /// A feature reference that does not name a feature once.
    #[error("{0}")]
    FeatureName(String),
}

/// Data (CSV files, input rows) that does not fit the model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{}: cannot read data: {source}", file.display())]
    Io {
        /// The data file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed CSV.
    #[error("{}:{line}: {message}", file.display())]
    Csv {
        /// The data file.
        file: PathBuf,
        /// 1-based line.
        line: u64,
        /// What went wrong.
        message: String,
    },
    /// A column the model needs is missing.
    #[error("{}: missing column `{column}`", file.display())]
    MissingColumn {
        /// The data file.
        file: PathBuf,
        /// The column name.
        column: String,
    },
    /// Wrong number of features in an input.
    #[error("input has {found} features, the model expects {expected}")]
    Shape {
        /// The model's feature count.
        expected: usize,
        /// The input's.
        found: usize,
    },
    /// A NaN or infinite feature value.
    #[error("row {row}, feature {feature}: value {value} is not finite")]
    NotFinite {
        /// 0-based row.
        row: usize,
        /// 0-based feature.
        feature: usize,
        /// The value.
        value: f64,
    },
    /// A feature cell the model cannot take (a missing value where none is
    /// accepted, an infinite value).
    #[error("{}column `{column}`: {message}", cell_place(file.as_deref(), *line, *row))]
    Cell {
        /// The data file, when the data came from one.
        file: Option<PathBuf>,
        /// Its 1-based line, when known.
        line: Option<u64>,
        /// 0-based row.
        row: usize,
        /// The feature's name.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// No data where some is needed (calibration, evaluation).
    #[error("{0}")]
    Empty(String),
}

/// `file:line: ` or `row N: ` for [`DataError::Cell`].
fn cell_place(file: Option<&std::path::Path>, line: Option<u64>, row: usize) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{}:{l}: ", f.display()),
        (Some(f), None) => format!("{}: row {row}: ", f.display()),
        _ => format!("row {row}: "),
    }
}

/// An integer program that is malformed or cannot be run as asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// An op refers to a value defined later or not at all.
    #[error("op {op} refers to value {value}, which is not defined before it")]
    Dangling {
        /// The op index.
        op: usize,
        /// The bad value id.
        value: usize,
    },
    /// A bound overflows the 64-bit integers programs run on.
    #[error("value {value} overflows 64-bit integers")]
    Overflow {
        /// The value id.
        value: usize,
    },
    /// A table whose length does not cover its input's range.
    #[error("table {table} has {found} entries, its input needs {expected}")]
    TableSize {
        /// The table id.
        table: usize,
        /// Entries the input range needs.
        expected: usize,
        /// Entries present.
        found: usize,
    },
    /// A table input wider than any supported PBS.
    #[error("table {table} reads a {bits}-bit input; at most {max} bits are supported")]
    TableTooWide {
        /// The table id.
        table: usize,
        /// The input's width.
        bits: u32,
        /// The limit.
        max: u32,
    },
    /// Two members of an exclusive group are nonzero on one input: the
    /// program's claim (and the ranges built on it) is wrong.
    #[error(
        "values {} and {} of exclusive group {group} are both nonzero",
        values.0,
        values.1
    )]
    NotExclusive {
        /// The group's index in [`Program::exclusive`](crate::program::Program::exclusive).
        group: usize,
        /// Two nonzero members.
        values: (usize, usize),
    },
    /// Input count does not match.
    #[error("program takes {expected} inputs, got {found}")]
    Arity {
        /// Inputs expected.
        expected: usize,
        /// Inputs given.
        found: usize,
    },
    /// An input value outside its declared range.
    #[error("input {input} = {value} is outside its range [{lo}, {hi}]")]
    InputRange {
        /// Input index.
        input: usize,
        /// Value given.
        value: i64,
        /// Declared min.
        lo: i64,
        /// Declared max.
        hi: i64,
    },
}

/// FHE parameter choice, keys, ciphertexts and their serialization.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FheError {
    /// No parameter set meets the program's needs.
    #[error(
        "no 128-bit-secure parameters for {what}: it needs {bits} bits of message space with \
         weight 2-norm {norm:.1} at p_fail 2^{log2_p_fail:.1}, and the best candidate reaches only \
         2^{best_log2_p_fail:.1}; {hint}"
    )]
    NoParameters {
        /// Which value or table is too demanding.
        what: String,
        /// Its message width in bits (padding included).
        bits: u32,
        /// The 2-norm of the weights feeding it.
        norm: f64,
        /// Target failure probability (log2).
        log2_p_fail: f64,
        /// Best failure probability any candidate reached (log2).
        best_log2_p_fail: f64,
        /// What would make it fit.
        hint: &'static str,
    },
    /// A failure-probability setting outside (0, 1).
    #[error("failure probability must be in (0, 1) as log2 below 0, found 2^{0}")]
    BadPFail(f64),
    /// Keys, ciphertexts and program disagree.
    #[error("{0}")]
    Mismatch(String),
    /// Bytes that do not deserialize into what was asked.
    #[error("cannot deserialize {what}: {message}")]
    Deserialize {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
    /// Serialization failure.
    #[error("cannot serialize {what}: {message}")]
    Serialize {
        /// What was being written.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
}

/// Any error of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`SpecError`].
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// See [`DataError`].
    #[error(transparent)]
    Data(#[from] DataError),
    /// See [`ProgramError`].
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// See [`FheError`].
    #[error(transparent)]
    Fhe(#[from] FheError),
    /// See [`ImportError`].
    #[error(transparent)]
    Import(#[from] ImportError),
    /// See [`BundleError`](crate::bundle::BundleError).
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// An output file (a spec, a report) could not be written.
    #[error("{}: cannot write: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A model file from another library that cannot be imported.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid JSON, or a field of the wrong type.
    #[error("{}:{line}:{column}: {}{message}", file.display(), if path.is_empty() || path == "." { String::new() } else { format!("field {path}: ") })]
    Json {
        /// The file.
        file: PathBuf,
        /// Line (1-based).
        line: usize,
        /// Column (1-based).
        column: usize,
        /// Path of the field.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A field with a value that does not make a model.
    #[error("{}: field {field}: {message}", file.display())]
    Field {
        /// The file.
        file: PathBuf,
        /// Path of the field.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// An ONNX model that cannot be read or converted.
    #[error("{}: {}{message}", file.display(), OnnxWhere(node.as_ref()))]
    Onnx {
        /// The file.
        file: PathBuf,
        /// The node at fault, if one is: its position in the graph, op type
        /// and name.
        node: Option<OnnxNode>,
        /// What was wrong.
        message: String,
    },
    /// A binary file (UBJSON) that cannot be read, or text that is not UTF-8.
    #[error("{}: byte {offset}: {message}", file.display())]
    Binary {
        /// The file.
        file: PathBuf,
        /// Byte offset of the problem.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// A line of a text model file (LightGBM) that does not make a model.
    #[error("{}:{line}: {message}", file.display())]
    Text {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// `--classes` (or [`ImportOptions::classes`](crate::import::ImportOptions))
    /// names another number of classes than the model has.
    #[error("{}: {given} class names were given, but the model has {expected} classes", file.display())]
    Classes {
        /// The file.
        file: PathBuf,
        /// Names given.
        given: usize,
        /// Classes in the model.
        expected: usize,
    },
    /// A file in no format an importer reads.
    #[error("{}: {message}", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// What it looks like and what is read.
        message: String,
    },
    /// The imported model fails the spec checks.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Where in an ONNX graph an import error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxNode {
    /// Position of the node in the graph's node list (0-based).
    pub index: usize,
    /// Its op type.
    pub op: String,
    /// Its name (may be empty).
    pub name: String,
}

struct OnnxWhere<'a>(Option<&'a OnnxNode>);

impl std::fmt::Display for OnnxWhere<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "node #{} `{}` ({}): ", n.index, n.name, n.op),
            None => Ok(()),
        }
    }
}

//! Importers from other libraries' model files into a [`ModelSpec`]:
//! XGBoost JSON and UBJSON ([`xgboost`]), LightGBM text models
//! ([`lightgbm`]) and ONNX networks ([`onnx`]). [`detect`] tells the formats
//! apart by their first bytes and [`tree_file`] reads any tree-ensemble one.

pub mod lightgbm;
pub mod onnx;
pub mod onnx_proto;
pub mod ubjson;
pub mod xgboost;

use std::path::{Path, PathBuf};

pub use lightgbm::{lightgbm_file, lightgbm_text};
pub use onnx::{onnx_file, onnx_model, OnnxOptions};
pub use xgboost::{xgboost_bytes, xgboost_file, xgboost_json, xgboost_json_file};

use crate::data::Dataset;
use crate::error::ImportError;
use crate::spec::{DataSpec, ModelKind, ModelSpec};

/// The model file formats the importers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// XGBoost's JSON model.
    XgboostJson,
    /// XGBoost's UBJSON model.
    XgboostUbjson,
    /// LightGBM's text model (`save_model`).
    LightgbmText,
    /// An ONNX network.
    Onnx,
}

impl Format {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::XgboostJson => "XGBoost JSON",
            Self::XgboostUbjson => "XGBoost UBJSON",
            Self::LightgbmText => "LightGBM text model",
            Self::Onnx => "ONNX",
        }
    }
}

/// The format of a model file, from its first bytes: a JSON object, a
/// UBJSON object (`{` then a length marker), LightGBM's `tree` header line,
/// or an ONNX protobuf (whose first field is `ir_version`, tag `0x08`).
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if xgboost::is_json(bytes) {
        return Some(Format::XgboostJson);
    }
    match bytes {
        [b'{', b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#' | b'}', ..] => {
            Some(Format::XgboostUbjson)
        }
        [b't', b'r', b'e', b'e', b'\n' | b'\r', ..] => Some(Format::LightgbmText),
        [0x08, ..] => Some(Format::Onnx),
        _ => None,
    }
}

/// Reads a model file, refusing one larger than [`MAX_SPEC_BYTES`](crate::spec::MAX_SPEC_BYTES).
pub(crate) fn read_model_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    use std::io::Read;
    let io = |source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    };
    let limit = crate::spec::MAX_SPEC_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ImportError::Format {
            file: path.to_path_buf(),
            message: format!("more than the {limit} bytes accepted"),
        });
    }
    Ok(bytes)
}

/// The first bytes of a file (enough for [`detect`]).
pub fn read_header(path: &Path) -> Result<Vec<u8>, ImportError> {
    use std::io::Read;
    let io = |source| ImportError::Io {
        file: path.to_path_buf(),
        source,
    };
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(64)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok(head)
}

/// A model's feature names matched to a CSV's feature columns: each is the
/// column of that name or, failing that, the one column whose name with
/// every space replaced by `_` is the model's (LightGBM renames features
/// that way when it trains). The result lists the CSV's names.
pub fn match_csv_names(
    features: &[String],
    columns: &[String],
    file: &Path,
) -> Result<Vec<String>, crate::error::DataError> {
    features
        .iter()
        .map(|f| {
            if columns.contains(f) {
                return Ok(f.clone());
            }
            let close: Vec<&String> = columns
                .iter()
                .filter(|c| c.replace(char::is_whitespace, "_") == *f && !features.contains(c))
                .collect();
            match close.as_slice() {
                [one] => Ok((*one).clone()),
                _ => Err(crate::error::DataError::MissingColumn {
                    file: file.to_path_buf(),
                    column: f.clone(),
                }),
            }
        })
        .collect()
}

/// Reads a tree-ensemble model file of any format [`detect`] knows
/// (XGBoost JSON or UBJSON, LightGBM text). ONNX networks need
/// [`onnx_file`] and its options.
pub fn tree_file(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<ModelSpec, ImportError> {
    let path = path.as_ref();
    let bytes = read_model_file(path)?;
    match detect(&bytes) {
        Some(Format::XgboostJson | Format::XgboostUbjson) => xgboost_bytes(&bytes, path, options),
        Some(Format::LightgbmText) => {
            let text = std::str::from_utf8(&bytes).map_err(|e| ImportError::Binary {
                file: path.to_path_buf(),
                offset: e.valid_up_to(),
                message: "a LightGBM text model must be UTF-8".into(),
            })?;
            lightgbm_text(text, path, options)
        }
        Some(Format::Onnx) => Err(ImportError::Format {
            file: path.to_path_buf(),
            message: "an ONNX network: import it with `cml import` (which takes the \
                      network options) or `import::onnx_file`"
                .into(),
        }),
        None => Err(ImportError::Format {
            file: path.to_path_buf(),
            message: "not a model file cml reads (XGBoost JSON or UBJSON from \
                      `save_model`, LightGBM's text `save_model`, ONNX)"
                .into(),
        }),
    }
}

/// Which features of an imported tree ensemble take missing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingPolicy {
    /// Those with a missing cell in the training or test data.
    #[default]
    Auto,
    /// Every feature.
    All,
    /// None: a missing value is an error.
    None,
}

/// Fills an imported ensemble's data-dependent fields: the calibration
/// ranges from `train` (per feature, over present values) and
/// `accepts_missing` per `policy`. A feature can take missing values only
/// if every split on it has a missing side; otherwise the spec check names
/// the split.
pub fn attach_data(
    spec: &mut ModelSpec,
    train: &Dataset,
    test: Option<&Dataset>,
    policy: MissingPolicy,
) {
    spec.quantization.input_ranges = Some(train.feature_ranges());
    if let ModelKind::Ensemble(e) = &mut spec.model {
        let has_missing = |d: &Dataset, j: usize| d.features.column(j).iter().any(|v| v.is_nan());
        e.accepts_missing = e
            .features
            .iter()
            .enumerate()
            .filter(|&(j, _)| match policy {
                MissingPolicy::All => true,
                MissingPolicy::None => false,
                MissingPolicy::Auto => {
                    has_missing(train, j) || test.is_some_and(|t| has_missing(t, j))
                }
            })
            .map(|(_, f)| f.clone())
            .collect();
    }
}

/// Options of the importers.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Spec name; default: the file stem, lowercased, other characters as `_`.
    pub name: Option<String>,
    /// Bits per quantized feature (default 6).
    pub input_bits: u8,
    /// Calibration range per feature (for example the training split's
    /// min/max); absent: calibrate when compiling.
    pub input_ranges: Option<Vec<[f64; 2]>>,
    /// Data files to record in the spec.
    pub data: Option<DataSpec>,
    /// Class names of a classifier (XGBoost files have none; default `0`,
    /// `1`, …).
    pub classes: Option<Vec<String>>,
    /// Features that take missing values (see
    /// [`EnsembleSpec::accepts_missing`](crate::spec::EnsembleSpec::accepts_missing)).
    pub accepts_missing: Vec<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            name: None,
            input_bits: 6,
            input_ranges: None,
            data: None,
            classes: None,
            accepts_missing: Vec::new(),
        }
    }
}

pub(crate) fn spec_name(file: &Path) -> String {
    let stem = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("model");
    let name = snake_name(stem);
    if name.is_empty() {
        "model".into()
    } else {
        name
    }
}

/// The path a spec in `spec_dir` records for `file`: relative to the spec's
/// directory (with `..` where needed), since `cml run` resolves data paths
/// against it. An empty `spec_dir` is the current directory.
///
/// ```
/// use std::path::Path;
/// use cml_runtime::import::relative_to;
///
/// assert_eq!(relative_to(Path::new("specs"), Path::new("specs/m.train.csv")),
///            Path::new("m.train.csv"));
/// assert_eq!(relative_to(Path::new("out"), Path::new("specs/m.train.csv")),
///            Path::new("../specs/m.train.csv"));
/// assert_eq!(relative_to(Path::new(""), Path::new("data/m.csv")), Path::new("data/m.csv"));
/// ```
pub fn relative_to(spec_dir: &Path, file: &Path) -> PathBuf {
    let dir = if spec_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        spec_dir
    };
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (normalize(&abs(dir)), normalize(&abs(file)));
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in from.components().skip(common) {
        out.push("..");
    }
    for c in to.components().skip(common) {
        out.push(c);
    }
    out
}

/// `a/./b/../c` → `a/c`, lexically.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Lowercase ASCII letters and digits of `text`, every other character as `_`.
pub(crate) fn snake_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

//! Importers from other libraries' model files into a [`ModelSpec`](crate::ModelSpec):
//! XGBoost JSON ([`xgboost`]) and ONNX networks ([`onnx`]).

pub mod onnx;
pub mod onnx_proto;
pub mod xgboost;

use std::path::{Path, PathBuf};

pub use onnx::{onnx_file, onnx_model, OnnxOptions};
pub use xgboost::{xgboost_json, xgboost_json_file};

use crate::spec::DataSpec;

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
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            name: None,
            input_bits: 6,
            input_ranges: None,
            data: None,
            classes: None,
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

/// Paths a spec records for its data, relative to the spec's directory when
/// possible.
pub fn relative_to(spec_dir: &Path, file: &Path) -> PathBuf {
    file.strip_prefix(spec_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| file.to_path_buf())
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

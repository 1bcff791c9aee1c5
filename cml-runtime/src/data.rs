//! Bundled data: CSV files with named feature columns, a `target` column and,
//! for test splits, the float model's saved outputs (`score_0…`, `prediction`).

use std::path::Path;

use ndarray::Array2;

use crate::error::DataError;

/// Largest data file accepted.
pub const MAX_DATA_BYTES: u64 = 1 << 30;

/// A table of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// One row per sample, one column per model feature, in the model's order.
    pub features: Array2<f64>,
    /// The `target` column, if present.
    pub target: Option<Vec<f64>>,
    /// Saved float scores (`score_0`, `score_1`, …), if present.
    pub scores: Option<Array2<f64>>,
    /// Saved float predictions (`prediction`), if present.
    pub predictions: Option<Vec<f64>>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.features.nrows()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[min, max]` of each feature column over its finite values (a
    /// calibration range; `[0, 0]` for a column without any).
    pub fn feature_ranges(&self) -> Vec<[f64; 2]> {
        self.features
            .columns()
            .into_iter()
            .map(|c| {
                let (lo, hi) = crate::quant::min_max(c.iter().copied()).unwrap_or((0.0, 0.0));
                [lo, hi]
            })
            .collect()
    }

    /// The feature columns of a CSV file: its header's names other than
    /// `target`, `prediction` and `score_*`, in order.
    pub fn feature_columns(path: &Path) -> Result<Vec<String>, DataError> {
        let file = std::fs::File::open(path).map_err(|source| DataError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let headers = reader.headers().map_err(|e| DataError::Csv {
            file: path.to_path_buf(),
            line: 1,
            message: e.to_string(),
        })?;
        Ok(headers
            .iter()
            .map(str::trim)
            .filter(|h| *h != "target" && *h != "prediction" && !h.starts_with("score_"))
            .map(str::to_owned)
            .collect())
    }

    /// Reads a CSV file, taking the feature columns by name.
    pub fn from_csv(path: &Path, feature_names: &[String]) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            file: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_DATA_BYTES {
            return Err(DataError::Csv {
                file: path.to_path_buf(),
                line: 1,
                message: format!(
                    "file is {} bytes, more than the {MAX_DATA_BYTES}-byte limit",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_csv_str(&text, path, feature_names)
    }

    /// Parses CSV text; `file` names it in errors.
    pub fn from_csv_str(
        text: &str,
        file: &Path,
        feature_names: &[String],
    ) -> Result<Self, DataError> {
        let csv_err = |line: u64, message: String| DataError::Csv {
            file: file.to_path_buf(),
            line,
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| csv_err(1, e.to_string()))?
            .clone();
        let column = |name: &str| headers.iter().position(|h| h.trim() == name);
        let feature_cols = feature_names
            .iter()
            .map(|name| {
                column(name).ok_or_else(|| DataError::MissingColumn {
                    file: file.to_path_buf(),
                    column: name.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let target_col = column("target");
        let prediction_col = column("prediction");
        let score_cols: Vec<usize> = (0..).map_while(|i| column(&format!("score_{i}"))).collect();

        let mut features = Vec::new();
        let mut target = Vec::new();
        let mut predictions = Vec::new();
        let mut scores = Vec::new();
        let mut rows = 0usize;
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                csv_err(line, e.to_string())
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |col: usize| -> Result<f64, DataError> {
                let raw = record
                    .get(col)
                    .ok_or_else(|| csv_err(line, format!("missing field {}", col + 1)))?;
                raw.trim().parse::<f64>().map_err(|_| {
                    csv_err(
                        line,
                        format!("column `{}`: `{raw}` is not a number", &headers[col]),
                    )
                })
            };
            for (j, &c) in feature_cols.iter().enumerate() {
                let v = field(c)?;
                if !v.is_finite() {
                    return Err(DataError::NotFinite {
                        row: rows,
                        feature: j,
                        value: v,
                    });
                }
                features.push(v);
            }
            if let Some(c) = target_col {
                target.push(field(c)?);
            }
            if let Some(c) = prediction_col {
                predictions.push(field(c)?);
            }
            for &c in &score_cols {
                scores.push(field(c)?);
            }
            rows += 1;
        }
        let features = Array2::from_shape_vec((rows, feature_names.len()), features)
            .map_err(|e| csv_err(0, e.to_string()))?;
        let scores = if score_cols.is_empty() {
            None
        } else {
            Some(
                Array2::from_shape_vec((rows, score_cols.len()), scores)
                    .map_err(|e| csv_err(0, e.to_string()))?,
            )
        };
        Ok(Self {
            features,
            target: target_col.map(|_| target),
            scores,
            predictions: prediction_col.map(|_| predictions),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_columns_by_name() {
        let text = "b,a,target,score_0,prediction\n1,2,0,0.5,1\n3,4,1,-0.5,0\n";
        let d = Dataset::from_csv_str(text, Path::new("t.csv"), &names(&["a", "b"])).unwrap();
        assert_eq!(d.features, ndarray::array![[2.0, 1.0], [4.0, 3.0]]);
        assert_eq!(d.target, Some(vec![0.0, 1.0]));
        assert_eq!(d.predictions, Some(vec![1.0, 0.0]));
        assert_eq!(d.scores.unwrap().column(0).to_vec(), vec![0.5, -0.5]);
    }

    #[test]
    fn errors_name_the_problem() {
        let err =
            Dataset::from_csv_str("a\n1\n", Path::new("t.csv"), &names(&["a", "b"])).unwrap_err();
        assert_eq!(err.to_string(), "t.csv: missing column `b`");
        let err =
            Dataset::from_csv_str("a\n1\nx\n", Path::new("t.csv"), &names(&["a"])).unwrap_err();
        assert_eq!(err.to_string(), "t.csv:3: column `a`: `x` is not a number");
        let err =
            Dataset::from_csv_str("a\nNaN\n", Path::new("t.csv"), &names(&["a"])).unwrap_err();
        assert!(matches!(
            err,
            DataError::NotFinite {
                row: 0,
                feature: 0,
                ..
            }
        ));
    }
}

//! Bundled data: CSV files with named feature columns, a `target` column and,
//! for test splits, the float model's saved outputs (`score_0…`, `prediction`).
//!
//! A feature cell that is empty, `NaN`, `nan`, `NA` or `null` is a *missing
//! value*, read as NaN. Only tree ensembles whose spec lists the feature in
//! `accepts_missing` take one; [`Dataset::check_missing`] names the file,
//! line and column of any other.

use std::path::{Path, PathBuf};

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
    /// Where the rows came from, for error messages: the file and each
    /// row's line (empty for data built in memory).
    pub origin: Option<Origin>,
}

/// The file a [`Dataset`] was read from and the line of each row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The CSV file.
    pub file: PathBuf,
    /// 1-based line of each row.
    pub lines: Vec<u64>,
}

/// Whether a CSV cell is a missing value.
pub fn is_missing_cell(raw: &str) -> bool {
    matches!(raw.trim(), "" | "NaN" | "nan" | "NA" | "null")
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

    /// Checks that every missing value (NaN) is in a feature that takes
    /// one (`accepts[j]`), and that no value is infinite; the error names
    /// the file, line and column.
    pub fn check_missing(
        &self,
        feature_names: &[String],
        accepts: &[bool],
    ) -> Result<(), DataError> {
        for (i, row) in self.features.rows().into_iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if v.is_finite() || (v.is_nan() && accepts.get(j) == Some(&true)) {
                    continue;
                }
                let column = feature_names
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| j.to_string());
                let (file, line) = match &self.origin {
                    Some(o) => (Some(o.file.clone()), o.lines.get(i).copied()),
                    None => (None, None),
                };
                return Err(DataError::Cell {
                    file,
                    line,
                    row: i,
                    column,
                    message: if v.is_nan() {
                        "missing value, and the model cannot take one for this feature (only \
                         tree ensembles whose spec lists it in `accepts_missing` can)"
                            .into()
                    } else {
                        format!("{v} is not a finite number")
                    },
                });
            }
        }
        Ok(())
    }

    /// Per feature, how many values lie below and above `ranges[j]`
    /// (missing values are not counted).
    pub fn out_of_range(&self, ranges: &[[f64; 2]]) -> Vec<(usize, usize)> {
        self.features
            .columns()
            .into_iter()
            .zip(ranges)
            .map(|(c, &[lo, hi])| {
                let below = c.iter().filter(|&&v| v < lo).count();
                let above = c.iter().filter(|&&v| v > hi).count();
                (below, above)
            })
            .collect()
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
        let mut lines = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                csv_err(line, e.to_string())
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let raw = |col: usize| -> Result<&str, DataError> {
                record
                    .get(col)
                    .ok_or_else(|| csv_err(line, format!("missing field {}", col + 1)))
            };
            let number = |col: usize, raw: &str| -> Result<f64, DataError> {
                match raw.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(v),
                    _ => Err(csv_err(
                        line,
                        format!("column `{}`: `{raw}` is not a finite number", &headers[col]),
                    )),
                }
            };
            let field = |col: usize| number(col, raw(col)?);
            for &c in &feature_cols {
                let cell = raw(c)?;
                features.push(if is_missing_cell(cell) {
                    f64::NAN
                } else {
                    number(c, cell)?
                });
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
            lines.push(line);
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
            origin: Some(Origin {
                file: file.to_path_buf(),
                lines,
            }),
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
        assert_eq!(
            err.to_string(),
            "t.csv:3: column `a`: `x` is not a finite number"
        );
        let err =
            Dataset::from_csv_str("a\ninf\n", Path::new("t.csv"), &names(&["a"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:2: column `a`: `inf` is not a finite number"
        );
        let err = Dataset::from_csv_str("a,target\n1,0\n2,\n", Path::new("t.csv"), &names(&["a"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:3: column `target`: `` is not a finite number"
        );
    }

    #[test]
    fn missing_cells_are_nan_and_checked_per_feature() {
        let text = "a,b\n1,\nNaN,2\n3,4\n";
        let names = names(&["a", "b"]);
        let d = Dataset::from_csv_str(text, Path::new("t.csv"), &names).unwrap();
        assert!(d.features[[0, 1]].is_nan() && d.features[[1, 0]].is_nan());
        assert_eq!(d.feature_ranges(), vec![[1.0, 3.0], [2.0, 4.0]]);
        d.check_missing(&names, &[true, true]).unwrap();
        let err = d.check_missing(&names, &[true, false]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:2: column `b`: missing value, and the model cannot take one for this \
             feature (only tree ensembles whose spec lists it in `accepts_missing` can)"
        );
        let err = d.check_missing(&names, &[false, true]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.csv:3: column `a`: missing value"),
            "{err}"
        );
        assert_eq!(
            d.out_of_range(&[[2.0, 2.5], [0.0, 3.0]]),
            vec![(1, 1), (0, 1)]
        );
    }
}

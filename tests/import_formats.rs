//! Model files written by several versions of XGBoost (1.6 to 3.x, JSON
//! and UBJSON) and LightGBM (3.3, 4.x), committed under
//! `tests/fixtures/import/` by `tools/make_import_fixtures.py`: each imports
//! to a spec whose float scores are the library's own raw margins and whose
//! predictions are the library's; quantized models run, and FHE equals the
//! clear quantized run on a fixed sample (with missing values among them).
//! Categorical models and malformed files are refused with clear errors,
//! and mutated files never panic: what the importer accepts is compiled and
//! run.

mod common;

use std::path::{Path, PathBuf};

use cml::data::Dataset;
use cml::import::{attach_data, detect, tree_file, Format, ImportOptions, MissingPolicy};
use cml::models::{CompileOptions, CompiledModel, Mode};
use cml::spec::{Precision, Side};
use cml::ImportError;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import")
}

/// Every `(model file, test CSV, train CSV)` of the version directories.
fn fixture_models() -> Vec<(PathBuf, PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("malformed"))
        .collect();
    dirs.sort();
    for dir in dirs {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        for m in manifest["models"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let test = dir.join(format!("{name}.test.csv"));
            if !test.exists() {
                continue; // the categorical models, which must be refused
            }
            let train = match m["train"].as_str() {
                Some(t) if !t.starts_with("specs/") => dir.join(Path::new(t).file_name().unwrap()),
                Some(t) => root.join(t),
                None => test.clone(),
            };
            for file in m["files"].as_array().unwrap() {
                let file = file.as_str().unwrap();
                if file.ends_with(".csv") {
                    continue;
                }
                out.push((dir.join(file), test.clone(), train.clone()));
            }
        }
    }
    out
}

/// Imports a fixture as `cml import` does: the model's names matched to
/// the CSV, calibration ranges and missing features from the data.
fn import(model: &Path, train: &Path, test: &Path) -> (cml::ModelSpec, Dataset) {
    let mut spec = tree_file(model, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let columns = Dataset::feature_columns(train).unwrap();
    let names = cml::import::match_csv_names(spec.features(), &columns, train).unwrap();
    if let cml::spec::ModelKind::Ensemble(e) = &mut spec.model {
        e.features = names;
    }
    let train = Dataset::from_csv(train, spec.features()).unwrap();
    let test = Dataset::from_csv(test, spec.features()).unwrap();
    attach_data(&mut spec, &train, Some(&test), MissingPolicy::Auto);
    spec.check(model).unwrap();
    (spec, test)
}

#[test]
fn every_library_version_imports_to_the_library_s_own_margins() {
    let models = fixture_models();
    let libraries: Vec<String> = models
        .iter()
        .map(|(m, _, _)| {
            m.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into()
        })
        .collect();
    // At least three XGBoost and two LightGBM versions, JSON and UBJSON.
    assert!(
        libraries
            .iter()
            .filter(|l| l.starts_with("xgboost-"))
            .count()
            >= 3 * 6
    );
    assert!(
        libraries
            .iter()
            .filter(|l| l.starts_with("lightgbm-"))
            .count()
            >= 2 * 4
    );
    assert!(models
        .iter()
        .any(|(m, _, _)| m.extension().unwrap() == "ubj"));
    let mut multiclass = 0;
    for (model, test_path, train_path) in &models {
        let (spec, test) = import(model, train_path, test_path);
        let e = spec.ensemble().unwrap();
        let lightgbm = spec.source.as_ref().unwrap().library == "lightgbm";
        assert_eq!(
            e.precision,
            if lightgbm {
                Precision::Double
            } else {
                Precision::Single
            }
        );
        multiclass += usize::from(e.n_outputs() > 1);
        // XGBoost sums its trees in f32; LightGBM in f64.
        let tolerance = if lightgbm { 1e-12 } else { 2e-6 };
        let scores = test.scores.as_ref().unwrap();
        assert_eq!(scores.ncols(), e.n_outputs(), "{}", model.display());
        let model_c = CompiledModel::compile(&spec, &CompileOptions::default()).unwrap();
        let saved = test.predictions.as_ref().unwrap();
        for (i, row) in test.features.rows().into_iter().enumerate() {
            let x = row.to_vec();
            let s = e.float_scores(&x);
            for (a, b) in s.iter().zip(scores.row(i)) {
                assert!(
                    (a - b).abs() <= tolerance * b.abs().max(1.0),
                    "{} row {i}: margin {a}, library {b}",
                    model.display()
                );
            }
            let p = model_c.predict_float(&x).unwrap();
            match p.class() {
                Some(c) => assert_eq!(c as f64, saved[i], "{} row {i}", model.display()),
                None => assert!(
                    (p.value() - saved[i]).abs() <= 1e-5 * saved[i].abs().max(1.0),
                    "{} row {i}: {} vs {}",
                    model.display(),
                    p.value(),
                    saved[i]
                ),
            }
        }
        // The quantized model runs on every row, missing cells included.
        let clear = model_c.predict(test.features.view(), Mode::Clear).unwrap();
        assert_eq!(clear.len(), test.len());
    }
    assert!(multiclass >= 8, "{multiclass} multiclass fixtures");
}

#[test]
fn missing_values_take_the_library_s_default_branch_under_fhe() {
    // XGBoost 3 (default_left) and LightGBM 4 (missing type NaN), both
    // trained and tested with ~15% empty cells; and vector leaves.
    let models = fixture_models();
    let pick = |dir_prefix: &str, file: &str| {
        models
            .iter()
            .rev()
            .find(|(m, _, _)| {
                m.file_name().unwrap() == file
                    && m.parent()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(dir_prefix)
            })
            .unwrap_or_else(|| panic!("no {dir_prefix} {file} fixture"))
            .clone()
    };
    for (model, test_path, train_path) in [
        pick("xgboost-3", "missing.ubj"),
        pick("lightgbm-4", "missing.txt"),
        pick("xgboost-3", "multiclass_vector_leaf.json"),
    ] {
        let (spec, test) = import(&model, &train_path, &test_path);
        let e = spec.ensemble().unwrap();
        let has_missing = test.features.iter().any(|v| v.is_nan());
        if has_missing {
            assert!(!e.accepts_missing.is_empty());
            assert!(e
                .trees
                .iter()
                .flat_map(|t| &t.nodes)
                .any(|n| n.missing == Some(Side::Left)));
        }
        let compiled = CompiledModel::compile(&spec, &CompileOptions::default()).unwrap();
        // A fixed sample: the first rows with a missing cell, and one without.
        let mut rows: Vec<usize> = (0..test.len())
            .filter(|&i| test.features.row(i).iter().any(|v| v.is_nan()))
            .take(2)
            .collect();
        rows.push((0..test.len()).find(|i| !rows.contains(i)).unwrap());
        let x = test.features.select(cml::ndarray::Axis(0), &rows);
        let clear = compiled.predict(x.view(), Mode::Clear).unwrap();
        let fhe = compiled.predict(x.view(), Mode::Execute).unwrap();
        assert_eq!(fhe, clear, "{}", model.display());
        if has_missing {
            assert!(x.row(0).iter().any(|v| v.is_nan()));
        }
    }
}

#[test]
fn categorical_models_are_refused_naming_the_feature() {
    let mut seen = 0;
    for dir in std::fs::read_dir(fixtures()).unwrap() {
        let dir = dir.unwrap().path();
        for ext in ["json", "ubj", "txt"] {
            let file = dir.join(format!("categorical.{ext}"));
            if !file.exists() {
                continue;
            }
            seen += 1;
            let err = tree_file(&file, &ImportOptions::default()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("categorical"), "{msg}");
            assert!(
                msg.contains("petal width band") || msg.contains("petal_width_band"),
                "{msg}"
            );
        }
    }
    assert!(seen >= 4, "{seen} categorical fixtures");
}

#[test]
fn malformed_files_are_clear_errors() {
    let dir = fixtures().join("malformed");
    let cases = [
        (
            "lgb_num_leaves_mismatch.txt",
            "leaf_value: 8 values, expected 10",
        ),
        (
            "lgb_truncated.txt",
            "no `end of trees` line: the file is truncated",
        ),
        ("xgb_cycle.json", "a cycle"),
        (
            "xgb_feature_out_of_range.json",
            "feature 999 is out of range",
        ),
        (
            "xgb_huge_count.ubj",
            "length 4611686018427387904 does not fit",
        ),
        (
            "xgb_huge_typed_count.ubj",
            "length 4611686018427387904 does not fit",
        ),
        (
            "xgb_nan_threshold.json",
            "split_conditions[0]: NaN is not a number",
        ),
        ("xgb_truncated.json", "EOF while parsing"),
        (
            "xgb_truncated.ubj",
            "does not fit in the 0 bytes that remain",
        ),
        (
            "xgb_wrong_type.json",
            "split_conditions: invalid type: string",
        ),
    ];
    for (file, needle) in cases {
        let err = tree_file(dir.join(file), &ImportOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(file), "{msg}");
        assert!(msg.contains(needle), "{file}: {msg}");
    }
    let err = tree_file(dir.join("manifest.json"), &ImportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("missing field `learner`"), "{err}");
    let err = tree_file(
        dir.parent().unwrap().join("README.md"),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::Format { .. }), "{err}");
}

#[test]
fn formats_are_told_apart_by_content() {
    let models = fixture_models();
    for (m, _, _) in &models {
        let bytes = std::fs::read(m).unwrap();
        let want = match m.extension().unwrap().to_str().unwrap() {
            "json" => Format::XgboostJson,
            "ubj" => Format::XgboostUbjson,
            _ => Format::LightgbmText,
        };
        assert_eq!(detect(&bytes), Some(want), "{}", m.display());
    }
    let onnx =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("specs/digits_mlp.onnx"))
            .unwrap();
    assert_eq!(detect(&onnx), Some(Format::Onnx));
    // A UBJSON model saved under a `.json` name is still read.
    let (ubj, test, train) = models
        .iter()
        .find(|(m, _, _)| m.extension().unwrap() == "ubj")
        .unwrap();
    let renamed = std::env::temp_dir().join(format!("cml-ubj-as-json-{}.json", std::process::id()));
    std::fs::copy(ubj, &renamed).unwrap();
    let a = import(ubj, train, test).0;
    let b = import(&renamed, train, test).0;
    std::fs::remove_file(&renamed).ok();
    assert_eq!(a.model, b.model);
}

#[test]
fn class_names_of_the_wrong_count_are_named_as_such() {
    let (model, _, _) = fixture_models()
        .into_iter()
        .find(|(m, _, _)| m.file_name().unwrap() == "multiclass.json")
        .unwrap();
    let options = ImportOptions {
        classes: Some(vec!["a".into(), "b".into()]),
        ..ImportOptions::default()
    };
    let err = tree_file(&model, &options).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("2 class names were given, but the model has 3 classes"),
        "{err}"
    );
}

#[test]
fn mutated_model_files_never_panic_and_what_is_accepted_runs() {
    let mut rng = common::Rng(0x5eed_1e55);
    let mut sources: Vec<(PathBuf, Vec<u8>, Dataset)> = Vec::new();
    for (m, test, _) in fixture_models() {
        let ext = m.extension().unwrap().to_owned();
        // One file of each format and library.
        if sources
            .iter()
            .any(|(p, _, _)| p.extension().unwrap() == ext && p.parent() == m.parent())
            || !m
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .starts_with("binary")
        {
            continue;
        }
        let spec = tree_file(&m, &ImportOptions::default()).unwrap();
        let columns = Dataset::feature_columns(&test).unwrap();
        let names = cml::import::match_csv_names(spec.features(), &columns, &test).unwrap();
        let data = Dataset::from_csv(&test, &names).unwrap();
        sources.push((m.clone(), std::fs::read(&m).unwrap(), data));
    }
    assert!(sources.len() >= 6);
    let tokens: [&[u8]; 8] = [
        b"-1",
        b"NaN",
        b"1e308",
        b"999999",
        b"[",
        b"\x40",
        b"decision_type=1",
        b"L",
    ];
    let (mut accepted, mut tried) = (0, 0);
    for (path, bytes, data) in &sources {
        for _ in 0..150 {
            let mutated =
                common::mutate_bytes(&mut rng, bytes, &tokens, b"0123456789-.,[]{}\x00\xff");
            tried += 1;
            let file = path.with_extension(format!(
                "mutated.{}",
                path.extension().unwrap().to_string_lossy()
            ));
            let result = match detect(&mutated) {
                Some(Format::LightgbmText) => {
                    std::str::from_utf8(&mutated).map_err(|_| ()).and_then(|t| {
                        cml::import::lightgbm_text(t, &file, &ImportOptions::default())
                            .map_err(|_| ())
                    })
                }
                _ => cml::import::xgboost_bytes(&mutated, &file, &ImportOptions::default())
                    .map_err(|_| ()),
            };
            let Ok(mut spec) = result else { continue };
            accepted += 1;
            // Use what was accepted: calibrate, compile and run in clear.
            if spec.features().len() != data.features.ncols() {
                continue;
            }
            attach_data(&mut spec, data, None, MissingPolicy::All);
            if spec.check(&file).is_err() {
                continue;
            }
            if let Ok(model) = CompiledModel::compile(&spec, &CompileOptions::default()) {
                let rows = data.features.slice(cml::ndarray::s![..4, ..]);
                model.predict(rows, Mode::Clear).unwrap();
            }
        }
    }
    assert!(
        accepted > 0 && accepted < tried,
        "{accepted} of {tried} accepted"
    );
}

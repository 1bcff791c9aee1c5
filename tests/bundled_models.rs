//! Every bundled linear model and tree ensemble (networks have
//! `tests/network_models.rs`), on its whole test
//! split: our float model reproduces the saved scikit-learn / XGBoost
//! outputs, quantized accuracy stays within one point of float (R² within
//! 0.02), and FHE predictions equal the clear quantized ones on every
//! sample.

use std::path::{Path, PathBuf};

use cml::data::Dataset;
use cml::models::{CompiledModel, Mode};
use cml::report;
use cml::spec::{LoadedSpec, ModelSpec, Task};

fn bundled() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| ModelSpec::load(p).unwrap().spec.network().is_none())
        .collect();
    specs.sort();
    assert!(
        specs.len() >= 5,
        "expected the bundled specs, found {specs:?}"
    );
    specs
}

fn load(path: &Path) -> (LoadedSpec, Dataset, CompiledModel) {
    let (loaded, test, train) = report::load(path).unwrap();
    let model = report::compile(&loaded, train.as_ref(), cml::PFail::default()).unwrap();
    (loaded, test, model)
}

#[test]
fn float_model_reproduces_scikit_learn() {
    for path in bundled() {
        let (loaded, test, model) = load(&path);
        // XGBoost sums its trees in f32; scikit-learn's outputs are exact.
        let xgboost = loaded
            .spec
            .source
            .as_ref()
            .is_some_and(|s| s.library == "xgboost");
        let tolerance = if xgboost { 1e-5 } else { 1e-9 };
        let saved_scores = test.scores.as_ref().expect("saved scores");
        let saved_predictions = test.predictions.as_ref().expect("saved predictions");
        for (i, row) in test.features.rows().into_iter().enumerate() {
            let p = model.predict_float(&row.to_vec()).unwrap();
            for (a, b) in p.scores.iter().zip(saved_scores.row(i)) {
                assert!(
                    (a - b).abs() <= tolerance * b.abs().max(1.0),
                    "{}: sample {i}: score {a} vs saved {b}",
                    path.display()
                );
            }
            let want = saved_predictions[i];
            assert!(
                (p.value() - want).abs() <= tolerance * want.abs().max(1.0),
                "{}: sample {i}: prediction {} vs saved {want}",
                path.display(),
                p.value()
            );
        }
    }
}

#[test]
fn quantized_accuracy_is_within_one_point_of_float() {
    for path in bundled() {
        let (loaded, test, model) = load(&path);
        // The bundled defaults: 8-bit inputs for linear models, 6-bit
        // features for trees (as Concrete ML).
        let bits = if loaded.spec.ensemble().is_some() {
            6
        } else {
            8
        };
        assert_eq!(loaded.spec.quantization.input_bits, bits);
        let options = report::RunOptions {
            fhe: false,
            ..Default::default()
        };
        let r = report::evaluate(&model, &test, &options, &|| {}).unwrap();
        // One point of accuracy; R² within 0.02 for regressors.
        let tolerance = match loaded.spec.task() {
            Task::Classification => 0.01,
            Task::Regression => 0.02,
        };
        assert!(
            r.quantized.primary >= r.float.primary - tolerance,
            "{}: quantized {} vs float {}",
            path.display(),
            r.quantized.primary,
            r.float.primary
        );
        if loaded.spec.task() == Task::Classification {
            assert!(
                r.float.primary > 0.9,
                "{}: float accuracy {}",
                path.display(),
                r.float.primary
            );
        }
    }
}

/// Ensembles of 20 trees cost 2–4 s of CPU per sample under FHE; CI runs
/// every `STRIDE`-th of their test samples and every `SMALL_STRIDE`-th of
/// the other models' (a fixed sample, within CI's time budget), and
/// `fhe_equals_clear_on_every_sample` (run with `--ignored`, about 20
/// minutes on 2 cores) runs them all.
const STRIDE: usize = 6;
const SMALL_STRIDE: usize = 2;

fn large(model: &CompiledModel) -> bool {
    model.encoding.pbs_count(&model.program) > 100
}

fn fhe_equals_clear(path: &Path, model: &CompiledModel, test: &Dataset, stride: usize) {
    let rows: Vec<usize> = (0..test.len()).step_by(stride).collect();
    let x = test.features.select(ndarray::Axis(0), &rows);
    let clear = model.predict(x.view(), Mode::Clear).unwrap();
    let simulated = model.predict(x.view(), Mode::Simulate).unwrap();
    let fhe = model.predict(x.view(), Mode::Execute).unwrap();
    assert_eq!(clear.len(), rows.len());
    assert_eq!(simulated, clear, "{}: simulate vs clear", path.display());
    for ((f, c), i) in fhe.iter().zip(&clear).zip(&rows) {
        assert_eq!(f, c, "{}: sample {i}: FHE vs clear", path.display());
    }
}

#[test]
fn fhe_equals_clear_on_every_test_sample() {
    for path in bundled() {
        let (_, test, model) = load(&path);
        let stride = if large(&model) { STRIDE } else { SMALL_STRIDE };
        fhe_equals_clear(&path, &model, &test, stride);
    }
}

#[test]
#[ignore = "about 20 minutes on 2 cores; CI covers a fixed sample"]
fn fhe_equals_clear_on_every_sample() {
    for path in bundled() {
        let (_, test, model) = load(&path);
        fhe_equals_clear(&path, &model, &test, 1);
    }
}

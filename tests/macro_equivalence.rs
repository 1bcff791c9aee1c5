//! For every bundled spec, the code `fhe_model!` generates and the runtime
//! loading the same YAML give identical clear and FHE outputs.

use cml::fhe_model;
use cml::models::{CompileOptions, CompiledModel, Mode};
use cml::report;

fhe_model!(BreastCancerLogreg = "specs/breast_cancer_logreg.yaml");
fhe_model!(BreastCancerSvc = "specs/breast_cancer_linear_svc.yaml");
fhe_model!(IrisLogreg = "specs/iris_logreg.yaml");
fhe_model!(DiabetesRidge = "specs/diabetes_ridge.yaml");
fhe_model!(DiabetesLinear = "specs/diabetes_linear_regression.yaml");
fhe_model!(DiabetesPoisson = "specs/diabetes_poisson.yaml");
fhe_model!(BreastCancerTree = "specs/breast_cancer_tree.yaml");
fhe_model!(IrisTree = "specs/iris_tree.yaml");
fhe_model!(DiabetesTree = "specs/diabetes_tree.yaml");

/// Compares a generated model with the runtime on the spec's test split:
/// program, parameters, quantized inputs, clear and simulated predictions on
/// every sample, and FHE (generated keygen/encrypt/run/decrypt) on a few.
macro_rules! check_equivalent {
    ($model:ident, $module:ident, $spec:literal, $compare:expr) => {{
        let (loaded, test, _) = report::load(std::path::Path::new($spec)).unwrap();
        let runtime = CompiledModel::compile(&loaded.spec, &CompileOptions::default()).unwrap();
        assert_eq!($model::program(), &runtime.program, "{}: program", $spec);
        assert_eq!($model::params(), &runtime.params, "{}: parameters", $spec);
        assert_eq!($model::N_FEATURES, runtime.n_features());
        let clear = runtime.predict(test.features.view(), Mode::Clear).unwrap();
        let (client, server) = $model::keygen();
        for (i, row) in test.features.rows().into_iter().enumerate() {
            let x: [f64; $model::N_FEATURES] = $model::row(row).unwrap();
            assert_eq!(
                $model::quantize(&x).unwrap().to_vec(),
                runtime.quantize(&x).unwrap()
            );
            let generated: $module::Prediction = $model::predict(&x).unwrap();
            assert_eq!($model::simulate(&x).unwrap(), generated);
            $compare(&generated, &clear[i]);
            if i < 8 {
                let ct = $model::encrypt(&client, &x).unwrap();
                let out = $model::run(&server, &ct).unwrap();
                assert_eq!(
                    $model::decrypt(&client, &out).unwrap(),
                    generated,
                    "{}: FHE sample {i}",
                    $spec
                );
            }
        }
        // FHE through the runtime for the same samples agrees as well.
        let first = test.features.slice(ndarray::s![..8, ..]);
        let fhe = runtime.predict(first, Mode::Execute).unwrap();
        assert_eq!(fhe, clear[..8].to_vec(), "{}: runtime FHE", $spec);
    }};
}

fn same_class<C: PartialEq + std::fmt::Debug>(
    class: C,
    index: usize,
    all: &[C],
    scores: &[f64],
    want: &cml::Prediction,
) {
    assert_eq!(Some(index), want.class());
    assert_eq!(class, all[index]);
    assert_eq!(scores, want.scores.as_slice());
}

#[test]
fn classifiers_match_the_runtime() {
    check_equivalent!(
        BreastCancerLogreg,
        breast_cancer_logreg,
        "specs/breast_cancer_logreg.yaml",
        |g: &breast_cancer_logreg::Prediction, w: &cml::Prediction| {
            same_class(
                g.class,
                g.class.index(),
                &breast_cancer_logreg::Class::ALL,
                &g.scores,
                w,
            );
            assert_eq!(g.probabilities.map(|p| p.to_vec()), w.probabilities);
        }
    );
    check_equivalent!(
        BreastCancerSvc,
        breast_cancer_svc,
        "specs/breast_cancer_linear_svc.yaml",
        |g: &breast_cancer_svc::Prediction, w: &cml::Prediction| {
            same_class(
                g.class,
                g.class.index(),
                &breast_cancer_svc::Class::ALL,
                &g.scores,
                w,
            );
            assert_eq!(g.probabilities, None);
        }
    );
    check_equivalent!(
        IrisLogreg,
        iris_logreg,
        "specs/iris_logreg.yaml",
        |g: &iris_logreg::Prediction, w: &cml::Prediction| {
            same_class(
                g.class,
                g.class.index(),
                &iris_logreg::Class::ALL,
                &g.scores,
                w,
            );
            assert_eq!(g.probabilities.map(|p| p.to_vec()), w.probabilities);
        }
    );
}

#[test]
fn regressors_match_the_runtime() {
    fn same_value(value: f64, score: f64, want: &cml::Prediction) {
        assert_eq!(value, want.value());
        assert_eq!(score, want.scores[0]);
    }
    check_equivalent!(
        DiabetesRidge,
        diabetes_ridge,
        "specs/diabetes_ridge.yaml",
        |g: &diabetes_ridge::Prediction, w: &cml::Prediction| same_value(g.value, g.score, w)
    );
    check_equivalent!(
        DiabetesLinear,
        diabetes_linear,
        "specs/diabetes_linear_regression.yaml",
        |g: &diabetes_linear::Prediction, w: &cml::Prediction| same_value(g.value, g.score, w)
    );
    check_equivalent!(
        DiabetesPoisson,
        diabetes_poisson,
        "specs/diabetes_poisson.yaml",
        |g: &diabetes_poisson::Prediction, w: &cml::Prediction| same_value(g.value, g.score, w)
    );
}

#[test]
fn typed_classes_carry_the_spec_names() {
    assert_eq!(breast_cancer_logreg::Class::NAMES, ["malignant", "benign"]);
    assert_eq!(iris_logreg::Class::ALL.len(), 3);
    assert_eq!(iris_logreg::Class::from_index(3), None);
    assert_eq!(BreastCancerLogreg::FEATURES[0], "mean radius");
    // A row of the wrong length is an error, not a panic.
    let short = ndarray::array![1.0, 2.0];
    let err = IrisLogreg::predict_row(short.view()).unwrap_err();
    assert_eq!(err.to_string(), "input has 2 features, the model expects 4");
}

#[test]
fn tree_ensembles_match_the_runtime() {
    check_equivalent!(
        BreastCancerTree,
        breast_cancer_tree,
        "specs/breast_cancer_tree.yaml",
        |g: &breast_cancer_tree::Prediction, w: &cml::Prediction| {
            same_class(
                g.class,
                g.class.index(),
                &breast_cancer_tree::Class::ALL,
                &g.scores,
                w,
            );
        }
    );
    check_equivalent!(
        IrisTree,
        iris_tree,
        "specs/iris_tree.yaml",
        |g: &iris_tree::Prediction, w: &cml::Prediction| {
            same_class(
                g.class,
                g.class.index(),
                &iris_tree::Class::ALL,
                &g.scores,
                w,
            );
        }
    );
    check_equivalent!(
        DiabetesTree,
        diabetes_tree,
        "specs/diabetes_tree.yaml",
        |g: &diabetes_tree::Prediction, w: &cml::Prediction| {
            assert_eq!(g.value, w.value());
            assert_eq!(g.score, w.scores[0]);
        }
    );
}

fhe_model!(IrisLgbm = "specs/iris_lgbm.yaml");
fhe_model!(BreastCancerXgbMissing = "specs/breast_cancer_xgb_missing.yaml");

#[test]
fn models_imported_from_library_files_match_the_runtime() {
    check_equivalent!(
        IrisLgbm,
        iris_lgbm,
        "specs/iris_lgbm.yaml",
        |g: &iris_lgbm::Prediction, w: &cml::Prediction| {
            same_class(
                g.class,
                g.class.index(),
                &iris_lgbm::Class::ALL,
                &g.scores,
                w,
            );
        }
    );
}

/// Missing values through the generated API: NaN features quantize, predict
/// and encrypt as the runtime does (107 PBS per sample: clear on every test
/// sample, FHE on one with missing values).
#[test]
fn generated_models_take_missing_values() {
    let spec = "specs/breast_cancer_xgb_missing.yaml";
    let (loaded, test, _) = report::load(std::path::Path::new(spec)).unwrap();
    let runtime = CompiledModel::compile(&loaded.spec, &CompileOptions::default()).unwrap();
    assert_eq!(BreastCancerXgbMissing::program(), &runtime.program);
    assert_eq!(BreastCancerXgbMissing::params(), &runtime.params);
    let clear = runtime.predict(test.features.view(), Mode::Clear).unwrap();
    let mut with_missing = None;
    for (i, row) in test.features.rows().into_iter().enumerate() {
        let x: [f64; BreastCancerXgbMissing::N_FEATURES] =
            BreastCancerXgbMissing::row(row).unwrap();
        assert_eq!(
            BreastCancerXgbMissing::quantize(&x).unwrap().to_vec(),
            runtime.quantize(&x).unwrap()
        );
        let g = BreastCancerXgbMissing::predict(&x).unwrap();
        assert_eq!(Some(g.class.index()), clear[i].class(), "sample {i}");
        assert_eq!(
            g.scores.as_slice(),
            clear[i].scores.as_slice(),
            "sample {i}"
        );
        if with_missing.is_none() && x.iter().any(|v| v.is_nan()) {
            with_missing = Some((x, g));
        }
    }
    let (x, g) = with_missing.expect("the test split has missing values");
    let (client, server) = BreastCancerXgbMissing::keygen();
    let ct = BreastCancerXgbMissing::encrypt(&client, &x).unwrap();
    let out = BreastCancerXgbMissing::run(&server, &ct).unwrap();
    assert_eq!(BreastCancerXgbMissing::decrypt(&client, &out).unwrap(), g);
}

fhe_model!(DigitsMlp = "specs/digits_mlp.yaml");

/// A network spec compiles into the same program and parameters as the
/// runtime's, predicts the same in clear on every test sample, and its
/// generated encrypt → run → decrypt is the runtime's: the same ciphertext run
/// by both servers decrypts to the same prediction (bootstrapping is
/// deterministic; FHE against clear is `tests/network_models.rs`).
#[test]
fn networks_match_the_runtime() {
    let spec = "specs/digits_mlp.yaml";
    let (loaded, test, _) = report::load(std::path::Path::new(spec)).unwrap();
    let runtime = CompiledModel::compile(&loaded.spec, &CompileOptions::default()).unwrap();
    assert_eq!(DigitsMlp::program(), &runtime.program);
    assert_eq!(DigitsMlp::params(), &runtime.params);
    assert_eq!(DigitsMlp::N_INPUTS, 64);
    let clear = runtime.predict(test.features.view(), Mode::Clear).unwrap();
    for (i, row) in test.features.rows().into_iter().enumerate() {
        let x: [f64; DigitsMlp::N_FEATURES] = DigitsMlp::row(row).unwrap();
        let generated: digits_mlp::Prediction = DigitsMlp::predict(&x).unwrap();
        assert_eq!(DigitsMlp::simulate(&x).unwrap(), generated);
        same_class(
            generated.class,
            generated.class.index(),
            &digits_mlp::Class::ALL,
            &generated.scores,
            &clear[i],
        );
    }
    let (client, server) = DigitsMlp::keygen();
    for row in test.features.rows().into_iter().take(2) {
        let x: [f64; DigitsMlp::N_FEATURES] = DigitsMlp::row(row).unwrap();
        let ct = DigitsMlp::encrypt(&client, &x).unwrap();
        let generated = DigitsMlp::run(&server, &ct).unwrap();
        let direct = server.run(&runtime.program, &ct).unwrap();
        let want = runtime.decrypt(&client, &direct).unwrap();
        let got = DigitsMlp::decrypt(&client, &generated).unwrap();
        assert_eq!(got.scores.to_vec(), want.scores);
        assert_eq!(Some(got.class.index()), want.class());
    }
}

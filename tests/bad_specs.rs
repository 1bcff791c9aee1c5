//! Bad specs get errors that name the file, the line and column, and the
//! field; no input makes the loader panic.

mod common;

use cml::spec::{FieldPath, Location, ModelSpec};
use cml::SpecError;
use common::{mutate_bytes, Rng};

const GOOD: &str = r#"format: cml/v1
name: tiny
model:
  linear:
    estimator: logistic_regression
    task: classification
    link: sigmoid
    features: [a, b, c]
    classes: [no, yes]
    coefficients:
      - [0.5, -1.0, 2.0]
    intercepts: [0.25]
quantization:
  input_bits: 8
  weight_bits: 8
  input_ranges: [[0.0, 1.0], [-1.0, 1.0], [0.0, 10.0]]
"#;

/// Loads `GOOD` with one substitution, expecting an error.
fn error_of(from: &str, to: &str) -> SpecError {
    assert!(
        GOOD.contains(from),
        "bad test: `{from}` not in the base spec"
    );
    let text = GOOD.replacen(from, to, 1);
    ModelSpec::from_yaml_str(&text, "specs/tiny.yaml").expect_err("the spec should be refused")
}

fn check(err: &SpecError, path: &str, line: usize, needle: &str) {
    let msg = err.to_string();
    assert_eq!(err.path(), Some(&FieldPath::parse(path)), "path of: {msg}");
    assert_eq!(err.location().map(|l| l.line), Some(line), "line of: {msg}");
    assert!(
        msg.starts_with(&format!("specs/tiny.yaml:{line}:")),
        "{msg}"
    );
    assert!(msg.contains(&format!("field `{path}`")), "{msg}");
    assert!(msg.contains(needle), "`{needle}` not in: {msg}");
}

#[test]
fn the_base_spec_is_valid() {
    let spec = ModelSpec::from_yaml_str(GOOD, "specs/tiny.yaml").unwrap();
    assert_eq!(spec.n_features(), 3);
}

#[test]
fn unknown_field() {
    let err = error_of(
        "    intercepts: [0.25]\n",
        "    intercepts: [0.25]\n    bias: 3\n",
    );
    check(
        &err,
        "model.linear.bias",
        13,
        "unknown field `bias`, expected one of",
    );
    assert!(!err.to_string().contains(": model.linear:"), "{err}");
}

#[test]
fn unknown_top_level_field() {
    let err = error_of("name: tiny\n", "name: tiny\nversion: 2\n");
    check(&err, "version", 3, "unknown field `version`");
}

#[test]
fn missing_field() {
    let err = error_of("    intercepts: [0.25]\n", "");
    check(&err, "model.linear", 5, "missing field `intercepts`");
}

#[test]
fn wrong_type() {
    let err = error_of("input_bits: 8", "input_bits: eight");
    check(&err, "quantization.input_bits", 14, "invalid type");
}

#[test]
fn unknown_estimator() {
    let err = error_of("estimator: logistic_regression", "estimator: random_forest");
    check(
        &err,
        "model.linear.estimator",
        5,
        "unknown variant `random_forest`",
    );
}

#[test]
fn row_too_short() {
    let err = error_of("[0.5, -1.0, 2.0]", "[0.5, -1.0]");
    check(
        &err,
        "model.linear.coefficients[0]",
        11,
        "expected 3 elements, found 2",
    );
}

#[test]
fn too_many_intercepts() {
    let err = error_of("intercepts: [0.25]", "intercepts: [0.25, 1.0]");
    check(
        &err,
        "model.linear.intercepts",
        12,
        "expected 1 element, found 2",
    );
}

#[test]
fn nan_weight() {
    let err = error_of("[0.5, -1.0, 2.0]", "[0.5, .nan, 2.0]");
    check(
        &err,
        "model.linear.coefficients[0][1]",
        11,
        "must be finite, found NaN",
    );
}

#[test]
fn infinite_intercept() {
    let err = error_of("intercepts: [0.25]", "intercepts: [.inf]");
    check(
        &err,
        "model.linear.intercepts[0]",
        12,
        "must be finite, found inf",
    );
}

#[test]
fn bits_out_of_range() {
    let err = error_of("input_bits: 8", "input_bits: 17");
    check(
        &err,
        "quantization.input_bits",
        14,
        "17 bits is out of range, expected 2 to 16",
    );
    let err = error_of("weight_bits: 8", "weight_bits: 1");
    check(
        &err,
        "quantization.weight_bits",
        15,
        "1 bits is out of range",
    );
}

#[test]
fn bits_that_do_not_fit_a_byte() {
    let err = error_of("input_bits: 8", "input_bits: 300");
    check(&err, "quantization.input_bits", 14, "invalid value");
}

#[test]
fn inverted_calibration_range() {
    let err = error_of("[0.0, 10.0]]", "[10.0, 0.0]]");
    check(
        &err,
        "quantization.input_ranges[2]",
        16,
        "range [10, 0] has min above max",
    );
}

#[test]
fn wrong_number_of_ranges() {
    let err = error_of("[[0.0, 1.0], [-1.0, 1.0], [0.0, 10.0]]", "[[0.0, 1.0]]");
    check(
        &err,
        "quantization.input_ranges",
        16,
        "expected 3 elements, found 1",
    );
}

#[test]
fn link_that_does_not_fit_the_estimator() {
    let err = error_of("link: sigmoid", "link: exp");
    check(
        &err,
        "model.linear.link",
        7,
        "link `exp` is not valid for LogisticRegression",
    );
}

#[test]
fn task_that_does_not_fit_the_estimator() {
    let err = error_of("task: classification", "task: regression");
    check(&err, "model.linear.task", 6, "is a Classification model");
}

#[test]
fn classifier_without_classes() {
    let err = error_of("    classes: [no, yes]\n", "");
    // The missing field is reported at the mapping that lacks it.
    check(
        &err,
        "model.linear.classes",
        5,
        "`classes` is required here",
    );
}

#[test]
fn duplicate_feature_names() {
    let err = error_of("features: [a, b, c]", "features: [a, b, a]");
    check(&err, "model.linear.features[2]", 8, "duplicate name `a`");
}

#[test]
fn bad_format_and_name() {
    let err = error_of("format: cml/v1", "format: cml/v9");
    check(&err, "format", 1, "unsupported format `cml/v9`");
    let err = error_of("name: tiny", "name: Tiny Model");
    check(&err, "name", 2, "must be non-empty lowercase");
}

#[test]
fn not_yaml_at_all() {
    let err = ModelSpec::from_yaml_str("model: [unclosed", "x.yaml").unwrap_err();
    assert!(matches!(err, SpecError::Syntax { .. }), "{err}");
    assert!(err.to_string().starts_with("x.yaml:"), "{err}");
}

#[test]
fn missing_file_names_it() {
    let err = ModelSpec::load("specs/does_not_exist.yaml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("specs/does_not_exist.yaml: cannot read spec"),
        "{err}"
    );
}

#[test]
fn locations_are_one_based() {
    let err = error_of("name: tiny", "name: ''");
    assert_eq!(err.location(), Some(Location { line: 2, column: 7 }));
}

/// Applies 1–4 random edits (deletions, inserted tokens, replaced bytes).
fn mutate(rng: &mut Rng, source: &str, tokens: &[&str]) -> String {
    let tokens: Vec<&[u8]> = tokens.iter().map(|t| t.as_bytes()).collect();
    let text = mutate_bytes(rng, source.as_bytes(), &tokens, b" 0a:-[]{},.\n\"/");
    String::from_utf8_lossy(&text).into_owned()
}

/// Thousands of mutated DSL models (the bundled `.cml` file and the base
/// spec written in the DSL): each loads or returns an error; none panics.
#[test]
fn mutated_dsl_models_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let sources = [
        std::fs::read_to_string(dir.join("iris_logreg.cml")).unwrap(),
        ModelSpec::from_yaml_str(GOOD, "good.yaml")
            .unwrap()
            .to_dsl("Tiny"),
    ];
    let tokens = [
        "{", "}", "[", "]", ":", ",", "-", "nan", "inf", "\"", "//", "/*", "model", "1e999",
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut loaded = 0;
    for i in 0..3000 {
        let text = mutate(&mut rng, &sources[i % sources.len()], &tokens);
        if let Ok(spec) = ModelSpec::from_dsl_str(&text, "fuzz.cml") {
            loaded += 1;
            let _ = cml::CompiledModel::compile(&spec, &Default::default());
        }
    }
    // Some mutations are harmless (inside a number or a comment): the
    // fuzzer must reach the checks and the compiler, not only the parser.
    assert!(loaded > 0);
}

/// Thousands of mutated specs (bundled ones and the base one): each either
/// loads or returns an error; none panics.
#[test]
fn mutated_specs_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut sources = vec![GOOD.to_string()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            sources.push(std::fs::read_to_string(path).unwrap());
        }
    }
    let tokens: [&str; 12] = [
        "-",
        ":",
        "[",
        "]",
        "{",
        "}",
        ".nan",
        "1e308",
        "-0",
        "\n  ",
        "'",
        "999999999999999999999",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000 {
        let text = mutate(&mut rng, &sources[i % sources.len()], &tokens);
        if let Ok(spec) = ModelSpec::from_yaml_str(&text, "fuzz.yaml") {
            // A spec that loads must also compile or fail cleanly.
            let _ = cml::CompiledModel::compile(&spec, &Default::default());
        }
    }
}

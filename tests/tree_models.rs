//! Tree ensembles: the XGBoost importer, malformed models and specs, the
//! threshold rule, and the lowered program against a direct walk of the
//! quantized trees. (Every bundled tree spec also goes through
//! `tests/bundled_models.rs`: float = saved outputs, quantized accuracy,
//! FHE = clear on all test samples.)

use std::path::{Path, PathBuf};

use cml::data::Dataset;
use cml::import::{xgboost_json, xgboost_json_file, ImportOptions};
use cml::models::tree::grid_threshold;
use cml::models::{CompileOptions, CompiledModel, Mode};
use cml::quant::Quantizer;
use cml::spec::{Comparison, EnsembleSpec, ModelSpec, Node};
use cml::{report, ImportError, SpecError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn xgboost_multiclass_import_matches_xgboost_and_the_python_converter() {
    let fixtures = root().join("tests/fixtures");
    let spec = xgboost_json_file(
        fixtures.join("xgb_iris_multiclass.json"),
        &ImportOptions::default(),
    )
    .unwrap();
    let e = spec.ensemble().unwrap();
    assert_eq!(e.n_outputs(), 3);
    assert!(e.trees.iter().all(|t| t.output.is_some()));

    // The Python tool's independent conversion gives the same model.
    let expected = ModelSpec::load(fixtures.join("xgb_iris_multiclass.expected.yaml")).unwrap();
    let want = expected.spec.ensemble().unwrap();
    assert_eq!(e.trees, want.trees);
    assert_eq!(e.base_score, want.base_score);
    assert_eq!(
        (e.estimator, e.link, e.comparison, e.aggregation),
        (want.estimator, want.link, want.comparison, want.aggregation)
    );

    // Margins and predictions equal XGBoost's saved ones.
    let test = Dataset::from_csv(
        &fixtures.join("xgb_iris_multiclass.test.csv"),
        spec.features(),
    )
    .unwrap();
    let scores = test.scores.unwrap();
    let predictions = test.predictions.unwrap();
    for (i, row) in test.features.rows().into_iter().enumerate() {
        let s = e.float_scores(&row.to_vec());
        for (a, b) in s.iter().zip(scores.row(i)) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "row {i}: {a} vs {b}"
            );
        }
        let argmax = (0..3)
            .max_by(|&a, &b| s[a].partial_cmp(&s[b]).unwrap().then(b.cmp(&a)))
            .unwrap();
        assert_eq!(argmax as f64, predictions[i], "row {i}");
    }
}

#[test]
fn bundled_xgboost_specs_are_what_the_importer_writes() {
    for (name, classes) in [
        ("breast_cancer_xgb", Some(vec!["malignant", "benign"])),
        ("diabetes_xgb", None),
    ] {
        let dir = root().join("specs");
        let train = dir.join(format!("{name}.train.csv"));
        let bundled = ModelSpec::load(dir.join(format!("{name}.yaml")))
            .unwrap()
            .spec;
        let names = bundled.features().to_vec();
        let data = Dataset::from_csv(&train, &names).unwrap();
        let ranges = data.feature_ranges();
        let options = ImportOptions {
            name: Some(name.into()),
            input_ranges: Some(ranges),
            data: bundled.data.clone(),
            classes: classes.map(|c| c.into_iter().map(String::from).collect()),
            ..ImportOptions::default()
        };
        let imported = xgboost_json_file(dir.join(format!("{name}.xgb.json")), &options).unwrap();
        assert_eq!(imported, bundled, "{name}");
    }
}

const XGB: &str = r#"{"version": [1, 6, 2], "learner": {
  "feature_names": ["a", "b"], "feature_types": [],
  "learner_model_param": {"base_score": "5E-1", "num_class": "0", "num_feature": "2"},
  "objective": {"name": "binary:logistic"},
  "gradient_booster": {"name": "gbtree", "model": {
    "tree_info": [0],
    "trees": [{"left_children": [1, -1, -1], "right_children": [2, -1, -1],
               "split_indices": [1, 0, 0], "split_conditions": [0.5, -1.0, 2.0]}]}}}}"#;

fn import_err(from: &str, to: &str) -> String {
    assert!(XGB.contains(from), "bad test: `{from}`");
    let err = xgboost_json(
        &XGB.replacen(from, to, 1),
        "m.json",
        &ImportOptions::default(),
    )
    .expect_err("the model should be refused");
    err.to_string()
}

#[test]
fn malformed_xgboost_json_gives_clear_errors() {
    assert!(xgboost_json(XGB, "m.json", &ImportOptions::default()).is_ok());
    let cases = [
        // Not JSON: the position is reported.
        (
            "\"num_feature\": \"2\"}",
            "\"num_feature\": \"2\",}",
            "m.json:3:",
        ),
        // A field of the wrong type, with its path.
        (
            "\"split_conditions\": [0.5,",
            "\"split_conditions\": [\"NaN\",",
            "learner.gradient_booster.model.trees[0].split_conditions[0]",
        ),
        (
            "\"right_children\": [2, -1, -1]",
            "\"right_children\": [7, -1, -1]",
            "trees[0].right_children[0]: child 7 does not exist: the tree has 3 nodes",
        ),
        (
            "\"split_indices\": [1,",
            "\"split_indices\": [5,",
            "trees[0].split_indices[0]: feature 5 is out of range: the model has 2 features",
        ),
        (
            "\"right_children\": [2, -1, -1]",
            "\"right_children\": [1, -1, -1]",
            "not a tree: node 1 is a child of both node 0 and node 0",
        ),
        (
            "\"left_children\": [1, -1, -1]",
            "\"left_children\": [0, -1, -1]",
            "points back to the root (a cycle)",
        ),
        (
            "\"split_conditions\": [0.5, -1.0, 2.0]",
            "\"split_conditions\": [0.5, -1.0]",
            "split_conditions: 2 entries, but left_children has 3",
        ),
        (
            "binary:logistic",
            "rank:pairwise",
            "objective `rank:pairwise` is not supported",
        ),
        (
            "\"gbtree\"",
            "\"gblinear\"",
            "booster `gblinear` is not supported",
        ),
        (
            "\"5E-1\"",
            "\"nan\"",
            "base_score: `nan` is neither a finite number nor a bracketed list of them",
        ),
        (
            "\"tree_info\": [0]",
            "\"tree_info\": [0, 0]",
            "2 entries for 1 trees",
        ),
        (
            "\"learner_model_param\"",
            "\"learner_param\"",
            "missing field `learner_model_param`",
        ),
    ];
    for (from, to, needle) in cases {
        let msg = import_err(from, to);
        assert!(
            msg.contains(needle),
            "`{to}`: expected `{needle}` in: {msg}"
        );
    }
    // A file that does not exist.
    let err = xgboost_json_file("/nonexistent/m.json", &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ImportError::Io { .. }), "{err}");
}

const TREE: &str = r#"format: cml/v1
name: stump
model:
  ensemble:
    estimator: decision_tree_regressor
    task: regression
    link: identity
    features: [a, b]
    comparison: le
    aggregation: mean
    base_score: [0.0]
    trees:
      - nodes:
          - {feature: 1, threshold: 0.5, left: 1, right: 2}
          - {value: [-1.0]}
          - {value: [2.0]}
quantization:
  input_bits: 6
  input_ranges: [[0.0, 1.0], [0.0, 1.0]]
"#;

fn spec_err(from: &str, to: &str) -> SpecError {
    assert!(TREE.contains(from), "bad test: `{from}`");
    ModelSpec::from_yaml_str(&TREE.replacen(from, to, 1), "t.yaml")
        .expect_err("the spec should be refused")
}

#[test]
fn malformed_tree_specs_give_clear_errors() {
    ModelSpec::from_yaml_str(TREE, "t.yaml").unwrap();
    let cases = [
        (
            "left: 1, right: 2",
            "left: 1, right: 1",
            "t.yaml:14:",
            "field `model.ensemble.trees[0].nodes[0].right`: not a tree: node 1 is a child of both node 0 and node 0",
        ),
        (
            "left: 1, right: 2",
            "left: 0, right: 2",
            "t.yaml:14:",
            "nodes[0].left`: not a tree: node 0 points back to the root (a cycle)",
        ),
        (
            "left: 1, right: 2",
            "left: 1, right: 9",
            "t.yaml:14:",
            "nodes[0].right`: child 9 does not exist: the tree has 3 nodes",
        ),
        (
            "{feature: 1, threshold: 0.5, left: 1, right: 2}",
            "{feature: 1, threshold: 0.5, left: 1}",
            "t.yaml:14:",
            "nodes[0]`: a node is a split (`feature`, `threshold`, `left`, `right`) or a leaf (`value`): missing `right`",
        ),
        (
            "feature: 1,",
            "feature: 7,",
            "t.yaml:14:",
            "nodes[0].feature`: feature index 7 is out of range: the model has 2 features",
        ),
        (
            "threshold: 0.5",
            "threshold: .nan",
            "t.yaml:14:",
            "nodes[0].threshold`: number must be finite, found NaN",
        ),
        (
            "{value: [2.0]}",
            "{value: [2.0, 3.0]}",
            "t.yaml:16:",
            "nodes[2].value`: expected 1 element, found 2",
        ),
        (
            "{value: [-1.0]}",
            "{value: [-1.0], feature: 0}",
            "t.yaml:15:",
            "nodes[1]`: a node is a split",
        ),
        (
            "aggregation: mean",
            "aggregation: median",
            "t.yaml:10:",
            "unknown variant `median`",
        ),
        (
            "link: identity",
            "link: sigmoid",
            "t.yaml:7:",
            "link `sigmoid` is not valid for DecisionTreeRegressor",
        ),
    ];
    for (from, to, at, needle) in cases {
        let msg = spec_err(from, to).to_string();
        assert!(msg.starts_with(at), "`{to}`: expected `{at}` in: {msg}");
        assert!(
            msg.contains(needle),
            "`{to}`: expected `{needle}` in: {msg}"
        );
    }
    // A cycle below the root: 1 → 3 → 1 leaves node 3 … unreachable.
    let cyclic = TREE.replace(
        "          - {value: [-1.0]}\n",
        "          - {feature: 0, threshold: 0.1, left: 3, right: 4}\n",
    ) + "";
    let cyclic = cyclic.replace(
        "          - {value: [2.0]}\n",
        "          - {value: [2.0]}\n          - {feature: 0, threshold: 0.2, left: 1, right: 4}\n          - {value: [1.0]}\n",
    );
    let msg = ModelSpec::from_yaml_str(&cyclic, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("node 1 is a child of both node 0 and node 3"),
        "{msg}"
    );
}

#[test]
fn thresholds_map_exactly_onto_the_grid() {
    // Grid 0, 0.25, 0.5, 0.75, 1 (2 bits over [0, 1]).
    let q = Quantizer::asymmetric(0.0, 1.0, 2, false);
    assert_eq!(q.dequantize(2), 2.0 / 3.0);
    let q = Quantizer::asymmetric(0.0, 3.0, 2, false);
    // Grid points 0, 1, 2, 3. `x <= 1` holds for q <= 1; `x < 1` for q <= 0.
    assert_eq!(grid_threshold(&q, 1.0, Comparison::Le), 1);
    assert_eq!(grid_threshold(&q, 1.0, Comparison::Lt), 0);
    assert_eq!(grid_threshold(&q, 1.5, Comparison::Le), 1);
    assert_eq!(grid_threshold(&q, 1.5, Comparison::Lt), 1);
    // Below and above the grid: constant splits.
    assert_eq!(grid_threshold(&q, -0.5, Comparison::Le), -1);
    assert_eq!(grid_threshold(&q, 0.0, Comparison::Lt), -1);
    assert_eq!(grid_threshold(&q, 7.0, Comparison::Le), 3);
    // For every grid point and many thresholds, the rule is "x̂ passes".
    let q = Quantizer::asymmetric(-1.3, 2.9, 6, false);
    for i in 0..400 {
        let t = -1.6 + i as f64 * 0.0117;
        for cmp in [Comparison::Le, Comparison::Lt] {
            let g = grid_threshold(&q, t, cmp);
            for v in q.q_min()..=q.q_max() {
                let x = q.dequantize(v);
                let passes = match cmp {
                    Comparison::Le => x <= t,
                    Comparison::Lt => x < t,
                };
                assert_eq!(v <= g, passes, "t {t} q {v} {cmp:?}");
            }
        }
    }
}

/// The quantized model by a direct walk: each split compares the quantized
/// feature with its grid threshold; leaves are summed as integers.
fn walk(
    e: &EnsembleSpec,
    q: &[i64],
    quantizers: &[Quantizer],
    leaf: &dyn Fn(&[f64]) -> i64,
) -> i64 {
    let mut total = 0;
    for tree in &e.trees {
        let mut i = 0;
        loop {
            match tree.nodes[i].kind().unwrap() {
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    let t = grid_threshold(&quantizers[feature], threshold, e.comparison);
                    i = if q[feature] <= t { left } else { right };
                }
                Node::Leaf(v) => {
                    total += leaf(v);
                    break;
                }
            }
        }
    }
    total
}

#[test]
fn lowered_program_equals_a_direct_walk_of_the_quantized_trees() {
    for name in ["breast_cancer_tree", "diabetes_tree", "breast_cancer_xgb"] {
        let path = root().join(format!("specs/{name}.yaml"));
        let (loaded, test, _) = report::load(Path::new(&path)).unwrap();
        let model = CompiledModel::compile(&loaded.spec, &CompileOptions::default()).unwrap();
        let e = loaded.spec.ensemble().unwrap();
        // Leaf quantizer as documented: symmetric, leaf_bits, over all
        // (binary-reduced) leaf values.
        let binary = e.n_outputs() == 2;
        let value = |v: &[f64]| if binary { v[1] - v[0] } else { v[0] };
        let max_abs = e
            .trees
            .iter()
            .flat_map(|t| &t.nodes)
            .filter_map(|n| match n.kind() {
                Some(Node::Leaf(v)) => Some(value(v).abs()),
                _ => None,
            })
            .fold(0.0, f64::max);
        let lq = Quantizer::symmetric(max_abs, loaded.spec.quantization.leaf_bits);
        let quantizers = &model.encoder.quantizers;
        for row in test.features.rows() {
            let x = row.to_vec();
            let q = model.encoder.quantize(&x).unwrap();
            let digits = model.quantize(&x).unwrap();
            let out = model.program.eval_clear(&digits).unwrap();
            let base = (value(&e.base_score) / model.decoder.scales[0]).round_ties_even() as i64;
            let want = walk(e, &q, quantizers, &|v| lq.quantize(value(v))) + base;
            assert_eq!(out, vec![want], "{name}");
        }
        let clear = model.predict(test.features.view(), Mode::Clear).unwrap();
        let sim = model.predict(test.features.view(), Mode::Simulate).unwrap();
        assert_eq!(clear, sim, "{name}");
    }
}

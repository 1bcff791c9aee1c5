//! The same model quantized by Concrete ML 1.9 and by cml gives the same
//! integers: input quantizer, integer weights, quantized inputs, the circuit's
//! integer outputs, dequantized scores and predictions — and our TFHE run
//! decrypts to Concrete ML's circuit outputs.
//!
//! The fixture was produced by real Concrete ML
//! (`tools/concrete_ml/make_fixture.py`); these settings reproduce its scheme:
//! `input_granularity: tensor`, `weight_scheme: asymmetric`, 8 bits.

use cml::models::{CompileOptions, CompiledModel, Mode};
use cml::spec::{
    DataSpec, Granularity, LinearEstimator, LinearSpec, Link, ModelKind, ModelSpec,
    QuantizationSpec, Task, WeightScheme,
};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/concrete_ml_logreg_breast_cancer.json");
    serde_json::from_str(text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(f64s).collect()
}

/// A cml spec holding the fixture's fitted model with Concrete ML's scheme.
fn spec_of(case: &Value) -> ModelSpec {
    let coef = matrix(&case["coef"]);
    let n_features = coef[0].len();
    let classes: Option<Vec<String>> = case
        .get("classes")
        .map(|c| i64s(c).iter().map(|k| format!("class_{k}")).collect());
    let (estimator, task, link) = match &classes {
        Some(c) if c.len() > 2 => (
            LinearEstimator::LogisticRegression,
            Task::Classification,
            Link::Softmax,
        ),
        Some(_) => (
            LinearEstimator::LogisticRegression,
            Task::Classification,
            Link::Sigmoid,
        ),
        None => (
            LinearEstimator::LinearRegression,
            Task::Regression,
            Link::Identity,
        ),
    };
    let iq = &case["input_quantizer"];
    let spec = ModelSpec {
        format: "cml/v1".into(),
        name: "parity".into(),
        description: None,
        source: None,
        model: ModelKind::Linear(LinearSpec {
            estimator,
            task,
            link,
            features: (0..n_features).map(|j| format!("f{j}")).collect(),
            classes,
            coefficients: coef,
            intercepts: f64s(&case["intercept"]),
            standardize: None,
        }),
        quantization: QuantizationSpec {
            input_bits: 8,
            weight_bits: 8,
            input_granularity: Granularity::Tensor,
            weight_scheme: WeightScheme::Asymmetric,
            leaf_bits: 8,
            input_ranges: Some(vec![[
                iq["rmin"].as_f64().unwrap(),
                iq["rmax"].as_f64().unwrap(),
            ]]),
            ..QuantizationSpec::default()
        },
        data: None::<DataSpec>,
    };
    // The programmatic spec passes the same checks as a file would.
    ModelSpec::from_yaml_str(&spec.to_yaml(), "parity.yaml").unwrap()
}

fn cases() -> Vec<Value> {
    let f = fixture();
    let mut all = vec![f.clone()];
    all.extend(f["extra_cases"].as_array().unwrap().iter().cloned());
    all
}

#[test]
fn quantizers_and_weights_match_concrete_ml() {
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let model = CompiledModel::compile(&spec_of(&case), &CompileOptions::default()).unwrap();
        let iq = &case["input_quantizer"];
        let ours = model.encoder.quantizers[0];
        assert_eq!(
            ours.scale,
            iq["scale"].as_f64().unwrap(),
            "{name}: input scale"
        );
        assert_eq!(
            ours.zero_point,
            iq["zero_point"].as_i64().unwrap(),
            "{name}: input zero point"
        );
        assert_eq!(
            (ours.q_min(), ours.q_max()),
            (-128, 127),
            "{name}: input range"
        );

        // Concrete ML's integer weights are q_W − z_w (its circuit subtracts
        // z_w · Σ q_X); ours are stored that way directly.
        let z_w = case["weight_quantizer"]["zero_point"].as_i64().unwrap();
        let q_weights: Vec<Vec<i64>> = case["q_weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(i64s)
            .collect();
        let linear = model.spec.linear().expect("a linear model");
        let low = cml::models::linear::lower(linear, &model.spec.quantization, None).unwrap();
        for (r, row) in low.weights.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                assert_eq!(*w, q_weights[j][r] - z_w, "{name}: weight [{r}][{j}]");
            }
        }
        let out_scale = case["output_quantizer"]["scale"].as_f64().unwrap();
        let out_zp = i64s(&case["output_quantizer"]["zero_point"]);
        assert!(
            model.decoder.scales.iter().all(|&s| s == out_scale),
            "{name}: output scale"
        );
        assert_eq!(
            model.decoder.zero_points, out_zp,
            "{name}: output zero points"
        );
        // The bias is the program's constant.
        let q_bias = i64s(&case["q_bias"]);
        for (r, op) in model.program.ops.iter().enumerate() {
            match op {
                cml::program::Op::Linear { constant, .. } => {
                    assert_eq!(*constant, q_bias[r], "{name}: bias {r}")
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
    }
}

#[test]
fn inputs_outputs_and_predictions_match_concrete_ml() {
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let model = CompiledModel::compile(&spec_of(&case), &CompileOptions::default()).unwrap();
        let samples = &case["samples"];
        let xs = matrix(&samples["x"]);
        let q_xs: Vec<Vec<i64>> = samples["q_x"]
            .as_array()
            .unwrap()
            .iter()
            .map(i64s)
            .collect();
        let q_ys: Vec<Vec<i64>> = samples["q_y_circuit"]
            .as_array()
            .unwrap()
            .iter()
            .map(i64s)
            .collect();
        let y_deq = matrix(&samples["y_dequantized"]);
        let predict = f64s(&samples["predict"]);
        for (i, x) in xs.iter().enumerate() {
            let q = model.quantize(x).unwrap();
            assert_eq!(q, q_xs[i], "{name}: quantized inputs of sample {i}");
            let out = model.program.eval_clear(&q).unwrap();
            assert_eq!(out, q_ys[i], "{name}: circuit output of sample {i}");
            let p = model.decode(&out);
            for (a, b) in p.scores.iter().zip(&y_deq[i]) {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "{name}: score {a} vs {b}"
                );
            }
            match p.class() {
                Some(c) => assert_eq!(c as f64, predict[i], "{name}: class of sample {i}"),
                None => assert!((p.value() - predict[i]).abs() <= 1e-9 * predict[i].abs().max(1.0)),
            }
        }
    }
}

#[test]
fn fhe_decrypts_to_concrete_ml_circuit_outputs() {
    let case = fixture();
    let model = CompiledModel::compile(&spec_of(&case), &CompileOptions::default()).unwrap();
    let samples = &case["samples"];
    let xs = ndarray::Array2::from_shape_vec((20, 30), matrix(&samples["x"]).concat()).unwrap();
    let fhe = model.predict(xs.view(), Mode::Execute).unwrap();
    let y_deq = matrix(&samples["y_dequantized"]);
    for (p, want) in fhe.iter().zip(&y_deq) {
        assert!((p.scores[0] - want[0]).abs() <= 1e-12 * want[0].abs().max(1.0));
    }
}

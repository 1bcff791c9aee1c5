//! Neural networks: the bundled ONNX files and their specs (float = the saved
//! onnxruntime outputs, quantized accuracy at the defaults, FHE = clear up to
//! the approximate rounding's documented choice, exact rounding bit for bit),
//! the importer on bad files, and mutation fuzzing of the bundled files.

mod common;

use std::path::{Path, PathBuf};

use cml::data::Dataset;
use cml::import::onnx::default_quantization;
use cml::import::onnx_proto::{
    tensor_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use cml::import::{onnx_file, onnx_model, OnnxOptions};
use cml::models::nn::{self, NetworkLowering, NetworkOptions};
use cml::params::{self, Needs};
use cml::program::{round_shift, Op, Program};
use cml::spec::{ModelKind, RoundingMode};
use cml::{ImportError, ModelSpec, PFail};
use common::{mutate_bytes, FheRunner, Rng};
use prost::Message;

const NETWORKS: [&str; 3] = ["digits_mlp", "digits_cnn", "digits_resnet"];

fn specs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("specs")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Bundled {
    spec: ModelSpec,
    train: Dataset,
    test: Dataset,
}

fn bundled(name: &str) -> Bundled {
    let loaded = ModelSpec::load(specs().join(format!("{name}.yaml"))).unwrap();
    let features = loaded.spec.features().to_vec();
    let train = Dataset::from_csv(&loaded.train_path().unwrap(), &features).unwrap();
    let test = Dataset::from_csv(&loaded.test_path().unwrap(), &features).unwrap();
    Bundled {
        spec: loaded.spec,
        train,
        test,
    }
}

fn lower(spec: &ModelSpec, calibration: &Dataset) -> NetworkLowering {
    nn::lower(
        spec.network().unwrap(),
        &spec.quantization,
        Some(calibration.features.view()),
    )
    .unwrap()
}

/// onnxruntime computes in f32: our f64 scores agree to 1e-5.
fn assert_scores_match(what: &str, spec: &ModelSpec, data: &Dataset) {
    let net = spec.network().unwrap();
    let saved = data.scores.as_ref().expect("saved scores");
    let predictions = data.predictions.as_ref().expect("saved predictions");
    for (i, row) in data.features.rows().into_iter().enumerate() {
        let scores = net.float_scores(&row.to_vec());
        assert_eq!(scores.len(), saved.ncols(), "{what}: sample {i}");
        for (a, b) in scores.iter().zip(saved.row(i)) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{what}: sample {i}: score {a} vs onnxruntime {b}"
            );
        }
        let argmax = (0..scores.len())
            .max_by(|&x, &y| scores[x].total_cmp(&scores[y]))
            .unwrap();
        assert_eq!(argmax as f64, predictions[i], "{what}: sample {i}");
    }
}

#[test]
fn float_networks_reproduce_onnxruntime() {
    for name in NETWORKS {
        let b = bundled(name);
        assert_scores_match(name, &b.spec, &b.test);
    }
}

/// The dynamo exporter's file (opset 18, IR 10) imports to the same network
/// as the TorchScript exporter's.
#[test]
fn dynamo_export_imports_to_the_same_network() {
    let mlp = bundled("digits_mlp");
    let options = OnnxOptions {
        features: mlp.spec.features().to_vec(),
        ..OnnxOptions::default()
    };
    let spec = onnx_file(fixtures().join("digits_mlp_dynamo.onnx"), &options).unwrap();
    let fixture = Dataset::from_csv(
        &fixtures().join("digits_mlp_dynamo.test.csv"),
        spec.features(),
    )
    .unwrap();
    assert_scores_match("dynamo", &spec, &fixture);
    let (a, b) = (spec.network().unwrap(), mlp.spec.network().unwrap());
    assert_eq!(a.layers.len(), b.layers.len());
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.dense, y.dense);
        assert_eq!(x.activation, y.activation);
    }
}

/// Re-importing each bundled `.onnx` with the spec's settings gives the
/// bundled spec (the importer is what wrote them).
#[test]
fn bundled_specs_are_what_the_importer_writes() {
    for name in NETWORKS {
        let b = bundled(name);
        let mut quantization = b.spec.quantization.clone();
        quantization.input_ranges = None;
        let options = OnnxOptions {
            features: b.spec.features().to_vec(),
            quantization,
            ..OnnxOptions::default()
        };
        let mut spec = onnx_file(specs().join(format!("{name}.onnx")), &options).unwrap();
        let ModelKind::Network(net) = &mut spec.model else {
            panic!("{name}: not a network")
        };
        nn::record_calibration(net, &mut spec.quantization, b.train.features.view()).unwrap();
        for (layer, want) in net.layers.iter_mut().zip(&b.spec.network().unwrap().layers) {
            layer.rounding_bits = want.rounding_bits;
        }
        assert_eq!(spec.model, b.spec.model, "{name}");
        assert_eq!(spec.quantization, b.spec.quantization, "{name}");
    }
}

fn accuracy(low: &NetworkLowering, data: &Dataset) -> f64 {
    nn::clear_metric(low, data.features.view(), data.target.as_ref().unwrap()).unwrap()
}

fn float_accuracy(spec: &ModelSpec, data: &Dataset) -> f64 {
    let net = spec.network().unwrap();
    let hits = data
        .features
        .rows()
        .into_iter()
        .zip(data.target.as_ref().unwrap())
        .filter(|(row, &t)| {
            let s = net.float_scores(&row.to_vec());
            let argmax = (0..s.len()).max_by(|&x, &y| s[x].total_cmp(&s[y])).unwrap();
            argmax as f64 == t
        })
        .count();
    hits as f64 / data.len() as f64
}

/// At the importer's defaults (Concrete ML's `n_bits=4`,
/// `rounding_threshold_bits=6`) every bundled network stays within 2 points
/// of float, and `digits_mlp` reaches Concrete ML's 0.953.
#[test]
fn quantized_accuracy_at_the_defaults() {
    for name in NETWORKS {
        let b = bundled(name);
        let mut spec = b.spec.clone();
        let ModelKind::Network(net) = &mut spec.model else {
            unreachable!()
        };
        for l in &mut net.layers {
            l.rounding_bits = None;
            l.ranges = None;
        }
        spec.quantization = default_quantization();
        let low = lower(&spec, &b.train);
        let quantized = accuracy(&low, &b.test);
        let float = float_accuracy(&spec, &b.test);
        println!("{name}: float {float:.4}, quantized at the defaults {quantized:.4}");
        assert!(
            quantized >= float - 0.02,
            "{name}: {quantized} vs float {float}"
        );
        if name == "digits_mlp" {
            assert!(quantized >= 0.953, "{name}: {quantized}");
        }
        // The bundled spec (tuned for speed) is reported, and the MLP's
        // stays at Concrete ML's accuracy.
        let bundled_acc = accuracy(&lower(&b.spec, &b.train), &b.test);
        println!("{name}: bundled spec {bundled_acc:.4}");
        if name == "digits_mlp" {
            assert!(bundled_acc >= 0.953, "{name}: bundled {bundled_acc}");
        }
    }
}

/// `--rounding auto` keeps the calibration metric within its budget, and
/// one bit fewer would not.
#[test]
fn rounding_auto_meets_its_budget_with_the_fewest_bits() {
    let b = bundled("digits_mlp");
    let net = b.spec.network().unwrap();
    let y = b.train.target.as_ref().unwrap();
    let choice =
        nn::choose_rounding(net, &b.spec.quantization, b.train.features.view(), y, 0.02).unwrap();
    assert!(choice.chosen >= choice.unrounded - choice.budget);
    let keep = choice.bits.iter().flatten().copied().max().unwrap();
    assert_eq!(choice.bits[1], Some(keep));
    if keep > 2 {
        let fewer: Vec<Option<u8>> = choice.bits.iter().map(|b| b.map(|k| k - 1)).collect();
        let options = NetworkOptions {
            rounding: Some(fewer),
            allow_wide_tables: false,
        };
        let low = nn::lower_with(
            net,
            &b.spec.quantization,
            Some(b.train.features.view()),
            &options,
        )
        .unwrap();
        let m = nn::clear_metric(&low, b.train.features.view(), y).unwrap();
        assert!(m < choice.unrounded - choice.budget, "{keep} − 1 bits: {m}");
    }
}

/// The program with every table output decrypted too.
fn with_table_outputs(program: &Program) -> Program {
    let n = program.inputs.len();
    let mut p = program.clone();
    let luts: Vec<usize> = program
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::Lut { .. }))
        .map(|(i, _)| n + i)
        .collect();
    p.outputs = luts
        .into_iter()
        .chain(program.outputs.iter().copied())
        .collect();
    p
}

/// Replays the program in clear on the decrypted table outputs: each must
/// be its table at the exact rounded value or, where approximate rounding
/// read the accumulator's other neighbour, at that neighbour; the
/// program's outputs then follow exactly. Returns how many tables read the
/// other neighbour.
fn replay(program: &Program, inputs: &[i64], decrypted: &[i64]) -> usize {
    let n = program.inputs.len();
    let mut values: Vec<i64> = inputs.to_vec();
    let mut rounded: Vec<Option<(i64, u32)>> = vec![None; program.n_values()];
    let mut next = 0;
    let mut neighbours = 0;
    for (i, op) in program.ops.iter().enumerate() {
        let v = match op {
            Op::Linear { terms, constant } => {
                terms.iter().map(|&(x, w)| w * values[x]).sum::<i64>() + constant
            }
            Op::Round { input, bits, exact } => {
                if !exact {
                    rounded[n + i] = Some((values[*input], *bits));
                }
                round_shift(values[*input], *bits)
            }
            Op::Lut { input, table } => {
                let t = &program.tables[*table];
                let got = decrypted[next];
                next += 1;
                let want = t.get(values[*input]).unwrap();
                if got != want {
                    let (acc, bits) = rounded[*input].unwrap_or_else(|| {
                        panic!("table {} read exactly: {got} vs {want}", t.name)
                    });
                    let q = acc.div_euclid(1 << bits);
                    let legal = [q, q + 1].iter().any(|&u| t.get(u) == Some(got));
                    assert!(
                        legal,
                        "table {}: {got} is neither neighbour of {acc} / 2^{bits}",
                        t.name
                    );
                    neighbours += 1;
                }
                got
            }
        };
        values.push(v);
    }
    // The outputs after the tables' are the network's.
    let outputs: Vec<i64> = program.outputs[next..].iter().map(|&o| values[o]).collect();
    assert_eq!(&decrypted[next..], outputs.as_slice(), "outputs");
    neighbours
}

/// Real TFHE on a fixed subset of each bundled network's test split.
#[test]
fn fhe_equals_clear_up_to_approximate_rounding() {
    for (name, samples) in [("digits_mlp", 3), ("digits_resnet", 2), ("digits_cnn", 1)] {
        let b = bundled(name);
        let low = lower(&b.spec, &b.train);
        let program = with_table_outputs(&low.program);
        let analysis = program.analyze().unwrap();
        let params = params::choose(&Needs::of(&program, &analysis), PFail::default()).unwrap();
        let fhe = FheRunner::new(&program, &params);
        let mut neighbours = 0;
        for row in b.test.features.rows().into_iter().take(samples) {
            let q = low.encoder.encode(&row.to_vec()).unwrap();
            neighbours += replay(&program, &q, &fhe.eval(&q));
        }
        println!("{name}: {neighbours} tables read the other neighbour in {samples} samples");
    }
}

/// With exact rounding, FHE equals clear bit for bit.
#[test]
fn exact_rounding_fhe_equals_clear() {
    let b = bundled("digits_mlp");
    let mut spec = b.spec.clone();
    spec.quantization.rounding = RoundingMode::Exact;
    let low = lower(&spec, &b.train);
    assert!(
        low.program.pbs_count() > 32,
        "exact rounding bootstraps its bits"
    );
    let analysis = low.program.analyze().unwrap();
    let params = params::choose(&Needs::of(&low.program, &analysis), PFail::default()).unwrap();
    let fhe = FheRunner::new(&low.program, &params);
    for row in b.test.features.rows().into_iter().take(2) {
        fhe.assert_exact(&low.encoder.encode(&row.to_vec()).unwrap());
    }
}

// ---- bad ONNX files -------------------------------------------------------

fn tensor_type(dims: &[Result<i64, &str>]) -> Option<TypeProto> {
    Some(TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: tensor_proto::DataType::Float as i32,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| tensor_shape_proto::Dimension {
                        value: Some(match d {
                            Ok(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                            Err(p) => tensor_shape_proto::dimension::Value::DimParam(p.to_string()),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    })
}

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: tensor_type(dims),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: 2,
        ..Default::default()
    }
}

/// A 4 → 2 Gemm + Relu network, with a hook to break it.
fn tiny(edit: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut gemm = node("Gemm", "fc", &["x", "w", "b"], &["h"]);
    gemm.attribute.push(int_attr("transB", 1));
    let mut m = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 14,
        }],
        graph: Some(GraphProto {
            name: "tiny".into(),
            node: vec![gemm, node("Relu", "act", &["h"], &["y"])],
            initializer: vec![
                floats("w", &[2, 4], &[0.5, -1.0, 0.25, 2.0, 1.0, 1.0, -0.5, 0.0]),
                floats("b", &[2], &[0.1, -0.2]),
            ],
            input: vec![value_info("x", &[Err("batch"), Ok(4)])],
            output: vec![value_info("y", &[Err("batch"), Ok(2)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    edit(&mut m);
    m.encode_to_vec()
}

fn import(bytes: &[u8]) -> Result<ModelSpec, ImportError> {
    onnx_model(bytes, "bad.onnx", &OnnxOptions::default())
}

fn import_err(bytes: &[u8]) -> String {
    import(bytes).expect_err("must be refused").to_string()
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

#[test]
fn tiny_network_imports() {
    let spec = import(&tiny(|_| {})).unwrap();
    let net = spec.network().unwrap();
    assert_eq!(net.input_shape, vec![4]);
    // max(0, W·x + b): [0.5 − 1 + 0.5 + 2·1 + 0.1, 1 + 1 − 1 + 0 − 0.2]
    // (The bias is read back as the f32 it was stored as.)
    let s = net.float_scores(&[1.0, 1.0, 2.0, 1.0]);
    assert!(
        (s[0] - 2.1).abs() < 1e-7 && (s[1] - 0.8).abs() < 1e-7,
        "{s:?}"
    );
}

#[test]
fn bad_onnx_files_are_refused_with_what_and_where() {
    let mlp = std::fs::read(specs().join("digits_mlp.onnx")).unwrap();
    let truncated = import_err(&mlp[..mlp.len() / 2]);
    assert!(truncated.contains("not an ONNX model"), "{truncated}");
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    let _ = import_err(&random);

    let unsupported = import_err(&tiny(|m| graph(m).node[1].op_type = "LSTM".into()));
    assert!(
        unsupported.contains("node #1 `act` (LSTM): op `LSTM` is not supported"),
        "{unsupported}"
    );
    let dynamic = import_err(&tiny(|m| {
        graph(m).input[0] = value_info("x", &[Err("batch"), Err("features")]);
    }));
    assert!(
        dynamic.contains("dimension 1 is dynamic (`features`)"),
        "{dynamic}"
    );
    let shape = import_err(&tiny(|m| {
        graph(m).initializer[0] = floats("w", &[2, 3], &[1.0; 6]);
    }));
    assert!(
        shape.contains("node #0 `fc` (Gemm)") && shape.contains("do not fit data of 4 elements"),
        "{shape}"
    );
    let nan = import_err(&tiny(|m| {
        graph(m).initializer[1] = floats("b", &[2], &[f32::NAN, 0.0]);
    }));
    assert!(nan.contains("constant `b` holds NaN"), "{nan}");
    let cycle = import_err(&tiny(|m| {
        let g = graph(m);
        g.node[0].input[0] = "y".into();
    }));
    assert!(cycle.contains("cycle"), "{cycle}");
    // A memory bomb: 2^40 elements declared, 8 bytes present.
    let bomb = import_err(&tiny(|m| {
        graph(m).initializer[0].dims = vec![1 << 20, 1 << 20];
    }));
    assert!(bomb.contains("more than 67108864 elements"), "{bomb}");
    let huge_input = import_err(&tiny(|m| {
        graph(m).input[0] = value_info("x", &[Err("batch"), Ok(1 << 40)]);
    }));
    assert!(
        huge_input.contains("dimension 1 is 1099511627776"),
        "{huge_input}"
    );
    let opset = import_err(&tiny(|m| m.opset_import[0].version = 9));
    assert!(opset.contains("opset 9 is not supported"), "{opset}");
    let softmax = import_err(&tiny(|m| {
        let g = graph(m);
        g.node.insert(1, node("Softmax", "sm", &["h"], &["s"]));
        g.node[2].input[0] = "s".into();
    }));
    assert!(
        softmax.contains("node #1 `sm` (Softmax)") && softmax.contains("last ops"),
        "{softmax}"
    );
    let two_inputs = import_err(&tiny(|m| {
        graph(m).input.push(value_info("z", &[Err("batch"), Ok(4)]));
    }));
    assert!(two_inputs.contains("2 inputs"), "{two_inputs}");
    let undefined = import_err(&tiny(|m| graph(m).node[1].input[0] = "nowhere".into()));
    assert!(
        undefined.contains("reads `nowhere`, which nothing defines"),
        "{undefined}"
    );
    let external = import_err(&tiny(|m| {
        graph(m).initializer[0].data_location = tensor_proto::DataLocation::External as i32;
    }));
    assert!(external.contains("external file"), "{external}");
}

/// 10,000 mutated copies of the bundled ONNX files: each imports or is
/// refused, none panics; what imports is lowered and run in clear.
#[test]
fn mutated_onnx_files_never_panic() {
    let mut sources: Vec<(Vec<u8>, Dataset)> = Vec::new();
    for name in NETWORKS {
        let b = bundled(name);
        let bytes = std::fs::read(specs().join(format!("{name}.onnx"))).unwrap();
        let rows = b.train.features.slice(cml::ndarray::s![..8, ..]).to_owned();
        let calibration = Dataset {
            features: rows,
            target: None,
            scores: None,
            predictions: None,
            origin: None,
        };
        sources.push((bytes, calibration));
    }
    let tokens: [&[u8]; 6] = [
        &[0x08, 0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0x12, 0x7f],
        &[0x3a, 0x00],
        &[0xff; 4],
        &[0x00; 4],
        b"Relu",
    ];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut imported, mut ran) = (0, 0);
    for i in 0..10_000 {
        let (bytes, calibration) = &sources[i % sources.len()];
        let mutated = mutate_bytes(&mut rng, bytes, &tokens, &[0, 1, 0x7f, 0x80, 0xff, b'x']);
        let options = OnnxOptions {
            features: (0..calibration.features.ncols())
                .map(|j| format!("f{j}"))
                .collect(),
            ..OnnxOptions::default()
        };
        let Ok(spec) = onnx_model(&mutated, "fuzz.onnx", &options) else {
            continue;
        };
        imported += 1;
        let Some(net) = spec.network() else { continue };
        if net.features.len() != calibration.features.ncols() {
            continue;
        }
        if let Ok(low) = nn::lower(net, &spec.quantization, Some(calibration.features.view())) {
            let q = low
                .encoder
                .encode(&calibration.features.row(0).to_vec())
                .unwrap();
            if low.program.eval_clear(&q).is_ok() {
                ran += 1;
            }
        }
    }
    println!("{imported} of 10000 mutants imported, {ran} ran");
    assert!(imported > 0 && ran > 0);
}

fn tiny_spec(layers: &str, input_shape: &str, features: &str) -> Result<ModelSpec, cml::SpecError> {
    let yaml = format!(
        "format: cml/v1\nname: t\nmodel:\n  network:\n    task: regression\n    link: identity\n    \
         features: {features}\n    input_shape: {input_shape}\n    layers:\n{layers}\n\
         quantization:\n  input_bits: 6\n  activation_bits: 6\n"
    );
    ModelSpec::from_yaml_str(&yaml, "t.yaml")
}

/// Window ops are bounded before any work is sized from them.
#[test]
fn absurd_windows_are_refused() {
    let err = tiny_spec(
        "    - name: p\n      max_pool2d: {kernel: [2147483648, 2147483648], strides: [8589934592, 8589934592]}\n    \
         - name: r\n      reshape: [1]",
        "[1, 1, 1]",
        "[a]",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("kernel sides and strides 1 to 65536"), "{err}");
}

/// Max pooling after a negative scale (relu, then × −1) takes the real
/// maximum, not the integer one.
#[test]
fn max_pool_after_a_negative_scale_is_a_max() {
    let spec = tiny_spec(
        "    - name: act\n      activation: [{op: relu}]\n    \
         - name: neg\n      activation: [{op: mul, value: -1.0}]\n    \
         - name: pool\n      max_pool2d: {kernel: [2, 2]}\n    \
         - name: flat\n      reshape: [1]",
        "[1, 2, 2]",
        "[a, b, c, d]",
    )
    .unwrap();
    let rows = cml::ndarray::array![
        [0.0, 1.0, 2.0, 3.0],
        [3.0, 2.0, 1.0, 0.5],
        [1.0, 1.0, 1.0, 1.0],
        [2.0, 0.0, 3.0, 1.0]
    ];
    let net = spec.network().unwrap();
    let low = nn::lower(net, &spec.quantization, Some(rows.view())).unwrap();
    for row in rows.rows() {
        let x = row.to_vec();
        let want = net.float_scores(&x)[0];
        let q = low.encoder.encode(&x).unwrap();
        let got = low.decoder.scores(&low.program.eval_clear(&q).unwrap())[0];
        // −min(x): one quantization step of 3/63 at most, not the minimum.
        assert!((got - want).abs() < 0.1, "{x:?}: {got} vs {want}");
    }
}

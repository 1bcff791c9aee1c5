//! Deployment bundles (`cml deploy`, `cml::bundle`): every bundled model
//! round-trips through its client and server bundles, FHE through loaded
//! bundles equals the clear quantized model, a `fhe_model!` type writes the
//! same bundles as the runtime, and bundles of another format, edited ones,
//! and client/server pairs of different models are clear errors.

use std::path::{Path, PathBuf};

use cml::backend::tfhe::{CompressedEvaluationKeys, EncryptedInput, EncryptedOutput};
use cml::bundle::{self, BundleError, Client, Server};
use cml::models::{CompileOptions, CompiledModel, Mode};
use cml::{fhe_model, report, ModelSpec, PFail};

fhe_model!(IrisTree = "specs/iris_tree.yaml");

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cml-bundles-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles a bundled spec as `cml deploy` does (with its training data
/// when its ranges are calibrated).
fn compile(spec: &Path) -> (CompiledModel, cml::data::Dataset) {
    let (loaded, test, train) = report::load(spec).unwrap();
    let model = report::compile(&loaded, train.as_ref(), PFail::default()).unwrap();
    (model, test)
}

fn deployed(spec: &str, dir: &Path) -> (CompiledModel, cml::data::Dataset, Client, Server) {
    let (model, test) = compile(Path::new(spec));
    bundle::write(&bundle::from_model(&model), dir).unwrap();
    let client = Client::load(dir.join("client")).unwrap();
    let server = Server::load(dir.join("server")).unwrap();
    (model, test, client, server)
}

#[test]
fn every_bundled_model_round_trips_through_its_bundles() {
    let mut specs: Vec<PathBuf> = std::fs::read_dir("specs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 10, "{specs:?}");
    for spec in specs {
        let name = spec.file_stem().unwrap().to_str().unwrap();
        let dir = scratch(&format!("all-{name}"));
        let (model, test, client, server) = deployed(spec.to_str().unwrap(), &dir);
        client.check_server(server.model_hash()).unwrap();
        assert_eq!(server.name(), model.spec.name);
        assert_eq!(server.program(), &model.program, "{name}");
        assert_eq!(server.params(), &model.params, "{name}");
        assert_eq!(
            server.client_bundle(),
            client.bundle(),
            "{name}: the server hands out the client bundle written beside it"
        );
        // The client bundle holds no part of the model.
        let client_json = std::fs::read_to_string(dir.join("client/client.json")).unwrap();
        assert!(!client_json.contains("\"ops\""), "{name}");
        assert!(!client_json.contains("\"entries\""), "{name}");
        // Clear integers through the bundles equal the compiled model's.
        let rows = test.features.nrows().min(5);
        let clear = model
            .predict(test.features.slice(ndarray::s![..rows, ..]), Mode::Clear)
            .unwrap();
        for (i, row) in test.features.rows().into_iter().take(rows).enumerate() {
            let x = row.to_vec();
            let q = client.quantize(&x).unwrap();
            assert_eq!(q, model.quantize(&x).unwrap(), "{name}: row {i}");
            let out = server.program().eval_clear(&q).unwrap();
            assert_eq!(client.decode(&out), clear[i], "{name}: row {i}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Client and server exchange only bytes: compressed evaluation keys,
/// encrypted inputs and outputs, each read back with limits derived from
/// the bundle's parameters.
fn fhe_through_bytes(spec: &str, samples: usize) {
    let stem = Path::new(spec).file_stem().unwrap().to_str().unwrap();
    // Names of their own: the tests of this file run at the same time.
    let dir = scratch(&format!("fhe-{stem}"));
    let (model, test, client, server) = deployed(spec, &dir);
    let key = client.keygen();
    let uploaded = key.compressed_evaluation_keys().to_bytes().unwrap();
    let params = server.params();
    let keys = CompressedEvaluationKeys::from_bytes(
        &uploaded,
        CompressedEvaluationKeys::max_bytes(params),
        params,
    )
    .unwrap()
    .decompress();
    let rows = test.features.slice(ndarray::s![..samples, ..]);
    let clear = model.predict(rows, Mode::Clear).unwrap();
    let n_inputs = server.program().inputs.len();
    for (i, row) in rows.rows().into_iter().enumerate() {
        let sent = client
            .encrypt(&key, &row.to_vec())
            .unwrap()
            .to_bytes()
            .unwrap();
        let input =
            EncryptedInput::from_bytes(&sent, EncryptedInput::max_bytes(params, n_inputs), params)
                .unwrap();
        let output = server.run(&keys, &input).unwrap().to_bytes().unwrap();
        let bits = &client.bundle().output_bits;
        let output =
            EncryptedOutput::from_bytes(&output, EncryptedOutput::max_bytes(params, bits), params)
                .unwrap();
        assert_eq!(
            client.decrypt(&key, &output).unwrap(),
            clear[i],
            "{spec}: sample {i}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fhe_through_loaded_bundles_equals_clear() {
    fhe_through_bytes("specs/iris_tree.yaml", 3);
    fhe_through_bytes("specs/breast_cancer_logreg.yaml", 3);
}

#[test]
fn a_generated_model_writes_the_bundles_of_its_spec() {
    let (model, _) = compile(Path::new("specs/iris_tree.yaml"));
    let expected = bundle::from_model(&model);
    assert_eq!(IrisTree::bundle(), expected);
    let dir = scratch("generated");
    IrisTree::write_bundles(&dir).unwrap();
    let server = Server::load(dir.join("server/server.json")).unwrap();
    assert_eq!(server.model_hash(), expected.model_hash);
    // Keys of the generated type serve the loaded server, and back.
    let (key, keys) = IrisTree::keygen();
    let client = Client::load(dir.join("client/client.json")).unwrap();
    let x = [5.1, 3.5, 1.4, 0.2];
    let out = server
        .run(&keys, &client.encrypt(&key, &x).unwrap())
        .unwrap();
    assert_eq!(
        client.decrypt(&key, &out).unwrap(),
        model
            .predict(ndarray::arr2(&[x]).view(), Mode::Clear)
            .unwrap()[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn load_err(dir: &Path) -> (String, String) {
    let c = Client::load(dir.join("client")).unwrap_err().to_string();
    let s = Server::load(dir.join("server")).unwrap_err().to_string();
    (c, s)
}

#[test]
fn foreign_edited_and_mismatched_bundles_are_refused() {
    let dir = scratch("refused");
    let (_, _, client, server) = deployed("specs/iris_tree.yaml", &dir);
    let client_path = dir.join("client/client.json");
    let server_path = dir.join("server/server.json");
    let client_text = std::fs::read_to_string(&client_path).unwrap();
    let server_text = std::fs::read_to_string(&server_path).unwrap();

    // Another format version.
    std::fs::write(
        &client_path,
        client_text.replace("cml-client-bundle/v1", "cml-client-bundle/v2"),
    )
    .unwrap();
    std::fs::write(
        &server_path,
        server_text.replace("cml-server-bundle/v1", "cml-server-bundle/v0"),
    )
    .unwrap();
    let (c, s) = load_err(&dir);
    assert!(
        c.contains(
            "client.json: format `cml-client-bundle/v2`, this build reads `cml-client-bundle/v1`"
        ),
        "{c}"
    );
    assert!(s.contains("format `cml-server-bundle/v0`"), "{s}");

    // A client bundle given where a server bundle is expected, and back.
    let wrong = Server::load(client_path.with_file_name("nothing.json")).unwrap_err();
    assert!(matches!(wrong, BundleError::Io { .. }), "{wrong}");
    std::fs::write(&client_path, &client_text).unwrap();
    let e = Server::load(&client_path).unwrap_err().to_string();
    assert!(
        e.contains("format `cml-client-bundle/v1`, this build reads `cml-server-bundle/v1`"),
        "{e}"
    );

    // Edited content: a decoder scale, a table entry.
    let edited = client_text.replacen("\"scales\": [\n      ", "\"scales\": [\n      2", 1);
    assert_ne!(edited, client_text);
    std::fs::write(&client_path, edited).unwrap();
    let c = Client::load(&client_path).unwrap_err().to_string();
    assert!(c.contains("does not match its model hash"), "{c}");
    let edited = server_text.replacen("\"entries\":[", "\"entries\":[7,", 1);
    assert_ne!(edited, server_text);
    std::fs::write(&server_path, edited).unwrap();
    let s = Server::load(&server_path).unwrap_err().to_string();
    assert!(
        s.contains("its program does not match its model hash"),
        "{s}"
    );

    // Not JSON, truncated, too large.
    std::fs::write(&client_path, "{\"format\": \"cml-client-bundle/v1\", ").unwrap();
    let c = Client::load(&client_path).unwrap_err().to_string();
    assert!(c.contains("not a client bundle"), "{c}");
    let f = std::fs::File::create(&server_path).unwrap();
    f.set_len(bundle::MAX_BUNDLE_BYTES + 1).unwrap();
    let s = Server::load(&server_path).unwrap_err();
    assert!(matches!(s, BundleError::TooLarge { .. }), "{s}");

    // A client and a server of different models.
    let other = scratch("refused-other");
    let (_, _, other_client, other_server) = deployed("specs/breast_cancer_logreg.yaml", &other);
    let e = client
        .check_server(other_server.model_hash())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("client bundle of `iris_tree` (model ")
            && e.contains(&format!(
                "does not match the server's model {}",
                other_server.model_hash()
            )),
        "{e}"
    );
    let key = other_client.keygen();
    let e = server
        .run(
            &key.evaluation_keys(),
            &other_client.encrypt(&key, &[0.0; 30]).unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other parameters than model `iris_tree`'s"),
        "{e}"
    );
    let e = client
        .encrypt(&key, &[5.1, 3.5, 1.4, 0.2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other parameters than model `iris_tree`'s"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&other).unwrap();
}

/// A bundle whose hash was recomputed over hostile content (what an
/// attacker serving bundles could write) is still checked: an encoder that
/// would index out of bounds, parameters that do not serve the model.
#[test]
fn hostile_bundles_with_valid_hashes_are_refused() {
    let spec = ModelSpec::load("specs/iris_tree.yaml").unwrap().spec;
    let model = CompiledModel::compile(&spec, &CompileOptions::default()).unwrap();
    let rebuilt = |edit: &dyn Fn(&mut cml::models::Encoder, &mut cml::FheParams)| {
        let (mut encoder, mut params) = (model.encoder.clone(), model.params);
        edit(&mut encoder, &mut params);
        let b = bundle::from_parts(
            bundle::Identity {
                name: "iris_tree",
                family: bundle::Family::TreeEnsemble,
                features: spec.features(),
            },
            &model.program,
            &model.analysis,
            &encoder,
            &model.decoder,
            &params,
        );
        Client::from_json(&b.client.to_json(), Path::new("hostile.json"))
            .unwrap_err()
            .to_string()
    };
    let e = rebuilt(&|e, _| e.missing = vec![99]);
    assert!(
        e.contains("hostile.json: its encoder: missing-value features [99]"),
        "{e}"
    );
    let e = rebuilt(&|e, _| e.quantizers[0].offset = 1 << 20);
    assert!(e.contains("feature 0: quantizer"), "{e}");
    let e = rebuilt(&|e, _| e.quantizers[1].n_bits = 200);
    assert!(e.contains("feature 1: quantizer"), "{e}");
    let e = rebuilt(&|e, _| e.low_bits = Some(63));
    assert!(e.contains("63 low bits"), "{e}");
    let e = rebuilt(&|_, p| p.input_lwe_dimension = 16);
    assert!(e.contains("its parameters do not serve its model"), "{e}");
    let e = rebuilt(&|_, p| p.message_bits = 2);
    assert!(e.contains("its parameters do not serve its model"), "{e}");
}

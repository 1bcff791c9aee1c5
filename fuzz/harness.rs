//! What each fuzz target does with its bytes, shared by the cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`) and the stable replay of their corpora
//! (`tests/fuzz_corpus.rs`). Every entry point takes untrusted bytes, and
//! whatever it accepts is also *used* (compiled and predicted, run,
//! decrypted, decompressed): an error is fine, a panic is a bug.

#![allow(dead_code)] // each fuzz target uses one entry point

use cml::data::Dataset;
use cml::import::{lightgbm_text, xgboost_bytes, ImportOptions};
use cml::models::CompileOptions;
use cml::ndarray::Array2;
use cml::{CompiledModel, Mode, ModelSpec, PFail};

#[cfg(feature = "fhe")]
pub use fhe::*;

#[cfg(feature = "fhe")]
#[path = "../tests/common/small_program.rs"]
mod small_program;

/// A fuzz target: its name and what it does with its bytes.
pub type Target = (&'static str, fn(&[u8]));

/// The fuzz targets that need no TFHE, by name (the names of
/// `fuzz/fuzz_targets/*.rs` and of the corpus folders).
pub const TARGETS: &[Target] = &[
    ("spec_yaml", spec_yaml),
    ("spec_dsl", spec_dsl),
    ("csv_data", csv_data),
    ("tree_import", tree_import),
    ("bundle", bundle),
    ("batch", batch),
];

/// The ciphertext and key targets (feature `fhe`).
#[cfg(feature = "fhe")]
pub const FHE_TARGETS: &[Target] = &[
    ("encrypted_input", encrypted_input),
    ("encrypted_output", encrypted_output),
    ("evaluation_keys", evaluation_keys),
    ("client_key", client_key),
];

/// Compiles an accepted spec (calibrated on two rows, 0 and 1, when it has
/// no input ranges) and predicts one row in clear.
fn use_spec(spec: &ModelSpec) {
    let n = spec.n_features();
    if n == 0 || n > 4096 {
        return;
    }
    let calibration = Array2::from_shape_fn((2, n), |(i, _)| i as f64);
    let options = CompileOptions {
        calibration: Some(calibration.view()),
        p_fail: PFail::default(),
    };
    if let Ok(model) = CompiledModel::compile(spec, &options) {
        let _ = model.predict(calibration.view(), Mode::Clear);
    }
}

/// A YAML spec: load, check, compile, predict.
pub fn spec_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(loaded) = ModelSpec::load_str(text, "fuzz.yaml") {
            use_spec(&loaded.spec);
        }
    }
}

/// A DSL spec: load, check, compile, predict.
pub fn spec_dsl(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(loaded) = ModelSpec::load_dsl_str(text, "fuzz.cml") {
            use_spec(&loaded.spec);
        }
    }
}

/// CSV data for a four-feature model: parse, then check missing cells and
/// ranges as `cml run` does.
pub fn csv_data(data: &[u8]) {
    let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(set) = Dataset::from_csv_str(text, "fuzz.csv".as_ref(), &names) {
            let ranges = set.feature_ranges();
            let _ = set.out_of_range(&ranges);
            let _ = set.check_missing(&names, &[false; 4]);
        }
    }
}

/// A tree-ensemble file (XGBoost JSON or UBJSON, LightGBM text): import,
/// compile, predict.
pub fn tree_import(data: &[u8]) {
    let options = ImportOptions::default();
    let spec = match std::str::from_utf8(data) {
        Ok(text) if text.starts_with("tree") => lightgbm_text(text, "fuzz.txt", &options),
        _ => xgboost_bytes(data, "fuzz.json", &options),
    };
    if let Ok(spec) = spec {
        use_spec(&spec);
    }
}

/// The ciphertext and key targets, on one fixed program and key pair.
#[cfg(feature = "fhe")]
mod fhe {
    use std::sync::OnceLock;

    use cml::backend::tfhe::{
        ClientKey, CompressedEvaluationKeys, EncryptedInput, EncryptedOutput, EvaluationKeys,
    };
    use cml::encoding::Encoding;
    use cml::params::{choose, FheParams, Needs, PFail};
    use cml::program::{Interval, Program};

    /// Byte limit for the deserializers without a derived one (keys of the
    /// fixed program are a few MiB).
    const LIMIT: u64 = 64 << 20;

    /// The fixed program of the ciphertext targets (that of the
    /// serialization tests).
    pub fn program() -> Program {
        super::small_program::small_program()
    }

    /// The fixed program, its parameters, encoding and keys (generated once).
    pub struct Fixture {
        pub program: Program,
        pub params: FheParams,
        pub encoding: Encoding,
        pub ranges: Vec<Interval>,
        pub client: ClientKey,
        pub server: EvaluationKeys,
        /// The serialized seeded evaluation keys (about 20 MB).
        pub keys_bytes: Vec<u8>,
    }

    pub fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let program = program();
            let analysis = program.analyze().expect("a valid program");
            let params =
                choose(&Needs::of(&program, &analysis), PFail::default()).expect("parameters");
            let encoding = Encoding::of(&program, &analysis);
            let ranges = program
                .outputs
                .iter()
                .map(|&o| analysis.values[o].range)
                .collect();
            let client = ClientKey::generate(&params);
            let keys = client.compressed_evaluation_keys();
            let keys_bytes = keys.to_bytes().expect("keys serialize");
            let server = keys.decompress();
            Fixture {
                program,
                params,
                encoding,
                ranges,
                client,
                server,
                keys_bytes,
            }
        })
    }

    /// An encrypted input: deserialize, run, decrypt.
    pub fn encrypted_input(data: &[u8]) {
        let f = fixture();
        if let Ok(input) = EncryptedInput::from_bytes(data, LIMIT, &f.params) {
            if let Ok(out) = f.server.run(&f.program, &input) {
                let _ = f
                    .client
                    .decrypt(&out, &f.ranges, &f.encoding.outputs(&f.program));
            }
        }
    }

    /// An encrypted output: deserialize, decrypt.
    pub fn encrypted_output(data: &[u8]) {
        let f = fixture();
        let bits = f.encoding.outputs(&f.program);
        let limit = EncryptedOutput::max_bytes(&f.params, &bits);
        if let Ok(out) = EncryptedOutput::from_bytes(data, limit, &f.params) {
            let _ = f.client.decrypt(&out, &f.ranges, &bits);
        }
    }

    /// `valid` altered by `patch`: its first 4 bytes (little-endian) cut
    /// the copy to that length modulo `valid.len() + 1` (`u32::MAX`: no
    /// cut), then each 5-byte record (offset modulo the length, value) sets
    /// one byte.
    pub fn patched(valid: &[u8], patch: &[u8]) -> Vec<u8> {
        let mut out = valid.to_vec();
        let Some((cut, records)) = patch.split_first_chunk::<4>() else {
            return out;
        };
        let cut = u32::from_le_bytes(*cut);
        if cut != u32::MAX {
            out.truncate(cut as usize % (valid.len() + 1));
        }
        for record in records.chunks_exact(5) {
            let offset = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
            if !out.is_empty() {
                let i = offset as usize % out.len();
                out[i] = record[4];
            }
        }
        out
    }

    /// Evaluation keys: deserialize, decompress, run on a fresh input.
    /// Bytes that start with cml's magic number are read as keys; any others
    /// are a patch ([`patched`]) of the fixture's valid keys, which are
    /// 20 MB: too large for a fuzzer to mutate whole.
    pub fn evaluation_keys(data: &[u8]) {
        let f = fixture();
        let altered;
        let bytes = if data.starts_with(b"CML\x01") {
            data
        } else {
            altered = patched(&f.keys_bytes, data);
            &altered
        };
        if let Ok(keys) = CompressedEvaluationKeys::from_bytes(bytes, LIMIT, &f.params) {
            let keys = keys.decompress();
            let input = f
                .client
                .encrypt(&[1, 2], f.encoding.inputs(&f.program))
                .expect("valid inputs");
            if let Ok(out) = keys.run(&f.program, &input) {
                let _ = f
                    .client
                    .decrypt(&out, &f.ranges, &f.encoding.outputs(&f.program));
            }
        }
    }

    /// A client key: deserialize, then encrypt and decrypt with it (under its
    /// own parameters, with a leveled program of its width).
    pub fn client_key(data: &[u8]) {
        if let Ok(key) = ClientKey::from_bytes(data, LIMIT) {
            let f = fixture();
            if key.params() == &f.params {
                if let Ok(input) = key.encrypt(&[1, 2], f.encoding.inputs(&f.program)) {
                    if let Ok(out) = f.server.run(&f.program, &input) {
                        let _ = key.decrypt(&out, &f.ranges, &f.encoding.outputs(&f.program));
                    }
                }
            }
        }
    }
}

/// A client or server bundle (`cml deploy`'s JSON): load and check, then
/// use what was accepted: quantize a row (zeros, and all missing), decode
/// the outputs' lowest values; for a server bundle, also run its program
/// in clear on its inputs' lowest values.
pub fn bundle(data: &[u8]) {
    use cml::bundle::{Client, Server};
    let origin = std::path::Path::new("fuzz.json");
    let use_client = |client: &Client| {
        let b = client.bundle();
        let n = b.encoder.quantizers.len();
        if n <= 4096 {
            let _ = client.quantize(&vec![0.0; n]);
            let _ = client.quantize(&vec![f64::NAN; n]);
        }
        let lows: Vec<i64> = b.output_ranges.iter().map(|r| r.lo).collect();
        let _ = client.decode(&lows);
    };
    if let Ok(client) = Client::from_json(data, origin) {
        use_client(&client);
    }
    // The same bytes with their hashes recomputed, so that the checks
    // behind the hash (encoder, parameters, program) see hostile content
    // too: a server that hands out bundles is not trusted to be honest.
    if let Ok(mut b) = serde_json::from_slice::<cml::bundle::ClientBundle>(data) {
        b.seal();
        if let Ok(client) = Client::from_json(&b.to_json(), origin) {
            use_client(&client);
        }
    }
    let resealed = serde_json::from_slice::<cml::bundle::ServerBundle>(data).map(|mut b| {
        b.seal();
        b.to_json()
    });
    for bytes in [Some(data.to_vec()), resealed.ok()].into_iter().flatten() {
        let Ok(server) = Server::from_json(&bytes, origin) else {
            continue;
        };
        let client = Client::from_json(&server.client_bundle().to_json(), origin)
            .expect("a checked server bundle's client part loads");
        use_client(&client);
        let lows: Vec<i64> = server.program().inputs.iter().map(|r| r.lo).collect();
        if let Ok(out) = server.program().eval_clear(&lows) {
            let _ = client.decode(&out);
        }
    }
}

/// A batch body of `cml serve` (`POST /v1/models/{name}/predict` and its
/// answer): split under bounds, then every item read; what is accepted
/// frames back to the same bytes.
pub fn batch(data: &[u8]) {
    if let Ok(items) = cml::batch::decode(data, 64, 1 << 20) {
        let owned: Vec<Vec<u8>> = items.iter().map(|i| i.to_vec()).collect();
        assert_eq!(
            cml::batch::encode(&owned),
            data,
            "an accepted batch re-encodes to itself"
        );
    }
}

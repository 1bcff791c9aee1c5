//! `cml serve` over real sockets: a client that only has the client bundle
//! uploads its keys, predicts a batch and decrypts results equal to the
//! clear model; keys survive a restart; bad requests get the right status;
//! a full queue answers 503; the OpenAPI file names exactly the routes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cml_runtime::backend::tfhe::EncryptedOutput;
use cml_runtime::batch;
use cml_runtime::bundle::{self, Client};
use cml_runtime::models::{CompileOptions, CompiledModel, Mode};
use cml_runtime::ModelSpec;
use cml_serve::http::{self, App, Config, ModelInfo, KEY_ID_HEADER, ROUTES};
use cml_serve::store::KeyId;

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn start(config: Config) -> Running {
    let app = Arc::new(App::load(&config).unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            http::serve(app, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
    });
    Running {
        addr: addr_rx.recv().unwrap(),
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        raw = &raw[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cml-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn deploy(spec: &str, dir: &Path) -> CompiledModel {
    let mut spec = ModelSpec::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(spec))
        .unwrap()
        .spec;
    // Networks round exactly here, so that FHE equals clear bit for bit
    // (approximate rounding may read a neighbouring table entry).
    if spec.network().is_some() {
        spec.quantization.rounding = cml_runtime::spec::RoundingMode::Exact;
    }
    let model = CompiledModel::compile(&spec, &CompileOptions::default()).unwrap();
    bundle::write(&bundle::from_model(&model), dir).unwrap();
    model
}

fn config(bundles: Vec<PathBuf>, store: PathBuf, queue: usize) -> Config {
    Config {
        bundles,
        store,
        cache_bytes: 1 << 30,
        workers: 1,
        queue,
        max_batch: 4,
    }
}

#[test]
fn a_remote_client_predicts_and_keys_survive_a_restart() {
    let dir = scratch("predict");
    let model = deploy("specs/iris_tree.yaml", &dir.join("iris"));
    deploy("specs/breast_cancer_logreg.yaml", &dir.join("logreg"));
    let bundles = vec![dir.join("iris/server"), dir.join("logreg/server")];
    let server = start(config(bundles.clone(), dir.join("store"), 4));

    let (status, _, body) = request(server.addr, "GET", "/health", &[], b"");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    let (status, _, body) = request(server.addr, "GET", "/v1/models", &[], b"");
    assert_eq!(status, 200);
    let models: Vec<ModelInfo> = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["breast_cancer_logreg", "iris_tree"]
    );
    let iris = &models[1];
    assert_eq!((iris.n_features, iris.pbs_per_sample), (4, 20));

    // The client starts from the bundle the server hands out.
    let (status, _, bundle) = request(server.addr, "GET", "/v1/models/iris_tree/client", &[], b"");
    assert_eq!(status, 200);
    let client = Client::from_json(&bundle, Path::new("GET /v1/models/iris_tree/client")).unwrap();
    client.check_server(&iris.model_hash).unwrap();
    let key = client.keygen();
    let upload = key.compressed_evaluation_keys().to_bytes().unwrap();
    let id = KeyId::of(&upload);
    let key_path = format!("/v1/keys/{id}?model=iris_tree");

    let (status, _, _) = request(server.addr, "HEAD", &format!("/v1/keys/{id}"), &[], b"");
    assert_eq!(status, 404, "not uploaded yet");
    let wrong = KeyId::of(b"other");
    let (status, _, body) = request(
        server.addr,
        "PUT",
        &format!("/v1/keys/{wrong}?model=iris_tree"),
        &[],
        &upload,
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not to the key id"));
    let (status, _, _) = request(server.addr, "PUT", &key_path, &[], &upload);
    assert_eq!(status, 201);
    let (status, _, _) = request(server.addr, "PUT", &key_path, &[], &upload);
    assert_eq!(status, 200, "idempotent");
    let (status, head, _) = request(server.addr, "HEAD", &format!("/v1/keys/{id}"), &[], b"");
    assert_eq!(status, 200);
    assert!(head.contains("x-cml-model: iris_tree"), "{head}");

    // A batch of three samples.
    let rows = [
        [5.1, 3.5, 1.4, 0.2],
        [6.7, 3.0, 5.2, 2.3],
        [5.9, 3.0, 4.2, 1.5],
    ];
    let inputs: Vec<Vec<u8>> = rows
        .iter()
        .map(|x| client.encrypt(&key, x).unwrap().to_bytes().unwrap())
        .collect();
    let clear = model
        .predict(cml_runtime::ndarray::arr2(&rows).view(), Mode::Clear)
        .unwrap();
    let predict = |addr: SocketAddr| {
        let (status, _, body) = request(
            addr,
            "POST",
            "/v1/models/iris_tree/predict",
            &[(KEY_ID_HEADER, id.as_str())],
            &batch::encode(&inputs),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let params = client.bundle().params;
        let bits = &client.bundle().output_bits;
        let outputs = batch::decode(&body, 3, EncryptedOutput::max_bytes(&params, bits)).unwrap();
        outputs
            .iter()
            .map(|o| {
                let o = EncryptedOutput::from_bytes(
                    o,
                    EncryptedOutput::max_bytes(&params, bits),
                    &params,
                )
                .unwrap();
                client.decrypt(&key, &o).unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(predict(server.addr), clear);

    // Bad requests.
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let (status, _, body) = request(server.addr, "POST", path, headers, body);
        (status, String::from_utf8_lossy(&body).to_string())
    };
    let (s, e) = post("/v1/models/iris_tree/predict", &[], &batch::encode(&inputs));
    assert!(s == 400 && e.contains("x-cml-key-id"), "{s} {e}");
    let (s, e) = post(
        "/v1/models/nope/predict",
        &[(KEY_ID_HEADER, id.as_str())],
        b"",
    );
    assert!(s == 404 && e.contains("no model `nope`"), "{s} {e}");
    let (s, e) = post(
        "/v1/models/iris_tree/predict",
        &[(KEY_ID_HEADER, wrong.as_str())],
        &batch::encode(&inputs),
    );
    assert!(s == 404 && e.contains("upload them first"), "{s} {e}");
    let (s, e) = post(
        "/v1/models/breast_cancer_logreg/predict",
        &[(KEY_ID_HEADER, id.as_str())],
        &batch::encode(&inputs[..1]),
    );
    assert!(s == 400 || s == 409, "{s} {e}");
    let (s, e) = post(
        "/v1/models/iris_tree/predict",
        &[(KEY_ID_HEADER, id.as_str())],
        b"garbage",
    );
    assert!(s == 400 && e.contains("not a cml batch"), "{s} {e}");
    let bad = inputs[0][..inputs[0].len() - 10].to_vec();
    let (s, e) = post(
        "/v1/models/iris_tree/predict",
        &[(KEY_ID_HEADER, id.as_str())],
        &batch::encode(&[bad]),
    );
    assert!(s == 400 || s == 422, "{s} {e}");
    let five = vec![inputs[0].clone(); 5];
    let (s, e) = post(
        "/v1/models/iris_tree/predict",
        &[(KEY_ID_HEADER, id.as_str())],
        &batch::encode(&five),
    );
    assert!(s == 400 && e.contains("1 to 4 are accepted"), "{s} {e}");

    let (status, _, metrics) = request(server.addr, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("cml_predictions_total 3"), "{metrics}");
    assert!(metrics.contains("cml_pbs_total 60"), "{metrics}");
    assert!(
        metrics.contains("cml_requests_total{route=\"/v1/keys/{key_id}\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cml_key_cache_misses_total 1"),
        "{metrics}"
    );

    // Every route of the table is routed (no 404 for the path, no 405).
    for (method, pattern) in ROUTES {
        let path = pattern
            .replace("{name}", "iris_tree")
            .replace("{key_id}", id.as_str());
        let (status, _, body) = request(server.addr, method, &path, &[], b"");
        let body = String::from_utf8_lossy(&body);
        assert!(
            status != 405 && !(status == 404 && body.is_empty() && *method != "HEAD"),
            "{method} {path}: {status} {body}"
        );
    }

    // The library's client does the same from a URL and a key directory,
    // and uploads its keys once.
    let remote = cml_serve::client::Remote::new(&format!("http://{}", server.addr)).unwrap();
    let client = remote.client("iris_tree").unwrap();
    let ring_dir = dir.join("ring");
    let ring = cml_serve::client::KeyRing::open_or_create(&ring_dir, &client).unwrap();
    let rows_vec: Vec<Vec<f64>> = rows.iter().map(|r| r.to_vec()).collect();
    assert_eq!(
        remote
            .predict("iris_tree", &client, &ring, &rows_vec)
            .unwrap(),
        clear
    );
    let again = cml_serve::client::KeyRing::open_or_create(&ring_dir, &client).unwrap();
    assert_eq!(again.evaluation_keys, ring.evaluation_keys);
    assert!(!remote
        .ensure_keys("iris_tree", &again.evaluation_keys)
        .unwrap());
    let e = remote.client("nope").unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("no model `nope`"), "{e}");

    // A restart: the key is still there, nothing to upload.
    drop(server);
    let server = start(config(bundles, dir.join("store"), 4));
    let (status, _, _) = request(server.addr, "HEAD", &format!("/v1/keys/{id}"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(predict(server.addr), clear);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A linear model and a network through the library's client; an upload
/// cut off half-way leaves no key behind.
#[test]
fn linear_and_network_models_round_trip_and_cut_uploads_leave_nothing() {
    let dir = scratch("families");
    let mut bundles = Vec::new();
    let mut models = Vec::new();
    for (name, spec) in [
        ("breast_cancer_logreg", "specs/breast_cancer_logreg.yaml"),
        ("digits_mlp", "specs/digits_mlp.yaml"),
    ] {
        models.push((name, deploy(spec, &dir.join(name))));
        bundles.push(dir.join(name).join("server"));
    }
    let server = start(config(bundles, dir.join("store"), 4));
    let remote = cml_serve::client::Remote::new(&format!("http://{}/", server.addr)).unwrap();
    for (name, model) in &models {
        let client = remote.client(name).unwrap();
        let test = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../specs")
            .join(format!("{name}.test.csv"));
        let data = cml_runtime::data::Dataset::from_csv(&test, &client.bundle().features).unwrap();
        let rows: Vec<Vec<f64>> = data
            .features
            .rows()
            .into_iter()
            .take(2)
            .map(|r| r.to_vec())
            .collect();
        let ring =
            cml_serve::client::KeyRing::open_or_create(&dir.join("ring").join(name), &client)
                .unwrap();
        let clear = model
            .predict(
                data.features.slice(cml_runtime::ndarray::s![..2, ..]),
                Mode::Clear,
            )
            .unwrap();
        assert_eq!(
            remote.predict(name, &client, &ring, &rows).unwrap(),
            clear,
            "{name}"
        );
    }

    // An upload whose connection drops half-way.
    let bytes = vec![7u8; 100_000];
    let id = KeyId::of(&bytes);
    let mut s = TcpStream::connect(server.addr).unwrap();
    write!(
        s,
        "PUT /v1/keys/{id}?model=digits_mlp HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    )
    .unwrap();
    s.write_all(&bytes[..50_000]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    // If the server could still answer, it said whose fault it was.
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _, _) = request(server.addr, "HEAD", &format!("/v1/keys/{id}"), &[], b"");
    assert_eq!(status, 404, "no partial key is visible");
    assert_eq!(std::fs::read_dir(dir.join("store/tmp")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(dir.join("store/keys")).unwrap().count(),
        2
    );
    // And the server still serves.
    let (status, _, _) = request(server.addr, "GET", "/health", &[], b"");
    assert_eq!(status, 200);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let dir = scratch("busy");
    deploy("specs/breast_cancer_logreg.yaml", &dir.join("logreg"));
    let server = start(config(
        vec![dir.join("logreg/server")],
        dir.join("store"),
        0,
    ));
    let id = KeyId::of(b"k");
    let (status, head, body) = request(
        server.addr,
        "POST",
        "/v1/models/breast_cancer_logreg/predict",
        &[(KEY_ID_HEADER, id.as_str())],
        b"",
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_openapi_file_describes_exactly_the_routes() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml"))
        .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            documented.push((
                method.as_str().unwrap().to_uppercase(),
                path.as_str().unwrap().to_owned(),
            ));
        }
    }
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
}

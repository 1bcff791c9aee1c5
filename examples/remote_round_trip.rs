//! A model served over HTTP and predicted remotely: deploy a spec's bundles,
//! start `cml serve`'s server in this process on a free port, then, as a
//! client that knows only the URL, fetch the client bundle, make keys
//! (uploaded once), encrypt, predict, decrypt. It also measures what serving
//! adds: the same samples end to end through HTTP (keys already cached on the
//! server) and through `Server::run` in this process. Run with:
//!
//! ```sh
//! cargo run --release --example remote_round_trip [-- SPEC [SAMPLES]]
//! ```

use std::sync::Arc;
use std::time::Instant;

use cml::backend::tfhe::CompressedEvaluationKeys;
use cml::bundle::{self, Server};
use cml::{report, Mode, PFail};
use cml_serve::client::{KeyRing, Remote};
use cml_serve::http::{self, App, Config};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args
        .next()
        .unwrap_or_else(|| "specs/breast_cancer_xgb.yaml".into());
    let samples: usize = args.next().map_or(Ok(5), |s| s.parse())?;

    // Deploy: the bundles `cml deploy` writes.
    let (loaded, test, train) = report::load(spec.as_ref())?;
    let model = report::compile(&loaded, train.as_ref(), PFail::default())?;
    let dir = std::env::temp_dir().join(format!("cml-remote-example-{}", std::process::id()));
    bundle::write(&bundle::from_model(&model), &dir)?;

    // Serve: the server of `cml serve`, on a free port of this machine.
    let config = Config {
        bundles: vec![dir.join("server")],
        store: dir.join("store"),
        cache_bytes: 4 << 30,
        workers: 1,
        queue: 16,
        max_batch: 64,
    };
    let app = Arc::new(App::load(&config)?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            http::serve(app, listener, std::future::pending())
                .await
                .unwrap();
        });
    });
    let url = format!("http://{}", rx.recv()?);

    // Client: a URL, a key directory, rows.
    let name = model.spec.name.as_str();
    let remote = Remote::new(&url)?;
    let client = remote.client(name)?;
    let ring = KeyRing::open_or_create(&dir.join("keys"), &client)?;
    let rows: Vec<Vec<f64>> = test
        .features
        .rows()
        .into_iter()
        .take(samples.max(1))
        .map(|r| r.to_vec())
        .collect();
    let predictions = remote.predict(name, &client, &ring, &rows)?; // uploads the keys
    let clear = model.predict(
        test.features.slice(ndarray::s![..rows.len(), ..]),
        Mode::Clear,
    )?;
    println!(
        "{name} at {url}: {} of {} remote predictions equal the clear model",
        predictions
            .iter()
            .zip(&clear)
            .filter(|(a, b)| a == b)
            .count(),
        rows.len()
    );

    // What serving costs: one sample at a time, end to end, both ways.
    let server = Server::load(dir.join("server"))?;
    let params = server.params();
    let keys = CompressedEvaluationKeys::from_bytes(
        &ring.evaluation_keys,
        CompressedEvaluationKeys::max_bytes(params),
        params,
    )?
    .decompress();
    let (mut remote_s, mut local_s) = (Vec::new(), Vec::new());
    for row in &rows {
        let t = Instant::now();
        remote.predict(name, &client, &ring, std::slice::from_ref(row))?;
        remote_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let output = server.run(&keys, &client.encrypt(&ring.key, row)?)?;
        client.decrypt(&ring.key, &output)?;
        local_s.push(t.elapsed().as_secs_f64());
    }
    let (r, l) = (median(remote_s), median(local_s));
    println!(
        "median per sample: {r:.3} s over HTTP, {l:.3} s in process: serving adds {:.1} %",
        (r / l - 1.0) * 100.0
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

//! The `cml` binary: the main job, inspection, and errors on bad input.

use std::process::Command;

fn cml(args: &[&str]) -> (bool, String, String) {
    cml_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

#[test]
fn run_reports_float_quantized_and_fhe() {
    let (ok, stdout, stderr) = cml(&["run", "specs/iris_logreg.yaml"]);
    assert!(ok, "{stderr}");
    for needle in [
        "model      iris_logreg (30 test samples)",
        "float      accuracy",
        "quantized  accuracy",
        "fhe        accuracy",
        "FHE == clear quantized on 30/30 samples",
        "latency",
        "throughput",
        "evaluation keys",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from:\n{stdout}"
        );
    }
}

#[test]
fn run_as_json() {
    let (ok, stdout, stderr) = cml(&[
        "run",
        "specs/diabetes_ridge.yaml",
        "--limit",
        "10",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["samples"], 10);
    assert_eq!(report["fhe"]["agreement"], 10);
    assert_eq!(report["pbs_count"], 0);
}

#[test]
fn inspect_shows_program_and_parameters() {
    let (ok, stdout, stderr) = cml(&["inspect", "specs/breast_cancer_logreg.yaml"]);
    assert!(ok, "{stderr}");
    for needle in [
        "inputs (30):",
        "= linear  ",
        "PBS per prediction: 0",
        "no bootstrapping: leveled only",
        "predicted p_fail",
        "estimated server cost",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from:\n{stdout}"
        );
    }
}

#[test]
fn deploy_writes_bundles_that_load() {
    let dir = std::env::temp_dir().join(format!("cml-cli-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let (ok, stdout, stderr) = cml(&["deploy", "specs/digits_mlp.yaml", "--out", out]);
    assert!(ok, "{stderr}");
    let server = cml::bundle::Server::load(dir.join("server")).unwrap();
    let client = cml::bundle::Client::load(dir.join("client")).unwrap();
    client.check_server(server.model_hash()).unwrap();
    assert!(
        stdout.contains(&format!(
            "model `digits_mlp` (Network), model hash {}",
            server.model_hash()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("client/client.json ("), "{stdout}");
    // A spec that does not load is an error naming it, and writes nothing.
    let (ok, _, stderr) = cml(&["deploy", "no/such/spec.yaml", "--out", out]);
    assert!(!ok && stderr.contains("no/such/spec.yaml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_answers_over_http_until_interrupted() {
    use std::io::{BufRead, Read, Write};
    let dir = std::env::temp_dir().join(format!("cml-cli-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, _, stderr) = cml(&[
        "deploy",
        "specs/iris_tree.yaml",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cml"))
        .args(["serve", "--bundle"])
        .arg(dir.join("server"))
        .arg("--store")
        .arg(dir.join("store"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("serving iris_tree on http://127.0.0.1:"),
        "{line}"
    );
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"name\":\"iris_tree\""), "{answer}");
    // `cml predict` against it: encrypted here, computed there, equal to
    // the clear model on the spec's test rows.
    let server = format!("http://{addr}");
    let keys = dir.join("keys");
    let args = [
        "predict",
        "--server",
        &server,
        "--model",
        "iris_tree",
        "--data",
        "specs/iris_tree.test.csv",
        "--keys",
        keys.to_str().unwrap(),
        "--limit",
        "3",
        "--batch",
        "2",
    ];
    let (ok, stdout, stderr) = cml(&args);
    assert!(ok, "{stderr}");
    let (loaded, test, _) =
        cml::report::load(std::path::Path::new("specs/iris_tree.yaml")).unwrap();
    let model = cml::CompiledModel::compile(&loaded.spec, &Default::default()).unwrap();
    let clear = model
        .predict(test.features.slice(ndarray::s![..3, ..]), cml::Mode::Clear)
        .unwrap();
    let got: Vec<cml::Prediction> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| serde_json::from_value(v["prediction"].clone()).unwrap())
        .collect();
    assert_eq!(got, clear);
    // A second run finds the keys it uploaded.
    let (ok, _, stderr2) = cml(&args);
    assert!(ok, "{stderr2}");
    let id = |s: &str| {
        s.split("keys ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id(&stderr), id(&stderr2));

    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("route=/v1/models") && logs.contains("status=200"),
        "{logs}"
    );
    // Without a bundle it does not start, and says why.
    let (ok, _, stderr) = cml(&["serve", "--bundle", "/no/such/bundle", "--store", "/tmp/x"]);
    assert!(!ok && stderr.contains("/no/such/bundle"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_an_error_message_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("cml-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "format: cml/v1\nname: x\nmodel:\n  linear:\n    estimator: lasso\n",
    )
    .unwrap();
    let (ok, _, stderr) = cml(&["run", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("bad.yaml:5:"), "{stderr}");
    assert!(stderr.contains("missing field `task`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = cml(&["inspect", "no/such/spec.yaml"]);
    assert!(!ok);
    assert!(
        stderr.contains("no/such/spec.yaml: cannot read spec"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_pbs_reports_parameters_and_correct_lookups() {
    let (ok, stdout, stderr) = cml(&[
        "bench-pbs",
        "--from",
        "1",
        "--to",
        "2",
        "--runs",
        "3",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, b) in lines.iter().enumerate() {
        assert_eq!(b["bits"], i as u64 + 1);
        assert_eq!(b["correct"], 3, "{b}");
        assert!(
            b["params"]["predicted"]["log2_p_fail_pbs"]
                .as_f64()
                .unwrap()
                <= -40.0
        );
        assert!(b["evaluation_key_bytes"].as_u64().unwrap() > 1_000_000);
    }
}

/// `bench-pbs --calibrate` measures this machine, writes a profile that
/// loads, and reports estimated against measured latency; `inspect` then
/// says which cost model it uses: the profile, or the built-in one with the
/// reason a bad profile was refused.
#[test]
fn calibrated_profiles_are_written_used_and_refused_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("cml-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("profile.json");
    let p = path.to_str().unwrap();
    let (ok, stdout, stderr) = cml(&[
        "bench-pbs",
        "--calibrate",
        "--from",
        "3",
        "--to",
        "3",
        "--runs",
        "3",
        "-o",
        p,
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("fitted on "), "{stdout}");
    assert!(stdout.contains("profile written to"), "{stdout}");
    let profile = cml::cost::CostProfile::load(&path).unwrap();
    assert_eq!(profile.checks.len(), 1);
    let check = profile.checks[0];
    assert_eq!(check.bits, 3);
    assert!(
        check.estimated_ms > 0.0 && check.measured_ms > 0.0,
        "{check:?}"
    );

    let (ok, stdout, stderr) = cml(&["inspect", "specs/iris_tree.yaml", "--cost-profile", p]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("cost model: profile {p} ({}", profile.cpu)),
        "{stdout}"
    );

    // A profile from another format: refused, said so, built-in model used.
    std::fs::write(&path, "{\"format\": \"cml-cost-profile/v0\"}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cml"))
        .args(["inspect", "specs/iris_tree.yaml"])
        .env("CML_COST_PROFILE", &path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: cost profile {p} refused"))
            && stderr.contains("format `cml-cost-profile/v0`"),
        "{stderr}"
    );
    assert!(stdout.contains("cost model: built-in"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `cml import-onnx` writes a spec whose data paths resolve from where it
/// was written, and `cml inspect` lists the network's layers.
#[test]
fn import_onnx_then_inspect() {
    let dir = std::env::temp_dir().join(format!("cml-import-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("mlp.yaml");
    let (ok, _, stderr) = cml(&[
        "import-onnx",
        "specs/digits_mlp.onnx",
        "--train",
        "specs/digits_mlp.train.csv",
        "--test",
        "specs/digits_mlp.test.csv",
        "--rounding",
        "5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let loaded = cml::ModelSpec::load(&out).unwrap();
    assert_eq!(loaded.spec.quantization.rounding_bits, Some(5));
    assert!(loaded.train_path().unwrap().exists());
    assert!(loaded.test_path().unwrap().exists());
    let (ok, stdout, stderr) = cml(&["inspect", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("layers:"), "{stdout}");
    assert!(
        stdout.contains("31 PBS, tables 5 bits in"),
        "per-layer PBS and table widths missing from:\n{stdout}"
    );
    let (ok, _, stderr) = cml(&[
        "import-onnx",
        "specs/digits_mlp.onnx",
        "--train",
        "specs/digits_mlp.train.csv",
        "--classes",
        "a,b",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("2 class names given, the network has 10 outputs"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn cml_in(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cml"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_writes_data_paths_relative_to_the_spec() {
    let dir = std::env::temp_dir().join(format!("cml-import-paths-{}", std::process::id()));
    let out = dir.join("elsewhere").join("m.yaml");
    let fixtures = "tests/fixtures/import/xgboost-3.2.0";
    // The old command name, relative data paths from the repository root, a
    // spec written into another directory.
    let (ok, _, stderr) = cml(&[
        "import-xgboost",
        &format!("{fixtures}/missing.ubj"),
        "--train",
        &format!("{fixtures}/missing.train.csv"),
        "--test",
        &format!("{fixtures}/missing.test.csv"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let train = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("train: "))
        .unwrap()
        .trim_matches('"');
    assert!(
        !std::path::Path::new(train).is_absolute() && train.ends_with("missing.train.csv"),
        "{train}"
    );
    let loaded = cml::ModelSpec::load(&out).unwrap();
    assert_eq!(
        loaded.train_path().unwrap().canonicalize().unwrap(),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(fixtures)
            .join("missing.train.csv")
            .canonicalize()
            .unwrap()
    );
    // `cml run` finds the data from any working directory, missing cells
    // included.
    let (ok, stdout, stderr) = cml_in(&dir, &["run", "elsewhere/m.yaml", "--no-fhe"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("missing values, routed as the model's missing sides"),
        "{stdout}"
    );
    assert!(
        stdout.contains("predictions equal to the saved ones"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_cell_for_a_linear_model_names_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("cml-missing-cell-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["iris_logreg.yaml", "iris_logreg.train.csv"] {
        std::fs::copy(format!("specs/{f}"), dir.join(f)).unwrap();
    }
    let test = std::fs::read_to_string("specs/iris_logreg.test.csv").unwrap();
    let mut lines: Vec<String> = test.lines().map(str::to_owned).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let column = header[2].to_owned();
    let mut cells: Vec<String> = lines[3].split(',').map(str::to_owned).collect();
    cells[2].clear();
    lines[3] = cells.join(",");
    std::fs::write(dir.join("iris_logreg.test.csv"), lines.join("\n") + "\n").unwrap();
    let (ok, _, stderr) = cml_in(&dir, &["run", "iris_logreg.yaml", "--no-fhe"]);
    assert!(!ok);
    assert!(stderr.contains("iris_logreg.test.csv:4: "), "{stderr}");
    assert!(
        stderr.contains(&format!("column `{column}`: missing value")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

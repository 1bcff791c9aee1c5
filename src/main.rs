//! The `cml` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cml::import::{relative_to, ImportOptions};
use cml::program::Op;
use cml::report::{self, Report, RunOptions, Score};
use cml::spec::Task;
use cml::{CompiledModel, PFail};
use indicatif::{ProgressBar, ProgressStyle};

/// Encrypted inference for trained ML models.
#[derive(Parser)]
#[command(name = "cml", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Cost profile written by `cml bench-pbs --calibrate`, which the
    /// parameter optimizer ranks candidates with (default: the file named by
    /// $CML_COST_PROFILE, else the built-in model).
    #[arg(long, global = true, value_name = "PROFILE.json")]
    cost_profile: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PFailArgs {
    /// Failure probability per bootstrap or decryption, as log2 (default -40).
    #[arg(long, allow_negative_numbers = true, default_value_t = -40.0)]
    p_fail: f64,
    /// Read --p-fail as the failure probability of a whole prediction.
    #[arg(long)]
    global_p_fail: bool,
}

impl PFailArgs {
    fn target(&self) -> PFail {
        if self.global_p_fail {
            PFail::Global(self.p_fail)
        } else {
            PFail::PerOp(self.p_fail)
        }
    }
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The model file: XGBoost JSON or UBJSON (`save_model`), LightGBM's
    /// text model (`save_model`), or an ONNX network; told apart by content.
    model: PathBuf,
    /// Training CSV (feature columns named as in the model; for networks in
    /// the input's flattened (C, H, W) order, then `target`): calibration
    /// ranges, recorded as `data.train`. Required for networks.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Test CSV (with saved `score_*` and `prediction`) to record as
    /// `data.test`. For tree ensembles the scores are the library's raw
    /// margins (XGBoost `output_margin=True`, LightGBM `raw_score=True`).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Where to write the spec (YAML); standard output when absent. Data
    /// paths in the spec are relative to its directory.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Spec name (default: from the file name).
    #[arg(long)]
    name: Option<String>,
    /// Class names, comma-separated, one per class (default 0, 1, …).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Bits per quantized input feature (default 6 for trees, 4 for networks).
    #[arg(long)]
    input_bits: Option<u8>,
    /// Tree ensembles: which features take missing values (empty cells,
    /// NaN): `auto` (those with one in the train or test CSV), `all`, `none`.
    #[arg(long, default_value = "auto")]
    missing: String,
    #[command(flatten)]
    network: NetworkArgs,
}

#[derive(clap::Args)]
struct NetworkArgs {
    /// Networks: a regressor, even with a trailing sigmoid-free single output.
    #[arg(long)]
    regression: bool,
    /// Networks: bits per weight (one scale per output neuron).
    #[arg(long, default_value_t = 4)]
    weight_bits: u8,
    /// Networks: bits of each activation's output.
    #[arg(long, default_value_t = 4)]
    activation_bits: u8,
    /// Networks: accumulator bits kept before each table: a number, `none`,
    /// or `auto` (the fewest bits, for every layer, whose clear accuracy on
    /// the training CSV stays within --rounding-budget of the unrounded
    /// quantized model).
    #[arg(long, default_value = "6")]
    rounding: String,
    /// Networks, `--rounding auto`: accuracy points (R² for regressors) the
    /// rounding may cost.
    #[arg(long, default_value_t = 0.005)]
    rounding_budget: f64,
    /// Networks: round accumulators exactly (one 1-bit PBS per bit removed)
    /// instead of approximately (free).
    #[arg(long)]
    exact_rounding: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a model on its bundled test data: float vs quantized vs FHE.
    Run {
        /// The spec file (YAML).
        spec: PathBuf,
        #[command(flatten)]
        p_fail: PFailArgs,
        /// Skip FHE (float and quantized only).
        #[arg(long)]
        no_fhe: bool,
        /// Evaluate only the first N test samples.
        #[arg(long)]
        limit: Option<usize>,
        /// Samples timed one by one for single-sample latency.
        #[arg(long, default_value_t = 20)]
        latency_samples: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark one table lookup (keyswitch + PBS) per input precision:
    /// parameters, keygen time, key size and latency on one thread.
    BenchPbs {
        /// Smallest precision (bits).
        #[arg(long, default_value_t = 1)]
        from: u32,
        /// Largest precision (bits).
        #[arg(long, default_value_t = 8)]
        to: u32,
        /// Lookups timed per precision.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[command(flatten)]
        p_fail: PFailArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure the cost model's coefficients on this machine first, use
        /// them, and write them as a cost profile (with the estimated and
        /// measured latency of each precision).
        #[arg(long)]
        calibrate: bool,
        /// Where --calibrate writes the profile.
        #[arg(short, long, default_value = "cml-cost-profile.json")]
        output: PathBuf,
    },
    /// Convert a trained model's own file into a spec: XGBoost (JSON or
    /// UBJSON, 1.x to 3.x), LightGBM (text model) or an ONNX network
    /// (post-training quantized on the training CSV).
    #[command(visible_alias = "import-xgboost", visible_alias = "import-onnx")]
    Import(ImportArgs),
    /// Write a model's deployment bundles: `OUT/client/client.json` for
    /// clients (encoding, decoding, parameters; no model) and
    /// `OUT/server/server.json` for servers (the program too).
    Deploy {
        /// The spec file (YAML).
        spec: PathBuf,
        /// Directory to write the bundles into (created when missing).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        p_fail: PFailArgs,
    },
    /// Serve models over HTTP: their client bundles, clients' evaluation
    /// keys (kept in --store across restarts) and encrypted predictions
    /// (routes in cml-serve/openapi.yaml).
    #[cfg(feature = "fhe")]
    Serve {
        /// A server bundle directory written by `cml deploy` (OUT/server);
        /// repeat for several models.
        #[arg(long, required = true)]
        bundle: Vec<PathBuf>,
        /// Directory of the key store (created when missing).
        #[arg(long)]
        store: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Memory for decompressed evaluation keys, MiB.
        #[arg(long, default_value_t = 2048)]
        cache_mib: u64,
        /// Predict requests computed at once (each uses every core).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Predict requests running or waiting before new ones get 503.
        #[arg(long, default_value_t = 16)]
        queue: usize,
        /// Encrypted inputs per predict request.
        #[arg(long, default_value_t = 64)]
        max_batch: usize,
    },
    /// Predict rows of a CSV file on a `cml serve` server: fetch the model's
    /// client bundle, encrypt here, let the server compute, decrypt here.
    /// Keys are kept in --keys (created on first use) and uploaded once.
    #[cfg(feature = "fhe")]
    Predict {
        /// The server, `http://host:port`.
        #[arg(long)]
        server: String,
        /// The model's name on the server.
        #[arg(long)]
        model: String,
        /// CSV with the model's feature columns (other columns are ignored).
        #[arg(long)]
        data: PathBuf,
        /// Directory of this client's keys (one subdirectory per model).
        #[arg(long, default_value = "cml-keys")]
        keys: PathBuf,
        /// Rows per request.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Predict only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show the integer program, its bit-widths, PBS count and FHE parameters.
    Inspect {
        /// The spec file (YAML).
        spec: PathBuf,
        #[command(flatten)]
        p_fail: PFailArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Calibration installs the model it measures; everything else the one asked for.
    if !matches!(
        cli.command,
        Command::BenchPbs {
            calibrate: true,
            ..
        }
    ) {
        let source = cml::cost::CostSource::resolve(cli.cost_profile.as_deref());
        if let cml::cost::CostSource::Builtin {
            refused: Some((path, why)),
            ..
        } = &source
        {
            eprintln!(
                "warning: cost profile {} refused ({why}); using the built-in cost model",
                path.display()
            );
        }
        let _ = cml::cost::install(source);
    }
    let result = match cli.command {
        Command::Run {
            spec,
            p_fail,
            no_fhe,
            limit,
            latency_samples,
            json,
        } => run(
            &spec,
            RunOptions {
                p_fail: p_fail.target(),
                fhe: !no_fhe,
                latency_samples,
                limit,
            },
            json,
        ),
        Command::Inspect { spec, p_fail } => inspect(&spec, p_fail.target()),
        Command::Deploy { spec, out, p_fail } => deploy(&spec, &out, p_fail.target()),
        #[cfg(feature = "fhe")]
        Command::Predict {
            server,
            model,
            data,
            keys,
            batch,
            limit,
        } => {
            return match predict_remote(&server, &model, &data, &keys, batch, limit) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        #[cfg(feature = "fhe")]
        Command::Serve {
            bundle,
            store,
            addr,
            cache_mib,
            workers,
            queue,
            max_batch,
        } => {
            let config = cml_serve::http::Config {
                bundles: bundle,
                store,
                cache_bytes: cache_mib << 20,
                workers,
                queue,
                max_batch,
            };
            return match serve(config, addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Import(args) => import(args),
        Command::BenchPbs {
            from,
            to,
            runs,
            p_fail,
            json,
            calibrate: measure,
            output,
        } => {
            let (bits, runs, p_fail) = (from.max(1)..=to, runs.max(1), p_fail.target());
            if measure {
                calibrate(bits, runs, p_fail, json, &output)
            } else {
                bench_pbs(bits, runs, p_fail, json)
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import(a: ImportArgs) -> Result<(), cml::Error> {
    use cml::import::{attach_data, detect, read_header, Format, MissingPolicy};

    let head = read_header(&a.model)?;
    if detect(&head) == Some(Format::Onnx) {
        return import_onnx(a);
    }
    let policy = match a.missing.as_str() {
        "auto" => MissingPolicy::Auto,
        "all" => MissingPolicy::All,
        "none" => MissingPolicy::None,
        other => {
            return Err(cml::DataError::Empty(format!(
                "--missing `{other}`: expected `auto`, `all` or `none`"
            ))
            .into())
        }
    };
    let options = ImportOptions {
        name: a.name,
        input_bits: a.input_bits.unwrap_or(6),
        classes: a.classes,
        ..ImportOptions::default()
    };
    let mut spec = cml::import::tree_file(&a.model, &options)?;
    let dir = spec_dir(a.out.as_deref());
    if let Some(train) = &a.train {
        // The model's names, matched to the CSV's columns (LightGBM writes
        // `mean_radius` for a column `mean radius`).
        let columns = cml::data::Dataset::feature_columns(train)?;
        let renamed = cml::import::match_csv_names(spec.features(), &columns, train)?;
        if let cml::spec::ModelKind::Ensemble(e) = &mut spec.model {
            for (old, new) in e.features.iter().zip(&renamed) {
                if old != new {
                    eprintln!("feature `{old}` is the CSV's column `{new}`");
                }
            }
            e.features = renamed;
        }
        let data = cml::data::Dataset::from_csv(train, spec.features())?;
        let test = match &a.test {
            Some(t) => Some(cml::data::Dataset::from_csv(t, spec.features())?),
            None => None,
        };
        attach_data(&mut spec, &data, test.as_ref(), policy);
        if let cml::spec::ModelKind::Ensemble(e) = &spec.model {
            if !e.accepts_missing.is_empty() {
                eprintln!(
                    "features that take missing values: {}",
                    e.accepts_missing.join(", ")
                );
            }
        }
    }
    if a.train.is_some() || a.test.is_some() {
        spec.data = Some(cml::spec::DataSpec {
            train: a.train.as_deref().map(|p| relative_to(&dir, p)),
            test: a.test.as_deref().map(|p| relative_to(&dir, p)),
        });
    }
    spec.check(&a.model)?;
    write_spec(&spec, a.out.as_deref())
}

/// The directory a spec written to `out` lives in (the current one for
/// standard output).
fn spec_dir(out: Option<&std::path::Path>) -> PathBuf {
    out.and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

fn import_onnx(a: ImportArgs) -> Result<(), cml::Error> {
    use cml::import::{onnx_file, OnnxOptions};
    use cml::models::nn;
    use cml::spec::{DataSpec, RoundingMode};

    let train = a.train.clone().ok_or_else(|| {
        cml::DataError::Empty(
            "an ONNX network needs --train: its training CSV calibrates the quantization".into(),
        )
    })?;
    let n = &a.network;
    let features = cml::data::Dataset::feature_columns(&train)?;
    let mut quantization = cml::import::onnx::default_quantization();
    quantization.input_bits = a.input_bits.unwrap_or(4);
    quantization.weight_bits = n.weight_bits;
    quantization.activation_bits = Some(n.activation_bits);
    quantization.rounding = if n.exact_rounding {
        RoundingMode::Exact
    } else {
        RoundingMode::Approximate
    };
    let auto = match n.rounding.as_str() {
        "auto" => true,
        "none" => {
            quantization.rounding_bits = None;
            false
        }
        bits => {
            quantization.rounding_bits = Some(bits.parse().map_err(|_| {
                cml::DataError::Empty(format!(
                    "--rounding `{bits}`: expected a number of bits, `none` or `auto`"
                ))
            })?);
            false
        }
    };
    let dir = spec_dir(a.out.as_deref());
    let options = OnnxOptions {
        name: a.name.clone(),
        features,
        classes: a.classes.clone(),
        regression: n.regression,
        quantization,
        data: Some(DataSpec {
            train: Some(relative_to(&dir, &train)),
            test: a.test.as_deref().map(|t| relative_to(&dir, t)),
        }),
    };
    let mut spec = onnx_file(&a.model, &options)?;
    let data = cml::data::Dataset::from_csv(&train, spec.features())?;
    data.check_missing(spec.features(), &spec.accepts_missing())?;
    let cml::spec::ModelKind::Network(net) = &mut spec.model else {
        unreachable!("the importer writes networks")
    };
    // Record the calibration, so that the spec compiles without its data
    // (and `--rounding auto` does not calibrate again for every candidate).
    nn::record_calibration(net, &mut spec.quantization, data.features.view())?;
    if auto {
        let target = data.target.as_deref().ok_or_else(|| {
            cml::DataError::Empty(
                "--rounding auto needs a `target` column in the training CSV".into(),
            )
        })?;
        let choice = nn::choose_rounding(
            net,
            &spec.quantization,
            data.features.view(),
            target,
            n.rounding_budget,
        )?;
        eprintln!(
            "rounding auto: unrounded quantized {:.4}, chosen {:.4} (budget {})",
            choice.unrounded, choice.chosen, choice.budget
        );
        for (layer, bits) in net.layers.iter_mut().zip(&choice.bits) {
            if let Some(b) = bits {
                eprintln!("  layer {}: {b} bits", layer.name);
            }
            layer.rounding_bits = *bits;
        }
        spec.quantization.rounding_bits = None;
    }
    spec.check(&a.model)?;
    write_spec(&spec, a.out.as_deref())
}

fn write_spec(spec: &cml::ModelSpec, out: Option<&std::path::Path>) -> Result<(), cml::Error> {
    let yaml = spec.to_yaml();
    match out {
        Some(path) => {
            let write = || -> std::io::Result<()> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(path, yaml)
            };
            write().map_err(|source| cml::Error::Write {
                file: path.to_path_buf(),
                source,
            })?
        }
        None => print!("{yaml}"),
    }
    Ok(())
}

fn run(spec: &std::path::Path, options: RunOptions, json: bool) -> Result<(), cml::Error> {
    let (loaded, test, train) = report::load(spec)?;
    let model = report::compile(&loaded, train.as_ref(), options.p_fail)?;
    let n = options.limit.map_or(test.len(), |l| l.min(test.len()));
    let bar = if options.fhe && !json {
        let bar = ProgressBar::new(n as u64);
        bar.set_style(
            ProgressStyle::with_template("FHE {bar:40} {pos}/{len} samples [{elapsed}<{eta}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = report::evaluate(&model, &test, &options, &|| bar.inc(1))?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report, &model);
    }
    Ok(())
}

fn fmt_score(task: Task, s: &Score) -> String {
    match task {
        Task::Classification => format!("accuracy {:.4}", s.primary),
        Task::Regression => format!("R² {:.4}  MSE {:.2}", s.primary, s.mse.unwrap_or(f64::NAN)),
    }
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_bytes(b: usize) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

fn print_report(r: &Report, model: &CompiledModel) {
    println!("model      {} ({} test samples)", r.name, r.samples);
    println!(
        "quantized  inputs {} bits, weights {} bits; widest value {} bits; {} PBS per prediction",
        r.input_bits, r.weight_bits, r.max_bits, r.pbs_count
    );
    println!("float      {}", fmt_score(r.task, &r.float));
    if let Some(d) = r.float_max_abs_diff {
        println!("           max |score − saved score| = {d:.2e}");
    }
    if let Some((saved, outputs)) = r.saved_scores_mismatch {
        println!(
            "           the test CSV saves {saved} score column(s) for {outputs} output(s): \
             only {} compared",
            saved.min(outputs)
        );
    }
    if let Some(a) = r.float_prediction_agreement {
        println!(
            "           predictions equal to the saved ones: {a}/{}",
            r.samples
        );
    }
    if r.missing_values > 0 {
        println!(
            "inputs     {} missing values, routed as the model's missing sides",
            r.missing_values
        );
    }
    if !r.out_of_range.is_empty() {
        let total: usize = r.out_of_range.iter().map(|(_, b, a)| b + a).sum();
        let each: Vec<String> = r
            .out_of_range
            .iter()
            .map(|(name, below, above)| match (below, above) {
                (0, a) => format!("{name} ({a} above)"),
                (b, 0) => format!("{name} ({b} below)"),
                (b, a) => format!("{name} ({b} below, {a} above)"),
            })
            .collect();
        println!(
            "inputs     {total} values outside the calibration range, clipped to its ends: {}",
            each.join(", ")
        );
    }
    println!("quantized  {}", fmt_score(r.task, &r.quantized));
    if let Some(f) = &r.fhe {
        println!("fhe        {}", fmt_score(r.task, &f.score));
        println!(
            "           FHE == clear quantized on {}/{} samples",
            f.agreement, r.samples
        );
        println!(
            "keygen     client {}, evaluation {}",
            fmt_duration(f.keygen_client),
            fmt_duration(f.keygen_evaluation)
        );
        println!(
            "latency    {} per sample end to end (server run {}), one at a time",
            fmt_duration(f.latency),
            fmt_duration(f.latency_run)
        );
        let digits = if f.throughput < 10.0 { 2 } else { 0 };
        println!(
            "throughput {:.*} samples/s batched on {} threads",
            digits, f.throughput, f.threads
        );
        if r.pbs_count > 0 {
            println!(
                "cores      {:.0} % of {} threads in bootstraps one sample at a time, {:.0} % batched",
                100.0 * f.utilisation,
                f.threads,
                100.0 * f.utilisation_batched
            );
        }
        println!(
            "sizes      client key {}, evaluation keys {} (seeded), input {} (seeded), output {}",
            fmt_bytes(f.client_key_bytes),
            fmt_bytes(f.evaluation_key_bytes),
            fmt_bytes(f.input_bytes),
            fmt_bytes(f.output_bytes)
        );
    }
    let p = &model.params;
    println!(
        "params     LWE dimension {}, widest message space {} bits, predicted p_fail 2^{:.1} per output",
        p.input_lwe_dimension, p.message_bits, p.predicted.log2_p_fail_output
    );
}

const BENCH_HEADER: &str = "bits  N      k  n     PBS lvl  KS lvl  p_fail/PBS  estimate   measured (min)        keygen    eval keys (seeded)  correct";

fn bench_pbs(
    bits: std::ops::RangeInclusive<u32>,
    runs: usize,
    p_fail: PFail,
    json: bool,
) -> Result<(), cml::Error> {
    if !json {
        println!("cost model: {}", cml::cost::active_source());
        println!("{BENCH_HEADER}");
    }
    for bits in *bits.start()..=(*bits.end()).min(cml::program::MAX_TABLE_BITS) {
        let b = cml::bench::bench_pbs(bits, runs, p_fail)?;
        print_bench(&b, json);
    }
    Ok(())
}

/// `cml bench-pbs --calibrate`: measure, install, check each precision, save.
fn calibrate(
    bits: std::ops::RangeInclusive<u32>,
    runs: usize,
    p_fail: PFail,
    json: bool,
    output: &std::path::Path,
) -> Result<(), cml::Error> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} points")
            .expect("valid template"),
    );
    let mut profile = cml::bench::calibrate(&mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let m = profile.model;
    if !json {
        println!(
            "fitted on {} ({}AVX-512): blind-rotation step {:.3} ns per FFT unit + {:.3} ns per product unit, \
             {:.0} µs fixed per PBS; keyswitch {:.3} ns per unit",
            profile.cpu,
            if profile.avx512 { "" } else { "no " },
            m.fft,
            m.product,
            m.fixed / 1e3,
            m.keyswitch
        );
    }
    let installed = cml::cost::CostSource::Profile {
        path: output.to_path_buf(),
        profile: profile.clone(),
    };
    if cml::cost::install(installed).is_err() {
        return Err(cml::FheError::Mismatch("a cost model was already in use".into()).into());
    }
    if !json {
        println!("{BENCH_HEADER}");
    }
    let bits = *bits.start()..=(*bits.end()).min(cml::program::MAX_TABLE_BITS);
    cml::bench::check_profile(&mut profile, bits, runs, p_fail, |b| print_bench(b, json))?;
    std::fs::write(output, profile.to_json()).map_err(|source| cml::Error::Write {
        file: output.to_path_buf(),
        source,
    })?;
    if !json {
        let worst = profile
            .checks
            .iter()
            .map(|c| (c.estimated_ms / c.measured_ms - 1.0).abs())
            .fold(0.0f64, f64::max);
        println!(
            "estimates within {:.1} % of the measured latency; profile written to {} \
             (use it with --cost-profile {} or CML_COST_PROFILE)",
            100.0 * worst,
            output.display(),
            output.display()
        );
    }
    Ok(())
}

fn print_bench(b: &cml::bench::PbsBench, json: bool) {
    if json {
        println!("{}", serde_json::to_string(b).unwrap_or_default());
        return;
    }
    {
        let bits = b.bits;
        let p = b.params.pbs.unwrap_or(cml::params::PbsParams {
            lwe_dimension: 0,
            glwe_dimension: 0,
            polynomial_size: 0,
            pbs_base_log: 0,
            pbs_level: 0,
            ks_base_log: 0,
            ks_level: 0,
        });
        println!(
            "{:<5} {:<6} {:<2} {:<5} 2^{}×{:<3} 2^{}×{:<3} 2^{:<8.1}  {:>7.1} ms  {:>9} ({:>9})  {:>9}  {:>18}  {}/{}",
            bits,
            p.polynomial_size,
            p.glwe_dimension,
            p.lwe_dimension,
            p.pbs_base_log,
            p.pbs_level,
            p.ks_base_log,
            p.ks_level,
            b.params.predicted.log2_p_fail_pbs,
            b.params.predicted.pbs_ms,
            fmt_duration(b.pbs),
            fmt_duration(b.pbs_min),
            fmt_duration(b.keygen),
            fmt_bytes(b.evaluation_key_bytes),
            b.correct,
            b.runs
        );
    }
}

/// `cml predict --server`: one JSON line per row (its index and prediction).
#[cfg(feature = "fhe")]
fn predict_remote(
    server: &str,
    model: &str,
    data: &std::path::Path,
    keys: &std::path::Path,
    batch: usize,
    limit: Option<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    let remote = cml_serve::client::Remote::new(server)?;
    let client = remote.client(model)?;
    let bundle = client.bundle();
    let dataset = cml::data::Dataset::from_csv(data, &bundle.features)?;
    let dir = keys.join(format!("{model}-{}", &bundle.model_hash[..16]));
    let ring = cml_serve::client::KeyRing::open_or_create(&dir, &client)?;
    let rows: Vec<Vec<f64>> = dataset
        .features
        .rows()
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|r| r.to_vec())
        .collect();
    eprintln!(
        "{} rows, keys {} in {}",
        rows.len(),
        ring.key_id,
        dir.display()
    );
    for (start, chunk) in (0..).step_by(batch.max(1)).zip(rows.chunks(batch.max(1))) {
        let predictions = remote.predict(model, &client, &ring, chunk)?;
        for (i, p) in predictions.iter().enumerate() {
            println!(
                "{}",
                serde_json::json!({ "row": start + i, "prediction": p })
            );
        }
    }
    Ok(())
}

/// `cml serve`: load the bundles, open the store, serve until Ctrl-C.
#[cfg(feature = "fhe")]
fn serve(
    config: cml_serve::http::Config,
    addr: std::net::SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let app = std::sync::Arc::new(cml_serve::http::App::load(&config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "serving {} on http://{} (keys in {})",
            app.model_names().join(", "),
            listener.local_addr()?,
            config.store.display()
        );
        cml_serve::http::serve(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })?;
    Ok(())
}

/// `cml deploy`: compile the spec and write its bundles.
fn deploy(spec: &std::path::Path, out: &std::path::Path, p_fail: PFail) -> Result<(), cml::Error> {
    let loaded = cml::ModelSpec::load(spec)?;
    let train = training_data(&loaded)?;
    let model = report::compile(&loaded, train.as_ref(), p_fail)?;
    let bundle = cml::bundle::from_model(&model);
    cml::bundle::write(&bundle, out)?;
    println!(
        "model `{}` ({:?}), model hash {}",
        model.spec.name, bundle.client.family, bundle.model_hash
    );
    for (sub, file) in [
        ("client", cml::bundle::CLIENT_FILE),
        ("server", cml::bundle::SERVER_FILE),
    ] {
        let path = out.join(sub).join(file);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("wrote {} ({size} bytes)", path.display());
    }
    Ok(())
}

/// The training data a spec needs to compile: when its input ranges, or a
/// network's activation ranges, are to be calibrated.
fn training_data(loaded: &cml::spec::LoadedSpec) -> Result<Option<cml::data::Dataset>, cml::Error> {
    let network = loaded.spec.network();
    let needs_data = loaded.spec.quantization.input_ranges.is_none()
        || network.is_some_and(|n| {
            n.layers.iter().any(|l| {
                l.ranges.is_none()
                    && matches!(
                        l.op(),
                        Some(cml::spec::LayerOp::Activation(_) | cml::spec::LayerOp::MaxPool2d(_))
                    )
            })
        });
    Ok(match loaded.train_path() {
        Some(path) if needs_data => {
            Some(cml::data::Dataset::from_csv(&path, loaded.spec.features())?)
        }
        _ => None,
    })
}

fn inspect(spec: &std::path::Path, p_fail: PFail) -> Result<(), cml::Error> {
    let loaded = cml::ModelSpec::load(spec)?;
    let network = loaded.spec.network();
    let train = training_data(&loaded)?;
    let model = report::compile(&loaded, train.as_ref(), p_fail)?;
    if let Some(net) = network {
        let low = cml::models::nn::lower(
            net,
            &loaded.spec.quantization,
            train.as_ref().map(|t| t.features.view()),
        )?;
        println!("layers:");
        for l in &low.layers {
            let mut what = Vec::new();
            if l.pbs > 0 {
                what.push(format!(
                    "{} PBS, tables {} bits in ({} with padding)",
                    l.pbs,
                    l.table_bits,
                    l.table_bits + 1
                ));
            }
            if l.rounded_bits > 0 {
                what.push(format!("{} bits rounded off", l.rounded_bits));
            }
            if l.accumulator_bits > 0 {
                what.push(format!("reads {}-bit accumulators", l.accumulator_bits));
            }
            println!("  {:<16} {:<10} {}", l.name, l.op, what.join(", "));
        }
    }
    let prog = &model.program;
    let a = &model.analysis;
    println!("model {} — {}", model.spec.name, spec.display());
    println!("inputs ({}):", prog.inputs.len());
    let features = model.spec.features();
    let names: Vec<String> = match model.encoder.low_bits {
        Some(b) => features
            .iter()
            .flat_map(|f| [format!("{f} (high digit)"), format!("{f} (low {b} bits)")])
            .collect(),
        None => features.to_vec(),
    };
    for (i, (r, name)) in prog.inputs.iter().zip(&names).enumerate() {
        println!(
            "  %{i:<3} {name:<28} [{}, {}] {} bits",
            r.lo,
            r.hi,
            r.bits()
        );
    }
    println!("ops ({}):", prog.ops.len());
    for (i, op) in prog.ops.iter().enumerate() {
        let id = prog.inputs.len() + i;
        let info = a.values[id];
        let what = match op {
            Op::Linear { terms, constant } => {
                let norm: f64 = terms
                    .iter()
                    .map(|(_, w)| (*w as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                format!(
                    "linear  {} terms + {constant}, weight 2-norm {norm:.1} (leveled)",
                    terms.len()
                )
            }
            Op::Round {
                input,
                bits,
                exact: true,
            } => format!("round   %{input} by {bits} bits (exact: {bits} 1-bit PBS)"),
            Op::Round {
                input,
                bits,
                exact: false,
            } => format!("round   %{input} by {bits} bits (approximate: no PBS)"),
            Op::Lut { input, table } => format!(
                "lut     %{input} through table `{}` ({} bits in, PBS at {} bits{})",
                prog.tables[*table].name,
                a.values[*input].range.bits(),
                model.encoding.bits[*input],
                if model.encoding.fused[*input] {
                    ", shared with the other tables of this input"
                } else {
                    ""
                }
            ),
        };
        println!(
            "  %{id:<3} = {what}  → [{}, {}] {} bits, encoded in {}",
            info.range.lo,
            info.range.hi,
            info.range.bits(),
            model.encoding.bits[id]
        );
    }
    println!(
        "outputs: {}",
        prog.outputs
            .iter()
            .map(|o| format!("%{o}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "PBS per prediction: {} ({} table lookups and rounded bits, fused lookups counted once)",
        model.encoding.pbs_count(prog),
        prog.pbs_count()
    );
    println!("widest value: {} bits", a.max_bits());
    let p = &model.params;
    println!("parameters (128-bit security, target {:?}):", p.target);
    println!(
        "  widest message space {} bits, input LWE dimension {} (GLWE k = {}, N = {}), outputs switched to their width + {} bits",
        p.message_bits,
        p.input_lwe_dimension,
        p.input_glwe_dimension,
        p.input_polynomial_size,
        p.output_extra_bits
    );
    match p.pbs {
        None => println!("  no bootstrapping: leveled only"),
        Some(b) => println!(
            "  small LWE dimension {}, GLWE dimension {}, polynomial size {}, PBS base 2^{} × {} levels, KS base 2^{} × {} levels",
            b.lwe_dimension, b.glwe_dimension, b.polynomial_size, b.pbs_base_log, b.pbs_level, b.ks_base_log, b.ks_level
        ),
    }
    if let Some(l) = p.light {
        println!(
            "  light bootstrap key (same keys, PBS base 2^{} × {} levels) for the {} lookups whose outputs allow its noise",
            l.base_log, l.level, p.predicted.light_pbs
        );
    }
    let per_pbs = if prog.pbs_count() == 0 {
        "no PBS".to_string()
    } else {
        format!("per PBS 2^{:.1}", p.predicted.log2_p_fail_pbs)
    };
    println!(
        "  predicted p_fail: {per_pbs}, per output 2^{:.1}, per prediction 2^{:.1}",
        p.predicted.log2_p_fail_output, p.predicted.log2_p_fail_program
    );
    let leveled_terms: usize = prog
        .ops
        .iter()
        .map(|op| match op {
            Op::Linear { terms, .. } => terms.len(),
            Op::Lut { .. } | Op::Round { .. } => 0,
        })
        .sum();
    // About 0.4 ns per multiply-add of a ciphertext coefficient on this class of machine.
    let leveled_ms = leveled_terms as f64 * (p.input_lwe_dimension + 1) as f64 * 0.4e-6;
    println!("cost model: {}", cml::cost::active_source());
    let count = model.encoding.pbs_count(prog);
    let light = p.predicted.light_pbs.min(count);
    let light_part = if light > 0 {
        format!(" + {light} PBS × {:.1} ms", p.predicted.light_pbs_ms)
    } else {
        String::new()
    };
    println!(
        "estimated server cost: {:.3} ms leveled + {} PBS × {:.1} ms{light_part} = {:.2} ms per prediction (one core)",
        leveled_ms,
        count - light,
        p.predicted.pbs_ms,
        leveled_ms + p.predicted.pbs_total_ms(count)
    );
    let sent: usize = model
        .encoding
        .outputs(prog)
        .iter()
        .map(|&b| p.output_bytes(b))
        .sum();
    println!(
        "key sizes: bootstrap key{} {} (Fourier), keyswitching key {}; one ciphertext {}, outputs as sent {}",
        if p.light.is_some() { "s" } else { "" },
        fmt_bytes(p.bootstrap_key_bytes()),
        fmt_bytes(p.keyswitch_key_bytes()),
        fmt_bytes(p.ciphertext_bytes()),
        fmt_bytes(sent)
    );
    Ok(())
}

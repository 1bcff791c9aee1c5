//! The main job: evaluate a spec's model on its bundled test split in float,
//! in clear quantized integers and under FHE, and measure what it costs.

use std::path::Path;
use std::time::{Duration, Instant};

use cml_runtime::data::Dataset;
use cml_runtime::metrics;
use cml_runtime::models::{CompileOptions, CompiledModel, Mode, Prediction};
use cml_runtime::spec::{LoadedSpec, ModelSpec, Task};
use cml_runtime::{DataError, Error, PFail};
use rayon::prelude::*;
use serde::Serialize;

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Failure-probability target.
    pub p_fail: PFail,
    /// Run under FHE (otherwise clear and simulate only).
    pub fhe: bool,
    /// How many samples to time one by one for single-sample latency.
    pub latency_samples: usize,
    /// Evaluate at most this many test samples (all when `None`).
    pub limit: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            p_fail: PFail::default(),
            fhe: true,
            latency_samples: 20,
            limit: None,
        }
    }
}

/// A score of predictions against the truth: accuracy for classifiers, R²
/// (and MSE) for regressors.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Score {
    /// Accuracy (classifiers) or R² (regressors).
    pub primary: f64,
    /// Mean squared error (regressors).
    pub mse: Option<f64>,
}

impl Score {
    fn of(task: Task, predicted: &[Prediction], truth: &[f64]) -> Self {
        let values: Vec<f64> = predicted.iter().map(Prediction::value).collect();
        match task {
            Task::Classification => Self {
                primary: metrics::accuracy(&values, truth),
                mse: None,
            },
            Task::Regression => Self {
                primary: metrics::r2(&values, truth),
                mse: Some(metrics::mse(&values, truth)),
            },
        }
    }
}

/// FHE measurements.
#[derive(Debug, Clone, Serialize)]
pub struct FheReport {
    /// Score of FHE predictions.
    pub score: Score,
    /// Samples whose decrypted integers equal the clear run's.
    pub agreement: usize,
    /// Client key generation.
    pub keygen_client: Duration,
    /// Evaluation key generation (seeded form) plus expansion for the server.
    pub keygen_evaluation: Duration,
    /// Median end-to-end latency of one sample: quantize, encrypt, run, decrypt.
    pub latency: Duration,
    /// Median server-side run of one sample.
    pub latency_run: Duration,
    /// Samples per second when all test samples run in parallel.
    pub throughput: f64,
    /// Threads of the pool the runs used (rayon's, one per core by default).
    pub threads: usize,
    /// Share of the threads' time spent in bootstraps while one sample runs
    /// at a time (over the latency samples).
    pub utilisation: f64,
    /// The same while all test samples run in parallel.
    pub utilisation_batched: f64,
    /// Serialized client key, bytes.
    pub client_key_bytes: usize,
    /// Serialized seeded evaluation keys, bytes.
    pub evaluation_key_bytes: usize,
    /// Serialized encrypted input of one sample (seeded), bytes.
    pub input_bytes: usize,
    /// Serialized encrypted output of one sample, bytes.
    pub output_bytes: usize,
}

/// What [`evaluate`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Model name.
    pub name: String,
    /// Classification or regression.
    pub task: Task,
    /// Test samples evaluated.
    pub samples: usize,
    /// Input bits.
    pub input_bits: u8,
    /// Weight bits.
    pub weight_bits: u8,
    /// Widest value of the program, bits.
    pub max_bits: u32,
    /// Bootstraps per prediction.
    pub pbs_count: usize,
    /// Score of the float model.
    pub float: Score,
    /// Largest difference between our float scores and the exporter's saved ones.
    pub float_max_abs_diff: Option<f64>,
    /// Samples where our float prediction equals the saved one.
    pub float_prediction_agreement: Option<usize>,
    /// Saved `score_*` columns and the model's outputs, when they differ:
    /// only the first `min` outputs were compared.
    pub saved_scores_mismatch: Option<(usize, usize)>,
    /// Features with test values outside the quantization range (those are
    /// clipped to the range's ends): name, count below, count above.
    pub out_of_range: Vec<(String, usize, usize)>,
    /// Missing feature values in the evaluated test rows.
    pub missing_values: usize,
    /// Score of the quantized model in clear.
    pub quantized: Score,
    /// FHE measurements, when run.
    pub fhe: Option<FheReport>,
}

/// Loads a spec and its test data.
pub fn load(spec_path: &Path) -> Result<(LoadedSpec, Dataset, Option<Dataset>), Error> {
    let loaded = ModelSpec::load(spec_path)?;
    let features = loaded.spec.features().to_vec();
    let test_path = loaded.test_path().ok_or_else(|| {
        DataError::Empty(format!(
            "{}: the spec names no test data (data.test)",
            spec_path.display()
        ))
    })?;
    let accepts = loaded.spec.accepts_missing();
    let test = Dataset::from_csv(&test_path, &features)?;
    test.check_missing(&features, &accepts)?;
    let train = match loaded.train_path() {
        Some(p) => {
            let train = Dataset::from_csv(&p, &features)?;
            train.check_missing(&features, &accepts)?;
            Some(train)
        }
        None => None,
    };
    Ok((loaded, test, train))
}

/// Compiles a loaded spec, calibrating on the training split when the spec
/// has no input ranges.
pub fn compile(
    loaded: &LoadedSpec,
    train: Option<&Dataset>,
    p_fail: PFail,
) -> Result<CompiledModel, Error> {
    let options = CompileOptions {
        calibration: train.map(|t| t.features.view()),
        p_fail,
    };
    CompiledModel::compile(&loaded.spec, &options)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// Evaluates a model on a test split. `progress` is called once per FHE sample.
pub fn evaluate(
    model: &CompiledModel,
    test: &Dataset,
    options: &RunOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<Report, Error> {
    let n = options.limit.map_or(test.len(), |l| l.min(test.len()));
    let x = test.features.slice(ndarray::s![..n, ..]);
    let truth: Vec<f64> = match &test.target {
        Some(t) => t[..n].to_vec(),
        None => return Err(DataError::Empty("the test data has no `target` column".into()).into()),
    };
    let task = model.spec.task();

    let float: Vec<Prediction> = x
        .rows()
        .into_iter()
        .map(|r| model.predict_float(&r.to_vec()))
        .collect::<Result<_, _>>()?;
    let float_max_abs_diff = test.scores.as_ref().map(|saved| {
        float
            .iter()
            .zip(saved.rows())
            .map(|(p, s)| {
                p.scores
                    .iter()
                    .zip(s.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    });
    // XGBoost sums its trees in f32: its saved regression outputs agree to
    // about 1e-7 relative, not to the last bit.
    let xgboost = model
        .spec
        .source
        .as_ref()
        .is_some_and(|s| s.library == "xgboost");
    let tolerance = if xgboost { 1e-5 } else { 1e-9 };
    let float_prediction_agreement = test.predictions.as_ref().map(|saved| {
        float
            .iter()
            .zip(saved)
            .filter(|(p, s)| match p.class() {
                Some(c) => c as f64 == **s,
                None => (p.value() - **s).abs() <= tolerance * s.abs().max(1.0),
            })
            .count()
    });

    let saved_scores_mismatch = test.scores.as_ref().and_then(|saved| {
        let outputs = float.first().map_or(0, |p| p.scores.len());
        (saved.ncols() != outputs).then_some((saved.ncols(), outputs))
    });
    // Inputs the quantizers clip: outside the calibration range by more
    // than half a step.
    let out_of_range = model
        .encoder
        .quantizers
        .iter()
        .enumerate()
        .filter_map(|(j, qz)| {
            let (mut below, mut above) = (0, 0);
            for &v in x.column(j) {
                let v = match &model.encoder.standardize {
                    Some(s) => (v - s.mean[j]) / s.scale[j],
                    None => v,
                };
                let q = (v / qz.scale + qz.zero_point as f64).round_ties_even();
                below += usize::from(q < qz.q_min() as f64);
                above += usize::from(q > qz.q_max() as f64);
            }
            (below + above > 0).then(|| (model.spec.features()[j].clone(), below, above))
        })
        .collect();
    let missing_values = x.iter().filter(|v| v.is_nan()).count();

    let clear = model.predict(x, Mode::Clear)?;
    let report_fhe = if options.fhe {
        Some(measure_fhe(
            model,
            x,
            &truth,
            progress,
            options.latency_samples,
        )?)
    } else {
        None
    };
    Ok(Report {
        name: model.spec.name.clone(),
        task,
        samples: n,
        input_bits: model.spec.quantization.input_bits,
        weight_bits: model.spec.quantization.weight_bits,
        max_bits: model.analysis.max_bits(),
        pbs_count: model.encoding.pbs_count(&model.program),
        float: Score::of(task, &float, &truth),
        float_max_abs_diff,
        float_prediction_agreement,
        saved_scores_mismatch,
        out_of_range,
        missing_values,
        quantized: Score::of(task, &clear, &truth),
        fhe: report_fhe,
    })
}

#[cfg(feature = "fhe")]
fn measure_fhe(
    model: &CompiledModel,
    x: ndarray::ArrayView2<'_, f64>,
    truth: &[f64],
    progress: &(dyn Fn() + Sync),
    latency_samples: usize,
) -> Result<FheReport, Error> {
    use cml_runtime::backend::tfhe::{ClientKey, RunStats};

    let t = Instant::now();
    let client = ClientKey::generate(&model.params);
    let keygen_client = t.elapsed();
    let t = Instant::now();
    let compressed = client.compressed_evaluation_keys();
    let evaluation_key_bytes = compressed.to_bytes()?.len();
    let server = compressed.decompress();
    let keygen_evaluation = t.elapsed();
    let client_key_bytes = client.to_bytes()?.len();
    let rows: Vec<Vec<f64>> = x.rows().into_iter().map(|r| r.to_vec()).collect();

    // One sample at a time, as Concrete ML runs.
    let threads = rayon::current_num_threads();
    let mut e2e = Vec::new();
    let mut run = Vec::new();
    let (mut busy, mut wall) = (Duration::ZERO, Duration::ZERO);
    let (mut input_bytes, mut output_bytes) = (0, 0);
    for r in rows.iter().cycle().take(latency_samples.max(1)) {
        let t0 = Instant::now();
        let ct = model.encrypt(&client, r)?;
        let t1 = Instant::now();
        let (out, stats) = server.run_with_stats(&model.program, &ct)?;
        let t2 = Instant::now();
        let _ = model.decrypt(&client, &out)?;
        e2e.push(t0.elapsed());
        run.push(t2 - t1);
        busy += stats.busy;
        wall += stats.wall;
        input_bytes = ct.to_bytes()?.len();
        output_bytes = out.to_bytes()?.len();
    }

    let utilisation = RunStats {
        busy,
        wall,
        ..RunStats::default()
    }
    .utilisation(threads);

    // All samples in parallel.
    let t = Instant::now();
    let results: Vec<(Vec<i64>, Prediction, Duration)> = rows
        .par_iter()
        .map(|r| -> Result<_, Error> {
            let ct = model.encrypt(&client, r)?;
            let (out, stats) = server.run_with_stats(&model.program, &ct)?;
            let ints = model.decrypt_integers(&client, &out)?;
            let p = model.decode(&ints);
            progress();
            Ok((ints, p, stats.busy))
        })
        .collect::<Result<_, _>>()?;
    let elapsed = t.elapsed();
    let utilisation_batched = RunStats {
        busy: results.iter().map(|(_, _, busy)| *busy).sum(),
        wall: elapsed,
        ..RunStats::default()
    }
    .utilisation(threads);
    let agreement = rows
        .iter()
        .zip(&results)
        .map(|(r, (ints, _, _))| -> Result<bool, Error> {
            Ok(model.program.eval_clear(&model.quantize(r)?)? == *ints)
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|&same| same)
        .count();
    let predictions: Vec<Prediction> = results.into_iter().map(|(_, p, _)| p).collect();
    Ok(FheReport {
        score: Score::of(model.spec.task(), &predictions, truth),
        agreement,
        keygen_client,
        keygen_evaluation,
        latency: median(e2e),
        latency_run: median(run),
        throughput: rows.len() as f64 / elapsed.as_secs_f64(),
        threads,
        utilisation,
        utilisation_batched,
        client_key_bytes,
        evaluation_key_bytes,
        input_bytes,
        output_bytes,
    })
}

#[cfg(not(feature = "fhe"))]
fn measure_fhe(
    _model: &CompiledModel,
    _x: ndarray::ArrayView2<'_, f64>,
    _truth: &[f64],
    _progress: &(dyn Fn() + Sync),
    _latency_samples: usize,
) -> Result<FheReport, Error> {
    Err(cml_runtime::FheError::Mismatch("built without the `fhe` feature".into()).into())
}

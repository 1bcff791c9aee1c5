//! The HTTP server of `cml serve`: model bundles, evaluation keys and
//! predictions over HTTP (axum on tokio). The routes, also described in
//! `cml-serve/openapi.yaml` (checked against [`ROUTES`] by the tests):
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | `ok` |
//! | `GET /metrics` | Prometheus text: requests, latencies, PBS, cache, queue |
//! | `GET /v1/models` | JSON: name, family, model hash, features, PBS per sample |
//! | `GET /v1/models/{name}/client` | the model's client bundle (JSON) |
//! | `PUT /v1/keys/{key_id}?model=NAME` | compressed evaluation keys, streamed to the store; 201 new, 200 already there |
//! | `HEAD /v1/keys/{key_id}` | 200 when stored (model in `x-cml-model`), 404 when the client must upload |
//! | `POST /v1/models/{name}/predict` | a batch ([`cml_runtime::batch`]) of encrypted inputs for the key id in `x-cml-key-id` (or `?key_id=`) → a batch of encrypted outputs |
//!
//! Errors are JSON `{"error": "…"}` with a status that says whose fault
//! it is. FHE work runs off the async threads, at most `workers` requests
//! at a time; when `queue` requests are already running or waiting, a
//! predict request is answered `503` with `Retry-After` instead of being
//! queued without bound. Every size limit comes from the model's
//! parameters, never from the request.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cml_runtime::backend::tfhe::{CompressedEvaluationKeys, EncryptedInput, EvaluationKeys};
use cml_runtime::batch;
use cml_runtime::bundle::{BundleError, Family, Server};
use cml_runtime::encoding::Encoding;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tracing::Instrument;

use crate::cache::KeyCache;
use crate::metrics::Metrics;
use crate::store::{FileStore, KeyId, KeyStore, NewKey, StoreError, Stored};

/// Every route: method and path pattern.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name}/client"),
    ("PUT", "/v1/keys/{key_id}"),
    ("HEAD", "/v1/keys/{key_id}"),
    ("POST", "/v1/models/{name}/predict"),
];

/// The header naming the key id of a predict request.
pub const KEY_ID_HEADER: &str = "x-cml-key-id";

/// How a server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server bundle directories (or `server.json` files), one per model.
    pub bundles: Vec<PathBuf>,
    /// The key store's directory.
    pub store: PathBuf,
    /// Memory for decompressed keys, in bytes.
    pub cache_bytes: u64,
    /// Predict requests computed at once.
    pub workers: usize,
    /// Predict requests running or waiting before new ones get 503.
    pub queue: usize,
    /// Encrypted inputs per predict request.
    pub max_batch: usize,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bundle did not load.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The key store did not open.
    #[error("key store: {0}")]
    Store(#[from] StoreError),
    /// Two bundles of one model name.
    #[error("two bundles for model `{0}`")]
    Duplicate(String),
    /// Nothing to serve.
    #[error("no --bundle given: nothing to serve")]
    NoBundle,
}

struct Model {
    server: Server,
    pbs: u64,
    client_json: Vec<u8>,
}

/// A running server's state.
pub struct App {
    models: BTreeMap<String, Model>,
    store: Arc<dyn KeyStore>,
    cache: Mutex<KeyCache>,
    queue: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    max_batch: usize,
    /// The server's counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl App {
    /// Loads the bundles and opens the store.
    pub fn load(config: &Config) -> Result<Self, StartError> {
        if config.bundles.is_empty() {
            return Err(StartError::NoBundle);
        }
        let mut models = BTreeMap::new();
        for path in &config.bundles {
            let server = Server::load(path)?;
            let name = server.name().to_owned();
            let pbs = Encoding::of(server.program(), server.analysis()).pbs_count(server.program());
            let client_json = server.client_bundle().to_json();
            let model = Model {
                server,
                pbs: pbs as u64,
                client_json,
            };
            if models.insert(name.clone(), model).is_some() {
                return Err(StartError::Duplicate(name));
            }
        }
        Ok(Self {
            models,
            store: Arc::new(FileStore::open(&config.store)?),
            cache: Mutex::new(KeyCache::new(config.cache_bytes)),
            queue: Arc::new(Semaphore::new(config.queue)),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            max_batch: config.max_batch.max(1),
            metrics: Metrics::default(),
        })
    }

    /// The names of the models served.
    pub fn model_names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    fn model(&self, name: &str) -> Result<&Model, ApiError> {
        self.models.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no model `{name}` (GET /v1/models lists them)"),
            )
        })
    }

    /// The decompressed keys of `id` for model `name`: from the cache, or
    /// read from the store, checked against the model's parameters and
    /// decompressed (blocking: call off the async threads).
    fn keys(&self, id: &KeyId, name: &str, model: &Model) -> Result<Arc<EvaluationKeys>, ApiError> {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id);
        if let Some(keys) = cached {
            if keys.params() == model.server.params() {
                self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(keys);
            }
        }
        let Some((meta, file)) = self.store.get(id).map_err(ApiError::store)? else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no evaluation keys {id}: upload them first (PUT /v1/keys/{id}?model={name})"
                ),
            ));
        };
        if meta.model != name {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "key {id} was uploaded for model `{}`, not `{name}`",
                    meta.model
                ),
            ));
        }
        let params = model.server.params();
        let limit = CompressedEvaluationKeys::max_bytes(params);
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("key {id}: {e}"))
        })?;
        let keys = match CompressedEvaluationKeys::from_bytes(&bytes, limit, params) {
            Ok(k) => k,
            Err(e) => {
                // Not keys for this model: forget them, so HEAD says upload again.
                let _ = self.store.remove(id);
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "key {id} is not evaluation keys for model `{name}` ({e}); it was removed"
                    ),
                ));
            }
        };
        drop(bytes);
        let keys = Arc::new(keys.decompress());
        self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::clone(&keys));
        Ok(keys)
    }
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn store(e: StoreError) -> Self {
        let status = match &e {
            StoreError::BadKeyId(_) | StoreError::HashMismatch { .. } | StoreError::Upload(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::OtherModel { .. } => StatusCode::CONFLICT,
            StoreError::Io { .. } | StoreError::Index(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message);
        } else {
            tracing::info!(status = self.status.as_u16(), error = %self.message);
        }
        let mut response = (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// The router of an app (see the module docs).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{name}/client", get(client_bundle))
        .route("/v1/keys/{key_id}", put(put_key).head(head_key))
        .route("/v1/models/{name}/predict", post(predict))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), track))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Request id, log span, metrics.
async fn track(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", id, method = %request.method(), route = %route);
    let start = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let seconds = start.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    app.metrics.observe(&route, status, seconds);
    tracing::info!(parent: &span, status, ms = seconds * 1e3, "answered");
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    response
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let (bytes, keys) = {
        let cache = app.cache.lock().unwrap_or_else(|e| e.into_inner());
        (cache.used(), cache.len())
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(bytes, keys),
    )
        .into_response()
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model's name.
    pub name: String,
    /// Its family.
    pub family: Family,
    /// Its model hash (the client bundle's).
    pub model_hash: String,
    /// Input features per sample.
    pub n_features: usize,
    /// Bootstraps per sample.
    pub pbs_per_sample: u64,
}

async fn models(State(app): State<Arc<App>>) -> Json<Vec<ModelInfo>> {
    Json(
        app.models
            .iter()
            .map(|(name, m)| {
                let client = m.server.client_bundle();
                ModelInfo {
                    name: name.clone(),
                    family: client.family,
                    model_hash: client.model_hash.clone(),
                    n_features: client.encoder.quantizers.len(),
                    pbs_per_sample: m.pbs,
                }
            })
            .collect(),
    )
}

async fn client_bundle(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let model = app.model(&name)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        model.client_json.clone(),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    model: Option<String>,
}

async fn put_key(
    State(app): State<Arc<App>>,
    Path(key_id): Path<String>,
    Query(query): Query<KeyQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&key_id).map_err(ApiError::store)?;
    let name = query.model.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "say which model the keys are for: PUT /v1/keys/{key_id}?model=NAME",
        )
    })?;
    let model = app.model(&name)?;
    let limit = CompressedEvaluationKeys::max_bytes(model.server.params());
    let hash = model.server.model_hash().to_owned();
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = SyncIoBridge::new(StreamReader::new(stream));
    let store = Arc::clone(&app.store);
    let stored = tokio::task::spawn_blocking(move || {
        let new = NewKey {
            model: &name,
            params_hash: &hash,
            limit,
        };
        store.put(&id, &new, &mut reader)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(ApiError::store)?;
    let status = match stored {
        Stored::Created => StatusCode::CREATED,
        Stored::Existing => StatusCode::OK,
    };
    Ok(status.into_response())
}

async fn head_key(
    State(app): State<Arc<App>>,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&key_id).map_err(ApiError::store)?;
    let store = Arc::clone(&app.store);
    let meta = tokio::task::spawn_blocking(move || store.meta(&id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::store)?;
    Ok(
        match meta.and_then(|m| HeaderValue::from_str(&m.model).ok()) {
            Some(model) => (StatusCode::OK, [("x-cml-model", model)]).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
    )
}

#[derive(Debug, Deserialize)]
struct PredictQuery {
    key_id: Option<String>,
}

/// Counts a predict request in the queue while it lives.
struct Queued<'a>(&'a AtomicU64);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn predict(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<PredictQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let model = app.model(&name)?;
    let key_id = headers
        .get(KEY_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.key_id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("name the evaluation keys: header `{KEY_ID_HEADER}` or `?key_id=`"),
            )
        })?;
    let id = KeyId::parse(&key_id).map_err(ApiError::store)?;
    let Ok(place) = Arc::clone(&app.queue).try_acquire_owned() else {
        app.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy: every place in its queue is taken; retry later",
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    app.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
    let _queued = Queued(&app.metrics.queue_depth);
    let params = *model.server.params();
    let n_inputs = model.server.program().inputs.len();
    let item_limit = EncryptedInput::max_bytes(&params, n_inputs);
    let body_limit = (app.max_batch as u64)
        .saturating_mul(item_limit + 8)
        .saturating_add(16);
    let bytes = axum::body::to_bytes(body, usize::try_from(body_limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is not a batch of at most {} inputs: {e}",
                    app.max_batch
                ),
            )
        })?;
    let worker = Arc::clone(&app.workers)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let job = Arc::clone(&app);
    let answer = tokio::task::spawn_blocking(move || {
        let _held = (place, worker);
        let model = job.model(&name)?;
        let items = batch::decode(&bytes, job.max_batch, item_limit)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let keys = job.keys(&id, &name, model)?;
        let mut outputs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let input = EncryptedInput::from_bytes(item, item_limit, &params)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("input {i}: {e}")))?;
            let output = model.server.run(&keys, &input).map_err(|e| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("input {i}: {e}"))
            })?;
            job.metrics.predictions.fetch_add(1, Ordering::Relaxed);
            job.metrics.pbs.fetch_add(model.pbs, Ordering::Relaxed);
            outputs.push(output.to_bytes().map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("output {i}: {e}"),
                )
            })?);
        }
        Ok::<_, ApiError>(batch::encode(&outputs))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response())
}

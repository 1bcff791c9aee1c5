//! A client of `cml serve`: fetches a model's client bundle, uploads
//! evaluation keys only when the server lacks them, sends batches of
//! encrypted inputs and decrypts the answers. The secret key never leaves
//! the client: [`KeyRing`] keeps it (and the evaluation keys made from it,
//! whose bytes name them on the server) in a local directory, so that a
//! client uploads its keys once, not on every run.
//!
//! Blocking API over hyper (HTTP/1.1, `http://` only: put a TLS proxy in
//! front of a server reached over a network you do not trust).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use cml_runtime::backend::tfhe::{ClientKey, EncryptedOutput};
use cml_runtime::batch;
use cml_runtime::bundle::Client;
use cml_runtime::Prediction;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

use crate::http::{ModelInfo, KEY_ID_HEADER};
use crate::store::KeyId;

/// Why a remote call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `http://host:port[/prefix]`.
    #[error("`{0}` is not an http:// URL")]
    Url(String),
    /// The connection or the transfer failed.
    #[error("{url}: {message}")]
    Transport {
        /// The request's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error.
    #[error("{url}: {status}: {message}")]
    Status {
        /// The request's URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The server's message.
        message: String,
    },
    /// A bundle, a key or a ciphertext was refused locally.
    #[error(transparent)]
    Local(#[from] cml_runtime::Error),
    /// The key directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A connection to one `cml serve`.
pub struct Remote {
    base: String,
    /// Key ids this connection has seen on the server (no HEAD again).
    ensured: std::sync::Mutex<std::collections::HashSet<KeyId>>,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("base", &self.base).finish()
    }
}

impl Remote {
    /// A client of the server at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(ClientError::Url(url.into()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Transport {
                url: url.into(),
                message: e.to_string(),
            })?;
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            base,
            ensured: Default::default(),
            http,
            runtime,
        })
    }

    /// One request: (status, body).
    fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut request = Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| transport(&e))?;
        self.runtime.block_on(async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| transport(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(&e))?
                .to_bytes();
            Ok((status, body))
        })
    }

    /// A request that must succeed.
    fn ok(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, bytes) = self.call(method, path, headers, body)?;
        if status.is_success() {
            return Ok((status, bytes));
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Status {
            url: format!("{}{path}", self.base),
            status,
            message,
        })
    }

    /// The models the server serves.
    pub fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let (_, body) = self.ok(Method::GET, "/v1/models", &[], Vec::new())?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Transport {
            url: format!("{}/v1/models", self.base),
            message: format!("not a model list: {e}"),
        })
    }

    /// A model's client bundle, checked (format, hash, parameters) and
    /// matched against the model hash the server lists.
    pub fn client(&self, model: &str) -> Result<Client, ClientError> {
        let path = format!("/v1/models/{model}/client");
        let (_, body) = self.ok(Method::GET, &path, &[], Vec::new())?;
        let client = Client::from_json(&body, Path::new(&format!("{}{path}", self.base)))
            .map_err(cml_runtime::Error::from)?;
        let listed = self.models()?;
        match listed.iter().find(|m| m.name == model) {
            Some(m) => client
                .check_server(&m.model_hash)
                .map_err(cml_runtime::Error::from)?,
            None => {
                return Err(ClientError::Transport {
                    url: format!("{}/v1/models", self.base),
                    message: format!("model `{model}` is not listed"),
                })
            }
        }
        Ok(client)
    }

    /// Whether the server holds the keys `id`.
    pub fn has_keys(&self, id: &KeyId) -> Result<bool, ClientError> {
        let (status, _) = self.call(Method::HEAD, &format!("/v1/keys/{id}"), &[], Vec::new())?;
        Ok(status == StatusCode::OK)
    }

    /// Uploads compressed evaluation keys for `model` unless the server
    /// already holds them; true when they were sent.
    pub fn ensure_keys(&self, model: &str, evaluation_keys: &[u8]) -> Result<bool, ClientError> {
        self.ensure(model, &KeyId::of(evaluation_keys), evaluation_keys)
    }

    /// [`Remote::ensure_keys`] with the id known, asking the server once
    /// per connection.
    fn ensure(&self, model: &str, id: &KeyId, evaluation_keys: &[u8]) -> Result<bool, ClientError> {
        let ensured = |s: &Self| {
            s.ensured
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(id)
        };
        if ensured(self) {
            return Ok(false);
        }
        let sent = self.upload_unless_held(model, id, evaluation_keys)?;
        self.ensured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        Ok(sent)
    }

    fn upload_unless_held(
        &self,
        model: &str,
        id: &KeyId,
        evaluation_keys: &[u8],
    ) -> Result<bool, ClientError> {
        if self.has_keys(id)? {
            return Ok(false);
        }
        self.ok(
            Method::PUT,
            &format!("/v1/keys/{id}?model={model}"),
            &[("content-type", "application/octet-stream")],
            evaluation_keys.to_vec(),
        )?;
        Ok(true)
    }

    /// Encrypts `rows`, has the server predict them with the keys of
    /// `ring` (uploading them first when needed), and decrypts the answers.
    pub fn predict(
        &self,
        model: &str,
        client: &Client,
        ring: &KeyRing,
        rows: &[Vec<f64>],
    ) -> Result<Vec<Prediction>, ClientError> {
        self.ensure(model, &ring.key_id, &ring.evaluation_keys)?;
        let id = &ring.key_id;
        let inputs = rows
            .iter()
            .map(|x| {
                let ct = client.encrypt(&ring.key, x)?;
                Ok(ct.to_bytes().map_err(cml_runtime::Error::from)?)
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let (_, body) = self.ok(
            Method::POST,
            &format!("/v1/models/{model}/predict"),
            &[
                (KEY_ID_HEADER, id.as_str()),
                ("content-type", "application/octet-stream"),
            ],
            batch::encode(&inputs),
        )?;
        let params = client.bundle().params;
        let bits = &client.bundle().output_bits;
        let limit = EncryptedOutput::max_bytes(&params, bits);
        let local = |e: String| ClientError::Transport {
            url: format!("{}/v1/models/{model}/predict", self.base),
            message: e,
        };
        let outputs = batch::decode(&body, rows.len(), limit).map_err(|e| local(e.to_string()))?;
        if outputs.len() != rows.len() {
            return Err(local(format!(
                "{} outputs for {} inputs",
                outputs.len(),
                rows.len()
            )));
        }
        outputs
            .iter()
            .map(|o| {
                let o = EncryptedOutput::from_bytes(o, limit, &params)
                    .map_err(cml_runtime::Error::from)?;
                Ok(client.decrypt(&ring.key, &o)?)
            })
            .collect()
    }
}

/// A client's keys for one model, kept in a directory: the secret key
/// (`client.key`) and the compressed evaluation keys made from it once
/// (`evaluation.keys`, whose SHA-256 is their id on the server).
pub struct KeyRing {
    /// The secret key.
    pub key: ClientKey,
    /// The evaluation keys' bytes, as uploaded.
    pub evaluation_keys: Vec<u8>,
    /// Their id on the server (SHA-256 of the bytes, computed once).
    pub key_id: KeyId,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl KeyRing {
    /// Loads the keys in `dir` for `client`'s parameters, or generates and
    /// saves them when there are none (the directory is created, readable
    /// by its owner only where the platform allows).
    pub fn open_or_create(dir: &Path, client: &Client) -> Result<Self, ClientError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::Io { path, source }
        };
        let (key_path, eval_path) = (dir.join("client.key"), dir.join("evaluation.keys"));
        let params = client.bundle().params;
        if key_path.is_file() && eval_path.is_file() {
            let bytes = std::fs::read(&key_path).map_err(io(&key_path))?;
            let limit = bytes.len() as u64;
            let key = ClientKey::from_bytes(&bytes, limit).map_err(cml_runtime::Error::from)?;
            if key.params() == &params {
                let evaluation_keys = std::fs::read(&eval_path).map_err(io(&eval_path))?;
                return Ok(Self {
                    key,
                    key_id: KeyId::of(&evaluation_keys),
                    evaluation_keys,
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        let key = client.keygen();
        let evaluation_keys = key
            .compressed_evaluation_keys()
            .to_bytes()
            .map_err(cml_runtime::Error::from)?;
        let secret = key.to_bytes().map_err(cml_runtime::Error::from)?;
        std::fs::write(&key_path, secret).map_err(io(&key_path))?;
        std::fs::write(&eval_path, &evaluation_keys).map_err(io(&eval_path))?;
        Ok(Self {
            key,
            key_id: KeyId::of(&evaluation_keys),
            evaluation_keys,
        })
    }
}

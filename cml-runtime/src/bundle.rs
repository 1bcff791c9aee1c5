//! Deployment bundles: what a client needs to encrypt inputs and decode
//! outputs, and what a server needs to run the model, written once by `cml
//! deploy` (or a `fhe_model!` type) and loaded by [`Client`] and [`Server`].
//!
//! A **client bundle** holds the encoder (standardization, quantizers), the
//! decoder (scales, link), the crypto parameters, the widths the inputs are
//! encrypted at and the outputs decrypted at, and what the program asks of
//! the parameters ([`Needs`]), so that a client can check that the
//! parameters it generates keys for serve the model. It holds no weight, no
//! tree and no table: the model stays on the server. A **server bundle**
//! holds the integer program and a copy of the client bundle (which a server
//! hands to its clients).
//!
//! Both carry the model's name, family, format version and **model hash**:
//! SHA-256 over the client part and the program. A client checks its own
//! part against the hash (it holds the program's digest, not the program); a
//! server checks both. Loading a bundle of another format, a corrupted or
//! edited one, or pairing a client with a server of another model is a
//! [`BundleError`] that says which.
//!
//! Files are JSON, read through a size bound ([`MAX_BUNDLE_BYTES`]) before
//! parsing. Layout written by [`write()`]:
//!
//! ```text
//! DIR/client/client.json   the client bundle (give it to clients)
//! DIR/server/server.json   the server bundle (keep it on the server)
//! ```
//!
//! ```
//! use cml_runtime::bundle::{self, Client, Server};
//! use cml_runtime::models::CompileOptions;
//! use cml_runtime::{CompiledModel, ModelSpec};
//!
//! let spec = ModelSpec::from_yaml_str(r#"
//! format: cml/v1
//! name: tiny
//! model:
//!   linear:
//!     estimator: linear_regression
//!     task: regression
//!     link: identity
//!     features: [a, b]
//!     coefficients: [[2.0, -1.0]]
//!     intercepts: [0.5]
//! quantization:
//!   input_ranges: [[0.0, 1.0], [0.0, 1.0]]
//! "#, "tiny.yaml").unwrap();
//! let model = CompiledModel::compile(&spec, &CompileOptions::default()).unwrap();
//! let dir = std::env::temp_dir().join(format!("cml-bundle-doc-{}", std::process::id()));
//! bundle::write(&bundle::from_model(&model), &dir).unwrap();
//!
//! let client = Client::load(dir.join("client")).unwrap();
//! let server = Server::load(dir.join("server")).unwrap();
//! client.check_server(server.model_hash()).unwrap();
//! assert_eq!(client.bundle().name, "tiny");
//! // The clear integers through the bundles equal the compiled model's.
//! let q = client.quantize(&[0.5, 0.25]).unwrap();
//! let out = server.program().eval_clear(&q).unwrap();
//! assert_eq!(client.decode(&out), model.decode(&model.program.eval_clear(&q).unwrap()));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::encoding::Encoding;
use crate::error::DataError;
use crate::models::{CompiledModel, Decoder, Encoder, Prediction};
use crate::params::{self, FheParams, Needs};
use crate::program::{Analysis, Interval, Program};
use crate::spec::ModelKind;

/// Format tag of a client bundle.
pub const CLIENT_FORMAT: &str = "cml-client-bundle/v1";
/// Format tag of a server bundle.
pub const SERVER_FORMAT: &str = "cml-server-bundle/v1";
/// File name of a client bundle in its directory.
pub const CLIENT_FILE: &str = "client.json";
/// File name of a server bundle in its directory.
pub const SERVER_FILE: &str = "server.json";
/// The largest bundle file read (the biggest bundled network's server
/// bundle is a few MiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// The model family a bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Linear and logistic regression, linear SVMs.
    Linear,
    /// Decision trees, random forests, gradient-boosted trees.
    TreeEnsemble,
    /// Neural networks.
    Network,
}

impl Family {
    /// The family of a spec's model.
    pub fn of(kind: &ModelKind) -> Self {
        match kind {
            ModelKind::Linear(_) => Family::Linear,
            ModelKind::Ensemble(_) => Family::TreeEnsemble,
            ModelKind::Network(_) => Family::Network,
        }
    }
}

/// What a client needs: encoding, decoding and parameters, no model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientBundle {
    /// Always [`CLIENT_FORMAT`].
    pub format: String,
    /// The model's name.
    pub name: String,
    /// The model's family.
    pub family: Family,
    /// Feature names, in input order (the columns a client reads).
    pub features: Vec<String>,
    /// Crypto parameters keys are generated for.
    pub params: FheParams,
    /// What the program asks of the parameters (checked on load).
    pub needs: Needs,
    /// Feature encoding.
    pub encoder: Encoder,
    /// Output decoding.
    pub decoder: Decoder,
    /// Width each program input is encrypted at.
    pub input_bits: Vec<u32>,
    /// Width each output is decrypted at.
    pub output_bits: Vec<u32>,
    /// Range of each output.
    pub output_ranges: Vec<Interval>,
    /// SHA-256 of the server's program (hex), which the model hash covers.
    pub program_digest: String,
    /// The model hash (hex SHA-256, see the module docs).
    pub model_hash: String,
}

/// What a server needs: the program, and the client bundle it hands out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerBundle {
    /// Always [`SERVER_FORMAT`].
    pub format: String,
    /// The model hash, as in [`ClientBundle::model_hash`].
    pub model_hash: String,
    /// The client bundle of this model.
    pub client: ClientBundle,
    /// The integer program.
    pub program: Program,
}

/// Why a bundle cannot be used.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The file could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is larger than [`MAX_BUNDLE_BYTES`].
    #[error("{}: {size} bytes, more than a bundle may have ({limit})", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not JSON, or not a bundle's fields.
    #[error("{}: not a {kind} bundle: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// `client` or `server`.
        kind: &'static str,
        /// The parser's message (with line and column).
        message: String,
    },
    /// Another format or format version.
    #[error("{}: format `{found}`, this build reads `{expected}`", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The format it declares.
        found: String,
        /// The format this build reads.
        expected: &'static str,
    },
    /// Its content does not match its hash, or its parts disagree.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
    /// A client and a server of different models.
    #[error("client bundle of `{client_name}` (model {client_hash}) does not match the server's model {server_hash}")]
    Mismatch {
        /// The client's model name.
        client_name: String,
        /// The client's model hash.
        client_hash: String,
        /// The server's model hash.
        server_hash: String,
    },
}

/// What names a model in its bundles.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// The model's name.
    pub name: &'a str,
    /// Its family.
    pub family: Family,
    /// Its feature names, in input order.
    pub features: &'a [String],
}

/// The server bundle of a compiled model (which holds its client bundle).
pub fn from_model(model: &CompiledModel) -> ServerBundle {
    from_parts(
        Identity {
            name: &model.spec.name,
            family: Family::of(&model.spec.model),
            features: model.spec.features(),
        },
        &model.program,
        &model.analysis,
        &model.encoder,
        &model.decoder,
        &model.params,
    )
}

/// The server bundle of a model given by its parts (what `fhe_model!` types
/// hold).
pub fn from_parts(
    id: Identity<'_>,
    program: &Program,
    analysis: &Analysis,
    encoder: &Encoder,
    decoder: &Decoder,
    params: &FheParams,
) -> ServerBundle {
    let encoding = Encoding::of(program, analysis);
    let mut client = ClientBundle {
        format: CLIENT_FORMAT.into(),
        name: id.name.into(),
        family: id.family,
        features: id.features.to_vec(),
        params: *params,
        needs: Needs::of(program, analysis),
        encoder: encoder.clone(),
        decoder: decoder.clone(),
        input_bits: encoding.inputs(program).to_vec(),
        output_bits: encoding.outputs(program),
        output_ranges: program
            .outputs
            .iter()
            .map(|&v| analysis.values[v].range)
            .collect(),
        program_digest: program_digest(program),
        model_hash: String::new(),
    };
    client.model_hash = client.expected_hash();
    ServerBundle {
        format: SERVER_FORMAT.into(),
        model_hash: client.model_hash.clone(),
        client,
        program: program.clone(),
    }
}

/// Writes `DIR/client/client.json` and `DIR/server/server.json`.
pub fn write(bundle: &ServerBundle, dir: impl AsRef<Path>) -> Result<(), BundleError> {
    let dir = dir.as_ref();
    let client = bundle.client.to_json();
    let server = bundle.to_json();
    for (sub, file, bytes) in [
        ("client", CLIENT_FILE, client),
        ("server", SERVER_FILE, server),
    ] {
        let path = dir.join(sub).join(file);
        let io = |e: std::io::Error| BundleError::Io {
            path: path.clone(),
            message: format!("cannot write: {e}"),
        };
        std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
        std::fs::write(&path, bytes).map_err(io)?;
    }
    Ok(())
}

impl ClientBundle {
    /// The model hash its content and program digest give.
    fn expected_hash(&self) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            name: &'a str,
            family: Family,
            features: &'a [String],
            params: &'a FheParams,
            needs: &'a Needs,
            encoder: &'a Encoder,
            decoder: &'a Decoder,
            input_bits: &'a [u32],
            output_bits: &'a [u32],
            output_ranges: &'a [Interval],
        }
        let part = serde_json::to_vec(&Hashed {
            name: &self.name,
            family: self.family,
            features: &self.features,
            params: &self.params,
            needs: &self.needs,
            encoder: &self.encoder,
            decoder: &self.decoder,
            input_bits: &self.input_bits,
            output_bits: &self.output_bits,
            output_ranges: &self.output_ranges,
        })
        .expect("a bundle always serializes");
        let mut h = Sha256::new();
        h.update(b"cml-model\0");
        h.update(Sha256::digest(&part));
        h.update(self.program_digest.as_bytes());
        hex(&h.finalize())
    }

    /// Sets the model hash to the one this content gives (after editing a
    /// bundle in code: tooling, tests, fuzzing). Loading still checks
    /// everything else.
    pub fn seal(&mut self) {
        self.model_hash = self.expected_hash();
    }

    /// The bundle as JSON (what [`write()`] puts in `client.json`).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a bundle always serializes")
    }

    /// Parses a client bundle and checks it (format, hash, parameters,
    /// sizes); `path` names it in errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, BundleError> {
        let bundle: ClientBundle = parse(bytes, path, "client", CLIENT_FORMAT)?;
        bundle.check(path)?;
        Ok(bundle)
    }

    fn check(&self, path: &Path) -> Result<(), BundleError> {
        let corrupt = |message: String| BundleError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        if self.format != CLIENT_FORMAT {
            return Err(BundleError::Version {
                path: path.to_path_buf(),
                found: self.format.clone(),
                expected: CLIENT_FORMAT,
            });
        }
        if self.expected_hash() != self.model_hash {
            return Err(corrupt(format!(
                "its content does not match its model hash {}",
                self.model_hash
            )));
        }
        params::check(&self.needs, &self.params)
            .map_err(|e| corrupt(format!("its parameters do not serve its model: {e}")))?;
        self.encoder
            .check()
            .map_err(|e| corrupt(format!("its encoder: {e}")))?;
        if self.features.len() != self.encoder.quantizers.len() {
            return Err(corrupt(format!(
                "{} feature names for {} quantized features",
                self.features.len(),
                self.encoder.quantizers.len()
            )));
        }
        let n_inputs = self.encoder.n_inputs();
        if self.input_bits.len() != n_inputs || self.needs.inputs != n_inputs {
            return Err(corrupt(format!(
                "the encoder gives {n_inputs} inputs, the bundle encrypts {}",
                self.input_bits.len()
            )));
        }
        let outputs = self.decoder.scales.len();
        if self.output_bits.len() != outputs
            || self.output_ranges.len() != outputs
            || self.decoder.zero_points.len() != outputs
            || self.needs.output_count != outputs
        {
            return Err(corrupt(format!(
                "the decoder reads {outputs} outputs, the bundle decrypts {}",
                self.output_bits.len()
            )));
        }
        if let Some(b) = self
            .input_bits
            .iter()
            .chain(&self.output_bits)
            .find(|&&b| !(1..=63).contains(&b))
        {
            return Err(corrupt(format!("a value of {b} bits")));
        }
        Ok(())
    }
}

impl ServerBundle {
    /// Sets the program digest and the model hashes to the ones this
    /// content gives (see [`ClientBundle::seal`]).
    pub fn seal(&mut self) {
        self.client.program_digest = program_digest(&self.program);
        self.client.seal();
        self.model_hash = self.client.model_hash.clone();
    }

    /// The bundle as JSON (what [`write()`] puts in `server.json`).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a bundle always serializes")
    }

    /// Parses a server bundle and checks it: format, hashes, that the
    /// program analyzes, that its client part is this program's and that
    /// the parameters serve it.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<(Self, Analysis), BundleError> {
        let bundle: ServerBundle = parse(bytes, path, "server", SERVER_FORMAT)?;
        let corrupt = |message: String| BundleError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        bundle.client.check(path)?;
        if bundle.model_hash != bundle.client.model_hash
            || program_digest(&bundle.program) != bundle.client.program_digest
        {
            return Err(corrupt(format!(
                "its program does not match its model hash {}",
                bundle.model_hash
            )));
        }
        let analysis = bundle
            .program
            .analyze()
            .map_err(|e| corrupt(format!("its program does not analyze: {e}")))?;
        let expected = from_parts(
            Identity {
                name: &bundle.client.name,
                family: bundle.client.family,
                features: &bundle.client.features,
            },
            &bundle.program,
            &analysis,
            &bundle.client.encoder,
            &bundle.client.decoder,
            &bundle.client.params,
        );
        if expected.client != bundle.client {
            return Err(corrupt(
                "its client part does not describe its program (widths, ranges or needs differ)"
                    .into(),
            ));
        }
        Ok((bundle, analysis))
    }
}

/// Reads a bundle file through the size bound, then the format first, so
/// that a foreign file says what it is.
fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    kind: &'static str,
    expected: &'static str,
) -> Result<T, BundleError> {
    let parse_error = |message: String| BundleError::Parse {
        path: path.to_path_buf(),
        kind,
        message,
    };
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    #[derive(Deserialize)]
    struct Tag {
        format: Option<String>,
    }
    let tag: Tag = serde_json::from_slice(bytes).map_err(|e| parse_error(e.to_string()))?;
    match tag.format {
        Some(f) if f == expected => {}
        Some(found) => {
            return Err(BundleError::Version {
                path: path.to_path_buf(),
                found,
                expected,
            })
        }
        None => return Err(parse_error("no `format` field".into())),
    }
    serde_json::from_slice(bytes).map_err(|e| parse_error(e.to_string()))
}

/// Reads a file of at most [`MAX_BUNDLE_BYTES`]; a directory reads `file`
/// inside it.
fn read(path: &Path, file: &str) -> Result<(PathBuf, Vec<u8>), BundleError> {
    let path = if path.is_dir() {
        path.join(file)
    } else {
        path.to_path_buf()
    };
    let io = |e: std::io::Error| BundleError::Io {
        path: path.clone(),
        message: format!("cannot read: {e}"),
    };
    let f = std::fs::File::open(&path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        return Err(BundleError::TooLarge {
            path,
            size,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    Ok((path, bytes))
}

fn program_digest(program: &Program) -> String {
    hex(&Sha256::digest(
        serde_json::to_vec(program).expect("a program always serializes"),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A model's client side, from its client bundle: quantizes and encrypts
/// inputs, decrypts and decodes outputs. Holds no secret: keys are
/// generated and kept by the caller.
#[derive(Debug, Clone)]
pub struct Client {
    bundle: ClientBundle,
}

impl Client {
    /// Loads a client bundle: a `client.json` file or a directory holding
    /// one.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BundleError> {
        let (path, bytes) = read(path.as_ref(), CLIENT_FILE)?;
        Self::from_json(&bytes, &path)
    }

    /// A client from a client bundle's bytes (as a server hands them out);
    /// `origin` names them in errors.
    pub fn from_json(bytes: &[u8], origin: &Path) -> Result<Self, BundleError> {
        Ok(Self {
            bundle: ClientBundle::from_json(bytes, origin)?,
        })
    }

    /// The bundle.
    pub fn bundle(&self) -> &ClientBundle {
        &self.bundle
    }

    /// The model hash.
    pub fn model_hash(&self) -> &str {
        &self.bundle.model_hash
    }

    /// Checks that a server's model (by its hash) is this client's.
    pub fn check_server(&self, server_model_hash: &str) -> Result<(), BundleError> {
        if server_model_hash == self.bundle.model_hash {
            Ok(())
        } else {
            Err(BundleError::Mismatch {
                client_name: self.bundle.name.clone(),
                client_hash: self.bundle.model_hash.clone(),
                server_hash: server_model_hash.into(),
            })
        }
    }

    /// Quantizes one sample into the program's integer inputs.
    pub fn quantize(&self, x: &[f64]) -> Result<Vec<i64>, DataError> {
        self.bundle.encoder.encode(x)
    }

    /// Decodes the program's integer outputs into a prediction.
    pub fn decode(&self, out: &[i64]) -> Prediction {
        let d = &self.bundle.decoder;
        d.predict(d.scores(out))
    }
}

#[cfg(feature = "fhe")]
impl Client {
    /// Generates a client key for the bundle's parameters (secret: it
    /// stays with the client; send its
    /// [`compressed_evaluation_keys`](crate::backend::tfhe::ClientKey::compressed_evaluation_keys)).
    pub fn keygen(&self) -> crate::backend::tfhe::ClientKey {
        crate::backend::tfhe::ClientKey::generate(&self.bundle.params)
    }

    /// Quantizes and encrypts one sample.
    pub fn encrypt(
        &self,
        key: &crate::backend::tfhe::ClientKey,
        x: &[f64],
    ) -> Result<crate::backend::tfhe::EncryptedInput, crate::Error> {
        self.check_key(key)?;
        let q = self.quantize(x)?;
        Ok(key.encrypt(&q, &self.bundle.input_bits)?)
    }

    /// Decrypts and decodes a server's output.
    pub fn decrypt(
        &self,
        key: &crate::backend::tfhe::ClientKey,
        output: &crate::backend::tfhe::EncryptedOutput,
    ) -> Result<Prediction, crate::Error> {
        self.check_key(key)?;
        let out = key.decrypt(output, &self.bundle.output_ranges, &self.bundle.output_bits)?;
        Ok(self.decode(&out))
    }

    fn check_key(&self, key: &crate::backend::tfhe::ClientKey) -> Result<(), crate::FheError> {
        if key.params() == &self.bundle.params {
            Ok(())
        } else {
            Err(crate::FheError::Mismatch(format!(
                "the client key was made for other parameters than model `{}`'s",
                self.bundle.name
            )))
        }
    }
}

/// A model's server side, from its server bundle: runs the program on
/// encrypted inputs with a client's evaluation keys.
#[derive(Debug, Clone)]
pub struct Server {
    bundle: ServerBundle,
    analysis: Analysis,
}

impl Server {
    /// Loads a server bundle: a `server.json` file or a directory holding
    /// one.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BundleError> {
        let (path, bytes) = read(path.as_ref(), SERVER_FILE)?;
        Self::from_json(&bytes, &path)
    }

    /// A server from a server bundle's bytes; `origin` names them in
    /// errors.
    pub fn from_json(bytes: &[u8], origin: &Path) -> Result<Self, BundleError> {
        let (bundle, analysis) = ServerBundle::from_json(bytes, origin)?;
        Ok(Self { bundle, analysis })
    }

    /// The bundle.
    pub fn bundle(&self) -> &ServerBundle {
        &self.bundle
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.bundle.client.name
    }

    /// The model hash.
    pub fn model_hash(&self) -> &str {
        &self.bundle.model_hash
    }

    /// The client bundle to hand to clients.
    pub fn client_bundle(&self) -> &ClientBundle {
        &self.bundle.client
    }

    /// The integer program.
    pub fn program(&self) -> &Program {
        &self.bundle.program
    }

    /// The program's analysis.
    pub fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    /// The crypto parameters of the model.
    pub fn params(&self) -> &FheParams {
        &self.bundle.client.params
    }
}

#[cfg(feature = "fhe")]
impl Server {
    /// Runs the model on one encrypted sample with a client's evaluation
    /// keys (which must have been made for this model's parameters).
    pub fn run(
        &self,
        keys: &crate::backend::tfhe::EvaluationKeys,
        input: &crate::backend::tfhe::EncryptedInput,
    ) -> Result<crate::backend::tfhe::EncryptedOutput, crate::FheError> {
        if keys.params() != self.params() {
            return Err(crate::FheError::Mismatch(format!(
                "the evaluation keys were made for other parameters than model `{}`'s",
                self.name()
            )));
        }
        keys.run(&self.bundle.program, input)
    }
}

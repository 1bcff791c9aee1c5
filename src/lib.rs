//! # cml — encrypted inference for trained ML models
//!
//! A client encrypts its features, a server that never sees them runs the
//! model on the ciphertexts, and only the client can decrypt the prediction.
//! This facade re-exports [`cml_runtime`] and adds the [`report`] used by the
//! `cml` command-line tool.
//!
//! ```no_run
//! use cml::{CompiledModel, Mode, ModelSpec};
//! use cml::models::CompileOptions;
//!
//! let loaded = ModelSpec::load("specs/breast_cancer_logreg.yaml")?;
//! let model = CompiledModel::compile(&loaded.spec, &CompileOptions::default())?;
//! let x = ndarray::Array2::<f64>::zeros((1, model.n_features()));
//! let clear = model.predict(x.view(), Mode::Clear)?;
//! let fhe = model.predict(x.view(), Mode::Execute)?; // keygen, encrypt, run, decrypt
//! assert_eq!(clear, fhe);
//! # Ok::<(), cml::Error>(())
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod report;

pub use cml_macros::fhe_model;
pub use cml_runtime::*;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The deployment guide's example (docs/deployment.md), compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/deployment.md")]
pub struct DeployDoctests;

//! # cml-runtime
//!
//! Turns a trained model described by a spec into an integer program and runs
//! it three ways: in clear (exact integers), simulated (the same integers, no
//! cryptography) and executed under real TFHE (feature `fhe`, on by default).
//!
//! The pipeline: [`spec`] (YAML AST and checks) → [`quant`] (uniform
//! quantization) → [`models`] (lowering each model family to a
//! [`program::Program`]) → [`params`] (crypto parameters from the program's
//! bit-widths and noise) → runners in [`backend`].
//!
//! Without the `fhe` feature the crate builds without `tfhe`, which is how the
//! `fhe_model!` proc macro uses it.
#![warn(missing_docs)]

pub mod backend;
pub mod batch;
pub mod bundle;
pub mod cost;
pub mod data;
pub mod embed;
pub mod encoding;
pub mod error;
pub mod import;
pub mod metrics;
pub mod models;
pub mod noise;
pub mod params;
pub mod program;
pub mod quant;
pub mod spec;

pub use error::{DataError, Error, FheError, ImportError, ProgramError, Result, SpecError};
pub use models::{CompiledModel, Mode, Prediction};
pub use ndarray;
pub use params::{FheParams, PFail};
pub use spec::ModelSpec;

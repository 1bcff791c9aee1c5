//! # cml-serve
//!
//! Serving cml models to remote clients, kept out of `cml-runtime` so that
//! the runtime stays free of storage, async and HTTP: the HTTP server of
//! `cml serve` ([`http`]), the durable, content-addressed store of
//! evaluation keys it keeps ([`store`]), the memory-bounded cache of
//! decompressed keys ([`cache`]), its counters ([`metrics`]), and the
//! client that talks to it ([`client`]). The model
//! bundles it serves are `cml_runtime::bundle`, and the batches of
//! ciphertexts in its bodies `cml_runtime::batch`.
#![warn(missing_docs)]

pub mod cache;
pub mod client;
pub mod http;
pub mod metrics;
pub mod store;

//! # cml-serve
//!
//! Serving cml models to remote clients, kept out of `cml-runtime` so that
//! the runtime stays free of storage, async and HTTP. Today it holds the
//! durable, content-addressed store of evaluation keys ([`store`]) that the
//! HTTP server (`cml serve`, issue #13) builds on; the model bundles it
//! serves are `cml_runtime::bundle`.
#![warn(missing_docs)]

pub mod store;

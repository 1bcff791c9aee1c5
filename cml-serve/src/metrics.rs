//! Counters of a running server, rendered in Prometheus' text format at
//! `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by `(route, status)`, and their total seconds by route.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    seconds: Mutex<BTreeMap<String, f64>>,
    /// Encrypted samples predicted.
    pub predictions: AtomicU64,
    /// Bootstraps executed.
    pub pbs: AtomicU64,
    /// Evaluation keys found decompressed in the cache.
    pub cache_hits: AtomicU64,
    /// Evaluation keys read from the store and decompressed.
    pub cache_misses: AtomicU64,
    /// Predict requests running or waiting for a worker.
    pub queue_depth: AtomicU64,
    /// Predict requests refused with 503 because the queue was full.
    pub rejected: AtomicU64,
}

impl Metrics {
    /// Counts one request on `route` (its pattern, not its path) that
    /// answered `status` after `seconds`.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route.to_owned(), status)).or_default() += 1;
        drop(requests);
        let mut total = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        *total.entry(route.to_owned()).or_default() += seconds;
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self, cache_bytes: u64, cached_keys: usize) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        out.push_str("# HELP cml_requests_total HTTP requests by route and status.\n# TYPE cml_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for ((route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "cml_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
            *counts.entry(route).or_default() += n;
        }
        out.push_str("# HELP cml_request_seconds Time spent answering requests, by route.\n# TYPE cml_request_seconds summary\n");
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        for (route, s) in seconds.iter() {
            let n = counts.get(route.as_str()).copied().unwrap_or(0);
            let _ = writeln!(out, "cml_request_seconds_sum{{route=\"{route}\"}} {s}");
            let _ = writeln!(out, "cml_request_seconds_count{{route=\"{route}\"}} {n}");
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "cml_predictions_total",
            "counter",
            "Encrypted samples predicted.",
            load(&self.predictions),
        );
        gauge(
            &mut out,
            "cml_pbs_total",
            "counter",
            "Programmable bootstraps executed.",
            load(&self.pbs),
        );
        gauge(
            &mut out,
            "cml_key_cache_hits_total",
            "counter",
            "Evaluation keys found decompressed in memory.",
            load(&self.cache_hits),
        );
        gauge(
            &mut out,
            "cml_key_cache_misses_total",
            "counter",
            "Evaluation keys read from the store and decompressed.",
            load(&self.cache_misses),
        );
        gauge(
            &mut out,
            "cml_key_cache_bytes",
            "gauge",
            "Estimated bytes of decompressed keys in memory.",
            cache_bytes,
        );
        gauge(
            &mut out,
            "cml_key_cache_keys",
            "gauge",
            "Decompressed keys in memory.",
            cached_keys as u64,
        );
        gauge(
            &mut out,
            "cml_queue_depth",
            "gauge",
            "Predict requests running or waiting for a worker.",
            load(&self.queue_depth),
        );
        gauge(
            &mut out,
            "cml_rejected_total",
            "counter",
            "Predict requests refused because the queue was full.",
            load(&self.rejected),
        );
        out
    }
}

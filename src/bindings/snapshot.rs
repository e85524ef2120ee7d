//! Read-only views of core state for Python: node snapshots and attempts.

use pyo3::prelude::*;

use crate::core::error::Attempt;
use crate::core::node::NodeSnapshot as CoreSnapshot;

/// One node's state at one instant.
#[pyclass(frozen, get_all, module = "scrapy_splash_cluster._core")]
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// The node's URL, password masked.
    pub url: String,
    /// "UP", "GOING DOWN", "DOWN" or "COMING UP".
    pub state: String,
    /// Why the node is in its state.
    pub reason: String,
    /// Seconds in that state.
    pub since: f64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Requests in flight at most.
    pub maxconn: usize,
    /// Relative share of the load.
    pub weight: u32,
    /// Attempts sent.
    pub requests: u64,
    /// Answers by class: {"2xx": n, "3xx": n, "4xx": n, "5xx": n}.
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Attempts failed by the node's fault.
    pub failures: u64,
    /// 504 GlobalTimeoutError answers.
    pub render_timeouts: u64,
    /// 498 ExpiredArguments answers (saved arguments the node had lost).
    pub expired_args: u64,
    /// Attempts here that were retries.
    pub retries: u64,
    /// Retries that came from another node.
    pub redispatches: u64,
    /// Attempts abandoned when the node went DOWN.
    pub abandoned: u64,
    /// Times the node went DOWN.
    pub downs: u64,
    /// Times it came back UP.
    pub ups: u64,
    /// Whether the last probe passed; None before the first.
    pub last_probe_ok: Option<bool>,
    /// The last probe's status or error.
    pub last_probe_detail: Option<String>,
    /// The last probe's latency in seconds.
    pub last_probe_latency: Option<f64>,
    /// Seconds since the last probe ended.
    pub last_probe_age: Option<f64>,
    /// Why the node drains (`operator`, `maxrss`, `dns`); empty if it does not.
    pub drain: Vec<String>,
    /// The peak RSS its last probe reported, bytes.
    pub peak_rss: Option<u64>,
    /// Its `--maxrss` in bytes, if known.
    pub maxrss: Option<u64>,
}

impl From<CoreSnapshot> for NodeSnapshot {
    fn from(s: CoreSnapshot) -> Self {
        let classes = ["2xx", "3xx", "4xx", "5xx"];
        let probe = s.last_probe.as_ref();
        Self {
            url: s.url,
            state: s.state.to_owned(),
            reason: s.reason,
            since: s.since.as_secs_f64(),
            in_flight: s.in_flight,
            maxconn: s.maxconn,
            weight: s.weight,
            requests: s.counters.requests,
            responses: classes
                .iter()
                .zip(s.counters.responses)
                .map(|(k, v)| ((*k).to_owned(), v))
                .collect(),
            failures: s.counters.failures,
            render_timeouts: s.counters.render_timeouts,
            expired_args: s.counters.expired_args,
            retries: s.counters.retries,
            redispatches: s.counters.redispatches,
            abandoned: s.counters.abandoned,
            downs: s.counters.downs,
            ups: s.counters.ups,
            last_probe_ok: probe.map(|p| p.ok),
            last_probe_detail: probe.map(|p| p.detail.clone()),
            last_probe_latency: probe.map(|p| p.latency.as_secs_f64()),
            last_probe_age: probe.map(|p| p.age.as_secs_f64()),
            drain: s.drain.iter().map(|c| (*c).to_owned()).collect(),
            peak_rss: s.peak_rss,
            maxrss: s.maxrss,
        }
    }
}

#[pymethods]
impl NodeSnapshot {
    fn __repr__(&self) -> String {
        format!(
            "<NodeSnapshot {} {} {}/{} in flight, {} requests, {} failures>",
            self.url, self.state, self.in_flight, self.maxconn, self.requests, self.failures
        )
    }
}

/// Attempts as Python sees them: (node, outcome, seconds) tuples.
pub fn attempts_to_py(attempts: &[Attempt]) -> Vec<(String, String, f64)> {
    attempts
        .iter()
        .map(|a| {
            (
                a.node.clone(),
                a.outcome.to_string(),
                a.elapsed.as_secs_f64(),
            )
        })
        .collect()
}

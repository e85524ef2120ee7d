//! Active health checks: every `health_interval`, each node gets a `GET` of
//! `health_path` (Splash's `/_ping`), bounded by `health_timeout`.
//!
//! One task per node, so that a frozen node (it accepts connections and never
//! answers) delays only its own probes. `/_ping` proves the process is alive
//! and its event loop turns, not that a slot is free: load is the pool's
//! business, from the requests in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::health::{Phase, ProbeResult};
use super::outcome::classify;
use super::pool::Pool;
use super::transport::Transport;

/// How the probes run.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// Time between two probes of a node that is UP with no failed probe.
    pub interval: Duration,
    /// Time between two probes of a node going down, DOWN or coming up.
    pub fast_interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// The probed path.
    pub path: String,
}

/// Starts one probe task per node on the current runtime; they end when
/// `stop` turns true or its sender is dropped.
pub fn spawn_probes<T: Transport>(
    pool: &Pool,
    transport: &Arc<T>,
    settings: &ProbeSettings,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    (0..pool.specs().len())
        .map(|node| {
            let task = probe_node(
                pool.clone(),
                Arc::clone(transport),
                settings.clone(),
                stop.clone(),
                node,
            );
            tokio::spawn(task)
        })
        .collect()
}

async fn probe_node<T: Transport>(
    pool: Pool,
    transport: Arc<T>,
    settings: ProbeSettings,
    mut stop: watch::Receiver<bool>,
    node: usize,
) {
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let started = Instant::now();
        if !pool.probes_here() {
            // A fleet probes its nodes once, from the elected process; this
            // one follows the verdicts, ready to take over.
            next = started + settings.fast_interval;
            continue;
        }
        let endpoint = &pool.specs()[node].endpoint;
        let probe =
            tokio::time::timeout(settings.timeout, transport.probe(endpoint, &settings.path));
        let result = tokio::select! {
            result = probe => result,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let (ok, detail) = match result {
            Ok(Ok(status)) if (200..300).contains(&status) => (true, format!("{status}")),
            Ok(Ok(status)) => (false, format!("probe answered {status}")),
            Ok(Err(error)) => (false, classify(&Err(error)).to_string()),
            Err(_) => (
                false,
                format!(
                    "probe timed out after {:.1}s",
                    settings.timeout.as_secs_f64()
                ),
            ),
        };
        let now = Instant::now();
        pool.record_probe(
            node,
            ProbeResult {
                ok,
                detail,
                latency: now.saturating_duration_since(started),
                at: now,
            },
        );
        // HAProxy's fastinter: a node on its way down, DOWN, or on its way
        // back is probed more often, so that it leaves and returns sooner
        // (measured in docs/benchmarks.md: a 2 s cycle kept a recovered node
        // idle for up to 4 s). A probe of /_ping costs the node nothing.
        let pause = if pool.phase(node) == Phase::Up {
            settings.interval
        } else {
            settings.fast_interval
        };
        next = (started + pause).max(Instant::now());
    }
}

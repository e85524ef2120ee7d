//! Active health checks: every `health_interval`, each node gets a `GET` of
//! `health_path` (Splash's `/_ping`), bounded by `health_timeout`.
//!
//! One task per node, so that a frozen node (it accepts connections and never
//! answers) delays only its own probes. `/_ping` proves the process is alive
//! and its event loop turns, not that a slot is free: load is the pool's
//! business, from the requests in flight. Its answer also carries the
//! node's peak RSS (`{"status": "ok", "maxrss": <bytes>}`), which drains a
//! node about to exit at its `--maxrss` (see [`super::drain`]).

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
    (0..pool.node_count())
        .map(|node| spawn_probe(pool, transport, settings, stop, node))
        .collect()
}

/// Starts the probe task of one node (one found by DNS while running).
pub fn spawn_probe<T: Transport>(
    pool: &Pool,
    transport: &Arc<T>,
    settings: &ProbeSettings,
    stop: &watch::Receiver<bool>,
    node: usize,
) -> JoinHandle<()> {
    tokio::spawn(probe_node(
        pool.clone(),
        Arc::clone(transport),
        settings.clone(),
        stop.clone(),
        node,
    ))
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
        if pool.is_forgotten(node) {
            // Gone from DNS and idle: probed again if its address returns.
            next = started + settings.interval;
            continue;
        }
        if !pool.probes_here() && !pool.is_joining(node) {
            // A fleet probes its nodes once, from the elected process; this
            // one follows the verdicts, ready to take over. A node that
            // joined from DNS is probed here until it is UP: the fleet's
            // silence about it says nothing yet.
            next = started + settings.fast_interval;
            continue;
        }
        let spec = pool.spec(node);
        let probe = tokio::time::timeout(
            settings.timeout,
            transport.probe(&spec.endpoint, &settings.path),
        );
        let result = tokio::select! {
            result = probe => result,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let mut peak_rss = None;
        let (ok, detail) = match result {
            Ok(Ok(answer)) if (200..300).contains(&answer.status) => {
                peak_rss = peak_rss_of(&answer.body);
                (true, format!("{}", answer.status))
            }
            Ok(Ok(answer)) => (false, format!("probe answered {}", answer.status)),
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
        if let Some(peak) = peak_rss {
            pool.record_rss(node, peak);
        }
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

/// The peak RSS in bytes that Splash's `/_ping` reports, if the answer is
/// Splash's JSON with a whole non-negative `maxrss` (other health paths, or
/// a proxy's answer, carry none, and then nothing is drained).
pub fn peak_rss_of(body: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let maxrss = value.get("maxrss")?;
    maxrss.as_u64().or_else(|| {
        maxrss
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::peak_rss_of;

    #[test]
    fn the_peak_rss_is_read_from_splash_ping() {
        assert_eq!(
            peak_rss_of(br#"{"status": "ok", "maxrss": 230461440}"#),
            Some(230_461_440)
        );
        assert_eq!(peak_rss_of(br#"{"maxrss": 1.5e9}"#), Some(1_500_000_000));
        for body in [
            &br#"{"status": "ok"}"#[..],
            br#"{"maxrss": -1}"#,
            br#"{"maxrss": "big"}"#,
            b"<html>ok</html>",
            b"",
            br#"[1, 2]"#,
        ] {
            assert_eq!(peak_rss_of(body), None, "{body:?}");
        }
    }
}

//! One node's live state: its load, its health and its counters, and the
//! snapshot of it that users see.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::NodeSpec;
use super::drain::Drain;
use super::health::{Blame, Health, Phase};
use super::outcome::Outcome;

/// Counters of what happened on one node since the cluster started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Attempts sent to the node.
    pub requests: u64,
    /// HTTP answers by class: 1xx-2xx, 3xx, 4xx, 5xx.
    pub responses: [u64; 4],
    /// Attempts that failed by the node's fault.
    pub failures: u64,
    /// 504 GlobalTimeoutError answers.
    pub render_timeouts: u64,
    /// 498 ExpiredArguments answers: the node had lost saved arguments.
    pub expired_args: u64,
    /// Attempts on this node that were retries of a request.
    pub retries: u64,
    /// Retries that came here from another node.
    pub redispatches: u64,
    /// Attempts given up because the node was marked DOWN.
    pub abandoned: u64,
    /// Times the node went DOWN.
    pub downs: u64,
    /// Times the node came back UP.
    pub ups: u64,
}

impl NodeCounters {
    /// Counts one attempt's outcome.
    pub fn count(&mut self, outcome: &Outcome, status: Option<u16>) {
        if let Some(status) = status {
            let class = match status {
                0..=299 => 0,
                300..=399 => 1,
                400..=499 => 2,
                _ => 3,
            };
            self.responses[class] += 1;
        }
        match outcome {
            Outcome::RenderTimeout => self.render_timeouts += 1,
            Outcome::ExpiredArguments => self.expired_args += 1,
            Outcome::Abandoned => self.abandoned += 1,
            _ if matches!(outcome.action().blame, Blame::Failure | Blame::Fatal) => {
                self.failures += 1
            }
            _ => {}
        }
    }
}

/// The state of one node, kept under the pool's lock.
#[derive(Debug)]
pub struct NodeState {
    /// Where it is and what it takes (shared with the leases on it).
    pub spec: Arc<NodeSpec>,
    /// Bumped when the node goes DOWN, so attempts in flight on it give up.
    pub down_signal: watch::Sender<u64>,
    /// Requests in flight on the node now.
    pub in_flight: usize,
    /// Of those, requests that a node died under before (suspects of a
    /// query of death): at most one at a time.
    pub suspects_in_flight: usize,
    /// UP or DOWN, and why.
    pub health: Health,
    /// Whether it must start no new render, and why.
    pub drain: Drain,
    /// The peak RSS its last probe reported (Splash's `/_ping`), bytes.
    pub peak_rss: Option<u64>,
    /// What happened so far.
    pub counters: NodeCounters,
}

impl NodeState {
    /// A fresh node, UP.
    pub fn new(spec: NodeSpec, now: Instant) -> Self {
        Self::with_health(spec, Health::new(now))
    }

    /// A node in this health.
    pub fn with_health(spec: NodeSpec, health: Health) -> Self {
        Self {
            spec: Arc::new(spec),
            down_signal: watch::channel(0).0,
            in_flight: 0,
            suspects_in_flight: 0,
            health,
            drain: Drain::default(),
            peak_rss: None,
            counters: NodeCounters::default(),
        }
    }

    /// Whether the node left DNS and has nothing in flight: no longer
    /// shown nor probed.
    pub fn is_forgotten(&self) -> bool {
        self.in_flight == 0 && self.drain.has(super::drain::DrainCause::Vanished)
    }

    /// Whether new renders may start on the node: UP and not draining.
    pub fn takes_renders(&self) -> bool {
        self.health.is_up() && !self.drain.is_draining()
    }
}

/// The last probe, as users see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSnapshot {
    /// Whether it passed.
    pub ok: bool,
    /// Its status or error.
    pub detail: String,
    /// How long it took.
    pub latency: Duration,
    /// How long ago it ended.
    pub age: Duration,
}

/// A copy of one node's state at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    /// The node's URL, password masked.
    pub url: String,
    /// UP, GOING DOWN, DOWN, COMING UP or DRAIN.
    pub state: &'static str,
    /// Why it is in its state.
    pub reason: String,
    /// For how long.
    pub since: Duration,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Requests in flight at most.
    pub maxconn: usize,
    /// Relative share of the load.
    pub weight: u32,
    /// Counters.
    pub counters: NodeCounters,
    /// The last probe.
    pub last_probe: Option<ProbeSnapshot>,
    /// Why it drains (`operator`, `maxrss`, `dns`); empty when it does not.
    pub drain: Vec<&'static str>,
    /// The peak RSS its last probe reported, bytes.
    pub peak_rss: Option<u64>,
    /// Its `--maxrss`, bytes, if known.
    pub maxrss: Option<u64>,
}

impl NodeSnapshot {
    /// Takes the snapshot.
    pub fn of(state: &NodeState, now: Instant) -> Self {
        let spec = &state.spec;
        let health = &state.health;
        let drain = &state.drain;
        // A node that cannot be reached shows that first; a reachable one
        // that drains shows DRAIN, with its health after the drain's reason.
        let draining =
            drain.is_draining() && matches!(health.phase(), Phase::Up | Phase::GoingDown);
        let (shown, reason, since) = if draining {
            let since = drain.since().unwrap_or_else(|| health.since());
            let reason = format!("{} (health: {})", drain.reason(), health.reason());
            ("DRAIN", reason, since)
        } else if drain.is_draining() {
            let reason = format!("{}; also {}", health.reason(), drain.reason());
            (health.phase().as_str(), reason, health.since())
        } else {
            (
                health.phase().as_str(),
                health.reason().to_owned(),
                health.since(),
            )
        };
        Self {
            url: spec.endpoint.display().to_owned(),
            state: shown,
            reason,
            since: now.saturating_duration_since(since),
            in_flight: state.in_flight,
            maxconn: spec.maxconn,
            weight: spec.weight,
            counters: state.counters.clone(),
            last_probe: health.last_probe().map(|p| ProbeSnapshot {
                ok: p.ok,
                detail: p.detail.clone(),
                latency: p.latency,
                age: now.saturating_duration_since(p.at),
            }),
            drain: drain.causes().iter().map(|c| c.as_str()).collect(),
            peak_rss: state.peak_rss,
            maxrss: spec.maxrss,
        }
    }

    /// One line for messages: `url STATE in_flight/maxconn (reason)`.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {}/{} in flight ({})",
            self.url, self.state, self.in_flight, self.maxconn, self.reason
        )
    }
}

//! One node's live state: its load, its health and its counters, and the
//! snapshot of it that users see.

use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::AdaptiveLimit;
use super::config::NodeSpec;
use super::health::{Blame, Health};
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

/// The mutable state of one node, kept under the pool's lock.
#[derive(Debug)]
pub struct NodeState {
    /// Requests in flight on the node now.
    pub in_flight: usize,
    /// Of those, requests that a node died under before (suspects of a
    /// query of death): at most one at a time.
    pub suspects_in_flight: usize,
    /// UP or DOWN, and why.
    pub health: Health,
    /// What happened so far.
    pub counters: NodeCounters,
    /// The adaptive limit under maxconn, when it is on.
    pub adaptive: Option<AdaptiveLimit>,
}

impl NodeState {
    /// A fresh node, UP.
    pub fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            suspects_in_flight: 0,
            health: Health::new(now),
            counters: NodeCounters::default(),
            adaptive: None,
        }
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
    /// UP, GOING DOWN, DOWN or COMING UP.
    pub state: &'static str,
    /// Why it is in its state.
    pub reason: String,
    /// For how long.
    pub since: Duration,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Requests in flight at most.
    pub maxconn: usize,
    /// The adaptive limit under maxconn, when it is on.
    pub limit: Option<usize>,
    /// Relative share of the load.
    pub weight: u32,
    /// Counters.
    pub counters: NodeCounters,
    /// The last probe.
    pub last_probe: Option<ProbeSnapshot>,
}

impl NodeSnapshot {
    /// Takes the snapshot.
    pub fn of(spec: &NodeSpec, state: &NodeState, now: Instant) -> Self {
        let health = &state.health;
        Self {
            url: spec.endpoint.display().to_owned(),
            state: health.phase().as_str(),
            reason: health.reason().to_owned(),
            since: now.saturating_duration_since(health.since()),
            in_flight: state.in_flight,
            maxconn: spec.maxconn,
            limit: state.adaptive.as_ref().map(AdaptiveLimit::limit),
            weight: spec.weight,
            counters: state.counters.clone(),
            last_probe: health.last_probe().map(|p| ProbeSnapshot {
                ok: p.ok,
                detail: p.detail.clone(),
                latency: p.latency,
                age: now.saturating_duration_since(p.at),
            }),
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

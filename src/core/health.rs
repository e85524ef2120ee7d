//! The health state machine of one node, with no I/O and no clock of its own.
//!
//! HAProxy's model, which Splash operators know: a node is UP or DOWN; active
//! probes take it DOWN after `fall` failures in a row and back UP after `rise`
//! successes in a row. Two passive rules are ours, because they are where
//! HAProxy loses requests:
//! - a refused connection on a real request is proof that nothing listens,
//!   so the node goes DOWN at once (HAProxy's leastconn keeps picking a dead
//!   node first, since it looks idle, for `fall * inter`: 16-20 s measured);
//! - other node failures of real requests count, and `error_limit` of them in
//!   a row take the node DOWN; any good answer resets the count.
//!
//! Only probes bring a node back: a DOWN node gets no requests to judge by.

use std::time::Duration;

use tokio::time::Instant;

use super::config::HealthThresholds;

/// UP or DOWN: whether the node gets new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Takes new requests.
    Up,
    /// Takes none until probes bring it back.
    Down,
}

/// The state as an operator reads it, with HAProxy's transitional phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// UP, with no failure pending.
    Up,
    /// UP, but the last probes failed: DOWN after `fall` of them.
    GoingDown,
    /// DOWN, no good probe yet.
    Down,
    /// DOWN, but the last probes passed: UP after `rise` of them.
    ComingUp,
}

impl Phase {
    /// The phase's name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Up => "UP",
            Phase::GoingDown => "GOING DOWN",
            Phase::Down => "DOWN",
            Phase::ComingUp => "COMING UP",
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the node answered the probe with a 2xx.
    pub ok: bool,
    /// What it answered, or why it failed.
    pub detail: String,
    /// How long the probe took.
    pub latency: Duration,
    /// When the probe ended.
    pub at: Instant,
}

/// A change of state, to be logged and acted on by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The node stopped taking requests, for this reason.
    WentDown(String),
    /// The node takes requests again.
    WentUp(String),
}

/// How a real request's attempt reflects on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Says nothing about the node (the website's or the request's fault).
    None,
    /// The node answered as a healthy node does.
    Healthy,
    /// A node failure: counts toward `error_limit`.
    Failure,
    /// Proof that the node is gone (connection refused): DOWN at once.
    Fatal,
}

/// One node's health.
#[derive(Debug, Clone)]
pub struct Health {
    state: State,
    since: Instant,
    reason: String,
    probe_failures: u32,
    probe_successes: u32,
    request_failures: u32,
    last_probe: Option<ProbeResult>,
    /// Found by DNS while running and not UP yet: only this process's own
    /// probes bring it UP, never the fleet's silence about it (the fleet
    /// has no verdict for a node its prober may not have probed yet).
    joining: bool,
}

impl Health {
    /// A node starts UP, as in HAProxy, so a crawl starts at once; a node
    /// that is not there is found by the first refused connection or probe.
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Up,
            since: now,
            reason: "up since the cluster started".to_owned(),
            probe_failures: 0,
            probe_successes: 0,
            request_failures: 0,
            last_probe: None,
            joining: false,
        }
    }

    /// A node found by DNS while the crawl runs: DOWN until its probes
    /// pass, so a replica still starting gets no render.
    pub fn joining(now: Instant) -> Self {
        Self {
            state: State::Down,
            reason: "new address in DNS, waiting for its probes".to_owned(),
            joining: true,
            ..Self::new(now)
        }
    }

    /// Whether the node joined from DNS and no probe of this process has
    /// brought it UP yet: such a node is probed here even in a fleet whose
    /// prober is another process.
    pub fn is_joining(&self) -> bool {
        self.joining
    }

    /// UP or DOWN.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether new requests may go to the node.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// The phase, for display.
    pub fn phase(&self) -> Phase {
        match (self.state, self.probe_failures, self.probe_successes) {
            (State::Up, 0, _) => Phase::Up,
            (State::Up, _, _) => Phase::GoingDown,
            (State::Down, _, 0) => Phase::Down,
            (State::Down, _, _) => Phase::ComingUp,
        }
    }

    /// Since when the node is in its state.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Why the node is in its state.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The last probe, if any ran.
    pub fn last_probe(&self) -> Option<&ProbeResult> {
        self.last_probe.as_ref()
    }

    /// Applies one probe result.
    pub fn on_probe(&mut self, probe: ProbeResult, limits: HealthThresholds) -> Option<Transition> {
        let ok = probe.ok;
        let detail = probe.detail.clone();
        let at = probe.at;
        self.last_probe = Some(probe);
        if ok {
            self.probe_failures = 0;
            self.probe_successes = self.probe_successes.saturating_add(1);
            if self.state == State::Down && self.probe_successes >= limits.rise {
                let reason = format!("{} good probes in a row ({detail})", self.probe_successes);
                return Some(self.enter(State::Up, reason, at));
            }
        } else {
            self.probe_successes = 0;
            self.probe_failures = self.probe_failures.saturating_add(1);
            if self.state == State::Up && self.probe_failures >= limits.fall {
                let reason = format!("{} failed probes in a row: {detail}", self.probe_failures);
                return Some(self.enter(State::Down, reason, at));
            }
        }
        None
    }

    /// Applies what a real request's attempt said about the node.
    pub fn on_attempt(
        &mut self,
        blame: Blame,
        detail: &str,
        limits: HealthThresholds,
        now: Instant,
    ) -> Option<Transition> {
        match blame {
            Blame::None => None,
            Blame::Healthy => {
                self.request_failures = 0;
                None
            }
            Blame::Failure => {
                self.request_failures = self.request_failures.saturating_add(1);
                if self.state == State::Up && self.request_failures >= limits.error_limit {
                    let reason = format!(
                        "{} node failures in a row on requests, the last: {detail}",
                        self.request_failures
                    );
                    return Some(self.enter(State::Down, reason, now));
                }
                None
            }
            Blame::Fatal if self.state == State::Up => {
                Some(self.enter(State::Down, detail.to_owned(), now))
            }
            Blame::Fatal => None,
        }
    }

    /// Takes the fleet's verdict (shared mode, a process that does not run
    /// the probes): DOWN with its reason, or UP; a change only when it
    /// differs from this process's view.
    pub fn follow(&mut self, down: Option<&str>, now: Instant) -> Option<Transition> {
        match (self.state, down) {
            (State::Up, Some(reason)) => {
                Some(self.enter(State::Down, format!("DOWN for the fleet: {reason}"), now))
            }
            (State::Down, None) if !self.joining => {
                Some(self.enter(State::Up, "UP for the fleet".to_owned(), now))
            }
            _ => None,
        }
    }

    fn enter(&mut self, state: State, reason: String, now: Instant) -> Transition {
        self.state = state;
        self.joining &= state == State::Down;
        self.since = now;
        self.reason = reason.clone();
        self.probe_failures = 0;
        self.probe_successes = 0;
        self.request_failures = 0;
        match state {
            State::Down => Transition::WentDown(reason),
            State::Up => Transition::WentUp(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HealthThresholds = HealthThresholds {
        fall: 3,
        rise: 2,
        error_limit: 3,
    };

    fn probe(ok: bool, at: Instant) -> ProbeResult {
        ProbeResult {
            ok,
            detail: if ok {
                "200".into()
            } else {
                "connection refused".into()
            },
            latency: Duration::from_millis(1),
            at,
        }
    }

    #[test]
    fn a_joining_node_is_up_by_its_own_probes_never_by_the_fleets_silence() {
        // The fleet has no verdict for an address its prober may not have
        // probed yet: no verdict must not mean UP for it.
        let now = Instant::now();
        let mut h = Health::joining(now);
        assert!(h.is_joining());
        assert_eq!(h.follow(None, now), None);
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.on_probe(probe(true, now), LIMITS), None);
        assert!(matches!(
            h.on_probe(probe(true, now), LIMITS),
            Some(Transition::WentUp(_))
        ));
        assert!(!h.is_joining());
        // From then on it follows the fleet, both ways.
        assert!(matches!(
            h.follow(Some("refused"), now),
            Some(Transition::WentDown(_))
        ));
        assert!(matches!(h.follow(None, now), Some(Transition::WentUp(_))));
    }

    #[test]
    fn fall_failed_probes_take_it_down_and_rise_good_ones_bring_it_back() {
        let now = Instant::now();
        let mut h = Health::new(now);
        assert_eq!(h.on_probe(probe(false, now), LIMITS), None);
        assert_eq!(h.phase(), Phase::GoingDown);
        assert_eq!(h.on_probe(probe(false, now), LIMITS), None);
        let t = h.on_probe(probe(false, now), LIMITS);
        assert!(matches!(t, Some(Transition::WentDown(ref r)) if r.contains("3 failed probes")));
        assert_eq!(h.phase(), Phase::Down);
        assert_eq!(h.on_probe(probe(true, now), LIMITS), None);
        assert_eq!(h.phase(), Phase::ComingUp);
        assert!(matches!(
            h.on_probe(probe(true, now), LIMITS),
            Some(Transition::WentUp(_))
        ));
        assert_eq!(h.phase(), Phase::Up);
    }

    #[test]
    fn a_good_probe_resets_the_failure_count() {
        let now = Instant::now();
        let mut h = Health::new(now);
        for _ in 0..10 {
            h.on_probe(probe(false, now), LIMITS);
            h.on_probe(probe(false, now), LIMITS);
            h.on_probe(probe(true, now), LIMITS);
        }
        assert!(h.is_up());
    }

    #[test]
    fn refused_connection_is_fatal_at_once() {
        let now = Instant::now();
        let mut h = Health::new(now);
        let t = h.on_attempt(Blame::Fatal, "connection refused", LIMITS, now);
        assert_eq!(t, Some(Transition::WentDown("connection refused".into())));
        assert_eq!(h.on_attempt(Blame::Fatal, "again", LIMITS, now), None);
        assert_eq!(h.reason(), "connection refused");
    }

    #[test]
    fn error_limit_failures_in_a_row_take_it_down_and_successes_reset() {
        let now = Instant::now();
        let mut h = Health::new(now);
        h.on_attempt(Blame::Failure, "reset", LIMITS, now);
        h.on_attempt(Blame::Failure, "reset", LIMITS, now);
        h.on_attempt(Blame::Healthy, "200", LIMITS, now);
        h.on_attempt(Blame::Failure, "reset", LIMITS, now);
        h.on_attempt(Blame::None, "502 RenderError", LIMITS, now);
        h.on_attempt(Blame::Failure, "reset", LIMITS, now);
        assert!(h.is_up());
        assert!(h.on_attempt(Blame::Failure, "reset", LIMITS, now).is_some());
        assert!(!h.is_up());
    }

    #[test]
    fn requests_never_bring_a_node_back() {
        let now = Instant::now();
        let mut h = Health::new(now);
        h.on_attempt(Blame::Fatal, "refused", LIMITS, now);
        for _ in 0..5 {
            assert_eq!(h.on_attempt(Blame::Healthy, "200", LIMITS, now), None);
        }
        assert!(!h.is_up());
    }
}

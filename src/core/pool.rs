//! The pool: every node's load and health under one lock, the selection
//! policy and the admission queue, and the [`Lease`] a request holds while it
//! occupies a slot on a node.
//!
//! Accounting is exact by construction (tower's `PendingRequests` handle): a
//! slot is taken only when a `Lease` is made and given back only when it is
//! dropped, so success, failure, timeout and cancellation of the Python
//! future all free the slot with no code of their own.
//!
//! The lock is a plain mutex held for microseconds and never across an
//! `.await`. Nothing is logged while it is held: logging goes to Python and
//! takes the GIL, and a Python thread may be waiting on this lock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use super::adaptive::{AdaptiveLimit, Change, Sample};
use super::admission::{AdmissionQueue, Tried};
use super::config::{HealthThresholds, NodeSpec};
use super::drain::{Drain, DrainCause, DrainChange, RssOverLimit};
use super::fleet::{FleetCandidate, FleetError, FleetLimit, FleetNode, LeaseId, Taken};
use super::fleet_slots::{FleetReport, FleetSlots, SlotAccounting};
use super::health::{Health, Phase, ProbeResult, Transition};
use super::node::{NodeSnapshot, NodeState};
use super::outcome::Outcome;
use super::selection::{Candidate, SelectionPolicy};

/// Why no lease was had.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquireError {
    /// The deadline passed while waiting; the nodes' states then.
    TimedOut {
        /// How long the request waited.
        waited: Duration,
        /// Every node at the moment of giving up.
        nodes: Vec<NodeSnapshot>,
    },
    /// The cluster was closed.
    Closed,
}

/// Queue-wide figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests waiting now.
    pub waiting: usize,
    /// How long the oldest has waited.
    pub oldest_wait: Duration,
    /// Requests that had to wait since the start.
    pub waits: u64,
    /// Requests that gave up waiting.
    pub timeouts: u64,
}

struct State {
    nodes: Vec<NodeState>,
    policy: Box<dyn SelectionPolicy>,
    queue: AdmissionQueue<Lease>,
    waits: u64,
    queue_timeouts: u64,
    closed: bool,
    /// Whether nodes get an adaptive limit (new ones too).
    adaptive: bool,
    /// Whether this process decided the fleet's adaptive limits at the last
    /// renewal (it runs the fleet's probes): one that takes over starts
    /// from the fleet's limits, not from its own.
    decides_fleet_limits: bool,
}

struct Shared {
    thresholds: HealthThresholds,
    /// Where slots are counted: here, or across a fleet in Redis.
    accounting: SlotAccounting,
    /// Rung when a request starts waiting, for the fleet queue's server.
    queued: Notify,
    state: Mutex<State>,
}

impl Shared {
    /// The fleet, when its slots are counted in Redis now (not in fallback).
    fn shared_fleet(&self) -> Option<&Arc<FleetSlots>> {
        match &self.accounting {
            SlotAccounting::Fleet(fleet) if !fleet.in_fallback() => Some(fleet),
            _ => None,
        }
    }

    /// The renders this process may have in flight on a node: its maxconn,
    /// or in fallback its share of it.
    fn maxconn(&self, state: &State, node: usize) -> usize {
        match &self.accounting {
            SlotAccounting::Local => state.nodes[node].spec.maxconn,
            SlotAccounting::Fleet(fleet) => fleet.local_maxconn(node),
        }
    }
}

/// The nodes, their load and health, and the queue of waiting requests.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

/// A slot on one node, held for the length of one attempt.
pub struct Lease {
    shared: Arc<Shared>,
    node: usize,
    spec: Arc<NodeSpec>,
    /// Subscribed when the slot was taken, under the pool's lock, so that a
    /// node marked DOWN at any moment after that is seen by the attempt.
    down: watch::Receiver<u64>,
    /// Whether the request is a suspect of killing nodes.
    suspect: bool,
    /// The lease in the fleet's Redis, when slots are counted there.
    fleet_lease: Option<LeaseId>,
    /// The node's DOWN count when the lease was taken.
    life: u64,
    /// How many times the fleet lease passed to a waiter of this process
    /// without going back to Redis.
    handoffs: usize,
    armed: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.node)
    }
}

impl Lease {
    /// The node's index.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The node.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Resolves when the node is marked DOWN after the lease was taken.
    pub fn down_signal(&self) -> watch::Receiver<u64> {
        self.down.clone()
    }

    /// The node's life when the lease was taken: how many times it had gone
    /// DOWN before (so that one death is told from the next).
    pub fn life(&self) -> u64 {
        self.life
    }

    /// Gives the slot back by hand, for the one place that holds the lock.
    fn disarm(mut self, state: &mut State) {
        self.armed = false;
        self.give_back(state);
    }

    fn give_back(&mut self, state: &mut State) {
        let node = &mut state.nodes[self.node];
        node.in_flight -= 1;
        if self.suspect {
            node.suspects_in_flight -= 1;
        }
        if let (Some(lease), SlotAccounting::Fleet(fleet)) =
            (self.fleet_lease.take(), &self.shared.accounting)
        {
            fleet.release(self.node, lease);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            let shared = Arc::clone(&self.shared);
            let mut state = lock(&shared.state);
            if self.hand_over(&mut state) {
                return;
            }
            self.give_back(&mut state);
            dispatch(&shared, &mut state);
        }
    }
}

impl Lease {
    /// In shared mode, passes the fleet lease straight to this process's
    /// oldest waiter that may use the node, instead of giving it back to
    /// Redis for every process to race for: no Redis call, and no herd of
    /// processes woken for one slot (measured: 7.8 Redis calls per request
    /// with 4 crawlers, each with a backlog, before). At most as many times
    /// in a row as the fleet has processes, then the slot goes back to the
    /// fleet, so that a busy process cannot keep a node from the others.
    fn hand_over(&mut self, state: &mut State) -> bool {
        let Some(fleet) = self.shared.shared_fleet() else {
            return false;
        };
        let node = self.node;
        if self.fleet_lease.is_none()
            || !fleet.heard_recently()
            || self.handoffs >= fleet.processes().max(1)
            || !state.nodes[node].takes_renders()
        {
            return false;
        }
        loop {
            // Other suspects than this lease's own rule a suspect out.
            let other_suspects = state.nodes[node].suspects_in_flight - usize::from(self.suspect);
            let position = state.queue.iter().position(|w| {
                !(w.tried.contains(node) || w.tried.is_suspect() && other_suspects > 0)
            });
            let Some(position) = position else {
                break;
            };
            let waiter = state.queue.take(position).expect("position exists");
            let suspect = waiter.tried.is_suspect();
            let counts = &mut state.nodes[node];
            if self.suspect {
                counts.suspects_in_flight -= 1;
            }
            if suspect {
                counts.suspects_in_flight += 1;
            }
            let next = Lease {
                shared: Arc::clone(&self.shared),
                node,
                spec: Arc::clone(&self.spec),
                down: state.nodes[node].down_signal.subscribe(),
                suspect,
                fleet_lease: self.fleet_lease.take(),
                life: *state.nodes[node].down_signal.borrow(),
                handoffs: self.handoffs + 1,
                armed: true,
            };
            self.armed = false;
            match waiter.grant.send(next) {
                Ok(()) => return true,
                // Cancelled a moment ago: the lease comes back for the next.
                Err(mut back) => {
                    back.armed = false;
                    self.fleet_lease = back.fleet_lease.take();
                    self.suspect = back.suspect;
                    self.armed = true;
                }
            }
        }
        false
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code under this lock panics on purpose; if a bug did, the counts are
    // still the best information there is, so go on rather than poison every
    // later request.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn candidates(shared: &Shared, state: &State, tried: &Tried) -> Vec<Candidate> {
    state
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Candidate {
            in_flight: node.in_flight,
            maxconn: cap(shared, state, i),
            weight: node.spec.weight,
            up: node.takes_renders(),
            tried: tried.contains(i),
            preferred: tried.prefers(i),
            excluded: tried.is_suspect() && node.suspects_in_flight > 0,
        })
        .collect()
}

/// Takes a slot for a request on the node the policy picks, if any.
fn take_slot(shared: &Arc<Shared>, state: &mut State, tried: &Tried) -> Option<Lease> {
    let candidates = candidates(shared, state, tried);
    let node = state.policy.select(&candidates)?;
    debug_assert!(
        candidates[node].has_free_slot(),
        "policy chose a full or DOWN node"
    );
    let suspect = tried.is_suspect();
    let taken = &mut state.nodes[node];
    taken.in_flight += 1;
    if suspect {
        taken.suspects_in_flight += 1;
    }
    // In fallback (Redis unreachable) the lease is counted here by share,
    // and registered in Redis when it answers again.
    let fleet_lease = match &shared.accounting {
        SlotAccounting::Fleet(fleet) => Some(fleet.hold_locally(node)),
        SlotAccounting::Local => None,
    };
    let taken = &state.nodes[node];
    Some(Lease {
        shared: Arc::clone(shared),
        node,
        spec: Arc::clone(&taken.spec),
        down: taken.down_signal.subscribe(),
        suspect,
        fleet_lease,
        life: *taken.down_signal.borrow(),
        handoffs: 0,
        armed: true,
    })
}

/// The renders this process may start on a node: its maxconn (or fleet
/// share), lowered by the node's adaptive limit when that is on.
fn cap(shared: &Shared, state: &State, index: usize) -> usize {
    let maxconn = shared.maxconn(state, index);
    let Some(limit) = state.nodes[index]
        .adaptive
        .as_ref()
        .map(AdaptiveLimit::limit)
    else {
        return maxconn;
    };
    match &shared.accounting {
        // In fallback, as with maxconn: this process's share of the
        // fleet's limit (the shares add up to it).
        SlotAccounting::Fleet(fleet) if fleet.in_fallback() => fleet.share_of(limit).min(maxconn),
        _ => limit.min(maxconn),
    }
}

/// What the fleet's slot script may choose from: the nodes UP in this
/// process's view (which follows the fleet's verdicts) that the request
/// may use.
fn fleet_candidates(shared: &Shared, state: &State, tried: &Tried) -> Vec<FleetCandidate> {
    candidates(shared, state, tried)
        .iter()
        .enumerate()
        .filter(|(_, c)| c.up && !c.excluded)
        .map(|(node, c)| FleetCandidate {
            node,
            tried: c.tried,
            preferred: c.preferred,
        })
        .collect()
}

/// A lease for a slot the fleet's script granted.
fn lease_from_fleet(shared: &Arc<Shared>, state: &mut State, taken: Taken, tried: &Tried) -> Lease {
    let suspect = tried.is_suspect();
    let node = &mut state.nodes[taken.node];
    node.in_flight += 1;
    if suspect {
        node.suspects_in_flight += 1;
    }
    let node = &state.nodes[taken.node];
    Lease {
        shared: Arc::clone(shared),
        node: taken.node,
        spec: Arc::clone(&node.spec),
        down: node.down_signal.subscribe(),
        suspect,
        fleet_lease: Some(taken.lease),
        life: *node.down_signal.borrow(),
        handoffs: 0,
        armed: true,
    }
}

/// Hands free slots to waiters, oldest first, for as long as there are both.
/// A waiter that cannot take any free slot (a suspect, where every free node
/// runs a suspect already) is passed over, not allowed to block the rest.
fn dispatch(shared: &Arc<Shared>, state: &mut State) {
    if shared.shared_fleet().is_some() {
        // The fleet's slots are taken in Redis: the queue's server does it.
        shared.queued.notify_one();
        return;
    }
    let mut position = 0;
    while position < state.queue.len() && any_free_slot(shared, state) {
        let Some(tried) = state.queue.iter().nth(position).map(|w| w.tried.clone()) else {
            break;
        };
        let Some(lease) = take_slot(shared, state, &tried) else {
            position += 1;
            continue;
        };
        let waiter = state.queue.take(position).expect("position exists");
        if let Err(lease) = waiter.grant.send(lease) {
            // The waiter was cancelled a moment ago; its slot goes to the next.
            lease.disarm(state);
        }
    }
}

/// Whether any node takes renders and is below its cap.
fn any_free_slot(shared: &Shared, state: &State) -> bool {
    state
        .nodes
        .iter()
        .enumerate()
        .any(|(i, node)| node.takes_renders() && node.in_flight < cap(shared, state, i))
}

fn snapshots(state: &State, now: Instant) -> Vec<NodeSnapshot> {
    state
        .nodes
        .iter()
        .filter(|node| !node.is_forgotten())
        .map(|node| NodeSnapshot::of(node, now))
        .collect()
}

/// How often the fleet queue's head tries again with no announcement.
const FLEET_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Takes a waiter out of the queue if its request is dropped while waiting.
struct WaiterGuard<'a> {
    pool: &'a Pool,
    id: u64,
    armed: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.pool.shared.state).queue.remove(self.id);
        }
    }
}

impl Pool {
    /// A pool of these nodes, all UP, chosen among by `policy`.
    pub fn new(
        specs: Vec<NodeSpec>,
        thresholds: HealthThresholds,
        policy: Box<dyn SelectionPolicy>,
    ) -> Self {
        Self::with_accounting(specs, thresholds, policy, SlotAccounting::Local)
    }

    /// A pool whose slots are counted as `accounting` says.
    pub fn with_accounting(
        specs: Vec<NodeSpec>,
        thresholds: HealthThresholds,
        policy: Box<dyn SelectionPolicy>,
        accounting: SlotAccounting,
    ) -> Self {
        let now = Instant::now();
        let nodes = specs
            .into_iter()
            .map(|spec| NodeState::new(spec, now))
            .collect();
        Self {
            shared: Arc::new(Shared {
                thresholds,
                accounting,
                queued: Notify::new(),
                state: Mutex::new(State {
                    nodes,
                    policy,
                    queue: AdmissionQueue::default(),
                    waits: 0,
                    queue_timeouts: 0,
                    closed: false,
                    adaptive: false,
                    decides_fleet_limits: false,
                }),
            }),
        }
    }

    /// The nodes, in the order they joined.
    pub fn specs(&self) -> Vec<Arc<NodeSpec>> {
        lock(&self.shared.state)
            .nodes
            .iter()
            .map(|n| Arc::clone(&n.spec))
            .collect()
    }

    /// One node's spec.
    pub fn spec(&self, node: usize) -> Arc<NodeSpec> {
        Arc::clone(&lock(&self.shared.state).nodes[node].spec)
    }

    /// How many nodes the pool has (forgotten ones included: indices stay).
    pub fn node_count(&self) -> usize {
        lock(&self.shared.state).nodes.len()
    }

    /// A slot on the best node for a request that already tried `tried`,
    /// waiting in the admission queue until `deadline` if every node is full
    /// or DOWN. Dropping the future while it waits leaves no trace.
    pub async fn acquire(&self, tried: &Tried, deadline: Instant) -> Result<Lease, AcquireError> {
        let started = Instant::now();
        if let Some(fleet) = self.shared.shared_fleet() {
            if let Some(outcome) = self
                .acquire_from_fleet(fleet, tried, started, deadline)
                .await
            {
                return outcome;
            }
            // Redis did not answer: fallback, counted here from now on.
        }
        let (id, grant) = {
            let mut state = lock(&self.shared.state);
            if state.closed {
                return Err(AcquireError::Closed);
            }
            let retry = !tried.is_empty();
            // Nobody overtakes the queue, except retries, which go to its front.
            if state.queue.is_empty() || retry {
                if let Some(lease) = take_slot(&self.shared, &mut state, tried) {
                    return Ok(lease);
                }
            }
            state.waits += 1;
            let waiter = state.queue.push(tried.clone(), retry, started);
            // The waiters ahead may be suspects that cannot take the slot
            // that is free; then this request takes it now.
            dispatch(&self.shared, &mut state);
            waiter
        };
        self.wait_for_grant(id, grant, started, deadline).await
    }

    /// The shared-mode acquire: one script call when nobody waits ahead (or
    /// for a retry), else a place in the local queue, whose head the queue's
    /// server serves as releases are announced. None when Redis failed and
    /// the pool fell back to local counting.
    async fn acquire_from_fleet(
        &self,
        fleet: &Arc<FleetSlots>,
        tried: &Tried,
        started: Instant,
        deadline: Instant,
    ) -> Option<Result<Lease, AcquireError>> {
        let retry = !tried.is_empty();
        let candidates = {
            let state = lock(&self.shared.state);
            if state.closed {
                return Some(Err(AcquireError::Closed));
            }
            (state.queue.is_empty() || retry).then(|| fleet_candidates(&self.shared, &state, tried))
        };
        if let Some(candidates) = candidates {
            match fleet.take(&candidates).await {
                Ok(Some(taken)) => {
                    let mut state = lock(&self.shared.state);
                    return Some(Ok(lease_from_fleet(&self.shared, &mut state, taken, tried)));
                }
                Ok(None) => {}
                Err(error) => {
                    self.fall_back(fleet, &error.to_string());
                    return None;
                }
            }
        }
        let (id, grant) = {
            let mut state = lock(&self.shared.state);
            state.waits += 1;
            state.queue.push(tried.clone(), retry, started)
        };
        self.shared.queued.notify_one();
        Some(self.wait_for_grant(id, grant, started, deadline).await)
    }

    async fn wait_for_grant(
        &self,
        id: u64,
        mut grant: oneshot::Receiver<Lease>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Lease, AcquireError> {
        let mut guard = WaiterGuard {
            pool: self,
            id,
            armed: true,
        };
        let granted = tokio::time::timeout_at(deadline, &mut grant).await;
        guard.armed = false;
        match granted {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(AcquireError::Closed),
            Err(_) => {
                let mut state = lock(&self.shared.state);
                if state.queue.remove(id) {
                    state.queue_timeouts += 1;
                    let now = Instant::now();
                    return Err(AcquireError::TimedOut {
                        waited: now.saturating_duration_since(started),
                        nodes: snapshots(&state, now),
                    });
                }
                drop(state);
                // Granted in the instant the deadline passed: use it.
                grant.try_recv().map_err(|_| AcquireError::Closed)
            }
        }
    }

    /// Enters fallback after Redis failed: one WARNING, and the waiters are
    /// served from the local shares at once.
    pub fn fall_back(&self, fleet: &FleetSlots, why: &str) {
        if let Some((rank, processes)) = fleet.enter_fallback() {
            tracing::warn!(
                target: "scrapy_splash_cluster::fleet",
                "Redis does not answer ({why}): counting Splash slots in this process, by its \
                 share of each node's maxconn (rank {} of {processes} processes), until it does",
                rank + 1
            );
        }
        let mut state = lock(&self.shared.state);
        // In fallback each process decides its limits for its share, where
        // they can only fall (a share is never full); back in shared mode
        // the prober starts again from the fleet's, not from those.
        state.decides_fleet_limits = false;
        dispatch(&self.shared, &mut state);
    }

    /// Serves the head of the admission queue from the fleet, in shared
    /// mode: tries again whenever a release or verdict is announced, a
    /// request starts waiting, and every 100 ms (a lost announcement must
    /// never strand a request). Ends when `stop` turns true.
    pub async fn serve_fleet_queue(self, fleet: Arc<FleetSlots>, mut stop: watch::Receiver<bool>) {
        let wake = Arc::clone(&fleet.wake);
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = self.shared.queued.notified() => {}
                _ = tokio::time::sleep(FLEET_RETRY) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            loop {
                if fleet.in_fallback() {
                    break; // the local dispatch serves the queue meanwhile
                }
                let head = {
                    let state = lock(&self.shared.state);
                    if state.closed {
                        return;
                    }
                    state.queue.front().map(|w| {
                        (
                            w.id,
                            w.tried.clone(),
                            fleet_candidates(&self.shared, &state, &w.tried),
                        )
                    })
                };
                let Some((id, tried, candidates)) = head else {
                    break;
                };
                match fleet.take(&candidates).await {
                    Ok(Some(taken)) => {
                        let mut state = lock(&self.shared.state);
                        let lease = lease_from_fleet(&self.shared, &mut state, taken, &tried);
                        let position = state.queue.iter().position(|w| w.id == id);
                        match position.and_then(|p| state.queue.take(p)) {
                            Some(waiter) => {
                                if let Err(lease) = waiter.grant.send(lease) {
                                    lease.disarm(&mut state);
                                }
                            }
                            // Gave up (timeout, cancel) while the script ran.
                            None => lease.disarm(&mut state),
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.fall_back(&fleet, &error.to_string());
                        break;
                    }
                }
            }
        }
    }

    /// Takes the fleet's verdicts into this process's view of its nodes. A
    /// process that does not run the probes follows them both ways; the
    /// prober takes only DOWNs (its own probes bring a node back, and an UP
    /// it reads may predate the DOWN it just published).
    pub fn follow_fleet(&self, verdicts: &[Option<String>], up_too: bool) {
        let now = Instant::now();
        for (node, verdict) in verdicts.iter().enumerate() {
            if verdict.is_none() && !up_too {
                continue;
            }
            let transition = {
                let mut state = lock(&self.shared.state);
                let transition = state.nodes[node].health.follow(verdict.as_deref(), now);
                self.apply(&mut state, node, transition.as_ref(), false);
                transition
            };
            self.log(node, transition.as_ref());
        }
    }

    /// The fleet, for the stats page, when slots are shared.
    pub fn fleet_report(&self) -> Option<FleetReport> {
        match &self.shared.accounting {
            SlotAccounting::Local => None,
            SlotAccounting::Fleet(fleet) => Some(fleet.report()),
        }
    }

    /// Whether this process runs the active probes: always alone, in a fleet
    /// only the elected prober (and everyone in fallback).
    pub fn probes_here(&self) -> bool {
        match &self.shared.accounting {
            SlotAccounting::Local => true,
            SlotAccounting::Fleet(fleet) => fleet.in_fallback() || fleet.leading(),
        }
    }

    /// Records what an attempt said about its node; returns the change of
    /// state it caused, already acted on (in-flight attempts told to leave a
    /// node gone DOWN).
    pub fn record_attempt(
        &self,
        node: usize,
        outcome: &Outcome,
        status: Option<u16>,
        retry_from: Option<usize>,
    ) -> Option<Transition> {
        let now = Instant::now();
        let transition = {
            let mut state = lock(&self.shared.state);
            let n = &mut state.nodes[node];
            n.counters.count(outcome, status);
            if let Some(previous) = retry_from {
                n.counters.retries += 1;
                if previous != node {
                    n.counters.redispatches += 1;
                }
            }
            let transition = n.health.on_attempt(
                outcome.action().blame,
                &outcome.to_string(),
                self.shared.thresholds,
                now,
            );
            self.apply(&mut state, node, transition.as_ref(), true);
            transition
        };
        self.log(node, transition.as_ref());
        transition
    }

    /// Turns on the adaptive limit of every node (`adaptive`): each starts
    /// at 1 and finds its capacity under its maxconn.
    pub fn adapt_limits(&self) {
        let now = Instant::now();
        let mut state = lock(&self.shared.state);
        state.adaptive = true;
        for node in &mut state.nodes {
            node.adaptive = Some(AdaptiveLimit::new(node.spec.maxconn, now));
        }
    }

    /// Feeds a render's latency to its node's adaptive limit (when on),
    /// while the attempt still holds its slot; logs a change at DEBUG. In a
    /// fleet only the process that probes for it decides (it writes the
    /// limit to Redis, the others adopt it at their next renewal); in
    /// fallback each process decides for its share.
    pub fn record_render(&self, node: usize, mut sample: Sample) {
        let fleet = self.shared.shared_fleet();
        if fleet.is_some_and(|fleet| !fleet.leading()) {
            return;
        }
        // Every process's renders count: a render alone here may not be
        // alone on the node, and a node this process fills only in part
        // may be full.
        let fleet_in_flight = fleet.map_or(0, |fleet| fleet.fleet_in_flight(node));
        let (change, decided) = {
            let mut state = lock(&self.shared.state);
            let n = &mut state.nodes[node];
            sample.in_flight = n.in_flight.max(fleet_in_flight);
            let Some(limit) = n.adaptive.as_mut() else {
                return;
            };
            let Some(change) = limit.record(sample) else {
                return;
            };
            let decided = FleetLimit {
                limit: limit.limit(),
                best: limit.best(),
            };
            if change.to > change.from {
                dispatch(&self.shared, &mut state);
            }
            (change, decided)
        };
        if let Some(fleet) = fleet {
            fleet.write_limit(node, decided);
        }
        self.log_limit(node, &change);
    }

    /// Takes the fleet's adaptive limits, as the last renewal read them.
    /// A process that does not probe for the fleet adopts them; one that
    /// just took over the probes starts from them; the one that decides
    /// writes its own again where the fleet lacks them or holds others (a
    /// write that failed, a Redis that restarted empty).
    pub fn follow_fleet_limits(
        &self,
        fleet: &FleetSlots,
        limits: &[Option<FleetLimit>],
        leading: bool,
    ) {
        let now = Instant::now();
        let mut changes = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            if !state.adaptive {
                return;
            }
            let took_over = leading && !state.decides_fleet_limits;
            state.decides_fleet_limits = leading;
            for (node, held) in limits.iter().enumerate().take(state.nodes.len()) {
                let Some(own) = state.nodes[node].adaptive.as_mut() else {
                    continue;
                };
                let mine = FleetLimit {
                    limit: own.limit(),
                    best: own.best(),
                };
                match held {
                    Some(held) if !leading || took_over => {
                        if let Some(change) = own.adopt(held.limit, held.best, now) {
                            changes.push((node, change));
                        }
                    }
                    _ if leading && held.as_ref() != Some(&mine) => fleet.write_limit(node, mine),
                    _ => {}
                }
            }
            if changes.iter().any(|(_, c)| c.to > c.from) {
                dispatch(&self.shared, &mut state);
            }
        }
        for (node, change) in &changes {
            self.log_limit(*node, change);
        }
    }

    fn log_limit(&self, node: usize, change: &Change) {
        let spec = self.spec(node);
        tracing::debug!(
            target: "scrapy_splash_cluster::adaptive",
            "Splash node {} limit {} -> {} (of maxconn {}): {}",
            spec.endpoint.display(),
            change.from,
            change.to,
            spec.maxconn,
            change.why
        );
    }

    /// Records that an attempt is being sent (after the lease, before I/O).
    pub fn record_sent(&self, node: usize) {
        lock(&self.shared.state).nodes[node].counters.requests += 1;
    }

    /// Records one probe result.
    pub fn record_probe(&self, node: usize, probe: ProbeResult) -> Option<Transition> {
        let transition = {
            let mut state = lock(&self.shared.state);
            let transition = state.nodes[node]
                .health
                .on_probe(probe, self.shared.thresholds);
            self.apply(&mut state, node, transition.as_ref(), true);
            transition
        };
        self.log(node, transition.as_ref());
        transition
    }

    /// Acts on a change of state; `publish`: this process saw it (a probe,
    /// a request), so in shared mode every process must hear of it.
    fn apply(
        &self,
        state: &mut State,
        node: usize,
        transition: Option<&Transition>,
        publish: bool,
    ) {
        if let (Some(transition), true, Some(fleet)) =
            (transition, publish, self.shared.shared_fleet())
        {
            let verdict = match transition {
                Transition::WentDown(reason) => Some(reason.clone()),
                Transition::WentUp(_) => None,
            };
            let fleet = Arc::clone(fleet);
            tokio::spawn(async move {
                if let Err(error) = fleet.fleet().set_verdict(node, verdict.as_deref()).await {
                    tracing::debug!(
                        target: "scrapy_splash_cluster::fleet",
                        "could not tell the fleet about node {node}: {error}"
                    );
                }
            });
        }
        match transition {
            Some(Transition::WentDown(_)) => {
                state.nodes[node].counters.downs += 1;
                state.nodes[node]
                    .down_signal
                    .send_modify(|epoch| *epoch += 1);
            }
            Some(Transition::WentUp(_)) => {
                state.nodes[node].counters.ups += 1;
                dispatch(&self.shared, state);
            }
            None => {}
        }
    }

    fn log(&self, node: usize, transition: Option<&Transition>) {
        if transition.is_none() {
            return;
        }
        let spec = self.spec(node);
        let url = spec.endpoint.display();
        match transition {
            Some(Transition::WentDown(reason)) => tracing::warn!(
                target: "scrapy_splash_cluster::health",
                "Splash node {url} is DOWN: {reason}"
            ),
            Some(Transition::WentUp(reason)) => tracing::info!(
                target: "scrapy_splash_cluster::health",
                "Splash node {url} is UP again: {reason}"
            ),
            None => {}
        }
    }

    /// Applies a node's peak RSS, as its last probe reported it: past its
    /// `--maxrss` the node drains (it is about to exit), and a reading under
    /// it after that means a new process.
    pub fn record_rss(&self, node: usize, peak: u64) -> Option<DrainChange> {
        let change = {
            let mut state = lock(&self.shared.state);
            state.nodes[node].peak_rss = Some(peak);
            let limit = state.nodes[node].spec.maxrss?;
            let change = state.nodes[node].drain.on_rss(peak, limit, Instant::now());
            self.after_drain(&mut state, change.as_ref());
            // The fleet hears of it at every reading over the limit (the
            // write is a no-op when Redis has it already), and of the end.
            let detail = (peak > limit).then(|| format!("{peak} {limit}"));
            if detail.is_some() || matches!(change, Some(DrainChange::Ended(_))) {
                self.publish_drain(node, DrainCause::MaxRss, detail);
            }
            change
        };
        self.log_drain(node, change.as_ref());
        change
    }

    /// Tells the fleet about one of a node's drains, in the background.
    fn publish_drain(&self, node: usize, cause: DrainCause, detail: Option<String>) {
        let Some(fleet) = self.shared.shared_fleet() else {
            return;
        };
        let fleet = Arc::clone(fleet);
        tokio::spawn(async move {
            if let Err(error) = fleet
                .fleet()
                .set_drain(node, cause, detail.as_deref())
                .await
            {
                tracing::debug!(
                    target: "scrapy_splash_cluster::fleet",
                    "could not tell the fleet about node {node}'s drain: {error}"
                );
            }
        });
    }

    /// Drains (`on`) or readies a node for every process of the fleet, then
    /// here; `Err` when the fleet cannot be told (Redis away: a drain known
    /// only here would be undone by the others' view when Redis returns).
    pub async fn set_operator_drain_everywhere(&self, node: usize, on: bool) -> Result<(), String> {
        match &self.shared.accounting {
            SlotAccounting::Local => {}
            SlotAccounting::Fleet(fleet) => {
                if fleet.in_fallback() {
                    return Err(
                        "Redis does not answer: the fleet cannot be told; try again when it does"
                            .to_owned(),
                    );
                }
                let detail = on.then_some("1");
                fleet
                    .fleet()
                    .set_drain(node, DrainCause::Operator, detail)
                    .await
                    .map_err(|e| format!("the fleet cannot be told ({e}); try again"))?;
            }
        }
        self.set_operator_drain(node, on);
        Ok(())
    }

    /// Takes the fleet's drains into this process's view: an operator's
    /// both ways; the prober's `--maxrss` ones unless this process probes
    /// (its own readings decide, and what it reads may predate its write).
    pub fn follow_fleet_drains(
        &self,
        by_operator: &[bool],
        over_maxrss: &[Option<(u64, u64)>],
        probing: bool,
    ) {
        let nodes = self
            .node_count()
            .min(by_operator.len())
            .min(over_maxrss.len());
        for node in 0..nodes {
            self.set_operator_drain(node, by_operator[node]);
            if !probing {
                let over = over_maxrss[node].map(|(peak, limit)| RssOverLimit { peak, limit });
                self.change_drain(node, |drain, now| drain.follow_maxrss(over, now));
            }
        }
    }

    /// Drains a node (`on`) or makes it ready again, for an operator.
    pub fn set_operator_drain(&self, node: usize, on: bool) -> Option<DrainChange> {
        self.change_drain(node, |drain, now| drain.set_operator(on, now))
    }

    /// Drains a node whose address left DNS (`on`), or lists it again.
    pub fn set_vanished(&self, node: usize, on: bool) -> Option<DrainChange> {
        self.change_drain(node, |drain, now| drain.set_vanished(on, now))
    }

    fn change_drain(
        &self,
        node: usize,
        change: impl FnOnce(&mut Drain, Instant) -> Option<DrainChange>,
    ) -> Option<DrainChange> {
        let change = {
            let mut state = lock(&self.shared.state);
            let change = change(&mut state.nodes[node].drain, Instant::now());
            self.after_drain(&mut state, change.as_ref());
            change
        };
        self.log_drain(node, change.as_ref());
        change
    }

    /// Adds a node (one DNS found while running); its index. An address
    /// that is a node already (listed by URL too, say) is refused: two
    /// entries would each fill it to maxconn.
    pub fn add_node(&self, spec: NodeSpec, health: Health) -> Result<usize, FleetError> {
        let mut state = lock(&self.shared.state);
        let key = spec.endpoint.base_url();
        if state
            .nodes
            .iter()
            .any(|n| n.spec.endpoint.base_url() == key)
        {
            return Err(FleetError::InvalidArgument(format!(
                "{} is a node already",
                spec.endpoint.display()
            )));
        }
        if let SlotAccounting::Fleet(fleet) = &self.shared.accounting {
            // Under the pool's lock, so both give the node the same index.
            let node = fleet.add_node(FleetNode {
                key,
                maxconn: spec.maxconn,
                weight: spec.weight,
            })?;
            if state.adaptive {
                fleet.start_limit(node);
            }
        }
        let mut node = NodeState::with_health(spec, health);
        if state.adaptive {
            node.adaptive = Some(AdaptiveLimit::new(node.spec.maxconn, Instant::now()));
        }
        state.nodes.push(node);
        Ok(state.nodes.len() - 1)
    }

    /// Whether the node joined from DNS and is not UP yet in this process.
    pub fn is_joining(&self, node: usize) -> bool {
        lock(&self.shared.state).nodes[node].health.is_joining()
    }

    /// Whether the node left DNS and has nothing in flight.
    pub fn is_forgotten(&self, node: usize) -> bool {
        lock(&self.shared.state).nodes[node].is_forgotten()
    }

    /// One node's state now.
    pub fn snapshot_of(&self, node: usize) -> NodeSnapshot {
        NodeSnapshot::of(&lock(&self.shared.state).nodes[node], Instant::now())
    }

    fn after_drain(&self, state: &mut State, change: Option<&DrainChange>) {
        if let Some(DrainChange::Ended(_)) = change {
            dispatch(&self.shared, state);
        }
    }

    fn log_drain(&self, node: usize, change: Option<&DrainChange>) {
        if change.is_none() {
            return;
        }
        let spec = self.spec(node);
        let url = spec.endpoint.display();
        match change {
            Some(DrainChange::Started(reason)) => tracing::warn!(
                target: "scrapy_splash_cluster::health",
                "Splash node {url} is DRAIN (no new renders, those in flight finish): {reason}"
            ),
            Some(DrainChange::Ended(reason)) => tracing::info!(
                target: "scrapy_splash_cluster::health",
                "Splash node {url} takes renders again: {reason}"
            ),
            None => {}
        }
    }

    /// One node's phase, now.
    pub fn phase(&self, node: usize) -> Phase {
        lock(&self.shared.state).nodes[node].health.phase()
    }

    /// Every node, now.
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        let state = lock(&self.shared.state);
        snapshots(&state, Instant::now())
    }

    /// The admission queue, now.
    pub fn queue_stats(&self) -> QueueStats {
        let state = lock(&self.shared.state);
        QueueStats {
            waiting: state.queue.len(),
            oldest_wait: state.queue.oldest_wait(Instant::now()),
            waits: state.waits,
            timeouts: state.queue_timeouts,
        }
    }

    /// Refuses new requests; with `abort`, also fails every waiting one.
    pub fn close(&self, abort: bool) {
        let mut state = lock(&self.shared.state);
        state.closed = true;
        if abort {
            state.queue.clear();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::config::NodeEndpoint;
    use crate::core::health::Blame;
    use crate::core::outcome::NodeFailure;
    use crate::core::selection::LeastConn;

    const LIMITS: HealthThresholds = HealthThresholds {
        fall: 3,
        rise: 2,
        error_limit: 3,
    };

    /// A pool of nodes `http://node-I:8050` with these caps, all UP.
    pub(crate) fn pool(maxconns: &[usize]) -> Pool {
        let specs = maxconns
            .iter()
            .enumerate()
            .map(|(i, &maxconn)| NodeSpec {
                endpoint: NodeEndpoint::parse("url", &format!("http://node-{i}:8050")).unwrap(),
                maxconn,
                weight: 1,
                maxrss: None,
            })
            .collect();
        Pool::new(specs, LIMITS, Box::new(LeastConn::new()))
    }

    fn in_flight(pool: &Pool) -> Vec<usize> {
        pool.snapshot().iter().map(|n| n.in_flight).collect()
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn leases_spread_and_give_back_their_slot() {
        let pool = pool(&[2, 2]);
        let a = pool.acquire(&Tried::default(), far()).await.unwrap();
        let b = pool.acquire(&Tried::default(), far()).await.unwrap();
        assert_ne!(a.node(), b.node());
        assert_eq!(in_flight(&pool), vec![1, 1]);
        drop(a);
        drop(b);
        assert_eq!(in_flight(&pool), vec![0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_cluster_queues_fifo_and_times_out_with_node_states() {
        let pool = pool(&[1]);
        let held = pool.acquire(&Tried::default(), far()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = pool.acquire(&Tried::default(), deadline).await.unwrap_err();
        match err {
            AcquireError::TimedOut { waited, nodes } => {
                assert_eq!(waited, Duration::from_secs(5));
                assert_eq!(nodes[0].in_flight, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.queue_stats().timeouts, 1);
        assert_eq!(pool.queue_stats().waiting, 0);
        drop(held);
        assert_eq!(in_flight(&pool), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_oldest_waiter() {
        let pool = pool(&[1]);
        let held = pool.acquire(&Tried::default(), far()).await.unwrap();
        let p1 = pool.clone();
        let first = tokio::spawn(async move {
            let lease = p1.acquire(&Tried::default(), far()).await.unwrap();
            (Instant::now(), lease.node())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let p2 = pool.clone();
        let second = tokio::spawn(async move {
            p2.acquire(&Tried::default(), far())
                .await
                .map(|_| Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.queue_stats().waiting, 2);
        drop(held);
        let (t1, _) = first.await.unwrap();
        let t2 = second.await.unwrap().unwrap();
        assert!(t1 <= t2);
        assert_eq!(in_flight(&pool), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_no_trace() {
        let pool = pool(&[1]);
        let held = pool.acquire(&Tried::default(), far()).await.unwrap();
        let p = pool.clone();
        let waiting =
            tokio::spawn(async move { p.acquire(&Tried::default(), far()).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(pool.queue_stats().waiting, 0);
        drop(held);
        assert_eq!(in_flight(&pool), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_connection_takes_the_node_out_and_signals_its_attempts() {
        let pool = pool(&[5, 5]);
        let a = pool.acquire(&Tried::default(), far()).await.unwrap();
        let node = a.node();
        let signal = a.down_signal();
        let refused = Outcome::NodeFailure(NodeFailure::ConnectionRefused);
        assert_eq!(refused.action().blame, Blame::Fatal);
        let t = pool.record_attempt(node, &refused, None, None);
        assert!(matches!(t, Some(Transition::WentDown(_))));
        assert!(signal.has_changed().unwrap());
        drop(a);
        for _ in 0..10 {
            let lease = pool.acquire(&Tried::default(), far()).await.unwrap();
            assert_ne!(lease.node(), node, "a DOWN node got a request");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_marked_down_right_after_the_lease_still_signals_it() {
        // The attempt subscribes after the lease is made; a DOWN in between
        // must not be missed, or the attempt waits out its whole timeout.
        let pool = pool(&[5, 5]);
        let lease = pool.acquire(&Tried::default(), far()).await.unwrap();
        let refused = Outcome::NodeFailure(NodeFailure::ConnectionRefused);
        pool.record_attempt(lease.node(), &refused, None, None);
        let signal = lease.down_signal();
        assert!(
            signal.has_changed().unwrap(),
            "the DOWN before subscribing was lost"
        );
    }

    fn suspect() -> Tried {
        let mut tried = Tried::default();
        tried.record_node_death(0, 0);
        tried
    }

    #[tokio::test(start_paused = true)]
    async fn suspects_of_killing_nodes_never_share_a_node() {
        let pool = pool(&[5, 5]);
        let a = pool.acquire(&suspect(), far()).await.unwrap();
        let b = pool.acquire(&suspect(), far()).await.unwrap();
        assert_ne!(a.node(), b.node());
        // A third suspect waits although both nodes have free slots...
        let p = pool.clone();
        let third =
            tokio::spawn(async move { p.acquire(&suspect(), far()).await.map(|l| l.node()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.queue_stats().waiting, 1);
        // ...and does not hold up requests that are no suspects behind it.
        let plain = pool.acquire(&Tried::default(), far()).await.unwrap();
        let plain_node = plain.node();
        assert_eq!(pool.queue_stats().waiting, 1);
        let freed = b.node();
        drop(b);
        assert_eq!(third.await.unwrap().unwrap(), freed);
        drop((a, plain));
        assert_eq!(in_flight(&pool), vec![0, 0]);
        assert!(plain_node < 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_suspect_does_not_block_a_new_request_behind_it() {
        let pool = pool(&[2]);
        let held = pool.acquire(&suspect(), far()).await.unwrap();
        let p = pool.clone();
        let _blocked = tokio::spawn(async move { p.acquire(&suspect(), far()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.queue_stats().waiting, 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        let lease = pool.acquire(&Tried::default(), deadline).await;
        assert!(lease.is_ok(), "{lease:?}");
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_waits_until_probes_bring_one_back() {
        let pool = pool(&[1]);
        let refused = Outcome::NodeFailure(NodeFailure::ConnectionRefused);
        pool.record_attempt(0, &refused, None, None);
        let p = pool.clone();
        let waiting =
            tokio::spawn(
                async move { p.acquire(&Tried::default(), far()).await.map(|l| l.node()) },
            );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let good = |at| ProbeResult {
            ok: true,
            detail: "200".into(),
            latency: Duration::from_millis(1),
            at,
        };
        pool.record_probe(0, good(Instant::now()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        assert!(matches!(
            pool.record_probe(0, good(Instant::now())),
            Some(Transition::WentUp(_))
        ));
        assert_eq!(waiting.await.unwrap(), Ok(0));
        assert_eq!(in_flight(&pool), vec![0]);
    }

    #[tokio::test(start_paused = true)]
    async fn close_with_abort_fails_waiters() {
        let pool = pool(&[1]);
        let _held = pool.acquire(&Tried::default(), far()).await.unwrap();
        let p = pool.clone();
        let waiting =
            tokio::spawn(
                async move { p.acquire(&Tried::default(), far()).await.map(|l| l.node()) },
            );
        tokio::time::sleep(Duration::from_millis(10)).await;
        pool.close(true);
        assert_eq!(waiting.await.unwrap(), Err(AcquireError::Closed));
        assert_eq!(
            pool.acquire(&Tried::default(), far()).await.unwrap_err(),
            AcquireError::Closed
        );
    }
}

//! Slot accounting across a fleet of crawler processes: the Redis side of
//! the pool's one seam ([`SlotAccounting`]), between the pool and [`Fleet`].
//!
//! In-process accounting (the default) counts a node's renders in this
//! process only, under the pool's lock. With a fleet, the slot is a lease in
//! Redis, taken by one script that sees every process's renders, so a node
//! gets at most its maxconn however many crawlers share it. What this
//! module keeps on this side: the leases this process holds (renewed in one
//! call per period, given back in batches), whether Redis answers (shared
//! mode) or not (fallback: each process takes its share of every node's
//! maxconn, by rank among the processes it last saw alive, so the shares add
//! up to maxconn), and the last view of the fleet for the stats page.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, Notify};

use super::fleet::{
    Fleet, FleetCandidate, FleetError, FleetLimit, FleetNode, FleetView, LeaseId, Taken,
};

/// Where the pool counts its slots.
pub enum SlotAccounting {
    /// In this process only.
    Local,
    /// Across every process of a fleet, in Redis.
    Fleet(Arc<FleetSlots>),
}

/// The fleet as the stats page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetReport {
    /// Whether slots are counted in Redis now (false: fallback).
    pub shared: bool,
    /// The live processes of the fleet, as last seen.
    pub processes: Vec<String>,
    /// This process.
    pub me: String,
    /// Whether this process runs the fleet's probes.
    pub prober: bool,
    /// Renders in flight per node, every process counted.
    pub in_flight: Vec<usize>,
}

/// What the fleet side hands to the tasks that talk to Redis for it.
pub struct Outboxes {
    /// Leases given back, to release in batches.
    pub releases: mpsc::UnboundedReceiver<(usize, LeaseId)>,
    /// Adaptive limits decided here, to write for the fleet.
    pub limits: mpsc::UnboundedReceiver<LimitWrite>,
}

/// The fleet side of the seam.
pub struct FleetSlots {
    fleet: Fleet,
    /// Per node, in the pool's order (nodes from DNS join at the end).
    maxconns: Mutex<Vec<usize>>,
    /// Leases this process holds, by lease id: renewed together, restored
    /// together when Redis comes back.
    held: Mutex<HashMap<String, usize>>,
    releases: mpsc::UnboundedSender<(usize, LeaseId)>,
    /// The adaptive limits this process decided for the fleet, to write.
    limit_writes: mpsc::UnboundedSender<LimitWrite>,
    /// Rung when a release or a verdict is announced (by any process), and
    /// by this process's own releases: the admission queue's head tries again.
    pub wake: Arc<Notify>,
    fallback: AtomicBool,
    /// Each node's share of its maxconn while in fallback.
    shares: Mutex<Vec<usize>>,
    /// This process's rank among the processes, and their count, as last
    /// seen when it entered fallback.
    rank: Mutex<(usize, usize)>,
    /// The processes seen alive when Redis went away: back in shared mode
    /// once each has registered again (or one lease TTL has passed).
    expected: Mutex<Vec<String>>,
    /// Since when Redis answers again while this process waits for the
    /// others to come back; no new local slot is taken meanwhile.
    recovering_since: Mutex<Option<Instant>>,
    view: Mutex<Option<FleetView>>,
    rotation: AtomicUsize,
    /// Whether this process runs the fleet's probes.
    leading: AtomicBool,
    /// When Redis last answered this process, and for how long after that
    /// its word is taken as current (two renewal periods).
    heard: Mutex<(Instant, Duration)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A node's share of `maxconn` for the process at `rank` of `processes`:
/// the first `maxconn % processes` ranks get one more, so the shares add up
/// to maxconn exactly (a floor of one each would overshoot when processes
/// outnumber slots).
pub fn share(maxconn: usize, processes: usize, rank: usize) -> usize {
    let processes = processes.max(1);
    maxconn / processes + usize::from(rank < maxconn % processes)
}

/// One adaptive limit to write to Redis, by the writer task of `fleet_sync`.
#[derive(Debug, Clone, Copy)]
pub struct LimitWrite {
    /// The node's index.
    pub node: usize,
    /// The limit to hold for it.
    pub limit: FleetLimit,
    /// Only where the fleet holds none for the node yet (Redis `HSETNX`).
    pub only_if_absent: bool,
}

impl FleetSlots {
    /// Wraps a connected fleet; returns the receiving ends of the releases
    /// and limit writes, for the tasks that send them (see `fleet_sync`).
    pub fn new(fleet: Fleet, maxconns: Vec<usize>) -> (Arc<Self>, Outboxes) {
        let (releases, released) = mpsc::unbounded_channel();
        let (limit_writes, limits) = mpsc::unbounded_channel();
        let shares = maxconns.clone();
        let slots = Arc::new(Self {
            fleet,
            maxconns: Mutex::new(maxconns),
            held: Mutex::new(HashMap::new()),
            releases,
            limit_writes,
            wake: Arc::new(Notify::new()),
            fallback: AtomicBool::new(false),
            shares: Mutex::new(shares),
            rank: Mutex::new((0, 1)),
            expected: Mutex::new(Vec::new()),
            recovering_since: Mutex::new(None),
            view: Mutex::new(None),
            rotation: AtomicUsize::new(0),
            leading: AtomicBool::new(false),
            heard: Mutex::new((Instant::now(), Duration::from_secs(1))),
        });
        let outboxes = Outboxes {
            releases: released,
            limits,
        };
        (slots, outboxes)
    }

    /// The fleet connection.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Whether Redis is unreachable and slots are counted locally by share.
    pub fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }

    /// The maxconn this process may use of a node now: all of it in shared
    /// mode (the script enforces it fleet-wide), its share in fallback.
    pub fn local_maxconn(&self, node: usize) -> usize {
        if !self.in_fallback() {
            lock(&self.maxconns)[node]
        } else if lock(&self.recovering_since).is_some() {
            // Redis is back and counts what this process holds; a slot taken
            // here now would be one it does not count.
            0
        } else {
            lock(&self.shares)[node]
        }
    }

    /// This process's share of a fleet-wide count (an adaptive limit) while
    /// in fallback, by the same ranks as the shares of maxconn.
    pub fn share_of(&self, total: usize) -> usize {
        let (rank, processes) = *lock(&self.rank);
        share(total, processes, rank)
    }

    /// A node that joined after connect (from DNS): the fleet learns it,
    /// at the index the pool gives it (the next one).
    pub fn add_node(&self, node: FleetNode) -> Result<usize, FleetError> {
        let maxconn = node.maxconn;
        let index = self.fleet.add_node(node)?;
        lock(&self.maxconns).push(maxconn);
        let share = self.share_of(maxconn);
        lock(&self.shares).push(share);
        Ok(index)
    }

    /// Records that Redis answered.
    pub fn heard_from_redis(&self) {
        lock(&self.heard).0 = Instant::now();
    }

    /// How long Redis's last answer is taken as current.
    pub fn set_freshness(&self, fresh_for: Duration) {
        lock(&self.heard).1 = fresh_for;
    }

    /// Whether Redis answered recently enough that a lease may pass to the
    /// next request without asking it (see the pool's hand-over): a process
    /// whose Redis went silent must stop using slots it cannot renew.
    pub fn heard_recently(&self) -> bool {
        let (at, fresh_for) = *lock(&self.heard);
        at.elapsed() <= fresh_for
    }

    /// Takes a lease through the fleet's script.
    pub async fn take(&self, candidates: &[FleetCandidate]) -> Result<Option<Taken>, FleetError> {
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let taken = self.fleet.take(candidates, start).await?;
        self.heard_from_redis();
        if let Some(taken) = &taken {
            lock(&self.held).insert(taken.lease.0.clone(), taken.node);
        }
        Ok(taken)
    }

    /// Gives a lease back (sent in the background, batched).
    pub fn release(&self, node: usize, lease: LeaseId) {
        lock(&self.held).remove(&lease.0);
        let _ = self.releases.send((node, lease));
        self.wake.notify_waiters();
    }

    /// Writes a node's adaptive limit for the fleet (in the background, in
    /// order; the latest of a burst wins).
    pub fn write_limit(&self, node: usize, limit: FleetLimit) {
        let _ = self.limit_writes.send(LimitWrite {
            node,
            limit,
            only_if_absent: false,
        });
    }

    /// Gives a node that joined while running (DNS) the slow start's limit
    /// in Redis, unless another process gave it one already: without it the
    /// take script would let every process start renders there up to maxconn
    /// before the prober has seen one render alone.
    pub fn start_limit(&self, node: usize) {
        let _ = self.limit_writes.send(LimitWrite {
            node,
            limit: FleetLimit::START,
            only_if_absent: true,
        });
    }

    /// Renders in flight on a node in every process, as last seen.
    pub fn fleet_in_flight(&self, node: usize) -> usize {
        lock(&self.view)
            .as_ref()
            .and_then(|view| view.in_flight.get(node).copied())
            .unwrap_or(0)
    }

    /// Records a lease taken while in fallback (no Redis), so that it is
    /// registered when Redis comes back.
    pub fn hold_locally(&self, node: usize) -> LeaseId {
        let lease = self.fleet.new_lease();
        lock(&self.held).insert(lease.0.clone(), node);
        lease
    }

    /// Every lease held now.
    pub fn held(&self) -> Vec<(usize, LeaseId)> {
        lock(&self.held)
            .iter()
            .map(|(id, &node)| (node, LeaseId(id.clone())))
            .collect()
    }

    /// Enters fallback: shares from the processes last seen alive. Returns
    /// `Some((rank, processes))` when this changed the mode (to log once).
    pub fn enter_fallback(&self) -> Option<(usize, usize)> {
        if self.in_fallback() {
            return None;
        }
        let (processes, rank) = match &*lock(&self.view) {
            Some(view) => {
                *lock(&self.expected) = view.processes.clone();
                let rank = view
                    .processes
                    .iter()
                    .position(|p| *p == view.me)
                    .unwrap_or(0);
                (view.processes.len().max(1), rank)
            }
            None => (1, 0),
        };
        *lock(&self.rank) = (rank, processes);
        *lock(&self.shares) = lock(&self.maxconns)
            .iter()
            .map(|&maxconn| share(maxconn, processes, rank))
            .collect();
        (!self.fallback.swap(true, Ordering::AcqRel)).then_some((rank, processes))
    }

    /// Redis answers again and counts this process's leases: from now on no
    /// new local slot, until every process is back.
    pub fn begin_recovery(&self) {
        lock(&self.recovering_since).get_or_insert_with(Instant::now);
    }

    /// Whether every process seen alive before Redis went away has
    /// registered again (each registers its leases before its heartbeat),
    /// or `patience` has passed (a process that died meanwhile never will).
    pub fn everyone_back(&self, view: &FleetView, patience: Duration) -> bool {
        let waited = lock(&self.recovering_since).map(|since| since.elapsed());
        let all = lock(&self.expected)
            .iter()
            .all(|p| view.processes.contains(p));
        all || waited.is_some_and(|waited| waited >= patience)
    }

    /// Leaves fallback. Returns whether this changed the mode.
    pub fn leave_fallback(&self) -> bool {
        *lock(&self.recovering_since) = None;
        lock(&self.expected).clear();
        let left = self.fallback.swap(false, Ordering::AcqRel);
        self.wake.notify_waiters();
        left
    }

    /// Stores the fleet as the last renewal saw it.
    pub fn set_view(&self, view: FleetView) {
        *lock(&self.view) = Some(view);
    }

    /// The fleet as the last renewal saw it.
    pub fn view(&self) -> Option<FleetView> {
        lock(&self.view).clone()
    }

    /// The fleet now, for the stats page.
    pub fn report(&self) -> FleetReport {
        let me = self.fleet.process_id().to_owned();
        let (processes, in_flight) = match &*lock(&self.view) {
            Some(view) => (view.processes.clone(), view.in_flight.clone()),
            None => (vec![me.clone()], vec![0; lock(&self.maxconns).len()]),
        };
        FleetReport {
            shared: !self.in_fallback(),
            processes,
            me,
            prober: self.leading(),
            in_flight,
        }
    }

    /// The live processes of the fleet, as last seen (1 before any view).
    pub fn processes(&self) -> usize {
        lock(&self.view)
            .as_ref()
            .map_or(1, |view| view.processes.len())
    }

    /// Whether this process runs the fleet's probes now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Records whether this process holds the prober lock.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_maxconn_whatever_the_process_count() {
        for maxconn in 1..12 {
            for processes in 1..20 {
                let total: usize = (0..processes)
                    .map(|rank| share(maxconn, processes, rank))
                    .sum();
                assert_eq!(total, maxconn, "maxconn {maxconn}, {processes} processes");
            }
        }
        // More processes than slots: the first ranks get one each, the rest none.
        assert_eq!(
            (0..5).map(|r| share(3, 5, r)).collect::<Vec<_>>(),
            vec![1, 1, 1, 0, 0]
        );
    }
}

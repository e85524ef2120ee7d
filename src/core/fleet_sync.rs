//! The tasks that keep one crawler process in its fleet: they renew its
//! leases, give back the ones it released, run for the prober lock, follow
//! the fleet's verdicts, and serve the admission queue from Redis.
//!
//! One sync loop per process, every `min(lease_ttl / 3, health_interval)`:
//! one script call renews every lease this process holds and its heartbeat
//! and returns the fleet's view (renders in flight per node, verdicts, live
//! processes); one call keeps or takes the prober lock (held for two probe
//! intervals, so a dead prober's lock passes on within two intervals). A
//! failed call puts the process in fallback (local counting by share); the
//! first call that succeeds again registers the leases it holds and returns
//! it to shared mode, so "back within one renewal period" holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::NodeSpec;
use super::fleet::{Fleet, FleetError, FleetLimit, FleetNode, FleetOptions, LeaseId};
use super::fleet_slots::{FleetSlots, LimitWrite, Outboxes};
use super::pool::Pool;

/// A process connected to its fleet, before its tasks run.
pub struct FleetLink {
    /// The fleet side of the pool's slot accounting.
    pub slots: Arc<FleetSlots>,
    outboxes: Outboxes,
    /// Disagreements with what other processes registered (maxconn,
    /// weight), one line each, for one WARNING at start.
    pub warnings: Vec<String>,
}

/// Connects to the fleet's Redis and registers this process and its nodes.
/// A node is the same node for every process that names the same URL. With
/// `adaptive`, a node the fleet has no adaptive limit for yet gets the
/// start of one (1, slow start); one it has keeps it.
pub async fn connect(
    options: FleetOptions,
    specs: &[NodeSpec],
    adaptive: bool,
) -> Result<FleetLink, FleetError> {
    let nodes = specs
        .iter()
        .map(|spec| FleetNode {
            key: spec.endpoint.base_url().to_owned(),
            maxconn: spec.maxconn,
            weight: spec.weight,
        })
        .collect();
    let options = FleetOptions {
        adaptive,
        ..options
    };
    let (fleet, warnings) = Fleet::connect(options, nodes).await?;
    if adaptive {
        for node in 0..specs.len() {
            fleet.set_limit(node, FleetLimit::START, true).await?;
        }
    }
    let (slots, outboxes) = FleetSlots::new(fleet, specs.iter().map(|s| s.maxconn).collect());
    Ok(FleetLink {
        slots,
        outboxes,
        warnings,
    })
}

/// How often the tasks act.
#[derive(Debug, Clone, Copy)]
pub struct SyncSettings {
    /// Time between two renewals (and lock and verdict checks).
    pub period: Duration,
    /// How long a lease outlives its last renewal.
    pub lease_ttl: Duration,
    /// How long the prober lock is held without renewal.
    pub probe_lock: Duration,
}

impl SyncSettings {
    /// The periods for a lease TTL and a probe interval.
    pub fn new(lease_ttl: Duration, health_interval: Duration) -> Self {
        Self {
            period: (lease_ttl / 3).min(health_interval),
            lease_ttl,
            probe_lock: health_interval * 2,
        }
    }
}

/// Starts the fleet's tasks for this pool; they end when `stop` turns true.
pub fn spawn(
    link: FleetLink,
    pool: &Pool,
    settings: SyncSettings,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let FleetLink {
        slots, outboxes, ..
    } = link;
    slots.set_freshness(settings.period * 2);
    let watcher = slots.fleet().watch(Arc::clone(&slots.wake));
    let mut stop_watcher = stop.clone();
    let queue_pool = pool.clone();
    vec![
        tokio::spawn(send_releases(
            Arc::clone(&slots),
            outboxes.releases,
            stop.clone(),
        )),
        tokio::spawn(send_limits(
            Arc::clone(&slots),
            outboxes.limits,
            stop.clone(),
        )),
        tokio::spawn(keep_in_sync(
            pool.clone(),
            Arc::clone(&slots),
            settings,
            stop.clone(),
        )),
        tokio::spawn(queue_pool.serve_fleet_queue(Arc::clone(&slots), stop.clone())),
        tokio::spawn(async move {
            let _ = stop_watcher.wait_for(|stopped| *stopped).await;
            watcher.abort();
        }),
    ]
}

/// Gives released leases back in batches: whatever queued up while the
/// last call ran goes in the next one. A lease whose release fails expires
/// by its TTL.
async fn send_releases(
    slots: Arc<FleetSlots>,
    mut releases: mpsc::UnboundedReceiver<(usize, LeaseId)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            first = releases.recv() => first,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let mut batch: Vec<(usize, LeaseId)> = first.into_iter().collect();
        while let Ok(more) = releases.try_recv() {
            batch.push(more);
        }
        if !batch.is_empty() {
            match slots.fleet().release(&batch).await {
                Ok(()) => slots.heard_from_redis(),
                Err(error) => tracing::debug!(
                    target: "scrapy_splash_cluster::fleet",
                    "{} leases not given back ({error}); they expire by their TTL",
                    batch.len()
                ),
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Writes the adaptive limits this process decided, in order; of a burst
/// queued while a write ran, only each node's latest. A write that fails is
/// made again by the next renewal (which writes any limit the fleet lacks
/// while this process decides). Ends with the crawl.
async fn send_limits(
    slots: Arc<FleetSlots>,
    mut limits: mpsc::UnboundedReceiver<LimitWrite>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            Some(first) = limits.recv() => first,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        // The latest write per node: a burst of decisions costs one call.
        let mut latest = vec![first];
        while let Ok(write) = limits.try_recv() {
            match latest.iter_mut().find(|w| w.node == write.node) {
                Some(entry) => *entry = write,
                None => latest.push(write),
            }
        }
        for write in latest {
            let fleet = slots.fleet();
            let written = fleet.set_limit(write.node, write.limit, write.only_if_absent);
            if let Err(error) = written.await {
                tracing::debug!(
                    target: "scrapy_splash_cluster::fleet",
                    "adaptive limit not written ({error}); the next renewal writes it"
                );
            }
        }
    }
}

/// Whether Redis counts fewer renders on some node than this process alone
/// holds there: it lost leases (a restart, a failover).
fn lost_leases(held: &[(usize, LeaseId)], fleet_in_flight: &[usize]) -> bool {
    let mut mine = vec![0usize; fleet_in_flight.len()];
    for (node, _) in held {
        if let Some(count) = mine.get_mut(*node) {
            *count += 1;
        }
    }
    mine.iter()
        .zip(fleet_in_flight)
        .any(|(mine, fleet)| mine > fleet)
}

async fn keep_in_sync(
    pool: Pool,
    slots: Arc<FleetSlots>,
    settings: SyncSettings,
    mut stop: watch::Receiver<bool>,
) {
    // The first round at once: the prober is chosen (and the fleet's
    // limits adopted) before the crawl's first renders, not a period in.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(settings.period) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
        first = false;
        let fleet: &Fleet = slots.fleet();
        if slots.in_fallback() {
            // Is Redis back? Register what this process holds first (Redis
            // may have restarted empty), so that its heartbeat below tells
            // the others its leases count again.
            if fleet.restore(&slots.held()).await.is_err() {
                continue;
            }
            slots.begin_recovery();
        }
        let held = slots.held();
        let view = match fleet.renew(&held).await {
            Ok(view) => {
                slots.heard_from_redis();
                view
            }
            Err(error) => {
                pool.fall_back(&slots, &error.to_string());
                continue;
            }
        };
        if slots.in_fallback() {
            // Back to shared counting once every process that was alive has
            // registered its leases again; until then this one takes no new
            // slot (one counted nowhere would put a node above maxconn).
            if slots.everyone_back(&view, settings.lease_ttl) && slots.leave_fallback() {
                tracing::info!(
                    target: "scrapy_splash_cluster::fleet",
                    "Redis answers again: Splash slots are counted across the fleet"
                );
            }
        } else if lost_leases(&held, &view.in_flight) {
            // Redis answers but counts fewer leases than this process holds:
            // it restarted between two calls. A lease released while the
            // renewal ran makes this a false alarm, and the restore then adds
            // nothing (it adds only what is absent); what is held now, not at
            // the renewal, so that a lease released since stays released.
            if let Err(error) = fleet.restore(&slots.held()).await {
                tracing::debug!(target: "scrapy_splash_cluster::fleet", "restore failed: {error}");
            }
        }
        let leading = fleet
            .lead_probes(settings.probe_lock)
            .await
            .unwrap_or(false);
        if leading != slots.leading() {
            tracing::info!(
                target: "scrapy_splash_cluster::fleet",
                "{} the fleet's Splash probes",
                if leading { "this process now runs" } else { "another process runs" }
            );
        }
        slots.set_leading(leading);
        pool.follow_fleet(&view.down, !leading);
        pool.follow_fleet_drains(&view.drained_by_operator, &view.over_maxrss, leading);
        pool.follow_fleet_limits(&slots, &view.limits, leading);
        slots.set_view(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_lost_when_redis_counts_fewer_than_this_process_holds() {
        let lease = |n: usize, id: &str| (n, LeaseId(id.to_owned()));
        let held = vec![lease(0, "a"), lease(0, "b"), lease(1, "c")];
        assert!(!lost_leases(&held, &[2, 5]));
        assert!(lost_leases(&held, &[1, 5]), "Redis forgot one of node 0's");
        assert!(lost_leases(&held, &[0, 0]), "Redis restarted empty");
        assert!(!lost_leases(&[], &[0, 0]));
    }
}

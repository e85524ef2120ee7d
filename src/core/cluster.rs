//! The cluster: a request's life from admission to its answer or its error.
//!
//! Each attempt holds a lease on one node. It ends in one of three ways: the
//! node answers (or fails), the request's deadline passes, or the node is
//! marked DOWN meanwhile (by a probe, or by another request's refused
//! connection), in which case the attempt is abandoned and the request moves
//! on at once instead of waiting out a frozen node. The outcome table says
//! whether to retry; the retry policy says whether a retry is left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::admission::Tried;
use super::config::ClusterConfig;
use super::error::{Attempt, ClusterError};
use super::node::NodeSnapshot;
use super::outcome::{classify, Outcome};
use super::pool::{AcquireError, Pool, QueueStats};
use super::prober::{spawn_probes, ProbeSettings};
use super::retry::RetryPolicy;
use super::selection::SelectionPolicy;
use super::transport::{NodeRequest, NodeResponse, Transport};

/// A node's answer, with where and how it was had.
#[derive(Debug, Clone)]
pub struct ClusterResponse {
    /// The answer.
    pub response: NodeResponse,
    /// The node that gave it (password masked).
    pub node: String,
    /// Every attempt, the last being the one that answered.
    pub attempts: Vec<Attempt>,
}

/// A cluster of Splash nodes behind one balancer.
pub struct Cluster<T: Transport> {
    pool: Pool,
    transport: Arc<T>,
    retry: RetryPolicy,
    queue_timeout: Duration,
    stop_probes: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    probes: Mutex<Vec<JoinHandle<()>>>,
}

impl<T: Transport> Cluster<T> {
    /// Starts a cluster and its probes. Must run inside a tokio runtime.
    pub fn start(config: ClusterConfig, transport: T, policy: Box<dyn SelectionPolicy>) -> Self {
        let pool = Pool::new(config.nodes, config.thresholds, policy);
        let transport = Arc::new(transport);
        let (stop_probes, stop) = watch::channel(false);
        let settings = ProbeSettings {
            interval: config.health_interval,
            timeout: config.health_timeout,
            path: config.health_path,
        };
        let probes = spawn_probes(&pool, &transport, &settings, &stop);
        Self {
            pool,
            transport,
            retry: RetryPolicy::new(config.retries),
            queue_timeout: config.queue_timeout,
            stop_probes,
            abort: watch::channel(false).0,
            probes: Mutex::new(probes),
        }
    }

    /// Sends a request to the cluster: waits for a node, retries node
    /// failures and 504s elsewhere, and returns the answer or a typed error,
    /// all within `timeout`.
    pub async fn request(
        &self,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<ClusterResponse, ClusterError> {
        request.validate().map_err(ClusterError::InvalidRequest)?;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut abort = self.abort.subscribe();
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut tried = Tried::default();
        let mut previous: Option<usize> = None;
        loop {
            let queue_deadline = (Instant::now() + self.queue_timeout).min(deadline);
            let lease = match self.pool.acquire(&tried, queue_deadline).await {
                Ok(lease) => lease,
                Err(AcquireError::Closed) => return Err(ClusterError::Closed { attempts }),
                Err(AcquireError::TimedOut { waited, nodes }) if queue_deadline < deadline => {
                    return Err(ClusterError::NoNodeAvailable { waited, nodes, attempts })
                }
                Err(AcquireError::TimedOut { nodes, .. }) => {
                    return Err(ClusterError::Timeout { timeout, attempts, nodes })
                }
            };
            let node = lease.node();
            tried.insert(node);
            self.pool.record_sent(node);
            let mut down = lease.down_signal();
            let attempt_started = Instant::now();
            let send = self.transport.send(&lease.spec().endpoint, &request);
            let (outcome, response) = tokio::select! {
                result = tokio::time::timeout_at(deadline, send) => match result {
                    Ok(result) => (classify(&result), result.ok()),
                    Err(_) => (Outcome::DeadlineExceeded, None),
                },
                _ = down.changed() => (Outcome::Abandoned, None),
                _ = abort.wait_for(|aborted| *aborted) => {
                    return Err(ClusterError::Closed { attempts });
                }
            };
            let elapsed = attempt_started.elapsed();
            let status = response.as_ref().map(|r| r.status);
            self.pool.record_attempt(node, &outcome, status, previous);
            let node_url = lease.spec().endpoint.display().to_owned();
            drop(lease);
            tracing::debug!(
                target: "scrapy_splash_cluster::request",
                "{} {} on {node_url}: {outcome} in {:.3}s (attempt {})",
                request.method,
                request.path_for_log(),
                elapsed.as_secs_f64(),
                attempts.len() + 1
            );
            attempts.push(Attempt {
                node: node_url.clone(),
                outcome: outcome.clone(),
                elapsed,
            });
            previous = Some(node);
            if self.retry.should_retry(&outcome, attempts.len(), Instant::now(), deadline) {
                continue;
            }
            return match (response, outcome) {
                (Some(response), _) => Ok(ClusterResponse {
                    response,
                    node: node_url,
                    attempts,
                }),
                (None, Outcome::DeadlineExceeded) => Err(ClusterError::Timeout {
                    timeout,
                    attempts,
                    nodes: self.pool.snapshot(),
                }),
                (None, _) if Instant::now() >= deadline => Err(ClusterError::Timeout {
                    timeout,
                    attempts,
                    nodes: self.pool.snapshot(),
                }),
                (None, _) => Err(ClusterError::AllAttemptsFailed { attempts }),
            };
        }
    }

    /// Every node, now.
    pub fn nodes(&self) -> Vec<NodeSnapshot> {
        self.pool.snapshot()
    }

    /// The admission queue, now.
    pub fn queue(&self) -> QueueStats {
        self.pool.queue_stats()
    }

    /// Stops the probes and refuses new requests. Requests under way finish
    /// unless `abort`, which fails them (and every waiting one) at once.
    /// Returns the probe tasks to await; idempotent.
    pub fn close(&self, abort: bool) -> Vec<JoinHandle<()>> {
        self.pool.close(abort);
        self.stop_probes.send_replace(true);
        if abort {
            self.abort.send_replace(true);
        }
        std::mem::take(&mut *self.probes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<T: Transport> Drop for Cluster<T> {
    fn drop(&mut self) {
        // Probes must not outlive a cluster nobody closed.
        self.stop_probes.send_replace(true);
    }
}

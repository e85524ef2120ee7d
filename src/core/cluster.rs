//! The cluster: a request's life from admission to its answer or its error.
//!
//! Each attempt holds a lease on one node. It ends in one of three ways: the
//! node answers (or fails), the request's deadline passes, or the node is
//! marked DOWN meanwhile (by a probe, or by another request's refused
//! connection), in which case the attempt is abandoned and the request moves
//! on at once instead of waiting out a frozen node. The outcome table says
//! whether to retry; the retry policy says whether a retry is left.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::adaptive::{self, Sample};
use super::admission::Tried;
use super::budget::RetryBudget;
use super::config::ClusterConfig;
use super::discovery::{self, DnsName};
use super::error::{Attempt, ClusterError};
use super::fleet_slots::SlotAccounting;
use super::fleet_sync::{self, FleetLink, SyncSettings};
use super::node::NodeSnapshot;
use super::outcome::{classify, Outcome};
use super::pool::{AcquireError, Lease, Pool, QueueStats};
use super::prober::{spawn_probes, ProbeSettings};
use super::render_budget::RenderBudget;
use super::report::{ClusterReport, ReportSource, RequestTotals};
use super::retry::{RetryPolicy, Spent};
use super::selection::SelectionPolicy;
use super::stats_server;
use super::transport::{NodeRequest, NodeResponse, SavedArgs, Transport};

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

/// What one attempt came to.
struct Sent {
    outcome: Outcome,
    response: Option<NodeResponse>,
    started: Instant,
    elapsed: Duration,
}

/// Counts a request as cancelled unless it was counted as ended.
struct Ending<'a> {
    totals: &'a RequestTotals,
    ended: bool,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.totals.cancel();
        }
    }
}

/// A cluster of Splash nodes behind one balancer.
pub struct Cluster<T: Transport> {
    pool: Pool,
    transport: Arc<T>,
    retry: RetryPolicy,
    budget: Option<RetryBudget>,
    poison_limit: u32,
    queue_timeout: Duration,
    /// Whether nodes' limits adapt (and so renders are measured).
    adaptive: bool,
    stop_probes: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    /// Background tasks (probes, the stats page) to await on close.
    probes: Mutex<Vec<JoinHandle<()>>>,
    totals: Arc<RequestTotals>,
    reports: ReportSource,
    stats_addr: Option<std::net::SocketAddr>,
    probe_settings: ProbeSettings,
}

impl<T: Transport> Cluster<T> {
    /// Starts a cluster, its probes and its stats page. Must run inside a
    /// tokio runtime. Fails only when the stats page cannot listen.
    pub fn start(
        config: ClusterConfig,
        transport: T,
        policy: Box<dyn SelectionPolicy>,
    ) -> std::io::Result<Self> {
        Self::start_with(config, transport, policy, None)
    }

    /// Starts a cluster whose slots are counted across the fleet `link`
    /// belongs to (see `fleet_sync`), with `lease_ttl` as its leases' TTL.
    pub fn start_in_fleet(
        config: ClusterConfig,
        transport: T,
        policy: Box<dyn SelectionPolicy>,
        link: FleetLink,
        lease_ttl: Duration,
    ) -> std::io::Result<Self> {
        Self::start_with(config, transport, policy, Some((link, lease_ttl)))
    }

    fn start_with(
        config: ClusterConfig,
        transport: T,
        policy: Box<dyn SelectionPolicy>,
        fleet: Option<(FleetLink, Duration)>,
    ) -> std::io::Result<Self> {
        let accounting = match &fleet {
            Some((link, _)) => SlotAccounting::Fleet(Arc::clone(&link.slots)),
            None => SlotAccounting::Local,
        };
        let pool = Pool::with_accounting(config.nodes, config.thresholds, policy, accounting);
        if config.adaptive {
            pool.adapt_limits();
        }
        let transport = Arc::new(transport);
        let (stop_probes, stop) = watch::channel(false);
        let settings = ProbeSettings {
            interval: config.health_interval,
            fast_interval: config.health_fast_interval,
            timeout: config.health_timeout,
            path: config.health_path,
        };
        let totals = Arc::new(RequestTotals::default());
        let reports = ReportSource::new(pool.clone(), Arc::clone(&totals));
        let stats = match config.stats {
            Some(stats) => Some(stats_server::start(stats, reports.clone(), stop.clone())?),
            None => None,
        };
        let mut probes = spawn_probes(&pool, &transport, &settings, &stop);
        let probe_settings = settings;
        if let Some((link, lease_ttl)) = fleet {
            let sync = SyncSettings::new(lease_ttl, config.health_interval);
            probes.extend(fleet_sync::spawn(link, &pool, sync, &stop));
        }
        let stats_addr = stats.map(|server| {
            probes.push(server.task);
            probes.push(server.sampler);
            server.addr
        });
        Ok(Self {
            pool,
            transport,
            retry: RetryPolicy::new(config.retries),
            budget: config.retry_budget.map(RetryBudget::new),
            poison_limit: config.poison_limit,
            queue_timeout: config.queue_timeout,
            adaptive: config.adaptive,
            stop_probes,
            abort: watch::channel(false).0,
            probes: Mutex::new(probes),
            totals,
            reports,
            stats_addr,
            probe_settings,
        })
    }

    /// Follows these names in DNS every `interval` (see `discovery`): their
    /// addresses join, drain and return as the answers change. Must run
    /// inside the cluster's tokio runtime.
    pub fn follow_dns(&self, names: Vec<DnsName>, interval: Duration) {
        if names.is_empty() {
            return;
        }
        let task = discovery::spawn(
            self.pool.clone(),
            Arc::clone(&self.transport),
            self.probe_settings.clone(),
            names,
            interval,
            self.reports.names().clone(),
            self.stop_probes.subscribe(),
        );
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Whether the retry budget has a 504 retry left (always, without one).
    fn budget_allows_retry(&self, now: Instant) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|budget| budget.withdraw(now))
    }

    fn node_indices(&self, saved: Option<&SavedArgs>) -> Vec<usize> {
        let Some(saved) = saved else {
            return Vec::new();
        };
        self.pool
            .specs()
            .iter()
            .enumerate()
            .filter(|(_, spec)| saved.nodes.iter().any(|n| n == spec.endpoint.display()))
            .map(|(i, _)| i)
            .collect()
    }

    /// Where the stats page listens, if it is on.
    pub fn stats_addr(&self) -> Option<std::net::SocketAddr> {
        self.stats_addr
    }

    /// Everything the stats page shows, now.
    pub fn report(&self) -> ClusterReport {
        self.reports.report()
    }

    /// Sends a request to the cluster: waits for a node, retries node
    /// failures and 504s elsewhere, and returns the answer or a typed error,
    /// all within `timeout`.
    pub async fn request(
        &self,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<ClusterResponse, ClusterError> {
        self.totals.start();
        if let Some(budget) = &self.budget {
            budget.deposit(Instant::now());
        }
        // Counted when the request ends, however it ends: a future dropped
        // by its caller counts as cancelled when the guard drops with it.
        let mut ending = Ending {
            totals: &self.totals,
            ended: false,
        };
        let result = self.run(request, timeout).await;
        self.totals.finish(&result);
        ending.ended = true;
        result
    }

    async fn run(
        &self,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<ClusterResponse, ClusterError> {
        request.validate().map_err(ClusterError::InvalidRequest)?;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut abort = self.abort.subscribe();
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut spent = Spent::default();
        let mut tried = Tried::preferring(self.node_indices(request.saved_args.as_ref()));
        let mut previous: Option<usize> = None;
        let budget = self.adaptive.then(|| RenderBudget::of(&request));
        loop {
            let queue_deadline = (Instant::now() + self.queue_timeout).min(deadline);
            let lease = match self.pool.acquire(&tried, queue_deadline).await {
                Ok(lease) => lease,
                Err(AcquireError::Closed) => return Err(ClusterError::Closed { attempts }),
                Err(AcquireError::TimedOut { waited, nodes }) if queue_deadline < deadline => {
                    return Err(ClusterError::NoNodeAvailable {
                        waited,
                        nodes,
                        attempts,
                    })
                }
                Err(AcquireError::TimedOut { nodes, .. }) => {
                    return Err(ClusterError::Timeout {
                        timeout,
                        attempts,
                        nodes,
                    })
                }
            };
            let node = lease.node();
            tried.insert(node);
            let saved = request.saved_args.as_ref().filter(|_| tried.prefers(node));
            let first = match saved {
                Some(saved) => {
                    self.attempt(
                        &lease,
                        &request.with_body(saved.body.clone()),
                        deadline,
                        &mut abort,
                    )
                    .await
                }
                None => self.attempt(&lease, &request, deadline, &mut abort).await,
            };
            let Some(sent) = first else {
                return Err(ClusterError::Closed { attempts });
            };
            let sent = if saved.is_some() && sent.outcome == Outcome::ExpiredArguments {
                // The node lost the saved arguments (a restart, Splash's LRU
                // of 500): send them in full to the same node at once. Not a
                // failure, not a retry: the node is fine.
                self.record(&lease, &request, &sent, previous, budget, &mut attempts);
                tried.forget_preference(node);
                match self.attempt(&lease, &request, deadline, &mut abort).await {
                    Some(sent) => sent,
                    None => return Err(ClusterError::Closed { attempts }),
                }
            } else {
                sent
            };
            let node_url = lease.spec().endpoint.display().to_owned();
            let life = lease.life();
            self.record(&lease, &request, &sent, previous, budget, &mut attempts);
            let Sent {
                outcome, response, ..
            } = sent;
            drop(lease);
            previous = Some(node);
            spent.add(&outcome);
            if outcome.is_node_death() && tried.record_node_death(node, life) >= self.poison_limit {
                return Err(ClusterError::Poisoned {
                    limit: self.poison_limit,
                    attempts,
                });
            }
            let now = Instant::now();
            let nodes = self.pool.node_count();
            if self
                .retry
                .should_retry(&outcome, spent, nodes, now, deadline)
            {
                if outcome != Outcome::RenderTimeout || self.budget_allows_retry(now) {
                    if let Some(pause) = self.retry.pause_before_retry(&outcome) {
                        let until = (now + pause).min(deadline);
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => {}
                            _ = abort.wait_for(|aborted| *aborted) => {
                                return Err(ClusterError::Closed { attempts });
                            }
                        }
                    }
                    continue;
                }
                self.totals.deny_retry();
            }
            return match (response, outcome) {
                (Some(response), _) => Ok(ClusterResponse {
                    response,
                    node: node_url,
                    attempts,
                }),
                (None, Outcome::TooLarge(limit)) => {
                    Err(ClusterError::ResponseTooLarge { limit, attempts })
                }
                (None, outcome)
                    if outcome == Outcome::DeadlineExceeded || Instant::now() >= deadline =>
                {
                    Err(ClusterError::Timeout {
                        timeout,
                        attempts,
                        nodes: self.pool.snapshot(),
                    })
                }
                (None, _) => Err(ClusterError::AllAttemptsFailed { attempts }),
            };
        }
    }

    /// One attempt on the lease's node, until it answers, fails, the
    /// deadline passes or the node goes DOWN; None when the cluster aborts.
    async fn attempt(
        &self,
        lease: &Lease,
        request: &NodeRequest,
        deadline: Instant,
        abort: &mut watch::Receiver<bool>,
    ) -> Option<Sent> {
        self.pool.record_sent(lease.node());
        let mut down = lease.down_signal();
        let started = Instant::now();
        let send = self.transport.send(&lease.spec().endpoint, request);
        let (outcome, response) = tokio::select! {
            result = tokio::time::timeout_at(deadline, send) => match result {
                Ok(result) => (classify(&result), result.ok()),
                Err(_) => (Outcome::DeadlineExceeded, None),
            },
            _ = down.changed() => (Outcome::Abandoned, None),
            _ = abort.wait_for(|aborted| *aborted) => return None,
        };
        Some(Sent {
            outcome,
            response,
            started,
            elapsed: started.elapsed(),
        })
    }

    /// Counts an attempt for its node and the request, and logs it at DEBUG;
    /// with a render budget (adaptive limits on), feeds its latency.
    fn record(
        &self,
        lease: &Lease,
        request: &NodeRequest,
        sent: &Sent,
        previous: Option<usize>,
        budget: Option<RenderBudget>,
        attempts: &mut Vec<Attempt>,
    ) {
        let node = lease.node();
        let status = sent.response.as_ref().map(|r| r.status);
        self.pool
            .record_attempt(node, &sent.outcome, status, previous);
        // Only renders say how loaded the node is: a page answered (any
        // status) or a 504. Website failures, the request's own errors and
        // node failures say nothing about its CPU.
        let ending = match sent.outcome {
            Outcome::Answered(_) => Some(adaptive::Ending::Rendered),
            Outcome::RenderTimeout => Some(adaptive::Ending::TimedOut),
            _ => None,
        };
        if let (Some(budget), Some(ending)) = (budget, ending) {
            self.pool.record_render(
                node,
                Sample {
                    started: sent.started,
                    elapsed: sent.elapsed,
                    budget,
                    ending,
                    in_flight: 0, // the pool counts it
                },
            );
        }
        let node_url = lease.spec().endpoint.display();
        tracing::debug!(
            target: "scrapy_splash_cluster::request",
            "{} {} on {node_url}: {} in {:.3}s (attempt {})",
            request.method,
            request.path_for_log(),
            sent.outcome,
            sent.elapsed.as_secs_f64(),
            attempts.len() + 1
        );
        attempts.push(Attempt {
            node: node_url.to_owned(),
            outcome: sent.outcome.clone(),
            elapsed: sent.elapsed,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{ClusterOptions, NodeOptions};
    use crate::core::transport::TransportError;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What a fake node does with an attempt.
    #[derive(Clone)]
    enum Script {
        Answer(u16, &'static str, Duration),
        Fail(TransportError),
        Hang,
        /// Answers 498 to a body that refers to saved arguments, 200 else:
        /// a node that restarted and lost them.
        LostSavedArgs,
    }

    /// A transport that answers from a script per node, with no sockets.
    struct Fake {
        scripts: Mutex<HashMap<String, Script>>,
        probes_ok: bool,
        sent: AtomicUsize,
    }

    impl Fake {
        fn new(scripts: &[(&str, Script)], probes_ok: bool) -> Self {
            Self {
                scripts: Mutex::new(
                    scripts
                        .iter()
                        .map(|(n, s)| (format!("http://{n}"), s.clone()))
                        .collect(),
                ),
                probes_ok,
                sent: AtomicUsize::new(0),
            }
        }
    }

    impl Transport for Fake {
        async fn send(
            &self,
            node: &crate::core::config::NodeEndpoint,
            request: &NodeRequest,
        ) -> Result<NodeResponse, TransportError> {
            self.sent.fetch_add(1, Ordering::SeqCst);
            let script = self.scripts.lock().unwrap()[node.display()].clone();
            match script {
                Script::Answer(status, body, delay) => {
                    tokio::time::sleep(delay).await;
                    Ok(NodeResponse {
                        status,
                        headers: Vec::new(),
                        body: body.into(),
                    })
                }
                Script::Fail(error) => Err(error),
                Script::Hang => std::future::pending().await,
                Script::LostSavedArgs if request.body.starts_with(b"load") => Ok(NodeResponse {
                    status: 498,
                    headers: Vec::new(),
                    body: r#"{"error": 498, "type": "ExpiredArguments"}"#.into(),
                }),
                Script::LostSavedArgs => Ok(NodeResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: "full".into(),
                }),
            }
        }

        async fn probe(
            &self,
            node: &crate::core::config::NodeEndpoint,
            _path: &str,
        ) -> Result<crate::core::transport::ProbeAnswer, TransportError> {
            let frozen = matches!(self.scripts.lock().unwrap()[node.display()], Script::Hang);
            if self.probes_ok && !frozen {
                Ok(crate::core::transport::ProbeAnswer {
                    status: 200,
                    body: r#"{"status": "ok"}"#.into(),
                })
            } else {
                std::future::pending().await
            }
        }
    }

    const OK: Script = Script::Answer(200, "ok", Duration::from_millis(10));
    const TIMEOUT_504: Script = Script::Answer(
        504,
        r#"{"error": 504, "type": "GlobalTimeoutError"}"#,
        Duration::from_millis(10),
    );

    fn cluster(scripts: &[(&str, Script)], probes_ok: bool) -> Cluster<Fake> {
        cluster_tuned(scripts, probes_ok, |_| {})
    }

    fn cluster_tuned(
        scripts: &[(&str, Script)],
        probes_ok: bool,
        tune: impl FnOnce(&mut ClusterOptions),
    ) -> Cluster<Fake> {
        let mut options = ClusterOptions {
            nodes: scripts
                .iter()
                .map(|(n, _)| NodeOptions {
                    url: format!("http://{n}"),
                    ..NodeOptions::default()
                })
                .collect(),
            ..ClusterOptions::default()
        };
        tune(&mut options);
        Cluster::start(
            options.validate().unwrap(),
            Fake::new(scripts, probes_ok),
            Box::new(crate::core::selection::LeastConn::new()),
        )
        .unwrap()
    }

    fn request() -> NodeRequest {
        NodeRequest {
            method: "GET".into(),
            path: "/render.html?url=x".into(),
            headers: Vec::new(),
            body: Default::default(),
            max_body: None,
            saved_args: None,
        }
    }

    fn outcomes(attempts: &[Attempt]) -> Vec<String> {
        attempts
            .iter()
            .map(|a| format!("{} {}", a.node, a.outcome))
            .collect()
    }

    fn assert_idle(c: &Cluster<Fake>) {
        assert!(
            c.nodes().iter().all(|n| n.in_flight == 0),
            "{:?}",
            c.nodes()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_504_is_redispatched_to_another_node() {
        let c = cluster(&[("a", TIMEOUT_504), ("b", OK)], true);
        let r = c.request(request(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(r.response.status, 200);
        assert_eq!(
            outcomes(&r.attempts),
            vec!["http://a 504 GlobalTimeoutError", "http://b 200"]
        );
        assert_eq!(c.nodes()[0].state, "UP");
        assert_eq!(c.nodes()[1].counters.redispatches, 1);
        // Answers are counted by class on the node that gave them.
        assert_eq!(c.nodes()[0].counters.responses, [0, 0, 0, 1]);
        assert_eq!(c.nodes()[1].counters.responses, [1, 0, 0, 0]);
        assert_eq!(c.nodes()[0].counters.render_timeouts, 1);
        assert_idle(&c);
    }

    fn with_saved_args(nodes: &[&str]) -> NodeRequest {
        NodeRequest {
            body: "full".into(),
            saved_args: Some(SavedArgs {
                nodes: nodes.iter().map(|n| format!("http://{n}")).collect(),
                body: "load_args".into(),
            }),
            ..request()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn saved_args_go_to_the_node_that_holds_them() {
        let c = cluster(&[("a", OK), ("b", OK), ("c", OK)], true);
        for _ in 0..3 {
            let r = c
                .request(with_saved_args(&["b"]), Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(r.node, "http://b");
        }
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_saved_args_are_resent_in_full_on_the_same_node() {
        let c = cluster(&[("a", Script::LostSavedArgs), ("b", OK)], true);
        let r = c
            .request(with_saved_args(&["a"]), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(r.response.status, 200);
        assert_eq!(&r.response.body[..], b"full");
        assert_eq!(
            outcomes(&r.attempts),
            vec!["http://a 498 ExpiredArguments", "http://a 200"]
        );
        let a = &c.nodes()[0];
        assert_eq!(
            (
                a.counters.expired_args,
                a.counters.failures,
                a.counters.retries
            ),
            (1, 0, 0)
        );
        assert_eq!(a.state, "UP");
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_a_504_storm_but_not_node_failure_retries() {
        let c = cluster(&[("a", TIMEOUT_504), ("b", TIMEOUT_504)], true);
        let mut attempts = 0;
        for _ in 0..50 {
            let r = c.request(request(), Duration::from_secs(60)).await.unwrap();
            assert_eq!(r.response.status, 504);
            attempts += r.attempts.len();
        }
        // 50 requests: a floor of 10 retries plus 20 % of the requests.
        assert_eq!(attempts, 50 + 10 + 10);
        // The first three took all their retries from the floor; every later
        // one was refused a retry once (and some got one first).
        assert_eq!(c.report().totals.retries_denied, 47);
        let reset = Script::Fail(TransportError::ConnectionReset);
        let d = cluster(&[("a", reset), ("b", OK)], true);
        for _ in 0..50 {
            let r = d.request(request(), Duration::from_secs(60)).await.unwrap();
            assert_eq!(r.response.status, 200);
        }
        assert_eq!(d.report().totals.retries_denied, 0);
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_then_never_chosen_again() {
        let c = cluster(
            &[
                ("a", Script::Fail(TransportError::ConnectionRefused)),
                ("b", OK),
            ],
            false,
        );
        for _ in 0..5 {
            let r = c.request(request(), Duration::from_secs(60)).await.unwrap();
            assert_eq!(r.node, "http://b");
        }
        assert_eq!(c.nodes()[0].counters.requests, 1);
        assert_eq!(c.nodes()[0].state, "DOWN");
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_run_out_into_all_attempts_failed() {
        let garbage = Script::Fail(TransportError::InvalidHttp);
        let c = cluster(&[("a", garbage.clone()), ("b", garbage)], true);
        let err = c
            .request(request(), Duration::from_secs(60))
            .await
            .unwrap_err();
        let ClusterError::AllAttemptsFailed { attempts } = err else {
            panic!("{err}")
        };
        assert_eq!(
            outcomes(&attempts),
            vec![
                "http://a invalid HTTP response",
                "http://b invalid HTTP response",
                "http://a invalid HTTP response",
                "http://b invalid HTTP response"
            ]
        );
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn a_render_cut_by_its_node_is_retried_after_the_pause() {
        let closed = Script::Fail(TransportError::ClosedMidResponse);
        let c = cluster(&[("a", closed), ("b", OK)], true);
        let started = Instant::now();
        let response = c.request(request(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            outcomes(&response.attempts),
            vec![
                "http://a connection closed before a whole response",
                "http://b 200"
            ]
        );
        // The pause, then b's 10 ms answer: virtual time, exact.
        assert_eq!(
            started.elapsed(),
            crate::core::retry::AFTER_NODE_DEATH + Duration::from_millis(10)
        );
        assert_idle(&c);
    }

    fn cluster_with(
        scripts: &[(&str, Script)],
        tune: impl FnOnce(&mut ClusterOptions),
    ) -> Cluster<Fake> {
        cluster_tuned(scripts, true, tune)
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_nodes_die_under_twice_goes_to_no_third_node() {
        let closed = Script::Fail(TransportError::ClosedMidResponse);
        let reset = Script::Fail(TransportError::ConnectionReset);
        let nodes = [("a", closed), ("b", reset), ("c", OK), ("d", OK)];
        let c = cluster(&nodes, true);
        let err = c
            .request(request(), Duration::from_secs(60))
            .await
            .unwrap_err();
        let ClusterError::Poisoned { limit, attempts } = &err else {
            panic!("{err}")
        };
        assert_eq!(*limit, 2);
        assert_eq!(
            outcomes(attempts),
            vec![
                "http://a connection closed before a whole response",
                "http://b connection reset"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("(http://a, http://b)"), "{text}");
        assert_eq!(
            c.nodes()[2].counters.requests + c.nodes()[3].counters.requests,
            0
        );
        assert_eq!(c.report().totals.errors[6], ("poisoned", 1));
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn one_death_met_twice_on_the_same_node_counts_once() {
        // A node being stopped cuts the render, and the retry that reaches it
        // before anyone marked it DOWN is reset: one death, not two (seen
        // on real Splash with SIGTERM, where the other node was full).
        let closed = Script::Fail(TransportError::ClosedMidResponse);
        let c = cluster_with(&[("a", closed)], |o| o.error_limit = 100);
        let err = c
            .request(request(), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClusterError::AllAttemptsFailed { .. }),
            "{err}"
        );
        assert_eq!(err.attempts().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_died_came_back_and_died_again_counts_twice() {
        // One node under a supervisor: the page kills it, it is DOWN, its
        // probes bring it back, the page kills it again.
        let closed = Script::Fail(TransportError::ClosedMidResponse);
        let c = cluster_with(&[("a", closed)], |o| o.error_limit = 1);
        let err = c
            .request(request(), Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(err, ClusterError::Poisoned { .. }), "{err}");
        assert_eq!(c.nodes()[0].counters.downs, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_poison_limit_is_a_setting_and_other_failures_do_not_count() {
        let closed = Script::Fail(TransportError::ClosedMidResponse);
        let nodes = [
            ("a", closed.clone()),
            ("b", Script::Fail(TransportError::InvalidHttp)),
            ("c", closed),
            ("d", OK),
        ];
        // Limit 3: two deaths (a, c) and one failure that is no death (b)
        // leave the request its last retry, on d.
        let c = cluster_with(&nodes, |o| o.poison_limit = 3);
        let r = c.request(request(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(r.node, "http://d");
        assert_eq!(r.attempts.len(), 4);
        let bad = ClusterOptions {
            poison_limit: 0,
            nodes: vec![NodeOptions {
                url: "http://a".into(),
                ..NodeOptions::default()
            }],
            ..ClusterOptions::default()
        };
        let error = bad.validate().unwrap_err();
        assert_eq!(error.argument, "poison_limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_request_counts_as_cancelled_not_in_progress() {
        let c = Arc::new(cluster(&[("a", Script::Hang)], true));
        let c2 = Arc::clone(&c);
        let task =
            tokio::spawn(async move { c2.request(request(), Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.report().totals.in_progress(), 1);
        task.abort();
        let _ = task.await;
        let totals = c.report().totals;
        assert_eq!(
            (totals.started, totals.cancelled, totals.in_progress()),
            (1, 1, 0)
        );
        assert_eq!(c.report().to_json()["totals"]["in_progress"], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resend_after_498_is_not_a_retry_anywhere() {
        let c = cluster(&[("a", Script::LostSavedArgs), ("b", OK)], true);
        c.request(with_saved_args(&["a"]), Duration::from_secs(60))
            .await
            .unwrap();
        let a = &c.nodes()[0];
        assert_eq!((a.counters.retries, a.counters.redispatches), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_node_is_abandoned_when_probes_take_it_down() {
        // The frozen node accepts the attempt and its probes, and answers
        // neither: after `fall` (3) probes time out it goes DOWN, and the
        // request moves on at once instead of waiting out its 60 s timeout.
        let c = cluster(&[("a", Script::Hang), ("b", OK)], true);
        let r = c.request(request(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            outcomes(&r.attempts),
            vec!["http://a abandoned: node marked DOWN", "http://b 200"]
        );
        // 3 probes of 1 s timeout: the first at once; after it failed the
        // node is GOING DOWN and probed again at once (fastinter 0.5 s has
        // passed): DOWN after about 3 s, not the 5 s of a 2 s cycle.
        let waited = r.attempts[0].elapsed;
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        assert_eq!(c.nodes()[0].state, "DOWN");
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_every_attempt() {
        let c = cluster(&[("a", Script::Hang)], true);
        let err = c
            .request(request(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, ClusterError::Timeout { .. }), "{err}");
        assert_eq!(err.attempts()[0].outcome, Outcome::DeadlineExceeded);
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_request_frees_its_slot() {
        let c = Arc::new(cluster(&[("a", Script::Hang)], true));
        let c2 = Arc::clone(&c);
        let task =
            tokio::spawn(async move { c2.request(request(), Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.nodes()[0].in_flight, 1);
        task.abort();
        let _ = task.await;
        assert_idle(&c);
    }

    #[tokio::test(start_paused = true)]
    async fn many_requests_leave_nothing_in_flight() {
        let c = Arc::new(cluster(
            &[
                ("a", OK),
                ("b", TIMEOUT_504),
                ("c", Script::Fail(TransportError::ClosedMidResponse)),
            ],
            true,
        ));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let c = Arc::clone(&c);
                tokio::spawn(async move { c.request(request(), Duration::from_secs(60)).await })
            })
            .collect();
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            // Every request ends on the healthy node, or with b's 504 once
            // the retry budget has no 504 retry left for it.
            assert!(
                r.node == "http://a" || (r.node == "http://b" && r.response.status == 504),
                "{} {}",
                r.node,
                r.response.status
            );
        }
        assert_idle(&c);
        assert_eq!(c.queue().waiting, 0);
        assert!(c.transport.sent.load(Ordering::SeqCst) >= 100);
    }

    #[tokio::test(start_paused = true)]
    async fn only_renders_move_the_adaptive_limit_not_the_websites_failures() {
        let render_error = Script::Answer(
            502,
            r#"{"error": 502, "type": "RenderError", "info": {"type": "Network"}}"#,
            Duration::from_millis(10),
        );
        let c = cluster_tuned(&[("a:1", render_error)], true, |o| o.adaptive = true);
        for _ in 0..5 {
            let answer = c.request(request(), Duration::from_secs(5)).await.unwrap();
            assert_eq!(answer.response.status, 502);
        }
        assert_eq!(
            c.nodes()[0].limit,
            Some(1),
            "a website's 502 moved the limit"
        );
        c.transport
            .scripts
            .lock()
            .unwrap()
            .insert("http://a:1".into(), OK);
        c.request(request(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            c.nodes()[0].limit,
            Some(3),
            "a render alone starts slow start at half the slots"
        );
        // Off (the default), no limit at all.
        let off = cluster(&[("a:1", OK)], true);
        off.request(request(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(off.nodes()[0].limit, None);
    }
}

//! The shared fleet: many crawler processes balancing over one set of Splash
//! nodes, with the nodes' slots, health verdicts and live processes held in
//! Redis.
//!
//! # Why Redis
//!
//! Each process's balancer counts only its own renders, so N processes put up
//! to N x maxconn renders on a node, and the excess times out in Splash's own
//! queue. The count has to live outside the processes, in one place every
//! process reaches in well under a millisecond, that can run "purge the
//! expired, count, compare, add" as one atomic step, expire what a dead
//! process leaves behind, and announce releases. Redis does all of that with
//! one Lua script per operation, and it is the engine scrapy-redis crawls run
//! on already. The design follows the known expiring-semaphore recipes
//! (a sorted set of holders scored by their expiry, purge then count then add
//! in one script, time from the server): Medallion's RedisSemaphorePrimitive,
//! Redisson's RPermitExpirableSemaphore, "Redis in Action" 6.3.
//!
//! # Keys
//!
//! Every key of a fleet starts with the hash tag `{<prefix>}` (the prefix is
//! `SPLASH_CLUSTER_REDIS_KEY_PREFIX`, default `splash_cluster`), so that in a
//! Redis Cluster all of them live on one shard and each script gets every
//! key it touches in `KEYS`.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}:nodes` | HASH | node key (its URL without credentials) -> `"maxconn weight"`, the first registered value holds |
//! | `{p}:leases:<node key>` | ZSET | one member per render in flight on the node, any process: lease id (`<process id>:<counter>`) -> expiry (ms, server clock) |
//! | `{p}:verdicts` | HASH | `adaptive` -> `"on"`/`"off"` (set by the first process to join); node key -> `"DOWN <reason>"` for each node the fleet holds DOWN (absent: UP); `drain:operator:<node key>` -> `"1"` for a node an operator drained, `drain:maxrss:<node key>` -> `"<peak> <limit>"` (bytes) for one the prober found past its `--maxrss`; `limit:<node key>` -> `"<limit> <best>"`, the node's adaptive limit (the prober process decides it, every process's renders count against it) |
//! | `{p}:processes` | ZSET | live process id -> heartbeat expiry (ms, server clock) |
//! | `{p}:prober` | STRING | the id of the process that probes the nodes for the fleet, expiring (PX) |
//! | `{p}:events` | channel | `release <count>` when leases are given back, `verdict <node key>` when a verdict changes |
//!
//! A process id is `<host>/<pid>/<random>`, unique across hosts and restarts.
//! Leases live one lease TTL (`SPLASH_CLUSTER_REDIS_LEASE_TTL`, default 15 s)
//! past their last renewal, heartbeats as long; the other keys live twice the
//! lease TTL past the last renewal of any process, so a fleet that every
//! process left leaves nothing behind, and a restarted fleet registers its
//! nodes' maxconn afresh.
//!
//! # Scripts
//!
//! One script per operation, in `src/core/fleet/*.lua`, each with a header
//! giving its KEYS, ARGV and reply; `prelude.lua` (the server clock, key
//! lifetimes) is put before each. They run by EVALSHA and are loaded again
//! when Redis answers NOSCRIPT (after a restart). Time comes only from
//! `redis.call('TIME')` inside the scripts, never from a crawler's clock.
//!
//! | script | does |
//! |---|---|
//! | `register.lua` | at connect: sets the fleet's `adaptive` mode if unset and refuses a process whose mode differs; registers the nodes (HSETNX) and the process; returns the nodes whose registered maxconn/weight differs |
//! | `take.lua` | among the candidates not DOWN, not drained and below maxconn (or the fleet's adaptive limit, when lower) counting every process's unexpired leases (expired ones purged first): untried first, then preferred, then least `(in_flight + 1) / weight`, ties round from `start`; adds the lease, expiring TTL from now |
//! | `release.lua` | removes a batch of leases; publishes one `release` |
//! | `renew.lua` | purges expired leases, then renews this process's (ZADD XX: never revives one), refreshes the heartbeat, returns per node the fleet's leases and verdict, and the live processes |
//! | `restore.lua` | re-adds this process's leases if absent (ZADD NX), after Redis lost them |
//! | `verdict.lua` | sets or clears a node's DOWN verdict, one of its drains, or its adaptive limit; publishes a `verdict` when it changed |
//! | `prober.lua` | takes the prober lock if free, renews it if ours |
//!
//! The take script scans every candidate: about 2.4 us of Redis time per
//! candidate, measured on loopback (server time per take 13 us at 3 nodes,
//! 115 us at 50, 480 us at 200; round trip p50 31 / 150 / 600 us). At 1,000
//! renders/s that is 1%, 12% and 48% of Redis's one core: past about 50
//! nodes, sampling (two random choices) should replace the full scan.
//!
//! The keys are ready for Redis Cluster, the connection is not yet: it is
//! one ConnectionManager to one server (a primary, or a proxy in front of a
//! cluster); a cluster client (redis-rs `cluster-async`) is a follow-up.
//!
//! Redis replicates a script's effects, so `TIME` inside it is safe on
//! replicas; replication is asynchronous, so a failover can lose leases
//! written to the old primary (a node may then briefly get more than
//! maxconn, for at most one lease TTL).
//!
//! # Failures
//!
//! [`Fleet::connect`] fails with a [`FleetError`] that names the setting and
//! tells a bad URL, a refused connection and a failed AUTH apart. After
//! that, every call fails within about [`COMMAND_TIMEOUT`] when Redis is
//! away (the caller falls back to its local balancer), and the connection is
//! made again on the next call.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Script};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::config::mask_password;
use super::drain::DrainCause;

/// How long a connect or a command may take before it fails: short, so a
/// crawl whose Redis went away falls back to its local balancer at once.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The setting that holds the URL, named in every connect error.
const URL_SETTING: &str = "SPLASH_CLUSTER_REDIS_URL (redis_url)";

/// How to reach the fleet's Redis and how its keys are named.
#[derive(Clone)]
pub struct FleetOptions {
    /// `redis://[user][:password@]host[:port][/db]` or `rediss://...` (TLS).
    pub url: String,
    /// The start of every key, as the hash tag `{<key_prefix>}`; processes
    /// with the same prefix on the same Redis form one fleet.
    pub key_prefix: String,
    /// How long a lease, and a process's heartbeat, lives past its last
    /// renewal: a crawler that dies frees its slots after this long.
    pub lease_ttl: Duration,
    /// Whether this process runs adaptive limits. One fleet, one setting:
    /// the take script caps every process at the fleet's limits, so a
    /// process without them would be held at limits nobody moves. The first
    /// process to join decides; one that differs is refused.
    pub adaptive: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "splash_cluster".to_owned(),
            lease_ttl: Duration::from_secs(15),
            adaptive: false,
        }
    }
}

impl fmt::Debug for FleetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetOptions")
            .field("url", &mask_password(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

/// One Splash node as this process knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    /// The node's URL without credentials, e.g. `http://10.0.0.5:8050`:
    /// processes share a node when they name the same URL.
    pub key: String,
    /// Renders in flight at most on the node, all processes together.
    pub maxconn: usize,
    /// The node's share of the load relative to the others.
    pub weight: u32,
}

/// A node a request may go to, as [`Fleet::take`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetCandidate {
    /// The node's index in the nodes given to [`Fleet::connect`].
    pub node: usize,
    /// Whether this request already tried the node (a retry avoids it).
    pub tried: bool,
    /// Whether the node holds the request's saved Splash arguments.
    pub preferred: bool,
}

/// One render's claim on a slot, unique in the fleet: `<process id>:<counter>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(pub String);

/// A slot taken by [`Fleet::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The node's index in the nodes given to [`Fleet::connect`].
    pub node: usize,
    /// The lease to renew while the render runs and release when it ends.
    pub lease: LeaseId,
}

/// The fleet as Redis sees it, returned by [`Fleet::renew`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetView {
    /// Per node (in the pool's order: at connect, then as DNS adds them), renders in flight in every process.
    pub in_flight: Vec<usize>,
    /// Per node, `Some(reason)` when the fleet's verdict is DOWN.
    pub down: Vec<Option<String>>,
    /// Per node, whether an operator drained it for the fleet.
    pub drained_by_operator: Vec<bool>,
    /// Per node, the peak RSS over its limit (bytes) the prober found.
    pub over_maxrss: Vec<Option<(u64, u64)>>,
    /// Per node, the fleet's adaptive limit (none when adaptive limits are
    /// off, or before the first process turned them on).
    pub limits: Vec<Option<FleetLimit>>,
    /// The ids of the live processes (this one included), sorted.
    pub processes: Vec<String>,
    /// This process's id.
    pub me: String,
}

/// A node's adaptive limit as the fleet holds it: `"<limit> <best>"`, the
/// best a share of the render budget, or `-` before one is known. The
/// prober process decides it; every process adopts it and the take script
/// caps the node's renders, every process's counted, at it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetLimit {
    /// Renders the node may have in flight, every process counted.
    pub limit: usize,
    /// The node's best latency at no load, as a share of the render budget.
    pub best: Option<f64>,
}

impl FleetLimit {
    /// What the fleet starts from: slow start at 1, no best yet.
    pub const START: FleetLimit = FleetLimit {
        limit: 1,
        best: None,
    };

    fn parse(value: &str) -> Option<Self> {
        let (limit, best) = value.split_once(' ')?;
        let best = match best {
            "-" => None,
            best => Some(
                best.parse::<f64>()
                    .ok()
                    .filter(|b| b.is_finite() && *b > 0.0)?,
            ),
        };
        Some(Self {
            limit: limit.parse().ok().filter(|&l| l >= 1)?,
            best,
        })
    }

    fn format(&self) -> String {
        match self.best {
            Some(best) => format!("{} {best}", self.limit),
            None => format!("{} -", self.limit),
        }
    }
}

/// A `--maxrss` drain as the fleet holds it: `"<peak> <limit>"` in bytes.
fn parse_rss_drain(detail: &str) -> Option<(u64, u64)> {
    let (peak, limit) = detail.split_once(' ')?;
    Some((peak.parse().ok()?, limit.parse().ok()?))
}

/// What went wrong talking to the fleet's Redis. The URL in a message is
/// always shown with its password masked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetError {
    /// The URL does not parse as a Redis URL.
    BadUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key prefix cannot serve as a hash tag.
    BadKeyPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// Nothing accepts connections at that address.
    Refused {
        /// The URL, password masked.
        url: String,
        /// The error as the system reports it.
        detail: String,
    },
    /// Redis refused the credentials, or wants some and got none.
    AuthFailed {
        /// The URL, password masked.
        url: String,
        /// Redis's answer.
        detail: String,
    },
    /// Connecting failed otherwise (unknown host, timeout, TLS, ...).
    Connect {
        /// The URL, password masked.
        url: String,
        /// The error.
        detail: String,
    },
    /// A command failed after the fleet was connected (Redis gone away,
    /// timed out, or answered an error).
    Command {
        /// The URL, password masked.
        url: String,
        /// The operation: take, release, renew, restore, verdict, prober.
        op: &'static str,
        /// The error.
        detail: String,
    },
    /// The fleet's processes run adaptive limits and this one does not, or
    /// the other way round.
    AdaptiveMismatch {
        /// The key prefix: the fleet.
        prefix: String,
        /// Whether the fleet runs adaptive limits.
        fleet: bool,
    },
    /// The caller passed something the fleet cannot use (a bug, not a
    /// Redis problem).
    InvalidArgument(String),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl { url, reason } => write!(
                f,
                "{URL_SETTING} {url:?} is not a Redis URL ({reason}): give \
                 redis://[:password@]host[:port][/db] or rediss://... for TLS"
            ),
            Self::BadKeyPrefix { prefix } => write!(
                f,
                "SPLASH_CLUSTER_REDIS_KEY_PREFIX {prefix:?} cannot be used: it must be \
                 non-empty and without '{{' or '}}' (it becomes the keys' hash tag)"
            ),
            Self::Refused { url, detail } => write!(
                f,
                "cannot connect to the Redis of {URL_SETTING} {url}: connection refused \
                 ({detail}); start redis-server there or fix the URL"
            ),
            Self::AuthFailed { url, detail } => write!(
                f,
                "Redis at {URL_SETTING} {url} refused authentication ({detail}); \
                 put the right password in the URL (redis://:password@host:port)"
            ),
            Self::Connect { url, detail } => write!(
                f,
                "cannot connect to the Redis of {URL_SETTING} {url}: {detail}; \
                 check the host, port and TLS scheme of the URL"
            ),
            Self::Command { url, op, detail } => {
                write!(f, "the fleet's Redis at {url} failed on {op}: {detail}")
            }
            Self::AdaptiveMismatch { prefix, fleet } => {
                let py = |on: bool| if on { "True" } else { "False" };
                write!(
                    f,
                    "the fleet of SPLASH_CLUSTER_REDIS_KEY_PREFIX {prefix:?} runs with \
                     SPLASH_CLUSTER_ADAPTIVE = {} (set by the first crawler to join) and this \
                     crawler has {}: give every crawler of one fleet the same \
                     SPLASH_CLUSTER_ADAPTIVE, or this one another key prefix",
                    py(*fleet),
                    py(!*fleet)
                )
            }
            Self::InvalidArgument(what) => write!(f, "invalid fleet argument: {what}"),
        }
    }
}

impl std::error::Error for FleetError {}

/// The scripts, each with the prelude before it.
struct Scripts {
    register: Script,
    take: Script,
    release: Script,
    renew: Script,
    restore: Script,
    verdict: Script,
    prober: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_prelude =
        |body: &str| Script::new(&format!("{}\n{body}", include_str!("fleet/prelude.lua")));
    Scripts {
        register: with_prelude(include_str!("fleet/register.lua")),
        take: with_prelude(include_str!("fleet/take.lua")),
        release: with_prelude(include_str!("fleet/release.lua")),
        renew: with_prelude(include_str!("fleet/renew.lua")),
        restore: with_prelude(include_str!("fleet/restore.lua")),
        verdict: with_prelude(include_str!("fleet/verdict.lua")),
        prober: with_prelude(include_str!("fleet/prober.lua")),
    }
});

/// The names of a fleet's keys, all under one hash tag.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    nodes: String,
    verdicts: String,
    processes: String,
    prober: String,
    events: String,
    /// The prefix, for the keys of nodes that join later.
    prefix: String,
}

impl Keys {
    /// The key of a node's leases, for readers of the layout.
    pub(crate) fn leases_of(prefix: &str, node_key: &str) -> String {
        format!("{{{prefix}}}:leases:{node_key}")
    }

    /// The fleet-wide keys: nodes, verdicts, processes, prober.
    pub(crate) fn fleet_keys(prefix: &str) -> [String; 4] {
        let keys = Keys::new(prefix);
        [keys.nodes, keys.verdicts, keys.processes, keys.prober]
    }

    fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}}}");
        Self {
            nodes: format!("{tag}:nodes"),
            verdicts: format!("{tag}:verdicts"),
            processes: format!("{tag}:processes"),
            prober: format!("{tag}:prober"),
            events: format!("{tag}:events"),
            prefix: prefix.to_owned(),
        }
    }
}

/// The fleet's nodes as this process knows them, by index (the pool's).
#[derive(Debug, Default)]
struct Members {
    nodes: Vec<FleetNode>,
    /// `"maxconn weight"` per node, as scripts take it.
    specs: Vec<String>,
    /// `{p}:leases:<node key>` per node.
    leases: Vec<String>,
}

impl Members {
    fn index(&self, node: usize) -> Result<usize, FleetError> {
        if node < self.nodes.len() {
            Ok(node)
        } else {
            Err(FleetError::InvalidArgument(format!(
                "node index {node} out of range: the fleet knows {} nodes",
                self.nodes.len()
            )))
        }
    }

    fn push(&mut self, prefix: &str, node: FleetNode) {
        self.specs.push(format!("{} {}", node.maxconn, node.weight));
        self.leases.push(Keys::leases_of(prefix, &node.key));
        self.nodes.push(node);
    }
}

/// This process's membership of a shared fleet: one multiplexed Redis
/// connection (reconnecting) and the scripts that run the fleet's slots,
/// verdicts and prober lock. Cheap to share behind an `Arc`.
pub struct Fleet {
    client: Client,
    manager: ConnectionManager,
    keys: Keys,
    /// The nodes, in the order they joined (at connect, then from DNS).
    members: RwLock<Members>,
    ttl_ms: u64,
    /// Whether this process runs adaptive limits (see [`FleetOptions`]).
    adaptive: bool,
    process_id: String,
    next_lease: AtomicU64,
    /// The URL with its password masked, for messages.
    shown_url: String,
    /// The password, to scrub from any error text Redis or the driver gives.
    password: Option<String>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("url", &self.shown_url)
            .field("process_id", &self.process_id)
            .field("nodes", &self.members().nodes)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects (`redis://` and `rediss://`, with password), checks AUTH,
    /// registers this process and the nodes. A node's maxconn and weight:
    /// the first registered value holds; the returned warnings name each
    /// disagreement with both values, for the caller to log.
    pub async fn connect(
        options: FleetOptions,
        nodes: Vec<FleetNode>,
    ) -> Result<(Fleet, Vec<String>), FleetError> {
        let shown_url = mask_password(&options.url);
        let prefix = &options.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(FleetError::BadKeyPrefix {
                prefix: prefix.clone(),
            });
        }
        validate_nodes(&nodes)?;
        let ttl_ms = u64::try_from(options.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(FleetError::InvalidArgument(
                "the lease TTL must be at least 1 ms".to_owned(),
            ));
        }
        if options.url.starts_with("rediss://") {
            // rustls needs one process-wide crypto provider; installing it
            // twice is harmless (the second call changes nothing).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(options.url.as_str()).map_err(|e| FleetError::BadUrl {
            url: shown_url.clone(),
            reason: scrub(&e.to_string(), password_of(&options.url).as_deref()),
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        let connect_error =
            |e: RedisError| classify_connect_error(&e, &shown_url, password.as_deref());

        // A plain connection first: it fails at once and precisely, where the
        // manager would retry with backoff.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(connect_error)?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(connect_error)?;
        drop(probe);

        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(connect_error)?;

        let mut members = Members::default();
        for node in nodes {
            members.push(prefix, node);
        }
        let fleet = Fleet {
            keys: Keys::new(prefix),
            members: RwLock::new(members),
            client,
            manager,
            ttl_ms,
            adaptive: options.adaptive,
            process_id: new_process_id(),
            next_lease: AtomicU64::new(0),
            shown_url,
            password,
        };
        let warnings = fleet.register().await?;
        Ok((fleet, warnings))
    }

    /// Registers the process and the nodes; the disagreements as warnings.
    async fn register(&self) -> Result<Vec<String>, FleetError> {
        let mut invocation = SCRIPTS.register.prepare_invoke();
        let mode = if self.adaptive { "on" } else { "off" };
        invocation
            .key(&self.keys.nodes)
            .key(&self.keys.processes)
            .key(&self.keys.verdicts)
            .arg(self.ttl_ms)
            .arg(&self.process_id)
            .arg(mode);
        {
            let members = self.members();
            for (node, spec) in members.nodes.iter().zip(&members.specs) {
                invocation.arg(&node.key).arg(spec);
            }
        }
        let answer: Vec<String> = invocation
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("register", &e))?;
        let (fleet_mode, disagreements) = answer.split_first().ok_or_else(|| {
            self.command_error(
                "register",
                &RedisError::from((ErrorKind::Parse, "empty answer")),
            )
        })?;
        if fleet_mode != mode {
            return Err(FleetError::AdaptiveMismatch {
                prefix: self.keys.prefix.clone(),
                fleet: fleet_mode == "on",
            });
        }
        let mut warnings = Vec::new();
        for pair in disagreements.chunks(2) {
            let [key, registered] = pair else { break };
            let members = self.members();
            let ours = members.nodes.iter().find(|n| &n.key == key);
            let (theirs_maxconn, theirs_weight) =
                registered.split_once(' ').unwrap_or((registered, "?"));
            if let Some(ours) = ours {
                warnings.push(format!(
                    "node {key}: the fleet has maxconn {theirs_maxconn} weight {theirs_weight} \
                     (registered first, by another process); this process's maxconn {} \
                     weight {} is ignored while the fleet lives",
                    ours.maxconn, ours.weight
                ));
            }
        }
        Ok(warnings)
    }

    /// One atomic script: among the candidates that are not DOWN by the
    /// fleet's verdict and below their registered maxconn counting every
    /// process's unexpired leases, picks untried first, then preferred, then
    /// the least `(in_flight + 1) / weight`, ties going to the first from
    /// position `start` of `candidates` round (as
    /// [`LeastConn`](super::selection::LeastConn)'s rotation); adds the lease
    /// with expiry = server TIME + TTL. `None` when none can take it.
    pub async fn take(
        &self,
        candidates: &[FleetCandidate],
        start: usize,
    ) -> Result<Option<Taken>, FleetError> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let lease = self.new_lease();
        let mut invocation = SCRIPTS.take.prepare_invoke();
        invocation
            .key(&self.keys.nodes)
            .key(&self.keys.verdicts)
            .arg(self.ttl_ms)
            .arg(&lease.0)
            .arg(start % candidates.len());
        {
            let members = self.members();
            for candidate in candidates {
                let node = members.index(candidate.node)?;
                let rank = u8::from(candidate.tried) * 2 + u8::from(!candidate.preferred);
                invocation
                    .key(&members.leases[node])
                    .arg(&members.nodes[node].key)
                    .arg(rank)
                    .arg(&members.specs[node]);
            }
        }
        let chosen: usize = invocation
            .invoke_async(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("take", &e))?;
        Ok(chosen.checked_sub(1).map(|position| Taken {
            node: candidates[position].node,
            lease,
        }))
    }

    /// Gives leases back (one call for a batch) and publishes one release
    /// notice on the fleet's channel. A lease already expired or released
    /// is ignored.
    pub async fn release(&self, leases: &[(usize, LeaseId)]) -> Result<(), FleetError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut invocation = SCRIPTS.release.prepare_invoke();
        invocation.arg(&self.keys.events);
        self.add_leases_by_node(&mut invocation, leases)?;
        invocation
            .invoke_async::<usize>(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("release", &e))?;
        Ok(())
    }

    /// Renews these leases (one call, a batch, ZADD XX semantics: an expired
    /// or released lease is not revived), refreshes this process's heartbeat
    /// (same TTL), and returns the fleet as Redis sees it.
    pub async fn renew(&self, leases: &[(usize, LeaseId)]) -> Result<FleetView, FleetError> {
        let by_node = self.group_by_node(leases)?;
        let mut invocation = SCRIPTS.renew.prepare_invoke();
        invocation
            .key(&self.keys.nodes)
            .key(&self.keys.verdicts)
            .key(&self.keys.processes)
            .arg(self.ttl_ms)
            .arg(&self.process_id);
        {
            let members = self.members();
            for (node, ids) in by_node.iter().enumerate() {
                invocation
                    .key(&members.leases[node])
                    .arg(&members.nodes[node].key)
                    .arg(&members.specs[node])
                    .arg(ids.len())
                    .arg(ids);
            }
        }
        type Renewed = (
            Vec<usize>,
            Vec<Option<String>>,
            Vec<String>,
            Vec<Option<String>>,
            Vec<Option<String>>,
            Vec<Option<String>>,
        );
        let (in_flight, verdicts, mut processes, by_operator, over_maxrss, limits): Renewed =
            invocation
                .invoke_async(&mut self.manager.clone())
                .await
                .map_err(|e| self.command_error("renew", &e))?;
        processes.sort();
        let down = verdicts
            .into_iter()
            .map(|v| v.map(|v| v.strip_prefix("DOWN ").unwrap_or(&v).to_owned()))
            .collect();
        Ok(FleetView {
            in_flight,
            down,
            drained_by_operator: by_operator.iter().map(Option::is_some).collect(),
            over_maxrss: over_maxrss
                .iter()
                .map(|v| v.as_deref().and_then(parse_rss_drain))
                .collect(),
            // A value no process of ours wrote (a hand edit, another
            // version) counts as none: the prober writes its own again.
            limits: limits
                .iter()
                .map(|v| v.as_deref().and_then(FleetLimit::parse))
                .collect(),
            processes,
            me: self.process_id.clone(),
        })
    }

    /// Re-registers leases this process holds (after Redis came back
    /// without them): adds them if absent, expiring one TTL from now. They
    /// count even where they put a node above maxconn: the renders are real.
    pub async fn restore(&self, leases: &[(usize, LeaseId)]) -> Result<(), FleetError> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut invocation = SCRIPTS.restore.prepare_invoke();
        invocation.arg(self.ttl_ms);
        self.add_leases_by_node(&mut invocation, leases)?;
        invocation
            .invoke_async::<usize>(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("restore", &e))?;
        Ok(())
    }

    /// Sets a node's verdict for the whole fleet (`Some(reason)`: DOWN,
    /// `None`: UP), and publishes it when it changed.
    pub async fn set_verdict(&self, node: usize, down: Option<&str>) -> Result<(), FleetError> {
        let key = self.node_key(node)?;
        let value = down.map_or_else(String::new, |reason| format!("DOWN {reason}"));
        SCRIPTS
            .verdict
            .key(&self.keys.verdicts)
            .arg(&self.keys.events)
            .arg(key)
            .arg(value)
            .arg(self.ttl_ms)
            .invoke_async::<u8>(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("verdict", &e))?;
        Ok(())
    }

    /// Sets or clears one of a node's drains for the whole fleet
    /// (`operator`: `Some("1")`; `maxrss`: `Some("<peak> <limit>")`), and
    /// publishes it when it changed.
    pub async fn set_drain(
        &self,
        node: usize,
        cause: DrainCause,
        detail: Option<&str>,
    ) -> Result<(), FleetError> {
        let field = format!("drain:{}:{}", cause.as_str(), self.node_key(node)?);
        SCRIPTS
            .verdict
            .key(&self.keys.verdicts)
            .arg(&self.keys.events)
            .arg(field)
            .arg(detail.unwrap_or(""))
            .arg(self.ttl_ms)
            .invoke_async::<u8>(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("verdict", &e))?;
        Ok(())
    }

    /// Sets a node's adaptive limit for the whole fleet (the prober
    /// process's decision), and publishes it when it changed: a higher
    /// limit frees slots other processes wait for. With `only_if_absent`,
    /// sets it only where the fleet has none yet (the start of a fleet).
    pub async fn set_limit(
        &self,
        node: usize,
        limit: FleetLimit,
        only_if_absent: bool,
    ) -> Result<(), FleetError> {
        let field = format!("limit:{}", self.node_key(node)?);
        let mut invocation = SCRIPTS.verdict.prepare_invoke();
        invocation
            .key(&self.keys.verdicts)
            .arg(&self.keys.events)
            .arg(field)
            .arg(limit.format())
            .arg(self.ttl_ms);
        if only_if_absent {
            invocation.arg("NX");
        }
        invocation
            .invoke_async::<u8>(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("verdict", &e))?;
        Ok(())
    }

    /// A tokio task that subscribes to the fleet's channel (a dedicated
    /// pub/sub connection, made again when lost) and calls `notify_waiters`
    /// on `notify` for every release or verdict notice, and each time it
    /// (re)subscribes, since notices sent meanwhile are lost. Runs until
    /// the handle is aborted.
    pub fn watch(&self, notify: Arc<Notify>) -> JoinHandle<()> {
        let client = self.client.clone();
        let channel = self.keys.events.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                if let Ok(Ok(mut pubsub)) =
                    tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await
                {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        backoff = Duration::from_millis(50);
                        notify.notify_waiters();
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            notify.notify_waiters();
                        }
                    }
                }
                // Lost or not made: wake the waiters (they check again) and retry.
                notify.notify_waiters();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        })
    }

    /// The prober lock: takes it if free or renews it if ours (PX `ttl`,
    /// value = our process id); `false` if another process holds it.
    pub async fn lead_probes(&self, ttl: Duration) -> Result<bool, FleetError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        SCRIPTS
            .prober
            .key(&self.keys.prober)
            .arg(&self.process_id)
            .arg(ttl_ms)
            .invoke_async::<bool>(&mut self.manager.clone())
            .await
            .map_err(|e| self.command_error("prober", &e))
    }

    /// A lease id never used before in the fleet: `<process id>:<counter>`.
    pub fn new_lease(&self) -> LeaseId {
        let n = self.next_lease.fetch_add(1, Ordering::Relaxed);
        LeaseId(format!("{}:{n}", self.process_id))
    }

    /// This process's id in the fleet, `<host>/<pid>/<random>`.
    pub fn process_id(&self) -> &str {
        &self.process_id
    }

    /// Leases grouped by node as release and restore take them: one key per
    /// node, and per key the count then the ids.
    fn add_leases_by_node(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        leases: &[(usize, LeaseId)],
    ) -> Result<(), FleetError> {
        let by_node = self.group_by_node(leases)?;
        let members = self.members();
        for (node, ids) in by_node.iter().enumerate() {
            if !ids.is_empty() {
                invocation
                    .key(&members.leases[node])
                    .arg(ids.len())
                    .arg(ids);
            }
        }
        Ok(())
    }

    /// The lease ids per node, in the pool's order.
    fn group_by_node<'a>(
        &self,
        leases: &'a [(usize, LeaseId)],
    ) -> Result<Vec<Vec<&'a str>>, FleetError> {
        let members = self.members();
        let mut by_node = vec![Vec::new(); members.nodes.len()];
        for (node, lease) in leases {
            by_node[members.index(*node)?].push(lease.0.as_str());
        }
        Ok(by_node)
    }

    fn members(&self) -> RwLockReadGuard<'_, Members> {
        self.members.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A node's key (its URL without credentials), checked.
    fn node_key(&self, node: usize) -> Result<String, FleetError> {
        let members = self.members();
        Ok(members.nodes[members.index(node)?].key.clone())
    }

    /// Adds a node that joined after connect (a new address of a name in
    /// DNS), at the next index: the pool's index for it. Redis learns its
    /// maxconn and weight from the next take or renewal (HSETNX: a value
    /// another process registered first holds).
    pub fn add_node(&self, node: FleetNode) -> Result<usize, FleetError> {
        validate_nodes(std::slice::from_ref(&node))?;
        let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
        if members.nodes.iter().any(|n| n.key == node.key) {
            // Two indices on one key would share its leases and its limit.
            return Err(FleetError::InvalidArgument(format!(
                "{} is a node of the fleet already",
                node.key
            )));
        }
        members.push(&self.keys.prefix, node);
        Ok(members.nodes.len() - 1)
    }

    fn command_error(&self, op: &'static str, e: &RedisError) -> FleetError {
        FleetError::Command {
            url: self.shown_url.clone(),
            op,
            detail: scrub(&e.to_string(), self.password.as_deref()),
        }
    }
}

/// Node keys must be unique, without credentials (they are stored in
/// Redis), and maxconn and weight at least 1.
fn validate_nodes(nodes: &[FleetNode]) -> Result<(), FleetError> {
    for (i, node) in nodes.iter().enumerate() {
        let invalid = |why: &str| {
            FleetError::InvalidArgument(format!("node {i} ({}): {why}", mask_password(&node.key)))
        };
        if node.key.is_empty() {
            return Err(invalid("empty key"));
        }
        if mask_password(&node.key) != node.key || node.key.contains('@') {
            return Err(invalid("the key must be the URL without credentials"));
        }
        if node.maxconn == 0 || node.weight == 0 {
            return Err(invalid("maxconn and weight must be at least 1"));
        }
        if nodes[..i].iter().any(|other| other.key == node.key) {
            return Err(invalid("listed twice"));
        }
    }
    Ok(())
}

/// Tells a refused connection and a failed AUTH from the rest.
pub(crate) fn classify_connect_error(
    e: &RedisError,
    url: &str,
    password: Option<&str>,
) -> FleetError {
    let detail = scrub(&e.to_string(), password);
    let url = url.to_owned();
    let auth_failed = e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"));
    if auth_failed {
        FleetError::AuthFailed { url, detail }
    } else if e.is_connection_refusal() {
        FleetError::Refused { url, detail }
    } else if e.kind() == ErrorKind::InvalidClientConfig {
        FleetError::BadUrl {
            url,
            reason: detail,
        }
    } else {
        FleetError::Connect { url, detail }
    }
}

/// The password of a URL that may not parse, to scrub from messages.
pub(crate) fn password_of(url: &str) -> Option<String> {
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let userinfo = &rest[..rest.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p.to_owned())
}

/// `text` with every occurrence of the password masked.
fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => text.replace(p, "***"),
        _ => text.to_owned(),
    }
}

/// `<host>/<pid>/<random>`: readable in `splash-cluster status`, unique
/// across hosts (containers often share a pid) and restarts.
fn new_process_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let mut random = [0u8; 4];
    // Without entropy the pid and host still tell processes apart mostly.
    let _ = getrandom::fill(&mut random);
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        u32::from_le_bytes(random)
    )
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;

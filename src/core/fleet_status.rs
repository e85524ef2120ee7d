//! The fleet as Redis holds it, read without joining it: what
//! `splash-cluster status --redis URL` prints. Read-only, and not atomic
//! (a status line, not a decision): one pipeline of plain reads.

use std::time::Duration;

use redis::Client;

use super::config::mask_password;
use super::fleet::{classify_connect_error, password_of, FleetError, Keys};

/// One node of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNodeStatus {
    /// The node's URL, as the fleet names it.
    pub key: String,
    /// The registered maxconn.
    pub maxconn: usize,
    /// The registered weight.
    pub weight: u32,
    /// Unexpired leases: renders in flight, every process counted.
    pub in_flight: usize,
    /// The fleet's DOWN verdict, with its reason.
    pub down: Option<String>,
}

/// The whole fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    /// Its nodes, by URL.
    pub nodes: Vec<FleetNodeStatus>,
    /// Its live processes.
    pub processes: Vec<String>,
    /// The process that probes for it.
    pub prober: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(2);

/// The first pipeline's replies: server TIME, the nodes' specs, the
/// verdicts, the prober.
type Heads = (
    Vec<u64>,
    Vec<(String, String)>,
    Vec<(String, String)>,
    Option<String>,
);

/// Reads the fleet under `prefix` from the Redis at `url`.
pub async fn read(url: &str, prefix: &str) -> Result<FleetStatus, FleetError> {
    let shown = mask_password(url);
    let password = password_of(url);
    let client =
        Client::open(url).map_err(|e| classify_connect_error(&e, &shown, password.as_deref()))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let fail = |e: redis::RedisError| classify_connect_error(&e, &shown, password.as_deref());
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(fail)?;
    let [nodes_key, verdicts_key, processes_key, prober_key] = Keys::fleet_keys(prefix);
    let (time, nodes, verdicts, prober): Heads = redis::pipe()
        .cmd("TIME")
        .hgetall(&nodes_key)
        .hgetall(&verdicts_key)
        .get(&prober_key)
        .query_async(&mut connection)
        .await
        .map_err(fail)?;
    let now_ms =
        time.first().copied().unwrap_or(0) * 1000 + time.get(1).copied().unwrap_or(0) / 1000;
    let mut pipe = redis::pipe();
    pipe.zrangebyscore(&processes_key, format!("({now_ms}"), "+inf");
    for (key, _) in &nodes {
        pipe.zcount(Keys::leases_of(prefix, key), format!("({now_ms}"), "+inf");
    }
    let mut replies: Vec<redis::Value> = pipe.query_async(&mut connection).await.map_err(fail)?;
    let counts: Vec<usize> = replies
        .split_off(1)
        .into_iter()
        .map(|v| redis::from_redis_value(v).unwrap_or(0))
        .collect();
    let processes: Vec<String> = replies
        .pop()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or_default();
    let mut statuses: Vec<FleetNodeStatus> = nodes
        .into_iter()
        .zip(counts)
        .map(|((key, spec), in_flight)| {
            let (maxconn, weight) = spec.split_once(' ').unwrap_or((&spec, "1"));
            let down = verdicts
                .iter()
                .find(|(node, _)| *node == key)
                .map(|(_, v)| v.strip_prefix("DOWN ").unwrap_or(v).to_owned());
            FleetNodeStatus {
                maxconn: maxconn.parse().unwrap_or(0),
                weight: weight.parse().unwrap_or(1),
                in_flight,
                down,
                key,
            }
        })
        .collect();
    statuses.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(FleetStatus {
        nodes: statuses,
        processes,
        prober,
    })
}

//! What the cluster reports about itself: one snapshot of every node, the
//! admission queue and the request totals, rendered as JSON, as Prometheus
//! text and as an HTML page. Pure functions of the snapshot, so every format
//! is tested without a server.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::discovery::{NameReport, NamesStatus};
use super::error::ClusterError;
use super::fleet_slots::FleetReport;
use super::node::NodeSnapshot;
use super::pool::{Pool, QueueStats};

/// How cluster requests ended, counted as they end.
#[derive(Debug, Default)]
pub struct RequestTotals {
    started: AtomicU64,
    answered: AtomicU64,
    no_node_available: AtomicU64,
    all_attempts_failed: AtomicU64,
    timeout: AtomicU64,
    too_large: AtomicU64,
    closed: AtomicU64,
    invalid: AtomicU64,
    poisoned: AtomicU64,
    cancelled: AtomicU64,
    retries_denied: AtomicU64,
}

/// A copy of the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TotalsSnapshot {
    /// Requests received.
    pub started: u64,
    /// Requests that ended with a node's answer.
    pub answered: u64,
    /// Requests that ended in an error, by kind.
    pub errors: [(&'static str, u64); 7],
    /// Requests whose caller gave up on them (the future was dropped).
    pub cancelled: u64,
    /// 504 retries the retry budget refused.
    pub retries_denied: u64,
}

impl TotalsSnapshot {
    /// Requests neither answered, failed nor cancelled yet. Never below 0:
    /// the counters are read one by one while requests end.
    pub fn in_progress(&self) -> u64 {
        let ended =
            self.answered + self.cancelled + self.errors.iter().map(|(_, v)| v).sum::<u64>();
        self.started.saturating_sub(ended)
    }
}

impl RequestTotals {
    /// Counts a request that starts.
    pub fn start(&self) {
        self.started.fetch_add(1, Ordering::Release);
    }

    /// Counts how a request ended.
    pub fn finish<T>(&self, result: &Result<T, ClusterError>) {
        let counter = match result {
            Ok(_) => &self.answered,
            Err(ClusterError::NoNodeAvailable { .. }) => &self.no_node_available,
            Err(ClusterError::AllAttemptsFailed { .. }) => &self.all_attempts_failed,
            Err(ClusterError::Timeout { .. }) => &self.timeout,
            Err(ClusterError::ResponseTooLarge { .. }) => &self.too_large,
            Err(ClusterError::Closed { .. }) => &self.closed,
            Err(ClusterError::InvalidRequest(_)) => &self.invalid,
            Err(ClusterError::Poisoned { .. }) => &self.poisoned,
        };
        counter.fetch_add(1, Ordering::Release);
    }

    /// Counts a request whose caller dropped it before it ended.
    pub fn cancel(&self) {
        self.cancelled.fetch_add(1, Ordering::Release);
    }

    /// Counts a 504 retry the budget refused.
    pub fn deny_retry(&self) {
        self.retries_denied.fetch_add(1, Ordering::Release);
    }

    /// The totals now.
    pub fn snapshot(&self) -> TotalsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Acquire);
        // The ends are read before the starts (each an acquire of the
        // count's release): a request seen as ended is then seen as started,
        // so `in_progress` does not go negative from a request that starts
        // and ends between two reads.
        let ends = TotalsSnapshot {
            started: 0,
            answered: get(&self.answered),
            errors: [
                ("no_node_available", get(&self.no_node_available)),
                ("all_attempts_failed", get(&self.all_attempts_failed)),
                ("timeout", get(&self.timeout)),
                ("response_too_large", get(&self.too_large)),
                ("closed", get(&self.closed)),
                ("invalid_request", get(&self.invalid)),
                ("poisoned", get(&self.poisoned)),
            ],
            cancelled: get(&self.cancelled),
            retries_denied: get(&self.retries_denied),
        };
        TotalsSnapshot {
            started: get(&self.started),
            ..ends
        }
    }
}

/// Everything the stats page shows, at one instant.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// Every node.
    pub nodes: Vec<NodeSnapshot>,
    /// The admission queue.
    pub queue: QueueStats,
    /// Request totals.
    pub totals: TotalsSnapshot,
    /// Since the cluster started.
    pub uptime: Duration,
    /// The fleet this process shares its nodes with, if any.
    pub fleet: Option<FleetReport>,
    /// The names followed in DNS.
    pub dns: Vec<NameReport>,
}

/// Where reports come from: the pool and the totals of one cluster.
#[derive(Clone)]
pub struct ReportSource {
    pool: Pool,
    totals: Arc<RequestTotals>,
    names: NamesStatus,
    started: Instant,
}

impl ReportSource {
    /// A source over this pool and these totals.
    pub fn new(pool: Pool, totals: Arc<RequestTotals>) -> Self {
        Self {
            pool,
            totals,
            names: NamesStatus::default(),
            started: Instant::now(),
        }
    }

    /// The names followed in DNS, filled in by the discovery task.
    pub fn names(&self) -> &NamesStatus {
        &self.names
    }

    /// The pool reported on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The report now.
    pub fn report(&self) -> ClusterReport {
        ClusterReport {
            nodes: self.pool.snapshot(),
            queue: self.pool.queue_stats(),
            totals: self.totals.snapshot(),
            uptime: self.started.elapsed(),
            fleet: self.pool.fleet_report(),
            dns: self.names.report(),
        }
    }
}

const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Whether the node answers: UP, on its way down, or draining.
fn reachable(n: &NodeSnapshot) -> bool {
    matches!(n.state, "UP" | "GOING DOWN" | "DRAIN")
}

fn node_json(n: &NodeSnapshot) -> Value {
    let c = &n.counters;
    json!({
        "url": n.url,
        "state": n.state,
        "reason": n.reason,
        "since_seconds": n.since.as_secs_f64(),
        "in_flight": n.in_flight,
        "maxconn": n.maxconn,
        "limit": n.limit,
        "weight": n.weight,
        "requests": c.requests,
        "responses": CLASSES.iter().zip(c.responses).map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "failures": c.failures,
        "render_timeouts": c.render_timeouts,
        "expired_args": c.expired_args,
        "retries": c.retries,
        "redispatches": c.redispatches,
        "abandoned": c.abandoned,
        "downs": c.downs,
        "ups": c.ups,
        "drain": n.drain,
        "peak_rss_bytes": n.peak_rss,
        "maxrss_bytes": n.maxrss,
        "last_probe": n.last_probe.as_ref().map(|p| json!({
            "ok": p.ok,
            "detail": p.detail,
            "latency_seconds": p.latency.as_secs_f64(),
            "age_seconds": p.age.as_secs_f64(),
        })),
    })
}

impl ClusterReport {
    /// The report as JSON (`/stats.json`).
    pub fn to_json(&self) -> Value {
        json!({
            "uptime_seconds": self.uptime.as_secs_f64(),
            "nodes": self.nodes.iter().map(node_json).collect::<Vec<_>>(),
            "queue": {
                "waiting": self.queue.waiting,
                "oldest_wait_seconds": self.queue.oldest_wait.as_secs_f64(),
                "waits": self.queue.waits,
                "timeouts": self.queue.timeouts,
            },
            "totals": {
                "requests": self.totals.started,
                "answered": self.totals.answered,
                "in_progress": self.totals.in_progress(),
                "cancelled": self.totals.cancelled,
                "errors": self.totals.errors.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "retries_denied": self.totals.retries_denied,
            },
            "dns": self.dns.iter().map(|n| json!({
                "name": n.name,
                "addresses": n.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "error": n.error,
                "seconds_since_resolved": n.resolved_ago.as_secs_f64(),
            })).collect::<Vec<_>>(),
            "fleet": self.fleet.as_ref().map(|f| json!({
                "mode": if f.shared { "shared" } else { "fallback" },
                "processes": f.processes,
                "process": f.me,
                "prober": f.prober,
                "in_flight": self.nodes.iter().zip(&f.in_flight)
                    .map(|(n, v)| (n.url.clone(), json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
            })),
        })
    }

    /// The report in Prometheus' text exposition format (`/metrics`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_node = |f: &dyn Fn(&NodeSnapshot) -> f64| -> Vec<(String, f64)> {
            self.nodes
                .iter()
                .map(|n| (format!("{{node=\"{}\"}}", escape_label(&n.url)), f(n)))
                .collect()
        };
        family(
            "splash_cluster_node_up",
            "gauge",
            "Whether the node is reachable (1) or DOWN (0); a draining node is up.",
            per_node(&|n| f64::from(u8::from(reachable(n)))),
        );
        family(
            "splash_cluster_node_draining",
            "gauge",
            "Whether the node starts no new render (1: DRAIN, by an operator, its --maxrss or DNS).",
            per_node(&|n| f64::from(u8::from(!n.drain.is_empty()))),
        );
        family(
            "splash_cluster_node_peak_rss_bytes",
            "gauge",
            "The peak RSS the node's last /_ping reported (NaN: none yet).",
            per_node(&|n| n.peak_rss.map_or(f64::NAN, |b| b as f64)),
        );
        family(
            "splash_cluster_node_in_flight",
            "gauge",
            "Requests in flight on the node.",
            per_node(&|n| n.in_flight as f64),
        );
        family(
            "splash_cluster_node_maxconn",
            "gauge",
            "Requests in flight at most on the node.",
            per_node(&|n| n.maxconn as f64),
        );
        if self.nodes.iter().any(|n| n.limit.is_some()) {
            family(
                "splash_cluster_node_limit",
                "gauge",
                "Requests in flight at most on the node now: its adaptive limit, under maxconn.",
                per_node(&|n| n.limit.unwrap_or(n.maxconn) as f64),
            );
        }
        family(
            "splash_cluster_node_requests_total",
            "counter",
            "Attempts sent to the node.",
            per_node(&|n| n.counters.requests as f64),
        );
        let responses = self
            .nodes
            .iter()
            .flat_map(|n| {
                CLASSES
                    .iter()
                    .zip(n.counters.responses)
                    .map(move |(class, v)| {
                        (
                            format!("{{node=\"{}\",class=\"{class}\"}}", escape_label(&n.url)),
                            v as f64,
                        )
                    })
            })
            .collect();
        family(
            "splash_cluster_node_responses_total",
            "counter",
            "HTTP answers of the node by status class.",
            responses,
        );
        family(
            "splash_cluster_node_failures_total",
            "counter",
            "Attempts that failed by the node's fault.",
            per_node(&|n| n.counters.failures as f64),
        );
        family(
            "splash_cluster_node_render_timeouts_total",
            "counter",
            "504 GlobalTimeoutError answers of the node.",
            per_node(&|n| n.counters.render_timeouts as f64),
        );
        family(
            "splash_cluster_node_expired_args_total",
            "counter",
            "498 ExpiredArguments answers: saved arguments the node had lost.",
            per_node(&|n| n.counters.expired_args as f64),
        );
        family(
            "splash_cluster_node_retries_total",
            "counter",
            "Attempts on the node that were retries.",
            per_node(&|n| n.counters.retries as f64),
        );
        family(
            "splash_cluster_node_redispatches_total",
            "counter",
            "Retries that came to the node from another node.",
            per_node(&|n| n.counters.redispatches as f64),
        );
        family(
            "splash_cluster_node_abandoned_total",
            "counter",
            "Attempts given up when the node went DOWN.",
            per_node(&|n| n.counters.abandoned as f64),
        );
        family(
            "splash_cluster_node_down_transitions_total",
            "counter",
            "Times the node went DOWN.",
            per_node(&|n| n.counters.downs as f64),
        );
        family(
            "splash_cluster_node_probe_success",
            "gauge",
            "Whether the last health probe passed.",
            self.nodes
                .iter()
                .filter_map(|n| {
                    let p = n.last_probe.as_ref()?;
                    Some((
                        format!("{{node=\"{}\"}}", escape_label(&n.url)),
                        f64::from(u8::from(p.ok)),
                    ))
                })
                .collect(),
        );
        family(
            "splash_cluster_node_probe_latency_seconds",
            "gauge",
            "How long the last health probe took.",
            self.nodes
                .iter()
                .filter_map(|n| {
                    let p = n.last_probe.as_ref()?;
                    Some((
                        format!("{{node=\"{}\"}}", escape_label(&n.url)),
                        p.latency.as_secs_f64(),
                    ))
                })
                .collect(),
        );
        let q = &self.queue;
        family(
            "splash_cluster_queue_waiting",
            "gauge",
            "Requests waiting for a node.",
            vec![(String::new(), q.waiting as f64)],
        );
        family(
            "splash_cluster_queue_oldest_wait_seconds",
            "gauge",
            "How long the oldest waiting request has waited.",
            vec![(String::new(), q.oldest_wait.as_secs_f64())],
        );
        family(
            "splash_cluster_queue_waits_total",
            "counter",
            "Requests that had to wait for a node.",
            vec![(String::new(), q.waits as f64)],
        );
        family(
            "splash_cluster_queue_timeouts_total",
            "counter",
            "Requests that gave up waiting for a node.",
            vec![(String::new(), q.timeouts as f64)],
        );
        family(
            "splash_cluster_requests_total",
            "counter",
            "Cluster requests received.",
            vec![(String::new(), self.totals.started as f64)],
        );
        family(
            "splash_cluster_request_errors_total",
            "counter",
            "Cluster requests that ended in an error, by kind.",
            self.totals
                .errors
                .iter()
                .map(|(kind, v)| (format!("{{kind=\"{kind}\"}}"), *v as f64))
                .collect(),
        );
        family(
            "splash_cluster_requests_cancelled_total",
            "counter",
            "Cluster requests dropped by their caller before they ended.",
            vec![(String::new(), self.totals.cancelled as f64)],
        );
        family(
            "splash_cluster_retries_denied_total",
            "counter",
            "504 retries the retry budget refused.",
            vec![(String::new(), self.totals.retries_denied as f64)],
        );
        if let Some(f) = &self.fleet {
            family(
                "splash_cluster_fleet_shared",
                "gauge",
                "1 while slots are counted across the fleet in Redis, 0 in fallback.",
                vec![(String::new(), f64::from(u8::from(f.shared)))],
            );
            family(
                "splash_cluster_fleet_processes",
                "gauge",
                "Live crawler processes of the fleet, as last seen.",
                vec![(String::new(), f.processes.len() as f64)],
            );
            family(
                "splash_cluster_node_fleet_in_flight",
                "gauge",
                "Renders in flight on the node, every process of the fleet counted.",
                self.nodes
                    .iter()
                    .zip(&f.in_flight)
                    .map(|(n, v)| (format!("{{node=\"{}\"}}", escape_label(&n.url)), *v as f64))
                    .collect(),
            );
        }
        family(
            "splash_cluster_uptime_seconds",
            "gauge",
            "Seconds since the cluster started.",
            vec![(String::new(), self.uptime.as_secs_f64())],
        );
        out
    }

    /// The report as a self-refreshing HTML page (`/`), with no external
    /// assets, readable at a glance on a phone or a wall screen; `charts`
    /// (HTML, from `charts::section`) goes under the table.
    pub fn to_html(&self, refresh_seconds: u32, charts: &str) -> String {
        let mut rows = String::new();
        for n in &self.nodes {
            let c = &n.counters;
            let class = n.state.to_ascii_lowercase().replace(' ', "-");
            let probe = match &n.last_probe {
                Some(p) => {
                    let outcome = if p.ok {
                        "ok".to_owned()
                    } else {
                        format!("failed ({})", p.detail)
                    };
                    format!(
                        "{outcome}, {:.0} ms, {:.0} s ago",
                        p.latency.as_secs_f64() * 1000.0,
                        p.age.as_secs_f64()
                    )
                }
                None => "none yet".to_owned(),
            };
            let _ = writeln!(
                rows,
                "<tr class=\"{class}\"><td class=\"node\">{url}</td>\
                 <td><span class=\"state\">{state}</span><div class=\"reason\">{reason}, for {since}</div></td>\
                 <td class=\"num in-flight\">{in_flight}/{maxconn}</td><td class=\"num limit\">{limit}</td>\
                 <td class=\"num requests\">{requests}</td>\
                 <td class=\"num\">{r2}</td><td class=\"num\">{r3}</td><td class=\"num\">{r4}</td><td class=\"num\">{r5}</td>\
                 <td class=\"num failures\">{failures}</td><td class=\"num\">{timeouts}</td>\
                 <td class=\"num retries\">{retries}</td><td class=\"num redispatches\">{redispatches}</td>\
                 <td class=\"num\">{downs}</td><td class=\"probe\">{probe}</td></tr>",
                url = escape_html(&n.url),
                state = n.state,
                reason = escape_html(&n.reason),
                since = human_duration(n.since),
                in_flight = n.in_flight,
                maxconn = n.maxconn,
                limit = n.limit.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                requests = c.requests,
                r2 = c.responses[0],
                r3 = c.responses[1],
                r4 = c.responses[2],
                r5 = c.responses[3],
                failures = c.failures,
                timeouts = c.render_timeouts,
                retries = c.retries,
                redispatches = c.redispatches,
                downs = c.downs,
                probe = escape_html(&probe),
            );
        }
        let t = &self.totals;
        let errors: u64 = t.errors.iter().map(|(_, v)| v).sum();
        let up = self.nodes.iter().filter(|n| reachable(n)).count();
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh_seconds}">
<title>Splash cluster: {up}/{total} nodes up</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1rem;color:#222;background:#fafafa}}
h1{{font-size:1.3rem;margin:0 0 .5rem}}
.summary{{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}}
.summary div{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem .8rem}}
.summary b{{display:block;font-size:1.2rem}}
.table{{overflow-x:auto}}
table{{border-collapse:collapse;width:100%;background:#fff}}
th,td{{border-bottom:1px solid #e4e4e4;padding:.35rem .5rem;text-align:left;vertical-align:top}}
th{{background:#f0f0f0;font-weight:600;white-space:nowrap}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.state{{font-weight:700;padding:.1rem .4rem;border-radius:4px;white-space:nowrap}}
tr.up .state{{background:#d9f2dd;color:#17602a}}
tr.going-down .state{{background:#fff1c2;color:#7a5600}}
tr.down .state{{background:#f9d4d4;color:#8a1c1c}}
tr.coming-up .state{{background:#dbe8ff;color:#1d4b99}}
tr.drain .state{{background:#eadcf7;color:#5b2a86}}
.reason{{color:#666;font-size:.85em}}
footer{{color:#888;font-size:.8em;margin-top:1rem}}
h2{{font-size:1.1rem;margin:1.2rem 0 .3rem}}
.legend{{color:#555;font-size:.85em;margin:0 0 .5rem}}
.key{{white-space:nowrap;margin-left:.6rem}}
.cards{{display:grid;grid-template-columns:repeat(auto-fill,minmax(256px,1fr));gap:.5rem}}
.card{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem .5rem}}
.card.cluster{{border-color:#888}}
.card h3{{font-size:.85rem;margin:0 0 .2rem;overflow-wrap:anywhere}}
.chart-state{{font-weight:400;color:#555}}
.caption{{font-size:.75rem;color:#555}}
.spark{{display:block;margin-bottom:.2rem}}
</style></head><body>
<h1>Splash cluster</h1>
<div class="summary">
<div>nodes up<b id="nodes-up">{up}/{total}</b></div>
<div>requests<b id="requests">{requests}</b></div>
<div>answered<b id="answered">{answered}</b></div>
<div>errors<b id="errors">{errors}</b></div>
<div>waiting<b id="queue-waiting">{waiting}</b></div>
<div>oldest wait<b id="queue-oldest">{oldest:.1} s</b></div>
</div>
{fleet}
<div class="table"><table id="nodes">
<thead><tr><th>node</th><th>state</th><th>in flight</th><th title=\"adaptive limit under maxconn\">limit</th><th>requests</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th><th>node failures</th><th>504s</th><th>retries</th><th>redispatches</th><th>DOWNs</th><th>last probe</th></tr></thead>
<tbody>
{rows}</tbody></table></div>
{charts}<footer>up {uptime}; refreshes every {refresh_seconds} s; also <a href="stats.json">stats.json</a> and <a href="metrics">metrics</a></footer>
</body></html>
"#,
            total = self.nodes.len(),
            requests = t.started,
            answered = t.answered,
            waiting = self.queue.waiting,
            oldest = self.queue.oldest_wait.as_secs_f64(),
            uptime = human_duration(self.uptime),
            fleet = self.fleet_html(),
        )
    }

    /// One line on the fleet, and the fleet's renders in flight per node.
    fn fleet_html(&self) -> String {
        let Some(f) = &self.fleet else {
            return String::new();
        };
        let per_node: Vec<String> = self
            .nodes
            .iter()
            .zip(&f.in_flight)
            .map(|(n, v)| format!("{} {v}/{}", escape_html(&n.url), n.maxconn))
            .collect();
        format!(
            "<p id=\"fleet\">fleet: <b>{mode}</b>, {count} live process(es){prober}; \
             in flight across the fleet: {per_node}</p>\n",
            mode = if f.shared {
                "shared"
            } else {
                "fallback (Redis unreachable)"
            },
            count = f.processes.len(),
            prober = if f.prober { ", this one probes" } else { "" },
            per_node = per_node.join(", "),
        )
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Text made safe for HTML and XML, in text and in double-quoted
/// attributes.
pub fn escape_html(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::node::{NodeCounters, ProbeSnapshot};

    fn report() -> ClusterReport {
        let node = |url: &str, state: &'static str| NodeSnapshot {
            url: url.to_owned(),
            state,
            reason: "3 failed probes in a row: connection refused <x>".to_owned(),
            since: Duration::from_secs(75),
            in_flight: 2,
            maxconn: 5,
            limit: None,
            weight: 1,
            counters: NodeCounters {
                requests: 10,
                responses: [7, 0, 1, 1],
                failures: 1,
                retries: 2,
                redispatches: 1,
                downs: 1,
                ..NodeCounters::default()
            },
            last_probe: Some(ProbeSnapshot {
                ok: false,
                detail: "connection refused".into(),
                latency: Duration::from_millis(3),
                age: Duration::from_secs(1),
            }),
            drain: Vec::new(),
            peak_rss: None,
            maxrss: None,
        };
        ClusterReport {
            nodes: vec![
                node("http://a:8050", "UP"),
                node("http://u:***@b:8050", "DOWN"),
            ],
            queue: QueueStats {
                waiting: 3,
                oldest_wait: Duration::from_millis(1500),
                waits: 9,
                timeouts: 1,
            },
            totals: TotalsSnapshot {
                started: 20,
                answered: 15,
                errors: [
                    ("no_node_available", 1),
                    ("all_attempts_failed", 0),
                    ("timeout", 0),
                    ("response_too_large", 0),
                    ("closed", 0),
                    ("invalid_request", 0),
                    ("poisoned", 0),
                ],
                cancelled: 0,
                retries_denied: 0,
            },
            uptime: Duration::from_secs(3700),
            fleet: None,
            dns: Vec::new(),
        }
    }

    #[test]
    fn adaptive_limits_show_in_every_form_and_not_when_off() {
        let mut r = report();
        r.nodes[0].limit = Some(3);
        r.nodes[1].limit = Some(5);
        let j = r.to_json();
        assert_eq!(j["nodes"][0]["limit"], 3);
        let text = r.to_prometheus();
        assert!(
            text.contains("splash_cluster_node_limit{node=\"http://a:8050\"} 3\n"),
            "{text}"
        );
        assert!(r.to_html(2, "").contains("<td class=\"num limit\">3</td>"));
        let off = report();
        assert!(off.to_json()["nodes"][0]["limit"].is_null());
        assert!(!off.to_prometheus().contains("splash_cluster_node_limit"));
        assert!(off
            .to_html(2, "")
            .contains("<td class=\"num limit\">-</td>"));
    }

    #[test]
    fn a_fleet_shows_its_mode_processes_and_renders_in_flight() {
        let mut r = report();
        r.fleet = Some(FleetReport {
            shared: false,
            processes: vec!["host-1:1".into(), "host-2:7".into()],
            me: "host-1:1".into(),
            prober: true,
            in_flight: vec![4, 0],
        });
        let j = r.to_json();
        assert_eq!(j["fleet"]["mode"], "fallback");
        assert_eq!(j["fleet"]["processes"].as_array().unwrap().len(), 2);
        assert_eq!(j["fleet"]["in_flight"]["http://a:8050"], 4);
        let text = r.to_prometheus();
        assert!(text.contains("splash_cluster_fleet_shared 0\n"), "{text}");
        assert!(text.contains("splash_cluster_fleet_processes 2\n"));
        assert!(text.contains("splash_cluster_node_fleet_in_flight{node=\"http://a:8050\"} 4\n"));
        let html = r.to_html(2, "");
        assert!(html.contains("fallback (Redis unreachable)") && html.contains("this one probes"));
        // Alone (no fleet), none of it shows.
        assert!(report().to_json()["fleet"].is_null());
        assert!(!report().to_prometheus().contains("fleet"));
    }

    #[test]
    fn in_progress_never_goes_below_zero() {
        // Counters read while requests end can say more ended than started.
        let mut r = report();
        r.totals.started = 3;
        r.totals.answered = 5;
        assert_eq!(r.totals.in_progress(), 0);
        assert_eq!(r.to_json()["totals"]["in_progress"], 0);
    }

    #[test]
    fn json_carries_every_figure() {
        let j = report().to_json();
        assert_eq!(j["nodes"][1]["state"], "DOWN");
        assert_eq!(j["nodes"][0]["responses"]["2xx"], 7);
        assert_eq!(j["nodes"][0]["last_probe"]["ok"], false);
        assert_eq!(j["queue"]["waiting"], 3);
        assert_eq!(j["totals"]["in_progress"], 4);
        assert_eq!(j["totals"]["errors"]["no_node_available"], 1);
    }

    #[test]
    fn prometheus_text_follows_the_exposition_format() {
        let text = report().to_prometheus();
        assert!(text.contains("# TYPE splash_cluster_node_up gauge\n"));
        assert!(text.contains("splash_cluster_node_up{node=\"http://a:8050\"} 1\n"));
        assert!(text.contains("splash_cluster_node_up{node=\"http://u:***@b:8050\"} 0\n"));
        assert!(text.contains(
            "splash_cluster_node_responses_total{node=\"http://a:8050\",class=\"5xx\"} 1\n"
        ));
        assert!(text.contains("splash_cluster_queue_waiting 3\n"));
        assert!(
            text.contains("splash_cluster_request_errors_total{kind=\"no_node_available\"} 1\n")
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("splash_cluster_"), "{line}");
            value.parse::<f64>().unwrap();
        }
        // Counters end in _total, as Prometheus' naming rules ask.
        for line in text
            .lines()
            .filter(|l| l.starts_with("# TYPE") && l.ends_with("counter"))
        {
            assert!(
                line.split(' ').nth(2).unwrap().ends_with("_total"),
                "{line}"
            );
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn html_shows_states_and_escapes_text() {
        let html = report().to_html(2, "");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(html.contains("<tr class=\"down\">"));
        assert!(html.contains("connection refused &lt;x&gt;, for 1 min 15 s"));
        assert!(html.contains("<b id=\"nodes-up\">1/2</b>"));
        assert!(!html.contains("src=\"http"), "no external assets");
    }
}

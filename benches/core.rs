//! Micro-benchmarks of the core: the cost of one selection, what going
//! through the cluster adds to one request compared with a direct reqwest
//! call to the same node (a local server answering at once, so that the
//! overhead is not hidden behind a render), and the stats page with its
//! charts of ten busy minutes (its size is printed once per node count).
//!
//! `cargo bench --bench core`; CI compiles and runs them once as tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use _core::core::charts;
use _core::core::cluster::Cluster;
use _core::core::config::{ClusterOptions, NodeOptions};
use _core::core::history::{History, HistorySettings};
use _core::core::http::HttpTransport;
use _core::core::node::{NodeCounters, NodeSnapshot};
use _core::core::pool::QueueStats;
use _core::core::report::{ClusterReport, TotalsSnapshot};
use _core::core::selection::{Candidate, LeastConn, SelectionPolicy};
use _core::core::transport::NodeRequest;

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("least_conn_select");
    for nodes in [3usize, 10, 50] {
        let candidates: Vec<Candidate> = (0..nodes)
            .map(|i| Candidate {
                in_flight: i % 5,
                maxconn: 5,
                weight: 1 + (i % 3) as u32,
                up: i % 7 != 0,
                tried: i % 4 == 0,
                preferred: false,
                excluded: false,
            })
            .collect();
        let mut policy = LeastConn::new();
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &candidates, |b, c| {
            b.iter(|| policy.select(std::hint::black_box(c)))
        });
    }
    group.finish();
}

/// A node that answers every request at once with a small body.
async fn instant_node() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"<html>rendered</html>",
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn request_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(instant_node());
    let url = format!("http://{addr}");
    let cluster = runtime.block_on(async {
        let options = ClusterOptions {
            nodes: vec![NodeOptions {
                url: url.clone(),
                ..NodeOptions::default()
            }],
            maxconn: 64,
            health_interval: Duration::from_secs(3600),
            ..ClusterOptions::default()
        };
        let config = options.validate().unwrap();
        let transport = HttpTransport::new(config.connect_timeout).unwrap();
        Cluster::start(config, transport, Box::new(LeastConn::new())).unwrap()
    });
    let request = NodeRequest {
        method: "POST".into(),
        path: "/render.html".into(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from_static(br#"{"url": "http://example.com/"}"#),
        max_body: None,
        saved_args: None,
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut group = c.benchmark_group("one_request");
    group.bench_function("direct_reqwest", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client
                .post(format!("{url}/render.html"))
                .header("content-type", "application/json")
                .body(request.body.clone())
                .send()
                .await
                .unwrap();
            response.bytes().await.unwrap()
        })
    });
    group.bench_function("through_cluster", |b| {
        b.to_async(&runtime).iter(|| async {
            cluster
                .request(request.clone(), Duration::from_secs(10))
                .await
                .unwrap()
                .response
                .body
        })
    });
    group.finish();
    drop(cluster.close(true));
}

/// Ten minutes of `nodes` busy nodes, sampled every second, drawn as near
/// the worst case as a crawl gets: in flight changing every sample, 504s and
/// failures in every bucket, each node through DOWN, DRAIN and back.
fn busy_history(nodes: usize) -> (History, Vec<NodeSnapshot>) {
    let t0 = tokio::time::Instant::now();
    let mut history = History::new(HistorySettings::DEFAULT, t0);
    let mut snapshots = Vec::new();
    for s in 0..600u64 {
        snapshots = (0..nodes)
            .map(|i| {
                let state = match (s + 37 * i as u64) % 600 {
                    100..=120 => "DOWN",
                    121..=130 => "COMING UP",
                    300..=330 => "DRAIN",
                    _ => "UP",
                };
                NodeSnapshot {
                    url: format!("http://splash-{i}.crawl.internal:8050"),
                    state,
                    reason: "3 good probes in a row".into(),
                    since: Duration::from_secs(s),
                    in_flight: ((s * 7 + i as u64) % 6) as usize,
                    maxconn: 5,
                    limit: None,
                    weight: 1,
                    counters: NodeCounters {
                        requests: s * 9,
                        responses: [s * 8, 0, 0, s / 2],
                        failures: s / 3,
                        render_timeouts: s / 2,
                        ..NodeCounters::default()
                    },
                    last_probe: None,
                    drain: Vec::new(),
                    peak_rss: None,
                    maxrss: None,
                }
            })
            .collect();
        history.record(t0 + Duration::from_secs(s), &snapshots);
    }
    (history, snapshots)
}

fn stats_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats_page");
    for nodes in [3usize, 50] {
        let (history, snapshots) = busy_history(nodes);
        let report = ClusterReport {
            nodes: snapshots,
            queue: QueueStats {
                waiting: 0,
                oldest_wait: Duration::ZERO,
                waits: 0,
                timeouts: 0,
            },
            totals: TotalsSnapshot::default(),
            uptime: Duration::from_secs(600),
            fleet: None,
            dns: Vec::new(),
        };
        let page = |history: &History| report.to_html(2, &charts::section(&history.view()));
        let bare = report.to_html(2, "").len();
        let full = page(&history).len();
        eprintln!(
            "stats page, {nodes} nodes, 10 busy minutes: {full} bytes ({bare} without the charts)"
        );
        group.bench_with_input(BenchmarkId::new("with_charts", nodes), &history, |b, h| {
            b.iter(|| page(std::hint::black_box(h)))
        });
        group.bench_with_input(BenchmarkId::new("table_only", nodes), &report, |b, r| {
            b.iter(|| r.to_html(2, ""))
        });
    }
    group.finish();
}

criterion_group!(benches, selection, request_overhead, stats_page);
criterion_main!(benches);

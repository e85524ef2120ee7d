//! The fleet against a real `redis-server`, one per test on a free loopback
//! port. Two `Fleet`s in one test are two crawler processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::*;

#[path = "fleet_test_server.rs"]
mod test_server;
use test_server::{free_port, RedisServer};

fn nodes(specs: &[(usize, u32)]) -> Vec<FleetNode> {
    specs
        .iter()
        .enumerate()
        .map(|(i, &(maxconn, weight))| FleetNode {
            key: format!("http://10.0.0.{i}:8050"),
            maxconn,
            weight,
        })
        .collect()
}

fn options(url: &str, ttl: Duration) -> FleetOptions {
    FleetOptions {
        url: url.to_owned(),
        lease_ttl: ttl,
        ..FleetOptions::default()
    }
}

async fn fleet(server: &RedisServer, specs: &[(usize, u32)]) -> Fleet {
    fleet_with_ttl(server, specs, Duration::from_secs(15)).await
}

async fn fleet_with_ttl(server: &RedisServer, specs: &[(usize, u32)], ttl: Duration) -> Fleet {
    let (fleet, warnings) = Fleet::connect(options(&server.url(), ttl), nodes(specs))
        .await
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    fleet
}

/// Every node as a fresh candidate (untried, not preferred).
fn all(n: usize) -> Vec<FleetCandidate> {
    (0..n)
        .map(|node| FleetCandidate {
            node,
            tried: false,
            preferred: false,
        })
        .collect()
}

fn only(node: usize) -> Vec<FleetCandidate> {
    vec![FleetCandidate {
        node,
        tried: false,
        preferred: false,
    }]
}

async fn take_node(fleet: &Fleet, candidates: &[FleetCandidate], start: usize) -> Option<usize> {
    fleet
        .take(candidates, start)
        .await
        .unwrap()
        .map(|taken| taken.node)
}

/// The Redis server's clock, in ms: what every expiry is measured against.
async fn server_ms(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await.unwrap();
    secs * 1000 + micros / 1000
}

const LEASES_0: &str = "{splash_cluster}:leases:http://10.0.0.0:8050";

/// A lease on node 0 of a third process, expiring at `expiry`, and node 0's
/// set made to live for ever: then only a lease's own expiry frees its slot,
/// never the set's expiry.
async fn hold_node_0_elsewhere(con: &mut redis::aio::MultiplexedConnection, expiry: u64) {
    let () = redis::pipe()
        .cmd("ZADD")
        .arg(LEASES_0)
        .arg(expiry)
        .arg("elsewhere:0")
        .ignore()
        .cmd("PERSIST")
        .arg(LEASES_0)
        .ignore()
        .query_async(con)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_exceed_maxconn_together() {
    let server = RedisServer::start();
    let specs = [(3, 1), (3, 1), (3, 1)];
    let fleets = [
        Arc::new(fleet(&server, &specs).await),
        Arc::new(fleet(&server, &specs).await),
    ];
    // Held leases as the test counts them: raised after Redis added the
    // lease, lowered before Redis removes it, so never above Redis's count.
    let held: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let peak: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let taken = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let fleet = Arc::clone(&fleets[worker % 2]);
        let (held, peak) = (Arc::clone(&held), Arc::clone(&peak));
        let (taken, refused) = (Arc::clone(&taken), Arc::clone(&refused));
        tasks.push(tokio::spawn(async move {
            for round in 0..30 {
                let Some(t) = fleet.take(&all(3), worker + round).await.unwrap() else {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                    continue;
                };
                let now = held[t.node].fetch_add(1, Ordering::SeqCst) + 1;
                peak[t.node].fetch_max(now, Ordering::SeqCst);
                taken.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
                held[t.node].fetch_sub(1, Ordering::SeqCst);
                fleet.release(&[(t.node, t.lease)]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let peaks: Vec<usize> = peak.iter().map(|p| p.load(Ordering::SeqCst)).collect();
    assert!(peaks.iter().all(|&p| p <= 3), "above maxconn: {peaks:?}");
    // The hammer really contended: 32 workers on 9 slots were refused.
    assert!(refused.load(Ordering::Relaxed) > 0);
    assert!(taken.load(Ordering::Relaxed) > 0);
    let view = fleets[0].renew(&[]).await.unwrap();
    assert_eq!(view.in_flight, vec![0, 0, 0], "every lease given back");
}

#[tokio::test]
async fn take_prefers_untried_then_preferred_then_least_loaded() {
    let server = RedisServer::start();
    let fleet = fleet(&server, &[(5, 1), (5, 1), (5, 1)]).await;
    // Loads: node 0 has 2, node 1 has 1, node 2 has 3.
    for (node, count) in [(0, 2), (1, 1), (2, 3)] {
        for _ in 0..count {
            assert_eq!(take_node(&fleet, &only(node), 0).await, Some(node));
        }
    }
    assert_eq!(take_node(&fleet, &all(3), 0).await, Some(1), "least loaded");
    // Loads now 2, 2, 3: the untried node wins even when busiest.
    let mut candidates = all(3);
    candidates[0].tried = true;
    candidates[1].tried = true;
    assert_eq!(
        take_node(&fleet, &candidates, 0).await,
        Some(2),
        "untried first"
    );
    // Loads 2, 2, 4: preferred beats less loaded, but untried beats preferred.
    let mut candidates = all(3);
    candidates[2].preferred = true;
    assert_eq!(
        take_node(&fleet, &candidates, 0).await,
        Some(2),
        "preferred"
    );
    candidates[2].tried = true;
    assert_eq!(take_node(&fleet, &candidates, 0).await, Some(0));
    // Node 2 is full (5): never chosen, preferred and untried or not.
    let candidates = vec![FleetCandidate {
        node: 2,
        tried: false,
        preferred: true,
    }];
    assert_eq!(take_node(&fleet, &candidates, 0).await, None, "full");
}

#[tokio::test]
async fn ties_rotate_from_start_and_weights_scale_the_share() {
    let server = RedisServer::start();
    let fleet = fleet(&server, &[(10, 2), (10, 1), (10, 1)]).await;
    // Equal loads (each lease given back at once): the first from `start`
    // wins, `start` counting positions in `candidates`, modulo their number.
    let idle_pair = [all(3)[1], all(3)[2]];
    for (start, expected) in [(0, 1), (1, 2), (3, 2), (2, 1)] {
        let taken = fleet.take(&idle_pair, start).await.unwrap().unwrap();
        assert_eq!(taken.node, expected, "start {start}");
        fleet.release(&[(taken.node, taken.lease)]).await.unwrap();
    }
    let server2 = RedisServer::start();
    let fleet = fleet_with_ttl(&server2, &[(10, 2), (10, 1)], Duration::from_secs(15)).await;
    let mut counts = [0, 0];
    for round in 0..9 {
        counts[take_node(&fleet, &all(2), round).await.unwrap()] += 1;
    }
    assert_eq!(counts, [6, 3], "weight 2 takes twice the share");
}

#[tokio::test]
async fn a_down_verdict_excludes_the_node_for_every_process() {
    let server = RedisServer::start();
    let a = fleet(&server, &[(5, 1), (5, 1)]).await;
    let b = fleet(&server, &[(5, 1), (5, 1)]).await;
    a.set_verdict(0, Some("connection refused")).await.unwrap();
    assert_eq!(take_node(&b, &only(0), 0).await, None);
    assert_eq!(take_node(&b, &all(2), 0).await, Some(1));
    let view = b.renew(&[]).await.unwrap();
    assert_eq!(view.down, vec![Some("connection refused".to_owned()), None]);
    a.set_verdict(0, None).await.unwrap();
    assert_eq!(take_node(&b, &only(0), 0).await, Some(0));
    assert_eq!(b.renew(&[]).await.unwrap().down, vec![None, None]);
}

#[tokio::test]
async fn the_fleets_adaptive_limit_caps_every_process_together() {
    let server = RedisServer::start();
    let a = fleet(&server, &[(5, 1), (5, 1)]).await;
    let b = fleet(&server, &[(5, 1), (5, 1)]).await;
    // The start of a fleet: 1 where none is set yet, never over a limit a
    // process already decided.
    a.set_limit(0, FleetLimit::START, true).await.unwrap();
    let decided = FleetLimit {
        limit: 3,
        best: Some(0.125),
    };
    a.set_limit(0, decided, false).await.unwrap();
    b.set_limit(0, FleetLimit::START, true).await.unwrap();
    let view = b.renew(&[]).await.unwrap();
    assert_eq!(view.limits, vec![Some(decided), None]);
    // Three renders on node 0 between the two processes, then no more from
    // either, while node 1 (no limit) takes its maxconn.
    assert_eq!(take_node(&a, &only(0), 0).await, Some(0));
    assert_eq!(take_node(&b, &only(0), 0).await, Some(0));
    assert_eq!(take_node(&a, &only(0), 0).await, Some(0));
    assert_eq!(take_node(&b, &only(0), 0).await, None);
    assert_eq!(take_node(&a, &only(0), 0).await, None);
    for _ in 0..5 {
        assert_eq!(take_node(&b, &only(1), 0).await, Some(1));
    }
    // A higher limit frees one more slot at once, for whichever asks.
    a.set_limit(
        0,
        FleetLimit {
            limit: 4,
            ..decided
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!(take_node(&b, &only(0), 0).await, Some(0));
    assert_eq!(take_node(&b, &only(0), 0).await, None);
    // Above maxconn, maxconn still holds.
    a.set_limit(
        0,
        FleetLimit {
            limit: 9,
            ..decided
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!(take_node(&b, &only(0), 0).await, Some(0));
    assert_eq!(take_node(&b, &only(0), 0).await, None);
}

#[tokio::test]
async fn a_node_that_joins_later_is_counted_for_every_process() {
    // Node 1 is a new address from DNS: each process adds it on its own.
    let server = RedisServer::start();
    let a = fleet(&server, &[(2, 1)]).await;
    let b = fleet(&server, &[(2, 1)]).await;
    let joined = nodes(&[(2, 1), (2, 1)]).pop().unwrap();
    assert_eq!(a.add_node(joined.clone()).unwrap(), 1);
    assert_eq!(b.add_node(joined).unwrap(), 1);
    assert_eq!(take_node(&a, &only(1), 0).await, Some(1));
    assert_eq!(take_node(&b, &only(1), 0).await, Some(1));
    assert_eq!(take_node(&a, &only(1), 0).await, None, "maxconn 2 for both");
    let view = b.renew(&[]).await.unwrap();
    assert_eq!(view.in_flight, vec![0, 2]);
    assert!(matches!(
        a.set_verdict(2, None).await,
        Err(FleetError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn a_limit_the_fleet_cannot_read_counts_as_none() {
    let server = RedisServer::start();
    let a = fleet(&server, &[(5, 1)]).await;
    let mut con = server.inspect().await;
    for bad in ["", "0 -", "x 0.1", "3", "3 nan", "3 -1"] {
        redis::cmd("HSET")
            .arg("{splash_cluster}:verdicts")
            .arg("limit:http://10.0.0.0:8050")
            .arg(bad)
            .query_async::<()>(&mut con)
            .await
            .unwrap();
        assert_eq!(a.renew(&[]).await.unwrap().limits, vec![None], "{bad:?}");
        // Nor does the take script cap the node at it: all five slots.
        let mut taken = Vec::new();
        for _ in 0..5 {
            let lease = a.take(&only(0), 0).await.unwrap();
            taken.push(lease.unwrap_or_else(|| panic!("{bad:?} capped the node")));
        }
        let leases: Vec<_> = taken.into_iter().map(|t| (t.node, t.lease)).collect();
        a.release(&leases).await.unwrap();
    }
}

#[tokio::test]
async fn release_frees_the_slot_and_wakes_the_watchers() {
    let server = RedisServer::start();
    let a = fleet(&server, &[(1, 1)]).await;
    let b = fleet(&server, &[(1, 1)]).await;
    let notify = Arc::new(Notify::new());
    // The watcher wakes everyone once it is subscribed: from then on no
    // notice can be missed.
    let subscribed = notify.notified();
    let watcher = b.watch(Arc::clone(&notify));
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("the watcher subscribes");

    let taken = a.take(&only(0), 0).await.unwrap().unwrap();
    assert_eq!(take_node(&b, &only(0), 0).await, None, "full");
    let woken = notify.notified();
    a.release(&[(taken.node, taken.lease)]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("a release wakes the watcher");
    assert_eq!(take_node(&b, &only(0), 0).await, Some(0), "freed");

    let woken = notify.notified();
    a.set_verdict(0, Some("refused")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("a verdict wakes the watcher");
    watcher.abort();
}

#[tokio::test]
async fn the_watcher_subscribes_again_when_redis_comes_back() {
    let mut server = RedisServer::start();
    let fleet = fleet(&server, &[(1, 1)]).await;
    let notify = Arc::new(Notify::new());
    let subscribed = notify.notified();
    let watcher = fleet.watch(Arc::clone(&notify));
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("the watcher subscribes");
    server.start_again();
    let mut con = server.inspect().await;
    // PUBLISH answers how many subscribers got the notice: once it is one,
    // the watcher is back, and that notice woke it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let woken = notify.notified();
        let receivers: usize = redis::cmd("PUBLISH")
            .arg("{splash_cluster}:events")
            .arg("release 1")
            .query_async(&mut con)
            .await
            .unwrap();
        if receivers == 1 {
            tokio::time::timeout(Duration::from_secs(5), woken)
                .await
                .expect("the notice wakes the watcher");
            break;
        }
        assert!(Instant::now() < deadline, "the watcher never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
}

#[tokio::test]
async fn the_leases_of_a_process_that_stopped_renewing_expire() {
    let server = RedisServer::start();
    let mut con = server.inspect().await;
    let ttl = Duration::from_millis(300);
    let dead = fleet_with_ttl(&server, &[(3, 1)], ttl).await;
    let alive = fleet_with_ttl(&server, &[(3, 1)], ttl).await;
    assert!(dead.take(&only(0), 0).await.unwrap().is_some());
    assert!(dead.take(&only(0), 0).await.unwrap().is_some());
    // A third process holds the last slot for a minute, so the set outlives
    // the dead one's leases: only their expiry can free a slot.
    let far = server_ms(&mut con).await + 60_000;
    hold_node_0_elsewhere(&mut con, far).await;
    let expiries: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(LEASES_0)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut con)
        .await
        .unwrap();
    let first_expiry = expiries.iter().map(|(_, e)| *e).min().unwrap();
    assert!(first_expiry < far);
    // `dead` never renews again: `alive` gets a slot only once the server's
    // clock has passed a lease's expiry, and then gets it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = server_ms(&mut con).await;
        let got = alive.take(&only(0), 0).await.unwrap();
        if let Some(t) = got {
            assert!(
                server_ms(&mut con).await >= first_expiry,
                "a slot freed before its lease expired"
            );
            let view = alive.renew(&[(t.node, t.lease)]).await.unwrap();
            assert_eq!(view.processes, vec![alive.process_id().to_owned()]);
            break;
        }
        assert!(
            before < first_expiry + 1000,
            "the expired lease still counts"
        );
        assert!(Instant::now() < deadline, "no slot freed by expiry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn renew_keeps_live_leases_and_never_revives_released_or_expired_ones() {
    let server = RedisServer::start();
    let mut con = server.inspect().await;
    let fleet = fleet_with_ttl(&server, &[(5, 1)], Duration::from_millis(300)).await;
    let kept = fleet.take(&only(0), 0).await.unwrap().unwrap();
    let released = fleet.take(&only(0), 0).await.unwrap().unwrap();
    fleet.release(&[(0, released.lease.clone())]).await.unwrap();
    let mine = [(0, kept.lease.clone()), (0, released.lease.clone())];
    let view = fleet.renew(&mine).await.unwrap();
    assert_eq!(view.in_flight, vec![1], "the released lease stays released");
    let score: Option<u64> = redis::cmd("ZSCORE")
        .arg(LEASES_0)
        .arg(&released.lease.0)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(score, None);
    // A renewal moves the expiry to a TTL from the server's now.
    let expiry: u64 = redis::cmd("ZSCORE")
        .arg(LEASES_0)
        .arg(&kept.lease.0)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(expiry + 5 >= server_ms(&mut con).await + 300 - 50);

    // Let the kept lease expire, with the set held alive by another
    // process's lease, then renew it: it stays gone.
    hold_node_0_elsewhere(&mut con, expiry + 60_000).await;
    while server_ms(&mut con).await <= expiry {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = fleet.renew(&mine).await.unwrap();
    assert_eq!(view.in_flight, vec![1], "an expired lease is not revived");
}

#[tokio::test]
async fn restore_re_adds_the_leases_redis_lost() {
    let mut server = RedisServer::start();
    let fleet = fleet(&server, &[(1, 1), (1, 1)]).await;
    let a = fleet.take(&only(0), 0).await.unwrap().unwrap();
    let b = fleet.take(&only(1), 0).await.unwrap().unwrap();
    let mine = [(a.node, a.lease), (b.node, b.lease)];
    // Redis dies and comes back empty; the manager connects again.
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        match fleet.renew(&mine).await {
            Ok(view) => break view,
            Err(e) => {
                assert!(matches!(e, FleetError::Command { .. }), "{e}");
                assert!(Instant::now() < deadline, "no reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(view.in_flight, vec![0, 0], "renew alone revives nothing");
    fleet.restore(&mine).await.unwrap();
    fleet.restore(&mine).await.unwrap();
    assert_eq!(fleet.renew(&mine).await.unwrap().in_flight, vec![1, 1]);
    // The restored leases count: both nodes are full again, and the nodes'
    // registration came back with the renewal.
    assert_eq!(take_node(&fleet, &all(2), 0).await, None);
}

#[tokio::test]
async fn redis_gone_fails_fast_and_the_fleet_reconnects() {
    let mut server = RedisServer::start();
    let fleet = fleet(&server, &[(2, 1)]).await;
    assert!(fleet.take(&only(0), 0).await.unwrap().is_some());
    server.kill();
    let started = Instant::now();
    let err = fleet.take(&only(0), 0).await.unwrap_err();
    assert!(
        matches!(err, FleetError::Command { op: "take", .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < COMMAND_TIMEOUT * 3,
        "{:?}",
        started.elapsed()
    );
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A new server knows no script: EVALSHA's NOSCRIPT loads it again.
        match fleet.take(&only(0), 0).await {
            Ok(got) => {
                assert!(got.is_some(), "the empty Redis has both slots free");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no reconnect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_first_registered_maxconn_holds_and_the_others_warn() {
    let server = RedisServer::start();
    let _first = fleet(&server, &[(3, 1)]).await;
    let (second, warnings) = Fleet::connect(
        options(&server.url(), Duration::from_secs(15)),
        nodes(&[(5, 2)]),
    )
    .await
    .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    for part in [
        "http://10.0.0.0:8050",
        "maxconn 3",
        "weight 1",
        "maxconn 5",
        "weight 2",
    ] {
        assert!(warning.contains(part), "{part} not in {warning}");
    }
    for _ in 0..3 {
        assert!(second.take(&only(0), 0).await.unwrap().is_some());
    }
    assert_eq!(
        take_node(&second, &only(0), 0).await,
        None,
        "maxconn 3 holds"
    );
}

#[tokio::test]
async fn connect_errors_name_the_setting_and_never_the_password() {
    for bad in [
        "http://:s3cret@127.0.0.1:6379",
        "redis://:s3cret@[::1",
        "no url at all",
    ] {
        let err = Fleet::connect(options(bad, Duration::from_secs(1)), nodes(&[(1, 1)]))
            .await
            .unwrap_err();
        assert!(matches!(err, FleetError::BadUrl { .. }), "{bad}: {err:?}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("SPLASH_CLUSTER_REDIS_URL"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    let url = format!("redis://:s3cret@127.0.0.1:{}", free_port());
    let err = Fleet::connect(options(&url, Duration::from_secs(1)), nodes(&[(1, 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::Refused { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("SPLASH_CLUSTER_REDIS_URL") && !shown.contains("s3cret"),
        "{shown}"
    );

    let server = RedisServer::start_with(&["--requirepass", "right-one"]);
    for url in [
        format!("redis://:s3cret@127.0.0.1:{}", server.port),
        format!("redis://default:s3cret@127.0.0.1:{}", server.port),
        server.url(),
    ] {
        let err = Fleet::connect(options(&url, Duration::from_secs(1)), nodes(&[(1, 1)]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, FleetError::AuthFailed { .. }),
            "{url}: {err:?}"
        );
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("SPLASH_CLUSTER_REDIS_URL") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
    let url = format!("redis://:right-one@127.0.0.1:{}", server.port);
    let (fleet, _) = Fleet::connect(options(&url, Duration::from_secs(1)), nodes(&[(1, 1)]))
        .await
        .unwrap();
    assert!(!format!("{fleet:?}").contains("right-one"));
    assert!(fleet.take(&only(0), 0).await.unwrap().is_some());
}

#[tokio::test]
async fn bad_prefixes_and_nodes_are_refused_before_connecting() {
    let unreachable = "redis://127.0.0.1:1";
    let mut o = options(unreachable, Duration::from_secs(1));
    o.key_prefix = "a{b".to_owned();
    let err = Fleet::connect(o, nodes(&[(1, 1)])).await.unwrap_err();
    assert!(
        err.to_string().contains("SPLASH_CLUSTER_REDIS_KEY_PREFIX"),
        "{err}"
    );
    let mut with_password = nodes(&[(1, 1)]);
    with_password[0].key = "http://user:pw@10.0.0.1:8050".to_owned();
    let err = Fleet::connect(options(unreachable, Duration::from_secs(1)), with_password)
        .await
        .unwrap_err();
    assert!(matches!(err, FleetError::InvalidArgument(_)), "{err:?}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[tokio::test]
async fn one_process_leads_the_probes_and_another_takes_over_after_the_ttl() {
    let server = RedisServer::start();
    let a = fleet(&server, &[(1, 1)]).await;
    let b = fleet(&server, &[(1, 1)]).await;
    let ttl = Duration::from_millis(300);
    assert!(a.lead_probes(ttl).await.unwrap());
    assert!(!b.lead_probes(ttl).await.unwrap());
    assert!(a.lead_probes(ttl).await.unwrap(), "renewed by its holder");
    let mut con = server.inspect().await;
    let holder: String = redis::cmd("GET")
        .arg("{splash_cluster}:prober")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(holder, a.process_id());
    // `a` stops renewing (it died): `b` takes over once the lock expires.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.lead_probes(ttl).await.unwrap() {
        assert!(Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!a.lead_probes(ttl).await.unwrap(), "the old holder lost it");
}

#[test]
fn keys_share_one_hash_tag_and_lease_ids_are_unique() {
    let keys = Keys::new("crawl");
    for key in [
        &keys.nodes,
        &keys.verdicts,
        &keys.processes,
        &keys.prober,
        &keys.events,
    ] {
        assert!(key.starts_with("{crawl}:"), "{key}");
    }
    assert_eq!(
        Keys::leases_of("crawl", "http://10.0.0.0:8050"),
        "{crawl}:leases:http://10.0.0.0:8050"
    );
    assert_eq!(password_of("redis://u:p@w@h:1"), Some("p@w".to_owned()));
    assert_eq!(password_of("redis://h:1"), None);
    assert_eq!(scrub("bad p@w here", Some("p@w")), "bad *** here");
    let mut o = options("redis://:s3cret@h:1", Duration::from_secs(1));
    o.key_prefix = "p".to_owned();
    assert!(!format!("{o:?}").contains("s3cret"), "{o:?}");
    let a = new_process_id();
    assert_ne!(a, new_process_id());
    assert_eq!(a.split('/').count(), 3, "{a}");
}

/// The take script's latency on loopback, per number of candidate nodes:
/// `cargo test --lib fleet::tests::take_latency -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement: run by hand, prints p50/p99"]
async fn take_latency() {
    let server = RedisServer::start();
    let mut con = server.inspect().await;
    for n in [3, 50, 200] {
        let specs = vec![(1_000_000, 1); n];
        let fleet = fleet(&server, &specs).await;
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut con)
            .await
            .unwrap();
        let candidates = all(n);
        let mut samples = Vec::with_capacity(2000);
        let mut held = Vec::with_capacity(2200);
        // The leases stay (maxconn is far away) so that the server's
        // statistics count takes only; given back at the end in one batch.
        for round in 0..2200 {
            let started = Instant::now();
            let taken = fleet.take(&candidates, round).await.unwrap().unwrap();
            let elapsed = started.elapsed();
            held.push((taken.node, taken.lease));
            if round >= 200 {
                samples.push(elapsed);
            }
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64) * q) as usize];
        // The server's own time per take (EVALSHA: the script loaded once).
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut con)
            .await
            .unwrap();
        let per_call = info
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split(',').find(|f| f.starts_with("usec_per_call=")))
            .unwrap_or("usec_per_call=?")
            .to_owned();
        fleet.release(&held).await.unwrap();
        println!(
            "take, {n} nodes: round trip p50 {:?}, p99 {:?} (2000 samples, loopback); \
             server time per take {per_call}",
            at(0.50),
            at(0.99)
        );
    }
}

#[tokio::test]
async fn a_process_whose_adaptive_setting_differs_from_the_fleets_is_refused() {
    // The take script caps every process at the fleet's adaptive limits; a
    // process without them would be held at limits that nobody moves.
    let server = RedisServer::start();
    let ttl = Duration::from_secs(15);
    let adaptive = FleetOptions {
        adaptive: true,
        ..options(&server.url(), ttl)
    };
    let (first, _) = Fleet::connect(adaptive.clone(), nodes(&[(5, 1)]))
        .await
        .unwrap();
    let err = Fleet::connect(options(&server.url(), ttl), nodes(&[(5, 1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FleetError::AdaptiveMismatch { fleet: true, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("runs with SPLASH_CLUSTER_ADAPTIVE = True")
            && text.contains("this crawler has False"),
        "{text}"
    );
    // The refused one is no process of the fleet; one with the same setting joins.
    let (second, _) = Fleet::connect(adaptive, nodes(&[(5, 1)])).await.unwrap();
    let view = second.renew(&[]).await.unwrap();
    let mut expected = vec![
        first.process_id().to_owned(),
        second.process_id().to_owned(),
    ];
    expected.sort();
    let mut processes = view.processes;
    processes.sort();
    assert_eq!(processes, expected);
}

#[tokio::test]
async fn a_node_that_joins_twice_is_refused() {
    // A name that resolves to an address also listed by URL: two indices on
    // one key would share its leases and its limit.
    let server = RedisServer::start();
    let a = fleet(&server, &[(5, 1)]).await;
    let again = nodes(&[(5, 1)]).remove(0);
    let err = a.add_node(again).unwrap_err();
    assert!(
        err.to_string().contains("is a node of the fleet already"),
        "{err}"
    );
    let new = FleetNode {
        key: "http://10.0.0.9:8050".to_owned(),
        maxconn: 5,
        weight: 1,
    };
    assert_eq!(a.add_node(new).unwrap(), 1);
}

//! The adaptive limit against tables of samples and against simulated
//! nodes that share their CPU among their renders, as Splash does.

use super::*;

fn budget(timeout: f64) -> RenderBudget {
    RenderBudget {
        timeout: Duration::from_secs_f64(timeout),
        wait: Duration::ZERO,
    }
}

fn sample(started: Instant, elapsed: f64, ending: Ending, in_flight: usize) -> Sample {
    Sample {
        started,
        elapsed: Duration::from_secs_f64(elapsed),
        budget: budget(1.0),
        ending,
        in_flight,
    }
}

/// A seeded xorshift, for page-to-page jitter.
struct Jitter(u64);

impl Jitter {
    /// A factor in [1 - spread, 1 + spread].
    fn factor(&mut self, spread: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        1.0 - spread + 2.0 * spread * unit
    }
}

/// A page kind: its CPU work alone on a node, and the timeout it is given.
#[derive(Clone, Copy)]
struct Page {
    work: f64,
    timeout: f64,
}

struct Render {
    started: f64,
    left: f64,
    timeout: f64,
}

/// What a simulated run showed.
#[derive(Debug, Default)]
struct Run {
    rendered: usize,
    timeouts: usize,
    /// The limit after each render, in order.
    limits: Vec<usize>,
    seconds: f64,
}

impl Run {
    fn settled(&self) -> &[usize] {
        &self.limits[self.limits.len() / 2..]
    }
}

/// A node that runs `capacity` renders at full speed and shares its CPU
/// beyond (each of `n` renders at `capacity / n`), kept full by an endless
/// crawl up to the limit, for `renders` renders; `page` says what the i-th
/// render is.
fn simulate(
    limit: &mut AdaptiveLimit,
    capacity: impl Fn(usize) -> f64,
    renders: usize,
    page: impl Fn(usize) -> Page,
) -> Run {
    let base = Instant::now();
    let at = |t: f64| base + Duration::from_secs_f64(t);
    let mut run = Run::default();
    let mut active: Vec<Render> = Vec::new();
    let mut now = 0.0;
    let mut started = 0;
    while run.rendered + run.timeouts < renders {
        while active.len() < limit.limit() {
            let p = page(started);
            started += 1;
            active.push(Render {
                started: now,
                left: p.work,
                timeout: p.timeout,
            });
        }
        let c = capacity(run.rendered + run.timeouts);
        let rate = (c / active.len() as f64).min(1.0);
        // The next event: a render done, or one reaching its timeout.
        let (i, dt, ending) = active
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let done = r.left / rate;
                let out = r.started + r.timeout - now;
                if done <= out {
                    (i, done, Ending::Rendered)
                } else {
                    (i, out, Ending::TimedOut)
                }
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("the node is never idle");
        now += dt.max(0.0);
        for r in &mut active {
            r.left -= dt * rate;
        }
        let in_flight = active.len();
        let r = active.swap_remove(i);
        match ending {
            Ending::Rendered => run.rendered += 1,
            Ending::TimedOut => run.timeouts += 1,
        }
        limit.record(Sample {
            started: at(r.started),
            elapsed: Duration::from_secs_f64(now - r.started),
            budget: budget(r.timeout),
            ending,
            in_flight,
        });
        run.limits.push(limit.limit());
    }
    run.seconds = now;
    run
}

fn simulate_jittered(
    limit: &mut AdaptiveLimit,
    capacity: f64,
    renders: usize,
    page: Page,
    spread: f64,
    seed: u64,
) -> Run {
    // Jitter per page kind: the i-th render's work times a seeded factor.
    let factors: Vec<f64> = {
        let mut j = Jitter(seed | 1);
        (0..renders * 2).map(|_| j.factor(spread)).collect()
    };
    simulate(
        limit,
        |_| capacity,
        renders,
        |i| Page {
            work: page.work * factors[i % factors.len()],
            timeout: page.timeout,
        },
    )
}

const PAGE: Page = Page {
    work: 0.2,
    timeout: 1.0,
};

#[test]
fn the_limit_settles_at_the_capacity_of_a_node_that_shares_its_cpu() {
    // The fleet: --slots 8, capacities 1, 2 and 8, timeout 1.0.
    for capacity in [1usize, 2, 3, 5, 8] {
        let mut limit = AdaptiveLimit::new(8, Instant::now());
        let run = simulate(&mut limit, |_| capacity as f64, 1500, |_| PAGE);
        let settled = run.settled();
        let (low, high) = (capacity.min(8), (capacity + 2).min(8));
        assert!(
            settled.iter().all(|&l| (low..=high).contains(&l)),
            "capacity {capacity}: settled at {:?}",
            &settled[..10]
        );
        assert_eq!(run.timeouts, 0, "capacity {capacity}: 504s");
        // Throughput: at least 97 % of the node's, slow start (about two
        // rounds of renders, once) included.
        let ideal = run.rendered as f64 * PAGE.work / capacity as f64;
        assert!(
            ideal / run.seconds > 0.97,
            "capacity {capacity}: {:.3} of the capacity",
            ideal / run.seconds
        );
    }
}

#[test]
fn a_node_with_room_to_spare_runs_at_its_maxconn_and_stays_there() {
    for spread in [0.0, 0.2] {
        let mut limit = AdaptiveLimit::new(5, Instant::now());
        let run = simulate_jittered(&mut limit, 100.0, 600, PAGE, spread, 7);
        let reached = run.limits.iter().position(|&l| l == 5).expect("reached 5");
        assert!(reached < 10, "spread {spread}: took {reached} renders");
        let after = &run.limits[reached..];
        let below = after.iter().filter(|&&l| l < 5).count();
        assert_eq!(below, 0, "spread {spread}: {below} renders below maxconn");
    }
}

#[test]
fn renders_of_tens_of_ms_that_vary_never_take_slots_from_a_node_with_room() {
    // 20 ms renders, +-60 % from one to the next (the crawler's own turn):
    // the window's median is often over 1.5x the first render's, but never
    // 100 ms over it.
    for seed in [3, 7, 11, 19] {
        let mut limit = AdaptiveLimit::new(5, Instant::now());
        let short = Page {
            work: 0.02,
            timeout: 1.0,
        };
        let run = simulate_jittered(&mut limit, 100.0, 600, short, 0.6, seed);
        let reached = run.limits.iter().position(|&l| l == 5).expect("reached 5");
        let below = run.limits[reached..].iter().filter(|&&l| l < 5).count();
        assert_eq!(below, 0, "seed {seed}: {below} renders below maxconn");
    }
}

#[test]
fn jitter_on_a_loaded_node_keeps_the_limit_near_its_capacity() {
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    let run = simulate_jittered(&mut limit, 2.0, 800, PAGE, 0.2, 11);
    let settled = run.settled();
    assert!(
        settled.iter().all(|&l| (2..=4).contains(&l)),
        "{:?}",
        settled
    );
    assert_eq!(run.timeouts, 0);
}

#[test]
fn a_node_that_loses_cpu_is_followed_down_with_few_504s() {
    // Capacity 8 for the first 300 renders, then a neighbour takes 3/4 of it.
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    let run = simulate(
        &mut limit,
        |done| if done < 300 { 8.0 } else { 2.0 },
        700,
        |_| PAGE,
    );
    assert_eq!(run.limits[299], 8);
    assert!(run.settled().iter().all(|&l| (2..=3).contains(&l)));
    // Eight renders at once on capacity 2 take 0.8 s of the 1.0 allowed:
    // the drop is seen before any render times out.
    assert!(run.timeouts <= 2, "{} 504s", run.timeouts);
}

#[test]
fn a_node_that_gains_cpu_is_followed_up() {
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    let run = simulate(
        &mut limit,
        |done| if done < 300 { 2.0 } else { 8.0 },
        700,
        |_| PAGE,
    );
    assert!((2..=3).contains(&run.limits[299]));
    assert!(run.settled().iter().all(|&l| l == 8), "{:?}", run.settled());
}

#[test]
fn slower_pages_given_a_longer_timeout_are_not_an_overloaded_node() {
    // Fast pages, then pages ten times heavier with ten times the timeout,
    // on a node with room for all 8.
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    let run = simulate(
        &mut limit,
        |_| 8.0,
        600,
        |i| {
            if i < 200 {
                PAGE
            } else {
                Page {
                    work: 2.0,
                    timeout: 10.0,
                }
            }
        },
    );
    let reached = run.limits.iter().position(|&l| l == 8).expect("reached 8");
    assert!(run.limits[reached..].iter().all(|&l| l == 8));
}

#[test]
fn slower_pages_with_the_same_timeout_lower_the_limit_only_for_a_while() {
    // The best was measured on fast pages; pages 3x heavier (same timeout)
    // look like a queue at first. At the floor the best is seen to be
    // stale, and the limit grows back to maxconn.
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    let run = simulate(
        &mut limit,
        |_| 100.0,
        800,
        |i| {
            if i < 100 {
                PAGE
            } else {
                Page {
                    work: 0.3,
                    timeout: 1.0,
                }
            }
        },
    );
    assert_eq!(run.limits.last(), Some(&8), "{:?}", &run.limits[100..200]);
    assert_eq!(run.timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn one_504_among_good_renders_moves_nothing_half_504s_halve() {
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    // Slow start to 8 on renders of 0.2 s.
    let mut t = Instant::now();
    while limit.limit() < 8 {
        limit.record(sample(t, 0.2, Ending::Rendered, limit.limit()));
        t += Duration::from_millis(10);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let now = Instant::now();
    for i in 0..8 {
        let ending = if i == 3 {
            Ending::TimedOut
        } else {
            Ending::Rendered
        };
        let elapsed = if i == 3 { 1.0 } else { 0.2 };
        assert_eq!(limit.record(sample(now, elapsed, ending, 8)), None);
    }
    assert_eq!(limit.limit(), 8);
    tokio::time::advance(Duration::from_secs(5)).await;
    let now = Instant::now();
    let mut changes = Vec::new();
    for _ in 0..4 {
        changes.extend(limit.record(sample(now, 1.0, Ending::TimedOut, 8)));
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!((changes[0].from, changes[0].to), (8, 5));
    assert!(changes[0].why.contains("504"), "{}", changes[0].why);
}

#[tokio::test(start_paused = true)]
async fn renders_started_under_an_earlier_limit_are_ignored() {
    let mut limit = AdaptiveLimit::new(8, Instant::now());
    let early = Instant::now();
    let first = limit.record(sample(early, 0.2, Ending::Rendered, 1));
    // The first render ran alone: half the slots next.
    assert_eq!(first.map(|c| c.to), Some(4));
    tokio::time::advance(Duration::from_secs(1)).await;
    // A window of renders 4x slower ends slow start (4 / 4 + 1)...
    let later = Instant::now();
    let changes: Vec<usize> = (0..3)
        .filter_map(|_| limit.record(sample(later, 0.8, Ending::Rendered, 4)))
        .map(|c| c.to)
        .collect();
    assert_eq!(changes, [3]);
    let after = limit.limit();
    // ...and the 504s of renders sent before that window closed no longer count.
    for _ in 0..8 {
        assert_eq!(limit.record(sample(later, 1.0, Ending::TimedOut, 8)), None);
    }
    assert_eq!(limit.limit(), after);
}

#[test]
fn half_a_window_of_504s_closes_it_at_once() {
    let now = Instant::now();
    let mut limit = AdaptiveLimit::new(8, now);
    limit.record(sample(now, 0.2, Ending::Rendered, 1));
    limit.adopt(6, None, now);
    let later = now + Duration::from_secs(1);
    // A window of 6: the third 504 closes it, three renders early.
    assert_eq!(limit.record(sample(later, 1.0, Ending::TimedOut, 6)), None);
    assert_eq!(limit.record(sample(later, 1.0, Ending::TimedOut, 6)), None);
    let change = limit.record(sample(later, 0.2, Ending::Rendered, 6));
    assert_eq!(change, None);
    let change = limit.record(sample(later, 1.0, Ending::TimedOut, 6));
    assert_eq!(change.map(|c| (c.from, c.to)), Some((6, 4)));
}

#[test]
fn adopt_takes_the_fleets_limit_within_bounds() {
    let now = Instant::now();
    let mut limit = AdaptiveLimit::new(6, now);
    assert_eq!(limit.adopt(0, None, now).map(|c| c.to), None, "1 already");
    assert_eq!(limit.adopt(99, None, now).map(|c| c.to), Some(6));
    assert_eq!(limit.adopt(6, None, now), None);
}

#[test]
fn a_process_that_adopts_the_fleets_best_decides_from_it() {
    // Another process found the best (0.2) and the limit 4; this one takes
    // both, so its first window of renders 4x slower is a queue to it.
    let now = Instant::now();
    let mut limit = AdaptiveLimit::new(8, now);
    assert_eq!(limit.adopt(4, Some(0.2), now).map(|c| c.to), Some(4));
    assert_eq!(limit.best(), Some(0.2));
    let later = now + Duration::from_millis(1);
    let changes: Vec<usize> = (0..4)
        .filter_map(|_| limit.record(sample(later, 0.8, Ending::Rendered, 4)))
        .map(|c| c.to)
        .collect();
    assert_eq!(changes, [3], "4 x 0.5 + 1");
    // Without a best, the fleet is still in slow start: the first render
    // alone is the baseline, as in a process of its own.
    let mut fresh = AdaptiveLimit::new(8, now);
    assert_eq!(fresh.adopt(1, None, now), None);
    let first = fresh.record(sample(later, 0.2, Ending::Rendered, 1));
    assert_eq!(first.map(|c| c.to), Some(4));
}

#[test]
fn a_best_adopted_from_the_fleet_keeps_the_noise_floor() {
    // Renders of 20 ms measured by another process; here 50 ms, 2.5 times
    // the best but 30 ms more: the crawler's own turn, not a queue (the
    // prober of a fleet that changed hands lost the floor before).
    let now = Instant::now();
    let mut limit = AdaptiveLimit::new(8, now);
    assert_eq!(limit.adopt(6, Some(0.02), now).map(|c| c.to), Some(6));
    let later = now + Duration::from_millis(1);
    for _ in 0..30 {
        assert_eq!(limit.record(sample(later, 0.05, Ending::Rendered, 6)), None);
    }
    assert_eq!(limit.limit(), 6);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Whatever the node answers, the limit stays within [1, maxconn].
    #[test]
    fn the_limit_stays_within_one_and_maxconn(
        maxconn in 1usize..20,
        samples in proptest::collection::vec(
            (0u64..3_000, 0.0f64..5.0, proptest::bool::ANY, 0usize..25, 0.01f64..100.0, 0.0f64..3.0),
            1..300,
        ),
    ) {
        let base = Instant::now();
        let mut limit = AdaptiveLimit::new(maxconn, base);
        let mut clock = 0u64;
        for (gap, elapsed, timed_out, in_flight, timeout, wait) in samples {
            clock += gap;
            let change = limit.record(Sample {
                started: base + Duration::from_millis(clock),
                elapsed: Duration::from_secs_f64(elapsed),
                budget: RenderBudget {
                    timeout: Duration::from_secs_f64(timeout),
                    wait: Duration::from_secs_f64(wait),
                },
                ending: if timed_out { Ending::TimedOut } else { Ending::Rendered },
                in_flight,
            });
            let now = limit.limit();
            proptest::prop_assert!((1..=maxconn).contains(&now));
            if let Some(change) = change {
                proptest::prop_assert_ne!(change.from, change.to);
                proptest::prop_assert_eq!(change.to, now);
            }
            if let Some(best) = limit.best() {
                proptest::prop_assert!(best > 0.0 && best.is_finite());
            }
        }
    }

    /// Renders no slower than the best on a full node never lower the limit.
    #[test]
    fn renders_as_fast_as_the_best_never_lower_it(
        maxconn in 1usize..20,
        elapsed in 0.01f64..10.0,
        count in 1usize..200,
    ) {
        let base = Instant::now();
        let mut limit = AdaptiveLimit::new(maxconn, base);
        let mut previous = limit.limit();
        for i in 0..count {
            let started = base + Duration::from_millis(i as u64 * 100_000);
            limit.record(sample(started, elapsed.min(0.99), Ending::Rendered, previous));
            proptest::prop_assert!(limit.limit() >= previous);
            previous = limit.limit();
        }
    }
}

mod in_the_pool {
    use super::*;
    use crate::core::admission::Tried;
    use crate::core::config::{HealthThresholds, NodeEndpoint, NodeSpec};
    use crate::core::pool::Pool;
    use crate::core::selection::LeastConn;

    fn pool(maxconn: usize) -> Pool {
        let spec = NodeSpec {
            endpoint: NodeEndpoint::parse("url", "http://node:8050").unwrap(),
            maxconn,
            weight: 1,
            maxrss: None,
        };
        let thresholds = HealthThresholds {
            fall: 3,
            rise: 2,
            error_limit: 3,
        };
        Pool::new(vec![spec], thresholds, Box::new(LeastConn::new()))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_caps_a_node_at_its_limit_and_a_higher_limit_frees_a_waiter() {
        let pool = pool(4);
        pool.adapt_limits();
        assert_eq!(pool.snapshot()[0].limit, Some(1));
        let first = pool.acquire(&Tried::default(), far()).await.unwrap();
        let sent = Instant::now();
        // A second request waits: the limit is 1 though maxconn is 4.
        let p = pool.clone();
        let second = tokio::spawn(async move { p.acquire(&Tried::default(), far()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pool.queue_stats().waiting, 1);
        // The first render comes back alone: slow start raises the limit to
        // 2, and the waiter gets the new slot while the first still holds its.
        pool.record_render(
            0,
            Sample {
                started: sent,
                elapsed: Duration::from_millis(200),
                budget: RenderBudget::default(),
                ending: Ending::Rendered,
                in_flight: 0,
            },
        );
        let second = second.await.unwrap().unwrap();
        assert_eq!(pool.snapshot()[0].in_flight, 2);
        assert_eq!(pool.snapshot()[0].limit, Some(2));
        drop((first, second));
    }

    #[tokio::test(start_paused = true)]
    async fn without_adaptive_limits_the_node_takes_maxconn_and_shows_no_limit() {
        let pool = pool(3);
        let mut leases = Vec::new();
        for _ in 0..3 {
            leases.push(pool.acquire(&Tried::default(), far()).await.unwrap());
        }
        assert_eq!(pool.snapshot()[0].limit, None);
        assert_eq!(pool.snapshot()[0].in_flight, 3);
    }
}

//! The last minutes of every node, for the stats page's charts: a bounded
//! ring of time buckets per node and for the whole cluster, and each node's
//! state changes.
//!
//! The problem: the page shows totals since the start, which say nothing
//! about what happens *now* (a node that stopped answering a minute ago, a
//! burst of 504s). Its charts need the recent past, and a crawl may run for
//! days, so memory must not grow with it.
//!
//! The algorithm: a sampler (`sampler.rs`) hands every pool snapshot to
//! [`History::record`] once a second. Counters are kept as deltas between
//! two snapshots (a counter that went back, as a node forgotten and added
//! again starts from zero, counts from zero), folded into buckets of
//! `bucket` (5 s): the sum of the deltas, the seconds they cover (so a
//! bucket still filling, or one after a stalled sampler, gives a true
//! rate), the peak of the renders in flight (what matters against the
//! node's cap) and the cap. A bucket ring holds `window / bucket` buckets
//! (120 for 10 minutes), and older ones fall off its front, as RRDtool's
//! round-robin archives do with consolidated data points (Oetiker, RRDtool's
//! `rrdcreate`, the AVERAGE/MAX functions). Peaks are taken per bucket, not
//! summed across nodes: the cluster's own ring takes the peak of the sum.
//!
//! States are strings as the snapshots give them (UP, GOING DOWN, DOWN,
//! COMING UP and whatever comes next), recorded when a sample sees one
//! different from the last: a state that lasted less than a sample period
//! is not seen (probe cycles are of that order, so DOWN and COMING UP are).
//! A node keeps at most `max_events` of them and none older than the window
//! but the one in force at its start. A node not seen for a window (gone
//! from DNS, say) is forgotten. Time is handed in, never read here: tests
//! run with made-up instants.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::node::{NodeCounters, NodeSnapshot};

/// How much history is kept, and how finely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// How far back the charts go.
    pub window: Duration,
    /// The width of one bucket: one point of a chart.
    pub bucket: Duration,
    /// State changes kept per node at most (a flapping node's oldest
    /// changes fall off first).
    pub max_events: usize,
}

impl HistorySettings {
    /// The stats page's: 10 minutes in 5 s buckets (120 points a chart, few
    /// enough for a page of 50 nodes to stay small), 32 state changes.
    pub const DEFAULT: Self = Self {
        window: Duration::from_secs(600),
        bucket: Duration::from_secs(5),
        max_events: 32,
    };

    /// Buckets in the window.
    pub fn buckets(&self) -> usize {
        let bucket = self.bucket.as_millis().max(1);
        self.window.as_millis().div_ceil(bucket).max(1) as usize
    }
}

/// What happened during one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Samples folded in; 0 for a bucket no sample saw.
    pub samples: u16,
    /// Milliseconds the counters' deltas cover.
    pub covered_ms: u32,
    /// HTTP answers of the node (any status).
    pub answers: u32,
    /// 504 GlobalTimeoutError answers.
    pub render_timeouts: u32,
    /// Attempts that failed by the node's fault.
    pub failures: u32,
    /// The most renders in flight a sample saw.
    pub in_flight_peak: u32,
    /// The node's cap on renders in flight (the sum of the caps for the
    /// cluster), as last seen.
    pub maxconn: u32,
}

impl Bucket {
    /// Answers per second over the time the bucket covers, if any.
    pub fn answers_per_second(&self) -> Option<f64> {
        (self.covered_ms > 0).then(|| f64::from(self.answers) * 1000.0 / f64::from(self.covered_ms))
    }
}

/// A node's state from `at` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// When a sample first saw it, from the history's start.
    pub at: Duration,
    /// The state, as the snapshot named it.
    pub state: String,
    /// False for the state a node had when the history first saw it: where
    /// its record starts, not a change.
    pub change: bool,
}

/// The counters the charts draw, as totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    answers: u64,
    render_timeouts: u64,
    failures: u64,
}

impl Totals {
    fn of(c: &NodeCounters) -> Self {
        Self {
            answers: c.responses.iter().sum(),
            render_timeouts: c.render_timeouts,
            failures: c.failures,
        }
    }

    /// What happened since `before`; a counter below its old value started
    /// again from zero.
    fn since(self, before: Self) -> Self {
        let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
        Self {
            answers: delta(self.answers, before.answers),
            render_timeouts: delta(self.render_timeouts, before.render_timeouts),
            failures: delta(self.failures, before.failures),
        }
    }
}

/// Buckets by index (time since the start / bucket width), the newest last,
/// at most `capacity` of them, with no gap: a bucket no sample saw is empty.
#[derive(Debug, Clone, Default)]
struct Ring {
    first: u64,
    buckets: VecDeque<Bucket>,
}

impl Ring {
    /// The bucket of `index`, made (with the empty ones before it) if new;
    /// buckets past `capacity` fall off the front. Time never goes back, so
    /// an index older than the newest bucket means the newest.
    fn at(&mut self, index: u64, capacity: usize) -> &mut Bucket {
        match self.last() {
            None => self.first = index,
            Some(last) if index > last => {
                let missing = index - last;
                if missing >= capacity as u64 {
                    self.buckets.clear();
                    self.first = index;
                } else {
                    self.buckets
                        .extend(std::iter::repeat_n(Bucket::default(), missing as usize - 1));
                }
            }
            Some(_) => return self.buckets.back_mut().expect("a ring with a last bucket"),
        }
        self.buckets.push_back(Bucket::default());
        while self.buckets.len() > capacity {
            self.buckets.pop_front();
            self.first += 1;
        }
        self.buckets.back_mut().expect("just pushed")
    }

    fn last(&self) -> Option<u64> {
        (!self.buckets.is_empty()).then(|| self.first + self.buckets.len() as u64 - 1)
    }

    /// The `count` buckets that end with `last`, empty where none was kept
    /// (before the history's start, too).
    fn window(&self, last: u64, count: usize) -> Vec<Bucket> {
        (0..count as u64)
            .map(|k| {
                (last + 1 + k)
                    .checked_sub(count as u64)
                    .and_then(|index| index.checked_sub(self.first))
                    .and_then(|offset| self.buckets.get(offset as usize))
                    .copied()
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// One node's history.
#[derive(Debug, Clone)]
struct NodeHistory {
    name: String,
    ring: Ring,
    totals: Totals,
    last_seen: Duration,
    /// The first is the state in force at the window's start (or when the
    /// node was first seen), the rest the changes since, oldest first.
    states: VecDeque<StateChange>,
}

/// The last minutes of a cluster: feed it snapshots, read it as a
/// [`HistoryView`].
#[derive(Debug, Clone)]
pub struct History {
    settings: HistorySettings,
    origin: Instant,
    last_sample: Option<Duration>,
    cluster: Ring,
    nodes: Vec<NodeHistory>,
}

impl History {
    /// An empty history whose time starts at `origin`.
    pub fn new(settings: HistorySettings, origin: Instant) -> Self {
        Self {
            settings,
            origin,
            last_sample: None,
            cluster: Ring::default(),
            nodes: Vec::new(),
        }
    }

    /// The settings it keeps to.
    pub fn settings(&self) -> &HistorySettings {
        &self.settings
    }

    fn index(&self, at: Duration) -> u64 {
        (at.as_millis() / self.settings.bucket.as_millis().max(1)) as u64
    }

    /// Folds in the pool's snapshot taken at `now`.
    pub fn record(&mut self, now: Instant, nodes: &[NodeSnapshot]) {
        let at = now.saturating_duration_since(self.origin);
        let at = self.last_sample.map_or(at, |last| at.max(last));
        let since_last = self.last_sample.map_or(Duration::ZERO, |last| at - last);
        let index = self.index(at);
        let capacity = self.settings.buckets();
        let mut in_flight = 0u32;
        let mut maxconn = 0u32;
        let mut happened = Totals::default();
        for (position, snapshot) in nodes.iter().enumerate() {
            let totals = Totals::of(&snapshot.counters);
            let state = snapshot.state;
            // Nodes keep their order from one snapshot to the next, so the
            // node at the same position is nearly always the one.
            let found = match self.nodes.get(position) {
                Some(node) if node.name == snapshot.url => Some(position),
                _ => self.nodes.iter().position(|node| node.name == snapshot.url),
            };
            let node = match found {
                Some(found) => &mut self.nodes[found],
                None => {
                    self.nodes.push(NodeHistory {
                        name: snapshot.url.clone(),
                        ring: Ring::default(),
                        totals,
                        last_seen: at,
                        states: VecDeque::from([StateChange {
                            at,
                            state: state.to_owned(),
                            change: false,
                        }]),
                    });
                    self.nodes.last_mut().expect("just pushed")
                }
            };
            let delta = totals.since(node.totals);
            let covered = at.saturating_sub(node.last_seen);
            node.totals = totals;
            node.last_seen = at;
            let bucket = node.ring.at(index, capacity);
            fold(bucket, covered, delta, snapshot.in_flight, snapshot.maxconn);
            if node.states.back().is_none_or(|last| last.state != state) {
                node.states.push_back(StateChange {
                    at,
                    state: state.to_owned(),
                    change: true,
                });
            }
            in_flight = in_flight.saturating_add(saturate(snapshot.in_flight));
            maxconn = maxconn.saturating_add(saturate(snapshot.maxconn));
            happened.answers += delta.answers;
            happened.render_timeouts += delta.render_timeouts;
            happened.failures += delta.failures;
        }
        let bucket = self.cluster.at(index, capacity);
        fold(
            bucket,
            since_last,
            happened,
            in_flight as usize,
            maxconn as usize,
        );
        bucket.maxconn = maxconn;
        self.last_sample = Some(at);
        self.trim(at);
    }

    /// Forgets nodes unseen for a window and state changes before it.
    fn trim(&mut self, at: Duration) {
        let window = self.settings.window;
        // The window's left edge, where the charts start.
        let first = (self.index(at) + 1).saturating_sub(self.settings.buckets() as u64);
        let start = self.settings.bucket * u32::try_from(first).unwrap_or(u32::MAX);
        self.nodes.retain(|node| at - node.last_seen < window);
        for node in &mut self.nodes {
            while node.states.len() > self.settings.max_events.max(1)
                || node.states.get(1).is_some_and(|next| next.at <= start)
            {
                node.states.pop_front();
            }
        }
    }

    /// What the charts draw: the window ending with the last sample.
    pub fn view(&self) -> HistoryView {
        let count = self.settings.buckets();
        let Some(at) = self.last_sample else {
            return HistoryView {
                settings: self.settings,
                cluster: Vec::new(),
                nodes: Vec::new(),
            };
        };
        let last = self.index(at);
        // Positions are in buckets from the window's left edge.
        // (Negative while the history is younger than the window.)
        let left = (last + 1) as f64 - count as f64;
        let bucket_ms = self.settings.bucket.as_millis().max(1) as f64;
        let position = |t: Duration| (t.as_millis() as f64 / bucket_ms - left).max(0.0);
        HistoryView {
            settings: self.settings,
            cluster: self.cluster.window(last, count),
            nodes: self
                .nodes
                .iter()
                .map(|node| NodeView {
                    name: node.name.clone(),
                    buckets: node.ring.window(last, count),
                    states: node
                        .states
                        .iter()
                        .map(|s| StateMark {
                            position: position(s.at),
                            state: s.state.clone(),
                            change: s.change && position(s.at) > 0.0,
                        })
                        .collect(),
                    end: (last + 1) as f64 - left,
                })
                .collect(),
        }
    }

    /// Bytes the history holds for one node at most (its buckets full, its
    /// state changes all kept, `name_len`-byte names and states of up to 16
    /// bytes), for the docs' figure.
    pub fn bytes_per_node(settings: &HistorySettings, name_len: usize) -> usize {
        std::mem::size_of::<NodeHistory>()
            + name_len
            + settings.buckets() * std::mem::size_of::<Bucket>()
            + settings.max_events * (std::mem::size_of::<StateChange>() + 16)
    }
}

fn saturate(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn fold(bucket: &mut Bucket, covered: Duration, delta: Totals, in_flight: usize, maxconn: usize) {
    let add = |sum: u32, more: u64| sum.saturating_add(u32::try_from(more).unwrap_or(u32::MAX));
    bucket.samples = bucket.samples.saturating_add(1);
    bucket.covered_ms = add(bucket.covered_ms, covered.as_millis() as u64);
    bucket.answers = add(bucket.answers, delta.answers);
    bucket.render_timeouts = add(bucket.render_timeouts, delta.render_timeouts);
    bucket.failures = add(bucket.failures, delta.failures);
    bucket.in_flight_peak = bucket.in_flight_peak.max(saturate(in_flight));
    bucket.maxconn = saturate(maxconn);
}

/// A state on a chart, from `position` on.
#[derive(Debug, Clone, PartialEq)]
pub struct StateMark {
    /// Where it starts, in buckets from the chart's left edge (0: at or
    /// before it).
    pub position: f64,
    /// The state's name.
    pub state: String,
    /// Whether it is a change inside the window (drawn as a line), not the
    /// state the window starts with.
    pub change: bool,
}

/// One node's window.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node, as the snapshots name it.
    pub name: String,
    /// Every bucket of the window, oldest first, empty where none was seen.
    pub buckets: Vec<Bucket>,
    /// Its states in the window, oldest first.
    pub states: Vec<StateMark>,
    /// Where the last state ends: the end of the last sample's bucket.
    pub end: f64,
}

/// The window of every node and of the cluster, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryView {
    /// The window and bucket width.
    pub settings: HistorySettings,
    /// The cluster's buckets (answers and failures summed, the peak of the
    /// renders in flight across nodes, the sum of the caps); empty before
    /// the first sample.
    pub cluster: Vec<Bucket>,
    /// Every node seen within the window, in the order first seen.
    pub nodes: Vec<NodeView>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::node::NodeCounters;

    const SETTINGS: HistorySettings = HistorySettings {
        window: Duration::from_secs(20),
        bucket: Duration::from_secs(5),
        max_events: 3,
    };

    /// A node's snapshot with these counters, for the tests of the history
    /// and of its charts.
    pub(crate) fn snapshot(
        url: &str,
        state: &'static str,
        counters: NodeCounters,
        in_flight: usize,
        maxconn: usize,
    ) -> NodeSnapshot {
        NodeSnapshot {
            url: url.to_owned(),
            state,
            reason: String::new(),
            since: Duration::ZERO,
            in_flight,
            maxconn,
            limit: None,
            weight: 1,
            counters,
            last_probe: None,
            drain: Vec::new(),
            peak_rss: None,
            maxrss: None,
        }
    }

    fn node(url: &str, state: &'static str, answers: u64, in_flight: usize) -> NodeSnapshot {
        let counters = NodeCounters {
            requests: answers,
            responses: [answers, 0, 0, 0],
            ..NodeCounters::default()
        };
        snapshot(url, state, counters, in_flight, 4)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn counters_become_deltas_folded_into_buckets() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        h.record(t0, &[node("a", "UP", 100, 1)]);
        h.record(t0 + secs(1), &[node("a", "UP", 103, 3)]);
        h.record(t0 + secs(2), &[node("a", "UP", 110, 2)]);
        let v = h.view();
        assert_eq!(v.settings.buckets(), 4);
        let b = v.nodes[0].buckets[3];
        // The first snapshot is a baseline: what came before the history
        // is not charted as a burst.
        assert_eq!((b.samples, b.answers, b.covered_ms), (3, 10, 2000));
        assert_eq!(b.answers_per_second(), Some(5.0));
        assert_eq!((b.in_flight_peak, b.maxconn), (3, 4));
        assert_eq!(v.nodes[0].buckets[..3], [Bucket::default(); 3]);
        assert_eq!(v.cluster[3].answers, 10);
    }

    #[test]
    fn a_counter_that_went_back_counts_from_zero() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        h.record(t0, &[node("a", "UP", 50, 0)]);
        h.record(t0 + secs(1), &[node("a", "UP", 7, 0)]);
        assert_eq!(h.view().nodes[0].buckets[3].answers, 7);
    }

    #[test]
    fn old_buckets_roll_off_and_gaps_stay_empty() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        for s in 0..=12 {
            h.record(t0 + secs(s), &[node("a", "UP", s * 2, 1)]);
        }
        // 0-4 s, 5-9 s and 10-12 s; no sample in 13-24 s; one at 25 s.
        h.record(t0 + secs(25), &[node("a", "UP", 40, 1)]);
        let v = h.view();
        let answers: Vec<u32> = v.nodes[0].buckets.iter().map(|b| b.answers).collect();
        // The window is 10-29 s: the 12 s to 25 s delta lands at 25 s.
        assert_eq!(answers, [6, 0, 0, 16]);
        assert_eq!(v.nodes[0].buckets[3].covered_ms, 13_000);
        assert_eq!(v.nodes[0].buckets[1].samples, 0);
        assert_eq!(h.nodes[0].ring.buckets.len(), 4);
    }

    #[test]
    fn memory_stays_bounded_however_long_the_crawl() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        let states = ["UP", "DOWN"];
        for s in 0..10_000u64 {
            let nodes = [
                node("a", states[(s % 2) as usize], s, 1),
                // A node per minute, as DNS might give and take them.
                node(&format!("dns-{}", s / 60), "UP", s, 1),
            ];
            h.record(t0 + secs(s), &nodes);
        }
        assert!(h.nodes.len() <= 3, "{}", h.nodes.len());
        for n in &h.nodes {
            assert!(n.ring.buckets.len() <= 4);
            assert!(n.states.len() <= SETTINGS.max_events);
        }
        assert!(h.cluster.buckets.len() <= 4);
    }

    #[test]
    fn state_changes_are_marked_where_they_happened() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        let seq = [
            "UP",
            "UP",
            "GOING DOWN",
            "DOWN",
            "DOWN",
            "DRAIN",
            "COMING UP",
            "UP",
        ];
        for (s, state) in seq.iter().enumerate() {
            h.record(t0 + secs(10 + s as u64), &[node("a", state, 0, 0)]);
        }
        let v = h.view();
        // The window is 0-19 s; at most 3 kept: the oldest give way.
        let kept: Vec<(f64, &str, bool)> = v.nodes[0]
            .states
            .iter()
            .map(|m| (m.position, m.state.as_str(), m.change))
            .collect();
        assert_eq!(
            kept,
            [
                (3.0, "DRAIN", true),
                (3.2, "COMING UP", true),
                (3.4, "UP", true)
            ]
        );
        assert!((v.nodes[0].end - 4.0).abs() < 1e-9);
    }

    #[test]
    fn the_state_at_the_window_start_is_kept_and_the_first_is_no_change() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        h.record(t0, &[node("a", "UP", 0, 0)]);
        assert!(!h.view().nodes[0].states[0].change);
        h.record(t0 + secs(1), &[node("a", "DOWN", 0, 0)]);
        assert!(h.view().nodes[0].states[1].change);
        h.record(t0 + secs(40), &[node("a", "DOWN", 0, 0)]);
        let states = h.view().nodes[0].states.clone();
        // DOWN since 1 s is in force at the window's start (20 s): drawn from
        // the left edge, not as a change.
        assert_eq!(states.len(), 1);
        assert_eq!((states[0].position, states[0].change), (0.0, false));
        assert_eq!(states[0].state, "DOWN");
    }

    #[test]
    fn the_cluster_takes_the_peak_of_the_sum_and_the_sum_of_the_caps() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        h.record(t0, &[node("a", "UP", 0, 4), node("b", "UP", 0, 0)]);
        h.record(
            t0 + secs(1),
            &[node("a", "UP", 1, 0), node("b", "UP", 2, 4)],
        );
        let v = h.view();
        let c = v.cluster[3];
        // Each node peaked at 4, never at once.
        assert_eq!((c.in_flight_peak, c.maxconn, c.answers), (4, 8, 3));
        assert_eq!(c.answers_per_second(), Some(3.0));
    }

    #[test]
    fn a_node_gone_for_a_window_is_forgotten() {
        let t0 = Instant::now();
        let mut h = History::new(SETTINGS, t0);
        h.record(t0, &[node("a", "UP", 0, 0), node("b", "UP", 0, 0)]);
        h.record(t0 + secs(19), &[node("b", "UP", 0, 0)]);
        assert_eq!(h.view().nodes.len(), 2);
        h.record(t0 + secs(20), &[node("b", "UP", 0, 0)]);
        let names: Vec<String> = h.view().nodes.into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn a_node_history_is_a_few_kilobytes() {
        let bytes = History::bytes_per_node(&HistorySettings::DEFAULT, 40);
        assert!(bytes < 8 * 1024, "{bytes}");
    }
}

//! A per-node concurrency limit that finds how many renders a Splash node
//! can run at once without slowing each of them down.
//!
//! # The problem
//! A node's `--slots` (our `maxconn`) is how many renders it accepts, not how
//! many it can finish in time: Splash renders in one process, so on a small
//! or busy host eight heavy pages at once each take about eight times as
//! long, run into their `timeout` and come back as 504s, every one a render
//! thrown away and redone. The node's own queue (renders waiting for CPU)
//! must stay empty; the throughput is the same with one render waiting as
//! with none, only the latency and the 504s grow.
//!
//! # What was studied
//! - **AIMD** (TCP Reno, Netflix's `AIMDLimit`): +1 per window, times a
//!   factor on a drop. It needs drops to learn, and a drop here is a 504 that
//!   cost a whole render; it never settles, it saws.
//! - **TCP Vegas** (Netflix's `VegasLimit`): estimates the queue from the
//!   best round trip, `queue = limit * (1 - best / rtt)`, and moves by one
//!   when the queue leaves [alpha, beta]. It is the right measure (renders
//!   waiting), but steps of one take many windows when a node of
//!   capacity 1 starts at 8; and its way of refreshing the best (take the
//!   next sample as the new best every `30 * limit` samples) takes a loaded
//!   sample for the best, after which the queue looks empty and it grows.
//! - **Gradient** (Netflix's `Gradient2Limit`, Envoy's adaptive concurrency
//!   filter): `limit = limit * gradient + headroom` with `gradient =
//!   best / current` clamped to [0.5, 1]. On a node that shares its CPU among
//!   its renders, latency grows as `n / capacity` past the capacity, so one
//!   step lands on `capacity + headroom`: it converges in one window where
//!   Vegas needs many. Gradient2 uses a long moving average as "best", which
//!   under sustained load drifts up to the current latency (gradient 1, and
//!   the limit grows); Envoy measures the true best by pinning concurrency
//!   low for a while every minute, which costs a minute's share of
//!   throughput when renders take tens of seconds.
//!
//! # What is used, and why it fits Splash
//! A gradient controller (Envoy's form) over windows counted in renders,
//! with TCP's slow start to learn the node's best at no load:
//! - **Latency as a share of the render's own budget** (`render_budget`):
//!   `(elapsed - wait) / timeout`, so pages asked to take longer do not look
//!   like a slower node.
//! - **Slow start from 1** (TCP): the first render on a node runs alone, so
//!   its latency is the node's no-load latency, the one baseline a gradient
//!   needs and no later measurement under load can give (any render that
//!   ran alone on the node counts as one). Once it is back the limit jumps
//!   to half the slots, and every render no slower than the best adds one
//!   (doubling per round of renders), up to the first window that shows a
//!   queue. Doubling from 1 all the way (TCP's way) cost 12 % of a short
//!   crawl on nodes with room to spare (three rounds of renders below
//!   maxconn per node); half the slots is what the slowest node the
//!   gradient must bring down takes without a 504 (capacity 1 under 8
//!   slots, a render at up to an eighth of its timeout alone: 4 at once
//!   take half of it).
//! - **Windows of `max(limit, 3)` renders, not of time**: renders take 10 ms
//!   on one crawl and 90 s on another; a window of one round of renders fits
//!   both, where Envoy's 100 ms windows would hold no sample at all. Only
//!   renders started after the window opened count: those started before
//!   ran under the old limit (TCP's one reaction per round trip).
//! - **The window's median against the best**: one odd page cannot move the
//!   limit; a window where half the renders slowed does. Latency up to 1.5x
//!   the best is no queue: the best is one render's (the first, alone),
//!   and page-to-page render times vary by that much on an idle node (with
//!   a spread of +-20 %, Envoy's 25 % buffer let a node of room to spare
//!   sink to 3 of its 5 slots in the simulation of the tests), while a 504
//!   needs far more (a render at a fifth of its timeout alone: 5x).
//! - **A noise floor of 100 ms**: a window whose median render took less
//!   than 100 ms more than the best, with no 504, never lowers the limit
//!   whatever the ratio (nor raises it: the queue estimate still decides):
//!   renders of tens of ms vary by more than 1.5x with the crawler's own
//!   turn, not the node's load.
//! - **504 GlobalTimeoutError as the worst sample**: a render that used its
//!   whole budget enters the window as 1.0 (at least), so a window where
//!   half the renders timed out halves the limit, and it closes at once
//!   rather than waiting for more renders to time out. A single 504 among
//!   good renders (one slow page) moves nothing.
//! - **A headroom of one render**: past the first sign of a queue the limit
//!   goes to `limit / ratio + 1`, which on a node sharing its CPU is its
//!   capacity plus one, so the next render is already there when one ends
//!   and the CPU never idles, while at most one render waits. It grows again
//!   by one per window while Vegas' queue estimate, `limit * (1 - best /
//!   median)`, is under one render and the node was kept full (a node the
//!   crawl does not fill proves nothing about more renders: Netflix's
//!   app-limited rule).
//! - **A stale best is replaced when latency does not follow the limit**:
//!   a queue of ours shrinks when the limit falls. Three windows in a row in
//!   which the limit fell (or sat at 1) and the median did not mean heavier
//!   pages, not a queue: the median becomes the best (Envoy recomputes its
//!   minRTT when the limit is stuck at its minimum).
//!
//! Website failures (502 RenderError), node failures and requests' own
//! errors are not fed here: they say nothing about the node's CPU.
//!
//! The state machine has no clock and no I/O: time comes in with the
//! samples, so it is tested with tables and simulated nodes.

use std::time::Duration;

use tokio::time::Instant;

use super::render_budget::RenderBudget;

/// Latency up to this multiple of the best is not a queue.
const TOLERANCE: f64 = 1.5;
/// Renders allowed beyond what the gradient says the node can run.
const HEADROOM: f64 = 1.0;
/// One window at most halves the limit.
const MIN_GRADIENT: f64 = 0.5;
/// Renders in a window at least, so that its median means something.
const MIN_WINDOW: usize = 3;
/// Windows at the floor, still slower than the best, before the best is
/// taken as stale.
const STALE_AFTER: u32 = 3;
/// Latency added by a queue below this is no queue worth a slot: with
/// renders of tens of ms, the crawler's own turn (its event loop, its
/// scheduler) varies by more than the tolerance, and a node that had room
/// lost slots for it (the large crawl of the benchmarks, 40 ms renders:
/// 85 % of the static limit's pages/s without this floor).
const NOISE_FLOOR: Duration = Duration::from_millis(100);

/// How a render ended, as far as the node's load is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The node answered (any page status): its latency is a sample.
    Rendered,
    /// 504 GlobalTimeoutError: the render used its whole budget.
    TimedOut,
}

/// One render's measure, fed when it ends.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the attempt was sent.
    pub started: Instant,
    /// How long it took.
    pub elapsed: Duration,
    /// The request's render budget.
    pub budget: RenderBudget,
    /// How it ended.
    pub ending: Ending,
    /// Renders in flight on the node as it ended, itself included (1: it
    /// ran alone, so its latency is the node's at no load).
    pub in_flight: usize,
}

impl Sample {
    fn finished(&self) -> Instant {
        self.started + self.elapsed
    }

    /// The latency as a share of the budget; a 504 counts as its whole
    /// budget at least (it would have taken longer).
    fn share(&self) -> f64 {
        let share = self.budget.share(self.elapsed);
        match self.ending {
            Ending::Rendered => share,
            Ending::TimedOut => share.max(1.0),
        }
    }
}

/// A change of the limit, for the DEBUG log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The limit before.
    pub from: usize,
    /// The limit now.
    pub to: usize,
    /// Why, in words.
    pub why: String,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    size: usize,
    shares: Vec<f64>,
    /// The renders' own times, for the noise floor.
    elapsed: Vec<Duration>,
    timeouts: usize,
    full: bool,
}

impl Window {
    fn new(opened: Instant, limit: usize) -> Self {
        Self {
            opened,
            size: limit.max(MIN_WINDOW),
            shares: Vec::new(),
            elapsed: Vec::new(),
            timeouts: 0,
            full: false,
        }
    }

    fn median(&mut self) -> f64 {
        self.shares.sort_by(f64::total_cmp);
        self.shares[self.shares.len() / 2]
    }

    fn median_elapsed(&mut self) -> Duration {
        self.elapsed.sort();
        self.elapsed[self.elapsed.len() / 2]
    }
}

/// The adaptive limit of one node.
#[derive(Debug)]
pub struct AdaptiveLimit {
    maxconn: usize,
    limit: f64,
    /// The node's best latency (share of budget) at no load.
    best: Option<f64>,
    /// The same in time, for the noise floor (none after adopting a
    /// fleet's best: the floor is then not applied).
    best_elapsed: Option<Duration>,
    slow_start: bool,
    window: Window,
    /// The last window's limit and median, and how many windows in a row
    /// the limit fell while the latency did not.
    last: Option<(usize, f64)>,
    unmoved: u32,
}

impl AdaptiveLimit {
    /// A node of `maxconn` slots, at 1 in slow start.
    pub fn new(maxconn: usize, now: Instant) -> Self {
        let maxconn = maxconn.max(1);
        Self {
            maxconn,
            limit: 1.0,
            best: None,
            best_elapsed: None,
            slow_start: true,
            window: Window::new(now, 1),
            last: None,
            unmoved: 0,
        }
    }

    /// Renders the node may have in flight now: in [1, maxconn].
    pub fn limit(&self) -> usize {
        (self.limit as usize).clamp(1, self.maxconn)
    }

    /// The node's best latency so far, as a share of the render budget.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Takes the fleet's limit and best (decided by the process that
    /// probes for the fleet): the next decisions, if this process comes to
    /// make them, start from there. Slow start goes on while the fleet has
    /// no best yet.
    pub fn adopt(&mut self, limit: usize, best: Option<f64>, now: Instant) -> Option<Change> {
        let from = self.limit();
        if best.is_some() {
            self.best = best;
        }
        self.slow_start = self.best.is_none();
        let limit = limit.clamp(1, self.maxconn);
        if limit == from {
            return None;
        }
        self.limit = limit as f64;
        self.last = None;
        self.unmoved = 0;
        self.window = Window::new(now, limit);
        self.change(from, "the fleet's limit")
    }

    /// Feeds one render; returns the change of limit it caused, if any.
    pub fn record(&mut self, sample: Sample) -> Option<Change> {
        if sample.started < self.window.opened {
            return None; // ran under an earlier limit
        }
        let from = self.limit();
        let share = sample.share();
        // Netflix's app-limited rule: at least half the limit in use.
        let full = 2 * sample.in_flight >= from;
        let rendered = sample.ending == Ending::Rendered;
        let first_best = rendered && sample.in_flight <= 1 && self.best.is_none();
        if rendered && sample.in_flight <= 1 {
            // Alone on the node (from this process): a no-load latency.
            self.best = Some(self.best.map_or(share, |best| best.min(share)));
            let elapsed = self
                .best_elapsed
                .map_or(sample.elapsed, |b| b.min(sample.elapsed));
            self.best_elapsed = Some(elapsed);
        }
        if self.best_elapsed.is_none() {
            // A best adopted from the fleet (another process measured it):
            // in time as this render's budget gives it, so that the noise
            // floor holds after the prober changed too.
            self.best_elapsed = self.best.map(|best| sample.budget.elapsed_at(best));
        }
        let window = &mut self.window;
        window.shares.push(share);
        window.elapsed.push(sample.elapsed);
        window.full |= full;
        if !rendered {
            window.timeouts += 1;
        }
        // Slow start: one more for every render no slower than the best,
        // so the limit doubles per round of renders.
        let fast = self.best.is_some_and(|best| share <= TOLERANCE * best);
        if self.slow_start && first_best {
            // The baseline is known: half the slots at once, where doubling
            // from 1 would take two more rounds of renders. Half is what
            // the slowest node the gradient must bring down can take
            // without 504s (a render at an eighth of its timeout alone, on
            // a node of capacity 1 under 8 slots: at 4 it takes half).
            self.limit = self.limit.max(self.maxconn.div_ceil(2) as f64).max(2.0);
            self.limit = self.limit.min(self.maxconn as f64);
        } else if self.slow_start && rendered && full && fast {
            self.limit = (self.limit + 1.0).min(self.maxconn as f64);
        }
        let done = window.shares.len() >= window.size || 2 * window.timeouts >= window.size;
        let why = if done {
            self.close_window(sample.finished())
        } else if first_best {
            "slow start: the first render ran alone, half the slots next".to_owned()
        } else {
            "slow start: renders as fast as the best".to_owned()
        };
        self.change(from, &why)
    }

    /// Moves the limit by what the window showed; says why.
    fn close_window(&mut self, now: Instant) -> String {
        let cap = self.limit();
        let median = self.window.median();
        let best = self.best.map_or(median, |best| best.min(median));
        self.best = Some(best);
        let ratio = median / best;
        let timeouts = self.window.timeouts;
        let renders = self.window.shares.len();
        let added = self
            .best_elapsed
            .map(|best| self.window.median_elapsed().saturating_sub(best));
        let noise = timeouts == 0 && added.is_some_and(|added| added < NOISE_FLOOR);
        let why = if ratio > TOLERANCE && !noise {
            self.slow_start = false;
            // Latency that stays put while the limit falls is no queue of
            // ours: the pages got heavier, the best is stale.
            let unmoved = self.last.is_some_and(|(last_cap, last_median)| {
                cap < last_cap && median >= 0.95 * last_median
            });
            self.unmoved = if unmoved || cap == 1 {
                self.unmoved + 1
            } else {
                0
            };
            if self.unmoved >= STALE_AFTER {
                self.best = Some(median);
                self.unmoved = 0;
                format!("the best was stale: renders {ratio:.2}x it at every limit")
            } else {
                let gradient = (1.0 / ratio).max(MIN_GRADIENT);
                self.limit = (cap as f64 * gradient + HEADROOM).min(self.limit);
                if timeouts > 0 {
                    format!("{timeouts} of {renders} renders 504, median {ratio:.2}x the best")
                } else {
                    format!("renders {ratio:.2}x slower than the best")
                }
            }
        } else {
            self.unmoved = 0;
            // Under half a render waiting (Vegas' queue estimate): room for
            // one more, which leaves at most the headroom's one waiting.
            let queue = cap as f64 * (1.0 - 1.0 / ratio);
            if !self.slow_start && self.window.full && queue < HEADROOM / 2.0 {
                self.limit += 1.0;
            }
            if noise && ratio > TOLERANCE {
                format!("renders {ratio:.2}x the best, under {NOISE_FLOOR:?} more: no queue")
            } else {
                format!("renders {ratio:.2}x the best, node full")
            }
        };
        self.limit = self.limit.clamp(1.0, self.maxconn as f64);
        if self.limit() == self.maxconn {
            self.slow_start = false;
        }
        self.last = Some((cap, median));
        self.window = Window::new(now, self.limit());
        why
    }

    fn change(&self, from: usize, why: &str) -> Option<Change> {
        let to = self.limit();
        (to != from).then(|| Change {
            from,
            to,
            why: why.to_owned(),
        })
    }
}

#[cfg(test)]
#[path = "adaptive_tests.rs"]
mod tests;

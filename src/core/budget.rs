//! A retry budget for 504s, so that slow pages cannot start a retry storm.
//!
//! Why a budget and not only `retries`: a per-request cap still lets every
//! request retry. When pages are slow everywhere (the site is slow, not the
//! node), every render ends in a 504 and each one is retried up to `retries`
//! times on other nodes: the cluster does four times the work for the same
//! 504s and the healthy pages queue behind them. A budget (the idea of
//! tower's `retry::budget` and Finagle's) lets retries be at most a share of
//! the requests of the last few seconds, plus a small floor so that a quiet
//! cluster still retries.
//!
//! Only 504s draw from it. A node failure (refused, reset, killed
//! mid-render) is retried elsewhere whatever the budget says: that retry is
//! what keeps a page from being lost when a node dies, and a dead node does
//! not make the other nodes slower.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window the budget looks back over.
const WINDOW: Duration = Duration::from_secs(10);
/// Retries always allowed per window, however few the requests.
const FLOOR: usize = 10;

/// Retries of 504s as at most `ratio` of the requests of the last 10 s,
/// plus 10 per window.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    events: Mutex<Events>,
}

#[derive(Debug, Default)]
struct Events {
    requests: VecDeque<Instant>,
    retries: VecDeque<Instant>,
}

impl Events {
    fn trim(&mut self, now: Instant) {
        for queue in [&mut self.requests, &mut self.retries] {
            while queue
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) > WINDOW)
            {
                queue.pop_front();
            }
        }
    }
}

impl RetryBudget {
    /// A budget of `ratio` retries per request (0.2: one retry for five
    /// requests), on top of the floor.
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio,
            events: Mutex::new(Events::default()),
        }
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request.
    pub fn deposit(&self, now: Instant) {
        let mut events = self.events();
        events.trim(now);
        events.requests.push_back(now);
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn withdraw(&self, now: Instant) -> bool {
        let mut events = self.events();
        events.trim(now);
        // Saturating both ways: a float cast to usize saturates, and the floor
        // must not wrap a huge share round to almost nothing.
        let allowed = FLOOR.saturating_add((events.requests.len() as f64 * self.ratio) as usize);
        if events.retries.len() < allowed {
            events.retries.push_back(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_lets_a_quiet_cluster_retry() {
        let budget = RetryBudget::new(0.2);
        let now = Instant::now();
        assert!((0..FLOOR).all(|_| budget.withdraw(now)));
        assert!(!budget.withdraw(now));
    }

    #[test]
    fn retries_are_a_share_of_recent_requests() {
        let budget = RetryBudget::new(0.2);
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit(now);
        }
        let granted = (0..100).filter(|_| budget.withdraw(now)).count();
        assert_eq!(granted, FLOOR + 20);
    }

    #[test]
    fn a_huge_share_saturates_instead_of_wrapping_to_nothing() {
        // f64::MAX * 1 casts to usize::MAX; FLOOR + that wrapped to 9 (or
        // panicked in a debug build) before the add saturated.
        let budget = RetryBudget::new(f64::MAX);
        let now = Instant::now();
        budget.deposit(now);
        assert_eq!((0..1000).filter(|_| budget.withdraw(now)).count(), 1000);
    }

    #[test]
    fn the_window_slides() {
        let budget = RetryBudget::new(0.0);
        let start = Instant::now();
        assert!((0..FLOOR).all(|_| budget.withdraw(start)));
        assert!(!budget.withdraw(start + Duration::from_secs(5)));
        assert!(budget.withdraw(start + WINDOW + Duration::from_millis(1)));
    }
}

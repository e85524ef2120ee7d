//! When a request gets another attempt, and how soon.
//!
//! HAProxy's `retries` with `option redispatch`: up to `retries` attempts
//! after the first, for the outcomes the outcome table marks retryable (node
//! failures and 504s), each on a node the request has not tried while one is
//! free (the pool's selection sees the tried set), all within the request's
//! own timeout. The policy only decides; the request keeps its [`Spent`]
//! tally.
//!
//! An attempt that found its node already gone (a refused connection) is
//! not counted against `retries`: nothing was rendered, and the node is
//! DOWN after it, so the next attempt waits in the queue for a node that is
//! UP instead of being thrown at another dead one. Counting them lost pages
//! when nodes died together (Splash nodes that reach `--maxrss` at the same
//! pace exit within seconds of each other): a render cut by one exit, then
//! refusals on nodes that had exited but were not yet known DOWN, used up
//! `retries = 3` in 10 ms, while the nodes were back 5 s later. Such
//! attempts are bounded on their own: at most twice the number of nodes in
//! all (each node found gone when it exits, and once more if it fails again
//! right after its probes bring it back), each followed by a wait in the
//! queue within the request's timeout.
//!
//! A render cut by its node's death is retried after a pause
//! ([`AFTER_NODE_DEATH`]). Node deaths come in waves: nodes started together
//! that reach `--maxrss` at the same pace exit at the same check, within
//! milliseconds; a host that goes down takes all its nodes. Retried at once,
//! the cut render lands on the next node of the wave and is cut again, and
//! the poison limit reads two deaths under one request as a query of death
//! (seen on real Splash: an innocent page failed as poisoned). After the
//! pause the wave has shown itself (its nodes are DOWN), and the retry goes
//! to a node that survived it. A real query of death is only delayed: it
//! still meets the poison limit at its next kill.

use std::time::Duration;

use tokio::time::Instant;

use super::outcome::Outcome;

/// How long a render cut by its node's death waits before its retry.
pub const AFTER_NODE_DEATH: Duration = Duration::from_secs(1);

/// Attempts found a node already gone, at most, per node of the cluster.
const NODE_GONE_PER_NODE: usize = 2;

/// The retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    retries: u32,
}

/// What one request's attempts have spent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Attempts that count against `retries` (the first one included).
    counted: usize,
    /// Attempts that found their node already gone.
    node_gone: usize,
}

impl Spent {
    /// Adds one attempt that ended in `outcome`.
    pub fn add(&mut self, outcome: &Outcome) {
        if outcome.found_node_gone() {
            self.node_gone += 1;
        } else {
            self.counted += 1;
        }
    }
}

impl RetryPolicy {
    /// Allows `retries` attempts after the first.
    pub fn new(retries: u32) -> Self {
        Self { retries }
    }

    /// Whether a request whose attempts spent `spent`, the last ending in
    /// `outcome`, gets another one before `deadline`, on a cluster of
    /// `nodes` nodes.
    pub fn should_retry(
        &self,
        outcome: &Outcome,
        spent: Spent,
        nodes: usize,
        now: Instant,
        deadline: Instant,
    ) -> bool {
        let within = if outcome.found_node_gone() {
            spent.node_gone <= NODE_GONE_PER_NODE * nodes.max(1)
        } else {
            spent.counted <= self.retries as usize
        };
        outcome.action().retry && within && now < deadline
    }

    /// How long to wait before the retry that follows `outcome`.
    pub fn pause_before_retry(&self, outcome: &Outcome) -> Option<Duration> {
        outcome.is_node_death().then_some(AFTER_NODE_DEATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outcome::NodeFailure;
    use std::time::Duration;

    fn spent(outcomes: &[Outcome]) -> Spent {
        let mut spent = Spent::default();
        for outcome in outcomes {
            spent.add(outcome);
        }
        spent
    }

    const CUT: Outcome = Outcome::NodeFailure(NodeFailure::ClosedMidResponse);
    const REFUSED: Outcome = Outcome::NodeFailure(NodeFailure::ConnectionRefused);

    #[test]
    fn retries_count_after_the_first_attempt() {
        let policy = RetryPolicy::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert!(policy.should_retry(&CUT, spent(&[CUT]), 3, now, later));
        assert!(policy.should_retry(&CUT, spent(&[CUT; 3]), 3, now, later));
        assert!(!policy.should_retry(&CUT, spent(&[CUT; 4]), 3, now, later));
        let timeouts = [Outcome::RenderTimeout, Outcome::RenderTimeout];
        assert!(policy.should_retry(&Outcome::RenderTimeout, spent(&timeouts), 3, now, later));
    }

    #[test]
    fn a_node_found_gone_costs_no_retry() {
        // Nodes that exit together: a render cut by the first, then every
        // other node refuses before it is known DOWN. Retries are all left.
        let policy = RetryPolicy::new(1);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let so_far = spent(&[CUT, REFUSED, REFUSED, REFUSED]);
        assert!(policy.should_retry(&REFUSED, so_far, 3, now, later));
        // The next counted failure is the one retry's end; a node that was
        // taken DOWN under the attempt (it may have frozen under this very
        // render) counts.
        for counted in [CUT, Outcome::Abandoned] {
            let mut after = so_far;
            after.add(&counted);
            assert!(!policy.should_retry(&counted, after, 3, now, later));
        }
    }

    #[test]
    fn nodes_found_gone_are_bounded_by_the_cluster_size() {
        let policy = RetryPolicy::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert!(policy.should_retry(&REFUSED, spent(&[REFUSED; 4]), 2, now, later));
        assert!(!policy.should_retry(&REFUSED, spent(&[REFUSED; 5]), 2, now, later));
        assert!(!policy.should_retry(&REFUSED, spent(&[REFUSED; 3]), 1, now, later));
        // Past the deadline, never.
        assert!(!policy.should_retry(&REFUSED, spent(&[REFUSED]), 3, later, later));
    }

    #[test]
    fn only_a_render_cut_by_its_node_waits_before_its_retry() {
        let policy = RetryPolicy::new(3);
        assert_eq!(policy.pause_before_retry(&CUT), Some(AFTER_NODE_DEATH));
        let reset = Outcome::NodeFailure(NodeFailure::ConnectionReset);
        assert_eq!(policy.pause_before_retry(&reset), Some(AFTER_NODE_DEATH));
        for outcome in [REFUSED, Outcome::RenderTimeout, Outcome::Abandoned] {
            assert_eq!(policy.pause_before_retry(&outcome), None);
        }
    }

    #[test]
    fn never_retries_the_website_or_the_request_or_past_the_deadline() {
        let policy = RetryPolicy::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let one = |o: &Outcome| spent(std::slice::from_ref(o));
        for outcome in [
            Outcome::WebsiteError("HTTP".into()),
            Outcome::RequestError(400, "BadOption".into()),
            Outcome::ExpiredArguments,
            Outcome::Answered(200),
        ] {
            assert!(!policy.should_retry(&outcome, one(&outcome), 3, now, later));
        }
        let timeout = Outcome::RenderTimeout;
        assert!(!policy.should_retry(&timeout, one(&timeout), 3, later, later));
        assert!(!RetryPolicy::new(0).should_retry(&timeout, one(&timeout), 3, now, later));
    }
}

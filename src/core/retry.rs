//! When a request gets another attempt.
//!
//! HAProxy's `retries` with `option redispatch`: up to `retries` attempts
//! after the first, for the outcomes the outcome table marks retryable (node
//! failures and 504s), each on a node the request has not tried while one is
//! free (the pool's selection sees the tried set), all within the request's
//! own timeout. The policy only decides; the request keeps its [`Spent`]
//! tally.
//!
//! An attempt that found its node already gone (a refused connection, or the
//! node marked DOWN under it) is not counted against `retries`: nothing was
//! rendered, and the node is DOWN after it, so the next attempt waits in the
//! queue for a node that is UP instead of being thrown at another dead one.
//! Counting them lost pages when nodes died together (Splash nodes that
//! reach `--maxrss` at the same pace exit within seconds of each other): a
//! render cut by one exit, then three refusals on nodes that had exited but
//! were not yet known DOWN, used up `retries = 3` in 10 ms, while the nodes
//! were back 5 s later. Such attempts are bounded on their own: at most two
//! per node of the cluster (a node found gone when it exits, and once more
//! if it fails again right after its probes bring it back), and every one
//! of them also waits, in the queue, within the request's timeout.

use tokio::time::Instant;

use super::outcome::Outcome;

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
        let so_far = spent(&[CUT, REFUSED, REFUSED, Outcome::Abandoned]);
        assert!(policy.should_retry(&REFUSED, so_far, 3, now, later));
        assert!(policy.should_retry(&Outcome::Abandoned, so_far, 3, now, later));
        // The next counted failure is the one retry's end.
        let mut after = so_far;
        after.add(&CUT);
        assert!(!policy.should_retry(&CUT, after, 3, now, later));
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

//! When a request gets another attempt.
//!
//! HAProxy's `retries` with `option redispatch`: up to `retries` attempts
//! after the first, for the outcomes the outcome table marks retryable (node
//! failures and 504s), each on a node the request has not tried while one is
//! free (the pool's selection sees the tried set), all within the request's
//! own timeout. The policy only decides; it holds no state of its own.

use tokio::time::Instant;

use super::outcome::Outcome;

/// The retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    retries: u32,
}

impl RetryPolicy {
    /// Allows `retries` attempts after the first.
    pub fn new(retries: u32) -> Self {
        Self { retries }
    }

    /// Whether a request that made `attempts` attempts, the last ending in
    /// `outcome`, gets another one before `deadline`.
    pub fn should_retry(
        &self,
        outcome: &Outcome,
        attempts: usize,
        now: Instant,
        deadline: Instant,
    ) -> bool {
        outcome.action().retry && attempts <= self.retries as usize && now < deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outcome::NodeFailure;
    use std::time::Duration;

    #[test]
    fn retries_count_after_the_first_attempt() {
        let policy = RetryPolicy::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let failure = Outcome::NodeFailure(NodeFailure::ClosedMidResponse);
        assert!(policy.should_retry(&failure, 1, now, later));
        assert!(policy.should_retry(&failure, 3, now, later));
        assert!(!policy.should_retry(&failure, 4, now, later));
        assert!(policy.should_retry(&Outcome::RenderTimeout, 2, now, later));
    }

    #[test]
    fn never_retries_the_website_or_the_request_or_past_the_deadline() {
        let policy = RetryPolicy::new(3);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert!(!policy.should_retry(&Outcome::WebsiteError("HTTP".into()), 1, now, later));
        assert!(!policy.should_retry(
            &Outcome::RequestError(400, "BadOption".into()),
            1,
            now,
            later
        ));
        assert!(!policy.should_retry(&Outcome::ExpiredArguments, 1, now, later));
        assert!(!policy.should_retry(&Outcome::Answered(200), 1, now, later));
        assert!(!policy.should_retry(&Outcome::RenderTimeout, 1, later, later));
        assert!(!RetryPolicy::new(0).should_retry(&Outcome::RenderTimeout, 1, now, later));
    }
}

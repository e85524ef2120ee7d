//! Drain: a node that starts no new render while those in flight finish.
//!
//! Health says whether a node *can* take renders; drain says it *should not*
//! take new ones, for one of three causes, each set and cleared on its own
//! (HAProxy keeps the same split between a server's operational state and
//! its administrative `drain`):
//!
//! - the operator (`POST /nodes/{node}/drain`, until `ready`);
//! - `--maxrss`: Splash compares its *peak* RSS with `--maxrss` every 60 s and
//!   exits at once when over, cutting every render on it. Peak RSS never goes
//!   down, so a node whose `/_ping` reports a peak over its limit will exit
//!   within 60 s whatever happens: the renders it has may still finish before
//!   that check, new ones would only be cut. A reading at or under the limit
//!   after that can only come from a new process: the node restarted, and
//!   the drain ends;
//! - DNS: the node's address left its name's answers; it finishes what it
//!   has and is then forgotten.
//!
//! Pure state, no clock of its own: the caller passes `now`.

use tokio::time::Instant;

/// Why a node takes no new render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// Drained by an operator, until `ready`.
    Operator,
    /// Its peak RSS is over its `--maxrss`: it is about to exit.
    MaxRss,
    /// Its address is no longer in its name's DNS answers.
    Vanished,
}

impl DrainCause {
    /// The cause's name in `/stats.json` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainCause::Operator => "operator",
            DrainCause::MaxRss => "maxrss",
            DrainCause::Vanished => "dns",
        }
    }
}

/// A peak RSS reading over the node's limit, both in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssOverLimit {
    /// The peak the node reported.
    pub peak: u64,
    /// Its `--maxrss`.
    pub limit: u64,
}

/// A node's drain causes, and since when it drains.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    operator: bool,
    over_maxrss: Option<RssOverLimit>,
    vanished: bool,
    since: Option<Instant>,
}

/// A change of a node's drain, to be logged by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainChange {
    /// The node started draining, for this reason.
    Started(String),
    /// It takes new renders again, for this reason.
    Ended(String),
}

impl Drain {
    /// Whether the node must start no new render.
    pub fn is_draining(&self) -> bool {
        self.operator || self.over_maxrss.is_some() || self.vanished
    }

    /// Since when it drains, if it does.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Its causes, in a fixed order.
    pub fn causes(&self) -> Vec<DrainCause> {
        let mut causes = Vec::new();
        if self.operator {
            causes.push(DrainCause::Operator);
        }
        if self.over_maxrss.is_some() {
            causes.push(DrainCause::MaxRss);
        }
        if self.vanished {
            causes.push(DrainCause::Vanished);
        }
        causes
    }

    /// Whether `cause` is one of them.
    pub fn has(&self, cause: DrainCause) -> bool {
        self.causes().contains(&cause)
    }

    /// Why it drains, for people; empty when it does not.
    pub fn reason(&self) -> String {
        let mut parts = Vec::new();
        if self.operator {
            parts.push("drained by an operator".to_owned());
        }
        if let Some(rss) = self.over_maxrss {
            parts.push(format!(
                "its peak RSS {} MB is over its --maxrss {} MB, so Splash exits at its next \
                 check: drained until it restarts",
                rss.peak / MB,
                rss.limit / MB
            ));
        }
        if self.vanished {
            parts.push("its address left the name's DNS answers".to_owned());
        }
        parts.join("; ")
    }

    /// Sets or clears the operator's drain.
    pub fn set_operator(&mut self, on: bool, now: Instant) -> Option<DrainChange> {
        self.update(now, |drain| drain.operator = on)
    }

    /// Sets or clears the DNS drain.
    pub fn set_vanished(&mut self, on: bool, now: Instant) -> Option<DrainChange> {
        self.update(now, |drain| drain.vanished = on)
    }

    /// Applies a peak RSS reading against the node's limit (bytes): over it,
    /// the node drains; at or under it after being over, the node restarted.
    pub fn on_rss(&mut self, peak: u64, limit: u64, now: Instant) -> Option<DrainChange> {
        let over = (peak > limit).then_some(RssOverLimit { peak, limit });
        self.update(now, |drain| drain.over_maxrss = over)
    }

    fn update(&mut self, now: Instant, change: impl FnOnce(&mut Self)) -> Option<DrainChange> {
        let was = self.is_draining();
        let before = self.reason();
        change(self);
        match (was, self.is_draining()) {
            (false, true) => {
                self.since = Some(now);
                Some(DrainChange::Started(self.reason()))
            }
            (true, false) => {
                self.since = None;
                Some(DrainChange::Ended(format!("no longer {before}")))
            }
            _ => None,
        }
    }
}

const MB: u64 = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_add_up_and_the_drain_ends_with_the_last() {
        let now = Instant::now();
        let mut drain = Drain::default();
        assert!(!drain.is_draining());
        assert!(matches!(
            drain.set_operator(true, now),
            Some(DrainChange::Started(r)) if r == "drained by an operator"
        ));
        assert_eq!(drain.since(), Some(now));
        assert_eq!(drain.set_vanished(true, now), None);
        assert_eq!(
            drain.causes(),
            vec![DrainCause::Operator, DrainCause::Vanished]
        );
        assert_eq!(drain.set_operator(false, now), None);
        assert!(drain.is_draining());
        assert!(matches!(
            drain.set_vanished(false, now),
            Some(DrainChange::Ended(_))
        ));
        assert!(!drain.is_draining());
        assert_eq!(drain.since(), None);
    }

    #[test]
    fn a_peak_over_the_limit_drains_until_a_restarted_node_reports_less() {
        let now = Instant::now();
        let limit = 3000 * MB;
        let mut drain = Drain::default();
        assert_eq!(drain.on_rss(2000 * MB, limit, now), None);
        assert_eq!(
            drain.on_rss(limit, limit, now),
            None,
            "at the limit is not over"
        );
        let Some(DrainChange::Started(reason)) = drain.on_rss(3100 * MB, limit, now) else {
            panic!("over the limit must drain");
        };
        assert!(
            reason.contains("3100 MB") && reason.contains("3000 MB"),
            "{reason}"
        );
        assert!(drain.has(DrainCause::MaxRss));
        // Still over: nothing changes (the peak only grows).
        assert_eq!(drain.on_rss(3200 * MB, limit, now), None);
        assert!(matches!(
            drain.on_rss(150 * MB, limit, now),
            Some(DrainChange::Ended(_))
        ));
        assert!(!drain.is_draining());
    }

    #[test]
    fn an_operator_drain_outlives_a_restart() {
        let now = Instant::now();
        let mut drain = Drain::default();
        drain.set_operator(true, now);
        drain.on_rss(4000 * MB, 3000 * MB, now);
        assert_eq!(drain.on_rss(100 * MB, 3000 * MB, now), None);
        assert_eq!(drain.causes(), vec![DrainCause::Operator]);
    }
}

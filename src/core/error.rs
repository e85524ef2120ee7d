//! The errors a cluster request can end in. Each says what was tried, on
//! which nodes, and why it failed: no request is lost without a word.

use std::fmt;
use std::time::Duration;

use super::node::NodeSnapshot;
use super::outcome::Outcome;

/// One attempt of a request on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The node's URL, password masked.
    pub node: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} after {:.3}s",
            self.node,
            self.outcome,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a cluster request ended without an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterError {
    /// No node had a free slot within the queue timeout.
    NoNodeAvailable {
        /// How long the request waited in the admission queue.
        waited: Duration,
        /// Every node at that moment.
        nodes: Vec<NodeSnapshot>,
        /// Attempts made before the wait, if this was a retry.
        attempts: Vec<Attempt>,
    },
    /// Every attempt failed by the nodes' fault and no retry was left.
    AllAttemptsFailed {
        /// Every attempt, in order.
        attempts: Vec<Attempt>,
    },
    /// The request's own timeout ran out.
    Timeout {
        /// The timeout.
        timeout: Duration,
        /// Attempts made until then.
        attempts: Vec<Attempt>,
        /// Every node at that moment.
        nodes: Vec<NodeSnapshot>,
    },
    /// The cluster was closed.
    Closed {
        /// Attempts made until then.
        attempts: Vec<Attempt>,
    },
    /// The answer was larger than the request's size limit.
    ResponseTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// Attempts made, the last being the one cut short.
        attempts: Vec<Attempt>,
    },
    /// The request cannot be sent as given (a bad header, method, path).
    InvalidRequest(String),
    /// Nodes died under the request's renders as often as the poison limit
    /// allows: the page is likely to crash whichever node renders it (a
    /// query of death), so it is sent to no more nodes.
    Poisoned {
        /// The poison limit: node deaths allowed per request.
        limit: u32,
        /// Every attempt, those that ended with the node dying among them.
        attempts: Vec<Attempt>,
    },
}

impl ClusterError {
    /// The attempts made before the error.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            ClusterError::NoNodeAvailable { attempts, .. }
            | ClusterError::AllAttemptsFailed { attempts }
            | ClusterError::Timeout { attempts, .. }
            | ClusterError::Closed { attempts }
            | ClusterError::ResponseTooLarge { attempts, .. }
            | ClusterError::Poisoned { attempts, .. } => attempts,
            ClusterError::InvalidRequest(_) => &[],
        }
    }
}

fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    let shown: Vec<String> = items.iter().map(show).collect();
    f.write_str(&shown.join("; "))
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::NoNodeAvailable {
                waited,
                nodes,
                attempts,
            } => {
                write!(
                    f,
                    "no Splash node could take the request after waiting {:.1}s in the queue; nodes: ",
                    waited.as_secs_f64()
                )?;
                write_list(f, nodes, NodeSnapshot::summary)?;
                if !attempts.is_empty() {
                    f.write_str("; attempts: ")?;
                    write_list(f, attempts, ToString::to_string)?;
                }
                Ok(())
            }
            ClusterError::AllAttemptsFailed { attempts } => {
                write!(f, "all {} attempts failed: ", attempts.len())?;
                write_list(f, attempts, ToString::to_string)
            }
            ClusterError::Timeout {
                timeout,
                attempts,
                nodes,
            } => {
                write!(f, "request timed out after {:.1}s", timeout.as_secs_f64())?;
                if attempts.is_empty() {
                    f.write_str(" before any node could take it")?;
                } else {
                    f.write_str("; attempts: ")?;
                    write_list(f, attempts, ToString::to_string)?;
                }
                f.write_str("; nodes: ")?;
                write_list(f, nodes, NodeSnapshot::summary)
            }
            ClusterError::Closed { attempts } => {
                f.write_str("the Splash cluster was closed")?;
                if !attempts.is_empty() {
                    f.write_str("; attempts: ")?;
                    write_list(f, attempts, ToString::to_string)?;
                }
                Ok(())
            }
            ClusterError::ResponseTooLarge { limit, attempts } => {
                write!(
                    f,
                    "the answer is larger than the size limit of {limit} bytes; attempts: "
                )?;
                write_list(f, attempts, ToString::to_string)
            }
            ClusterError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            ClusterError::Poisoned { limit, attempts } => {
                let killed: Vec<&str> = attempts
                    .iter()
                    .filter(|a| a.outcome.is_node_death())
                    .map(|a| a.node.as_str())
                    .collect();
                write!(
                    f,
                    "not sent to another node: {limit} Splash nodes died while rendering this \
                     request ({}), so the page likely crashes Splash (poison limit {limit}); attempts: ",
                    killed.join(", ")
                )?;
                write_list(f, attempts, ToString::to_string)
            }
        }
    }
}

impl std::error::Error for ClusterError {}

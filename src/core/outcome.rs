//! What an attempt's result means: classified once, here, and nowhere else.
//!
//! Splash answers its own failures with JSON (`{"error", "type", ...}`), so a
//! status code alone cannot tell whose fault a 502 is: a `RenderError` is the
//! website's (it failed to load), an `InternalError` is the node's, and an
//! HTML 502 comes from a proxy in front of the node. [`Outcome::action`] is the
//! table that says, for each outcome, whether the core retries it elsewhere
//! and how it reflects on the node's health.

use std::fmt;

use super::health::Blame;
use super::transport::{NodeResponse, TransportError};

/// A failure that is the node's: the request deserves another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFailure {
    /// Nothing listens: the node is gone.
    ConnectionRefused,
    /// The connection was reset before an answer.
    ConnectionReset,
    /// The TCP or TLS connect did not finish in time.
    ConnectTimeout,
    /// The node closed the connection before a whole answer (killed mid-render).
    ClosedMidResponse,
    /// The bytes that came back were not HTTP.
    InvalidHttp,
    /// A 5xx whose body is not Splash's error JSON: a proxy in front answered.
    ProxyError(u16),
    /// Splash's own InternalError (500 or 502).
    InternalError(u16),
    /// Any other transport failure, with its text.
    Transport(String),
}

/// The classified result of one attempt on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An answer to return as it is (2xx, 3xx, 404, ...).
    Answered(u16),
    /// The request's own error: 400 BadOption/ScriptError, 415.
    RequestError(u16, String),
    /// 502 RenderError: the website failed to load.
    WebsiteError(String),
    /// 498 ExpiredArguments: the node's argument cache lost the arguments.
    ExpiredArguments,
    /// 504 GlobalTimeoutError: the render did not finish within its timeout.
    RenderTimeout,
    /// The node failed.
    NodeFailure(NodeFailure),
    /// The node was marked DOWN while the attempt was in flight; the attempt
    /// was given up so that the request could go elsewhere.
    Abandoned,
    /// The request's own timeout ran out during the attempt.
    DeadlineExceeded,
    /// The answer was larger than the request's size limit.
    TooLarge(usize),
}

/// What the core does about an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Whether another attempt, on another node if possible, may follow.
    pub retry: bool,
    /// How the outcome counts for the node's health.
    pub blame: Blame,
}

impl Outcome {
    /// The outcome table.
    pub fn action(&self) -> Action {
        let (retry, blame) = match self {
            Outcome::Answered(_) => (false, Blame::Healthy),
            Outcome::RequestError(..) => (false, Blame::None),
            Outcome::WebsiteError(_) => (false, Blame::None),
            Outcome::ExpiredArguments => (false, Blame::None),
            // A 504 is a soft sign (a slow page, or a node whose own queue is
            // long), not proof the node is dead: retried elsewhere, not counted.
            Outcome::RenderTimeout => (true, Blame::None),
            Outcome::NodeFailure(NodeFailure::ConnectionRefused) => (true, Blame::Fatal),
            Outcome::NodeFailure(_) => (true, Blame::Failure),
            // The node is DOWN already; the attempt was cut short by us.
            Outcome::Abandoned => (true, Blame::None),
            // The request ran out of time; no time is left to retry, and a
            // short timeout of the caller's is no proof against the node.
            Outcome::DeadlineExceeded => (false, Blame::None),
            // The page is too big wherever it renders.
            Outcome::TooLarge(_) => (false, Blame::None),
        };
        Action { retry, blame }
    }

    /// Whether the node died under the attempt: its connection closed or
    /// was reset while the render ran. That is how a Splash process that
    /// crashes, is killed or exits on `--maxrss` looks from here; a refused
    /// connection is not (nothing was rendering), nor is a node marked DOWN
    /// meanwhile (it froze, or another request found it gone).
    pub fn is_node_death(&self) -> bool {
        matches!(
            self,
            Outcome::NodeFailure(NodeFailure::ClosedMidResponse | NodeFailure::ConnectionReset)
        )
    }

    /// Whether the attempt found its node already gone: the connection
    /// refused, so nothing was rendering and the node is DOWN at once. The
    /// retry policy does not count these against `retries` (see `retry`).
    /// An attempt abandoned because probes took the node DOWN is not one:
    /// the node may have frozen under that very render.
    pub fn found_node_gone(&self) -> bool {
        matches!(self, Outcome::NodeFailure(NodeFailure::ConnectionRefused))
    }

    /// Whether the attempt ended with an HTTP answer that can be returned.
    pub fn has_answer(&self) -> bool {
        matches!(
            self,
            Outcome::Answered(_)
                | Outcome::RequestError(..)
                | Outcome::WebsiteError(_)
                | Outcome::ExpiredArguments
                | Outcome::RenderTimeout
                | Outcome::NodeFailure(NodeFailure::ProxyError(_))
                | Outcome::NodeFailure(NodeFailure::InternalError(_))
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered(status) => write!(f, "{status}"),
            Outcome::RequestError(status, kind) => write!(f, "{status} {kind}"),
            Outcome::WebsiteError(kind) => write!(f, "502 RenderError ({kind})"),
            Outcome::ExpiredArguments => f.write_str("498 ExpiredArguments"),
            Outcome::RenderTimeout => f.write_str("504 GlobalTimeoutError"),
            Outcome::NodeFailure(failure) => fmt::Display::fmt(failure, f),
            Outcome::Abandoned => f.write_str("abandoned: node marked DOWN"),
            Outcome::DeadlineExceeded => f.write_str("request timeout reached"),
            Outcome::TooLarge(limit) => write!(f, "answer larger than {limit} bytes"),
        }
    }
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeFailure::ConnectionRefused => f.write_str("connection refused"),
            NodeFailure::ConnectionReset => f.write_str("connection reset"),
            NodeFailure::ConnectTimeout => f.write_str("connect timeout"),
            NodeFailure::ClosedMidResponse => {
                f.write_str("connection closed before a whole response")
            }
            NodeFailure::InvalidHttp => f.write_str("invalid HTTP response"),
            NodeFailure::ProxyError(status) => write!(f, "{status} not from Splash (a proxy's)"),
            NodeFailure::InternalError(status) => write!(f, "{status} InternalError"),
            NodeFailure::Transport(text) => write!(f, "transport error: {text}"),
        }
    }
}

/// Classifies what the transport returned for one attempt.
pub fn classify(result: &Result<NodeResponse, TransportError>) -> Outcome {
    match result {
        Ok(response) => classify_response(response.status, &response.body),
        Err(TransportError::TooLarge { limit }) => Outcome::TooLarge(*limit),
        Err(error) => Outcome::NodeFailure(match error {
            TransportError::ConnectionRefused => NodeFailure::ConnectionRefused,
            TransportError::ConnectionReset => NodeFailure::ConnectionReset,
            TransportError::ConnectTimeout => NodeFailure::ConnectTimeout,
            TransportError::ClosedMidResponse => NodeFailure::ClosedMidResponse,
            TransportError::InvalidHttp => NodeFailure::InvalidHttp,
            TransportError::Other(text) => NodeFailure::Transport(text.clone()),
            TransportError::TooLarge { .. } => unreachable!("classified above"),
        }),
    }
}

/// Classifies an HTTP answer by its status and, for errors, Splash's error JSON.
pub fn classify_response(status: u16, body: &[u8]) -> Outcome {
    if status < 400 {
        return Outcome::Answered(status);
    }
    let error_type = splash_error_type(body);
    match (status, error_type.as_deref()) {
        (498, _) => Outcome::ExpiredArguments,
        (504, Some("GlobalTimeoutError")) => Outcome::RenderTimeout,
        (502, Some("RenderError")) => Outcome::WebsiteError(render_error_kind(body)),
        (500 | 502, Some("InternalError")) => {
            Outcome::NodeFailure(NodeFailure::InternalError(status))
        }
        (400 | 415, Some(kind)) => Outcome::RequestError(status, kind.to_owned()),
        (500..=599, None) => Outcome::NodeFailure(NodeFailure::ProxyError(status)),
        _ => Outcome::Answered(status),
    }
}

fn splash_error_json(body: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) if map.get("error").is_some_and(|e| e.is_u64()) => {
            Some(map)
        }
        _ => None,
    }
}

/// The `type` of Splash's error JSON, or `None` when the body is not one.
pub fn splash_error_type(body: &[u8]) -> Option<String> {
    splash_error_json(body)?
        .get("type")?
        .as_str()
        .map(str::to_owned)
}

fn render_error_kind(body: &[u8]) -> String {
    splash_error_json(body)
        .and_then(|map| {
            let info = map.get("info")?;
            let kind = info.get("type").and_then(|t| t.as_str()).unwrap_or("?");
            Some(match info.get("text").and_then(|t| t.as_str()) {
                Some(text) => format!("{kind}: {text}"),
                None => kind.to_owned(),
            })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splash_error(status: u16, kind: &str) -> Vec<u8> {
        format!(r#"{{"error": {status}, "type": "{kind}", "description": "d", "info": {{"type": "Network", "text": "Host x not found"}}}}"#)
            .into_bytes()
    }

    #[test]
    fn every_row_of_the_table() {
        use Blame::*;
        let rows: Vec<(Outcome, bool, Blame)> = vec![
            (classify_response(200, b"<html>"), false, Healthy),
            (classify_response(404, b"nope"), false, Healthy),
            (
                classify_response(400, &splash_error(400, "BadOption")),
                false,
                None,
            ),
            (
                classify_response(400, &splash_error(400, "ScriptError")),
                false,
                None,
            ),
            (
                classify_response(415, &splash_error(415, "UnsupportedContentType")),
                false,
                None,
            ),
            (
                classify_response(498, &splash_error(498, "ExpiredArguments")),
                false,
                None,
            ),
            (
                classify_response(502, &splash_error(502, "RenderError")),
                false,
                None,
            ),
            (
                classify_response(504, &splash_error(504, "GlobalTimeoutError")),
                true,
                None,
            ),
            (
                classify_response(500, &splash_error(500, "InternalError")),
                true,
                Failure,
            ),
            (
                classify_response(502, &splash_error(502, "InternalError")),
                true,
                Failure,
            ),
            (
                classify_response(502, b"<html>502 Bad Gateway</html>"),
                true,
                Failure,
            ),
            (
                classify_response(504, b"<html>Gateway Timeout</html>"),
                true,
                Failure,
            ),
            (classify_response(503, b""), true, Failure),
            (
                classify(&Err(TransportError::ConnectionRefused)),
                true,
                Fatal,
            ),
            (
                classify(&Err(TransportError::ConnectionReset)),
                true,
                Failure,
            ),
            (
                classify(&Err(TransportError::ConnectTimeout)),
                true,
                Failure,
            ),
            (
                classify(&Err(TransportError::ClosedMidResponse)),
                true,
                Failure,
            ),
            (classify(&Err(TransportError::InvalidHttp)), true, Failure),
            (Outcome::Abandoned, true, None),
            (Outcome::DeadlineExceeded, false, None),
            (
                classify(&Err(TransportError::TooLarge { limit: 10 })),
                false,
                None,
            ),
        ];
        for (outcome, retry, blame) in rows {
            assert_eq!(outcome.action(), Action { retry, blame }, "{outcome}");
        }
    }

    #[test]
    fn render_errors_name_the_website_failure() {
        let outcome = classify_response(502, &splash_error(502, "RenderError"));
        assert_eq!(
            outcome.to_string(),
            "502 RenderError (Network: Host x not found)"
        );
        assert!(outcome.has_answer());
        assert!(!Outcome::NodeFailure(NodeFailure::ClosedMidResponse).has_answer());
    }

    #[test]
    fn json_without_an_error_code_is_not_splash_error_json() {
        assert_eq!(splash_error_type(br#"{"type": "InternalError"}"#), None);
        assert_eq!(splash_error_type(b"[1]"), None);
        assert_eq!(
            classify_response(500, br#"{"type": "InternalError"}"#),
            Outcome::NodeFailure(NodeFailure::ProxyError(500))
        );
    }
}

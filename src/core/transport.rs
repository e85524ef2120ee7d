//! The transport: how one attempt reaches one node, behind a trait so that
//! the pool, retries and health can be tested without sockets.

use std::fmt;
use std::future::Future;

use bytes::Bytes;

use super::config::NodeEndpoint;

/// A request as sent to a node: the path is relative to the node's base URL.
///
/// Its `Debug` shows no header value, no query and no body: they may hold
/// the node's or a proxy's credentials (Splash's `proxy` argument).
#[derive(Clone)]
pub struct NodeRequest {
    /// HTTP method, e.g. `GET` or `POST`.
    pub method: String,
    /// Path and query, e.g. `/render.html?url=...`.
    pub path: String,
    /// Header names and raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, cheap to clone for a retry.
    pub body: Bytes,
    /// The largest answer body accepted, in bytes (Scrapy's DOWNLOAD_MAXSIZE).
    pub max_body: Option<usize>,
    /// A shorter body for the nodes that hold the request's saved Splash
    /// arguments (`load_args` instead of the values), if any do.
    pub saved_args: Option<SavedArgs>,
}

/// Where a request's large Splash arguments are saved already, and the body
/// that refers to them by key instead of sending them.
#[derive(Clone, Default)]
pub struct SavedArgs {
    /// The nodes (their URLs as displayed) that hold the arguments.
    pub nodes: Vec<String>,
    /// The body with `load_args`.
    pub body: Bytes,
}

impl fmt::Debug for NodeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("NodeRequest")
            .field("method", &self.method)
            .field("path", &self.path_for_log())
            .field("headers", &header_names)
            .field("body_len", &self.body.len())
            .field("max_body", &self.max_body)
            .field("saved_args", &self.saved_args)
            .finish()
    }
}

impl fmt::Debug for SavedArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SavedArgs")
            .field("nodes", &self.nodes)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A node's whole answer.
#[derive(Debug, Clone)]
pub struct NodeResponse {
    /// HTTP status.
    pub status: u16,
    /// Header names and raw values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Bytes,
}

/// Why an attempt got no whole HTTP answer. Classified by the outcome table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Nothing listens on the node's port.
    ConnectionRefused,
    /// The connection was reset.
    ConnectionReset,
    /// The connect did not finish in time.
    ConnectTimeout,
    /// The connection closed before a whole answer.
    ClosedMidResponse,
    /// The answer was not HTTP.
    InvalidHttp,
    /// The answer's body is larger than the request allows.
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Anything else, with its text.
    Other(String),
}

/// Sends requests and probes to nodes.
///
/// Implementations do not time out whole exchanges themselves: the caller
/// bounds each attempt by the request's deadline and drops the future to
/// abort it, which must close the connection (Splash then cancels the render).
pub trait Transport: Send + Sync + 'static {
    /// Sends one attempt and reads the whole answer.
    fn send(
        &self,
        node: &NodeEndpoint,
        request: &NodeRequest,
    ) -> impl Future<Output = Result<NodeResponse, TransportError>> + Send;

    /// Sends a health probe (`GET path`) and returns its answer.
    fn probe(
        &self,
        node: &NodeEndpoint,
        path: &str,
    ) -> impl Future<Output = Result<ProbeAnswer, TransportError>> + Send;
}

/// A node's answer to a health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// Its body (Splash's `/_ping` tells its peak RSS there), bounded.
    pub body: bytes::Bytes,
}

impl NodeRequest {
    /// Checks that the request can be sent at all, so that a malformed
    /// request fails once, clearly, instead of being blamed on every node.
    pub fn validate(&self) -> Result<(), String> {
        reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", self.method))?;
        if !self.path.starts_with('/') {
            return Err(format!("path {:?} must start with '/'", self.path));
        }
        for (name, value) in &self.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            reqwest::header::HeaderValue::from_bytes(value)
                .map_err(|_| format!("the value of header {name:?} has forbidden bytes"))?;
        }
        Ok(())
    }

    /// This request with another body and no saved-arguments variant.
    pub fn with_body(&self, body: Bytes) -> Self {
        Self {
            method: self.method.clone(),
            path: self.path.clone(),
            headers: self.headers.clone(),
            body,
            max_body: self.max_body,
            saved_args: None,
        }
    }

    /// The path without its query, which may hold page URLs, scripts or
    /// secrets that have no place in a log line.
    pub fn path_for_log(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_header_value_query_or_body() {
        let request = NodeRequest {
            method: "POST".to_owned(),
            path: "/render.html?proxy=http://u:s3cret@p:1".to_owned(),
            headers: vec![("authorization".to_owned(), b"Basic s3cret".to_vec())],
            body: Bytes::from_static(br#"{"proxy": "http://u:s3cret@p:1"}"#),
            max_body: None,
            saved_args: Some(SavedArgs {
                nodes: vec!["http://n:8050".to_owned()],
                body: Bytes::from_static(b"s3cret"),
            }),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization") && shown.contains("/render.html"));
    }
}

//! The HTTP transport over reqwest: one client, one connection pool, for the
//! whole cluster.
//!
//! What it refuses to do matters as much as what it does: no redirects (a
//! node's credentials must never follow a `Location` to another host), no
//! proxies from the environment (nodes are addressed directly), no response
//! decompression (bodies reach Scrapy as the node sent them).

use std::collections::HashMap;
use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING,
};

use super::config::NodeEndpoint;
use super::transport::{NodeRequest, NodeResponse, ProbeAnswer, Transport, TransportError};

/// The reqwest-backed transport.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    connect_timeout: Duration,
    /// One client per address of a node found by DNS. reqwest keys its
    /// connection pool by host, and every address of a name shares the
    /// host: one client each, told the address of the name, keeps their
    /// connections apart while `Host` and TLS keep the name.
    pinned: Arc<Mutex<HashMap<(String, SocketAddr), reqwest::Client>>>,
}

impl HttpTransport {
    /// Builds the client; `connect_timeout` bounds TCP and TLS connects.
    pub fn new(connect_timeout: Duration) -> Result<Self, TransportError> {
        // rustls needs one process-wide crypto provider; installing it twice
        // is harmless (the second call reports the first and changes nothing).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            client: Self::build(connect_timeout, None)?,
            connect_timeout,
            pinned: Arc::default(),
        })
    }

    fn build(
        connect_timeout: Duration,
        pin: Option<(&str, SocketAddr)>,
    ) -> Result<reqwest::Client, TransportError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some((host, addr)) = pin {
            builder = builder.resolve(host, addr);
        }
        builder
            .build()
            .map_err(|e| TransportError::Other(format!("cannot build HTTP client: {e}")))
    }

    /// The client that reaches this node.
    fn client(&self, node: &NodeEndpoint) -> Result<reqwest::Client, TransportError> {
        let (Some(addr), Some(host)) = (node.connect_to(), node.host()) else {
            return Ok(self.client.clone());
        };
        let mut pinned = self.pinned.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (host.to_owned(), addr);
        if let Some(client) = pinned.get(&key) {
            return Ok(client.clone());
        }
        let client = Self::build(self.connect_timeout, Some((host, addr)))?;
        pinned.insert(key, client.clone());
        Ok(client)
    }

    fn headers(node: &NodeEndpoint, request: &NodeRequest) -> Result<HeaderMap, TransportError> {
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TransportError::Other(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| TransportError::Other(format!("invalid value for header {name}")))?;
            headers.append(name, value);
        }
        // Nodes are asked for the body as it is, so that what comes back is
        // bounded by the size limit as read (no decompression bomb), and an
        // encoded answer nobody asked for is the node's fault.
        if !headers.contains_key(ACCEPT_ENCODING) {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
        if let Some(value) = headers.get_mut(AUTHORIZATION) {
            // The request's own credentials (scrapy-splash's `splash_headers`)
            // win over the node's configured ones, as explicit beats configured.
            value.set_sensitive(true);
        } else if let Some(auth) = node.authorization() {
            let mut value = HeaderValue::from_str(auth)
                .map_err(|_| TransportError::Other("invalid node credentials".to_owned()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }
}

impl Transport for HttpTransport {
    async fn send(
        &self,
        node: &NodeEndpoint,
        request: &NodeRequest,
    ) -> Result<NodeResponse, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| TransportError::Other(format!("invalid method {:?}", request.method)))?;
        let headers = Self::headers(node, request)?;
        let asked_identity = headers
            .get(ACCEPT_ENCODING)
            .is_some_and(|v| v == "identity");
        let response = self
            .client(node)?
            .request(method, node.url_for(&request.path))
            .headers(headers)
            .body(request.body.clone())
            .send()
            .await
            .map_err(|e| classify_reqwest_error(&e))?;
        let status = response.status().as_u16();
        if asked_identity {
            check_identity(response.headers())?;
        }
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        let body = read_body(response, request.max_body).await?;
        Ok(NodeResponse {
            status,
            headers,
            body,
        })
    }

    async fn probe(&self, node: &NodeEndpoint, path: &str) -> Result<ProbeAnswer, TransportError> {
        let mut request = self.client(node)?.get(node.url_for(path));
        if let Some(auth) = node.authorization() {
            request = request.header(AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| classify_reqwest_error(&e))?;
        let status = response.status().as_u16();
        // The whole body is read (so the connection goes back to the pool);
        // a probe's answer is small, and a node sending more is not well.
        let body = read_body(response, Some(PROBE_MAX_BODY)).await?;
        Ok(ProbeAnswer { status, body })
    }
}

/// The largest answer to a probe read.
const PROBE_MAX_BODY: usize = 1024 * 1024;

/// Fails an answer whose body is encoded although the node was asked for it
/// as it is (`Accept-Encoding: identity`).
fn check_identity(headers: &HeaderMap) -> Result<(), TransportError> {
    match headers.get(CONTENT_ENCODING) {
        Some(coding) if !coding.as_bytes().eq_ignore_ascii_case(b"identity") => {
            Err(TransportError::Other(format!(
                "the answer is encoded ({}) although the node was asked for identity",
                String::from_utf8_lossy(coding.as_bytes())
            )))
        }
        _ => Ok(()),
    }
}

/// The largest answer read when the request sets no limit: Scrapy's own
/// default DOWNLOAD_MAXSIZE, so that a node sending an endless body cannot
/// take all the crawler's memory.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024 * 1024;

/// Reads the whole body, giving up (and dropping the connection) as soon as
/// it is known to exceed `limit` (or [`DEFAULT_MAX_BODY`]): from
/// Content-Length, or while streaming.
async fn read_body(
    mut response: reqwest::Response,
    limit: Option<usize>,
) -> Result<Bytes, TransportError> {
    let limit = limit.unwrap_or(DEFAULT_MAX_BODY);
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(TransportError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify_reqwest_error(&e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(TransportError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Maps reqwest's error onto the kinds the outcome table knows, by walking
/// the source chain down to hyper's and the OS's errors.
fn classify_reqwest_error(error: &reqwest::Error) -> TransportError {
    if error.is_timeout() && error.is_connect() {
        return TransportError::ConnectTimeout;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return TransportError::ConnectionRefused,
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    return TransportError::ConnectionReset
                }
                io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
                    return TransportError::ClosedMidResponse
                }
                io::ErrorKind::TimedOut if error.is_connect() => {
                    return TransportError::ConnectTimeout
                }
                _ => {}
            }
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_parse() || hyper_error.is_parse_status() {
                return TransportError::InvalidHttp;
            }
            if hyper_error.is_incomplete_message() || hyper_error.is_closed() {
                return TransportError::ClosedMidResponse;
            }
        }
        source = cause.source();
    }
    if error.is_body() || error.is_decode() {
        return TransportError::ClosedMidResponse;
    }
    TransportError::Other(error_chain(error))
}

/// The error's text with its causes, and without the request's URL: reqwest
/// names it, query string and all, and the query holds page URLs, scripts
/// and perhaps secrets that have no place in node reasons, the stats page
/// or logs. The node is named wherever this text goes anyway.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
        text = text.replace(url.as_str(), url.path());
    }
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;

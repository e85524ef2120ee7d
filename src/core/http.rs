//! The HTTP transport over reqwest: one client, one connection pool, for the
//! whole cluster.
//!
//! What it refuses to do matters as much as what it does: no redirects (a
//! node's credentials must never follow a `Location` to another host), no
//! proxies from the environment (nodes are addressed directly), no response
//! decompression (bodies reach Scrapy as the node sent them).

use std::error::Error as _;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use super::config::NodeEndpoint;
use super::transport::{NodeRequest, NodeResponse, Transport, TransportError};

/// The reqwest-backed transport.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// Builds the client; `connect_timeout` bounds TCP and TLS connects.
    pub fn new(connect_timeout: Duration) -> Result<Self, TransportError> {
        // rustls needs one process-wide crypto provider; installing it twice
        // is harmless (the second call reports the first and changes nothing).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TransportError::Other(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { client })
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
        let response = self
            .client
            .request(method, node.url_for(&request.path))
            .headers(Self::headers(node, request)?)
            .body(request.body.clone())
            .send()
            .await
            .map_err(|e| classify_reqwest_error(&e))?;
        let status = response.status().as_u16();
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

    async fn probe(&self, node: &NodeEndpoint, path: &str) -> Result<u16, TransportError> {
        let mut request = self.client.get(node.url_for(path));
        if let Some(auth) = node.authorization() {
            request = request.header(AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| classify_reqwest_error(&e))?;
        let status = response.status().as_u16();
        // Read the body so the connection goes back to the pool.
        response
            .bytes()
            .await
            .map_err(|e| classify_reqwest_error(&e))?;
        Ok(status)
    }
}

/// Reads the whole body, giving up (and dropping the connection) as soon as
/// it is known to exceed `limit`: from Content-Length, or while streaming.
async fn read_body(
    mut response: reqwest::Response,
    limit: Option<usize>,
) -> Result<Bytes, TransportError> {
    let Some(limit) = limit else {
        return response
            .bytes()
            .await
            .map_err(|e| classify_reqwest_error(&e));
    };
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

fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> NodeRequest {
        NodeRequest {
            method: "POST".to_owned(),
            path: "/render.html".to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: Bytes::new(),
            max_body: None,
            saved_args: None,
        }
    }

    #[test]
    fn the_node_credentials_go_when_the_request_has_none() {
        let node = NodeEndpoint::parse("url", "http://user:pass@node-1:8050").unwrap();
        let headers = HttpTransport::headers(&node, &request(&[])).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Basic dXNlcjpwYXNz");
        assert!(headers[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn a_request_authorization_wins_over_the_node_credentials() {
        let node = NodeEndpoint::parse("url", "http://user:pass@node-1:8050").unwrap();
        let own = request(&[("authorization", "Basic b3duOm93bg==")]);
        let headers = HttpTransport::headers(&node, &own).unwrap();
        assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(headers[AUTHORIZATION], "Basic b3duOm93bg==");
        assert!(headers[AUTHORIZATION].is_sensitive());
    }
}

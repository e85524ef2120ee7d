//! The transport against nodes whose answers are not HTTP, or not well:
//! each must end as a node failure with a clear reason (or a size error),
//! never a panic, never unbounded memory. Real sockets on loopback: a raw
//! TCP server writes exactly the bytes of each case.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::core::outcome::{classify, NodeFailure, Outcome};

/// What the raw node writes after reading the request's head.
#[derive(Clone)]
enum Answer {
    /// These bytes, then close.
    Bytes(&'static [u8]),
    /// A status line and headers that parse, then these bytes, then close.
    AfterHead(Vec<u8>),
    /// A status line, then header lines for as long as the client reads.
    EndlessHeaders,
    /// A chunked 200, then chunks for as long as the client reads.
    EndlessBody,
    /// A 200 with a body labelled gzip (a decompression bomb, or not).
    Gzipped,
}

async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `chunk` until the client hangs up (or a bound, so a bug cannot
/// make the test loop forever): the client must stop reading first.
async fn write_until_hung_up(stream: &mut TcpStream, chunk: &[u8]) -> usize {
    let mut written = 0;
    while written < 4 * 1024 * 1024 * 1024 {
        if stream.write_all(chunk).await.is_err() {
            break;
        }
        written += chunk.len();
    }
    written
}

/// A body labelled gzip. The transport must never inflate what a node
/// sends, so whether these bytes would inflate to 1 GiB does not matter:
/// the label is the case.
fn gzipped_body() -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

async fn raw_node(answer: Answer) -> (String, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_head(&mut stream).await;
        match answer {
            Answer::Bytes(bytes) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
                bytes.len()
            }
            Answer::AfterHead(rest) => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                let _ = stream.write_all(&rest).await;
                let _ = stream.shutdown().await;
                rest.len()
            }
            Answer::EndlessHeaders => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                write_until_hung_up(
                    &mut stream,
                    b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
                )
                .await
            }
            Answer::EndlessBody => {
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                let _ = stream.write_all(head).await;
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                write_until_hung_up(&mut stream, chunk.as_bytes()).await
            }
            Answer::Gzipped => {
                let body = gzipped_body();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                body.len()
            }
        }
    });
    (format!("http://{addr}"), task)
}

fn request(max_body: Option<usize>) -> NodeRequest {
    NodeRequest {
        method: "POST".into(),
        path: "/render.html?url=http://site/?token=SECRET".into(),
        headers: vec![("Content-Type".into(), b"application/json".to_vec())],
        body: Bytes::from_static(b"{}"),
        max_body,
        saved_args: None,
    }
}

async fn send(answer: Answer, max_body: Option<usize>) -> (Outcome, usize) {
    let (url, node) = raw_node(answer).await;
    let endpoint = NodeEndpoint::parse("url", &url).unwrap();
    let transport = HttpTransport::new(Duration::from_secs(5)).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        transport.send(&endpoint, &request(max_body)),
    )
    .await
    .expect("the transport gave up on a bad answer");
    drop(transport);
    let written = node.await.unwrap();
    (classify(&result), written)
}

fn assert_node_failure(outcome: &Outcome) {
    assert!(
        matches!(outcome, Outcome::NodeFailure(_)),
        "expected a node failure, got {outcome}"
    );
    assert!(
        outcome.action().retry,
        "{outcome} must be retried elsewhere"
    );
    let reason = outcome.to_string();
    assert!(!reason.contains("SECRET"), "the query leaked: {reason}");
}

#[tokio::test]
async fn a_bad_status_line_is_invalid_http() {
    let (outcome, _) = send(Answer::Bytes(b"HTTP/1.1 abc garbage\r\n\r\n"), None).await;
    assert_eq!(outcome, Outcome::NodeFailure(NodeFailure::InvalidHttp));
}

#[tokio::test]
async fn bytes_that_are_not_http_are_invalid_http() {
    let (outcome, _) = send(Answer::Bytes(b"SSH-2.0-OpenSSH_9.2\r\n"), None).await;
    assert_eq!(outcome, Outcome::NodeFailure(NodeFailure::InvalidHttp));
}

#[tokio::test]
async fn endless_headers_end_as_invalid_http_after_a_bounded_read() {
    let (outcome, written) = send(Answer::EndlessHeaders, None).await;
    assert_eq!(outcome, Outcome::NodeFailure(NodeFailure::InvalidHttp));
    // hyper reads at most its head buffer (about 400 KB), plus what sits in
    // the socket buffers, before it gives up.
    assert!(
        written < 16 * 1024 * 1024,
        "read {written} bytes of headers"
    );
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_closed_mid_response() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b";
    let (outcome, _) = send(Answer::Bytes(answer), None).await;
    assert_eq!(
        outcome,
        Outcome::NodeFailure(NodeFailure::ClosedMidResponse)
    );
}

#[tokio::test]
async fn bad_chunked_encoding_is_a_node_failure() {
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n";
    let (outcome, _) = send(Answer::Bytes(answer), None).await;
    assert_node_failure(&outcome);
}

#[tokio::test]
async fn an_endless_body_stops_at_the_size_limit() {
    let limit = 1024 * 1024;
    let (outcome, written) = send(Answer::EndlessBody, Some(limit)).await;
    assert_eq!(outcome, Outcome::TooLarge(limit));
    assert!(written < 16 * 1024 * 1024, "read {written} bytes of body");
}

#[tokio::test]
async fn an_encoded_answer_nobody_asked_for_is_a_node_failure_not_inflated() {
    let (outcome, _) = send(Answer::Gzipped, None).await;
    assert_node_failure(&outcome);
    let reason = outcome.to_string();
    assert!(reason.contains("encoded (gzip)"), "{reason}");
}

#[tokio::test]
async fn a_node_that_closes_before_a_byte_is_a_node_failure() {
    let (outcome, _) = send(Answer::Bytes(b""), None).await;
    assert_node_failure(&outcome);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever follows a valid status line (headers of any shape, bodies
    /// cut anywhere, chunked framing gone wrong), the attempt ends, with an
    /// answer, a node failure or a size error, within the limit.
    #[test]
    fn any_bytes_after_a_status_line_end_cleanly(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(b"Content-Length: 5\r\n".to_vec()),
                proptest::strategy::Just(b"Content-Length: 99999999999999999999\r\n".to_vec()),
                proptest::strategy::Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
                proptest::strategy::Just(b"Content-Encoding: br\r\n".to_vec()),
                proptest::strategy::Just(b"\r\n".to_vec()),
                proptest::strategy::Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
                proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            ],
            0..8,
        ),
    ) {
        let rest: Vec<u8> = lines.concat();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (outcome, _) = runtime.block_on(send(Answer::AfterHead(rest), Some(64 * 1024)));
        proptest::prop_assert!(
            matches!(
                outcome,
                Outcome::Answered(200) | Outcome::NodeFailure(_) | Outcome::TooLarge(_)
            ),
            "{}",
            outcome
        );
    }
}

#[test]
fn error_text_loses_the_url_but_keeps_the_cause() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        // A port nobody listens on: a connect error with the URL in it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let error = client
            .get(format!(
                "http://127.0.0.1:{port}/render.html?url=x&token=SECRET"
            ))
            .send()
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("SECRET"),
            "reqwest changed: {error}"
        );
        error_chain(&error)
    });
    assert!(
        !text.contains("SECRET") && !text.contains("token"),
        "{text}"
    );
    assert!(!text.is_empty());
}

fn request_with(headers: &[(&str, &str)]) -> NodeRequest {
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
    let headers = HttpTransport::headers(&node, &request_with(&[])).unwrap();
    assert_eq!(headers[AUTHORIZATION], "Basic dXNlcjpwYXNz");
    assert!(headers[AUTHORIZATION].is_sensitive());
}

#[test]
fn a_request_authorization_wins_over_the_node_credentials() {
    let node = NodeEndpoint::parse("url", "http://user:pass@node-1:8050").unwrap();
    let own = request_with(&[("authorization", "Basic b3duOm93bg==")]);
    let headers = HttpTransport::headers(&node, &own).unwrap();
    assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
    assert_eq!(headers[AUTHORIZATION], "Basic b3duOm93bg==");
    assert!(headers[AUTHORIZATION].is_sensitive());
}

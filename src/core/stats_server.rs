//! The stats page: `/` (HTML), `/stats.json` and `/metrics` (Prometheus),
//! served by the core itself, behind HTTP basic auth, always.
//!
//! Off unless a port is given; bound to 127.0.0.1 unless told otherwise. No
//! default password: without one, a random password is generated and logged
//! once, as Scrapy's telnet console does. Credentials are compared in
//! constant time, so response timing tells an attacker nothing about how
//! much of a guess was right.

use std::io;
use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::StatsConfig;
use super::report::ReportSource;

/// A running stats page.
#[derive(Debug)]
pub struct StatsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The task serving it; ends when the stop signal turns true.
    pub task: JoinHandle<()>,
}

/// Whether an `Authorization` header carries exactly `user:password`.
pub fn authorized(header: Option<&[u8]>, user: &str, password: &str) -> bool {
    let Some(header) = header else {
        return false;
    };
    let Some(encoded) = header
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
        .map(|_| &header[6..])
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii()) else {
        return false;
    };
    let expected = format!("{user}:{password}");
    decoded.ct_eq(expected.as_bytes()).into()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

/// Answers one request to the stats page.
pub fn handle(
    request: &Request<Incoming>,
    config: &StatsConfig,
    source: &ReportSource,
) -> Response<Full<Bytes>> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !authorized(header, &config.user, &config.password) {
        let mut response = respond(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "authentication required\n",
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Splash cluster\", charset=\"UTF-8\""),
        );
        return response;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET only\n",
        );
    }
    match request.uri().path() {
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            source.report().to_html(2),
        ),
        "/stats.json" => respond(
            StatusCode::OK,
            "application/json",
            source.report().to_json().to_string(),
        ),
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            source.report().to_prometheus(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

/// Binds the page's address now, so that a taken port fails the cluster's
/// start, and serves it until `stop` turns true.
pub fn start(
    config: StatsConfig,
    source: ReportSource,
    stop: watch::Receiver<bool>,
) -> io::Result<StatsServer> {
    let listener = std::net::TcpListener::bind(config.addr)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    if config.generated {
        tracing::info!(
            target: "scrapy_splash_cluster::stats",
            "Splash cluster stats on http://{addr}/ (user {}, generated password {})",
            config.user,
            config.password
        );
    } else {
        tracing::info!(target: "scrapy_splash_cluster::stats", "Splash cluster stats on http://{addr}/");
    }
    let task = tokio::spawn(serve(listener, config, source, stop));
    Ok(StatsServer { addr, task })
}

async fn serve(
    listener: tokio::net::TcpListener,
    config: StatsConfig,
    source: ReportSource,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let config = config.clone();
        let source = source.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = handle(&request, &config, &source);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::StatsOptions;

    fn basic(credentials: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
        .into_bytes()
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        assert!(authorized(Some(&basic("scrapy:pw")), "scrapy", "pw"));
        assert!(authorized(Some(b"basic c2NyYXB5OnB3"), "scrapy", "pw"));
        assert!(!authorized(None, "scrapy", "pw"));
        assert!(!authorized(Some(&basic("scrapy:pw2")), "scrapy", "pw"));
        assert!(!authorized(Some(&basic("scrapy:p")), "scrapy", "pw"));
        assert!(!authorized(Some(&basic("other:pw")), "scrapy", "pw"));
        assert!(!authorized(Some(b"Bearer c2NyYXB5OnB3"), "scrapy", "pw"));
        assert!(!authorized(Some(b"Basic !!!"), "scrapy", "pw"));
        assert!(!authorized(Some(b"Bas"), "scrapy", "pw"));
    }

    #[test]
    fn a_missing_password_is_generated_and_never_empty() {
        let options = |password: Option<&str>| StatsOptions {
            host: "127.0.0.1".into(),
            port: 0,
            user: "scrapy".into(),
            password: password.map(str::to_owned),
        };
        let a = options(None).validate().unwrap();
        let b = options(None).validate().unwrap();
        assert!(a.generated && a.password.len() == 24);
        assert_ne!(a.password, b.password);
        assert!(!format!("{a:?}").contains(&a.password));
        assert_eq!(
            options(Some("")).validate().unwrap_err().argument,
            "stats_password"
        );
        let mut bad_host = options(None);
        bad_host.host = "example.com".into();
        assert_eq!(bad_host.validate().unwrap_err().argument, "stats_host");
        let mut bad_user = options(None);
        bad_user.user = "a:b".into();
        assert_eq!(bad_user.validate().unwrap_err().argument, "stats_user");
    }
}

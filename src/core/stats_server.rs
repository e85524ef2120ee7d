//! The stats page: `/` (HTML), `/stats.json` and `/metrics` (Prometheus),
//! served by the core itself, behind HTTP basic auth, always.
//!
//! Off unless a port is given; bound to 127.0.0.1 unless told otherwise. No
//! default password: without one, a random password is generated and logged
//! once, as Scrapy's telnet console does. Credentials are compared in
//! constant time, so response timing tells an attacker nothing about how
//! much of a guess was right. The page's charts of the last minutes come
//! from a history the page's own sampler keeps (`sampler.rs`), started and
//! stopped with it.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::charts;
use super::config::StatsConfig;
use super::control::{self, parse_control_path, ControlError, LookupError, NodeAction};
use super::history::{History, HistorySettings};
use super::report::ReportSource;
use super::sampler;

/// A running stats page.
#[derive(Debug)]
pub struct StatsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The task serving it; ends when the stop signal turns true.
    pub task: JoinHandle<()>,
    /// The task sampling the pool for its charts; ends with it.
    pub sampler: JoinHandle<()>,
}

/// What the page draws its charts from, shared by its sampler and its
/// connections.
pub type SharedHistory = Arc<Mutex<History>>;

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
pub async fn handle(
    request: &Request<Incoming>,
    config: &StatsConfig,
    source: &ReportSource,
    history: &SharedHistory,
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
    if let Some((name, action)) = parse_control_path(request.uri().path()) {
        return control(request, &name, action, source).await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET only (POST is for /nodes/{node}/drain and /nodes/{node}/ready)\n",
        );
    }
    match request.uri().path() {
        "/" => {
            // The view is copied out so that drawing holds no lock the
            // sampler waits on.
            let view = history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .view();
            respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                source.report().to_html(2, &charts::section(&view)),
            )
        }
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

/// Answers `POST /nodes/{node}/drain|ready`: the node's state after it as
/// JSON, 404 for a node that is not there, 409 for a name several share.
async fn control(
    request: &Request<Incoming>,
    name: &str,
    action: NodeAction,
    source: &ReportSource,
) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    if request.method() != Method::POST {
        return respond(StatusCode::METHOD_NOT_ALLOWED, text, "POST only\n");
    }
    if let Some(refusal) = cross_site(request) {
        return respond(StatusCode::FORBIDDEN, text, refusal);
    }
    match control::apply(source.pool(), name, action).await {
        Ok(node) => respond(
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "node": node.url,
                "state": node.state,
                "reason": node.reason,
                "drain": node.drain,
                "in_flight": node.in_flight,
            })
            .to_string(),
        ),
        Err(error) => {
            let status = match error {
                ControlError::Lookup(LookupError::Unknown { .. }) => StatusCode::NOT_FOUND,
                ControlError::Lookup(LookupError::Ambiguous { .. }) => StatusCode::CONFLICT,
                ControlError::Fleet(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            respond(status, text, format!("{error}\n"))
        }
    }
}

/// Why a control request is refused as coming from another site's page,
/// if it does. The page uses basic auth, which a browser sends on its own
/// with any request to the page's origin, so a form on a hostile page
/// could drain nodes (CSRF). Browsers name the page a request comes from
/// (`Origin`, `Sec-Fetch-Site`); curl and `splash-cluster drain` send
/// neither.
fn cross_site(request: &Request<Incoming>) -> Option<&'static str> {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Some("refused: a control request from another site's page\n");
        }
    }
    if let Some(origin) = headers.get(hyper::header::ORIGIN) {
        let host = headers.get(hyper::header::HOST).map(HeaderValue::as_bytes);
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority.as_bytes());
        if origin_host.is_none() || origin_host != host {
            return Some("refused: a control request whose Origin is not this page\n");
        }
    }
    None
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
    let history = Arc::new(Mutex::new(History::new(
        HistorySettings::DEFAULT,
        Instant::now(),
    )));
    let sampler = sampler::spawn(
        source.pool().clone(),
        Arc::clone(&history),
        sampler::SAMPLE_EVERY,
        stop.clone(),
    );
    let task = tokio::spawn(serve(
        listener,
        config,
        source,
        history,
        stop,
        ConnectionLimits::DEFAULT,
    ));
    Ok(StatsServer {
        addr,
        task,
        sampler,
    })
}

/// What one client may take of the stats page: it is served by the
/// crawler's own process, so a slow or hostile client must not hold its
/// file descriptors or tasks.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once. The page is for a few people and
    /// scrapers: past this, new connections wait in the kernel's backlog,
    /// where they hold none of the crawler's file descriptors (which its
    /// node connections need).
    pub max_connections: usize,
    /// How long a client may take to send a request's head, and how long an
    /// idle keep-alive connection stays open (hyper runs this timer while it
    /// waits for a head, the first or the next).
    pub header_timeout: Duration,
    /// How long one connection may live, however busy: a client that stops
    /// reading its answer cannot hold a connection forever.
    pub max_lifetime: Duration,
}

impl ConnectionLimits {
    /// The limits of every stats page.
    pub const DEFAULT: Self = Self {
        max_connections: 32,
        header_timeout: Duration::from_secs(10),
        max_lifetime: Duration::from_secs(60),
    };
}

/// The pause after a failed accept (EMFILE: out of file descriptors), so
/// that the loop does not spin on an error that lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

async fn serve(
    listener: tokio::net::TcpListener,
    config: StatsConfig,
    source: ReportSource,
    history: SharedHistory,
    mut stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // One WARNING per stats server, not one per failed accept.
    let mut accept_errors_logged = false;
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                if !std::mem::replace(&mut accept_errors_logged, true) {
                    tracing::warn!(
                        target: "scrapy_splash_cluster::stats",
                        "the stats page cannot accept connections ({error}); retrying every {} ms",
                        ACCEPT_ERROR_PAUSE.as_millis()
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        };
        let config = config.clone();
        let source = source.clone();
        let history = Arc::clone(&history);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let config = config.clone();
                let source = source.clone();
                let history = history.clone();
                async move {
                    let response = handle(&request, &config, &source, &history).await;
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(limits.max_lifetime, connection) => {}
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

    use crate::core::pool::tests::pool;
    use crate::core::report::RequestTotals;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 4,
        header_timeout: Duration::from_millis(300),
        max_lifetime: Duration::from_secs(20),
    };

    /// A stats page on a free loopback port with these limits.
    async fn page(limits: ConnectionLimits) -> (SocketAddr, watch::Sender<bool>) {
        let source = ReportSource::new(pool(&[1]), Arc::new(RequestTotals::default()));
        let config = StatsOptions {
            host: "127.0.0.1".into(),
            port: 0,
            user: "u".into(),
            password: Some("p".into()),
        }
        .validate()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let history = Arc::new(Mutex::new(History::new(
            HistorySettings::DEFAULT,
            Instant::now(),
        )));
        tokio::spawn(serve(listener, config, source, history, stopped, limits));
        (addr, stop)
    }

    /// Reads until the server closes the connection; what it said.
    async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    const GET: &[u8] = b"GET /stats.json HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\n\r\n";

    #[tokio::test]
    async fn half_open_clients_are_cut_off_and_never_starve_the_page() {
        let (addr, _stop) = page(LIMITS).await;
        // Five times the connection cap, each with half a request head.
        let mut half_open = Vec::new();
        for _ in 0..(LIMITS.max_connections * 5) {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            half_open.push(stream);
        }
        // A real client behind them still gets its answer: the cap frees
        // as their heads time out. (The bound only keeps a bug from hanging
        // the test; the event is the answer.)
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf))
            .await
            .expect("the page never answered")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        // And every half-open client was closed by the server, not left open.
        for mut stream in half_open {
            let said = tokio::time::timeout(Duration::from_secs(30), until_closed(&mut stream))
                .await
                .expect("a half-open client was never closed");
            assert!(!said.starts_with(b"HTTP/1.1 200"));
        }
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _stop) = page(LIMITS).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        let said = tokio::time::timeout(Duration::from_secs(30), until_closed(&mut client))
            .await
            .expect("an idle keep-alive connection stayed open");
        assert!(
            said.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&said)
        );
    }
}

//! Validated cluster configuration.
//!
//! Everything a user can get wrong is checked here, once, when the cluster is
//! built: an error names the argument, the bad value and what is expected, so
//! a crawl never starts with a configuration that would fail on its first
//! request. The names follow HAProxy's (`maxconn`, `inter`, `fall`, `rise`,
//! `retries`) because that is the vocabulary Splash fleet operators know.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use url::Url;

/// A configuration value that cannot be used, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The argument or setting at fault, e.g. `maxconn` or `nodes[1].url`.
    pub argument: String,
    /// The value as given (passwords masked).
    pub value: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ConfigError {
    pub(crate) fn new(
        argument: impl Into<String>,
        value: impl fmt::Display,
        expected: &str,
    ) -> Self {
        Self {
            argument: argument.into(),
            value: value.to_string(),
            expected: expected.to_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}: {}; expected {}",
            self.argument, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Where a node lives and how to authenticate to it.
///
/// The password never leaves this struct except inside the `Authorization`
/// header sent to this node: `display` is what logs, errors and snapshots show.
#[derive(Clone)]
pub struct NodeEndpoint {
    base: Url,
    display: String,
    authorization: Option<String>,
    /// The address to connect to, when the node is one address of a name
    /// (DNS discovery): requests keep the name for `Host` and TLS.
    connect_to: Option<SocketAddr>,
}

impl NodeEndpoint {
    /// Parses a Splash node URL: http(s), a host, an optional base path,
    /// optional `user:pass@` for HTTP basic auth.
    pub fn parse(argument: &str, raw: &str) -> Result<Self, ConfigError> {
        let shown = mask_password(raw);
        let expected = "an http:// or https:// URL of a Splash node, such as http://127.0.0.1:8050";
        let raw = raw.trim();
        // The credentials are taken off by hand before the URL is parsed:
        // a password may hold '/', '?', '#' or '@' unencoded, which a URL
        // parser would read as the start of the path, query or host.
        let (userinfo, rest) = split_userinfo(raw);
        let mut url = Url::parse(&rest)
            .map_err(|e| ConfigError::new(argument, format!("{shown:?} ({e})"), expected))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::new(argument, format!("{shown:?}"), expected));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::new(
                argument,
                format!("{shown:?}"),
                "a node URL without a query string or fragment",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::new(argument, format!("{shown:?}"), expected));
        }
        let authorization = userinfo.map(|(user, password)| {
            let user = percent_decode(user);
            let password = password.map(percent_decode).unwrap_or_default();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        });
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let mut display = url.as_str().trim_end_matches('/').to_owned();
        if let Some((user, password)) = userinfo {
            let secret = if password.is_some() { ":***" } else { "" };
            let scheme_end = url.scheme().len() + 3;
            display.insert_str(scheme_end, &format!("{user}{secret}@"));
        }
        // The base URL carries no credentials, so no code path can print or
        // forward them by accident: they live only in the header.
        Ok(Self {
            base: url,
            display,
            authorization,
            connect_to: None,
        })
    }

    /// Whether the host is a name (not an address), which DNS may resolve
    /// to several nodes.
    pub fn host_is_name(&self) -> bool {
        matches!(self.base.host(), Some(url::Host::Domain(_)))
    }

    /// This node at one address of its name: same URL, credentials and
    /// path, connected to `addr`, shown as `url (address)`.
    pub fn at_address(&self, addr: IpAddr) -> Self {
        Self {
            base: self.base.clone(),
            display: format!("{} ({addr})", self.display),
            authorization: self.authorization.clone(),
            connect_to: Some(SocketAddr::new(addr, self.port())),
        }
    }

    /// The address it is pinned to, for a node found by DNS.
    pub fn connect_to(&self) -> Option<SocketAddr> {
        self.connect_to
    }

    /// The URL of `path` (with its query) on this node, below its base path.
    pub fn url_for(&self, path_and_query: &str) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        let rest = path_and_query.trim_start_matches('/');
        format!("{base}/{rest}")
    }

    /// The node's URL without credentials: what names the node to every
    /// process of a fleet. A node found by DNS is named by its address
    /// (`http://10.0.0.5:8050`), the same in every process that resolves it.
    pub fn base_url(&self) -> String {
        match self.connect_to {
            None => self.base.as_str().trim_end_matches('/').to_owned(),
            Some(addr) => {
                let mut url = self.base.clone();
                // Setting an IP host on an http(s) URL cannot fail.
                let _ = url.set_ip_host(addr.ip());
                url.as_str().trim_end_matches('/').to_owned()
            }
        }
    }

    /// The node's host (a name or an address), as in its URL.
    pub fn host(&self) -> Option<&str> {
        self.base.host_str()
    }

    /// The node's port, the scheme's default when its URL gives none.
    pub fn port(&self) -> u16 {
        self.base.port_or_known_default().unwrap_or(80)
    }

    /// The node's URL for people: the password replaced by `***`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The `Authorization` header value for this node, if it has credentials.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }
}

impl fmt::Debug for NodeEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Percent-decoding and nothing else: a `+` stays a `+` and a `&` is a
/// character like any other (form decoding would turn them into a space
/// and a field separator, and so change the password).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits `scheme://user:password@rest` into the user and password as
/// written and `scheme://rest`. Everything from `://` to the last `@` is
/// the credentials, so that a password holding `/ ? # @` unencoded stays
/// whole; a URL with no `@` has none.
fn split_userinfo(raw: &str) -> (Option<(&str, Option<&str>)>, String) {
    let Some(scheme_end) = raw.find("://").map(|i| i + 3) else {
        return (None, raw.to_owned());
    };
    match raw[scheme_end..].rfind('@').map(|i| scheme_end + i) {
        Some(at) => {
            let userinfo = &raw[scheme_end..at];
            let credentials = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            (
                Some(credentials),
                format!("{}{}", &raw[..scheme_end], &raw[at + 1..]),
            )
        }
        None => (None, raw.to_owned()),
    }
}

/// Replaces the password of a URL-ish string with `***`, even when the
/// string does not parse, so that error messages never echo a secret:
/// everything from `://` to the last `@` but the user name is masked.
pub fn mask_password(raw: &str) -> String {
    let (userinfo, rest) = split_userinfo(raw);
    let Some((user, password)) = userinfo else {
        return raw.to_owned();
    };
    let scheme_end = rest.find("://").map_or(0, |i| i + 3);
    let secret = if password.is_some() { ":***" } else { "" };
    format!(
        "{}{user}{secret}@{}",
        &rest[..scheme_end],
        &rest[scheme_end..]
    )
}

/// One node as the user describes it; unset fields take the cluster default.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// The node's URL.
    pub url: String,
    /// Requests in flight at most on this node (Splash's `--slots`).
    pub maxconn: Option<usize>,
    /// Share of the load relative to the other nodes.
    pub weight: Option<u32>,
    /// The node's `--maxrss`, MB as Splash's flag: drained when its peak
    /// RSS passes it.
    pub maxrss: Option<u64>,
}

/// A validated node: where it is and what it can take.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Where the node is.
    pub endpoint: NodeEndpoint,
    /// Requests in flight at most.
    pub maxconn: usize,
    /// Relative share of the load.
    pub weight: u32,
    /// Its `--maxrss` in bytes, if known.
    pub maxrss: Option<u64>,
}

impl AsRef<NodeSpec> for NodeSpec {
    fn as_ref(&self) -> &NodeSpec {
        self
    }
}

/// Cluster-wide options as the user gives them, before validation.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The nodes.
    pub nodes: Vec<NodeOptions>,
    /// Default requests in flight at most per node.
    pub maxconn: usize,
    /// Default weight per node.
    pub weight: u32,
    /// Default `--maxrss` of the nodes, MB; None: not known.
    pub node_maxrss: Option<u64>,
    /// Attempts after the first, for node failures and 504s.
    pub retries: u32,
    /// How long a request may wait for a free node.
    pub queue_timeout: Duration,
    /// Time between two health probes of a node (HAProxy's `inter`).
    pub health_interval: Duration,
    /// How long one probe may take.
    pub health_timeout: Duration,
    /// Time between probes of a node going down, DOWN or coming up
    /// (HAProxy's `fastinter`); None: the shorter of 0.5 s and the interval.
    pub health_fast_interval: Option<Duration>,
    /// The path probed.
    pub health_path: String,
    /// Failed probes in a row that take a node DOWN.
    pub fall: u32,
    /// Good probes in a row that bring a node back UP.
    pub rise: u32,
    /// Node failures of real requests in a row that take a node DOWN.
    pub error_limit: u32,
    /// How long a TCP (and TLS) connect to a node may take.
    pub connect_timeout: Duration,
    /// 504 retries as a share of recent requests; None: no budget.
    pub retry_budget: Option<f64>,
    /// Node deaths under one request's renders before it is given up as a
    /// page that kills nodes.
    pub poison_limit: u32,
    /// Time between two resolutions of the nodes' names; None: only at start.
    pub dns_interval: Option<Duration>,
    /// The stats page, if wanted.
    pub stats: Option<StatsOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            maxconn: 5,
            weight: 1,
            node_maxrss: None,
            retries: 3,
            queue_timeout: Duration::from_secs(60),
            health_interval: Duration::from_secs(2),
            health_timeout: Duration::from_secs(1),
            health_fast_interval: None,
            health_path: "/_ping".to_owned(),
            fall: 3,
            rise: 2,
            error_limit: 3,
            connect_timeout: Duration::from_secs(5),
            retry_budget: Some(0.2),
            poison_limit: 2,
            dns_interval: Some(Duration::from_secs(10)),
            stats: None,
        }
    }
}

/// Thresholds of the health state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Failed probes in a row before DOWN.
    pub fall: u32,
    /// Good probes in a row before UP.
    pub rise: u32,
    /// Node failures of real requests in a row before DOWN.
    pub error_limit: u32,
}

/// A configuration that has passed validation.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The nodes, in the order given.
    pub nodes: Vec<NodeSpec>,
    /// Attempts after the first.
    pub retries: u32,
    /// Longest wait for a free node.
    pub queue_timeout: Duration,
    /// Time between probes.
    pub health_interval: Duration,
    /// Time one probe may take.
    pub health_timeout: Duration,
    /// Time between probes of a node not plainly UP.
    pub health_fast_interval: Duration,
    /// The probed path.
    pub health_path: String,
    /// Health thresholds.
    pub thresholds: HealthThresholds,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// 504 retries as a share of recent requests; None: no budget.
    pub retry_budget: Option<f64>,
    /// Node deaths under one request before it fails as poisoned.
    pub poison_limit: u32,
    /// Time between two resolutions of the nodes' names; None: only at start.
    pub dns_interval: Option<Duration>,
    /// The stats page, if wanted.
    pub stats: Option<StatsConfig>,
}

/// The largest `--maxrss` taken, in MB (1 PB): anything above is a unit
/// mistake (bytes given for megabytes).
pub const MAX_MAXRSS_MB: u64 = 1 << 30;

/// The largest retry budget: 100 retries per request is already no limit
/// (no request has that many attempts), and a larger share would only
/// overflow the budget's arithmetic.
pub const MAX_RETRY_BUDGET: f64 = 100.0;

fn positive_duration(argument: &str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(
            argument,
            format!("{}", value.as_secs_f64()),
            "a number of seconds greater than 0",
        ));
    }
    Ok(value)
}

fn at_least_one(argument: &str, value: u64) -> Result<(), ConfigError> {
    if value < 1 {
        return Err(ConfigError::new(argument, value, "an integer >= 1"));
    }
    Ok(())
}

impl ClusterOptions {
    /// Checks every value and resolves per-node defaults.
    pub fn validate(self) -> Result<ClusterConfig, ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError::new(
                "nodes",
                "[]",
                "at least one Splash node URL",
            ));
        }
        at_least_one("maxconn", self.maxconn as u64)?;
        at_least_one("weight", u64::from(self.weight))?;
        at_least_one("fall", u64::from(self.fall))?;
        at_least_one("rise", u64::from(self.rise))?;
        at_least_one("error_limit", u64::from(self.error_limit))?;
        at_least_one("poison_limit", u64::from(self.poison_limit))?;
        let queue_timeout = positive_duration("queue_timeout", self.queue_timeout)?;
        let health_interval = positive_duration("health_interval", self.health_interval)?;
        let health_timeout = positive_duration("health_timeout", self.health_timeout)?;
        let health_fast_interval = match self.health_fast_interval {
            Some(fast) => positive_duration("health_fast_interval", fast)?,
            None => health_interval.min(Duration::from_millis(500)),
        };
        let connect_timeout = positive_duration("connect_timeout", self.connect_timeout)?;
        if !self.health_path.starts_with('/') {
            return Err(ConfigError::new(
                "health_path",
                format!("{:?}", self.health_path),
                "a path starting with '/', such as /_ping",
            ));
        }
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.into_iter().enumerate() {
            let endpoint = NodeEndpoint::parse(&format!("nodes[{i}].url"), &node.url)?;
            if let Some(other) = nodes.iter().position(|n| n.endpoint.base == endpoint.base) {
                return Err(ConfigError::new(
                    format!("nodes[{i}].url"),
                    format!("{:?}", endpoint.display()),
                    &format!("each node listed once (it is also nodes[{other}])"),
                ));
            }
            let maxconn = node.maxconn.unwrap_or(self.maxconn);
            at_least_one(&format!("nodes[{i}].maxconn"), maxconn as u64)?;
            let weight = node.weight.unwrap_or(self.weight);
            at_least_one(&format!("nodes[{i}].weight"), u64::from(weight))?;
            let maxrss = node.maxrss.or(self.node_maxrss);
            if let Some(mb) = maxrss {
                at_least_one(&format!("nodes[{i}].maxrss"), mb)?;
                if mb > MAX_MAXRSS_MB {
                    return Err(ConfigError::new(
                        format!("nodes[{i}].maxrss"),
                        format!("{mb}"),
                        "megabytes as Splash's --maxrss takes them, such as 3000",
                    ));
                }
            }
            nodes.push(NodeSpec {
                endpoint,
                maxconn,
                weight,
                maxrss: maxrss.map(|mb| mb * 1024 * 1024),
            });
        }
        Ok(ClusterConfig {
            nodes,
            retries: self.retries,
            queue_timeout,
            health_interval,
            health_timeout,
            health_fast_interval,
            health_path: self.health_path,
            thresholds: HealthThresholds {
                fall: self.fall,
                rise: self.rise,
                error_limit: self.error_limit,
            },
            connect_timeout,
            retry_budget: match self.retry_budget {
                Some(ratio)
                    if !(ratio.is_finite() && (0.0..=MAX_RETRY_BUDGET).contains(&ratio)) =>
                {
                    return Err(ConfigError::new(
                        "retry_budget",
                        ratio,
                        "a share of requests from 0 to 100 (such as 0.2), or None for no budget",
                    ))
                }
                other => other,
            },
            poison_limit: self.poison_limit,
            dns_interval: match self.dns_interval {
                Some(interval) => Some(positive_duration("dns_interval", interval)?),
                None => None,
            },
            stats: self.stats.map(StatsOptions::validate).transpose()?,
        })
    }
}

/// How the stats page is served, as the user gives it.
#[derive(Debug, Clone)]
pub struct StatsOptions {
    /// The address to bind; 127.0.0.1 unless the user says otherwise.
    pub host: String,
    /// The port; 0 picks a free one.
    pub port: u16,
    /// The basic-auth user.
    pub user: String,
    /// The basic-auth password; generated when None.
    pub password: Option<String>,
}

/// A validated stats configuration.
#[derive(Clone)]
pub struct StatsConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) user: String,
    pub(crate) password: String,
    /// Whether the password was generated (and so must be shown once).
    pub(crate) generated: bool,
}

impl std::fmt::Debug for StatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatsConfig({}, user {:?})", self.addr, self.user)
    }
}

impl StatsOptions {
    /// Checks the options and settles the password.
    pub fn validate(self) -> Result<StatsConfig, ConfigError> {
        let host = if self.host == "localhost" {
            "127.0.0.1"
        } else {
            self.host.as_str()
        };
        let ip: IpAddr = host.parse().map_err(|_| {
            ConfigError::new(
                "stats_host",
                format!("{:?}", self.host),
                "an IP address to listen on, such as 127.0.0.1",
            )
        })?;
        if self.user.is_empty() || self.user.contains(':') {
            return Err(ConfigError::new(
                "stats_user",
                format!("{:?}", self.user),
                "a non-empty user name without ':'",
            ));
        }
        let (password, generated) = match self.password {
            Some(p) if p.is_empty() => {
                return Err(ConfigError::new(
                    "stats_password",
                    "\"\"",
                    "a non-empty password, or none to have one generated",
                ))
            }
            Some(p) => (p, false),
            None => (generate_password(), true),
        };
        Ok(StatsConfig {
            addr: SocketAddr::new(ip, self.port),
            user: self.user,
            password,
            generated,
        })
    }
}

fn generate_password() -> String {
    let mut bytes = [0u8; 12];
    // The OS random source failing is a broken machine; a clear panic beats
    // a guessable password.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(urls: &[&str]) -> ClusterOptions {
        ClusterOptions {
            nodes: urls
                .iter()
                .map(|u| NodeOptions {
                    url: (*u).to_owned(),
                    ..NodeOptions::default()
                })
                .collect(),
            ..ClusterOptions::default()
        }
    }

    #[test]
    fn credentials_become_a_header_and_never_show() {
        let e = NodeEndpoint::parse("url", "http://scrapy:s3cr%3At@node-1:8050").unwrap();
        assert_eq!(e.display(), "http://scrapy:***@node-1:8050");
        assert_eq!(
            e.url_for("/render.html?a=1"),
            "http://node-1:8050/render.html?a=1"
        );
        let header = e.authorization().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"scrapy:s3cr:t");
        assert!(!format!("{e:?}").contains("s3cr"));
    }

    fn basic_credentials(e: &NodeEndpoint) -> String {
        let header = e.authorization().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        String::from_utf8(decoded).unwrap()
    }

    #[test]
    fn passwords_with_url_characters_stay_whole_and_never_show() {
        // (URL as given, the password it means)
        for (url, password) in [
            ("http://u:pa/ss@h:1", "pa/ss"),
            ("http://u:pa%2Fss@h:1", "pa/ss"),
            ("http://u:a?b#c@h:1", "a?b#c"),
            ("http://u:p@ss@h:1", "p@ss"),
            ("http://u:p%40ss@h:1", "p@ss"),
            ("http://u:a+b&c=d@h:1", "a+b&c=d"),
            ("http://u:a%2Bb%26c@h:1", "a+b&c"),
        ] {
            let e = NodeEndpoint::parse("url", url).unwrap_or_else(|err| panic!("{url}: {err}"));
            assert_eq!(basic_credentials(&e), format!("u:{password}"), "{url}");
            assert_eq!(e.display(), "http://u:***@h:1", "{url}");
            assert_eq!(e.url_for("/_ping"), "http://h:1/_ping", "{url}");
        }
        // A bad URL's error masks the password too, however it is written.
        for bad in [
            "http://u:pa/ss@h:notaport",
            "ftp://u:pa/ss@h:1",
            "http://u:pa/ss@",
        ] {
            let err = NodeEndpoint::parse("nodes[0].url", bad)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("pa/ss") && !err.contains("ss@"), "{err}");
            assert!(err.contains("u:***@"), "{err}");
        }
    }

    #[test]
    fn base_path_is_kept() {
        let e = NodeEndpoint::parse("url", "https://splash.example/cluster").unwrap();
        assert_eq!(
            e.url_for("/execute"),
            "https://splash.example/cluster/execute"
        );
        assert_eq!(e.display(), "https://splash.example/cluster");
    }

    #[test]
    fn bad_urls_name_the_argument_and_hide_passwords() {
        for bad in [
            "ftp://node:21",
            "node-1:8050",
            "http://",
            "http://u:pw@h:1/?x=1",
        ] {
            let err = options(&["http://ok:1", bad]).validate().unwrap_err();
            assert_eq!(err.argument, "nodes[1].url", "{bad}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn mask_password_handles_unparseable_input() {
        assert_eq!(mask_password("http://a:b@c d"), "http://a:***@c d");
        assert_eq!(mask_password("no scheme"), "no scheme");
        // Everything up to the last '@' is credentials, by rule.
        assert_eq!(mask_password("http://h:1/p@x"), "http://h:***@x");
    }

    #[test]
    fn defaults_and_limits() {
        let config = options(&["http://a:1"]).validate().unwrap();
        assert_eq!(config.nodes[0].maxconn, 5);
        assert_eq!(config.retries, 3);
        assert!(options(&[]).validate().is_err());
        let mut o = options(&["http://a:1"]);
        o.maxconn = 0;
        assert_eq!(o.validate().unwrap_err().argument, "maxconn");
        let mut o = options(&["http://a:1"]);
        o.fall = 0;
        assert_eq!(o.validate().unwrap_err().argument, "fall");
        let mut o = options(&["http://a:1"]);
        o.queue_timeout = Duration::ZERO;
        assert_eq!(o.validate().unwrap_err().argument, "queue_timeout");
        let mut o = options(&["http://a:1"]);
        o.health_path = "_ping".into();
        assert_eq!(o.validate().unwrap_err().argument, "health_path");
    }

    #[test]
    fn duplicate_nodes_are_refused() {
        let err = options(&["http://a:1", "http://a:1/"])
            .validate()
            .unwrap_err();
        assert_eq!(err.argument, "nodes[1].url");
    }
}

//! DNS discovery: a node entry whose host is a name stands for every
//! address the name resolves to, and the set follows DNS while the crawl
//! runs, as HAProxy's `server-template` with `resolvers` and Envoy's
//! STRICT_DNS clusters do.
//!
//! `docker compose up --scale splash=8` and a Kubernetes headless Service
//! give one name with one address per replica, which changes as replicas
//! come and go. Each address becomes a node of its own (same URL, port,
//! credentials, maxconn, weight), probed and balanced on its own and shown
//! as `url (address)`; requests go to that address with the name kept for
//! `Host` and TLS.
//!
//! # Which resolver
//!
//! The system's (`getaddrinfo`, through `tokio::net::lookup_host`): the view
//! the deployment sets is the truth, whether it comes from `/etc/hosts`,
//! Docker's embedded DNS or Kubernetes' cluster DNS with its search domains,
//! and nsswitch decides as it does for every other program on the host. It
//! tells no TTL, so names are resolved again every
//! `SPLASH_CLUSTER_DNS_INTERVAL` (10 s by default).
//!
//! One address family: a name with IPv4 addresses uses those only, else its
//! IPv6 ones. A dual-stack replica has one address of each, and counting it
//! twice would give it twice its slots (`localhost` is the everyday case).
//!
//! # Changes
//!
//! - A new address joins DOWN, and its probes bring it UP (after `rise`
//!   good ones), so a replica that is still starting gets no render.
//! - An address gone from the answers drains (no new renders, those in
//!   flight finish), then is forgotten: no longer shown nor probed. If it
//!   comes back, it is the same node again, counters and all.
//! - A name that fails to resolve keeps its last known addresses (a DNS
//!   outage must not empty the fleet), with one WARNING until it resolves
//!   again. At start, a name that resolves to nothing is an error.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{ConfigError, NodeSpec};
use super::health::Health;
use super::pool::Pool;
use super::prober::{spawn_probe, ProbeSettings};
use super::transport::Transport;

/// A node entry whose host is a name, and what it resolves to now.
#[derive(Debug, Clone)]
pub struct DnsName {
    /// The entry as configured: each address is a copy of it.
    pub template: NodeSpec,
    /// The name.
    pub host: String,
    /// Its addresses, each with its node's index in the pool; `listed`
    /// is false once DNS stopped answering it.
    pub addresses: Vec<KnownAddress>,
}

/// One address of a name, and its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownAddress {
    /// The address.
    pub ip: IpAddr,
    /// Its node's index in the pool.
    pub node: usize,
    /// Whether the name's last answer had it.
    pub listed: bool,
}

/// What a new answer changes for one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Addresses never seen: new nodes.
    pub joined: Vec<IpAddr>,
    /// Known addresses that were not listed and are again.
    pub returned: Vec<usize>,
    /// Listed addresses missing from the answer: their nodes drain.
    pub vanished: Vec<usize>,
}

/// What the stats page shows of one followed name.
#[derive(Debug, Clone, PartialEq)]
pub struct NameReport {
    /// The name.
    pub name: String,
    /// The addresses its last good answer listed.
    pub addresses: Vec<IpAddr>,
    /// Why its last resolution failed, while it fails.
    pub error: Option<String>,
    /// How long ago it last resolved.
    pub resolved_ago: Duration,
}

/// The followed names, as the discovery task last saw them, for the
/// stats page. Empty when no node is named by DNS.
#[derive(Debug, Clone, Default)]
pub struct NamesStatus(Arc<Mutex<Vec<(NameReport, Instant)>>>);

impl NamesStatus {
    /// The names now.
    pub fn report(&self) -> Vec<NameReport> {
        let now = Instant::now();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(report, at)| NameReport {
                resolved_ago: now.saturating_duration_since(*at),
                ..report.clone()
            })
            .collect()
    }

    fn set(&self, index: usize, name: &DnsName, error: Option<String>, resolved: Option<Instant>) {
        let mut names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if names.len() <= index {
            names.resize_with(index + 1, || {
                let empty = NameReport {
                    name: String::new(),
                    addresses: Vec::new(),
                    error: None,
                    resolved_ago: Duration::ZERO,
                };
                (empty, Instant::now())
            });
        }
        let (report, at) = &mut names[index];
        report.name = name.host.clone();
        report.addresses = name
            .addresses
            .iter()
            .filter(|a| a.listed)
            .map(|a| a.ip)
            .collect();
        report.error = error;
        if let Some(resolved) = resolved {
            *at = resolved;
        }
    }
}

/// Compares a name's known addresses with a new answer.
pub fn changes(known: &[KnownAddress], answer: &[IpAddr]) -> Changes {
    let answer: BTreeSet<IpAddr> = answer.iter().copied().collect();
    let mut changes = Changes::default();
    for address in known {
        match (address.listed, answer.contains(&address.ip)) {
            (true, false) => changes.vanished.push(address.node),
            (false, true) => changes.returned.push(address.node),
            _ => {}
        }
    }
    changes.joined = answer
        .into_iter()
        .filter(|ip| !known.iter().any(|k| k.ip == *ip))
        .collect();
    changes
}

/// One family of a name's addresses, sorted, without repeats: the IPv4
/// ones if any, else the IPv6 ones.
pub fn one_family(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let all: BTreeSet<IpAddr> = addresses.into_iter().collect();
    let v4: Vec<IpAddr> = all.iter().copied().filter(IpAddr::is_ipv4).collect();
    if v4.is_empty() {
        all.into_iter().collect()
    } else {
        v4
    }
}

/// Resolves `host` with the system's resolver.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    let found = tokio::net::lookup_host((host, port)).await?;
    Ok(one_family(found.map(|addr| addr.ip())))
}

/// Replaces every node whose host is a name by one node per address it
/// resolves to now; returns the names to follow. A name that does not
/// resolve, or to nothing, fails the start with a message that names it.
pub async fn expand(nodes: &mut Vec<NodeSpec>) -> Result<Vec<DnsName>, ConfigError> {
    let mut expanded = Vec::with_capacity(nodes.len());
    let mut names = Vec::new();
    for (i, spec) in std::mem::take(nodes).into_iter().enumerate() {
        let endpoint = &spec.endpoint;
        let Some(host) = endpoint.host().filter(|_| endpoint.host_is_name()) else {
            expanded.push(spec);
            continue;
        };
        let host = host.to_owned();
        let argument = format!("nodes[{i}].url");
        let expected = "a host name the system's resolver knows (/etc/hosts, DNS), or an address";
        let addresses = resolve(&host, endpoint.port()).await.map_err(|e| {
            ConfigError::new(
                &argument,
                format!("{host:?} does not resolve ({e})"),
                expected,
            )
        })?;
        if addresses.is_empty() {
            return Err(ConfigError::new(
                &argument,
                format!("{host:?} resolves to no address"),
                expected,
            ));
        }
        let mut known = Vec::with_capacity(addresses.len());
        for ip in addresses {
            let pinned = pinned(&spec, ip);
            // Two entries may reach one address (a name and its address
            // both listed): it is one node.
            if let Some(node) = expanded
                .iter()
                .position(|n: &NodeSpec| n.endpoint.base_url() == pinned.endpoint.base_url())
            {
                known.push(KnownAddress {
                    ip,
                    node,
                    listed: true,
                });
                continue;
            }
            known.push(KnownAddress {
                ip,
                node: expanded.len(),
                listed: true,
            });
            expanded.push(pinned);
        }
        names.push(DnsName {
            template: spec,
            host,
            addresses: known,
        });
    }
    *nodes = expanded;
    Ok(names)
}

fn pinned(template: &NodeSpec, ip: IpAddr) -> NodeSpec {
    NodeSpec {
        endpoint: template.endpoint.at_address(ip),
        ..template.clone()
    }
}

/// Follows the names every `interval` until `stop` turns true: new
/// addresses join the pool (DOWN, with a probe task of their own), gone
/// ones drain, returning ones are listed again. Ends with its probe tasks.
#[allow(clippy::too_many_arguments)]
pub fn spawn<T: Transport>(
    pool: Pool,
    transport: Arc<T>,
    probes: ProbeSettings,
    mut names: Vec<DnsName>,
    interval: Duration,
    status: NamesStatus,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let started = Instant::now();
    for (index, name) in names.iter().enumerate() {
        status.set(index, name, None, Some(started));
    }
    tokio::spawn(async move {
        let mut spawned: Vec<JoinHandle<()>> = Vec::new();
        let mut failing = vec![false; names.len()];
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            for (index, (name, failing)) in names.iter_mut().zip(&mut failing).enumerate() {
                let port = name.template.endpoint.port();
                let answer = tokio::select! {
                    answer = resolve(&name.host, port) => answer,
                    _ = stop.wait_for(|stopped| *stopped) => break,
                };
                let addresses = match answer {
                    Ok(addresses) if !addresses.is_empty() => addresses,
                    other => {
                        let why = match other {
                            Err(error) => error.to_string(),
                            Ok(_) => "no address".to_owned(),
                        };
                        status.set(index, name, Some(why.clone()), None);
                        if !std::mem::replace(failing, true) {
                            tracing::warn!(
                                target: "scrapy_splash_cluster::dns",
                                "cannot resolve {} ({why}): keeping its {} known addresses",
                                name.host,
                                name.addresses.iter().filter(|a| a.listed).count()
                            );
                        }
                        continue;
                    }
                };
                if std::mem::replace(failing, false) {
                    tracing::info!(
                        target: "scrapy_splash_cluster::dns",
                        "{} resolves again",
                        name.host
                    );
                }
                let found = changes(&name.addresses, &addresses);
                for node in found.vanished {
                    pool.set_vanished(node, true);
                    mark(name, node, false);
                }
                for node in found.returned {
                    pool.set_vanished(node, false);
                    mark(name, node, true);
                }
                for ip in found.joined {
                    let spec = pinned(&name.template, ip);
                    tracing::info!(
                        target: "scrapy_splash_cluster::dns",
                        "{} has a new address: Splash node {} joins once its probes pass",
                        name.host,
                        spec.endpoint.display()
                    );
                    let shown = spec.endpoint.display().to_string();
                    let joined = pool.add_node(spec, Health::joining(tokio::time::Instant::now()));
                    let node = match joined {
                        Ok(node) => node,
                        Err(error) => {
                            tracing::warn!(
                                target: "scrapy_splash_cluster::dns",
                                "Splash node {shown} cannot join: {error}"
                            );
                            continue;
                        }
                    };
                    name.addresses.push(KnownAddress {
                        ip,
                        node,
                        listed: true,
                    });
                    spawned.push(spawn_probe(&pool, &transport, &probes, &stop, node));
                }
                status.set(index, name, None, Some(Instant::now()));
            }
        }
        for task in spawned {
            let _ = task.await;
        }
    })
}

fn mark(name: &mut DnsName, node: usize, listed: bool) {
    for address in &mut name.addresses {
        if address.node == node {
            address.listed = listed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn known(entries: &[(&str, usize, bool)]) -> Vec<KnownAddress> {
        entries
            .iter()
            .map(|&(a, node, listed)| KnownAddress {
                ip: ip(a),
                node,
                listed,
            })
            .collect()
    }

    #[test]
    fn an_answer_is_compared_with_what_is_known() {
        let now = known(&[
            ("10.0.0.1", 0, true),
            ("10.0.0.2", 1, true),
            ("10.0.0.3", 2, false),
        ]);
        let found = changes(&now, &[ip("10.0.0.1"), ip("10.0.0.3"), ip("10.0.0.4")]);
        assert_eq!(
            found,
            Changes {
                joined: vec![ip("10.0.0.4")],
                returned: vec![2],
                vanished: vec![1],
            }
        );
        assert_eq!(
            changes(&now, &[ip("10.0.0.1"), ip("10.0.0.2")]),
            Changes::default()
        );
    }

    #[test]
    fn one_family_prefers_ipv4_and_sorts() {
        assert_eq!(
            one_family([ip("::1"), ip("127.0.0.2"), ip("127.0.0.1"), ip("127.0.0.2")]),
            vec![ip("127.0.0.1"), ip("127.0.0.2")]
        );
        assert_eq!(
            one_family([ip("::2"), ip("::1")]),
            vec![ip("::1"), ip("::2")]
        );
    }

    #[tokio::test]
    async fn names_expand_to_one_node_per_address_and_addresses_stay() {
        let spec = |url: &str| NodeSpec {
            endpoint: crate::core::config::NodeEndpoint::parse("url", url).unwrap(),
            maxconn: 3,
            weight: 2,
            maxrss: None,
        };
        // `localhost` is in every /etc/hosts; its IPv6 twin is left out.
        let mut nodes = vec![
            spec("http://10.1.2.3:8050"),
            spec("http://u:pw@localhost:8050"),
        ];
        let names = expand(&mut nodes).await.unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].endpoint.display(), "http://10.1.2.3:8050");
        assert_eq!(
            nodes[1].endpoint.display(),
            "http://u:***@localhost:8050 (127.0.0.1)"
        );
        assert_eq!(nodes[1].endpoint.base_url(), "http://127.0.0.1:8050");
        assert_eq!((nodes[1].maxconn, nodes[1].weight), (3, 2));
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].addresses, known(&[("127.0.0.1", 1, true)]));
        let mut bad = vec![spec("http://no-such-host.invalid:8050")];
        let error = expand(&mut bad).await.unwrap_err();
        assert_eq!(error.argument, "nodes[0].url");
        assert!(
            error.to_string().contains("no-such-host.invalid"),
            "{error}"
        );
    }
}

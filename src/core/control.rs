//! The operator's hand on the nodes: drain one (no new renders, those in
//! flight finish) and make it ready again, as HAProxy's runtime API does
//! with `set server <b>/<s> state drain|ready`.
//!
//! A node is named as people know it: its URL (credentials left out or
//! masked), its address `host:port`, or its host alone when only one node
//! has it. A name that matches no node, or several, is refused with the list
//! of names that would do, so a typo never drains the wrong node.

use percent_encoding::percent_decode_str;

use super::config::NodeSpec;
use super::node::NodeSnapshot;
use super::pool::Pool;

/// What an operator asks of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// No new renders until `Ready`.
    Drain,
    /// Takes renders again (unless another cause drains it).
    Ready,
}

impl NodeAction {
    /// The action named by the last segment of a control path.
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "drain" => Some(NodeAction::Drain),
            "ready" => Some(NodeAction::Ready),
            _ => None,
        }
    }
}

/// Why a node name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No node answers to the name.
    Unknown {
        /// The name given.
        name: String,
        /// The URLs of the nodes there are.
        known: Vec<String>,
    },
    /// Several nodes answer to it.
    Ambiguous {
        /// The name given.
        name: String,
        /// The URLs of the nodes it matches.
        matches: Vec<String>,
    },
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Unknown { name, known } => write!(
                f,
                "no Splash node is named {name:?}; name one by its URL or host:port: {}",
                known.join(", ")
            ),
            LookupError::Ambiguous { name, matches } => write!(
                f,
                "{name:?} names {} nodes ({}); give the URL or host:port",
                matches.len(),
                matches.join(", ")
            ),
        }
    }
}

impl std::error::Error for LookupError {}

/// The `(node, action)` a control path (`/nodes/{node}/drain|ready`) asks
/// for, the node still a name; None when the path is not a control path.
/// The node may be percent-encoded or written out, slashes and all
/// (`/nodes/http://10.0.0.5:8050/drain`).
pub fn parse_control_path(path: &str) -> Option<(String, NodeAction)> {
    let rest = path.strip_prefix("/nodes/")?;
    let (name, action) = rest.rsplit_once('/')?;
    let action = NodeAction::from_segment(action)?;
    let name = percent_decode_str(name).decode_utf8().ok()?.into_owned();
    (!name.is_empty()).then_some((name, action))
}

/// The names a node answers to, most precise first.
fn names(spec: &NodeSpec) -> Vec<String> {
    let endpoint = &spec.endpoint;
    let mut names = vec![endpoint.base_url(), endpoint.display().to_owned()];
    if let Some(addr) = endpoint.connect_to() {
        names.push(addr.to_string());
        names.push(addr.ip().to_string());
    }
    if let Some(host) = endpoint.host() {
        names.push(format!("{host}:{}", endpoint.port()));
        names.push(host.to_owned());
    }
    names
}

/// The one node `name` designates among `specs`.
pub fn find_node<S: AsRef<NodeSpec>>(specs: &[S], name: &str) -> Result<usize, LookupError> {
    let wanted = name.trim().trim_end_matches('/');
    // The most precise kind of name decides: a URL that matches one node
    // wins over a bare host that several share.
    for level in 0..6 {
        let matches: Vec<usize> = specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| names(spec.as_ref()).get(level).is_some_and(|n| n == wanted))
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [] => continue,
            [one] => return Ok(*one),
            _ => {
                return Err(LookupError::Ambiguous {
                    name: name.to_owned(),
                    matches: matches
                        .iter()
                        .map(|&i| specs[i].as_ref().endpoint.display().to_owned())
                        .collect(),
                })
            }
        }
    }
    Err(LookupError::Unknown {
        name: name.to_owned(),
        known: specs
            .iter()
            .map(|s| s.as_ref().endpoint.display().to_owned())
            .collect(),
    })
}

/// Drains or readies the node `name` designates; its state after that.
pub fn apply(pool: &Pool, name: &str, action: NodeAction) -> Result<NodeSnapshot, LookupError> {
    let node = find_node(&pool.specs(), name)?;
    pool.set_operator_drain(node, action == NodeAction::Drain);
    Ok(pool.snapshot_of(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::NodeEndpoint;

    fn specs(urls: &[&str]) -> Vec<NodeSpec> {
        urls.iter()
            .map(|url| NodeSpec {
                endpoint: NodeEndpoint::parse("url", url).unwrap(),
                maxconn: 1,
                weight: 1,
                maxrss: None,
            })
            .collect()
    }

    #[test]
    fn control_paths_name_a_node_and_an_action() {
        assert_eq!(
            parse_control_path("/nodes/http%3A%2F%2F10.0.0.5%3A8050/drain"),
            Some(("http://10.0.0.5:8050".to_owned(), NodeAction::Drain))
        );
        assert_eq!(
            parse_control_path("/nodes/http://10.0.0.5:8050/ready"),
            Some(("http://10.0.0.5:8050".to_owned(), NodeAction::Ready))
        );
        assert_eq!(
            parse_control_path("/nodes/10.0.0.5:8050/ready"),
            Some(("10.0.0.5:8050".to_owned(), NodeAction::Ready))
        );
        for path in [
            "/nodes//drain",
            "/nodes/x/stop",
            "/nodes/x",
            "/node/x/drain",
            "/stats.json",
        ] {
            assert_eq!(parse_control_path(path), None, "{path}");
        }
    }

    #[test]
    fn a_node_is_found_by_url_address_or_unique_host() {
        let nodes = specs(&[
            "http://user:secret@10.0.0.5:8050",
            "http://10.0.0.5:8051",
            "https://splash.example",
        ]);
        assert_eq!(find_node(&nodes, "http://10.0.0.5:8050"), Ok(0));
        assert_eq!(find_node(&nodes, "http://user:***@10.0.0.5:8050/"), Ok(0));
        assert_eq!(find_node(&nodes, "10.0.0.5:8051"), Ok(1));
        assert_eq!(find_node(&nodes, "splash.example"), Ok(2));
        assert_eq!(find_node(&nodes, "splash.example:443"), Ok(2));
        let Err(LookupError::Ambiguous { matches, .. }) = find_node(&nodes, "10.0.0.5") else {
            panic!("two nodes share the host");
        };
        assert_eq!(matches.len(), 2);
        let error = find_node(&nodes, "http://10.0.0.6:8050").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("no Splash node is named"), "{text}");
        assert!(!text.contains("secret"), "a password leaked: {text}");
    }
}

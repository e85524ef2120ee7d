//! Which node gets the next request: the selection policy, as a pure function
//! of the nodes' loads.
//!
//! A policy sees one [`Candidate`] per node and picks one that may take the
//! request, or none. Eligibility (UP, below `maxconn`) is decided by the
//! caller's candidates, preference (untried nodes first, the least loaded) by
//! the policy, so power-of-two-choices or a latency-aware policy can be added
//! beside [`LeastConn`] without touching the pool.

/// What a policy knows of one node when it chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Requests in flight on the node now.
    pub in_flight: usize,
    /// Requests in flight at most.
    pub maxconn: usize,
    /// Relative share of the load.
    pub weight: u32,
    /// Whether the node is UP.
    pub up: bool,
    /// Whether this request already tried the node (a retry avoids it).
    pub tried: bool,
    /// Whether the node holds what the request would otherwise send in
    /// full (Splash's saved arguments): cheaper there, all else equal.
    pub preferred: bool,
    /// Whether the request may not go to this node at all: it is suspected
    /// of killing nodes and another suspect runs there already.
    pub excluded: bool,
}

impl Candidate {
    /// UP, below `maxconn`, and not excluded for this request.
    pub fn has_free_slot(&self) -> bool {
        self.up && self.in_flight < self.maxconn && !self.excluded
    }
}

/// Chooses a node for a request.
pub trait SelectionPolicy: Send {
    /// The index of the chosen candidate, or `None` when no node has a free
    /// slot. Must never choose a candidate without one.
    fn select(&mut self, candidates: &[Candidate]) -> Option<usize>;
}

/// HAProxy's `balance leastconn`, weighted, with redispatch and affinity.
///
/// Among the nodes with a free slot, those the request has not tried come
/// first (redispatch: a retry goes elsewhere while it can), then those it
/// prefers (they hold its saved Splash arguments); among those, the
/// fewest requests in flight relative to weight wins, compared as
/// `(in_flight + 1) / weight`, the load the node would have after taking the
/// request, so that a heavier node takes its share from the first request on.
/// Ties go round-robin from a rotating start, so idle nodes share the load
/// evenly instead of the first one taking every light-load request.
#[derive(Debug, Default)]
pub struct LeastConn {
    next: usize,
}

impl LeastConn {
    /// A policy whose round-robin starts at the first node.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SelectionPolicy for LeastConn {
    fn select(&mut self, candidates: &[Candidate]) -> Option<usize> {
        let n = candidates.len();
        let mut best: Option<usize> = None;
        for offset in 0..n {
            let i = (self.next + offset) % n;
            let c = &candidates[i];
            if !c.has_free_slot() {
                continue;
            }
            best = match best {
                Some(b) if !is_better(c, &candidates[b]) => Some(b),
                _ => Some(i),
            };
        }
        if let Some(chosen) = best {
            self.next = (chosen + 1) % n;
        }
        best
    }
}

/// Whether `a` is strictly preferable to `b`.
fn is_better(a: &Candidate, b: &Candidate) -> bool {
    if a.tried != b.tried {
        return !a.tried;
    }
    // Affinity ranks below redispatch and only among nodes with a free slot:
    // a node holding the arguments never gets more than its maxconn.
    if a.preferred != b.preferred {
        return a.preferred;
    }
    // (a.in_flight + 1) / a.weight < (b.in_flight + 1) / b.weight, without division.
    let load_a = (a.in_flight as u128 + 1) * u128::from(b.weight);
    let load_b = (b.in_flight as u128 + 1) * u128::from(a.weight);
    load_a < load_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(in_flight: usize) -> Candidate {
        Candidate {
            in_flight,
            maxconn: 5,
            weight: 1,
            up: true,
            tried: false,
            preferred: false,
            excluded: false,
        }
    }

    #[test]
    fn fewest_in_flight_wins() {
        let mut p = LeastConn::new();
        assert_eq!(p.select(&[node(3), node(1), node(2)]), Some(1));
    }

    #[test]
    fn ties_go_round_robin() {
        let mut p = LeastConn::new();
        let nodes = [node(0), node(0), node(0)];
        let picks: Vec<_> = (0..6).map(|_| p.select(&nodes).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn down_and_full_nodes_are_never_chosen() {
        let mut p = LeastConn::new();
        let mut down = node(0);
        down.up = false;
        let full = node(5);
        assert_eq!(p.select(&[down, full, node(4)]), Some(2));
        assert_eq!(p.select(&[down, full]), None);
        assert_eq!(p.select(&[]), None);
    }

    #[test]
    fn untried_nodes_come_first_even_when_busier() {
        let mut p = LeastConn::new();
        let mut tried = node(0);
        tried.tried = true;
        assert_eq!(p.select(&[tried, node(4)]), Some(1));
        // With every free node tried, the best tried one still serves.
        let mut full = node(5);
        full.tried = false;
        assert_eq!(p.select(&[tried, full]), Some(0));
    }

    #[test]
    fn preferred_nodes_win_among_free_ones_but_never_over_maxconn() {
        let mut p = LeastConn::new();
        let mut holder = node(3);
        holder.preferred = true;
        assert_eq!(p.select(&[node(0), holder]), Some(1));
        holder.in_flight = 5;
        assert_eq!(p.select(&[node(0), holder]), Some(0));
        // A retry still leaves the tried holder for an untried node.
        holder.in_flight = 0;
        holder.tried = true;
        assert_eq!(p.select(&[node(4), holder]), Some(0));
    }

    #[test]
    fn weight_scales_the_share() {
        let mut p = LeastConn::new();
        let mut heavy = node(0);
        heavy.weight = 2;
        heavy.maxconn = 10;
        let mut nodes = [heavy, node(0)];
        let mut counts = [0, 0];
        for _ in 0..9 {
            let i = p.select(&nodes).unwrap();
            nodes[i].in_flight += 1;
            counts[i] += 1;
        }
        assert_eq!(counts, [6, 3]);
    }

    proptest! {
        #[test]
        fn never_chooses_a_node_without_a_free_slot(
            nodes in proptest::collection::vec(
                (0usize..8, 1usize..6, 1u32..4, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()), 0..8),
            rotations in 0usize..10,
        ) {
            let candidates: Vec<Candidate> = nodes.iter().map(|&(in_flight, maxconn, weight, up, tried, preferred, excluded)| Candidate {
                in_flight, maxconn, weight, up, tried, preferred, excluded,
            }).collect();
            let mut p = LeastConn::new();
            for _ in 0..rotations { p.select(&candidates); }
            match p.select(&candidates) {
                Some(i) => {
                    prop_assert!(candidates[i].has_free_slot());
                    // Nothing free and untried is passed over for a tried one.
                    if candidates[i].tried {
                        prop_assert!(!candidates.iter().any(|c| c.has_free_slot() && !c.tried));
                    }
                }
                None => prop_assert!(!candidates.iter().any(Candidate::has_free_slot)),
            }
        }
    }
}

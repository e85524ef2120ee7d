//! The admission queue: requests that found every node full (or DOWN) wait
//! here, first come first served, until a slot frees or a node comes back.
//!
//! Splash has no 503: a node past its `--slots` queues renders internally
//! while their timeout ticks, and answers 504 to the ones that waited too long.
//! Holding the excess here, where any node can take it, is what keeps an
//! overloaded cluster from turning its queue into a 504 storm.
//!
//! Each waiter carries the nodes its request already tried, so the node that
//! frees a slot can still prefer untried nodes for it. Almost any waiter
//! accepts any free node; the one exception is a request suspected of killing
//! nodes (see [`Tried::is_suspect`]), which waits for a node that runs no
//! other suspect. So the queue is served in order, skipping only the waiters
//! that cannot take the free slot there is.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// What a request asks of the node it gets, by node index: not one it
/// already tried (redispatch), and preferably one that holds its saved
/// Splash arguments (affinity); and how many nodes died under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried {
    tried: Vec<usize>,
    preferred: Vec<usize>,
    /// Each node death met, as (node, the node's life): a node's life is
    /// how many times it went DOWN before, so one death seen by two
    /// attempts in a row counts once, and a node that died, came back and
    /// died again counts twice.
    node_deaths: Vec<(usize, u64)>,
}

impl Tried {
    /// A first attempt that prefers these nodes.
    pub fn preferring(preferred: Vec<usize>) -> Self {
        Self {
            tried: Vec::new(),
            preferred,
            node_deaths: Vec::new(),
        }
    }

    /// Records that a node died under one of the request's attempts (the
    /// connection closed or was reset mid-render), in the node's `life`;
    /// returns how many distinct deaths the request has met.
    pub fn record_node_death(&mut self, node: usize, life: u64) -> u32 {
        if !self.node_deaths.contains(&(node, life)) {
            self.node_deaths.push((node, life));
        }
        self.node_deaths.len() as u32
    }

    /// Whether a node died under this request before: it may be the page
    /// that kills nodes (a query of death), or only its victim.
    ///
    /// A dying node cuts every render it runs, the culprit's and its
    /// victims' alike, so one death cannot tell them apart. What can: a
    /// suspect runs only on a node where no other suspect runs. Then the
    /// next death a suspect meets is its own doing (or chance), never the
    /// doing of another suspect it shared a node with, and victims of the
    /// first death are not charged a second one by the culprit.
    pub fn is_suspect(&self) -> bool {
        !self.node_deaths.is_empty()
    }

    /// Records a node as tried.
    pub fn insert(&mut self, node: usize) {
        if !self.tried.contains(&node) {
            self.tried.push(node);
        }
    }

    /// Whether the node was tried.
    pub fn contains(&self, node: usize) -> bool {
        self.tried.contains(&node)
    }

    /// Whether the node is one the request prefers.
    pub fn prefers(&self, node: usize) -> bool {
        self.preferred.contains(&node)
    }

    /// Stops preferring a node (it lost the saved arguments).
    pub fn forget_preference(&mut self, node: usize) {
        self.preferred.retain(|&n| n != node);
    }

    /// Whether nothing was tried yet (a first attempt).
    pub fn is_empty(&self) -> bool {
        self.tried.is_empty()
    }
}

/// One request waiting for a node; `T` is what it is handed (a lease).
#[derive(Debug)]
pub struct Waiter<T> {
    /// Identifies the waiter, so that a timed-out or cancelled request can
    /// take itself out.
    pub id: u64,
    /// The nodes its request already tried.
    pub tried: Tried,
    /// When it started to wait.
    pub since: Instant,
    /// Where its node goes.
    pub grant: oneshot::Sender<T>,
}

/// FIFO of waiters, with retries let in at the front: they already waited
/// their turn once, and their time is running.
#[derive(Debug)]
pub struct AdmissionQueue<T> {
    waiters: VecDeque<Waiter<T>>,
    next_id: u64,
}

impl<T> Default for AdmissionQueue<T> {
    fn default() -> Self {
        Self {
            waiters: VecDeque::new(),
            next_id: 0,
        }
    }
}

impl<T> AdmissionQueue<T> {
    /// Adds a waiter and returns its id and the receiving end of its grant.
    pub fn push(&mut self, tried: Tried, retry: bool, now: Instant) -> (u64, oneshot::Receiver<T>) {
        let (grant, receiver) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        let waiter = Waiter {
            id,
            tried,
            since: now,
            grant,
        };
        if retry {
            self.waiters.push_front(waiter);
        } else {
            self.waiters.push_back(waiter);
        }
        (id, receiver)
    }

    /// Takes a waiter out; false when it was already granted (or gone).
    pub fn remove(&mut self, id: u64) -> bool {
        match self.waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// The waiter to serve next.
    pub fn front(&self) -> Option<&Waiter<T>> {
        self.waiters.front()
    }

    /// Takes the waiter to serve next.
    pub fn pop_front(&mut self) -> Option<Waiter<T>> {
        self.waiters.pop_front()
    }

    /// The waiters, in the order they are served.
    pub fn iter(&self) -> impl Iterator<Item = &Waiter<T>> {
        self.waiters.iter()
    }

    /// Takes the waiter at `position` in serving order.
    pub fn take(&mut self, position: usize) -> Option<Waiter<T>> {
        self.waiters.remove(position)
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// How long the longest waiter has waited.
    pub fn oldest_wait(&self, now: Instant) -> Duration {
        self.waiters
            .iter()
            .map(|w| now.saturating_duration_since(w.since))
            .max()
            .unwrap_or_default()
    }

    /// Drops every waiter: their receivers see a closed channel.
    pub fn clear(&mut self) {
        self.waiters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_come_first_served_with_retries_in_front() {
        let now = Instant::now();
        let mut q: AdmissionQueue<u8> = AdmissionQueue::default();
        let (a, _ra) = q.push(Tried::default(), false, now);
        let (b, _rb) = q.push(Tried::default(), false, now);
        let (c, _rc) = q.push(Tried::default(), true, now);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop_front().map(|w| w.id)).collect();
        assert_eq!(order, vec![c, a, b]);
    }

    #[test]
    fn remove_tells_whether_the_waiter_was_still_there() {
        let now = Instant::now();
        let mut q: AdmissionQueue<u8> = AdmissionQueue::default();
        let (a, _ra) = q.push(Tried::default(), false, now);
        assert!(q.remove(a));
        assert!(!q.remove(a));
        assert!(q.is_empty());
    }

    #[test]
    fn oldest_wait_is_the_longest() {
        let start = Instant::now();
        let mut q: AdmissionQueue<u8> = AdmissionQueue::default();
        let _a = q.push(Tried::default(), false, start);
        let _b = q.push(Tried::default(), false, start + Duration::from_secs(3));
        assert_eq!(
            q.oldest_wait(start + Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}

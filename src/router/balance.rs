//! Choosing among eligible nodes: round robin, least outstanding work, or by weight. Lock-free
//! and allocation-free; one [`Balancer`] per database per config generation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use crate::config::routing::Balance;
use crate::config::NodeConfig;
use crate::topology::{NodeId, NodeState};

/// Per-database balancing state shared by every session of that database. Node indexes are
/// those of the config (and so of the topology snapshot) of the generation it was built for;
/// build a new one when the config is reloaded.
#[derive(Debug)]
pub struct Balancer {
    /// Round-robin position, also the starting point that spreads ties in least-outstanding.
    next: AtomicUsize,
    /// Reads seen, for the primary's deterministic `primary_reads` share.
    reads: AtomicU64,
    nodes: Box<[Slot]>,
}

#[derive(Debug)]
struct Slot {
    weight: u32,
    outstanding: AtomicUsize,
}

impl Balancer {
    /// A balancer for a database's configured nodes (their `weight`s).
    pub fn new(nodes: &[NodeConfig]) -> Balancer {
        Balancer::with_weights(nodes.iter().map(|n| n.weight))
    }

    /// A balancer for nodes with these weights, in node order.
    pub fn with_weights(weights: impl IntoIterator<Item = u32>) -> Balancer {
        Balancer {
            next: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            nodes: weights
                .into_iter()
                .map(|weight| Slot {
                    weight,
                    outstanding: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    /// The node's configured weight; 1 for a node this balancer does not know.
    pub fn weight(&self, node: NodeId) -> u32 {
        self.nodes.get(node.0).map_or(1, |s| s.weight)
    }

    /// Queries/transactions currently running on the node through an [`Outstanding`] guard.
    pub fn outstanding(&self, node: NodeId) -> usize {
        self.nodes
            .get(node.0)
            .map_or(0, |s| s.outstanding.load(Ordering::Relaxed))
    }

    /// Counts work on `node` until the returned guard is dropped. The session holds it while a
    /// query or transaction runs there, so `least_outstanding` sees the load.
    pub fn track(self: &Arc<Self>, node: NodeId) -> Outstanding {
        if let Some(slot) = self.nodes.get(node.0) {
            slot.outstanding.fetch_add(1, Ordering::Relaxed);
        }
        Outstanding {
            balancer: Arc::clone(self),
            node,
        }
    }

    /// Whether this read is the primary's turn under a `share` in `0.0..=1.0`: exactly
    /// `floor(n * share)` of the first `n` reads are, spread evenly, with no randomness.
    pub(super) fn primary_turn(&self, share: f64) -> bool {
        if share.is_nan() || share <= 0.0 {
            return false;
        }
        if share >= 1.0 {
            return true;
        }
        let n = self.reads.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * share).floor() > (n * share).floor()
    }

    /// Picks one node among `nodes` for which `eligible` holds, by `balance`. Nodes with weight
    /// 0 are never picked. `None` when no node is eligible.
    pub fn pick(
        &self,
        balance: Balance,
        nodes: &[NodeState],
        eligible: impl Fn(&NodeState) -> bool,
    ) -> Option<NodeId> {
        let ok = |n: &&NodeState| self.weight(n.id) > 0 && eligible(n);
        match balance {
            Balance::RoundRobin => {
                let count = nodes.iter().filter(ok).count();
                if count == 0 {
                    return None;
                }
                let turn = self.next.fetch_add(1, Ordering::Relaxed) % count;
                nodes.iter().filter(ok).nth(turn).map(|n| n.id)
            }
            Balance::LeastOutstanding => {
                let len = nodes.len();
                if len == 0 {
                    return None;
                }
                let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
                let rotated = nodes.iter().skip(start).chain(nodes.iter().take(start));
                rotated
                    .filter(ok)
                    .min_by_key(|n| self.outstanding(n.id))
                    .map(|n| n.id)
            }
            Balance::Weighted => {
                let total: u64 = nodes
                    .iter()
                    .filter(ok)
                    .map(|n| u64::from(self.weight(n.id)))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut ticket = rand::rng().random_range(0..total);
                for n in nodes.iter().filter(ok) {
                    let w = u64::from(self.weight(n.id));
                    if ticket < w {
                        return Some(n.id);
                    }
                    ticket -= w;
                }
                None
            }
        }
    }
}

/// Work in flight on one node; dropping it ends the count. Cheap: one atomic each way plus an
/// `Arc` clone.
#[derive(Debug)]
pub struct Outstanding {
    balancer: Arc<Balancer>,
    node: NodeId,
}

impl Outstanding {
    /// The node this guard counts on.
    pub fn node(&self) -> NodeId {
        self.node
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if let Some(slot) = self.balancer.nodes.get(self.node.0) {
            slot.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

//! Pure per-database state: every node's tracker, the lag of each replica against the current
//! primary, and the `ClusterSnapshot` they add up to.

use std::time::Duration;

use crate::config::HealthConfig;
use crate::topology::{ClusterSnapshot, Freshness, Health, Lag, Lsn, NodeId, Role};

use super::lag::{self, LagLimits};
use super::tracker::{NodeTracker, Observation, Transition};

/// Hysteresis and lag settings, taken from `health`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    pub fall: u32,
    pub rise: u32,
    pub limits: LagLimits,
}

impl Rules {
    pub fn from_config(health: &HealthConfig) -> Rules {
        Rules {
            fall: health.fall,
            rise: health.rise,
            limits: LagLimits::from_config(health),
        }
    }
}

/// One node as tracked: its checks plus the lag and freshness derived from the whole database.
#[derive(Clone, Debug)]
struct TrackedNode {
    tracker: NodeTracker,
    /// The latest WAL position reported, by a check or (replicas) a replay poll: whichever came
    /// last wins, so a replica rebuilt behind its old position is not taken as ahead.
    lsn: Option<Lsn>,
    lag: Option<Lag>,
    freshness: Freshness,
}

/// The health of one database's nodes. Fed one check result at a time (from any node's
/// checker); [`DatabaseHealth::snapshot`] gives what the router should see.
#[derive(Clone, Debug)]
pub struct DatabaseHealth {
    /// The configured snapshot: names and addresses are taken from it.
    base: ClusterSnapshot,
    nodes: Vec<TrackedNode>,
    rules: Rules,
}

impl DatabaseHealth {
    /// Starts from the configured topology (roles as configured, health unknown).
    pub fn new(base: ClusterSnapshot, rules: Rules) -> DatabaseHealth {
        let nodes = base
            .nodes
            .iter()
            .map(|n| TrackedNode {
                tracker: NodeTracker::new(n.role),
                lsn: None,
                lag: None,
                freshness: Freshness::Fresh,
            })
            .collect();
        DatabaseHealth { base, nodes, rules }
    }

    /// Records one check of `node` (`None` = failed) that took `took`; returns every change it
    /// caused, on this node or (through lag) on others. Unknown node ids are ignored.
    pub fn record(
        &mut self,
        node: NodeId,
        seen: Option<Observation>,
        took: Duration,
    ) -> Vec<(NodeId, Transition)> {
        let Some(tracked) = self.nodes.get_mut(node.0) else {
            return Vec::new();
        };
        let rules = self.rules;
        let changes = match seen {
            Some(seen) => {
                tracked.lsn = seen.lsn;
                tracked.tracker.succeeded(seen, took, rules.rise)
            }
            None => tracked.tracker.failed(took, rules.fall),
        };
        let mut all: Vec<_> = changes.into_iter().map(|c| (node, c)).collect();
        all.extend(self.update_lag());
        all
    }

    /// Records a replica's replay position polled between checks (read-your-writes). Only the
    /// position changes: health, role, lag and freshness stay the checks' alone. Ignored unless
    /// the checks last saw the node as a replica. Returns whether the position changed.
    pub fn record_replay(&mut self, node: NodeId, replayed: Lsn) -> bool {
        let Some(tracked) = self.nodes.get_mut(node.0) else {
            return false;
        };
        if tracked.tracker.role() != Role::Replica || tracked.lsn == Some(replayed) {
            return false;
        }
        tracked.lsn = Some(replayed);
        true
    }

    /// The WAL position lag is measured against: the furthest of the primaries not down, or the
    /// furthest any replica has received if that is further. A primary whose last check failed
    /// (not yet down) has an old position; a replica with replay paused keeps receiving WAL, so
    /// it never looks caught up against that old position.
    fn primary_lsn(&self) -> Option<Lsn> {
        let primary = self
            .nodes
            .iter()
            .filter(|n| n.tracker.role() == Role::Primary && n.tracker.health() != Health::Down)
            .filter_map(|n| n.tracker.last()?.lsn)
            .max()?;
        let received = self
            .nodes
            .iter()
            .filter(|n| n.tracker.role() == Role::Replica)
            .filter_map(|n| n.tracker.last()?.receive_lsn)
            .max();
        Some(received.map_or(primary, |received| primary.max(received)))
    }

    /// Recomputes every replica's lag and freshness. Without a primary position, replicas keep
    /// their last values; a primary has no lag and is always fresh.
    fn update_lag(&mut self) -> Vec<(NodeId, Transition)> {
        let primary = self.primary_lsn();
        let limits = self.rules.limits;
        let mut changes = Vec::new();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let (lag, freshness) = if node.tracker.role() == Role::Primary {
                (None, Freshness::Fresh)
            } else {
                let measured = primary
                    .zip(node.tracker.last())
                    .filter(|(_, seen)| seen.in_recovery)
                    .and_then(|(p, seen)| lag::measure(p, seen));
                match measured {
                    Some(lag) => (Some(lag), lag::next_freshness(node.freshness, lag, &limits)),
                    None => (node.lag, node.freshness),
                }
            };
            node.lag = lag;
            if freshness != node.freshness {
                changes.push((
                    NodeId(index),
                    Transition::Freshness {
                        from: node.freshness,
                        to: freshness,
                    },
                ));
                node.freshness = freshness;
            }
        }
        changes
    }

    /// The topology as it stands: configured names and addresses with observed role, health,
    /// WAL position, lag and freshness.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let nodes = self
            .base
            .nodes
            .iter()
            .zip(&self.nodes)
            .map(|(base, node)| {
                let mut state = base.clone();
                state.role = node.tracker.role();
                state.health = node.tracker.health();
                state.lsn = node.lsn;
                state.lag = node.lag;
                state.freshness = node.freshness;
                state
            })
            .collect();
        ClusterSnapshot { nodes }
    }

    /// How long the last check of `node` took (for metrics).
    pub fn last_check(&self, node: NodeId) -> Option<Duration> {
        self.nodes.get(node.0)?.tracker.last_check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::NodeState;

    const MS: Duration = Duration::from_millis(1);

    fn base() -> ClusterSnapshot {
        let node = |i: usize, role| NodeState {
            id: NodeId(i),
            name: format!("n{i}"),
            host: "127.0.0.1".into(),
            port: 5432 + i as u16,
            role,
            health: Health::Unknown,
            lsn: None,
            lag: None,
            freshness: Freshness::Fresh,
        };
        ClusterSnapshot {
            nodes: vec![
                node(0, Role::Unknown),
                node(1, Role::Unknown),
                node(2, Role::Replica),
            ],
        }
    }

    fn rules() -> Rules {
        Rules {
            fall: 2,
            rise: 1,
            limits: LagLimits {
                max_bytes: 1000,
                max_time: Duration::from_secs(10),
                recovery: 0.5,
            },
        }
    }

    fn primary(lsn: u64) -> Option<Observation> {
        Some(Observation {
            in_recovery: false,
            lsn: Some(Lsn(lsn)),
            receive_lsn: None,
            replay_delay: None,
        })
    }

    fn replica(replayed: u64, received: u64, delay: u64) -> Option<Observation> {
        Some(Observation {
            in_recovery: true,
            lsn: Some(Lsn(replayed)),
            receive_lsn: Some(Lsn(received)),
            replay_delay: Some(Duration::from_secs(delay)),
        })
    }

    #[test]
    fn snapshot_shows_discovered_roles_and_lag() {
        let mut db = DatabaseHealth::new(base(), rules());
        assert_eq!(
            db.snapshot(),
            base(),
            "nothing checked yet: the configured topology"
        );
        db.record(NodeId(1), replica(100, 100, 50), MS);
        assert_eq!(db.snapshot().nodes[1].lag, None, "no primary position yet");
        db.record(NodeId(0), primary(300), MS);
        db.record(NodeId(2), replica(300, 300, 0), MS);
        let snap = db.snapshot();
        let roles: Vec<Role> = snap.nodes.iter().map(|n| n.role).collect();
        assert_eq!(roles, [Role::Primary, Role::Replica, Role::Replica]);
        assert!(snap.nodes.iter().all(|n| n.health == Health::Up));
        assert_eq!(snap.nodes[0].lsn, Some(Lsn(300)));
        assert_eq!(snap.nodes[0].lag, None);
        assert_eq!(
            snap.nodes[1].lag,
            Some(Lag {
                bytes: 200,
                time: Duration::ZERO
            })
        );
        assert_eq!(snap.nodes[2].lag, Some(Lag::default()));
        assert_eq!(db.last_check(NodeId(0)), Some(MS));
    }

    #[test]
    fn replica_lags_and_recovers_with_hysteresis() {
        let mut db = DatabaseHealth::new(base(), rules());
        db.record(NodeId(0), primary(100), MS);
        db.record(NodeId(1), replica(100, 100, 0), MS);
        let changes = db.record(NodeId(0), primary(2000), MS);
        assert_eq!(
            changes,
            [(
                NodeId(1),
                Transition::Freshness {
                    from: Freshness::Fresh,
                    to: Freshness::Lagging
                }
            )]
        );
        db.record(NodeId(1), replica(1200, 2000, 1), MS);
        assert_eq!(
            db.snapshot().nodes[1].freshness,
            Freshness::Lagging,
            "800 > 500"
        );
        let changes = db.record(NodeId(1), replica(1600, 2000, 1), MS);
        assert_eq!(changes.len(), 1);
        assert_eq!(db.snapshot().nodes[1].freshness, Freshness::Fresh);
    }

    #[test]
    fn a_stale_primary_position_does_not_make_a_paused_replica_look_caught_up() {
        let mut db = DatabaseHealth::new(base(), rules());
        db.record(NodeId(0), primary(100), MS);
        db.record(NodeId(1), replica(100, 100, 0), MS);
        // The primary's next check fails (not down yet: fall 2) while the replica, replay paused,
        // has received WAL it did not replay.
        db.record(NodeId(0), None, MS);
        db.record(NodeId(1), replica(100, 5000, 0), MS);
        assert_eq!(db.snapshot().nodes[1].freshness, Freshness::Lagging);
    }

    #[test]
    fn promotion_moves_the_primary_and_lag_reference() {
        let mut db = DatabaseHealth::new(base(), rules());
        db.record(NodeId(0), primary(1000), MS);
        db.record(NodeId(1), replica(1000, 1000, 0), MS);
        db.record(NodeId(2), replica(1000, 1000, 0), MS);
        let down: Vec<_> = (0..2)
            .flat_map(|_| db.record(NodeId(0), None, MS))
            .collect();
        assert_eq!(
            down,
            [(
                NodeId(0),
                Transition::Health {
                    from: Health::Up,
                    to: Health::Down
                }
            )]
        );
        let changes = db.record(NodeId(1), primary(5000), MS);
        assert!(changes.contains(&(
            NodeId(1),
            Transition::Role {
                from: Role::Replica,
                to: Role::Primary
            }
        )));
        let snap = db.snapshot();
        let primaries: Vec<NodeId> = snap.primaries().map(|n| n.id).collect();
        assert_eq!(primaries, [NodeId(1)]);
        assert_eq!(snap.nodes[1].lag, None);
        assert_eq!(
            snap.nodes[2].lag.map(|l| l.bytes),
            Some(4000),
            "measured against the new primary"
        );
        assert_eq!(snap.nodes[2].freshness, Freshness::Lagging);
        assert_eq!(
            snap.nodes[0].role,
            Role::Primary,
            "the old primary keeps its last role"
        );
    }

    #[test]
    fn unknown_node_is_ignored() {
        let mut db = DatabaseHealth::new(base(), rules());
        assert!(db.record(NodeId(9), primary(1), MS).is_empty());
        assert!(!db.record_replay(NodeId(9), Lsn(1)));
    }

    #[test]
    fn replay_polls_move_only_a_replica_position_and_the_latest_report_wins() {
        let mut db = DatabaseHealth::new(base(), rules());
        assert!(
            !db.record_replay(NodeId(1), Lsn(50)),
            "role not yet discovered: the checks decide"
        );
        db.record(NodeId(0), primary(1000), MS);
        db.record(NodeId(1), replica(400, 1000, 0), MS);
        let before = db.snapshot();
        assert!(db.record_replay(NodeId(1), Lsn(1000)));
        assert!(!db.record_replay(NodeId(1), Lsn(1000)), "unchanged");
        let after = db.snapshot();
        assert_eq!(after.nodes[1].lsn, Some(Lsn(1000)));
        let mut expected = before.clone();
        expected.nodes[1].lsn = Some(Lsn(1000));
        assert_eq!(after, expected, "lag, freshness, health and role untouched");
        assert_eq!(after.nodes[1].lag.map(|l| l.bytes), Some(600));

        assert!(!db.record_replay(NodeId(0), Lsn(5)), "never on a primary");
        assert_eq!(db.snapshot().nodes[0].lsn, Some(Lsn(1000)));

        db.record(NodeId(1), replica(1100, 1100, 0), MS);
        assert_eq!(db.snapshot().nodes[1].lsn, Some(Lsn(1100)));
        assert!(db.record_replay(NodeId(1), Lsn(20)), "a rebuilt replica");
        assert_eq!(db.snapshot().nodes[1].lsn, Some(Lsn(20)), "latest wins");
        for _ in 0..2 {
            db.record(NodeId(1), None, MS);
        }
        assert_eq!(db.snapshot().nodes[1].health, Health::Down);
        assert_eq!(
            db.snapshot().nodes[1].lsn,
            Some(Lsn(20)),
            "a failed check keeps the last position"
        );
    }
}

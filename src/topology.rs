//! Plain data about the nodes of a cluster: who they are, their role, health, WAL position and lag.
//! Produced from config and then by health checks; read by the router as an immutable snapshot.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

/// Index of a node within its database's node list (stable for one config snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// What a node is, as configured or as discovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes.
    Primary,
    /// A streaming replica: reads only.
    Replica,
    /// Configured `auto` and not yet discovered.
    Unknown,
}

/// Whether a node may receive new traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Never checked yet; treated as usable so a proxy without health checks still routes.
    Unknown,
    Up,
    Down,
}

/// One node as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub id: NodeId,
    /// Name for logs and admin views (`name` from config, or `host:port`).
    pub name: String,
    pub host: String,
    pub port: u16,
    pub role: Role,
    pub health: Health,
    /// Last WAL position seen: `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on
    /// a replica. `None` until a health check has reported one.
    pub lsn: Option<Lsn>,
    /// Replication lag of a replica (`None` for a primary or before the first measurement).
    pub lag: Option<Lag>,
    /// Whether a replica is within the configured lag limits (with hysteresis). Always `Fresh`
    /// for a primary.
    pub freshness: Freshness,
}

impl NodeState {
    /// Whether new traffic may go to this node.
    pub fn usable(&self) -> bool {
        self.health != Health::Down
    }
}

/// The nodes of one database's cluster at one moment. Cheap to share; replaced whole, never mutated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub nodes: Vec<NodeState>,
}

impl ClusterSnapshot {
    /// Usable nodes whose role is primary.
    pub fn primaries(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Primary && n.usable())
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeState> {
        self.nodes.get(id.0)
    }
}

/// A WAL position (Postgres `pg_lsn`), comparable and subtractable in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses Postgres' text form `XXXXXXXX/XXXXXXXX` (hex high and low 32 bits).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// How far a replica is behind its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lag {
    /// Primary WAL position minus the replica's replay position (0 if the replica is ahead).
    pub bytes: u64,
    /// Time since the last replayed transaction committed on the primary, 0 when the replica has
    /// replayed everything it received.
    pub time: Duration,
}

/// Whether a replica may serve reads as far as lag is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Freshness {
    #[default]
    Fresh,
    /// Over `max_lag_bytes` or `max_lag`; gets no reads until back under (with hysteresis).
    Lagging,
}

/// The live topology of one database: health checks store new snapshots, sessions load one per
/// routing decision (a lock-free atomic load).
pub type TopologyHandle = Arc<ArcSwap<ClusterSnapshot>>;

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsn_round_trips_its_text_form() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert!(Lsn::parse("nope").is_none());
        assert!(Lsn::parse("1/").is_none());
        assert!(Lsn::parse("G/1").is_none());
    }
}

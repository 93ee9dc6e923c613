//! Plain data about the nodes of a cluster: who they are, their role and their health. Produced by
//! config (today) and by health checks (later); read by the router as an immutable snapshot.

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

//! Routing policy, pure: given what a client wants and a topology snapshot, pick the node to use.
//! Today every session goes to the primary; read/write splitting grows here.

pub mod classify;
pub mod lexer;

use crate::topology::{ClusterSnapshot, NodeId, Role};

/// Why no node could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no primary is available for database \"{database}\"")]
    NoPrimary { database: String },
    #[error(
        "more than one node claims to be primary for database \"{database}\"; refusing writes"
    )]
    SeveralPrimaries { database: String },
}

/// What the client's work needs from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// May write: must run on the primary.
    ReadWrite,
}

/// Picks the node for `intent`. A node whose role is unknown (configured `auto`, not yet discovered)
/// counts as the primary only when it is the first node and no node is known to be primary, so a
/// single-node `auto` setup works without health checks.
pub fn route(
    database: &str,
    snapshot: &ClusterSnapshot,
    intent: Intent,
) -> Result<NodeId, RouteError> {
    match intent {
        Intent::ReadWrite => primary(database, snapshot),
    }
}

fn primary(database: &str, snapshot: &ClusterSnapshot) -> Result<NodeId, RouteError> {
    let mut primaries = snapshot.primaries();
    match (primaries.next(), primaries.next()) {
        (Some(_), Some(_)) => Err(RouteError::SeveralPrimaries {
            database: database.to_string(),
        }),
        (Some(node), None) => Ok(node.id),
        (None, _) => snapshot
            .nodes
            .iter()
            .find(|n| n.role == Role::Unknown && n.usable())
            .map(|n| n.id)
            .ok_or_else(|| RouteError::NoPrimary {
                database: database.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Health, NodeState};

    fn node(i: usize, role: Role, health: Health) -> NodeState {
        NodeState {
            id: NodeId(i),
            name: format!("n{i}"),
            host: "127.0.0.1".into(),
            port: 5432 + i as u16,
            role,
            health,
            lsn: None,
            lag: None,
            freshness: Default::default(),
        }
    }

    #[test]
    fn writes_go_to_the_primary() {
        let snap = ClusterSnapshot {
            nodes: vec![
                node(0, Role::Replica, Health::Up),
                node(1, Role::Primary, Health::Up),
            ],
        };
        assert_eq!(route("db", &snap, Intent::ReadWrite), Ok(NodeId(1)));
    }

    #[test]
    fn two_primaries_refuse_writes() {
        let snap = ClusterSnapshot {
            nodes: vec![
                node(0, Role::Primary, Health::Up),
                node(1, Role::Primary, Health::Unknown),
            ],
        };
        assert!(matches!(
            route("db", &snap, Intent::ReadWrite),
            Err(RouteError::SeveralPrimaries { .. })
        ));
    }

    #[test]
    fn a_down_primary_is_no_primary() {
        let snap = ClusterSnapshot {
            nodes: vec![
                node(0, Role::Primary, Health::Down),
                node(1, Role::Replica, Health::Up),
            ],
        };
        assert!(matches!(
            route("db", &snap, Intent::ReadWrite),
            Err(RouteError::NoPrimary { .. })
        ));
    }

    #[test]
    fn an_undiscovered_auto_node_serves_as_primary() {
        let snap = ClusterSnapshot {
            nodes: vec![node(0, Role::Unknown, Health::Unknown)],
        };
        assert_eq!(route("db", &snap, Intent::ReadWrite), Ok(NodeId(0)));
    }
}

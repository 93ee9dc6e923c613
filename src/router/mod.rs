//! Routing policy, pure: given what a client wants, a topology snapshot, the routing settings
//! and the database's balancer, pick the node to use. Submodules: the SQL [`lexer`] and
//! [`classify`]er, the [`policy`] (intents, requests, decisions), the [`balance`]r and the
//! [`consistency`] keys for read-your-writes across connections.

pub mod balance;
pub mod classify;
pub mod consistency;
pub mod lexer;
pub mod policy;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_balance;

pub use balance::{Balancer, Outstanding};
pub use consistency::{key_directive, ConsistencyKeys, KeyDirective};
pub use policy::{
    classifier_config, hold_begin, intent_for, Decision, Intent, Reason, Request, TxStart,
};

use crate::topology::{ClusterSnapshot, NodeId};

/// Why no node could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no primary is available for database \"{database}\"")]
    NoPrimary { database: String },
    #[error(
        "more than one node claims to be primary for database \"{database}\"; refusing writes"
    )]
    SeveralPrimaries { database: String },
    /// A read found no usable, fresh replica and `when_no_replica` is `fail`.
    #[error("no replica is available for reads on database \"{database}\"")]
    NoReplica { database: String },
}

impl RouteError {
    /// True for errors a failover may cure (no primary, or two while roles settle): a write
    /// waits up to `routing.write_wait` for a new topology snapshot before giving up.
    pub fn worth_waiting(&self) -> bool {
        matches!(
            self,
            RouteError::NoPrimary { .. } | RouteError::SeveralPrimaries { .. }
        )
    }
}

/// Primary-only routing, as before read routing existed: every intent goes to the primary.
/// Kept so sessions work until they call [`policy::route`]; same primary rules.
pub fn route(
    database: &str,
    snapshot: &ClusterSnapshot,
    _intent: Intent,
) -> Result<NodeId, RouteError> {
    policy::primary(database, snapshot)
}

//! The routing decision: from a request (write or read, read-your-writes bounds), the
//! topology snapshot, the resolved settings and the database's balancer, to one node and why.
//! Also how a transaction's first query string becomes a request's intent.

use std::time::Instant;

use crate::config::routing::{
    DefaultTarget, ReadRouting, ReadWriteTransactions, ReadYourWrites, WhenNoReplica,
};
use crate::config::RoutingSettings;
use crate::topology::{ClusterSnapshot, Freshness, Lsn, NodeId, NodeState, Role};

use super::balance::Balancer;
use super::classify::{Classification, ClassifierConfig, Hint, Target, TxEffect};
use super::lexer::Lexer;
use super::RouteError;

/// What the client's work needs from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// May write: must run on the primary.
    Write,
    /// Read-only: a replica will do.
    Read,
}

impl Intent {
    /// The spelling used before reads were routed; same as [`Intent::Write`].
    #[allow(non_upper_case_globals)]
    pub const ReadWrite: Intent = Intent::Write;
}

/// Why a node was chosen (or why an intent was decided): a label for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Classified as a write (or could not be shown read-only).
    Write,
    /// An explicit read-write `BEGIN`, sent to the primary by `read_write_transactions`.
    TransactionBegin,
    /// `BEGIN READ ONLY` (or `SET TRANSACTION READ ONLY` right after `BEGIN`).
    ReadOnlyTransaction,
    /// A `/* pgsluice:primary|replica */` hint.
    Hint,
    /// The database's or user's `default_target`.
    Default,
    /// Classified as a read.
    Read,
    /// A read the primary took as its `primary_reads` share.
    PrimaryShare,
    /// A read on the primary because no replica was usable and fresh.
    ReadNoReplica,
    /// A read on the primary because no replica had replayed the client's writes yet (or the
    /// read-your-writes window was open).
    ReadYourWrites,
    /// A read on the primary because `reads: primary`.
    ReadsOff,
}

impl Reason {
    /// A stable lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Write => "write",
            Reason::TransactionBegin => "transaction_begin",
            Reason::ReadOnlyTransaction => "read_only_transaction",
            Reason::Hint => "hint",
            Reason::Default => "default_target",
            Reason::Read => "read",
            Reason::PrimaryShare => "primary_share",
            Reason::ReadNoReplica => "read_no_replica",
            Reason::ReadYourWrites => "read_your_writes",
            Reason::ReadsOff => "reads_off",
        }
    }
}

/// One routing question, built by the session per transaction (or autocommit query string).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub intent: Intent,
    /// Why the intent is what it is (from [`intent_for`]); reported back when nothing overrides.
    pub reason: Reason,
    /// `read_your_writes: lsn`: only replicas that have replayed this position qualify (the
    /// client's last commit LSN, or its consistency key's). A replica with unknown LSN does not.
    pub min_lsn: Option<Lsn>,
    /// `read_your_writes: window`: reads stay on the primary until this moment.
    pub primary_until: Option<Instant>,
}

impl Request {
    /// A request with no read-your-writes bound.
    pub fn new(intent: Intent, reason: Reason) -> Request {
        Request {
            intent,
            reason,
            min_lsn: None,
            primary_until: None,
        }
    }

    /// A plain write.
    pub fn write() -> Request {
        Request::new(Intent::Write, Reason::Write)
    }

    /// A plain read.
    pub fn read() -> Request {
        Request::new(Intent::Read, Reason::Read)
    }
}

/// The chosen node and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub node: NodeId,
    pub reason: Reason,
    /// True when `node` is a replica: the session may then retry a 25006 error on the primary
    /// (`retry_read_only_errors`) and need not track a commit LSN.
    pub replica: bool,
}

/// Picks the node for `request`. Writes need exactly one usable primary (two ⇒
/// `SeveralPrimaries`, none ⇒ `NoPrimary`; an undiscovered `auto` node serves as primary when no
/// node is known to be one). Reads go to a usable, fresh replica with weight > 0 (caught up with
/// `min_lsn` when set), chosen by `settings.balance`, except for the primary's `primary_reads`
/// share; with no such replica, to the primary or `NoReplica` per `when_no_replica`. A read
/// the primary should take while no primary is usable goes to a replica instead when it can.
/// No allocation, no lock.
pub fn route(
    database: &str,
    snapshot: &ClusterSnapshot,
    settings: &RoutingSettings,
    balancer: &Balancer,
    request: &Request,
) -> Result<Decision, RouteError> {
    let on_primary = |reason| {
        primary(database, snapshot).map(|node| Decision {
            node,
            reason,
            replica: false,
        })
    };
    if request.intent == Intent::Write {
        return on_primary(request.reason);
    }
    if settings.reads == ReadRouting::Primary {
        return on_primary(Reason::ReadsOff);
    }
    let min_lsn = match settings.read_your_writes {
        ReadYourWrites::Lsn => request.min_lsn,
        ReadYourWrites::Window => {
            if request.primary_until.is_some_and(|t| Instant::now() < t) {
                return on_primary(Reason::ReadYourWrites);
            }
            None
        }
        ReadYourWrites::Off => None,
    };
    let serves_reads = |n: &NodeState| {
        n.role == Role::Replica
            && n.usable()
            && n.freshness == Freshness::Fresh
            && balancer.weight(n.id) > 0
    };
    if !snapshot.nodes.iter().any(serves_reads) {
        return match settings.when_no_replica {
            WhenNoReplica::Primary => on_primary(Reason::ReadNoReplica),
            WhenNoReplica::Fail => Err(RouteError::NoReplica {
                database: database.to_string(),
            }),
        };
    }
    if balancer.primary_turn(settings.primary_reads.0) {
        if let Ok(decision) = on_primary(Reason::PrimaryShare) {
            return Ok(decision);
        }
    }
    let caught_up = |n: &NodeState| match min_lsn {
        None => true,
        Some(min) => n.lsn.is_some_and(|lsn| lsn >= min),
    };
    let eligible = |n: &NodeState| serves_reads(n) && caught_up(n);
    match balancer.pick(settings.balance, &snapshot.nodes, eligible) {
        Some(node) => Ok(Decision {
            node,
            reason: request.reason,
            replica: true,
        }),
        None => on_primary(Reason::ReadYourWrites),
    }
}

/// The single usable primary; see [`route`].
pub(super) fn primary(database: &str, snapshot: &ClusterSnapshot) -> Result<NodeId, RouteError> {
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

/// Where the query string being routed stands in its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStart {
    /// No transaction is open (autocommit), or this string opens one itself.
    Idle,
    /// The session held back a read-write `BEGIN` (see [`hold_begin`]); this string is the
    /// transaction's first.
    AfterHeldBegin,
}

/// Decides the intent of the work starting with the query string classified as `c`.
/// Precedence: a malformed string is a write; then the client's hint; then a `default_target`
/// other than `auto`; then `BEGIN READ ONLY` (read) and a read-write `BEGIN` under
/// `read_write_transactions: primary` (write); then the classification.
pub fn intent_for(
    c: &Classification,
    settings: &RoutingSettings,
    start: TxStart,
) -> (Intent, Reason) {
    if c.malformed.is_some() {
        return (Intent::Write, Reason::Write);
    }
    match c.hint {
        Some(Hint::Primary) => return (Intent::Write, Reason::Hint),
        Some(Hint::Replica) => return (Intent::Read, Reason::Hint),
        None => {}
    }
    match settings.default_target {
        DefaultTarget::Primary => return (Intent::Write, Reason::Default),
        DefaultTarget::Replica => return (Intent::Read, Reason::Default),
        DefaultTarget::Auto => {}
    }
    let classify_begin = settings.read_write_transactions == ReadWriteTransactions::Classify;
    let read = c.target == Target::Replica;
    match (c.transaction, start) {
        // Serializable read-only transactions are classified as writes: standbys refuse them.
        (TxEffect::Begin { read_only: true }, _) if read => {
            (Intent::Read, Reason::ReadOnlyTransaction)
        }
        (TxEffect::Begin { read_only: false }, _) | (_, TxStart::AfterHeldBegin)
            if !classify_begin =>
        {
            (Intent::Write, Reason::TransactionBegin)
        }
        _ if read => (Intent::Read, Reason::Read),
        _ => (Intent::Write, Reason::Write),
    }
}

/// True when `sql` (classified as `c`) only opens a read-write, non-serializable transaction
/// and `read_write_transactions: classify` asks to route by the transaction's first statement:
/// the session should answer the `BEGIN` itself, hold it, and send it ahead of the next query
/// string, routed by `intent_for(next, settings, TxStart::AfterHeldBegin)`. A hint or a
/// `default_target` decides at once, and serializable transactions (which standbys refuse) go
/// to the primary, so nothing is held then. A string with `BEGIN` and more statements is
/// routed as a whole: to the primary unless it is `BEGIN READ ONLY` with reads only.
pub fn hold_begin(sql: &str, c: &Classification, settings: &RoutingSettings) -> bool {
    settings.read_write_transactions == ReadWriteTransactions::Classify
        && settings.default_target == DefaultTarget::Auto
        && c.malformed.is_none()
        && c.hint.is_none()
        && c.statements == 1
        && c.transaction == (TxEffect::Begin { read_only: false })
        && !mentions_serializable(sql)
}

fn mentions_serializable(sql: &str) -> bool {
    let mut lexer = Lexer::new(sql);
    while let Some(Ok(token)) = lexer.next_token() {
        if token.is_keyword("serializable") {
            return true;
        }
    }
    false
}

/// The classifier settings these routing settings ask for (`writing_functions`), for a server
/// with `standard_conforming_strings` on.
pub fn classifier_config(settings: &RoutingSettings) -> ClassifierConfig {
    ClassifierConfig {
        writing_functions: settings.writing_functions.clone(),
        standard_conforming_strings: true,
    }
}

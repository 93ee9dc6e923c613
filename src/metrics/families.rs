//! The handle types the rest of the proxy records into: one per pool, per database, per node, and
//! the process-wide one. Every field is an atomic; labels are escaped once when a handle is made.

use super::render::escape_label;
use super::{Counter, FloatGauge, Gauge, Histogram};

/// Metrics of one pool (database, user, node). Get it from `Pool::metrics()` (or
/// `Metrics::pool`); record with relaxed atomics, no lock, no allocation:
///
/// - a client's transaction ended (ReadyForQuery back to idle):
///   `transaction_duration.observe(started.elapsed())`, `started` being the first message of it
///   (the histogram's count is the transaction counter: one atomic add less per transaction);
/// - a query answered (each Query, or each Sync of the extended protocol):
///   `query_duration.observe(...)` from the request to its ReadyForQuery (its count is the
///   query counter);
/// - bytes relayed: `bytes_received.add(n)` for bytes read from the client, `bytes_sent.add(n)` for
///   bytes written to it;
/// - prepared-statement cache: `prepared_cache_hits.inc()`, `prepared_cache_misses.inc()`,
///   `prepared_cache_evictions.inc()`.
///
/// The pool itself records `checkout_wait`, `checkout_timeouts`, `server_connects`,
/// `server_connect_errors`, `server_idle`, `server_active`, `clients_waiting` and `pool_size`.
#[derive(Debug)]
pub struct PoolMetrics {
    /// `database="..",user="..",node=".."`, escaped.
    pub(super) labels: String,
    pub transaction_duration: Histogram,
    pub query_duration: Histogram,
    /// Time from asking the pool for a connection to getting a slot (0 when one was free).
    pub checkout_wait: Histogram,
    pub checkout_timeouts: Counter,
    /// Server connections idle in the pool.
    pub server_idle: Gauge,
    /// Server connections checked out by clients.
    pub server_active: Gauge,
    pub server_connects: Counter,
    pub server_connect_errors: Counter,
    /// Configured `size` (set when the pool is built).
    pub pool_size: Gauge,
    /// Clients queued for a slot.
    pub clients_waiting: Gauge,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub prepared_cache_hits: Counter,
    pub prepared_cache_misses: Counter,
    pub prepared_cache_evictions: Counter,
}

impl PoolMetrics {
    /// Transactions completed by the pool's clients (counted by their duration histogram).
    pub fn transactions(&self) -> u64 {
        self.transaction_duration.count()
    }

    /// Queries answered for the pool's clients (counted by their duration histogram).
    pub fn queries(&self) -> u64 {
        self.query_duration.count()
    }

    /// A handle not listed in any registry (pools built without one, e.g. in unit tests).
    pub fn detached() -> PoolMetrics {
        PoolMetrics::new("", "", "")
    }

    pub(super) fn new(database: &str, user: &str, node: &str) -> PoolMetrics {
        PoolMetrics {
            labels: format!(
                "database=\"{}\",user=\"{}\",node=\"{}\"",
                escape_label(database),
                escape_label(user),
                escape_label(node)
            ),
            transaction_duration: Histogram::default(),
            query_duration: Histogram::default(),
            checkout_wait: Histogram::default(),
            checkout_timeouts: Counter::default(),
            server_idle: Gauge::default(),
            server_active: Gauge::default(),
            server_connects: Counter::default(),
            server_connect_errors: Counter::default(),
            pool_size: Gauge::default(),
            clients_waiting: Gauge::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            prepared_cache_hits: Counter::default(),
            prepared_cache_misses: Counter::default(),
            prepared_cache_evictions: Counter::default(),
        }
    }
}

/// Where a routing decision sent a statement or session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    Primary,
    Replica,
}

impl RouteTarget {
    pub const ALL: [RouteTarget; 2] = [RouteTarget::Primary, RouteTarget::Replica];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteTarget::Primary => "primary",
            RouteTarget::Replica => "replica",
        }
    }
}

/// Why the router chose its target (label `reason`). A fixed set so recording needs no allocation;
/// use `Other` for anything new and add a variant when it matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteReason {
    /// The statement writes (or could not be classified as read-only).
    Write,
    /// A read-only statement outside a transaction.
    Read,
    /// Inside a transaction: stays where the transaction started.
    Transaction,
    /// A routing hint from the client (comment or setting).
    Hint,
    /// Read-your-writes: the client wrote recently, so it reads from the primary.
    ReadYourWrites,
    /// The client holds session state (pinned).
    SessionState,
    /// No usable (or fresh enough) replica: fell back to the primary.
    Fallback,
    /// Session pooling or a database without replicas: the default target.
    Default,
    Other,
}

impl RouteReason {
    pub const ALL: [RouteReason; 9] = [
        RouteReason::Write,
        RouteReason::Read,
        RouteReason::Transaction,
        RouteReason::Hint,
        RouteReason::ReadYourWrites,
        RouteReason::SessionState,
        RouteReason::Fallback,
        RouteReason::Default,
        RouteReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Write => "write",
            RouteReason::Read => "read",
            RouteReason::Transaction => "transaction",
            RouteReason::Hint => "hint",
            RouteReason::ReadYourWrites => "read_your_writes",
            RouteReason::SessionState => "session_state",
            RouteReason::Fallback => "fallback",
            RouteReason::Default => "default",
            RouteReason::Other => "other",
        }
    }
}

/// SQLSTATE classes counted by `pgsluice_errors_total{class}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// 08: connection exception.
    Connection,
    /// 0A: feature not supported.
    FeatureNotSupported,
    /// 25: invalid transaction state.
    TransactionState,
    /// 28: invalid authorization.
    Authorization,
    /// 3D: invalid catalog name (unknown database).
    Catalog,
    /// 40: transaction rollback (serialization failure, deadlock).
    Rollback,
    /// 53: insufficient resources (too many connections).
    Resources,
    /// 57: operator intervention (shutdown, canceled).
    OperatorIntervention,
    Other,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Connection,
        ErrorClass::FeatureNotSupported,
        ErrorClass::TransactionState,
        ErrorClass::Authorization,
        ErrorClass::Catalog,
        ErrorClass::Rollback,
        ErrorClass::Resources,
        ErrorClass::OperatorIntervention,
        ErrorClass::Other,
    ];

    /// The class of a SQLSTATE such as `"08006"` (first two characters).
    pub fn of(sqlstate: &str) -> ErrorClass {
        match sqlstate.as_bytes() {
            [b'0', b'8', ..] => ErrorClass::Connection,
            [b'0', b'A', ..] => ErrorClass::FeatureNotSupported,
            [b'2', b'5', ..] => ErrorClass::TransactionState,
            [b'2', b'8', ..] => ErrorClass::Authorization,
            [b'3', b'D', ..] => ErrorClass::Catalog,
            [b'4', b'0', ..] => ErrorClass::Rollback,
            [b'5', b'3', ..] => ErrorClass::Resources,
            [b'5', b'7', ..] => ErrorClass::OperatorIntervention,
            _ => ErrorClass::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connection => "08",
            ErrorClass::FeatureNotSupported => "0A",
            ErrorClass::TransactionState => "25",
            ErrorClass::Authorization => "28",
            ErrorClass::Catalog => "3D",
            ErrorClass::Rollback => "40",
            ErrorClass::Resources => "53",
            ErrorClass::OperatorIntervention => "57",
            ErrorClass::Other => "other",
        }
    }
}

/// Metrics of one configured database: routing decisions and errors reported to its clients.
/// Record with `route(target, reason)` after each routing decision and `error(sqlstate)` for each
/// ErrorResponse a client gets: the proxy's own and the servers' (counted as the relay forwards
/// them).
#[derive(Debug)]
pub struct DatabaseMetrics {
    /// `database=".."`, escaped.
    pub(super) labels: String,
    routes: [[Counter; RouteReason::ALL.len()]; RouteTarget::ALL.len()],
    errors: [Counter; ErrorClass::ALL.len()],
}

impl DatabaseMetrics {
    pub(super) fn new(database: &str) -> DatabaseMetrics {
        DatabaseMetrics {
            labels: format!("database=\"{}\"", escape_label(database)),
            routes: Default::default(),
            errors: Default::default(),
        }
    }

    /// Counts one routing decision.
    #[inline]
    pub fn route(&self, target: RouteTarget, reason: RouteReason) {
        self.routes[target as usize][reason as usize].inc();
    }

    /// Counts one error sent to a client, by the class of its SQLSTATE.
    #[inline]
    pub fn error(&self, sqlstate: &str) {
        self.errors[ErrorClass::of(sqlstate) as usize].inc();
    }

    pub fn routes(&self, target: RouteTarget, reason: RouteReason) -> u64 {
        self.routes[target as usize][reason as usize].get()
    }

    pub fn errors(&self, class: ErrorClass) -> u64 {
        self.errors[class as usize].get()
    }
}

/// A node's role as a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRoleLabel {
    Primary = 0,
    Replica = 1,
    Unknown = 2,
}

impl NodeRoleLabel {
    pub const ALL: [NodeRoleLabel; 3] = [
        NodeRoleLabel::Primary,
        NodeRoleLabel::Replica,
        NodeRoleLabel::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeRoleLabel::Primary => "primary",
            NodeRoleLabel::Replica => "replica",
            NodeRoleLabel::Unknown => "unknown",
        }
    }
}

/// Metrics of one node of one database. The app refreshes `up`, role and lag from the topology
/// before each scrape ([`NodeMetrics::set_state`]); the health checker records each check with
/// `health_check_duration.observe(elapsed)`.
#[derive(Debug)]
pub struct NodeMetrics {
    /// `database="..",node=".."`, escaped.
    pub(super) labels: String,
    /// 1 when the node is usable, 0 when down.
    pub up: Gauge,
    /// A [`NodeRoleLabel`] as its discriminant.
    role: Gauge,
    /// Replica lag in bytes; negative when unknown (not rendered).
    lag_bytes: Gauge,
    lag_seconds: FloatGauge,
    pub health_check_duration: Histogram,
}

impl NodeMetrics {
    pub(super) fn new(database: &str, node: &str) -> NodeMetrics {
        NodeMetrics {
            labels: format!(
                "database=\"{}\",node=\"{}\"",
                escape_label(database),
                escape_label(node)
            ),
            up: Gauge::default(),
            role: Gauge::default(),
            lag_bytes: Gauge(std::sync::atomic::AtomicI64::new(-1)),
            lag_seconds: FloatGauge::default(),
            health_check_duration: Histogram::default(),
        }
    }

    /// Publishes health, role and lag (`None`: unknown or a primary).
    pub fn set_state(&self, up: bool, role: NodeRoleLabel, lag: Option<(u64, f64)>) {
        self.up.set(i64::from(up));
        self.role.set(role as i64);
        match lag {
            Some((bytes, seconds)) => {
                self.lag_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                self.lag_seconds.set(seconds);
            }
            None => self.lag_bytes.set(-1),
        }
    }

    pub(super) fn role(&self) -> NodeRoleLabel {
        match self.role.get() {
            0 => NodeRoleLabel::Primary,
            1 => NodeRoleLabel::Replica,
            _ => NodeRoleLabel::Unknown,
        }
    }

    /// Lag in bytes and seconds, when known.
    pub fn lag(&self) -> Option<(u64, f64)> {
        let bytes = u64::try_from(self.lag_bytes.get()).ok()?;
        Some((bytes, self.lag_seconds.get()))
    }
}

/// Process-wide metrics. `run_client` records connections, limit rejections, TLS handshakes and
/// auth failures; `connected` backs `pgsluice_clients{state}`, whose `active` and `waiting` parts
/// are the sums of the pools' `server_active` and `clients_waiting` (idle = the rest).
#[derive(Debug, Default)]
pub struct GlobalMetrics {
    /// Client connections currently open (after accept, before close).
    pub connected: Gauge,
    pub client_connections: Counter,
    pub auth_failures: Counter,
    pub tls_handshakes: Counter,
    pub client_limit_rejections: Counter,
    /// Clients moved between worker threads (at idle points, asked by the balancer).
    pub client_moves: Counter,
}

impl GlobalMetrics {
    /// Counts an accepted client connection, in `connected` until
    /// [`GlobalMetrics::client_disconnected`].
    pub fn client_connected(&self) {
        self.client_connections.inc();
        self.connected.inc();
    }

    /// Uncounts a client counted by [`GlobalMetrics::client_connected`].
    pub fn client_disconnected(&self) {
        self.connected.dec();
    }
}

/// One worker thread, published by the app's balancer once per interval (every
/// `limits.balance_interval`, or every second while balancing is off).
#[derive(Debug)]
pub struct WorkerMetrics {
    /// `worker=".."`.
    pub(super) labels: String,
    /// Clients the worker serves.
    pub clients: Gauge,
    /// Share of one core the worker's thread used over the last interval; negative until
    /// measured (not rendered).
    pub cpu: FloatGauge,
}

impl WorkerMetrics {
    pub(super) fn new(index: usize) -> WorkerMetrics {
        let cpu = FloatGauge::default();
        cpu.set(-1.0);
        WorkerMetrics {
            labels: format!("worker=\"{index}\""),
            clients: Gauge::default(),
            cpu,
        }
    }
}

//! Client sessions: the task that owns one client connection from the first byte to the last:
//! startup and TLS, authentication, getting a server connection, relaying, and handing it back.
//! Also the per-config [`Generation`] and the process-wide [`Shared`] handles sessions work from.

pub mod auth;
pub mod cancel;
mod client;
mod console;
pub mod deadline;
mod error;
pub mod exchange;
mod flight;
pub mod limits;
mod moving;
pub mod params;
mod pins;
mod pipe;
pub mod placement;
pub mod relay;
mod retry;
mod routing;
pub mod startup;
pub mod statements;
mod task;
mod transaction;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

pub use error::ClientError;
pub use moving::MovedClient;
pub use task::run_client;

use crate::admin::{ClientRegistry, Control};
use crate::config::{Config, NodeRole};
use crate::metrics::{DatabaseMetrics, Metrics};
use crate::net::{ClientTlsAcceptor, ServerTlsConnector};
use crate::pool::PoolSet;
use crate::topology::{
    ClusterSnapshot, Freshness, Health, NodeId, NodeState, Role, TopologyHandle,
};
use auth::AuthTable;
use cancel::CancelRegistry;

/// Everything built from one configuration. Sessions load it once when they start; a reload builds a
/// new one and swaps it in, so a session never sees half of an old config and half of a new one.
#[derive(Debug)]
pub struct Generation {
    pub config: Config,
    pub pools: PoolSet,
    pub auth: AuthTable,
    /// Live topology per database, updated by health checks.
    pub topology: HashMap<String, TopologyHandle>,
    /// Read balancing state per database.
    pub balancers: HashMap<String, Arc<crate::router::Balancer>>,
    /// Consistency key → last commit LSN per database, shared by all its sessions (none when
    /// `routing.consistency_keys_capacity` is 0). A reload keeps them (see
    /// [`Generation::keep_consistency_keys`]).
    pub consistency_keys: HashMap<String, Arc<crate::router::ConsistencyKeys>>,
    pub client_tls: Option<ClientTlsAcceptor>,
    pub server_tls: ServerTlsConnector,
    /// The process's metrics registry (the same one across reloads).
    pub metrics: Arc<Metrics>,
    /// Routing and error metrics per configured database, resolved once (record with
    /// `database_metrics[name].route(..)`).
    pub database_metrics: HashMap<String, Arc<DatabaseMetrics>>,
    /// Routing settings per database and user, shared by their clients.
    pub(crate) routing: routing::RoutingTable,
    /// Clients per database and user, for their `max_client_conn` (carried across reloads with
    /// [`limits::ClientLimits::inherit`]).
    pub client_limits: limits::ClientLimits,
}

/// Why a configuration could not be turned into a running generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("client TLS: {0}")]
    ClientTls(crate::net::NetError),
    #[error("server TLS: {0}")]
    ServerTls(crate::net::NetError),
    #[error("credentials: {0}")]
    Credentials(String),
}

impl Generation {
    /// Loads TLS material, prepares credentials and builds the pools (opening no connection yet),
    /// recording into a registry of its own (tests; the app uses [`Generation::build_with_metrics`]).
    pub fn build(config: Config) -> Result<Generation, GenerationError> {
        Generation::build_with_metrics(config, Metrics::new())
    }

    /// Like [`Generation::build`], recording into `metrics`, which outlives the generation.
    pub fn build_with_metrics(
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Result<Generation, GenerationError> {
        Generation::build_from(config, metrics, None)
    }

    /// The generation a reload builds: like [`Generation::build_with_metrics`] with `previous`'s
    /// registry, keeping `previous`'s pools (and their idle server connections) that did not
    /// change, as long as the server TLS settings did not change either.
    pub fn build_after(
        config: Config,
        previous: &Generation,
    ) -> Result<Generation, GenerationError> {
        let reuse = (previous.config.server_tls == config.server_tls).then_some(&previous.pools);
        Generation::build_from(config, previous.metrics.clone(), reuse)
    }

    fn build_from(
        config: Config,
        metrics: Arc<Metrics>,
        previous: Option<&PoolSet>,
    ) -> Result<Generation, GenerationError> {
        let client_tls = match (&config.client_tls.cert_file, &config.client_tls.key_file) {
            (Some(cert), Some(key)) => {
                Some(ClientTlsAcceptor::from_files(cert, key).map_err(GenerationError::ClientTls)?)
            }
            _ => None,
        };
        let server_tls =
            ServerTlsConnector::new(&config.server_tls).map_err(GenerationError::ServerTls)?;
        let auth = AuthTable::build(&config).map_err(GenerationError::Credentials)?;
        let pools = PoolSet::build_reusing(&config, &server_tls, &metrics, previous);
        let database_metrics = config
            .databases
            .iter()
            .map(|db| (db.name.clone(), metrics.database(&db.name)))
            .collect();
        let balancers = config
            .databases
            .iter()
            .map(|db| {
                (
                    db.name.clone(),
                    Arc::new(crate::router::Balancer::new(&db.nodes)),
                )
            })
            .collect();
        let topology = config
            .databases
            .iter()
            .map(|db| {
                (
                    db.name.clone(),
                    Arc::new(ArcSwap::from_pointee(initial_topology(db))),
                )
            })
            .collect();
        let capacity = config.routing.consistency_keys_capacity;
        let consistency_keys = config
            .databases
            .iter()
            .filter(|_| capacity > 0)
            .map(|db| {
                let keys = crate::router::ConsistencyKeys::new(capacity);
                (db.name.clone(), Arc::new(keys))
            })
            .collect();
        let client_limits = limits::ClientLimits::build(&config);
        let routing = routing::RoutingTable::build(&config);
        Ok(Generation {
            client_limits,
            routing,
            consistency_keys,
            config,
            pools,
            auth,
            topology,
            client_tls,
            server_tls,
            metrics,
            database_metrics,
            balancers,
        })
    }
}

impl Generation {
    /// Takes over the consistency keys of `old` for databases of the same name when the
    /// capacity did not change, so a reload does not forget where keys' writes are.
    pub fn keep_consistency_keys(&mut self, old: &Generation) {
        for (name, keys) in self.consistency_keys.iter_mut() {
            if let Some(previous) = old.consistency_keys.get(name) {
                if previous.capacity() == keys.capacity() {
                    *keys = previous.clone();
                }
            }
        }
    }
}

/// The topology as configured, before any health check has run.
pub fn initial_topology(db: &crate::config::DatabaseConfig) -> ClusterSnapshot {
    let nodes = db
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| NodeState {
            id: NodeId(i),
            name: node.display_name(),
            host: node.host.clone(),
            port: node.port,
            role: match node.role {
                NodeRole::Primary => Role::Primary,
                NodeRole::Replica => Role::Replica,
                NodeRole::Auto => Role::Unknown,
            },
            health: Health::Unknown,
            lsn: None,
            lag: None,
            freshness: Freshness::Fresh,
        })
        .collect();
    ClusterSnapshot { nodes }
}

/// Distinct statements kept proxy-wide before unused ones are forgotten.
const STATEMENT_CACHE_CAPACITY: usize = 100_000;

/// Process-wide handles every client task uses.
#[derive(Debug)]
pub struct Shared {
    pub generation: ArcSwap<Generation>,
    pub cancels: CancelRegistry,
    /// Connected clients (after accept, before close).
    pub clients: AtomicUsize,
    /// Fired when the proxy starts draining (stopped accepting), for tasks other than sessions.
    pub draining: CancellationToken,
    /// Set when the proxy starts draining, then every client is woken
    /// ([`ClientRegistry::wake_all`]): transaction-pooled clients finish the transaction they are
    /// in and are closed with 57P01 when next idle; session-pooled ones at their next idle point.
    pub drain_started: std::sync::atomic::AtomicBool,
    /// Named prepared statements of transaction-pooled clients, proxy-wide.
    pub statements: statements::StatementCache,
    /// Connected clients as the admin console lists them.
    pub registry: ClientRegistry,
    /// Requests from the admin console to the app (reload, shutdown).
    pub control: Control,
    /// Which worker thread serves which client, and the moves the app's balancer asks for.
    pub placement: placement::Placement,
}

impl Shared {
    pub fn new(generation: Generation) -> Shared {
        let workers = generation.config.limits.worker_count();
        Shared {
            placement: placement::Placement::new(workers),
            generation: ArcSwap::from_pointee(generation),
            cancels: CancelRegistry::default(),
            clients: AtomicUsize::new(0),
            draining: CancellationToken::new(),
            drain_started: std::sync::atomic::AtomicBool::new(false),
            statements: statements::StatementCache::new(STATEMENT_CACHE_CAPACITY),
            registry: ClientRegistry::default(),
            control: Control::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::WorkerId;
    use tokio::net::TcpStream;

    /// The task of an idle client is mostly its future: keep it small (idle clients in about
    /// 1 KiB each). Tokio allocates a task as its future plus about 112 bytes, rounded up to
    /// 128: at most 272 bytes here keeps the task at 384. Bytes, not time: the layout is
    /// deterministic for a given compiler.
    #[tokio::test]
    async fn a_client_task_future_stays_small() {
        let yaml = r#"
users: [ { name: u, auth_method: trust } ]
databases: [ { name: d, nodes: [ { host: 127.0.0.1, role: primary } ] } ]
"#;
        let config = crate::config::load_str(yaml, &|_| None).unwrap();
        let shared = Arc::new(Shared::new(Generation::build(config).unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = tcp.local_addr().unwrap();
        let task = run_client(shared, tcp, peer, WorkerId(0));
        let size = std::mem::size_of_val(&task);
        eprintln!("run_client future: {size} bytes");
        assert!(size <= 272, "run_client future grew to {size} bytes");
    }
}

//! Client sessions: the task that owns one client connection from the first byte to the last:
//! startup and TLS, authentication, getting a server connection, relaying, and handing it back.
//! Also the per-config [`Generation`] and the process-wide [`Shared`] handles sessions work from.

pub mod auth;
pub mod cancel;
mod client;
mod console;
mod error;
pub mod exchange;
pub mod params;
mod pins;
pub mod relay;
mod routing;
pub mod startup;
pub mod statements;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use error::ClientError;

use crate::admin::{ClientRegistry, Control};
use crate::config::{Config, NodeRole};
use crate::metrics::{DatabaseMetrics, GlobalMetrics, Metrics};
use crate::net::{ClientTlsAcceptor, ServerTlsConnector, Stream, WorkerId};
use crate::pool::PoolSet;
use crate::protocol::backend;
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
    pub client_tls: Option<ClientTlsAcceptor>,
    pub server_tls: ServerTlsConnector,
    /// The process's metrics registry (the same one across reloads).
    pub metrics: Arc<Metrics>,
    /// Routing and error metrics per configured database, resolved once (record with
    /// `database_metrics[name].route(..)`).
    pub database_metrics: HashMap<String, Arc<DatabaseMetrics>>,
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
        Ok(Generation {
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
    /// Fired when sessions must end now (shutdown timeout reached). Each session stops on a child
    /// token of it (see [`ClientRegistry::register`]), which admin KILL cancels alone.
    pub stop: CancellationToken,
    /// Fired when the proxy starts draining (stopped accepting). Transaction-pooled clients then
    /// finish the transaction they are in and are closed with 57P01 when next idle.
    pub draining: CancellationToken,
    /// Named prepared statements of transaction-pooled clients, proxy-wide.
    pub statements: statements::StatementCache,
    /// Connected clients as the admin console lists them.
    pub registry: ClientRegistry,
    /// Requests from the admin console to the app (reload, shutdown).
    pub control: Control,
}

impl Shared {
    pub fn new(generation: Generation) -> Shared {
        Shared {
            generation: ArcSwap::from_pointee(generation),
            cancels: CancelRegistry::default(),
            clients: AtomicUsize::new(0),
            stop: CancellationToken::new(),
            draining: CancellationToken::new(),
            statements: statements::StatementCache::new(STATEMENT_CACHE_CAPACITY),
            registry: ClientRegistry::default(),
            control: Control::default(),
        }
    }
}

/// Counts a connected client for `max_client_conn`; uncounted on drop.
struct ClientSlot<'a>(&'a AtomicUsize);

impl<'a> ClientSlot<'a> {
    fn take(counter: &'a AtomicUsize) -> (ClientSlot<'a>, usize) {
        let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
        (ClientSlot(counter), now)
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client connection until it ends, on the runtime of `worker`. Never panics on
/// client input; every failure the client can be told about is sent as an ErrorResponse with a
/// SQLSTATE before closing.
pub async fn run_client(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, worker: WorkerId) {
    let (_slot, connected) = ClientSlot::take(&shared.clients);
    let generation = shared.generation.load_full();
    let global = generation.metrics.global();
    let _counted = global.client_connected();
    let limits = &generation.config.limits;
    let started = Instant::now();
    let opening = tokio::time::timeout(
        limits.startup_timeout,
        startup::open(
            tcp,
            generation.client_tls.as_ref(),
            generation.config.client_tls.mode,
        ),
    )
    .await;
    let (mut stream, startup, buf) = match opening {
        Err(_) => {
            tracing::info!(%peer, "client dropped: no startup packet within startup_timeout");
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "client startup failed");
            return;
        }
        Ok(Ok(startup::Opening::Cancel(key))) => {
            shared.cancels.cancel(key).await;
            return;
        }
        Ok(Ok(startup::Opening::Session {
            stream,
            startup,
            buf,
        })) => (stream, startup, buf),
    };
    if stream.is_tls() {
        global.tls_handshakes.inc();
    }
    let user = startup.user().unwrap_or_default().to_string();
    let database = startup.database().unwrap_or_default().to_string();
    let client = shared
        .registry
        .register(peer, &user, &database, &shared.stop);
    let result = if connected > limits.max_client_conn {
        Err(ClientError::TooManyClients {
            max: limits.max_client_conn,
        })
    } else {
        let session = client::Session {
            shared: &shared,
            generation: &generation,
            user: &user,
            database: &database,
            peer,
            worker,
            client: &client,
        };
        match session.serve(&mut stream, &startup, buf, started).await {
            Err(ClientError::ShuttingDown) if client.killed() => Err(ClientError::Killed),
            other => other,
        }
    };
    match result {
        Ok(end) => {
            tracing::info!(%peer, %user, %database, ?end, elapsed = ?started.elapsed(), "client disconnected")
        }
        Err(e) => {
            match e.repeat_key(peer.ip(), &user) {
                None => {
                    tracing::info!(%peer, %user, %database, error = %e, "client session ended with error")
                }
                Some(key) => {
                    if let Some(suppressed) = crate::logging::repeats().allow(&key) {
                        tracing::warn!(%peer, %user, %database, error = %e, suppressed, "client session ended with error (repeats logged once per 10 s)");
                    }
                }
            }
            let db_metrics = generation
                .database_metrics
                .get(&database)
                .unwrap_or(generation.metrics.unknown_database());
            record_error(global, db_metrics, &e);
            report(&mut stream, &e).await;
        }
    }
}

/// Counts a session-ending error: auth failures, limit rejections, and its SQLSTATE class.
fn record_error(global: &GlobalMetrics, database: &DatabaseMetrics, error: &ClientError) {
    match error {
        ClientError::AuthFailed { .. }
        | ClientError::Auth(crate::auth::AuthError::WrongPassword) => global.auth_failures.inc(),
        ClientError::TooManyClients { .. } => global.client_limit_rejections.inc(),
        _ => {}
    }
    if let Some(code) = error.fields().as_ref().and_then(|f| f.code()) {
        database.error(code);
    }
}

/// Sends `error` to the client if it can be told, then closes gracefully.
async fn report(stream: &mut Stream, error: &ClientError) {
    if let Some(fields) = error.fields() {
        let mut out = BytesMut::new();
        backend::encode_error(&fields, &mut out);
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.shutdown().await;
}

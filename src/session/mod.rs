//! Client sessions: the task that owns one client connection from the first byte to the last:
//! startup and TLS, authentication, getting a server connection, relaying, and handing it back.
//! Also the per-config [`Generation`] and the process-wide [`Shared`] handles sessions work from.

pub mod auth;
pub mod cancel;
mod error;
pub mod params;
pub mod relay;
pub mod startup;

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

use crate::config::{Config, NodeRole};
use crate::net::{ClientTlsAcceptor, ServerTlsConnector, Stream, WorkerId};
use crate::pool::{PoolSet, PooledServer};
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::startup::StartupMessage;
use crate::protocol::Framer;
use crate::router::{self, Intent};
use crate::server::ServerState;
use crate::topology::{ClusterSnapshot, Health, NodeId, NodeState, Role};
use auth::AuthTable;
use cancel::{CancelRegistry, CancelTarget};
use relay::RelayEnd;

/// Everything built from one configuration. Sessions load it once when they start; a reload builds a
/// new one and swaps it in, so a session never sees half of an old config and half of a new one.
#[derive(Debug)]
pub struct Generation {
    pub config: Config,
    pub pools: PoolSet,
    pub auth: AuthTable,
    pub topology: HashMap<String, Arc<ClusterSnapshot>>,
    pub client_tls: Option<ClientTlsAcceptor>,
    pub server_tls: ServerTlsConnector,
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
    #[error("{0}: pool mode transaction is not implemented yet; use session")]
    TransactionModeUnsupported(String),
}

impl Generation {
    /// Loads TLS material, prepares credentials and builds the pools (opening no connection yet).
    pub fn build(config: Config) -> Result<Generation, GenerationError> {
        let client_tls = match (&config.client_tls.cert_file, &config.client_tls.key_file) {
            (Some(cert), Some(key)) => {
                Some(ClientTlsAcceptor::from_files(cert, key).map_err(GenerationError::ClientTls)?)
            }
            _ => None,
        };
        let server_tls =
            ServerTlsConnector::new(&config.server_tls).map_err(GenerationError::ServerTls)?;
        refuse_transaction_mode(&config)?;
        let auth = AuthTable::build(&config).map_err(GenerationError::Credentials)?;
        let pools = PoolSet::build(&config, &server_tls);
        let topology = config
            .databases
            .iter()
            .map(|db| (db.name.clone(), Arc::new(initial_topology(db))))
            .collect();
        Ok(Generation {
            config,
            pools,
            auth,
            topology,
            client_tls,
            server_tls,
        })
    }
}

/// Transaction pooling is not built yet; refusing it beats silently pooling by session.
fn refuse_transaction_mode(config: &Config) -> Result<(), GenerationError> {
    for database in &config.databases {
        for user in &config.users {
            if config.pool_settings(database, user).mode == crate::config::PoolMode::Transaction {
                return Err(GenerationError::TransactionModeUnsupported(format!(
                    "database {} / user {}",
                    database.name, user.name
                )));
            }
        }
    }
    Ok(())
}

/// The topology as configured, before any health check has run.
fn initial_topology(db: &crate::config::DatabaseConfig) -> ClusterSnapshot {
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
        })
        .collect();
    ClusterSnapshot { nodes }
}

/// Process-wide handles every client task uses.
#[derive(Debug)]
pub struct Shared {
    pub generation: ArcSwap<Generation>,
    pub cancels: CancelRegistry,
    /// Connected clients (after accept, before close).
    pub clients: AtomicUsize,
    /// Fired when sessions must end now (shutdown timeout reached).
    pub stop: CancellationToken,
}

impl Shared {
    pub fn new(generation: Generation) -> Shared {
        Shared {
            generation: ArcSwap::from_pointee(generation),
            cancels: CancelRegistry::default(),
            clients: AtomicUsize::new(0),
            stop: CancellationToken::new(),
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
    let user = startup.user().unwrap_or_default().to_string();
    let database = startup.database().unwrap_or_default().to_string();
    let result = if connected > limits.max_client_conn {
        Err(ClientError::TooManyClients {
            max: limits.max_client_conn,
        })
    } else {
        let session = Session {
            shared: &shared,
            generation: &generation,
            user: &user,
            database: &database,
            peer,
            worker,
        };
        session.serve(&mut stream, &startup, buf, started).await
    };
    match result {
        Ok(end) => {
            tracing::info!(%peer, %user, %database, ?end, elapsed = ?started.elapsed(), "client disconnected")
        }
        Err(e) => {
            tracing::info!(%peer, %user, %database, error = %e, "client session ended with error");
            report(&mut stream, &e).await;
        }
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

/// One client session after its StartupMessage.
struct Session<'a> {
    shared: &'a Shared,
    generation: &'a Generation,
    user: &'a str,
    database: &'a str,
    peer: SocketAddr,
    worker: WorkerId,
}

impl Session<'_> {
    async fn serve(
        &self,
        stream: &mut Stream,
        startup: &StartupMessage,
        mut buf: BytesMut,
        started: Instant,
    ) -> Result<RelayEnd, ClientError> {
        let config = &self.generation.config;
        let framer = Framer::new(config.limits.max_message_size);
        let login = self.login(stream, startup, &mut buf, &framer);
        let remaining = config
            .limits
            .startup_timeout
            .saturating_sub(started.elapsed());
        let settings = tokio::time::timeout(remaining, login)
            .await
            .map_err(|_| ClientError::StartupTimeout)??;
        let mut out = BytesMut::new();
        backend::encode_auth(&backend::Authentication::Ok, &mut out);
        stream.write_all(&out).await.map_err(ClientError::Io)?;

        let mut server = self.checkout().await?;
        if let Some(sql) = params::set_statements(&settings, server.conn().params()) {
            // A bad value (e.g. an unknown time zone) fails the login, as it would on Postgres;
            // the server connection itself is fine and goes back to the pool.
            if let Err(e) = server
                .conn()
                .run_query(&sql, config.pool.checkout_timeout)
                .await
            {
                server.release(true).await;
                return Err(ClientError::Server(e));
            }
        }
        let cancel = self.shared.cancels.issue();
        let target = server.pool().connect_params();
        cancel.set_target(Some(CancelTarget {
            host: target.host.clone(),
            port: target.port,
            server_key: server.conn().backend_key(),
        }));
        out.clear();
        for (name, value) in server.conn().params() {
            backend::encode_parameter_status(name, value, &mut out);
        }
        backend::encode_backend_key_data(cancel.key(), &mut out);
        backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
        stream.write_all(&out).await.map_err(ClientError::Io)?;
        tracing::info!(peer = %self.peer, user = %self.user, database = %self.database, pool = %server.pool().name(), "client connected");

        let end = self.relay(stream, buf, &mut server, &framer).await;
        cancel.set_target(None);
        let reset = true;
        server.release(reset).await;
        end
    }

    /// Checks the database, user, startup parameters and password. Returns the settings to apply.
    async fn login(
        &self,
        stream: &mut Stream,
        startup: &StartupMessage,
        buf: &mut BytesMut,
        framer: &Framer,
    ) -> Result<Vec<(String, String)>, ClientError> {
        if self.user.is_empty() {
            return Err(ClientError::NoUser);
        }
        if startup.minor_version > 0 {
            let mut out = BytesMut::new();
            let unrecognized: Vec<&str> = startup
                .params
                .iter()
                .filter(|(k, _)| k.starts_with("_pq_."))
                .map(|(k, _)| k.as_str())
                .collect();
            backend::encode_negotiate_protocol_version(0, &unrecognized, &mut out);
            stream.write_all(&out).await.map_err(ClientError::Io)?;
        }
        if self.generation.config.database(self.database).is_none() {
            return Err(ClientError::UnknownDatabase(self.database.to_string()));
        }
        let settings = params::requested_settings(startup).map_err(ClientError::Params)?;
        let tls_cert = self.generation.client_tls.as_ref().map(|t| t.cert_der());
        auth::authenticate(
            &self.generation.auth,
            self.user,
            stream,
            buf,
            framer,
            tls_cert,
        )
        .await?;
        Ok(settings)
    }

    /// Routes (today: the primary) and checks a server connection out of that node's pool.
    async fn checkout(&self) -> Result<PooledServer, ClientError> {
        let snapshot = self
            .generation
            .topology
            .get(self.database)
            .ok_or_else(|| ClientError::UnknownDatabase(self.database.to_string()))?;
        let node = router::route(self.database, snapshot, Intent::ReadWrite)?;
        let pool = self
            .generation
            .pools
            .get(self.database, self.user, node)
            .ok_or_else(|| ClientError::UnknownDatabase(self.database.to_string()))?;
        Ok(pool.checkout(self.worker).await?)
    }

    /// Relays until the session ends; records what the relay saw on the server connection.
    async fn relay(
        &self,
        stream: &mut Stream,
        buf: BytesMut,
        server: &mut PooledServer,
        framer: &Framer,
    ) -> Result<RelayEnd, ClientError> {
        let conn = server.conn();
        let server_buf = conn.take_buffered();
        let outcome = relay::relay(
            stream,
            buf,
            conn.stream_mut(),
            server_buf,
            framer.max_message_size(),
            &self.shared.stop,
        )
        .await;
        for (name, value) in &outcome.parameters {
            conn.note_parameter(name, value);
        }
        let state = match outcome.end {
            RelayEnd::ServerGone | RelayEnd::ServerProtocol(_) => ServerState::Broken,
            _ => outcome.server_state,
        };
        conn.set_state(state);
        match outcome.end {
            RelayEnd::ServerGone => Err(ClientError::ServerLost),
            RelayEnd::ServerProtocol(e) => Err(ClientError::ServerProtocol(e)),
            RelayEnd::ClientProtocol(e) => Err(ClientError::Protocol(e)),
            RelayEnd::Shutdown => Err(ClientError::ShuttingDown),
            end => Ok(end),
        }
    }
}

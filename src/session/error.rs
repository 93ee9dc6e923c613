//! Everything that can end a client session, and how each is told to the client: SQLSTATE, severity
//! and a message an operator can act on.

use std::io;

use super::params::ParamError;
use crate::auth::AuthError;
use crate::net::{FrameReadError, NetError};
use crate::pool::PoolError;
use crate::protocol::backend::ErrorFields;
use crate::protocol::{sqlstate, ProtocolError};
use crate::router::RouteError;
use crate::server::ServerError;

/// Why a client session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client connection I/O error: {0}")]
    Io(io::Error),
    #[error("client TLS handshake failed: {0}")]
    Tls(NetError),
    #[error("client sent a malformed message: {0}")]
    Protocol(ProtocolError),
    #[error("client sent unexpected message '{}' during {phase}", char::from(*.tag))]
    UnexpectedMessage { tag: u8, phase: &'static str },
    #[error("client did not complete startup within startup_timeout")]
    StartupTimeout,
    #[error("TLS is required (client_tls.mode is require)")]
    TlsRequired,
    #[error("cleartext password authentication is refused without TLS")]
    CleartextWithoutTls,
    #[error("no user name in startup packet")]
    NoUser,
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed { user: String },
    #[error("authentication failed: {0}")]
    Auth(AuthError),
    #[error("too many client connections (max_client_conn is {max})")]
    TooManyClients { max: usize },
    #[error(transparent)]
    Params(ParamError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Server(ServerError),
    #[error("idle-in-transaction timeout (pool {pool})")]
    IdleInTransactionTimeout { pool: String },
    #[error("client idle timeout")]
    ClientIdleTimeout,
    #[error("too many client connections for {what} \"{name}\" (max_client_conn is {max})")]
    TooManyClientsFor {
        what: &'static str,
        name: String,
        max: usize,
    },
    #[error("server connection lost")]
    ServerLost,
    #[error("server sent a malformed message: {0}")]
    ServerProtocol(ProtocolError),
    #[error("pgsluice is shutting down")]
    ShuttingDown,
    #[error("terminated by an admin KILL command")]
    Killed,
    #[error("user \"{user}\" is not allowed to use the admin console")]
    NotAdmin { user: String },
}

impl From<FrameReadError> for ClientError {
    fn from(e: FrameReadError) -> Self {
        match e {
            FrameReadError::Closed => ClientError::Io(io::ErrorKind::UnexpectedEof.into()),
            FrameReadError::Io(e) => ClientError::Io(e),
            FrameReadError::Protocol(e) => ClientError::Protocol(e),
        }
    }
}

impl ClientError {
    /// For errors that repeat in bursts (a peer failing authentication, a node refusing connections),
    /// the key their log line is rate-limited under (see `logging::repeats`); `None` for the rest.
    pub fn repeat_key(&self, peer: std::net::IpAddr, user: &str) -> Option<String> {
        match self {
            ClientError::AuthFailed { .. } | ClientError::Auth(AuthError::WrongPassword) => {
                Some(format!("auth:{peer}:{user}"))
            }
            ClientError::Pool(PoolError::Connect { pool, .. }) => Some(format!("connect:{pool}")),
            _ => None,
        }
    }

    /// The ErrorResponse to send, or `None` when the client cannot be told (its socket failed).
    pub fn fields(&self) -> Option<ErrorFields> {
        let code = match self {
            ClientError::Io(_) | ClientError::Tls(_) => return None,
            ClientError::Server(ServerError::Rejected(fields) | ServerError::Query(fields)) => {
                // The server's own words (e.g. unknown role on the node, bad SET value), made fatal
                // because the session cannot continue.
                let mut fields = fields.clone();
                for (kind, value) in fields.fields.iter_mut() {
                    if *kind == b'S' || *kind == b'V' {
                        *value = "FATAL".to_string();
                    }
                }
                return Some(fields);
            }
            ClientError::Protocol(_) | ClientError::UnexpectedMessage { .. } => {
                sqlstate::PROTOCOL_VIOLATION
            }
            ClientError::StartupTimeout => sqlstate::QUERY_CANCELED,
            ClientError::TlsRequired | ClientError::CleartextWithoutTls | ClientError::NoUser => {
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION
            }
            ClientError::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            ClientError::AuthFailed { .. } => sqlstate::INVALID_PASSWORD,
            ClientError::Auth(AuthError::WrongPassword) => sqlstate::INVALID_PASSWORD,
            ClientError::Auth(_) => sqlstate::PROTOCOL_VIOLATION,
            ClientError::TooManyClients { .. } | ClientError::TooManyClientsFor { .. } => {
                sqlstate::TOO_MANY_CONNECTIONS
            }
            ClientError::IdleInTransactionTimeout { .. } => {
                sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
            }
            ClientError::ClientIdleTimeout => sqlstate::IDLE_SESSION_TIMEOUT,
            ClientError::Params(ParamError::Replication) => sqlstate::FEATURE_NOT_SUPPORTED,
            ClientError::Params(_) => sqlstate::PROTOCOL_VIOLATION,
            ClientError::Route(_) => sqlstate::CONNECTION_FAILURE,
            ClientError::Pool(PoolError::CheckoutTimeout { .. }) => sqlstate::TOO_MANY_CONNECTIONS,
            ClientError::Pool(PoolError::Closed { .. }) => sqlstate::ADMIN_SHUTDOWN,
            ClientError::Pool(PoolError::Paused { .. }) => sqlstate::CANNOT_CONNECT_NOW,
            ClientError::Pool(PoolError::Connect { .. }) => sqlstate::CONNECTION_FAILURE,
            ClientError::Server(_) | ClientError::ServerLost | ClientError::ServerProtocol(_) => {
                sqlstate::CONNECTION_FAILURE
            }
            ClientError::ShuttingDown | ClientError::Killed => sqlstate::ADMIN_SHUTDOWN,
            ClientError::NotAdmin { .. } => sqlstate::INSUFFICIENT_PRIVILEGE,
        };
        let fields = ErrorFields::new("FATAL", code, &self.to_string());
        Some(match self {
            ClientError::TlsRequired => {
                fields.with_hint("Connect with sslmode=require (or verify-full).")
            }
            ClientError::CleartextWithoutTls => fields.with_hint(
                "Connect with TLS, or use scram-sha-256; allow_cleartext_without_tls permits it.",
            ),
            ClientError::Pool(PoolError::CheckoutTimeout { .. }) => fields
                .with_hint("Raise pool.size or pool.checkout_timeout, or shorten transactions."),
            _ => fields,
        })
    }
}

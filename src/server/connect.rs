//! Opening a server connection: TCP with a timeout, TLS negotiation per `server_tls.mode`, the startup
//! message, authentication (SCRAM-SHA-256, md5, cleartext, trust), then ParameterStatus and
//! BackendKeyData up to the first ReadyForQuery. Also the one-shot cancel request.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ServerConnection, ServerError, ServerState};
use crate::config::ServerTlsMode;
use crate::net::{self, read_frame, ServerTlsConnector, Stream, WorkerId};
use crate::protocol::backend::{Authentication, BackendMessage};
use crate::protocol::startup::{self, CancelKey};
use crate::protocol::{frontend, Framer};

/// Everything needed to open a connection to one node as one role.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub tls: ServerTlsConnector,
    pub connect_timeout: Duration,
    pub max_message_size: usize,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl ConnectParams {
    /// How to reach `node` of `database` as `user`'s server-side login (what pools and health
    /// checkers both connect with), giving up after `connect_timeout`.
    pub fn for_node(
        config: &crate::config::Config,
        database: &crate::config::DatabaseConfig,
        user: &crate::config::UserConfig,
        node: &crate::config::NodeConfig,
        tls: &ServerTlsConnector,
        connect_timeout: Duration,
    ) -> ConnectParams {
        ConnectParams {
            host: node.host.clone(),
            port: node.port,
            user: user.server_user().to_string(),
            password: user.server_password().map(str::to_string),
            database: database.server_database().to_string(),
            tls: tls.clone(),
            connect_timeout,
            max_message_size: config.limits.max_message_size,
        }
    }

    /// Opens, authenticates and readies a connection on the runtime of `worker` (the caller's);
    /// the whole exchange is bounded by `connect_timeout`.
    pub async fn connect(&self, worker: WorkerId) -> Result<ServerConnection, ServerError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner(worker)).await {
            Ok(result) => result,
            Err(_) => Err(ServerError::Timeout(self.connect_timeout)),
        }
    }

    async fn connect_inner(&self, worker: WorkerId) -> Result<ServerConnection, ServerError> {
        let tcp = net::connect(&self.host, self.port, self.connect_timeout).await?;
        let mut stream = self.negotiate_tls(tcp).await?;
        let mut out = BytesMut::new();
        startup::encode_startup(
            &[("user", &self.user), ("database", &self.database)],
            &mut out,
        );
        stream.write_all(&out).await?;
        let framer = Framer::new(self.max_message_size);
        let mut buf = BytesMut::new();
        self.authenticate(&mut stream, &mut buf, &framer).await?;
        let mut params = Vec::new();
        let mut backend_key = CancelKey {
            process_id: 0,
            secret_key: 0,
        };
        loop {
            let frame = read_frame(&mut stream, &mut buf, &framer).await?;
            match BackendMessage::decode(&frame)? {
                BackendMessage::ParameterStatus { name, value } => params.push((name, value)),
                BackendMessage::BackendKeyData(key) => backend_key = key,
                BackendMessage::ReadyForQuery { .. } => break,
                BackendMessage::ErrorResponse(fields) => return Err(ServerError::Rejected(fields)),
                BackendMessage::NoticeResponse(_)
                | BackendMessage::NegotiateProtocolVersion { .. } => {}
                _ => return Err(ServerError::Unexpected(frame.tag())),
            }
        }
        let now = Instant::now();
        Ok(ServerConnection {
            stream,
            read_buf: buf,
            framer,
            params,
            backend_key,
            state: ServerState::Idle,
            created: now,
            last_used: now,
            home: worker,
            applied: Vec::new(),
            prepared: super::PreparedSet::default(),
        })
    }

    async fn negotiate_tls(&self, mut tcp: tokio::net::TcpStream) -> Result<Stream, ServerError> {
        if *self.tls.mode() == ServerTlsMode::Disable {
            return Ok(Stream::plain(tcp));
        }
        let mut out = BytesMut::new();
        startup::encode_ssl_request(&mut out);
        tcp.write_all(&out).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => Ok(self.tls.connect(tcp, &self.host).await?),
            b'N' if *self.tls.mode() == ServerTlsMode::Prefer => Ok(Stream::plain(tcp)),
            b'N' => Err(ServerError::TlsRefused),
            other => Err(ServerError::Unexpected(other)),
        }
    }

    async fn authenticate(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        framer: &Framer,
    ) -> Result<(), ServerError> {
        let mut scram: Option<ScramSha256> = None;
        let mut out = BytesMut::new();
        loop {
            let frame = read_frame(stream, buf, framer).await?;
            let auth = match BackendMessage::decode(&frame)? {
                BackendMessage::Authentication(auth) => auth,
                BackendMessage::ErrorResponse(fields) => return Err(ServerError::Rejected(fields)),
                BackendMessage::NoticeResponse(_) => continue,
                _ => return Err(ServerError::Unexpected(frame.tag())),
            };
            out.clear();
            match auth {
                Authentication::Ok => return Ok(()),
                Authentication::CleartextPassword => {
                    frontend::encode_password(self.password()?, &mut out)
                }
                Authentication::Md5Password { salt } => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        self.user.as_bytes(),
                        self.password()?.as_bytes(),
                        salt,
                    );
                    frontend::encode_password(&hash, &mut out);
                }
                Authentication::Sasl { mechanisms } => {
                    if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(ServerError::UnsupportedAuth("SASL (no SCRAM-SHA-256)"));
                    }
                    // "n": we do not use channel binding, which is valid whatever the server offers.
                    let client = ScramSha256::new(
                        self.password()?.as_bytes(),
                        ChannelBinding::unsupported(),
                    );
                    frontend::encode_sasl_initial_response(
                        "SCRAM-SHA-256",
                        client.message(),
                        &mut out,
                    );
                    scram = Some(client);
                }
                Authentication::SaslContinue(data) => {
                    let client = scram.as_mut().ok_or(ServerError::Unexpected(b'R'))?;
                    client
                        .update(&data)
                        .map_err(|e| ServerError::Scram(e.to_string()))?;
                    frontend::encode_sasl_response(client.message(), &mut out);
                }
                Authentication::SaslFinal(data) => {
                    let client = scram.as_mut().ok_or(ServerError::Unexpected(b'R'))?;
                    client
                        .finish(&data)
                        .map_err(|e| ServerError::Scram(e.to_string()))?;
                    continue;
                }
                Authentication::KerberosV5 => return Err(ServerError::UnsupportedAuth("Kerberos")),
                Authentication::Gss | Authentication::GssContinue(_) => {
                    return Err(ServerError::UnsupportedAuth("GSSAPI"))
                }
                Authentication::Sspi => return Err(ServerError::UnsupportedAuth("SSPI")),
            }
            stream.write_all(&out).await?;
        }
    }

    fn password(&self) -> Result<&str, ServerError> {
        self.password
            .as_deref()
            .ok_or(ServerError::PasswordRequired)
    }
}

/// Sends a CancelRequest for `key` to a node on a fresh plain connection, as libpq does, and waits
/// briefly for the server to close it.
pub async fn send_cancel(
    host: &str,
    port: u16,
    key: CancelKey,
    timeout: Duration,
) -> Result<(), ServerError> {
    let work = async {
        let mut tcp = net::connect(host, port, timeout).await?;
        let mut out = BytesMut::new();
        startup::encode_cancel_request(key, &mut out);
        tcp.write_all(&out).await?;
        let mut sink = [0u8; 16];
        let _ = tcp.read(&mut sink).await;
        Ok::<(), ServerError>(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ServerError::Timeout(timeout))?
}

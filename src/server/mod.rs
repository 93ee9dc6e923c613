//! One server connection: connect (TCP, TLS, startup, authentication), the parameters and cancel key
//! the server reported, its transaction state, and the few queries the proxy runs itself (reset, SET).

mod connect;
mod prepared;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

pub use connect::{send_cancel, ConnectParams};
pub use prepared::PreparedSet;

use crate::net::{read_frame, FrameReadError, NetError, Stream, WorkerId};
use crate::protocol::backend::{BackendMessage, ErrorFields, TransactionStatus};
use crate::protocol::startup::CancelKey;
use crate::protocol::{frontend, Framer, ProtocolError};

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("server refused TLS but server_tls.mode requires it")]
    TlsRefused,
    #[error("server connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("server sent a malformed message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("server closed the connection")]
    Closed,
    #[error("server rejected the connection: {}", .0.message().unwrap_or("no message"))]
    Rejected(ErrorFields),
    #[error("server requested {0} authentication, which pgsluice does not support")]
    UnsupportedAuth(&'static str),
    #[error(
        "server requested a password but none is configured for this user (set server_password)"
    )]
    PasswordRequired,
    #[error("SCRAM authentication with the server failed: {0}")]
    Scram(String),
    #[error("server sent unexpected message '{}'", char::from(*.0))]
    Unexpected(u8),
    #[error("query failed on server: {}", .0.message().unwrap_or("no message"))]
    Query(ErrorFields),
    #[error("server did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<FrameReadError> for ServerError {
    fn from(e: FrameReadError) -> Self {
        match e {
            FrameReadError::Closed => ServerError::Closed,
            FrameReadError::Io(e) => ServerError::Io(e),
            FrameReadError::Protocol(e) => ServerError::Protocol(e),
        }
    }
}

/// Where a server connection stands, as far as handing it to a client goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Ready for a new client: last ReadyForQuery said idle and nothing is in flight.
    Idle,
    /// Between statements of an open transaction.
    InTransaction,
    /// In a transaction that failed; only ROLLBACK helps.
    FailedTransaction,
    /// Requests are in flight or results unread: the connection cannot be reused as it is.
    Busy,
    /// The socket or protocol broke; the connection must be closed.
    Broken,
}

/// A connection to one Postgres node, authenticated and ready.
#[derive(Debug)]
pub struct ServerConnection {
    stream: Stream,
    read_buf: BytesMut,
    framer: Framer,
    params: Vec<(String, String)>,
    backend_key: CancelKey,
    state: ServerState,
    created: Instant,
    last_used: Instant,
    home: WorkerId,
    /// Settings the proxy SET on this connection for a client (beyond the startup defaults).
    applied: Vec<(String, String)>,
    /// Proxy-named statements prepared here (transaction pooling).
    prepared: PreparedSet,
}

impl ServerConnection {
    /// The parameters the server reported (ParameterStatus), latest value per name.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Records a ParameterStatus seen while relaying.
    pub fn note_parameter(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
    }

    /// Settings the proxy applied for the client that last used this connection.
    pub fn applied_settings(&self) -> &[(String, String)] {
        &self.applied
    }

    /// Records the settings now in force (after a SET/RESET the proxy ran, or a reset query).
    pub fn set_applied_settings(&mut self, settings: Vec<(String, String)>) {
        self.applied = settings;
    }

    /// The socket and the prepared set at once, for a relay that renames statements.
    pub fn parts_mut(&mut self) -> (&mut Stream, &mut PreparedSet) {
        (&mut self.stream, &mut self.prepared)
    }

    /// The proxy-named statements prepared on this connection.
    pub fn prepared_mut(&mut self) -> &mut PreparedSet {
        &mut self.prepared
    }

    /// The server's BackendKeyData, for forwarding cancel requests.
    pub fn backend_key(&self) -> CancelKey {
        self.backend_key
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Sets the state observed by whoever relayed traffic on this connection.
    pub fn set_state(&mut self, state: ServerState) {
        self.state = state;
        self.last_used = Instant::now();
    }

    /// Age since connect.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Time since it was last handed back.
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// Makes `worker` (the caller's runtime) drive this connection's socket, re-registering it if it
    /// was opened or last used on another worker. Must run inside that worker's runtime.
    pub fn move_to(&mut self, worker: WorkerId) -> std::io::Result<()> {
        if self.home != worker {
            self.stream.rebind()?;
            self.home = worker;
        }
        Ok(())
    }

    /// The socket, for relaying. Bytes read by the proxy itself and not yet consumed are in
    /// [`ServerConnection::take_buffered`].
    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Bytes already read from the server but not consumed (normally empty between requests).
    /// The buffer travels with the connection, so relaying does not allocate one per checkout.
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.read_buf)
    }

    /// Hands the read buffer back after relaying (its contents are unconsumed server bytes).
    pub fn restore_buffer(&mut self, buf: BytesMut) {
        self.read_buf = buf;
    }

    /// The worker whose reactor drives this connection's socket.
    pub fn home(&self) -> WorkerId {
        self.home
    }

    /// Whether the connection still looks usable without waiting: an idle server sends nothing, so any
    /// readable byte or EOF means it was closed or is reporting an error (e.g. admin shutdown).
    pub fn check_alive(&mut self) -> bool {
        if self.state != ServerState::Idle || !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match tokio::io::AsyncRead::poll_read(
            std::pin::Pin::new(&mut self.stream),
            &mut cx,
            &mut buf,
        ) {
            std::task::Poll::Pending => true,
            std::task::Poll::Ready(_) => {
                self.state = ServerState::Broken;
                false
            }
        }
    }

    /// Runs SQL the proxy needs (reset, SET), reading to ReadyForQuery. Rows are discarded;
    /// ParameterStatus updates are recorded. Fails if the server reports an error.
    pub async fn run_query(&mut self, sql: &str, timeout: Duration) -> Result<(), ServerError> {
        match tokio::time::timeout(timeout, self.run_query_inner(sql, None)).await {
            Ok(result) => result,
            Err(_) => {
                self.state = ServerState::Broken;
                Err(ServerError::Timeout(timeout))
            }
        }
    }

    /// Runs `sql` (simple protocol) and returns its rows as text (NULL as `None`), bounded by
    /// `timeout` like [`ServerConnection::run_query`].
    pub async fn query_rows(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut rows = Vec::new();
        match tokio::time::timeout(timeout, self.run_query_inner(sql, Some(&mut rows))).await {
            Ok(result) => result.map(|()| rows),
            Err(_) => {
                self.state = ServerState::Broken;
                Err(ServerError::Timeout(timeout))
            }
        }
    }

    async fn run_query_inner(
        &mut self,
        sql: &str,
        mut rows: Option<&mut Vec<Vec<Option<String>>>>,
    ) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        frontend::encode_query(sql, &mut out);
        self.state = ServerState::Busy;
        if let Err(e) = self.stream.write_all(&out).await {
            self.state = ServerState::Broken;
            return Err(e.into());
        }
        let mut failure = None;
        loop {
            let frame = match read_frame(&mut self.stream, &mut self.read_buf, &self.framer).await {
                Ok(frame) => frame,
                Err(e) => {
                    self.state = ServerState::Broken;
                    return Err(e.into());
                }
            };
            match BackendMessage::decode(&frame) {
                Ok(BackendMessage::ParameterStatus { name, value }) => {
                    self.note_parameter(&name, &value)
                }
                Ok(BackendMessage::ErrorResponse(fields)) => failure = Some(fields),
                Ok(BackendMessage::DataRow(body)) => {
                    if let Some(rows) = rows.as_deref_mut() {
                        match data_row_text(&body) {
                            Some(row) => rows.push(row),
                            None => {
                                self.state = ServerState::Broken;
                                return Err(ServerError::Protocol(ProtocolError::Malformed {
                                    what: "DataRow",
                                    reason: "column lengths do not match the message",
                                }));
                            }
                        }
                    }
                }
                Ok(BackendMessage::ReadyForQuery { status }) => {
                    self.state = match status {
                        TransactionStatus::Idle => ServerState::Idle,
                        TransactionStatus::InTransaction => ServerState::InTransaction,
                        TransactionStatus::Failed => ServerState::FailedTransaction,
                    };
                    self.last_used = Instant::now();
                    return match failure {
                        Some(fields) => Err(ServerError::Query(fields)),
                        None => Ok(()),
                    };
                }
                Ok(BackendMessage::CopyInResponse(_)) => {
                    // The proxy never runs COPY; refuse it so the server does not wait for data.
                    let mut fail = BytesMut::new();
                    frontend::FrontendMessage::CopyFail {
                        message: bytes::Bytes::from_static(b"pgsluice internal query"),
                    }
                    .encode(&mut fail);
                    self.stream.write_all(&fail).await?;
                }
                Ok(_) => {}
                Err(e) => {
                    self.state = ServerState::Broken;
                    return Err(e.into());
                }
            }
        }
    }

    /// Says goodbye politely (Terminate) and closes. Errors are irrelevant at this point.
    pub async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::encode_terminate(&mut out);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.stream.write_all(&out).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// The columns of a DataRow body as text (`None` for NULL); `None` if the body is malformed.
fn data_row_text(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut at = 2;
    let mut row = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = body.get(at..at + len as usize)?;
        at += len as usize;
        row.push(Some(String::from_utf8_lossy(value).into_owned()));
    }
    (at == body.len()).then_some(row)
}

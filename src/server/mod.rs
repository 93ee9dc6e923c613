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

/// The column values of a DataRow body as text (`None` for NULL); non-UTF-8 bytes are replaced.
fn decode_text_row(body: &[u8]) -> Result<Vec<Option<String>>, ProtocolError> {
    let malformed = |reason| ProtocolError::Malformed {
        what: "DataRow",
        reason,
    };
    let (count, mut rest) = body
        .split_first_chunk::<2>()
        .ok_or_else(|| malformed("missing column count"))?;
    let count = u16::from_be_bytes(*count);
    let mut values = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("missing column length"))?;
        let len = i32::from_be_bytes(*len);
        rest = after;
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| malformed("bad column length"))?;
        if rest.len() < len {
            return Err(malformed("column longer than the message"));
        }
        let (value, after) = rest.split_at(len);
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = after;
    }
    Ok(values)
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
    }

    /// Marks the connection idle as it is handed back at `now` (what [`Self::idle_for`] counts
    /// from).
    pub fn mark_idle(&mut self, now: Instant) {
        self.state = ServerState::Idle;
        self.last_used = now;
    }

    /// Age at `now` (a clock read the caller shares).
    pub fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
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

    /// Runs one simple query the proxy needs an answer from (health checks) and returns the text
    /// values of its first row (`None` for SQL NULL; empty if no row).
    pub async fn query_row(
        &mut self,
        sql: &str,
        timeout: Duration,
    ) -> Result<Vec<Option<String>>, ServerError> {
        let rows = self.query_rows(sql, timeout).await?;
        Ok(rows.into_iter().next().unwrap_or_default())
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
                        match decode_text_row(&body) {
                            Ok(row) => rows.push(row),
                            Err(e) => {
                                self.state = ServerState::Broken;
                                return Err(e.into());
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

#[cfg(test)]
mod tests {
    use super::decode_text_row;

    #[test]
    fn data_row_values_decode_as_text() {
        let body = b"\0\x03\0\0\0\x01t\xff\xff\xff\xff\0\0\0\x030/1";
        assert_eq!(
            decode_text_row(body).unwrap(),
            [Some("t".to_string()), None, Some("0/1".to_string())]
        );
        assert_eq!(
            decode_text_row(b"\0\0").unwrap(),
            Vec::<Option<String>>::new()
        );
        assert!(decode_text_row(b"\0").is_err());
        assert!(decode_text_row(b"\0\x01\0\0\0\x05ab").is_err());
        assert!(decode_text_row(b"\0\x02\xff\xff\xff\xff").is_err());
    }
}

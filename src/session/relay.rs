//! The relay between a client and its server connection: each direction forwards bytes after reading
//! only message headers (bodies are never copied or decoded), except the few messages the proxy must
//! see: Terminate from the client; ReadyForQuery and ParameterStatus from the server. Both directions
//! run concurrently, so a client that pipelines while the server streams results cannot deadlock us.

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::net::Stream;
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::frame::{Passthrough, Step};
use crate::protocol::ProtocolError;
use crate::server::ServerState;

/// Read sizes per direction: clients mostly send small requests; servers stream results.
const CLIENT_READ: usize = 8 * 1024;
const SERVER_READ: usize = 16 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its socket (or it failed).
    ClientGone,
    /// The server closed its socket (or it failed).
    ServerGone,
    /// The client sent a message we cannot accept.
    ClientProtocol(ProtocolError),
    /// The server sent bytes that are not the protocol.
    ServerProtocol(ProtocolError),
    /// The proxy is shutting down.
    Shutdown,
}

/// What the relay observed about the server connection, to decide whether it can be reused.
#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub server_state: ServerState,
    /// ParameterStatus values the server reported while relaying.
    pub parameters: Vec<(String, String)>,
}

/// Requests in flight (sent and not yet answered with ReadyForQuery) and the last transaction status.
#[derive(Debug, Default)]
struct Flight {
    pending: AtomicI64,
    status: AtomicU8,
    /// Set when a direction stopped in the middle of a message.
    torn: AtomicU8,
}

impl Flight {
    fn state(&self) -> ServerState {
        if self.torn.load(Ordering::Relaxed) != 0 || self.pending.load(Ordering::Relaxed) != 0 {
            return ServerState::Busy;
        }
        match self.status.load(Ordering::Relaxed) {
            b'T' => ServerState::InTransaction,
            b'E' => ServerState::FailedTransaction,
            _ => ServerState::Idle,
        }
    }
}

/// Relays until either side ends or `stop` fires. `client_buf` holds client bytes already read;
/// `server_buf` server bytes already read.
pub async fn relay(
    client: &mut Stream,
    client_buf: BytesMut,
    server: &mut Stream,
    server_buf: BytesMut,
    max_message_size: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> RelayOutcome {
    let flight = Flight {
        status: AtomicU8::new(b'I'),
        ..Flight::default()
    };
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut server_rx, mut server_tx) = tokio::io::split(server);
    let mut parameters = Vec::new();
    let end = {
        let upstream = client_to_server(
            &mut client_rx,
            &mut server_tx,
            client_buf,
            max_message_size,
            &flight,
        );
        let downstream = server_to_client(
            &mut server_rx,
            &mut client_tx,
            server_buf,
            &flight,
            &mut parameters,
        );
        tokio::select! {
            biased;
            end = upstream => end,
            end = downstream => end,
            _ = stop.cancelled() => RelayEnd::Shutdown,
        }
    };
    RelayOutcome {
        server_state: flight.state(),
        end,
        parameters,
    }
}

/// Makes sure at least `want` more bytes fit without reallocating during the read.
fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want / 4 {
        buf.reserve(want);
    }
}

async fn client_to_server<R, W>(
    rx: &mut R,
    tx: &mut W,
    mut buf: BytesMut,
    max: usize,
    flight: &Flight,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut pass = Passthrough::default();
    loop {
        let mut ready = 0;
        let mut terminated = false;
        loop {
            let step = match pass.step(&buf[ready..], max) {
                Ok(step) => step,
                Err(e) => return RelayEnd::ClientProtocol(e),
            };
            match step {
                Step::Body { n } => {
                    pass.advance(n);
                    ready += n;
                }
                Step::Message { header, available } => {
                    match header.tag {
                        b'X' => {
                            terminated = true;
                            break;
                        }
                        // Each of these is answered by exactly one ReadyForQuery.
                        b'Q' | b'S' | b'F' => {
                            flight.pending.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    pass.advance(available);
                    ready += available;
                }
                Step::NeedMore => break,
            }
        }
        if ready > 0 {
            flight
                .torn
                .store(u8::from(pass.in_message()), Ordering::Relaxed);
            if tx.write_all(&buf[..ready]).await.is_err() {
                return RelayEnd::ServerGone;
            }
            buf.advance(ready);
        }
        if terminated {
            return RelayEnd::ClientTerminated;
        }
        make_room(&mut buf, CLIENT_READ);
        match rx.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    // Part of a header arrived and the rest never will.
                    flight
                        .torn
                        .store(u8::from(pass.in_message()), Ordering::Relaxed);
                }
                return RelayEnd::ClientGone;
            }
            Ok(_) => {}
        }
    }
}

async fn server_to_client<R, W>(
    rx: &mut R,
    tx: &mut W,
    mut buf: BytesMut,
    flight: &Flight,
    parameters: &mut Vec<(String, String)>,
) -> RelayEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut pass = Passthrough::default();
    loop {
        let mut ready = 0;
        loop {
            let step = match pass.step(&buf[ready..], usize::MAX) {
                Ok(step) => step,
                Err(e) => return RelayEnd::ServerProtocol(e),
            };
            match step {
                Step::Body { n } => {
                    pass.advance(n);
                    ready += n;
                }
                Step::Message { header, available } => {
                    let inspect = matches!(header.tag, b'Z' | b'S');
                    if inspect && available < header.frame_len() {
                        // Needed whole; wait for the rest.
                        let missing = header.frame_len() - available;
                        buf.reserve(missing);
                        break;
                    }
                    if inspect {
                        let frame = &buf[ready..ready + header.frame_len()];
                        if let Err(e) = observe(header.tag, &frame[5..], flight, parameters) {
                            return RelayEnd::ServerProtocol(e);
                        }
                    }
                    pass.advance(available);
                    ready += available;
                }
                Step::NeedMore => break,
            }
        }
        if ready > 0 {
            if tx.write_all(&buf[..ready]).await.is_err() {
                return RelayEnd::ClientGone;
            }
            buf.advance(ready);
        }
        make_room(&mut buf, SERVER_READ);
        match rx.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return RelayEnd::ServerGone,
            Ok(_) => {}
        }
    }
}

/// Records what a ReadyForQuery or ParameterStatus says.
fn observe(
    tag: u8,
    body: &[u8],
    flight: &Flight,
    parameters: &mut Vec<(String, String)>,
) -> Result<(), ProtocolError> {
    if tag == b'Z' {
        let status = match backend::ready_for_query_status(body)? {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        };
        flight.status.store(status, Ordering::Relaxed);
        flight.pending.fetch_sub(1, Ordering::Relaxed);
        return Ok(());
    }
    let mut parts = body.split(|b| *b == 0);
    let name = parts.next().unwrap_or_default();
    let value = parts.next().unwrap_or_default();
    parameters.push((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ));
    Ok(())
}

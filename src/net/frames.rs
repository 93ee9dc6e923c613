//! Reading whole frames from a stream during the phases where the proxy itself talks to a peer
//! (startup, authentication, its own queries). Relaying uses header-only forwarding instead.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::{Frame, Framer, ProtocolError};

/// Size of each read while the proxy decodes messages itself.
const READ_CHUNK: usize = 4096;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("connection closed")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Protocol(#[from] ProtocolError),
}

/// Reads until one whole frame is buffered and returns it; extra bytes stay in `buf`.
pub async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    framer: &Framer,
) -> Result<Frame, FrameReadError> {
    loop {
        if let Some(frame) = framer.next_frame(buf)? {
            return Ok(frame);
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(buf).await? == 0 {
            return Err(FrameReadError::Closed);
        }
    }
}

//! Sans-IO codec for both directions of the PostgreSQL v3 wire protocol (no I/O, no tokio).
//!
//! Framing ([`frame`]) is shared by both directions; startup-phase packets ([`startup`]) have no tag.
//! Decoding is lazy: message bodies stay `Bytes` slices of the frame and fields are decoded on demand.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;
mod wire;

#[cfg(test)]
mod tests_backend;
#[cfg(test)]
mod tests_frame;
#[cfg(test)]
mod tests_frontend;
#[cfg(test)]
mod tests_startup;

pub use frame::{whole_run, Frame, Framer, Header, Passthrough, Step, HEADER_LEN};

/// Everything that can be wrong with bytes a peer sent; the connection is unusable afterwards.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A frame (or startup packet) is bigger than the configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    /// The length field is < 4 (or < 8 for startup packets, whose `tag` is reported as 0).
    #[error("invalid length {len} in message with tag {tag:#04x}")]
    InvalidLength { tag: u8, len: i32 },
    /// The body does not match the layout of the message.
    #[error("malformed {what}: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
    /// A type byte the direction does not define.
    #[error("unknown message tag {tag:#04x}")]
    UnknownTag { tag: u8 },
    /// The startup packet asks for a protocol version other than 3.x.
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
}

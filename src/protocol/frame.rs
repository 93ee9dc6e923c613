//! Framing shared by both directions: the 5-byte header, whole frames, and header-only passthrough.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Length of a message header: one tag byte and a big-endian `i32` length.
pub const HEADER_LEN: usize = 5;

/// The header of a tagged message. `len` is the wire length field (counts itself, not the tag), so it is
/// always >= 4 once parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    pub len: u32,
}

impl Header {
    /// Parses the header at the front of `buf`. `Ok(None)` if fewer than 5 bytes are there; an error if
    /// the length field is < 4 or the whole frame (1 + len) would exceed `max`.
    pub fn parse(buf: &[u8], max: usize) -> Result<Option<Header>, ProtocolError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&head[1..]);
        let tag = head[0];
        let len = i32::from_be_bytes(len_bytes);
        if len < 4 {
            return Err(ProtocolError::InvalidLength { tag, len });
        }
        // len >= 4 so the cast is lossless.
        let frame_len = 1 + len as usize;
        if frame_len > max {
            return Err(ProtocolError::MessageTooLarge {
                len: frame_len,
                max,
            });
        }
        Ok(Some(Header {
            tag,
            len: len as u32,
        }))
    }

    /// Bytes of the whole frame on the wire: tag + length field + body.
    pub fn frame_len(&self) -> usize {
        1 + self.len as usize
    }

    /// Bytes of the body (after the 5-byte header).
    pub fn body_len(&self) -> usize {
        (self.len as usize).saturating_sub(4)
    }
}

/// One whole message (tag, length, body) as one zero-copy `Bytes`.
///
/// Invariant: `bytes` holds a header whose length field matches `bytes.len() - 1` exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Builds a frame from a tag and body. Allocates and copies: for tests and the proxy's own messages,
    /// not the hot path. Bodies longer than `i32::MAX - 4` are not representable and must not be passed.
    pub fn new(tag: u8, body: &[u8]) -> Frame {
        let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
        out.put_u8(tag);
        out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
        out.put_slice(body);
        Frame {
            bytes: out.freeze(),
        }
    }

    /// Wraps bytes that hold exactly one whole frame (for example split off a relay buffer after a
    /// [`Passthrough`] step reported a complete message). Errors if the header is invalid, larger than
    /// `max`, or does not match the length of `bytes`.
    pub fn from_bytes(bytes: Bytes, max: usize) -> Result<Frame, ProtocolError> {
        match Header::parse(&bytes, max)? {
            Some(h) if h.frame_len() == bytes.len() => Ok(Frame { bytes }),
            _ => Err(ProtocolError::Malformed {
                what: "frame",
                reason: "length field does not match the frame size",
            }),
        }
    }

    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.bytes.first().copied().unwrap_or_default()
    }

    /// The body, after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// The body as a zero-copy slice of the frame.
    pub fn body_bytes(&self) -> Bytes {
        self.bytes.slice(HEADER_LEN.min(self.bytes.len())..)
    }

    /// The whole frame, for forwarding as is.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole frame, for forwarding as is.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Splits whole frames off a receive buffer, refusing frames larger than `max_message_size`.
#[derive(Clone, Copy, Debug)]
pub struct Framer {
    max_message_size: usize,
}

impl Framer {
    /// `max_message_size` bounds the whole frame (tag + length + body) and so the memory one peer can
    /// make us buffer for one message.
    pub fn new(max_message_size: usize) -> Self {
        Framer { max_message_size }
    }

    /// The configured maximum frame size.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Splits one complete frame off the front of `buf` (zero-copy). `Ok(None)` = need more bytes, and
    /// `buf` is left untouched. On error `buf` is untouched too, but the stream cannot be resynchronised.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some(header) = Header::parse(buf, self.max_message_size)? else {
            return Ok(None);
        };
        if buf.len() < header.frame_len() {
            return Ok(None);
        }
        Ok(Some(Frame {
            bytes: buf.split_to(header.frame_len()).freeze(),
        }))
    }
}

/// Header-only forwarding. Fed the bytes buffered so far for one direction, it says how many bytes at
/// the front can be forwarded now, message by message, without waiting for large bodies to arrive whole.
///
/// Protocol: call [`Passthrough::step`] on the buffered bytes, forward (or consume) some prefix of what it
/// reported, then call [`Passthrough::advance`] with exactly that many bytes, and step again.
#[derive(Debug, Default)]
pub struct Passthrough {
    /// Bytes of the current message (header included if it was only partly forwarded) not yet forwarded.
    remaining: usize,
    /// Frame length reported by the last `Message` step, consumed by the next non-zero `advance`.
    pending: usize,
}

/// What [`Passthrough::step`] found at the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `n` bytes at the front are the continuation of a message whose header was already forwarded.
    Body { n: usize },
    /// A message starts at the front. `available` = how many of its `header.frame_len()` bytes are in the
    /// buffer (>= 5). If `available < frame_len` the caller may forward `available` bytes; the rest of
    /// the message is then reported as `Body` steps (the `Passthrough` remembers the remainder).
    Message { header: Header, available: usize },
    /// Fewer than 5 bytes of a new header at the front (or an empty buffer mid-message): read more.
    NeedMore,
}

impl Passthrough {
    /// A passthrough positioned at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the front of `buf` without consuming anything. `max` bounds whole frames as in
    /// [`Framer`]; an oversized or invalid header is an error (the stream cannot be resynchronised).
    pub fn step(&mut self, buf: &[u8], max: usize) -> Result<Step, ProtocolError> {
        if self.remaining > 0 {
            self.pending = 0;
            return Ok(match buf.len().min(self.remaining) {
                0 => Step::NeedMore,
                n => Step::Body { n },
            });
        }
        match Header::parse(buf, max)? {
            None => {
                self.pending = 0;
                Ok(Step::NeedMore)
            }
            Some(header) => {
                let frame_len = header.frame_len();
                self.pending = frame_len;
                Ok(Step::Message {
                    header,
                    available: buf.len().min(frame_len),
                })
            }
        }
    }

    /// Records that `n` bytes were forwarded/consumed from the front. `n` must be <= what the last step
    /// reported (`n` for `Body`, `available` for `Message`); larger values are a caller bug (asserted in
    /// debug builds, clamped to the message in release). Advancing by 0 changes nothing.
    pub fn advance(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.remaining > 0 {
            debug_assert!(n <= self.remaining, "advance past the current message");
            self.remaining = self.remaining.saturating_sub(n);
        } else {
            debug_assert!(n <= self.pending, "advance past the reported message");
            self.remaining = self.pending.saturating_sub(n);
            self.pending = 0;
        }
    }

    /// True while a message is only partly forwarded (the next bytes are its continuation).
    pub fn in_message(&self) -> bool {
        self.remaining > 0
    }
}

/// How many bytes at the front of `buf` are whole messages that `wanted` does not pick by tag:
/// what a forwarder that reads only a few kinds of message can pass on at once, without a
/// [`Passthrough`] step per message. Stops at the first wanted, partial or invalid message, which
/// the caller's next step then reports (with its error, if any). Use only at a message boundary;
/// the passthrough stays there, as the run holds whole messages only.
#[inline]
pub fn whole_run(buf: &[u8], max: usize, wanted: impl Fn(u8) -> bool) -> usize {
    let mut at = 0;
    while let Ok(Some(header)) = Header::parse(&buf[at..], max) {
        let frame_len = header.frame_len();
        if wanted(header.tag) || buf.len() - at < frame_len {
            break;
        }
        at += frame_len;
    }
    at
}

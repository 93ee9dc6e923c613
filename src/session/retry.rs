//! Retrying a read on the primary when a replica refuses it with SQLSTATE 25006 (read-only
//! transaction): the relay holds the server's first messages of a replica-routed autocommit
//! simple query until it knows whether the query failed that way, so nothing reached the client
//! and the session can send the same query to the primary instead.

use bytes::BytesMut;

/// The SQLSTATE a standby answers a write with.
pub const READ_ONLY_SQLSTATE: &str = "25006";

/// Server messages held back while the outcome of a replica-routed query is unknown. Only
/// messages a failed statement may still have sent before its error are held: row and statement
/// descriptions, parse/bind completions, parameter statuses and notices.
#[derive(Debug, Default)]
pub struct Hold {
    /// Whole server messages, in order, not yet forwarded.
    pub buf: BytesMut,
    /// A 25006 error was held: keep holding until ReadyForQuery, then retry.
    pub refused: bool,
}

/// What to do with one server message while holding.
#[derive(Debug, PartialEq, Eq)]
pub enum HoldStep {
    /// Hold it (append it to [`Hold::buf`]).
    Keep,
    /// The outcome is known and is not a refusal: forward what was held, then this message, and
    /// stop holding.
    Release,
    /// ReadyForQuery after a refusal: drop everything held and this message; retry.
    Retry,
}

impl Hold {
    /// Decides about the server message `tag` with `body` (the whole body).
    pub fn step(&mut self, tag: u8, body: &[u8]) -> HoldStep {
        if self.refused {
            return if tag == b'Z' {
                HoldStep::Retry
            } else {
                HoldStep::Keep
            };
        }
        match tag {
            b'T' | b'1' | b'2' | b't' | b'n' | b'S' | b'N' => HoldStep::Keep,
            b'E' if sqlstate(body) == Some(READ_ONLY_SQLSTATE.as_bytes()) => {
                self.refused = true;
                HoldStep::Keep
            }
            _ => HoldStep::Release,
        }
    }
}

/// The SQLSTATE of an ErrorResponse body, without allocating (see [`crate::protocol::backend::error_code`]).
pub use crate::protocol::backend::error_code as sqlstate;

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(code: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in [(b'S', "ERROR"), (b'C', code), (b'M', "no")] {
            body.push(kind);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn finds_the_sqlstate_or_nothing() {
        assert_eq!(sqlstate(&error_body("25006")), Some(&b"25006"[..]));
        assert_eq!(sqlstate(b"SERROR\0\0"), None);
        assert_eq!(sqlstate(b"C2500"), None);
        assert_eq!(sqlstate(b""), None);
    }

    #[test]
    fn holds_until_the_outcome_is_known() {
        let mut hold = Hold::default();
        assert_eq!(hold.step(b'T', b""), HoldStep::Keep);
        assert_eq!(hold.step(b'N', b""), HoldStep::Keep);
        assert_eq!(hold.step(b'D', b""), HoldStep::Release);
        let mut hold = Hold::default();
        assert_eq!(hold.step(b'E', &error_body("42P01")), HoldStep::Release);
        let mut hold = Hold::default();
        assert_eq!(hold.step(b'E', &error_body("25006")), HoldStep::Keep);
        assert_eq!(hold.step(b'N', b""), HoldStep::Keep);
        assert_eq!(hold.step(b'Z', b"I"), HoldStep::Retry);
    }
}

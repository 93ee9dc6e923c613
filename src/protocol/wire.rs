//! Private helpers shared by the decoders (a bounds-checked body reader) and encoders (length patching).

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Bounds-checked reader over a message body; every failure names the message being decoded.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn err(&self, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            what: self.what,
            reason,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(self.err("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        let b = self.take(1)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.take(2)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(b);
        Ok(i16::from_be_bytes(a))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(i32::from_be_bytes(a))
    }

    /// A count field (`i16`) that must not be negative.
    pub(crate) fn count16(&mut self) -> Result<usize, ProtocolError> {
        usize::try_from(self.i16()?).map_err(|_| self.err("negative count"))
    }

    /// A NUL-terminated string, returned without its NUL.
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("string not NUL-terminated"))?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }

    /// A NUL-terminated string that must be UTF-8.
    pub(crate) fn cstr_utf8(&mut self) -> Result<&'a str, ProtocolError> {
        let s = self.cstr()?;
        std::str::from_utf8(s).map_err(|_| self.err("string not UTF-8"))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails if bytes are left over after the last field.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes after the last field"))
        }
    }
}

/// Zero-copy `Bytes` for a sub-slice of `body` (which must come from `body`).
pub(crate) fn sub(body: &Bytes, part: &[u8]) -> Bytes {
    if part.is_empty() {
        Bytes::new()
    } else {
        body.slice_ref(part)
    }
}

/// Starts a tagged message: writes the tag and a placeholder length; returns the position of the length.
pub(crate) fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

/// Starts an untagged (startup-phase) packet: writes a placeholder length; returns its position.
pub(crate) fn begin_untagged(out: &mut BytesMut) -> usize {
    let at = out.len();
    out.put_i32(0);
    at
}

/// Patches the length field written by [`begin`]/[`begin_untagged`] at `at` to cover everything since.
pub(crate) fn finish(out: &mut BytesMut, at: usize) {
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    if let Some(field) = out.get_mut(at..at + 4) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes `s` followed by a NUL.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// Writes a whole tagged message with a raw body.
pub(crate) fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(5 + body.len());
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.put_slice(body);
}

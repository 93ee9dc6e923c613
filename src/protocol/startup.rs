//! Startup-phase packets (length-prefixed, no tag): StartupMessage, SSLRequest, GSSENCRequest and
//! CancelRequest.

use bytes::{BufMut, BytesMut};

use super::wire::{begin_untagged, finish, put_cstr, Reader};
use super::ProtocolError;

/// Largest startup packet accepted, as Postgres.
pub const MAX_STARTUP_PACKET: usize = 10_000;
/// Version code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80877103;
/// Version code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80877104;
/// Version code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80877102;
/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 196608;

/// Identifies a backend for cancellation (BackendKeyData / CancelRequest); 4-byte secrets only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub process_id: i32,
    pub secret_key: i32,
}

/// A StartupMessage of protocol 3.x: the minor version asked for and the parameters in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    pub minor_version: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of parameter `name` (first occurrence).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `user` parameter (required by Postgres, but not enforced here).
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The `database` parameter, falling back to the user name as Postgres does.
    pub fn database(&self) -> Option<&str> {
        match self.get("database") {
            Some(db) if !db.is_empty() => Some(db),
            _ => self.user(),
        }
    }
}

/// The first packet of a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    Startup(StartupMessage),
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
}

const WHAT: &str = "startup packet";

/// Decodes one startup packet from the front of `buf`. `Ok(None)` = need more (buf untouched). Once the
/// whole packet is buffered it is consumed, even if it then turns out to be invalid. Rejects a length
/// < 8 or > [`MAX_STARTUP_PACKET`], a major version other than 3, parameters that are not NUL-terminated
/// or not UTF-8, and a missing final NUL.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let mut a = [0u8; 4];
    a.copy_from_slice(len_bytes);
    let len = i32::from_be_bytes(a);
    if len < 8 {
        return Err(ProtocolError::InvalidLength { tag: 0, len });
    }
    let len = len as usize; // len >= 8
    if len > MAX_STARTUP_PACKET {
        return Err(ProtocolError::MessageTooLarge {
            len,
            max: MAX_STARTUP_PACKET,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let mut r = Reader::new(packet.get(4..).unwrap_or_default(), WHAT);
    let code = r.i32()? as u32;
    let packet = match code {
        SSL_REQUEST_CODE => {
            r.finish()?;
            StartupPacket::SslRequest
        }
        GSSENC_REQUEST_CODE => {
            r.finish()?;
            StartupPacket::GssEncRequest
        }
        CANCEL_REQUEST_CODE => {
            let process_id = r.i32()?;
            let secret_key = r.i32()?;
            r.finish()?;
            StartupPacket::Cancel(CancelKey {
                process_id,
                secret_key,
            })
        }
        _ => StartupPacket::Startup(decode_startup_message(code, r)?),
    };
    Ok(Some(packet))
}

fn decode_startup_message(code: u32, mut r: Reader<'_>) -> Result<StartupMessage, ProtocolError> {
    let major = (code >> 16) as u16;
    let minor_version = (code & 0xffff) as u16;
    if major != 3 {
        return Err(ProtocolError::UnsupportedVersion {
            major,
            minor: minor_version,
        });
    }
    let mut params = Vec::new();
    loop {
        if r.is_empty() {
            return Err(r.err("missing final NUL"));
        }
        let name = r.cstr_utf8()?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr_utf8()?;
        params.push((name.to_owned(), value.to_owned()));
    }
    r.finish()?;
    Ok(StartupMessage {
        minor_version,
        params,
    })
}

/// Writes a protocol 3.0 StartupMessage with `params` in order (names and values must not contain NUL).
pub fn encode_startup(params: &[(&str, &str)], out: &mut BytesMut) {
    put_startup(PROTOCOL_3_0, params.iter().copied(), out);
}

fn put_startup<'a>(
    version: u32,
    params: impl Iterator<Item = (&'a str, &'a str)>,
    out: &mut BytesMut,
) {
    let at = begin_untagged(out);
    out.put_u32(version);
    for (name, value) in params {
        put_cstr(out, name.as_bytes());
        put_cstr(out, value.as_bytes());
    }
    out.put_u8(0);
    finish(out, at);
}

fn encode_code(code: u32, out: &mut BytesMut) {
    out.put_i32(8);
    out.put_u32(code);
}

/// Writes an SSLRequest.
pub fn encode_ssl_request(out: &mut BytesMut) {
    encode_code(SSL_REQUEST_CODE, out);
}

/// Writes a GSSENCRequest.
pub fn encode_gssenc_request(out: &mut BytesMut) {
    encode_code(GSSENC_REQUEST_CODE, out);
}

/// Writes a CancelRequest for `key`.
pub fn encode_cancel_request(key: CancelKey, out: &mut BytesMut) {
    out.put_i32(16);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_i32(key.process_id);
    out.put_i32(key.secret_key);
}

/// Writes any startup packet (the inverse of [`decode_startup`]; a StartupMessage keeps its minor version).
pub fn encode_startup_packet(packet: &StartupPacket, out: &mut BytesMut) {
    match packet {
        StartupPacket::Startup(m) => put_startup(
            PROTOCOL_3_0 | u32::from(m.minor_version),
            m.params.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            out,
        ),
        StartupPacket::SslRequest => encode_ssl_request(out),
        StartupPacket::GssEncRequest => encode_gssenc_request(out),
        StartupPacket::Cancel(key) => encode_cancel_request(*key, out),
    }
}

//! Frontend (client-to-server) messages: lazy decoding from a [`Frame`] and encoding.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::Frame;
use super::wire::{begin, finish, put_cstr, put_message, sub, Reader};
use super::ProtocolError;

/// Type bytes of every frontend message.
pub mod tag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse, SASLResponse and GSSResponse share this tag.
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// A decoded frontend message. Names and SQL are the raw bytes without the trailing NUL, as zero-copy
/// slices of the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendMessage {
    Bind(Bind),
    /// `kind` is `b'S'` (statement) or `b'P'` (portal).
    Close {
        kind: u8,
        name: Bytes,
    },
    CopyData(Bytes),
    CopyDone,
    CopyFail {
        message: Bytes,
    },
    /// `kind` is `b'S'` (statement) or `b'P'` (portal).
    Describe {
        kind: u8,
        name: Bytes,
    },
    Execute {
        portal: Bytes,
        max_rows: i32,
    },
    Flush,
    /// The raw body; the proxy never needs its fields.
    FunctionCall(Bytes),
    Parse(Parse),
    /// The raw body of any 'p' message; which one it is depends on the authentication exchange, so use
    /// [`parse_password`] or [`parse_sasl_initial_response`] (a SASLResponse body is the data itself).
    Password(Bytes),
    Query {
        sql: Bytes,
    },
    Sync,
    Terminate,
}

/// A Parse message: statement name, SQL text and the parameter type OIDs (0 = unspecified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parse {
    pub name: Bytes,
    pub sql: Bytes,
    pub param_types: Vec<u32>,
}

/// A Bind message. Keeps its body and exposes the portal and statement names; parameter formats,
/// values and result formats are validated for layout on decode but not copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub portal: Bytes,
    pub statement: Bytes,
    body: Bytes,
}

/// Counts of a Bind body's arrays, found while validating its layout.
struct BindLayout {
    portal_len: usize,
    statement_len: usize,
    params: usize,
}

impl Bind {
    /// Builds a Bind (allocates; for the proxy's own messages and tests). `params` are the values in
    /// order, `None` for SQL NULL. `portal` and `statement` must not contain NUL.
    pub fn new(
        portal: &[u8],
        statement: &[u8],
        param_formats: &[i16],
        params: &[Option<&[u8]>],
        result_formats: &[i16],
    ) -> Bind {
        let mut b = BytesMut::new();
        put_cstr(&mut b, portal);
        put_cstr(&mut b, statement);
        put_count(&mut b, param_formats.len());
        param_formats.iter().for_each(|f| b.put_i16(*f));
        put_count(&mut b, params.len());
        for p in params {
            match p {
                None => b.put_i32(-1),
                Some(v) => {
                    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                    b.put_slice(v);
                }
            }
        }
        put_count(&mut b, result_formats.len());
        result_formats.iter().for_each(|f| b.put_i16(*f));
        let body = b.freeze();
        Bind {
            portal: body.slice(..portal.len()),
            statement: body.slice(portal.len() + 1..portal.len() + 1 + statement.len()),
            body,
        }
    }

    /// Validates a Bind body and wraps it without copying.
    pub fn from_body(body: Bytes) -> Result<Bind, ProtocolError> {
        let layout = Self::validate(&body)?;
        let statement_start = layout.portal_len + 1;
        Ok(Bind {
            portal: body.slice(..layout.portal_len),
            statement: body.slice(statement_start..statement_start + layout.statement_len),
            body,
        })
    }

    fn validate(body: &[u8]) -> Result<BindLayout, ProtocolError> {
        let mut r = Reader::new(body, "Bind");
        let portal_len = r.cstr()?.len();
        let statement_len = r.cstr()?.len();
        let formats = r.count16()?;
        r.take(formats * 2)?;
        let params = r.count16()?;
        for _ in 0..params {
            let len = r.i32()?;
            if len < -1 {
                return Err(r.err("negative parameter length"));
            }
            if len > 0 {
                r.take(len as usize)?;
            }
        }
        let results = r.count16()?;
        r.take(results * 2)?;
        r.finish()?;
        Ok(BindLayout {
            portal_len,
            statement_len,
            params,
        })
    }

    /// The whole body, as it is forwarded.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Number of parameter values (the body was validated, so this cannot fail).
    pub fn param_count(&self) -> usize {
        Self::validate(&self.body).map(|l| l.params).unwrap_or(0)
    }
}

fn put_count(out: &mut BytesMut, n: usize) {
    out.put_i16(i16::try_from(n).unwrap_or(i16::MAX));
}

fn decode_kind(r: &mut Reader<'_>) -> Result<u8, ProtocolError> {
    match r.u8()? {
        k @ (b'S' | b'P') => Ok(k),
        _ => Err(r.err("kind is neither 'S' nor 'P'")),
    }
}

/// Decodes a body with no fields.
fn empty(
    body: &[u8],
    what: &'static str,
    msg: FrontendMessage,
) -> Result<FrontendMessage, ProtocolError> {
    Reader::new(body, what).finish()?;
    Ok(msg)
}

impl FrontendMessage {
    /// Decodes a frame, reading only within it. Unknown tags are [`ProtocolError::UnknownTag`].
    pub fn decode(frame: &Frame) -> Result<FrontendMessage, ProtocolError> {
        let body = frame.body_bytes();
        let b = &body[..];
        match frame.tag() {
            tag::BIND => Ok(FrontendMessage::Bind(Bind::from_body(body)?)),
            tag::CLOSE | tag::DESCRIBE => {
                let what = if frame.tag() == tag::CLOSE {
                    "Close"
                } else {
                    "Describe"
                };
                let mut r = Reader::new(b, what);
                let kind = decode_kind(&mut r)?;
                let name = sub(&body, r.cstr()?);
                r.finish()?;
                Ok(if frame.tag() == tag::CLOSE {
                    FrontendMessage::Close { kind, name }
                } else {
                    FrontendMessage::Describe { kind, name }
                })
            }
            tag::COPY_DATA => Ok(FrontendMessage::CopyData(body)),
            tag::COPY_DONE => empty(b, "CopyDone", FrontendMessage::CopyDone),
            tag::COPY_FAIL => {
                let mut r = Reader::new(b, "CopyFail");
                let message = sub(&body, r.cstr()?);
                r.finish()?;
                Ok(FrontendMessage::CopyFail { message })
            }
            tag::EXECUTE => {
                let mut r = Reader::new(b, "Execute");
                let portal = sub(&body, r.cstr()?);
                let max_rows = r.i32()?;
                r.finish()?;
                Ok(FrontendMessage::Execute { portal, max_rows })
            }
            tag::FLUSH => empty(b, "Flush", FrontendMessage::Flush),
            tag::FUNCTION_CALL => Ok(FrontendMessage::FunctionCall(body)),
            tag::PARSE => decode_parse(&body).map(FrontendMessage::Parse),
            tag::PASSWORD => Ok(FrontendMessage::Password(body)),
            tag::QUERY => {
                let mut r = Reader::new(b, "Query");
                let sql = sub(&body, r.cstr()?);
                r.finish()?;
                Ok(FrontendMessage::Query { sql })
            }
            tag::SYNC => empty(b, "Sync", FrontendMessage::Sync),
            tag::TERMINATE => empty(b, "Terminate", FrontendMessage::Terminate),
            other => Err(ProtocolError::UnknownTag { tag: other }),
        }
    }

    /// Appends the message as one frame to `out`; round-trips [`FrontendMessage::decode`].
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            FrontendMessage::Bind(bind) => put_message(out, tag::BIND, &bind.body),
            FrontendMessage::Close { kind, name } => encode_kind_name(tag::CLOSE, *kind, name, out),
            FrontendMessage::CopyData(data) => put_message(out, tag::COPY_DATA, data),
            FrontendMessage::CopyDone => put_message(out, tag::COPY_DONE, &[]),
            FrontendMessage::CopyFail { message } => encode_cstr(tag::COPY_FAIL, message, out),
            FrontendMessage::Describe { kind, name } => {
                encode_kind_name(tag::DESCRIBE, *kind, name, out)
            }
            FrontendMessage::Execute { portal, max_rows } => {
                let at = begin(out, tag::EXECUTE);
                put_cstr(out, portal);
                out.put_i32(*max_rows);
                finish(out, at);
            }
            FrontendMessage::Flush => put_message(out, tag::FLUSH, &[]),
            FrontendMessage::FunctionCall(body) => put_message(out, tag::FUNCTION_CALL, body),
            FrontendMessage::Parse(p) => {
                let at = begin(out, tag::PARSE);
                put_cstr(out, &p.name);
                put_cstr(out, &p.sql);
                put_count(out, p.param_types.len());
                p.param_types.iter().for_each(|t| out.put_u32(*t));
                finish(out, at);
            }
            FrontendMessage::Password(body) => put_message(out, tag::PASSWORD, body),
            FrontendMessage::Query { sql } => encode_cstr(tag::QUERY, sql, out),
            FrontendMessage::Sync => encode_sync(out),
            FrontendMessage::Terminate => encode_terminate(out),
        }
    }
}

fn decode_parse(body: &Bytes) -> Result<Parse, ProtocolError> {
    let mut r = Reader::new(body, "Parse");
    let name = sub(body, r.cstr()?);
    let sql = sub(body, r.cstr()?);
    let n = r.count16()?;
    let types = r.take(n * 4)?;
    r.finish()?;
    let param_types = types
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Parse {
        name,
        sql,
        param_types,
    })
}

fn encode_kind_name(tag: u8, kind: u8, name: &[u8], out: &mut BytesMut) {
    let at = begin(out, tag);
    out.put_u8(kind);
    put_cstr(out, name);
    finish(out, at);
}

fn encode_cstr(tag: u8, s: &[u8], out: &mut BytesMut) {
    let at = begin(out, tag);
    put_cstr(out, s);
    finish(out, at);
}

/// The cleartext or MD5 password of a PasswordMessage body.
pub fn parse_password(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(body, "PasswordMessage");
    let password = r.cstr_utf8()?;
    r.finish()?;
    Ok(password)
}

/// The mechanism and initial client data of a SASLInitialResponse body (length -1 => empty data).
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr_utf8()?;
    let len = r.i32()?;
    let data = match len {
        -1 => &[][..],
        n if n >= 0 => r.take(n as usize)?,
        _ => return Err(r.err("negative data length")),
    };
    r.finish()?;
    Ok((mechanism, data))
}

/// Writes a simple Query (the proxy's own queries; `sql` must not contain NUL).
pub fn encode_query(sql: &str, out: &mut BytesMut) {
    encode_cstr(tag::QUERY, sql.as_bytes(), out);
}

/// Writes a Terminate.
pub fn encode_terminate(out: &mut BytesMut) {
    put_message(out, tag::TERMINATE, &[]);
}

/// Writes a Sync.
pub fn encode_sync(out: &mut BytesMut) {
    put_message(out, tag::SYNC, &[]);
}

/// Writes a PasswordMessage (cleartext or MD5 response).
pub fn encode_password(password: &str, out: &mut BytesMut) {
    encode_cstr(tag::PASSWORD, password.as_bytes(), out);
}

/// Writes a SASLInitialResponse.
pub fn encode_sasl_initial_response(mechanism: &str, data: &[u8], out: &mut BytesMut) {
    let at = begin(out, tag::PASSWORD);
    put_cstr(out, mechanism.as_bytes());
    out.put_i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
    out.put_slice(data);
    finish(out, at);
}

/// Writes a SASLResponse.
pub fn encode_sasl_response(data: &[u8], out: &mut BytesMut) {
    put_message(out, tag::PASSWORD, data);
}

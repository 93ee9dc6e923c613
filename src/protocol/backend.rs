//! Backend (server-to-client) messages: lazy decoding from a [`Frame`], encoding, and the direct
//! encoders the proxy uses when it speaks as a server to its clients.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::Frame;
use super::startup::CancelKey;
use super::wire::{begin, finish, put_cstr, put_message, sub, Reader};
use super::ProtocolError;

/// Type bytes of every backend message.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Transaction status carried by ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `b'I'`: not in a transaction block (a pooled server may be released).
    Idle,
    /// `b'T'`: in a transaction block.
    InTransaction,
    /// `b'E'`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    /// The wire byte.
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// The Authentication ('R') family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    KerberosV5,
    CleartextPassword,
    Md5Password { salt: [u8; 4] },
    Gss,
    GssContinue(Bytes),
    Sspi,
    Sasl { mechanisms: Vec<String> },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
}

/// Error and notice fields (type byte, value) in wire order, with helpers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// Field types used by the helpers (see "Error and Notice Message Fields" in the Postgres docs).
    pub const SEVERITY: u8 = b'S';
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';

    /// Fields S, V (same as S), C and M, as the proxy's own errors and notices need.
    pub fn new(severity: &str, code: &str, message: &str) -> Self {
        ErrorFields {
            fields: vec![
                (Self::SEVERITY, severity.to_owned()),
                (Self::SEVERITY_NONLOCALIZED, severity.to_owned()),
                (Self::CODE, code.to_owned()),
                (Self::MESSAGE, message.to_owned()),
            ],
        }
    }

    /// Adds a detail (D) field.
    pub fn with_detail(mut self, d: &str) -> Self {
        self.fields.push((Self::DETAIL, d.to_owned()));
        self
    }

    /// Adds a hint (H) field.
    pub fn with_hint(mut self, h: &str) -> Self {
        self.fields.push((Self::HINT, h.to_owned()));
        self
    }

    /// The SQLSTATE (C).
    pub fn code(&self) -> Option<&str> {
        self.get(Self::CODE)
    }

    /// The primary message (M).
    pub fn message(&self) -> Option<&str> {
        self.get(Self::MESSAGE)
    }

    /// The non-localized severity (V) if present, else the localized one (S).
    pub fn severity(&self) -> Option<&str> {
        self.get(Self::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(Self::SEVERITY))
    }

    /// The first field of type `field`.
    pub fn get(&self, field: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(t, _)| *t == field)
            .map(|(_, v)| v.as_str())
    }

    /// Decodes an ErrorResponse/NoticeResponse body. Values that are not UTF-8 (a server with a
    /// non-UTF-8 `client_encoding`) are converted lossily rather than rejected.
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body, "ErrorResponse/NoticeResponse");
        let mut fields = Vec::new();
        loop {
            match r.u8()? {
                0 => break,
                t => {
                    let v = String::from_utf8_lossy(r.cstr()?).into_owned();
                    fields.push((t, v));
                }
            }
        }
        r.finish()?;
        Ok(ErrorFields { fields })
    }

    fn encode(&self, tag: u8, out: &mut BytesMut) {
        let at = begin(out, tag);
        for (t, v) in &self.fields {
            out.put_u8(*t);
            put_cstr(out, v.as_bytes());
        }
        out.put_u8(0);
        finish(out, at);
    }
}

/// A decoded backend message. Bulky bodies (rows, descriptions, copy data) stay zero-copy `Bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(Authentication),
    BackendKeyData(CancelKey),
    BindComplete,
    CloseComplete,
    CommandComplete {
        tag: Bytes,
    },
    CopyData(Bytes),
    CopyDone,
    CopyInResponse(Bytes),
    CopyOutResponse(Bytes),
    CopyBothResponse(Bytes),
    DataRow(Bytes),
    EmptyQueryResponse,
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    FunctionCallResponse(Bytes),
    NegotiateProtocolVersion {
        newest_minor: u32,
        unrecognized: Vec<String>,
    },
    NoData,
    NotificationResponse {
        pid: i32,
        channel: Bytes,
        payload: Bytes,
    },
    ParameterDescription(Bytes),
    ParameterStatus {
        name: String,
        value: String,
    },
    ParseComplete,
    PortalSuspended,
    ReadyForQuery {
        status: TransactionStatus,
    },
    RowDescription(Bytes),
}

/// Decodes a body with no fields.
fn empty(
    body: &[u8],
    what: &'static str,
    msg: BackendMessage,
) -> Result<BackendMessage, ProtocolError> {
    Reader::new(body, what).finish()?;
    Ok(msg)
}

impl BackendMessage {
    /// Decodes a frame, reading only within it. Unknown tags are [`ProtocolError::UnknownTag`].
    pub fn decode(frame: &Frame) -> Result<BackendMessage, ProtocolError> {
        use BackendMessage as M;
        let body = frame.body_bytes();
        let b = &body[..];
        match frame.tag() {
            tag::AUTHENTICATION => decode_auth(&body).map(M::Authentication),
            tag::BACKEND_KEY_DATA => {
                let mut r = Reader::new(b, "BackendKeyData");
                let process_id = r.i32()?;
                let secret_key = r.i32()?;
                r.finish()?;
                Ok(M::BackendKeyData(CancelKey {
                    process_id,
                    secret_key,
                }))
            }
            tag::BIND_COMPLETE => empty(b, "BindComplete", M::BindComplete),
            tag::CLOSE_COMPLETE => empty(b, "CloseComplete", M::CloseComplete),
            tag::COMMAND_COMPLETE => {
                let mut r = Reader::new(b, "CommandComplete");
                let tag = sub(&body, r.cstr()?);
                r.finish()?;
                Ok(M::CommandComplete { tag })
            }
            tag::COPY_DATA => Ok(M::CopyData(body)),
            tag::COPY_DONE => empty(b, "CopyDone", M::CopyDone),
            tag::COPY_IN_RESPONSE => Ok(M::CopyInResponse(body)),
            tag::COPY_OUT_RESPONSE => Ok(M::CopyOutResponse(body)),
            tag::COPY_BOTH_RESPONSE => Ok(M::CopyBothResponse(body)),
            tag::DATA_ROW => Ok(M::DataRow(body)),
            tag::EMPTY_QUERY_RESPONSE => empty(b, "EmptyQueryResponse", M::EmptyQueryResponse),
            tag::ERROR_RESPONSE => ErrorFields::decode(b).map(M::ErrorResponse),
            tag::NOTICE_RESPONSE => ErrorFields::decode(b).map(M::NoticeResponse),
            tag::FUNCTION_CALL_RESPONSE => Ok(M::FunctionCallResponse(body)),
            tag::NEGOTIATE_PROTOCOL_VERSION => decode_negotiate(b),
            tag::NO_DATA => empty(b, "NoData", M::NoData),
            tag::NOTIFICATION_RESPONSE => {
                let mut r = Reader::new(b, "NotificationResponse");
                let pid = r.i32()?;
                let channel = sub(&body, r.cstr()?);
                let payload = sub(&body, r.cstr()?);
                r.finish()?;
                Ok(M::NotificationResponse {
                    pid,
                    channel,
                    payload,
                })
            }
            tag::PARAMETER_DESCRIPTION => Ok(M::ParameterDescription(body)),
            tag::PARAMETER_STATUS => {
                let mut r = Reader::new(b, "ParameterStatus");
                let name = r.cstr_utf8()?.to_owned();
                let value = r.cstr_utf8()?.to_owned();
                r.finish()?;
                Ok(M::ParameterStatus { name, value })
            }
            tag::PARSE_COMPLETE => empty(b, "ParseComplete", M::ParseComplete),
            tag::PORTAL_SUSPENDED => empty(b, "PortalSuspended", M::PortalSuspended),
            tag::READY_FOR_QUERY => Ok(M::ReadyForQuery {
                status: ready_for_query_status(b)?,
            }),
            tag::ROW_DESCRIPTION => Ok(M::RowDescription(body)),
            other => Err(ProtocolError::UnknownTag { tag: other }),
        }
    }

    /// Appends the message as one frame to `out`; round-trips [`BackendMessage::decode`].
    pub fn encode(&self, out: &mut BytesMut) {
        use BackendMessage as M;
        match self {
            M::Authentication(auth) => encode_auth(auth, out),
            M::BackendKeyData(key) => encode_backend_key_data(*key, out),
            M::BindComplete => put_message(out, tag::BIND_COMPLETE, &[]),
            M::CloseComplete => put_message(out, tag::CLOSE_COMPLETE, &[]),
            M::CommandComplete { tag: t } => encode_cstr(tag::COMMAND_COMPLETE, t, out),
            M::CopyData(b) => put_message(out, tag::COPY_DATA, b),
            M::CopyDone => put_message(out, tag::COPY_DONE, &[]),
            M::CopyInResponse(b) => put_message(out, tag::COPY_IN_RESPONSE, b),
            M::CopyOutResponse(b) => put_message(out, tag::COPY_OUT_RESPONSE, b),
            M::CopyBothResponse(b) => put_message(out, tag::COPY_BOTH_RESPONSE, b),
            M::DataRow(b) => put_message(out, tag::DATA_ROW, b),
            M::EmptyQueryResponse => put_message(out, tag::EMPTY_QUERY_RESPONSE, &[]),
            M::ErrorResponse(f) => encode_error(f, out),
            M::NoticeResponse(f) => encode_notice(f, out),
            M::FunctionCallResponse(b) => put_message(out, tag::FUNCTION_CALL_RESPONSE, b),
            M::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            } => {
                let names: Vec<&str> = unrecognized.iter().map(String::as_str).collect();
                encode_negotiate_protocol_version(*newest_minor, &names, out);
            }
            M::NoData => put_message(out, tag::NO_DATA, &[]),
            M::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                let at = begin(out, tag::NOTIFICATION_RESPONSE);
                out.put_i32(*pid);
                put_cstr(out, channel);
                put_cstr(out, payload);
                finish(out, at);
            }
            M::ParameterDescription(b) => put_message(out, tag::PARAMETER_DESCRIPTION, b),
            M::ParameterStatus { name, value } => encode_parameter_status(name, value, out),
            M::ParseComplete => put_message(out, tag::PARSE_COMPLETE, &[]),
            M::PortalSuspended => put_message(out, tag::PORTAL_SUSPENDED, &[]),
            M::ReadyForQuery { status } => encode_ready_for_query(*status, out),
            M::RowDescription(b) => put_message(out, tag::ROW_DESCRIPTION, b),
        }
    }
}

fn decode_auth(body: &Bytes) -> Result<Authentication, ProtocolError> {
    use Authentication as A;
    let mut r = Reader::new(body, "Authentication");
    let auth = match r.i32()? {
        0 => A::Ok,
        2 => A::KerberosV5,
        3 => A::CleartextPassword,
        5 => {
            let s = r.take(4)?;
            A::Md5Password {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        7 => A::Gss,
        8 => A::GssContinue(sub(body, r.rest())),
        9 => A::Sspi,
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                if r.is_empty() {
                    return Err(r.err("mechanism list not terminated"));
                }
                match r.cstr_utf8()? {
                    "" => break,
                    m => mechanisms.push(m.to_owned()),
                }
            }
            A::Sasl { mechanisms }
        }
        11 => A::SaslContinue(sub(body, r.rest())),
        12 => A::SaslFinal(sub(body, r.rest())),
        _ => return Err(r.err("unknown authentication request code")),
    };
    r.finish()?;
    Ok(auth)
}

fn decode_negotiate(b: &[u8]) -> Result<BackendMessage, ProtocolError> {
    let mut r = Reader::new(b, "NegotiateProtocolVersion");
    let newest_minor = u32::try_from(r.i32()?).map_err(|_| r.err("negative minor version"))?;
    let n = usize::try_from(r.i32()?).map_err(|_| r.err("negative count"))?;
    // Each name takes at least one byte, so a count beyond the body is malformed; checked before
    // allocating.
    if n > b.len() {
        return Err(r.err("truncated"));
    }
    let mut unrecognized = Vec::with_capacity(n);
    for _ in 0..n {
        unrecognized.push(r.cstr_utf8()?.to_owned());
    }
    r.finish()?;
    Ok(BackendMessage::NegotiateProtocolVersion {
        newest_minor,
        unrecognized,
    })
}

fn encode_cstr(tag: u8, s: &[u8], out: &mut BytesMut) {
    let at = begin(out, tag);
    put_cstr(out, s);
    finish(out, at);
}

/// Writes an ErrorResponse ('E').
pub fn encode_error(fields: &ErrorFields, out: &mut BytesMut) {
    fields.encode(tag::ERROR_RESPONSE, out);
}

/// Writes a NoticeResponse ('N').
pub fn encode_notice(fields: &ErrorFields, out: &mut BytesMut) {
    fields.encode(tag::NOTICE_RESPONSE, out);
}

/// Writes an Authentication request.
pub fn encode_auth(auth: &Authentication, out: &mut BytesMut) {
    use Authentication as A;
    let at = begin(out, tag::AUTHENTICATION);
    let (code, data): (i32, &[u8]) = match auth {
        A::Ok => (0, &[]),
        A::KerberosV5 => (2, &[]),
        A::CleartextPassword => (3, &[]),
        A::Md5Password { salt } => (5, salt),
        A::Gss => (7, &[]),
        A::GssContinue(d) => (8, d),
        A::Sspi => (9, &[]),
        A::Sasl { .. } => (10, &[]),
        A::SaslContinue(d) => (11, d),
        A::SaslFinal(d) => (12, d),
    };
    out.put_i32(code);
    out.put_slice(data);
    if let A::Sasl { mechanisms } = auth {
        for m in mechanisms {
            put_cstr(out, m.as_bytes());
        }
        out.put_u8(0);
    }
    finish(out, at);
}

/// Writes a ParameterStatus.
pub fn encode_parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    let at = begin(out, tag::PARAMETER_STATUS);
    put_cstr(out, name.as_bytes());
    put_cstr(out, value.as_bytes());
    finish(out, at);
}

/// Writes a BackendKeyData.
pub fn encode_backend_key_data(key: CancelKey, out: &mut BytesMut) {
    let at = begin(out, tag::BACKEND_KEY_DATA);
    out.put_i32(key.process_id);
    out.put_i32(key.secret_key);
    finish(out, at);
}

/// Writes a ReadyForQuery.
pub fn encode_ready_for_query(status: TransactionStatus, out: &mut BytesMut) {
    put_message(out, tag::READY_FOR_QUERY, &[status.as_byte()]);
}

/// Writes a NegotiateProtocolVersion.
pub fn encode_negotiate_protocol_version(
    newest_minor: u32,
    unrecognized: &[&str],
    out: &mut BytesMut,
) {
    let at = begin(out, tag::NEGOTIATE_PROTOCOL_VERSION);
    out.put_u32(newest_minor);
    out.put_i32(i32::try_from(unrecognized.len()).unwrap_or(i32::MAX));
    for name in unrecognized {
        put_cstr(out, name.as_bytes());
    }
    finish(out, at);
}

/// Writes a CommandComplete with the given command tag (e.g. "SELECT 1").
pub fn encode_command_complete(tag: &str, out: &mut BytesMut) {
    encode_cstr(tag::COMMAND_COMPLETE, tag.as_bytes(), out);
}

/// Just the status byte of a ReadyForQuery body, without building the enum (hot path).
pub fn ready_for_query_status(body: &[u8]) -> Result<TransactionStatus, ProtocolError> {
    match body {
        [b'I'] => Ok(TransactionStatus::Idle),
        [b'T'] => Ok(TransactionStatus::InTransaction),
        [b'E'] => Ok(TransactionStatus::Failed),
        _ => Err(ProtocolError::Malformed {
            what: "ReadyForQuery",
            reason: "body is not a single status byte I, T or E",
        }),
    }
}

/// The SQLSTATE (field `C`) of an ErrorResponse/NoticeResponse body, without decoding the other
/// fields or allocating (hot path: counting errors by class). `None` if absent or malformed.
pub fn error_code(body: &[u8]) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        if field == ErrorFields::CODE {
            return Some(&tail[..end]);
        }
        rest = &tail[end + 1..];
    }
    None
}

/// Type OIDs the proxy uses when it answers queries itself (admin console).
pub mod oid {
    pub const INT8: u32 = 20;
    pub const TEXT: u32 = 25;
    pub const FLOAT8: u32 = 701;
}

/// Writes a RowDescription ('T') of text-format columns given as (name, type OID), with no table
/// and the type's default size and modifier.
pub fn encode_row_description(columns: &[(&str, u32)], out: &mut BytesMut) {
    let at = begin(out, tag::ROW_DESCRIPTION);
    out.put_i16(i16::try_from(columns.len()).unwrap_or(i16::MAX));
    for (name, type_oid) in columns {
        put_cstr(out, name.as_bytes());
        out.put_u32(0); // table OID
        out.put_i16(0); // column attribute number
        out.put_u32(*type_oid);
        let size: i16 = match *type_oid {
            oid::INT8 | oid::FLOAT8 => 8,
            _ => -1,
        };
        out.put_i16(size);
        out.put_i32(-1); // type modifier
        out.put_i16(0); // text format
    }
    finish(out, at);
}

/// Writes a DataRow ('D') of text values; `None` is SQL NULL.
pub fn encode_data_row<S: AsRef<str>>(values: &[Option<S>], out: &mut BytesMut) {
    let at = begin(out, tag::DATA_ROW);
    out.put_i16(i16::try_from(values.len()).unwrap_or(i16::MAX));
    for value in values {
        match value {
            None => out.put_i32(-1),
            Some(v) => {
                let v = v.as_ref().as_bytes();
                out.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                out.put_slice(v);
            }
        }
    }
    finish(out, at);
}

/// Writes an EmptyQueryResponse ('I'): the answer to a query string with no statement.
pub fn encode_empty_query_response(out: &mut BytesMut) {
    put_message(out, tag::EMPTY_QUERY_RESPONSE, &[]);
}

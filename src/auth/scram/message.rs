//! Parsing of the client's SCRAM-SHA-256 messages (RFC 5802 grammar, as Postgres accepts it).
//! Everything here is peer input: malformed text yields `AuthError::Malformed`, never a panic.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::auth::AuthError;

/// The gs2 channel-binding flag the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CbFlag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports binding but thinks the server does not.
    NotOffered,
    /// `p=<name>`: the client requires binding of type `name`.
    Required(String),
}

/// A parsed client-first-message, borrowing from the original text.
#[derive(Debug)]
pub(super) struct ClientFirst<'a> {
    pub(super) cb_flag: CbFlag,
    /// The exact gs2 header as sent (flag, authzid and both commas); the client-final `c=`
    /// attribute must repeat it.
    pub(super) gs2_header: &'a str,
    /// client-first-message-bare, part of the AuthMessage.
    pub(super) bare: &'a str,
    pub(super) nonce: &'a str,
}

/// A parsed client-final-message.
#[derive(Debug)]
pub(super) struct ClientFinal<'a> {
    /// Decoded `c=` attribute: gs2 header followed by channel-binding data.
    pub(super) channel_binding: Vec<u8>,
    pub(super) nonce: &'a str,
    /// client-final-message-without-proof, part of the AuthMessage.
    pub(super) without_proof: &'a str,
    pub(super) proof: [u8; 32],
}

/// Returns the value of `attr` if it is `<key>=<value>`.
fn value_of(attr: &str, key: char) -> Option<&str> {
    attr.strip_prefix(key)?.strip_prefix('=')
}

/// True for a syntactically valid optional extension attribute (`<letter>=<value>`).
fn is_extension(attr: &str) -> bool {
    let mut chars = attr.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic()) && chars.next() == Some('=')
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E (visible ASCII except comma), at least one character.
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parses `gs2-header client-first-message-bare`. The user name (`n=`) is ignored, as Postgres
/// takes it from the startup packet; an authzid (`a=`) is accepted and ignored; a mandatory
/// extension (`m=`) is rejected.
pub(super) fn parse_client_first(data: &str) -> Result<ClientFirst<'_>, AuthError> {
    let mut parts = data.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authzid = parts
        .next()
        .ok_or(AuthError::Malformed("gs2 header is incomplete"))?;
    let bare = parts
        .next()
        .ok_or(AuthError::Malformed("gs2 header is incomplete"))?;
    let cb_flag = match flag {
        "n" => CbFlag::NotSupported,
        "y" => CbFlag::NotOffered,
        _ => match value_of(flag, 'p') {
            Some(name) if !name.is_empty() => CbFlag::Required(name.to_owned()),
            _ => return Err(AuthError::Malformed("invalid channel-binding flag")),
        },
    };
    if !authzid.is_empty() && value_of(authzid, 'a').is_none() {
        return Err(AuthError::Malformed("invalid authzid in gs2 header"));
    }
    let gs2_header = data
        .get(..flag.len() + authzid.len() + 2)
        .ok_or(AuthError::Malformed("gs2 header is incomplete"))?;

    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if value_of(first, 'm').is_some() {
        return Err(AuthError::Malformed(
            "mandatory SCRAM extensions are not supported",
        ));
    }
    if value_of(first, 'n').is_none() {
        return Err(AuthError::Malformed("client-first-message lacks user name"));
    }
    let nonce = attrs
        .next()
        .and_then(|a| value_of(a, 'r'))
        .ok_or(AuthError::Malformed("client-first-message lacks nonce"))?;
    if !is_valid_nonce(nonce) {
        return Err(AuthError::Malformed("invalid client nonce"));
    }
    if !attrs.all(is_extension) {
        return Err(AuthError::Malformed(
            "invalid attribute in client-first-message",
        ));
    }
    Ok(ClientFirst {
        cb_flag,
        gs2_header,
        bare,
        nonce,
    })
}

/// Parses `c=<b64>,r=<nonce>[,extensions],p=<b64 proof>`; the proof must be the last attribute
/// and decode to exactly 32 bytes.
pub(super) fn parse_client_final(data: &str) -> Result<ClientFinal<'_>, AuthError> {
    let (without_proof, proof_b64) = data
        .rsplit_once(",p=")
        .ok_or(AuthError::Malformed("client-final-message lacks proof"))?;
    let proof_bytes = STANDARD
        .decode(proof_b64)
        .map_err(|_| AuthError::Malformed("client proof is not valid base64"))?;
    let proof: [u8; 32] = proof_bytes
        .try_into()
        .map_err(|_| AuthError::Malformed("client proof has the wrong length"))?;

    let mut attrs = without_proof.split(',');
    let cbind_b64 = attrs
        .next()
        .and_then(|a| value_of(a, 'c'))
        .ok_or(AuthError::Malformed(
            "client-final-message lacks channel binding",
        ))?;
    let channel_binding = STANDARD
        .decode(cbind_b64)
        .map_err(|_| AuthError::Malformed("channel binding is not valid base64"))?;
    let nonce = attrs
        .next()
        .and_then(|a| value_of(a, 'r'))
        .ok_or(AuthError::Malformed("client-final-message lacks nonce"))?;
    if !attrs.all(is_extension) {
        return Err(AuthError::Malformed(
            "invalid attribute in client-final-message",
        ));
    }
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

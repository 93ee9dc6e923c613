//! SCRAM-SHA-256 as the server side (RFC 5802/7677 as Postgres implements it): verifiers in
//! Postgres' `rolpassword` format, mock verifiers for unknown users, and the exchange state machine.

mod endpoint;
mod message;
#[cfg(test)]
mod tests;

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;
pub use endpoint::tls_server_end_point;
use message::CbFlag;

/// Iteration count for verifiers we generate (Postgres' default `scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// SASL mechanism name without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Length of the random salt for generated verifiers (as Postgres).
const SALT_LEN: usize = 16;
/// Random bytes appended (base64) to the client nonce (as Postgres).
const SERVER_NONCE_LEN: usize = 18;
/// The only channel-binding type we support.
const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// HMAC-SHA-256 over the concatenation of `parts`. All our keys are 32 bytes, shorter than the
/// 64-byte block, so zero-padding them to a block is exactly HMAC's own key handling (RFC 2104)
/// and construction cannot fail.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Decodes base64 into exactly 32 bytes.
fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

/// A stored SCRAM-SHA-256 secret: enough to verify a client's proof, never enough to log in as
/// the client. `Debug` shows only the iteration count.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count (at least 1).
    pub iterations: u32,
    /// PBKDF2 salt (non-empty).
    pub salt: Vec<u8>,
    /// SHA-256(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ScramVerifier {
    /// Postgres' `rolpassword` format:
    /// `SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl ScramVerifier {
    /// Parses Postgres' `rolpassword` format (see the `Display` impl). The iteration count must be
    /// at least 1, the salt non-empty and both keys exactly 32 bytes.
    pub fn parse(s: &str) -> Result<ScramVerifier, AuthError> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(AuthError::InvalidVerifier("missing SCRAM-SHA-256$ prefix"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(AuthError::InvalidVerifier("missing '$' before keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(AuthError::InvalidVerifier("missing ':' after iterations"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| AuthError::InvalidVerifier("iteration count is not a number"))?;
        if iterations == 0 {
            return Err(AuthError::InvalidVerifier("iteration count is zero"));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| AuthError::InvalidVerifier("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(AuthError::InvalidVerifier("salt is empty"));
        }
        let (stored, server) = keys
            .split_once(':')
            .ok_or(AuthError::InvalidVerifier("missing ':' between keys"))?;
        let stored_key = decode_key(stored).ok_or(AuthError::InvalidVerifier(
            "stored key is not 32 bytes of base64",
        ))?;
        let server_key = decode_key(server).ok_or(AuthError::InvalidVerifier(
            "server key is not 32 bytes of base64",
        ))?;
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derives the verifier for `password`. Postgres first applies SASLprep (RFC 4013) to the
    /// password, falling back to the raw bytes when that fails; we always use the raw UTF-8 bytes.
    /// This is identical for ASCII passwords (and any password SASLprep leaves unchanged), but a
    /// non-ASCII password that SASLprep would normalise (e.g. non-NFKC text, non-ASCII spaces,
    /// soft hyphens) yields a different verifier than Postgres' and will not interoperate with
    /// clients that apply SASLprep. `iterations` of 0 is treated as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let iterations = iterations.max(1);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// A new verifier for `password` with a random 16-byte salt and [`DEFAULT_ITERATIONS`]
    /// (what the CLI prints for users to put in the configuration).
    pub fn generate(password: &str) -> ScramVerifier {
        let salt: [u8; SALT_LEN] = rand::random();
        ScramVerifier::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// A made-up verifier for a user that does not exist, stable per user name and per process
    /// (HMAC of the name under a random per-process key), so an attacker cannot tell unknown users
    /// from wrong passwords: the salt is the same on every attempt, and no proof ever matches.
    pub fn mock(user: &str, process_key: &[u8; 32]) -> ScramVerifier {
        let derive = |label: &[u8]| hmac(process_key, &[label, b"\0", user.as_bytes()]);
        let salt = derive(b"pgsluice scram mock salt");
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: derive(b"pgsluice scram mock stored key"),
            server_key: derive(b"pgsluice scram mock server key"),
        }
    }
}

/// Channel binding the server can offer for this connection.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Plain TCP (or TLS without a usable certificate hash): only SCRAM-SHA-256.
    None,
    /// TLS with `tls-server-end-point`: the value of [`tls_server_end_point`] for our certificate.
    TlsServerEndPoint(Vec<u8>),
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelBinding::None => f.write_str("None"),
            ChannelBinding::TlsServerEndPoint(_) => f.write_str("TlsServerEndPoint(..)"),
        }
    }
}

/// Where a [`ScramServer`] is in the exchange.
enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// What the client-final `c=` must decode to: gs2 header + binding data.
        expected_cbind: Vec<u8>,
        /// Client nonce + server nonce.
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    /// Finished, successfully or not; any further message is an error.
    Done,
}

/// Server side of one SCRAM-SHA-256 exchange. Drive it with `client_first` (SASLInitialResponse)
/// then `client_final` (SASLResponse); any error ends the exchange (send the client an error and
/// close). Only a successful `client_final` means the client is authenticated.
pub struct ScramServer {
    verifier: ScramVerifier,
    channel_binding: ChannelBinding,
    state: State,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitingClientFirst => "AwaitingClientFirst",
            State::AwaitingClientFinal { .. } => "AwaitingClientFinal",
            State::Done => "Done",
        };
        f.debug_struct("ScramServer")
            .field("channel_binding", &self.channel_binding)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// Starts an exchange against `verifier` (use [`ScramVerifier::mock`] for unknown users).
    pub fn new(verifier: ScramVerifier, channel_binding: ChannelBinding) -> Self {
        ScramServer {
            verifier,
            channel_binding,
            state: State::AwaitingClientFirst,
        }
    }

    /// Mechanisms to advertise in AuthenticationSASL: `["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]`
    /// when binding is available, else `["SCRAM-SHA-256"]`.
    pub fn mechanisms(&self) -> Vec<&'static str> {
        match self.channel_binding {
            ChannelBinding::None => vec![SCRAM_SHA_256],
            ChannelBinding::TlsServerEndPoint(_) => vec![SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
        }
    }

    /// Handles SASLInitialResponse; returns the server-first-message for
    /// AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(
            std::mem::replace(&mut self.state, State::Done),
            State::AwaitingClientFirst
        ) {
            return Err(AuthError::Malformed("unexpected SASLInitialResponse"));
        }
        let plus = match (mechanism, &self.channel_binding) {
            (SCRAM_SHA_256, _) => false,
            (SCRAM_SHA_256_PLUS, ChannelBinding::TlsServerEndPoint(_)) => true,
            _ => return Err(AuthError::UnsupportedMechanism(mechanism.to_owned())),
        };
        let data = std::str::from_utf8(data)
            .map_err(|_| AuthError::Malformed("client-first-message is not UTF-8"))?;
        let msg = message::parse_client_first(data)?;
        let binding_data = self.binding_data(&msg.cb_flag, plus)?;

        let server_random: [u8; SERVER_NONCE_LEN] = rand::random();
        let nonce = format!("{}{}", msg.nonce, STANDARD.encode(server_random));
        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let mut expected_cbind = msg.gs2_header.as_bytes().to_vec();
        expected_cbind.extend_from_slice(binding_data);
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            expected_cbind,
            nonce,
            client_first_bare: msg.bare.to_owned(),
            server_first,
        };
        Ok(reply)
    }

    /// Checks the gs2 flag against the chosen mechanism and what we offered; returns the binding
    /// data the client must echo in `c=`.
    fn binding_data(&self, flag: &CbFlag, plus: bool) -> Result<&[u8], AuthError> {
        match (flag, plus, &self.channel_binding) {
            (CbFlag::Required(name), true, ChannelBinding::TlsServerEndPoint(hash))
                if name == TLS_SERVER_END_POINT =>
            {
                Ok(hash)
            }
            (CbFlag::NotSupported, false, _) => Ok(&[]),
            // "y" is a downgrade if we did offer binding.
            (CbFlag::NotOffered, false, ChannelBinding::None) => Ok(&[]),
            _ => Err(AuthError::ChannelBindingMismatch),
        }
    }

    /// Handles SASLResponse; verifies the proof; returns server-final-message for
    /// AuthenticationSASLFinal.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFinal {
            expected_cbind,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(AuthError::Malformed("unexpected SASLResponse"));
        };
        let data = std::str::from_utf8(data)
            .map_err(|_| AuthError::Malformed("client-final-message is not UTF-8"))?;
        let msg = message::parse_client_final(data)?;
        if msg.channel_binding != expected_cbind {
            return Err(AuthError::ChannelBindingMismatch);
        }
        if msg.nonce != nonce {
            return Err(AuthError::Malformed("nonce does not match"));
        }
        let auth_message = format!(
            "{},{},{}",
            client_first_bare, server_first, msg.without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = msg.proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(computed.ct_eq(&self.verifier.stored_key)) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

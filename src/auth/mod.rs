//! Client authentication performed by the proxy acting as the server: credential classification,
//! cleartext checks, md5 and SCRAM-SHA-256 (sans-IO; the session layer moves the bytes).

pub mod md5;
pub mod scram;

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why an authentication step failed. Callers should send the client the same generic
/// "password authentication failed" error for `WrongPassword` whatever the user, so unknown users
/// and wrong passwords look alike.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The proof/response did not match (also used for unknown users).
    #[error("password authentication failed")]
    WrongPassword,
    /// A client message that breaks the SCRAM/md5 grammar.
    #[error("malformed authentication message: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism we do not support or did not offer.
    #[error("unsupported SASL mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// The client asked for binding we did not offer, or the binding data differs.
    #[error("SCRAM channel binding mismatch")]
    ChannelBindingMismatch,
    /// A configured verifier that does not parse.
    #[error("invalid password verifier: {0}")]
    InvalidVerifier(&'static str),
    /// The method cannot be used with the stored credential (e.g. md5 with a SCRAM verifier).
    #[error("authentication method not supported for this credential: {0}")]
    NotSupportedForCredential(&'static str),
}

/// What the proxy stores to check a client's password. `Debug` never prints the secret.
#[derive(Clone)]
pub enum Credential {
    /// A plaintext password (works with every method).
    Plain(String),
    /// A SCRAM-SHA-256 verifier (works with SCRAM and cleartext).
    Scram(scram::ScramVerifier),
    /// `"md5"` + 32 lowercase hex digits, as Postgres stores it (works with md5 and cleartext).
    Md5Hash(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Plain(_) => f.write_str("Plain(<redacted>)"),
            Credential::Scram(v) => f.debug_tuple("Scram").field(v).finish(),
            Credential::Md5Hash(_) => f.write_str("Md5Hash(<redacted>)"),
        }
    }
}

impl Credential {
    /// Classifies a configured password string the way Postgres classifies `rolpassword`:
    /// `SCRAM-SHA-256$...` is a SCRAM verifier, `md5` + 32 lowercase hex digits an md5 hash,
    /// anything else plaintext. Unlike Postgres, a string that starts with `SCRAM-SHA-256$` but does
    /// not parse is an error (`InvalidVerifier`) rather than silently becoming a plaintext password.
    pub fn parse(s: &str) -> Result<Credential, AuthError> {
        if s.starts_with("SCRAM-SHA-256$") {
            return scram::ScramVerifier::parse(s).map(Credential::Scram);
        }
        if is_md5_hash(s) {
            return Ok(Credential::Md5Hash(s.to_owned()));
        }
        Ok(Credential::Plain(s.to_owned()))
    }

    /// A SCRAM verifier to run a SCRAM exchange against this credential. Plaintext passwords get a
    /// fresh random salt each call (4096 PBKDF2 iterations: cache the result if that matters); md5
    /// hashes cannot be used for SCRAM.
    pub fn scram_verifier(&self) -> Result<scram::ScramVerifier, AuthError> {
        match self {
            Credential::Plain(p) => Ok(scram::ScramVerifier::generate(p)),
            Credential::Scram(v) => Ok(v.clone()),
            Credential::Md5Hash(_) => Err(AuthError::NotSupportedForCredential(
                "SCRAM needs a plaintext password or SCRAM verifier, not an md5 hash",
            )),
        }
    }
}

/// True for `"md5"` followed by exactly 32 lowercase hex digits (Postgres' md5 `rolpassword` form).
fn is_md5_hash(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("md5")
        && s.bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Constant-time equality of two byte strings whose lengths may differ: both are hashed first so
/// the comparison time does not depend on where (or whether) they differ.
pub(crate) fn ct_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    bool::from(ha.as_slice().ct_eq(hb.as_slice()))
}

/// Constant-time check of a cleartext password message against a credential (works for all three
/// kinds: derive and compare for SCRAM and md5). The SCRAM check uses the password's raw UTF-8
/// bytes (no SASLprep, see [`scram::ScramVerifier::from_password`]).
pub fn verify_cleartext(user: &str, credential: &Credential, password: &str) -> bool {
    match credential {
        Credential::Plain(stored) => ct_eq_bytes(stored.as_bytes(), password.as_bytes()),
        Credential::Md5Hash(stored) => ct_eq_bytes(
            stored.as_bytes(),
            md5::hash_password(user, password).as_bytes(),
        ),
        Credential::Scram(v) => {
            let derived = scram::ScramVerifier::from_password(password, &v.salt, v.iterations);
            let stored_ok = derived.stored_key.ct_eq(&v.stored_key);
            let server_ok = derived.server_key.ct_eq(&v.server_key);
            bool::from(stored_ok & server_ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classifies_scram_md5_and_plain() {
        let scram = postgres_protocol::password::scram_sha_256(b"secret");
        assert!(matches!(
            Credential::parse(&scram),
            Ok(Credential::Scram(_))
        ));
        let md5 = md5::hash_password("alice", "secret");
        assert!(matches!(
            Credential::parse(&md5),
            Ok(Credential::Md5Hash(_))
        ));
        assert!(matches!(
            Credential::parse("secret"),
            Ok(Credential::Plain(_))
        ));
        assert!(matches!(Credential::parse(""), Ok(Credential::Plain(_))));
        // Not exactly "md5" + 32 lowercase hex: plaintext, as in Postgres.
        let upper = md5.to_uppercase().replacen("MD5", "md5", 1);
        assert!(matches!(
            Credential::parse(&upper),
            Ok(Credential::Plain(_))
        ));
        assert!(matches!(
            Credential::parse(&md5[..34]),
            Ok(Credential::Plain(_))
        ));
        assert!(matches!(
            Credential::parse("SCRAM-SHA-256$bogus"),
            Err(AuthError::InvalidVerifier(_))
        ));
    }

    #[test]
    fn debug_does_not_leak_secrets() {
        let plain = Credential::parse("hunter2").unwrap();
        assert!(!format!("{plain:?}").contains("hunter2"));
        let md5 = Credential::parse(&md5::hash_password("bob", "hunter2")).unwrap();
        assert!(!format!("{md5:?}").contains(&md5::hash_password("bob", "hunter2")[3..]));
        let v = scram::ScramVerifier::generate("hunter2");
        let shown = format!("{:?}", Credential::Scram(v.clone()));
        assert!(!shown.contains(&v.to_string()[20..]));
    }

    #[test]
    fn verify_cleartext_all_kinds() {
        let plain = Credential::Plain("pw".into());
        assert!(verify_cleartext("u", &plain, "pw"));
        assert!(!verify_cleartext("u", &plain, "pw2"));
        assert!(!verify_cleartext("u", &plain, ""));

        let md5 = Credential::parse(&md5::hash_password("u", "pw")).unwrap();
        assert!(verify_cleartext("u", &md5, "pw"));
        assert!(!verify_cleartext("other", &md5, "pw"));
        assert!(!verify_cleartext("u", &md5, "nope"));

        let scram = Credential::parse(&postgres_protocol::password::scram_sha_256(b"pw")).unwrap();
        assert!(verify_cleartext("u", &scram, "pw"));
        assert!(!verify_cleartext("u", &scram, "pW"));
    }

    #[test]
    fn scram_verifier_from_credential() {
        let plain = Credential::Plain("pw".into());
        assert!(verify_cleartext(
            "u",
            &Credential::Scram(plain.scram_verifier().unwrap()),
            "pw"
        ));
        let md5 = Credential::parse(&md5::hash_password("u", "pw")).unwrap();
        assert!(matches!(
            md5.scram_verifier(),
            Err(AuthError::NotSupportedForCredential(_))
        ));
    }
}

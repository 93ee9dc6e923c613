//! `Secret`: passwords and verifiers from the configuration, kept out of `Debug` output.

use std::fmt;

use serde::Deserialize;

/// A password or password verifier. `Debug` prints `Secret(***)` so configs can be logged.
///
/// Read the value only where it is used, through [`Secret::expose`].
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

/// What a stored credential is (by shape only; nothing is verified cryptographically).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordKind {
    /// The password itself.
    Plaintext,
    /// A well-formed "SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>" verifier.
    ScramSha256,
    /// "md5" followed by 32 hex digits (md5(password + user)).
    Md5,
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value; call only where it is actually needed.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Classifies the value as plaintext, SCRAM verifier or md5 hash.
    ///
    /// A value that starts like a SCRAM verifier but is malformed counts as plaintext here;
    /// `validate()` rejects such values so they never reach authentication.
    pub fn kind(&self) -> PasswordKind {
        if is_scram_verifier(&self.0) {
            PasswordKind::ScramSha256
        } else if is_md5_hash(&self.0) {
            PasswordKind::Md5
        } else {
            PasswordKind::Plaintext
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The prefix that marks a SCRAM-SHA-256 verifier.
pub(crate) const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Shape check: `SCRAM-SHA-256$<digits>:<base64>$<base64>:<base64>` with a non-zero iteration count.
pub(crate) fn is_scram_verifier(value: &str) -> bool {
    let Some(rest) = value.strip_prefix(SCRAM_PREFIX) else {
        return false;
    };
    let Some((iter_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored, server))) =
        (iter_salt.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    let iterations_ok = !iterations.is_empty()
        && iterations.bytes().all(|b| b.is_ascii_digit())
        && iterations.parse::<u32>().is_ok_and(|n| n > 0);
    iterations_ok && is_base64(salt) && is_base64(stored) && is_base64(server)
}

/// Shape check: "md5" + 32 hex digits.
pub(crate) fn is_md5_hash(value: &str) -> bool {
    value
        .strip_prefix("md5")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Standard padded base64: non-empty, length a multiple of 4, padding only at the end.
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    !body.is_empty()
        && text.len().is_multiple_of(4)
        && padding <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5c3RvcmU=:c2VydmVya2V5c2VydmVya2V5c2VydmVya2V5c2VyaQ==";

    #[test]
    fn debug_hides_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn classifies_shapes() {
        assert_eq!(Secret::new(VERIFIER).kind(), PasswordKind::ScramSha256);
        assert_eq!(
            Secret::new("md5d41d8cd98f00b204e9800998ecf8427e").kind(),
            PasswordKind::Md5
        );
        assert_eq!(Secret::new("plain").kind(), PasswordKind::Plaintext);
        assert_eq!(
            Secret::new("md5d41d8cd98f00b204e9800998ecf8427").kind(),
            PasswordKind::Plaintext
        );
    }

    #[test]
    fn rejects_malformed_verifiers() {
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$0:c2FsdA==$c3Q=:c2U=",
            "SCRAM-SHA-256$x:c2FsdA==$c3Q=:c2U=",
            "SCRAM-SHA-256$4096:c2FsdA=$c3Q=:c2U=",
            "SCRAM-SHA-256$4096:c2FsdA==$c3Q=",
            "SCRAM-SHA-256$4096:c2Fs!A==$c3Q=:c2U=",
            "SCRAM-SHA-256$4096:$c3Q=:c2U=",
        ] {
            assert!(!is_scram_verifier(bad), "{bad}");
        }
        assert!(is_scram_verifier("SCRAM-SHA-256$4096:c2FsdA==$c3Q=:c2U="));
    }
}

//! Postgres md5 password authentication (AuthenticationMD5Password): salts, stored hashes and
//! constant-time checking of the client's salted response.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::{AuthError, Credential};

/// A fresh random 4-byte salt for AuthenticationMD5Password; must be new for every attempt so a
/// captured response cannot be replayed.
pub fn random_salt() -> [u8; 4] {
    rand::random()
}

/// Lowercase hex MD5 of the concatenation of `parts`.
fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0x0f), 16).unwrap_or('0'));
    }
    out
}

/// The hash Postgres stores for md5 passwords: `"md5" + hex(md5(password + user))`.
pub fn hash_password(user: &str, password: &str) -> String {
    format!("md5{}", md5_hex(&[password.as_bytes(), user.as_bytes()]))
}

/// Checks the client's PasswordMessage for md5 authentication:
/// `"md5" + hex(md5(hex(md5(password + user)) + salt))`, computed from a plaintext password or a
/// stored md5 hash, compared in constant time with `response`. A SCRAM verifier cannot serve md5
/// (`NotSupportedForCredential`). Note the stored md5 hash is salted with the user name, so a hash
/// configured for another user name never matches.
pub fn verify(
    user: &str,
    credential: &Credential,
    salt: [u8; 4],
    response: &str,
) -> Result<bool, AuthError> {
    let stored =
        match credential {
            Credential::Plain(password) => hash_password(user, password),
            Credential::Md5Hash(hash) => hash.clone(),
            Credential::Scram(_) => return Err(AuthError::NotSupportedForCredential(
                "md5 authentication needs a plaintext password or md5 hash, not a SCRAM verifier",
            )),
        };
    let inner = stored
        .strip_prefix("md5")
        .ok_or(AuthError::InvalidVerifier(
            "md5 hash must start with \"md5\"",
        ))?;
    let expected = format!("md5{}", md5_hex(&[inner.as_bytes(), &salt]));
    let response = response.as_bytes();
    // Both are 35 bytes for a well-formed response; a wrong length is simply a mismatch.
    Ok(response.len() == expected.len() && bool::from(expected.as_bytes().ct_eq(response)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    #[test]
    fn hash_password_matches_postgres_protocol() {
        assert_eq!(
            hash_password("alice", "secret"),
            postgres_protocol::password::md5(b"secret", "alice")
        );
        // Known value: md5("foobar") with user "bar" and password "foo".
        assert_eq!(
            hash_password("bar", "foo"),
            "md53858f62230ac3c915f300c664312c63f"
        );
    }

    #[test]
    fn verify_against_postgres_protocol_client() {
        let salt = random_salt();
        let response = md5_hash(b"alice", b"secret", salt);
        let plain = Credential::Plain("secret".into());
        let hashed = Credential::Md5Hash(hash_password("alice", "secret"));
        assert_eq!(verify("alice", &plain, salt, &response), Ok(true));
        assert_eq!(verify("alice", &hashed, salt, &response), Ok(true));

        let wrong = md5_hash(b"alice", b"Secret", salt);
        assert_eq!(verify("alice", &plain, salt, &wrong), Ok(false));
        assert_eq!(verify("alice", &hashed, salt, &wrong), Ok(false));
        let other_salt = [salt[0] ^ 1, salt[1], salt[2], salt[3]];
        assert_eq!(verify("alice", &plain, other_salt, &response), Ok(false));
        assert_eq!(verify("bob", &plain, salt, &response), Ok(false));
    }

    #[test]
    fn verify_rejects_garbage_without_panicking() {
        let plain = Credential::Plain("secret".into());
        let salt = [1, 2, 3, 4];
        for response in ["", "md5", "md5zz", "x".repeat(35).as_str(), "\u{1F600}"] {
            assert_eq!(verify("alice", &plain, salt, response), Ok(false));
        }
    }

    #[test]
    fn verify_refuses_scram_credential() {
        let v = crate::auth::scram::ScramVerifier::generate("secret");
        let response = md5_hash(b"alice", b"secret", [0; 4]);
        assert!(matches!(
            verify("alice", &Credential::Scram(v), [0; 4], &response),
            Err(AuthError::NotSupportedForCredential(_))
        ));
    }
}

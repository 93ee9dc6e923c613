//! Client authentication as the proxy does it: trust, cleartext (TLS only unless allowed), md5 and
//! SCRAM-SHA-256 (with channel binding over TLS), from credentials prepared once per config. Unknown
//! users go through the same exchange against a mock verifier and fail exactly like a wrong password.

use std::collections::HashMap;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::ClientError;
use crate::auth::scram::{self, ChannelBinding, ScramServer, ScramVerifier};
use crate::auth::{self, md5, AuthError, Credential};
use crate::config::{AuthMethod, Config};
use crate::net::{self, Stream};
use crate::protocol::backend::{self, Authentication};
use crate::protocol::{frontend, Frame, Framer};

/// What the proxy needs to check one user's password.
#[derive(Debug)]
struct UserAuth {
    method: AuthMethod,
    credential: Option<Credential>,
    /// Derived once from a plaintext password (or the configured verifier), so SCRAM logins cost no
    /// key derivation.
    scram: Option<ScramVerifier>,
}

/// Credentials of every configured user, prepared once per config generation.
#[derive(Debug)]
pub struct AuthTable {
    users: HashMap<String, UserAuth>,
    default_method: AuthMethod,
    allow_cleartext_without_tls: bool,
    mock_key: [u8; 32],
}

impl AuthTable {
    /// Parses every user's credential. A credential that does not parse is a config error (validation
    /// should have caught it), reported with the user's name.
    pub fn build(config: &Config) -> Result<AuthTable, String> {
        let mut users = HashMap::new();
        for user in &config.users {
            let credential = match &user.password {
                Some(secret) => Some(
                    Credential::parse(secret.expose())
                        .map_err(|e| format!("users.{}.password: {e}", user.name))?,
                ),
                None => None,
            };
            let scram = credential.as_ref().and_then(|c| c.scram_verifier().ok());
            users.insert(
                user.name.clone(),
                UserAuth {
                    method: config.auth_method_for(user),
                    credential,
                    scram,
                },
            );
        }
        Ok(AuthTable {
            users,
            default_method: config.auth.method,
            allow_cleartext_without_tls: config.auth.allow_cleartext_without_tls,
            mock_key: rand::random(),
        })
    }
}

/// Runs the authentication exchange for `user` on `stream`. Does not send AuthenticationOk.
pub async fn authenticate(
    table: &AuthTable,
    user: &str,
    stream: &mut Stream,
    buf: &mut BytesMut,
    framer: &Framer,
    tls_cert: Option<&[u8]>,
) -> Result<(), ClientError> {
    let fail = || ClientError::AuthFailed {
        user: user.to_string(),
    };
    let Some(entry) = table.users.get(user) else {
        // Same exchange as a real user, so timing and messages do not reveal who exists.
        let mock = ScramVerifier::mock(user, &table.mock_key);
        return match table.default_method {
            AuthMethod::Md5 => {
                let _ = md5_exchange(stream, buf, framer, user, None).await?;
                Err(fail())
            }
            _ => match scram_exchange(stream, buf, framer, mock, tls_cert).await {
                Ok(()) | Err(ClientError::Auth(AuthError::WrongPassword)) => Err(fail()),
                Err(other) => Err(other),
            },
        };
    };
    let method = match (entry.method, &entry.credential) {
        // md5 cannot be checked against a SCRAM verifier; Postgres falls back to SCRAM too.
        (AuthMethod::Md5, Some(Credential::Scram(_))) => AuthMethod::ScramSha256,
        (method, _) => method,
    };
    match method {
        AuthMethod::Trust => Ok(()),
        AuthMethod::Cleartext => {
            if !stream.is_tls() && !table.allow_cleartext_without_tls {
                return Err(ClientError::CleartextWithoutTls);
            }
            send_auth(stream, &Authentication::CleartextPassword).await?;
            let frame = read_password(stream, buf, framer).await?;
            let password = frontend::parse_password(frame.body()).map_err(ClientError::Protocol)?;
            let ok = entry
                .credential
                .as_ref()
                .is_some_and(|c| auth::verify_cleartext(user, c, password));
            if ok {
                Ok(())
            } else {
                Err(fail())
            }
        }
        AuthMethod::Md5 => {
            match md5_exchange(stream, buf, framer, user, entry.credential.as_ref()).await? {
                true => Ok(()),
                false => Err(fail()),
            }
        }
        AuthMethod::ScramSha256 => {
            let verifier = entry
                .scram
                .clone()
                .unwrap_or_else(|| ScramVerifier::mock(user, &table.mock_key));
            scram_exchange(stream, buf, framer, verifier, tls_cert)
                .await
                .map_err(|e| match e {
                    ClientError::Auth(AuthError::WrongPassword) => fail(),
                    other => other,
                })
        }
    }
}

async fn md5_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    framer: &Framer,
    user: &str,
    credential: Option<&Credential>,
) -> Result<bool, ClientError> {
    let salt = md5::random_salt();
    send_auth(stream, &Authentication::Md5Password { salt }).await?;
    let frame = read_password(stream, buf, framer).await?;
    let response = frontend::parse_password(frame.body()).map_err(ClientError::Protocol)?;
    Ok(match credential {
        Some(credential) => md5::verify(user, credential, salt, response).unwrap_or(false),
        None => false,
    })
}

async fn scram_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    framer: &Framer,
    verifier: ScramVerifier,
    tls_cert: Option<&[u8]>,
) -> Result<(), ClientError> {
    let binding = match (stream.is_tls(), tls_cert) {
        (true, Some(cert)) => ChannelBinding::TlsServerEndPoint(scram::tls_server_end_point(cert)),
        _ => ChannelBinding::None,
    };
    let mut server = ScramServer::new(verifier, binding);
    let mechanisms = server
        .mechanisms()
        .into_iter()
        .map(str::to_string)
        .collect();
    send_auth(stream, &Authentication::Sasl { mechanisms }).await?;
    let frame = read_password(stream, buf, framer).await?;
    let (mechanism, data) =
        frontend::parse_sasl_initial_response(frame.body()).map_err(ClientError::Protocol)?;
    let first = server
        .client_first(mechanism, data)
        .map_err(ClientError::Auth)?;
    send_auth(stream, &Authentication::SaslContinue(first.into())).await?;
    let frame = read_password(stream, buf, framer).await?;
    let last = server
        .client_final(frame.body())
        .map_err(ClientError::Auth)?;
    send_auth(stream, &Authentication::SaslFinal(last.into())).await?;
    Ok(())
}

async fn send_auth(stream: &mut Stream, auth: &Authentication) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    backend::encode_auth(auth, &mut out);
    stream.write_all(&out).await.map_err(ClientError::Io)
}

async fn read_password(
    stream: &mut Stream,
    buf: &mut BytesMut,
    framer: &Framer,
) -> Result<Frame, ClientError> {
    let frame = net::read_frame(stream, buf, framer).await?;
    if frame.tag() != frontend::tag::PASSWORD {
        return Err(ClientError::UnexpectedMessage {
            tag: frame.tag(),
            phase: "authentication",
        });
    }
    Ok(frame)
}

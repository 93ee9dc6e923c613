//! Semantic validation of a parsed `Config`: every problem collected at once, each with its key path.
//!
//! Only the configuration itself is checked: no files are opened and no hosts resolved.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use super::secret::{is_md5_hash, is_scram_verifier, SCRAM_PREFIX};
use super::{
    AuthMethod, ClientTlsMode, Config, DatabaseConfig, NodeRole, PasswordKind, PoolOverrides,
    PoolSettings, ServerTlsMode, UserConfig,
};

/// Smallest accepted `limits.max_message_size`: a startup packet alone may need 10000 bytes.
pub const MIN_MESSAGE_SIZE: usize = 16 << 10;

/// One semantic problem; `path` is the YAML key path, e.g. `databases[1].nodes[0].port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Accumulates errors in discovery order.
#[derive(Default)]
struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Runs every check; an empty result means the configuration is valid.
pub(super) fn collect(config: &Config) -> Vec<ValidationError> {
    let mut errors = Errors::default();
    check_listeners(config, &mut errors);
    check_limits(config, &mut errors);
    check_tls(config, &mut errors);
    if config.auth.method == AuthMethod::Cleartext && !cleartext_possible(config) {
        errors.push("auth.method", cleartext_message());
    }
    check_pool("pool", &config.pool, &mut errors);
    check_users(config, &mut errors);
    check_databases(config, &mut errors);
    check_pool_pairs(config, &mut errors);
    errors.0.extend(super::admin::check(config));
    let mut routing = Vec::new();
    super::routing::check_all(config, &mut routing);
    for (path, message) in routing {
        errors.push(path, message);
    }
    if config.logging.level.trim().is_empty() {
        errors.push("logging.level", "must not be empty");
    }
    errors.0.extend(config.health.validate(config));
    errors.0.extend(config.http.validate());
    errors.0
}

fn check_listeners(config: &Config, errors: &mut Errors) {
    if config.listeners.is_empty() {
        errors.push("listeners", "at least one listener is required");
    }
    let mut seen = HashSet::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let path = format!("listeners[{i}].address");
        match listener.address.parse::<SocketAddr>() {
            Err(_) => errors.push(
                path,
                format!(
                    "{:?} is not an IP address with a port (e.g. \"127.0.0.1:6432\" or \"[::]:6432\")",
                    listener.address
                ),
            ),
            Ok(addr) if !seen.insert(addr) => {
                errors.push(path, format!("duplicate listener address \"{addr}\""))
            }
            Ok(_) => {}
        }
    }
}

fn check_limits(config: &Config, errors: &mut Errors) {
    let limits = &config.limits;
    if limits.max_client_conn == 0 {
        errors.push("limits.max_client_conn", "must be at least 1");
    }
    for (i, user) in config.users.iter().enumerate() {
        if user.max_client_conn == Some(0) {
            errors.push(format!("users[{i}].max_client_conn"), "must be at least 1");
        }
    }
    for (i, db) in config.databases.iter().enumerate() {
        if db.max_client_conn == Some(0) {
            errors.push(
                format!("databases[{i}].max_client_conn"),
                "must be at least 1",
            );
        }
    }
    if limits.max_message_size < MIN_MESSAGE_SIZE {
        errors.push(
            "limits.max_message_size",
            format!("must be at least {MIN_MESSAGE_SIZE} bytes (16KiB)"),
        );
    }
    if limits.startup_timeout.is_zero() {
        errors.push("limits.startup_timeout", "must be greater than 0");
    }
}

fn check_tls(config: &Config, errors: &mut Errors) {
    let client = &config.client_tls;
    if client.mode != ClientTlsMode::Disable {
        for (key, value) in [
            ("cert_file", &client.cert_file),
            ("key_file", &client.key_file),
        ] {
            if value.is_none() {
                errors.push(
                    format!("client_tls.{key}"),
                    format!("required when client_tls.mode is {}", client.mode),
                );
            }
        }
    }
    let server = &config.server_tls;
    if server.mode == ServerTlsMode::VerifyFull && server.ca_file.is_none() {
        errors.push(
            "server_tls.ca_file",
            "required when server_tls.mode is verify-full",
        );
    }
    match (&server.cert_file, &server.key_file) {
        (Some(_), None) => errors.push(
            "server_tls.key_file",
            "required when server_tls.cert_file is set",
        ),
        (None, Some(_)) => errors.push(
            "server_tls.cert_file",
            "required when server_tls.key_file is set",
        ),
        _ => {}
    }
}

/// Cleartext passwords need TLS towards clients unless explicitly allowed without it.
fn cleartext_possible(config: &Config) -> bool {
    config.auth.allow_cleartext_without_tls || config.client_tls.mode != ClientTlsMode::Disable
}

fn cleartext_message() -> &'static str {
    "cleartext needs client_tls.mode prefer or require, or auth.allow_cleartext_without_tls: true"
}

/// `size >= 1` and `min_size <= size` for a resolved set of settings at `prefix`.
fn check_pool(prefix: &str, pool: &PoolSettings, errors: &mut Errors) {
    if pool.size == 0 {
        errors.push(format!("{prefix}.size"), "must be at least 1");
    } else if pool.min_size > pool.size {
        errors.push(
            format!("{prefix}.min_size"),
            format!("must be <= {prefix}.size ({})", pool.size),
        );
    }
    if pool.server_prepared_statements == 0 {
        errors.push(
            format!("{prefix}.server_prepared_statements"),
            "must be at least 1".to_string(),
        );
    }
    if pool.checkout_timeout.is_zero() {
        errors.push(
            format!("{prefix}.checkout_timeout"),
            "must be greater than 0",
        );
    }
    if pool.server_connect_timeout.is_zero() {
        errors.push(
            format!("{prefix}.server_connect_timeout"),
            "must be greater than 0",
        );
    }
}

/// Checks defaults + `overrides` only if the overrides set something (avoids repeating
/// errors of the global `pool` section for every database and user).
fn check_overrides(
    prefix: &str,
    base: &PoolSettings,
    overrides: &PoolOverrides,
    errors: &mut Errors,
) {
    if overrides != &PoolOverrides::default() {
        check_pool(prefix, &base.with_overrides(overrides), errors);
    }
}

fn check_users(config: &Config, errors: &mut Errors) {
    let mut seen = HashSet::new();
    for (i, user) in config.users.iter().enumerate() {
        let path = format!("users[{i}]");
        if user.name.is_empty() {
            errors.push(format!("{path}.name"), "required");
        } else if !seen.insert(user.name.as_str()) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate user \"{}\"", user.name),
            );
        }
        if user.server_user.as_deref() == Some("") {
            errors.push(format!("{path}.server_user"), "must not be empty");
        }
        check_password(config, &path, user, errors);
        check_overrides(&format!("{path}.pool"), &config.pool, &user.pool, errors);
    }
}

/// The stored password must fit the user's effective method.
fn check_password(config: &Config, path: &str, user: &UserConfig, errors: &mut Errors) {
    let method = config.auth_method_for(user);
    if user.auth_method == Some(AuthMethod::Cleartext) && !cleartext_possible(config) {
        errors.push(format!("{path}.auth_method"), cleartext_message());
    }
    let password_path = format!("{path}.password");
    let Some(password) = &user.password else {
        if method != AuthMethod::Trust {
            errors.push(
                password_path,
                format!("required when the auth method is {method}"),
            );
        }
        return;
    };
    let value = password.expose();
    if value.starts_with(SCRAM_PREFIX) && !is_scram_verifier(value) {
        errors.push(
            password_path,
            "malformed SCRAM verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>)",
        );
        return;
    }
    let kind = password.kind();
    let accepted = match method {
        AuthMethod::ScramSha256 => kind != PasswordKind::Md5,
        AuthMethod::Md5 => kind != PasswordKind::ScramSha256,
        AuthMethod::Cleartext => kind == PasswordKind::Plaintext,
        AuthMethod::Trust => true,
    };
    if !accepted {
        let what = if is_md5_hash(value) {
            "an md5 hash"
        } else {
            "a SCRAM verifier"
        };
        errors.push(
            password_path,
            format!("{what} cannot be used with auth method {method}"),
        );
    }
    if value.is_empty() {
        errors.push(format!("{path}.password"), "must not be empty");
    }
}

fn check_databases(config: &Config, errors: &mut Errors) {
    if config.databases.is_empty() {
        errors.push("databases", "at least one database is required");
    }
    let mut seen = HashSet::new();
    for (i, database) in config.databases.iter().enumerate() {
        let path = format!("databases[{i}]");
        if database.name.is_empty() {
            errors.push(format!("{path}.name"), "must not be empty");
        } else if !seen.insert(database.name.as_str()) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate database \"{}\"", database.name),
            );
        }
        if database.server_database.as_deref() == Some("") {
            errors.push(format!("{path}.server_database"), "must not be empty");
        }
        check_nodes(&path, database, errors);
        check_overrides(
            &format!("{path}.pool"),
            &config.pool,
            &database.pool,
            errors,
        );
    }
}

fn check_nodes(path: &str, database: &DatabaseConfig, errors: &mut Errors) {
    if database.nodes.is_empty() {
        errors.push(format!("{path}.nodes"), "at least one node is required");
    }
    let mut primaries = 0;
    let mut names = HashSet::new();
    for (j, node) in database.nodes.iter().enumerate() {
        let node_path = format!("{path}.nodes[{j}]");
        if node.host.is_empty() {
            errors.push(format!("{node_path}.host"), "required");
        }
        if node.port == 0 {
            errors.push(format!("{node_path}.port"), "must be between 1 and 65535");
        }
        if node.name.as_deref() == Some("") {
            errors.push(format!("{node_path}.name"), "must not be empty");
        } else if !names.insert(node.display_name()) {
            errors.push(
                format!("{node_path}.name"),
                format!("duplicate node \"{}\"", node.display_name()),
            );
        }
        if node.role == NodeRole::Primary {
            primaries += 1;
            if primaries == 2 {
                errors.push(
                    format!("{node_path}.role"),
                    "at most one node per database may have role primary",
                );
            }
        }
    }
}

/// Database and user overrides that are each fine may still clash once combined.
fn check_pool_pairs(config: &Config, errors: &mut Errors) {
    for (i, database) in config.databases.iter().enumerate() {
        let for_database = config.pool.with_overrides(&database.pool);
        if for_database.size == 0 || for_database.min_size > for_database.size {
            continue; // already reported for the database
        }
        for (j, user) in config.users.iter().enumerate() {
            let user_only = config.pool.with_overrides(&user.pool);
            if user_only.size == 0 || user_only.min_size > user_only.size {
                continue; // already reported for the user
            }
            let pool = config.pool_settings(database, user);
            if pool.min_size > pool.size {
                errors.push(
                    format!("users[{j}].pool"),
                    format!(
                        "with databases[{i}] (\"{}\"): min_size ({}) must be <= size ({})",
                        database.name, pool.min_size, pool.size
                    ),
                );
            }
        }
    }
}

//! Typed YAML configuration: the `Config` tree, its defaults, lookups and override resolution.
//!
//! Loading (environment interpolation + YAML parsing) lives in `load.rs`, checks in
//! `validate.rs`; human-readable durations and sizes in `duration.rs` / `bytesize.rs`.
//! Every struct rejects unknown keys and every field has a default (the `Default` impls below
//! are the single source of defaults), so only what `validate()` demands must be written.

pub mod admin;
pub mod bytesize;
pub mod duration;
mod health;
mod http;
mod listen;
mod load;
pub mod routing;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use admin::AdminConfig;
pub use health::HealthConfig;
pub use http::HttpConfig;
pub use listen::ListenOptions;
pub use load::{interpolate, load_file, load_str, parse_str};
pub use routing::{RoutingOverrides, RoutingSettings};
pub use secret::{PasswordKind, Secret};
pub use validate::{ValidationError, MIN_MESSAGE_SIZE};

/// Everything that can go wrong while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `${VAR}` references that could not be resolved (every one, each with its line).
    #[error("configuration interpolation failed:\n{}", .0.join("\n"))]
    Interpolation(Vec<String>),
    /// YAML syntax or type error, with serde-saphyr's location and snippet.
    #[error("invalid configuration syntax: {0}")]
    Parse(String),
    /// Semantic problems found by `Config::validate` (every one).
    #[error("invalid configuration:\n{}", join_lines(.0))]
    Invalid(Vec<ValidationError>),
}

fn join_lines(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole proxy configuration, as written in the YAML file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub limits: Limits,
    pub client_tls: ClientTls,
    pub server_tls: ServerTls,
    pub auth: AuthConfig,
    /// Defaults for every pool; databases and users may override them.
    pub pool: PoolSettings,
    /// Read/write routing defaults; databases and users may override most keys.
    pub routing: RoutingSettings,
    pub users: Vec<UserConfig>,
    pub databases: Vec<DatabaseConfig>,
    pub logging: LoggingConfig,
    /// Health checks of the nodes and replication lag limits.
    pub health: HealthConfig,
    /// HTTP endpoints (metrics, health, status); off unless `http.listen` is set.
    pub http: HttpConfig,
    /// The admin console (virtual database, allowed users).
    pub admin: AdminConfig,
    /// Listening socket options (SO_REUSEPORT for zero-downtime upgrades).
    pub listen: ListenOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            limits: Limits::default(),
            client_tls: ClientTls::default(),
            server_tls: ServerTls::default(),
            auth: AuthConfig::default(),
            pool: PoolSettings::default(),
            routing: RoutingSettings::default(),
            users: Vec::new(),
            databases: Vec::new(),
            logging: LoggingConfig::default(),
            health: HealthConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            listen: ListenOptions::default(),
        }
    }
}

impl Config {
    /// Effective pool settings for a (database, user) pair: defaults < database.pool < user.pool.
    pub fn pool_settings(&self, database: &DatabaseConfig, user: &UserConfig) -> PoolSettings {
        self.pool
            .with_overrides(&database.pool)
            .with_overrides(&user.pool)
    }

    /// Effective routing settings for a (database, user) pair: `routing` < database.routing <
    /// user.routing.
    pub fn routing_settings(
        &self,
        database: &DatabaseConfig,
        user: &UserConfig,
    ) -> RoutingSettings {
        self.routing
            .with_overrides(&database.routing)
            .with_overrides(&user.routing)
    }

    /// The user with this client-facing name.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The database with this client-facing name.
    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The authentication method clients must use for this user (user override, else `auth.method`).
    pub fn auth_method_for(&self, user: &UserConfig) -> AuthMethod {
        user.auth_method.unwrap_or(self.auth.method)
    }

    /// Checks every semantic rule and reports every problem at once, each with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let errors = validate::collect(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

/// A TCP address the proxy accepts clients on.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// "host:port"; must parse as a `SocketAddr` (an IP literal, not a host name).
    pub address: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            address: "127.0.0.1:6432".to_string(),
        }
    }
}

/// Process-wide limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Total client connections; above it new clients get SQLSTATE 53300.
    pub max_client_conn: usize,
    /// Largest accepted protocol frame; larger ones are refused with 08P01.
    #[serde(with = "bytesize")]
    pub max_message_size: usize,
    /// A client that has not finished startup and authentication within this is dropped.
    #[serde(with = "duration")]
    pub startup_timeout: Duration,
    /// Graceful drain time on SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Runtime worker threads; 0 = number of CPUs. Needs a restart to change.
    pub worker_threads: usize,
    /// How often the worker threads' CPU use is compared to place clients: new clients go to
    /// the first worker that is not busy, and clients move between workers (between
    /// transactions) to pack light load onto few threads or spread heavy load. 0 = off: new
    /// clients go round robin and never move.
    #[serde(with = "duration")]
    pub balance_interval: Duration,
}

impl Limits {
    /// The number of session worker threads `worker_threads` stands for (0: one per CPU).
    pub fn worker_count(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_conn: 10_000,
            max_message_size: 256 << 20,
            startup_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            worker_threads: 0,
            balance_interval: Duration::from_secs(1),
        }
    }
}

/// Writes an enum's YAML spelling, so messages quote values as the user writes them.
macro_rules! yaml_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The spelling used in the YAML file.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// TLS towards clients.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// Refuse SSLRequest; plaintext only.
    #[default]
    Disable,
    /// Offer TLS, accept plaintext too. Needs cert_file and key_file.
    Prefer,
    /// Refuse clients that do not upgrade to TLS. Needs cert_file and key_file.
    Require,
}
yaml_names!(ClientTlsMode { Disable => "disable", Prefer => "prefer", Require => "require" });

/// Client-facing TLS settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    /// PEM certificate chain; required unless mode is disable.
    pub cert_file: Option<PathBuf>,
    /// PEM private key; required unless mode is disable.
    pub key_file: Option<PathBuf>,
}

/// TLS towards nodes, with libpq's meaning of the modes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the node supports it, without certificate checks.
    #[default]
    Prefer,
    /// Fail if the node does not support TLS; no certificate checks.
    Require,
    /// TLS with the certificate checked against ca_file and the node host name.
    VerifyFull,
}
yaml_names!(ServerTlsMode {
    Disable => "disable",
    Prefer => "prefer",
    Require => "require",
    VerifyFull => "verify-full",
});

/// Node-facing TLS settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    /// PEM CA bundle; required for verify-full.
    pub ca_file: Option<PathBuf>,
    /// Optional client certificate for the nodes; cert_file and key_file go together.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How clients authenticate to the proxy.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    Cleartext,
    Trust,
}
yaml_names!(AuthMethod {
    ScramSha256 => "scram-sha-256",
    Md5 => "md5",
    Cleartext => "cleartext",
    Trust => "trust",
});

/// Client authentication defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Default method for users without their own `auth_method`.
    pub method: AuthMethod,
    /// Allow cleartext password auth on connections that are not TLS (default false).
    pub allow_cleartext_without_tls: bool,
}

/// When a server connection goes back to the pool.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// When the client disconnects.
    #[default]
    Session,
    /// At the end of each transaction.
    Transaction,
}
yaml_names!(PoolMode { Session => "session", Transaction => "transaction" });

/// Fully resolved pool settings (defaults < database.pool < user.pool).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// Maximum server connections of one pool; at least 1.
    pub size: usize,
    /// Server connections kept open even when idle; at most `size`.
    pub min_size: usize,
    /// A client waiting longer than this for a server connection gets an error.
    #[serde(with = "duration")]
    pub checkout_timeout: Duration,
    #[serde(with = "duration")]
    pub server_connect_timeout: Duration,
    /// Idle server connections above min_size are closed after this; 0 = never.
    #[serde(with = "duration")]
    pub server_idle_timeout: Duration,
    /// Server connections older than this are closed when idle; 0 = never.
    #[serde(with = "duration")]
    pub server_lifetime: Duration,
    /// Run when a session-mode client leaves; "" = none.
    pub reset_query: String,
    /// Transaction pooling: statements kept prepared per server connection (LRU); at least 1.
    pub server_prepared_statements: usize,
    /// A query running longer than this is cancelled on the server; 0 = never.
    #[serde(with = "duration")]
    pub query_timeout: Duration,
    /// A client idle inside a transaction longer than this is disconnected; 0 = never.
    #[serde(with = "duration")]
    pub idle_transaction_timeout: Duration,
    /// A client idle between transactions longer than this is disconnected; 0 = never.
    #[serde(with = "duration")]
    pub client_idle_timeout: Duration,
    /// A client waiting this long for a server connection gets a NOTICE saying so; 0 = never.
    #[serde(with = "duration")]
    pub checkout_notice_after: Duration,
    /// Extra server connections a pool may open when a client has waited `reserve_timeout`.
    pub reserve_size: usize,
    #[serde(with = "duration")]
    pub reserve_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            mode: PoolMode::Session,
            size: 20,
            min_size: 0,
            checkout_timeout: Duration::from_secs(30),
            server_connect_timeout: Duration::from_secs(5),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            reset_query: "DISCARD ALL".to_string(),
            server_prepared_statements: 250,
            query_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            client_idle_timeout: Duration::ZERO,
            checkout_notice_after: Duration::from_secs(5),
            reserve_size: 0,
            reserve_timeout: Duration::from_secs(3),
        }
    }
}

impl PoolSettings {
    /// These settings with every key set in `overrides` replaced.
    pub fn with_overrides(&self, overrides: &PoolOverrides) -> PoolSettings {
        PoolSettings {
            mode: overrides.mode.unwrap_or(self.mode),
            size: overrides.size.unwrap_or(self.size),
            min_size: overrides.min_size.unwrap_or(self.min_size),
            checkout_timeout: overrides.checkout_timeout.unwrap_or(self.checkout_timeout),
            server_connect_timeout: overrides
                .server_connect_timeout
                .unwrap_or(self.server_connect_timeout),
            server_idle_timeout: overrides
                .server_idle_timeout
                .unwrap_or(self.server_idle_timeout),
            server_lifetime: overrides.server_lifetime.unwrap_or(self.server_lifetime),
            reset_query: overrides
                .reset_query
                .clone()
                .unwrap_or_else(|| self.reset_query.clone()),
            server_prepared_statements: overrides
                .server_prepared_statements
                .unwrap_or(self.server_prepared_statements),
            query_timeout: overrides.query_timeout.unwrap_or(self.query_timeout),
            idle_transaction_timeout: overrides
                .idle_transaction_timeout
                .unwrap_or(self.idle_transaction_timeout),
            client_idle_timeout: overrides
                .client_idle_timeout
                .unwrap_or(self.client_idle_timeout),
            checkout_notice_after: overrides
                .checkout_notice_after
                .unwrap_or(self.checkout_notice_after),
            reserve_size: overrides.reserve_size.unwrap_or(self.reserve_size),
            reserve_timeout: overrides.reserve_timeout.unwrap_or(self.reserve_timeout),
        }
    }
}

/// The keys of [`PoolSettings`], all optional, for per-database and per-user overrides.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolOverrides {
    pub mode: Option<PoolMode>,
    pub size: Option<usize>,
    pub min_size: Option<usize>,
    #[serde(with = "duration::option")]
    pub checkout_timeout: Option<Duration>,
    #[serde(with = "duration::option")]
    pub server_connect_timeout: Option<Duration>,
    #[serde(with = "duration::option")]
    pub server_idle_timeout: Option<Duration>,
    #[serde(with = "duration::option")]
    pub server_lifetime: Option<Duration>,
    pub reset_query: Option<String>,
    pub server_prepared_statements: Option<usize>,
    #[serde(with = "duration::option")]
    pub query_timeout: Option<Duration>,
    #[serde(with = "duration::option")]
    pub idle_transaction_timeout: Option<Duration>,
    #[serde(with = "duration::option")]
    pub client_idle_timeout: Option<Duration>,
    #[serde(with = "duration::option")]
    pub checkout_notice_after: Option<Duration>,
    pub reserve_size: Option<usize>,
    #[serde(with = "duration::option")]
    pub reserve_timeout: Option<Duration>,
}

/// A user clients log in as.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Client-side credential: plaintext, a SCRAM verifier ("SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>")
    /// or an md5 hash ("md5" + 32 hex). None only with auth method trust.
    pub password: Option<Secret>,
    /// Overrides `auth.method` for this user.
    pub auth_method: Option<AuthMethod>,
    /// Role used on the nodes; default = name.
    pub server_user: Option<String>,
    /// Password for the nodes; default = password if it is plaintext.
    pub server_password: Option<Secret>,
    pub pool: PoolOverrides,
    pub routing: RoutingOverrides,
    /// Client connections of this user at once (all databases); unset = only the global limit.
    pub max_client_conn: Option<usize>,
}

impl UserConfig {
    /// The role to log in as on the nodes.
    pub fn server_user(&self) -> &str {
        self.server_user.as_deref().unwrap_or(&self.name)
    }

    /// The password to give the nodes: `server_password`, else `password` when it is plaintext.
    pub fn server_password(&self) -> Option<&str> {
        if let Some(secret) = &self.server_password {
            return Some(secret.expose());
        }
        self.password
            .as_ref()
            .filter(|p| p.kind() == PasswordKind::Plaintext)
            .map(Secret::expose)
    }
}

/// What a node is expected to be; `auto` lets health checks decide.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Primary,
    Replica,
    #[default]
    Auto,
}
yaml_names!(NodeRole { Primary => "primary", Replica => "replica", Auto => "auto" });

/// One Postgres instance serving a database.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Label for logs and the admin console; default "host:port".
    pub name: Option<String>,
    /// Host name or IP; required.
    pub host: String,
    #[serde(deserialize_with = "deserialize_port")]
    pub port: u16,
    pub role: NodeRole,
    /// Relative share of reads for `routing.balance: weighted`; 0 = this node takes no reads.
    pub weight: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: None,
            host: String::new(),
            port: 5432,
            role: NodeRole::Auto,
            weight: 1,
        }
    }
}

/// A port number with a readable error above 65535 (0 is left to `validate()`).
fn deserialize_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    let value = u64::deserialize(deserializer)?;
    u16::try_from(value).map_err(|_| serde::de::Error::custom("port must be between 1 and 65535"))
}

impl NodeConfig {
    /// `name`, or "host:port" (IPv6 hosts in brackets) when unnamed.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A database clients can connect to, served by one or more nodes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// What clients put in their connection string.
    pub name: String,
    /// Database name on the nodes; default = name.
    pub server_database: Option<String>,
    /// At least one; at most one with role primary.
    pub nodes: Vec<NodeConfig>,
    pub pool: PoolOverrides,
    pub routing: RoutingOverrides,
    /// Client connections to this database at once (all users); unset = only the global limit.
    pub max_client_conn: Option<usize>,
}

impl DatabaseConfig {
    /// The database name to use on the nodes.
    pub fn server_database(&self) -> &str {
        self.server_database.as_deref().unwrap_or(&self.name)
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
yaml_names!(LogFormat { Text => "text", Json => "json" });

/// Logging settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A tracing `EnvFilter` directive, e.g. "info" or "pgsluice=debug,info".
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

//! Tests of the config module as a whole: example file, defaults, parse errors, validation, overrides.

use std::path::Path;
use std::time::Duration;

use super::*;

const EXAMPLE: &str = include_str!("../../config.example.yaml");

const MINIMAL: &str = "databases:\n  - name: app\n    nodes:\n      - host: db1\n";

fn no_env(_: &str) -> Option<String> {
    None
}

fn example_env(name: &str) -> Option<String> {
    (name == "APP_PASSWORD").then(|| "s3cret: #not-a-comment".to_string())
}

/// Paths and messages of a validation failure, as "path: message" lines.
fn invalid(text: &str) -> Vec<String> {
    match load_str(text, &no_env) {
        Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn minimal_file_gets_every_default() {
    let config = load_str(MINIMAL, &no_env).unwrap();
    assert_eq!(
        config.listeners,
        vec![ListenerConfig {
            address: "127.0.0.1:6432".into()
        }]
    );
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.max_client_conn, 10_000);
    assert_eq!(config.limits.max_message_size, 256 * 1024 * 1024);
    assert_eq!(config.limits.startup_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.client_tls.mode, ClientTlsMode::Disable);
    assert_eq!(config.server_tls.mode, ServerTlsMode::Prefer);
    assert_eq!(config.auth.method, AuthMethod::ScramSha256);
    assert!(!config.auth.allow_cleartext_without_tls);
    assert_eq!(config.pool, PoolSettings::default());
    assert_eq!(config.pool.size, 20);
    assert_eq!(config.pool.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(config.pool.reset_query, "DISCARD ALL");
    assert!(config.users.is_empty());
    assert_eq!(config.logging, LoggingConfig::default());
    let node = &config.databases[0].nodes[0];
    assert_eq!((node.port, node.role), (5432, NodeRole::Auto));
    assert_eq!(node.display_name(), "db1:5432");
    assert_eq!(config.databases[0].server_database(), "app");
}

#[test]
fn empty_file_parses_but_needs_a_database() {
    assert_eq!(parse_str("").unwrap(), Config::default());
    assert_eq!(
        invalid(""),
        ["databases: at least one database is required"]
    );
    assert_eq!(
        invalid("databases:\n  - name: app\n"),
        ["databases[0].nodes: at least one node is required"]
    );
}

#[test]
fn example_file_loads_with_every_key() {
    let config = load_str(EXAMPLE, &example_env).unwrap();
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.client_tls, ClientTls::default());
    assert_eq!(config.server_tls, ServerTls::default());
    assert_eq!(config.auth, AuthConfig::default());
    assert_eq!(config.pool, PoolSettings::default());
    assert_eq!(config.logging, LoggingConfig::default());

    let app = config.user("app").unwrap();
    assert_eq!(
        app.password.as_ref().unwrap().expose(),
        "s3cret: #not-a-comment"
    );
    assert_eq!(app.server_password(), Some("s3cret: #not-a-comment"));
    assert_eq!(app.auth_method, Some(AuthMethod::ScramSha256));
    assert_eq!(app.server_user(), "app");
    let reporting = config.user("reporting").unwrap();
    assert_eq!(
        reporting.password.as_ref().unwrap().kind(),
        PasswordKind::ScramSha256
    );
    assert_eq!(reporting.server_password(), Some("reporting"));
    assert_eq!(config.auth_method_for(reporting), AuthMethod::ScramSha256);

    let db = config.database("app").unwrap();
    assert_eq!(db.nodes.len(), 2);
    assert_eq!(
        (db.nodes[0].port, db.nodes[0].role),
        (5432, NodeRole::Primary)
    );
    assert_eq!(
        (db.nodes[1].port, db.nodes[1].role),
        (5433, NodeRole::Replica)
    );
    assert_eq!(db.nodes[1].display_name(), "replica");
    assert_eq!(db.pool.server_idle_timeout, Some(Duration::from_secs(300)));
    assert!(config.database("nope").is_none());
}

#[test]
fn example_file_needs_app_password() {
    match load_str(EXAMPLE, &no_env) {
        Err(ConfigError::Interpolation(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].contains("APP_PASSWORD"), "{errors:?}");
            let line = EXAMPLE
                .lines()
                .position(|l| l.contains("\"${APP_PASSWORD}\""))
                .unwrap();
            assert!(
                errors[0].starts_with(&format!("line {}:", line + 1)),
                "{errors:?}"
            );
        }
        other => panic!("expected an interpolation error, got {other:?}"),
    }
}

#[test]
fn unknown_key_is_rejected_with_name_and_location() {
    let text = format!("{MINIMAL}        prot: 5433\n");
    let message = load_str(&text, &no_env).unwrap_err().to_string();
    assert!(message.contains("unknown field `prot`"), "{message}");
    assert!(message.contains("line 5"), "{message}");
    let message = parse_str("pool:\n  sise: 3\n").unwrap_err().to_string();
    assert!(
        message.contains("`sise`") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn duplicate_keys_are_rejected() {
    let message = parse_str("pool:\n  size: 3\n  size: 4\n")
        .unwrap_err()
        .to_string();
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn type_errors_name_the_location() {
    let message = parse_str("limits:\n  startup_timeout: 5x\n")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("line 2") && message.contains("unknown unit"),
        "{message}"
    );
    let message = parse_str("databases:\n  - nodes:\n      - port: 70000\n")
        .unwrap_err()
        .to_string();
    assert!(message.contains("between 1 and 65535"), "{message}");
    let message = parse_str("auth:\n  method: scram\n")
        .unwrap_err()
        .to_string();
    assert!(message.contains("scram-sha-256"), "{message}");
}

#[test]
fn durations_and_sizes_accept_strings_and_integers() {
    let text = "limits:\n  max_message_size: 8kB\n  startup_timeout: 500ms\n  shutdown_timeout: 7\n\
                pool:\n  server_lifetime: 0\n  server_idle_timeout: 1d\n  checkout_timeout: \"2m\"\n\
                users:\n  - name: u\n    pool:\n      server_lifetime: 1h\n      checkout_timeout: 3\n";
    let config = parse_str(text).unwrap();
    assert_eq!(config.limits.max_message_size, 8_000);
    assert_eq!(config.limits.startup_timeout, Duration::from_millis(500));
    assert_eq!(config.limits.shutdown_timeout, Duration::from_secs(7));
    assert_eq!(config.pool.server_lifetime, Duration::ZERO);
    assert_eq!(config.pool.server_idle_timeout, Duration::from_secs(86_400));
    assert_eq!(config.pool.checkout_timeout, Duration::from_secs(120));
    let overrides = &config.users[0].pool;
    assert_eq!(overrides.server_lifetime, Some(Duration::from_secs(3600)));
    assert_eq!(overrides.checkout_timeout, Some(Duration::from_secs(3)));
    assert_eq!(overrides.server_idle_timeout, None);
    let sized = parse_str("limits:\n  max_message_size: 1048576\n").unwrap();
    assert_eq!(sized.limits.max_message_size, 1 << 20);
}

#[test]
fn validation_reports_every_error_with_paths() {
    let text = r#"
listeners:
  - address: "127.0.0.1:6432"
  - address: "127.0.0.1:6432"
  - address: "localhost:1"
limits:
  max_message_size: 1KiB
client_tls:
  mode: require
server_tls:
  mode: verify-full
  cert_file: /c.pem
pool:
  size: 2
  min_size: 5
users:
  - name: app
    password: x
  - name: other
  - name: app
    password: x
  - name: hashed
    auth_method: cleartext
    password: md5d41d8cd98f00b204e9800998ecf8427e
  - name: broken
    password: "SCRAM-SHA-256$4096:abc"
databases:
  - name: app
    nodes: [{host: a}]
  - name: app
    nodes:
      - host: b
        port: 0
        role: primary
      - host: c
        role: primary
  - name: ""
    nodes: []
logging:
  level: ""
"#;
    let expected = [
        "listeners[1].address: duplicate listener address \"127.0.0.1:6432\"",
        "listeners[2].address: \"localhost:1\" is not an IP address with a port (e.g. \"127.0.0.1:6432\" or \"[::]:6432\")",
        "limits.max_message_size: must be at least 16384 bytes (16KiB)",
        "client_tls.cert_file: required when client_tls.mode is require",
        "client_tls.key_file: required when client_tls.mode is require",
        "server_tls.ca_file: required when server_tls.mode is verify-full",
        "server_tls.key_file: required when server_tls.cert_file is set",
        "pool.min_size: must be <= pool.size (2)",
        "users[1].password: required when the auth method is scram-sha-256",
        "users[2].name: duplicate user \"app\"",
        "users[3].password: an md5 hash cannot be used with auth method cleartext",
        "users[4].password: malformed SCRAM verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>)",
        "databases[1].name: duplicate database \"app\"",
        "databases[1].nodes[0].port: must be between 1 and 65535",
        "databases[1].nodes[1].role: at most one node per database may have role primary",
        "databases[2].name: must not be empty",
        "databases[2].nodes: at least one node is required",
        "logging.level: must not be empty",
    ];
    assert_eq!(invalid(text), expected);
    let message = load_str(text, &no_env).unwrap_err().to_string();
    assert!(
        message.starts_with("invalid configuration:\nlisteners[1].address"),
        "{message}"
    );
    assert_eq!(message.lines().count(), expected.len() + 1);
}

#[test]
fn password_shapes_must_fit_the_method() {
    let verifier = "SCRAM-SHA-256$4096:c2FsdA==$c3Q=:c2U=";
    let md5 = "md5d41d8cd98f00b204e9800998ecf8427e";
    let cases = [
        ("scram-sha-256", verifier, true),
        ("scram-sha-256", md5, false),
        ("md5", md5, true),
        ("md5", verifier, false),
        ("md5", "plain", true),
        ("cleartext", verifier, false),
        ("trust", verifier, true),
    ];
    for (method, password, ok) in cases {
        let text = format!(
            "{MINIMAL}auth:\n  allow_cleartext_without_tls: true\nusers:\n  - name: u\n    auth_method: {method}\n    password: \"{password}\"\n"
        );
        assert_eq!(load_str(&text, &no_env).is_ok(), ok, "{method} {password}");
    }
    let trust = format!("{MINIMAL}auth:\n  method: trust\nusers:\n  - name: u\n");
    assert!(load_str(&trust, &no_env).is_ok());
}

#[test]
fn cleartext_needs_tls_or_explicit_permission() {
    let text = format!("{MINIMAL}auth:\n  method: cleartext\nusers:\n  - name: u\n    auth_method: cleartext\n    password: p\n");
    assert_eq!(
        invalid(&text),
        [
            "auth.method: cleartext needs client_tls.mode prefer or require, or auth.allow_cleartext_without_tls: true",
            "users[0].auth_method: cleartext needs client_tls.mode prefer or require, or auth.allow_cleartext_without_tls: true",
        ]
    );
    let with_tls = format!("{text}client_tls:\n  mode: prefer\n  cert_file: c\n  key_file: k\n");
    assert!(load_str(&with_tls, &no_env).is_ok());
}

#[test]
fn pool_overrides_resolve_defaults_then_database_then_user() {
    let text = format!(
        "{MINIMAL}    pool:\n      size: 40\n      mode: transaction\n      server_lifetime: 2h\n\
         pool:\n  size: 10\n  reset_query: \"\"\n  server_lifetime: 3h\n\
         users:\n  - name: u\n    password: p\n    pool:\n      size: 5\n      server_lifetime: 0\n  - name: v\n    password: p\n"
    );
    let config = load_str(&text, &no_env).unwrap();
    let db = &config.databases[0];
    let u = config.pool_settings(db, config.user("u").unwrap());
    assert_eq!(u.size, 5);
    assert_eq!(u.mode, PoolMode::Transaction);
    assert_eq!(u.server_lifetime, Duration::ZERO);
    assert_eq!(u.reset_query, "");
    assert_eq!(u.checkout_timeout, Duration::from_secs(30));
    let v = config.pool_settings(db, config.user("v").unwrap());
    assert_eq!((v.size, v.mode), (40, PoolMode::Transaction));
    assert_eq!(v.server_lifetime, Duration::from_secs(7200));
}

#[test]
fn combined_overrides_are_checked_per_pair() {
    let text = format!(
        "{MINIMAL}    pool:\n      min_size: 8\n\
         users:\n  - name: u\n    password: p\n    pool:\n      size: 4\n"
    );
    assert_eq!(
        invalid(&text),
        ["users[0].pool: with databases[0] (\"app\"): min_size (8) must be <= size (4)"]
    );
    let own = format!("{MINIMAL}users:\n  - name: u\n    password: p\n    pool:\n      size: 0\n");
    assert_eq!(invalid(&own), ["users[0].pool.size: must be at least 1"]);
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let text = format!(
        "{MINIMAL}users:\n  - name: u\n    password: hunter2\n    server_password: swordfish\n"
    );
    let config = load_str(&text, &no_env).unwrap();
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("swordfish"),
        "{debug}"
    );
    assert!(debug.contains("Secret(***)"));
    assert_eq!(config.users[0].server_password(), Some("swordfish"));
}

#[test]
fn server_side_defaults_follow_the_client_side() {
    let text = format!(
        "{MINIMAL}users:\n  - name: u\n    password: md5d41d8cd98f00b204e9800998ecf8427e\n    auth_method: md5\n  - name: w\n    password: p\n    server_user: role_w\n"
    );
    let config = load_str(&text, &no_env).unwrap();
    let u = config.user("u").unwrap();
    assert_eq!((u.server_user(), u.server_password()), ("u", None));
    let w = config.user("w").unwrap();
    assert_eq!(
        (w.server_user(), w.server_password()),
        ("role_w", Some("p"))
    );
}

#[test]
fn load_file_reads_and_reports_the_path() {
    let missing = Path::new("/nonexistent/pgsluice.yaml");
    let err = load_file(missing).unwrap_err();
    assert!(matches!(&err, ConfigError::Read { path, .. } if path == missing));
    assert!(err.to_string().contains("/nonexistent/pgsluice.yaml"));

    let path =
        std::env::temp_dir().join(format!("pgsluice-config-test-{}.yaml", std::process::id()));
    std::fs::write(&path, MINIMAL).unwrap();
    let loaded = load_file(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().databases[0].name, "app");
}

//! SHOW CONFIG: the loaded configuration flattened to `key = value` rows with YAML key paths.
//! Passwords and verifiers are never shown; only whether one is set.

use std::path::PathBuf;
use std::time::Duration;

use super::table::{text, Kind, Table};
use crate::config::{bytesize, duration, Config, PoolOverrides, PoolSettings};

/// Collects rows; `changeable` says whether RELOAD applies a new value.
struct Rows(Table);

impl Rows {
    fn add(&mut self, key: impl Into<String>, value: impl Into<String>, changeable: bool) {
        let changeable = if changeable { "yes" } else { "no" };
        self.0.push(vec![text(key), text(value), text(changeable)]);
    }

    fn opt<T: ToString>(&mut self, key: impl Into<String>, value: Option<&T>) {
        if let Some(value) = value {
            self.add(key, value.to_string(), true);
        }
    }
}

fn dur(d: Duration) -> String {
    duration::format(d)
}

fn path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn secret_set(set: bool) -> &'static str {
    if set {
        "(set)"
    } else {
        "(not set)"
    }
}

/// The table for SHOW CONFIG.
pub fn config(config: &Config) -> Table {
    let mut rows = Rows(Table::new(&[
        ("key", Kind::Text),
        ("value", Kind::Text),
        ("changeable", Kind::Text),
    ]));
    for (i, listener) in config.listeners.iter().enumerate() {
        rows.add(format!("listeners[{i}].address"), &listener.address, false);
    }
    rows.add(
        "listen.reuse_port",
        config.listen.reuse_port.to_string(),
        false,
    );
    rows.add(
        "http.listen",
        config.http.listen.as_deref().unwrap_or("(not set)"),
        false,
    );
    let limits = &config.limits;
    rows.add(
        "limits.max_client_conn",
        limits.max_client_conn.to_string(),
        true,
    );
    rows.add(
        "limits.max_message_size",
        bytesize::format(limits.max_message_size),
        true,
    );
    rows.add("limits.startup_timeout", dur(limits.startup_timeout), true);
    rows.add(
        "limits.shutdown_timeout",
        dur(limits.shutdown_timeout),
        true,
    );
    rows.add(
        "limits.worker_threads",
        limits.worker_threads.to_string(),
        false,
    );
    rows.add(
        "limits.balance_interval",
        dur(limits.balance_interval),
        true,
    );
    rows.add("client_tls.mode", config.client_tls.mode.as_str(), true);
    rows.add(
        "client_tls.cert_file",
        path(&config.client_tls.cert_file),
        true,
    );
    rows.add(
        "client_tls.key_file",
        path(&config.client_tls.key_file),
        true,
    );
    rows.add("server_tls.mode", config.server_tls.mode.as_str(), true);
    rows.add("server_tls.ca_file", path(&config.server_tls.ca_file), true);
    rows.add(
        "server_tls.cert_file",
        path(&config.server_tls.cert_file),
        true,
    );
    rows.add(
        "server_tls.key_file",
        path(&config.server_tls.key_file),
        true,
    );
    rows.add("auth.method", config.auth.method.as_str(), true);
    let cleartext = config.auth.allow_cleartext_without_tls.to_string();
    rows.add("auth.allow_cleartext_without_tls", cleartext, true);
    pool_settings(&mut rows, "pool", &config.pool);
    for (i, user) in config.users.iter().enumerate() {
        let p = format!("users[{i}]");
        rows.add(format!("{p}.name"), &user.name, true);
        rows.add(
            format!("{p}.password"),
            secret_set(user.password.is_some()),
            true,
        );
        rows.opt(format!("{p}.auth_method"), user.auth_method.as_ref());
        rows.add(format!("{p}.server_user"), user.server_user(), true);
        let server_password = user.server_password.is_some();
        rows.add(
            format!("{p}.server_password"),
            secret_set(server_password),
            true,
        );
        pool_overrides(&mut rows, &format!("{p}.pool"), &user.pool);
    }
    for (i, database) in config.databases.iter().enumerate() {
        let p = format!("databases[{i}]");
        rows.add(format!("{p}.name"), &database.name, true);
        rows.add(
            format!("{p}.server_database"),
            database.server_database(),
            true,
        );
        for (j, node) in database.nodes.iter().enumerate() {
            let n = format!("{p}.nodes[{j}]");
            rows.add(format!("{n}.name"), node.display_name(), true);
            rows.add(format!("{n}.host"), &node.host, true);
            rows.add(format!("{n}.port"), node.port.to_string(), true);
            rows.add(format!("{n}.role"), node.role.as_str(), true);
        }
        pool_overrides(&mut rows, &format!("{p}.pool"), &database.pool);
    }
    rows.add("logging.level", &config.logging.level, false);
    rows.add("logging.format", config.logging.format.as_str(), false);
    rows.add("admin.database", &config.admin.database, true);
    rows.add("admin.users", config.admin.users.join(","), true);
    rows.0
}

fn pool_settings(rows: &mut Rows, p: &str, pool: &PoolSettings) {
    rows.add(format!("{p}.mode"), pool.mode.as_str(), true);
    rows.add(format!("{p}.size"), pool.size.to_string(), true);
    rows.add(format!("{p}.min_size"), pool.min_size.to_string(), true);
    rows.add(
        format!("{p}.checkout_timeout"),
        dur(pool.checkout_timeout),
        true,
    );
    let connect = dur(pool.server_connect_timeout);
    rows.add(format!("{p}.server_connect_timeout"), connect, true);
    rows.add(
        format!("{p}.server_idle_timeout"),
        dur(pool.server_idle_timeout),
        true,
    );
    rows.add(
        format!("{p}.server_lifetime"),
        dur(pool.server_lifetime),
        true,
    );
    rows.add(format!("{p}.reset_query"), &pool.reset_query, true);
}

fn pool_overrides(rows: &mut Rows, p: &str, pool: &PoolOverrides) {
    rows.opt(format!("{p}.mode"), pool.mode.as_ref());
    rows.opt(format!("{p}.size"), pool.size.as_ref());
    rows.opt(format!("{p}.min_size"), pool.min_size.as_ref());
    let durations = [
        ("checkout_timeout", pool.checkout_timeout),
        ("server_connect_timeout", pool.server_connect_timeout),
        ("server_idle_timeout", pool.server_idle_timeout),
        ("server_lifetime", pool.server_lifetime),
    ];
    for (name, value) in durations {
        rows.opt(format!("{p}.{name}"), value.map(dur).as_ref());
    }
    rows.opt(format!("{p}.reset_query"), pool.reset_query.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, UserConfig};

    #[test]
    fn flattens_keys_and_hides_secrets() {
        let config = Config {
            users: vec![UserConfig {
                name: "app".into(),
                password: Some(Secret::new("hunter2")),
                ..UserConfig::default()
            }],
            ..Config::default()
        };
        let table = config_table(&config);
        let find = |key: &str| {
            table
                .rows()
                .iter()
                .find(|r| r[0].as_deref() == Some(key))
                .map(|r| r[1].clone().unwrap_or_default())
        };
        assert_eq!(find("pool.size").as_deref(), Some("20"));
        assert_eq!(find("users[0].password").as_deref(), Some("(set)"));
        assert_eq!(find("admin.database").as_deref(), Some("pgsluice"));
        let all: String = table.rows().iter().flatten().flatten().cloned().collect();
        assert!(!all.contains("hunter2"));
    }

    fn config_table(config: &Config) -> Table {
        super::config(config)
    }
}

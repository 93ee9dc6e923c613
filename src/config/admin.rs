//! `admin:` settings: the virtual database that opens the admin console and who may use it.

use serde::Deserialize;

use super::validate::ValidationError;
use super::Config;

/// The admin console: a client that connects to `database` as one of `users` (authenticated like
/// any other client) gets SHOW/RELOAD/PAUSE/... instead of a server connection.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Name of the virtual database; must not be the name of a configured database.
    pub database: String,
    /// Configured users (by client-facing name) allowed in; empty disables the console.
    pub users: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            database: "pgsluice".to_string(),
            users: Vec::new(),
        }
    }
}

impl AdminConfig {
    /// Whether a client asking for `database` is asking for the console (only when it is enabled).
    pub fn is_console(&self, database: &str) -> bool {
        !self.users.is_empty() && self.database == database
    }

    /// Whether `user` may use the console.
    pub fn allows(&self, user: &str) -> bool {
        self.users.iter().any(|u| u == user)
    }
}

/// Checks the `admin` section against the rest of the config.
pub(super) fn check(config: &Config) -> Vec<ValidationError> {
    let admin = &config.admin;
    let mut errors = Vec::new();
    let mut push = |path: String, message: String| errors.push(ValidationError { path, message });
    if admin.database.is_empty() {
        push("admin.database".into(), "must not be empty".into());
    } else if config.database(&admin.database).is_some() {
        push(
            "admin.database".into(),
            format!(
                "\"{}\" is also a configured database; pick another name for the admin console",
                admin.database
            ),
        );
    }
    for (i, user) in admin.users.iter().enumerate() {
        if config.user(user).is_none() {
            push(
                format!("admin.users[{i}]"),
                format!("\"{user}\" is not a configured user"),
            );
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseConfig, UserConfig};

    fn config(database: &str, users: &[&str]) -> Config {
        Config {
            users: vec![UserConfig {
                name: "ops".into(),
                ..UserConfig::default()
            }],
            databases: vec![DatabaseConfig {
                name: "app".into(),
                ..DatabaseConfig::default()
            }],
            admin: AdminConfig {
                database: database.into(),
                users: users.iter().map(|u| u.to_string()).collect(),
            },
            ..Config::default()
        }
    }

    #[test]
    fn accepts_known_users_and_a_free_name() {
        assert!(check(&config("pgsluice", &["ops"])).is_empty());
        assert!(check(&config("pgsluice", &[])).is_empty());
    }

    #[test]
    fn rejects_unknown_users_and_clashing_names() {
        let errors = check(&config("app", &["ops", "ghost"]));
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["admin.database", "admin.users[1]"]);
        assert_eq!(check(&config("", &[]))[0].path, "admin.database");
    }

    #[test]
    fn console_needs_users() {
        let admin = config("pgsluice", &[]).admin;
        assert!(!admin.is_console("pgsluice"));
        let admin = config("pgsluice", &["ops"]).admin;
        assert!(admin.is_console("pgsluice") && !admin.is_console("app"));
        assert!(admin.allows("ops") && !admin.allows("app"));
    }
}

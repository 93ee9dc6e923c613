//! The `health` section: how often and how nodes are checked, the fall/rise hysteresis of node
//! health, the replication lag limits (with their own hysteresis) that mark a replica lagging, and
//! how often replicas' replay positions are polled for read-your-writes.

use std::time::Duration;

use serde::Deserialize;

use super::validate::ValidationError;
use super::{bytesize, duration, Config};

/// Health check settings, shared by every database.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Run health checks at all; false keeps the topology as configured (every node usable).
    pub enabled: bool,
    /// Time between two checks of one node. > 0.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Limit of one check, connecting included; a check that takes longer failed. > 0.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed checks that mark a node down. >= 1.
    pub fall: u32,
    /// Consecutive successful checks that mark a down node up again. >= 1.
    pub rise: u32,
    /// A replica further behind its primary than this many WAL bytes is lagging; 0 = no byte limit.
    #[serde(with = "bytesize")]
    pub max_lag_bytes: usize,
    /// A replica whose replay is this far behind in time is lagging; 0 = no time limit.
    #[serde(with = "duration")]
    pub max_lag: Duration,
    /// A lagging replica is fresh again only once under this fraction of both limits. In (0, 1].
    pub lag_recovery: f64,
    /// Configured user whose server credentials the checks log in with; default: the first user.
    pub user: Option<String>,
    /// Time between two polls of a replica's replay position (`pg_last_wal_replay_lsn()`) on a
    /// connection of its own, so read-your-writes learns within this time that a replica caught
    /// up; 0 = off (positions come from the health checks only). At most `interval`.
    #[serde(with = "duration")]
    pub lsn_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            max_lag_bytes: 16 << 20,
            max_lag: Duration::from_secs(10),
            lag_recovery: 0.5,
            user: None,
            lsn_interval: Duration::from_millis(20),
        }
    }
}

impl HealthConfig {
    /// The name of the user the checks log in as: `user`, else the first configured user.
    pub fn user_name<'a>(&'a self, config: &'a Config) -> Option<&'a str> {
        match &self.user {
            Some(name) => Some(name),
            None => config.users.first().map(|u| u.name.as_str()),
        }
    }

    /// Every problem of this section, each with its key path.
    pub(super) fn validate(&self, config: &Config) -> Vec<ValidationError> {
        let mut errors = Vec::new();
        let mut push = |key: &str, message: String| {
            errors.push(ValidationError {
                path: format!("health.{key}"),
                message,
            })
        };
        if self.interval.is_zero() {
            push("interval", "must be greater than 0".into());
        }
        if self.timeout.is_zero() {
            push("timeout", "must be greater than 0".into());
        }
        if self.fall == 0 {
            push("fall", "must be at least 1".into());
        }
        if self.rise == 0 {
            push("rise", "must be at least 1".into());
        }
        if !(self.lag_recovery > 0.0 && self.lag_recovery <= 1.0) {
            push(
                "lag_recovery",
                format!(
                    "must be greater than 0 and at most 1 (got {})",
                    self.lag_recovery
                ),
            );
        }
        if self.lsn_interval > self.interval {
            // Slower than the health checks, which already report replay positions.
            push(
                "lsn_interval",
                format!(
                    "must be 0 (off) or at most health.interval ({}; got {})",
                    duration::format(self.interval),
                    duration::format(self.lsn_interval)
                ),
            );
        }
        if let Some(name) = &self.user {
            if config.user(name).is_none() {
                push("user", format!("no user named \"{name}\" is configured"));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, ConfigError};

    const BASE: &str = "users:\n  - { name: app, password: pw }\n  - { name: ops, password: pw }\ndatabases:\n  - name: app\n    nodes:\n      - host: db1\n";

    #[test]
    fn defaults_apply_when_absent() {
        let config = load_str(BASE, &|_| None).unwrap();
        assert_eq!(config.health, HealthConfig::default());
        assert_eq!(config.health.user_name(&config), Some("app"));
        assert_eq!(config.health.max_lag_bytes, 16 << 20);
    }

    #[test]
    fn example_file_shows_the_defaults() {
        let example = include_str!("../../config.example.yaml");
        let config = load_str(example, &|_| Some("pw".into())).unwrap();
        assert_eq!(config.health, HealthConfig::default());
    }

    #[test]
    fn keys_parse() {
        let text = format!(
            "{BASE}health: {{ enabled: false, interval: 200ms, timeout: 2s, fall: 1, rise: 5, max_lag_bytes: 1MB, max_lag: 0, lag_recovery: 0.25, user: ops, lsn_interval: 5ms }}\n"
        );
        let config = load_str(&text, &|_| None).unwrap();
        let health = &config.health;
        assert!(!health.enabled);
        assert_eq!(health.interval, Duration::from_millis(200));
        assert_eq!(health.timeout, Duration::from_secs(2));
        assert_eq!((health.fall, health.rise), (1, 5));
        assert_eq!(health.max_lag_bytes, 1_000_000);
        assert_eq!(health.max_lag, Duration::ZERO);
        assert_eq!(health.lag_recovery, 0.25);
        assert_eq!(health.user_name(&config), Some("ops"));
        assert_eq!(health.lsn_interval, Duration::from_millis(5));
    }

    #[test]
    fn lsn_interval_is_off_at_zero_and_at_most_the_check_interval() {
        assert_eq!(
            HealthConfig::default().lsn_interval,
            Duration::from_millis(20)
        );
        for ok in ["0", "1ms", "20ms", "1s"] {
            let text = format!("{BASE}health: {{ lsn_interval: {ok} }}\n");
            assert!(load_str(&text, &|_| None).is_ok(), "{ok}");
        }
        let text = format!("{BASE}health: {{ interval: 10ms, lsn_interval: 20ms }}\n");
        let Err(ConfigError::Invalid(errors)) = load_str(&text, &|_| None) else {
            panic!("expected a validation error");
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["health.lsn_interval"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{BASE}health: {{ intervall: 1s }}\n");
        assert!(matches!(
            load_str(&text, &|_| None),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn bad_values_are_reported_with_paths() {
        let text = format!(
            "{BASE}health: {{ interval: 0, timeout: 0, fall: 0, rise: 0, lag_recovery: 1.5, user: nobody, lsn_interval: 1s }}\n"
        );
        let Err(ConfigError::Invalid(errors)) = load_str(&text, &|_| None) else {
            panic!("expected validation errors");
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "health.interval",
                "health.timeout",
                "health.fall",
                "health.rise",
                "health.lag_recovery",
                "health.lsn_interval",
                "health.user"
            ]
        );
    }
}

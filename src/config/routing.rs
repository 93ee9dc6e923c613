//! Read/write routing settings: the top-level `routing:` section, its per-database and per-user
//! overrides (`databases[].routing`, `users[].routing`), and their checks.
//!
//! Resolution mirrors `pool`: defaults < database < user, for the keys that make sense per
//! database or user. `writing_functions` and `consistency_keys_capacity` are process-wide.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Where reads may go at all.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadRouting {
    /// Reads go to healthy, fresh replicas (the primary takes `primary_reads` of them).
    #[default]
    Replicas,
    /// No read routing: everything goes to the primary.
    Primary,
}

/// How a read picks among the eligible replicas.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each eligible replica in turn.
    #[default]
    RoundRobin,
    /// The replica with the fewest queries/transactions in flight through this proxy.
    LeastOutstanding,
    /// At random, in proportion to each node's `weight`.
    Weighted,
}

/// What a read does when no replica can take it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenNoReplica {
    /// Fall back to the primary.
    #[default]
    Primary,
    /// Fail the read with an error.
    Fail,
}

/// Where an explicit `BEGIN` without `READ ONLY` goes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadWriteTransactions {
    /// Always to the primary (safe: any later statement may write).
    #[default]
    Primary,
    /// By the transaction's first statement (a later write in a transaction sent to a replica
    /// fails there with SQLSTATE 25006).
    Classify,
}

/// How a client's reads are kept from missing its own recent writes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// Reads go only to replicas that have replayed the client's last commit LSN.
    #[default]
    Lsn,
    /// Reads go to the primary for `read_your_writes_window` after each write.
    Window,
    /// No guarantee.
    Off,
}

/// Where a database alias or user sends work regardless of classification.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DefaultTarget {
    /// Classify each transaction's first query (and honour hints).
    #[default]
    Auto,
    /// Everything to the primary (a replica hint still reads a replica).
    Primary,
    /// Everything to replicas, writes included (they fail there with 25006; a primary hint
    /// still goes to the primary).
    Replica,
}

macro_rules! yaml_spelling {
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
yaml_spelling!(ReadRouting { Replicas => "replicas", Primary => "primary" });
yaml_spelling!(Balance {
    RoundRobin => "round_robin",
    LeastOutstanding => "least_outstanding",
    Weighted => "weighted",
});
yaml_spelling!(WhenNoReplica { Primary => "primary", Fail => "fail" });
yaml_spelling!(ReadWriteTransactions { Primary => "primary", Classify => "classify" });
yaml_spelling!(ReadYourWrites { Lsn => "lsn", Window => "window", Off => "off" });
yaml_spelling!(DefaultTarget { Auto => "auto", Primary => "primary", Replica => "replica" });

/// A fraction in `0.0..=1.0` (checked by `validate`). Compared bit for bit so configs stay `Eq`.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Share(pub f64);

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Share {}

/// The default `routing.writing_functions` (and the classifier's default list): functions that
/// write, or whose effect must stay where the session's other work runs.
pub const DEFAULT_WRITING_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "pg_notify",
    "set_config",
    "txid_current",
    "pg_current_xact_id",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
];

/// [`DEFAULT_WRITING_FUNCTIONS`] as owned strings.
fn default_writing_functions() -> Vec<String> {
    DEFAULT_WRITING_FUNCTIONS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Fully resolved routing settings for one (database, user) pair.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingSettings {
    pub reads: ReadRouting,
    pub balance: Balance,
    /// Share of reads the primary takes even when replicas are available.
    pub primary_reads: Share,
    pub when_no_replica: WhenNoReplica,
    pub read_write_transactions: ReadWriteTransactions,
    pub read_your_writes: ReadYourWrites,
    /// How long reads stay on the primary after a write in `window` mode. > 0.
    #[serde(with = "duration")]
    pub read_your_writes_window: Duration,
    /// How long a write waits for a usable primary (e.g. during a failover) before failing. > 0.
    #[serde(with = "duration")]
    pub write_wait: Duration,
    /// Retry a read once on the primary when a replica answers 25006 (read-only transaction)
    /// before anything reached the client, outside an explicit transaction.
    pub retry_read_only_errors: bool,
    /// Functions whose call makes a statement a write. Process-wide.
    pub writing_functions: Vec<String>,
    pub default_target: DefaultTarget,
    /// Consistency keys remembered for cross-connection read-your-writes; 0 disables them.
    /// Process-wide.
    pub consistency_keys_capacity: usize,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            reads: ReadRouting::Replicas,
            balance: Balance::RoundRobin,
            primary_reads: Share(0.0),
            when_no_replica: WhenNoReplica::Primary,
            read_write_transactions: ReadWriteTransactions::Primary,
            read_your_writes: ReadYourWrites::Lsn,
            read_your_writes_window: Duration::from_secs(5),
            write_wait: Duration::from_secs(5),
            retry_read_only_errors: true,
            writing_functions: default_writing_functions(),
            default_target: DefaultTarget::Auto,
            consistency_keys_capacity: 100_000,
        }
    }
}

/// The per-database / per-user keys of [`RoutingSettings`], all optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingOverrides {
    pub reads: Option<ReadRouting>,
    pub balance: Option<Balance>,
    pub primary_reads: Option<Share>,
    pub when_no_replica: Option<WhenNoReplica>,
    pub read_write_transactions: Option<ReadWriteTransactions>,
    pub read_your_writes: Option<ReadYourWrites>,
    #[serde(with = "duration::option")]
    pub read_your_writes_window: Option<Duration>,
    #[serde(with = "duration::option")]
    pub write_wait: Option<Duration>,
    pub retry_read_only_errors: Option<bool>,
    pub default_target: Option<DefaultTarget>,
}

impl RoutingSettings {
    /// These settings with every key set in `overrides` replaced.
    pub fn with_overrides(&self, o: &RoutingOverrides) -> RoutingSettings {
        RoutingSettings {
            reads: o.reads.unwrap_or(self.reads),
            balance: o.balance.unwrap_or(self.balance),
            primary_reads: o.primary_reads.unwrap_or(self.primary_reads),
            when_no_replica: o.when_no_replica.unwrap_or(self.when_no_replica),
            read_write_transactions: o
                .read_write_transactions
                .unwrap_or(self.read_write_transactions),
            read_your_writes: o.read_your_writes.unwrap_or(self.read_your_writes),
            read_your_writes_window: o
                .read_your_writes_window
                .unwrap_or(self.read_your_writes_window),
            write_wait: o.write_wait.unwrap_or(self.write_wait),
            retry_read_only_errors: o
                .retry_read_only_errors
                .unwrap_or(self.retry_read_only_errors),
            writing_functions: self.writing_functions.clone(),
            default_target: o.default_target.unwrap_or(self.default_target),
            consistency_keys_capacity: self.consistency_keys_capacity,
        }
    }
}

/// Problems in one resolved set of settings at `prefix` (e.g. `routing`, `databases[0].routing`),
/// as (key path, message).
pub(super) fn check(prefix: &str, s: &RoutingSettings, out: &mut Vec<(String, String)>) {
    let share = s.primary_reads.0;
    if !(0.0..=1.0).contains(&share) {
        out.push((
            format!("{prefix}.primary_reads"),
            format!("must be between 0.0 and 1.0 (got {share})"),
        ));
    }
    if s.read_your_writes == ReadYourWrites::Window && s.read_your_writes_window.is_zero() {
        out.push((
            format!("{prefix}.read_your_writes_window"),
            "must be greater than 0 when read_your_writes is window".to_string(),
        ));
    }
    if s.write_wait.is_zero() {
        out.push((
            format!("{prefix}.write_wait"),
            "must be greater than 0".to_string(),
        ));
    }
}

/// Problems in the process-wide keys of the top-level section.
pub(super) fn check_global(s: &RoutingSettings, out: &mut Vec<(String, String)>) {
    for (i, name) in s.writing_functions.iter().enumerate() {
        let bad = name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if bad {
            out.push((
                format!("routing.writing_functions[{i}]"),
                format!("{name:?} is not a function name (letters, digits, _ and $; no schema)"),
            ));
        }
    }
}

/// Checks the section, then each database and user override, reporting for an override only
/// the keys it sets (so an error of the top-level section is not repeated everywhere).
pub(super) fn check_all(config: &super::Config, out: &mut Vec<(String, String)>) {
    check("routing", &config.routing, out);
    check_global(&config.routing, out);
    let scopes = config
        .databases
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("databases[{i}].routing"), &d.routing))
        .chain(
            config
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("users[{i}].routing"), &u.routing)),
        );
    for (prefix, overrides) in scopes {
        if overrides == &RoutingOverrides::default() {
            continue;
        }
        let mut found = Vec::new();
        check(
            &prefix,
            &config.routing.with_overrides(overrides),
            &mut found,
        );
        let sets = |path: &str| match path.rsplit('.').next() {
            Some("primary_reads") => overrides.primary_reads.is_some(),
            Some("write_wait") => overrides.write_wait.is_some(),
            Some("read_your_writes_window") => {
                overrides.read_your_writes_window.is_some() || overrides.read_your_writes.is_some()
            }
            _ => true,
        };
        out.extend(found.into_iter().filter(|(path, _)| sets(path)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, ConfigError};

    const MINIMAL: &str = "databases:\n  - name: app\n    nodes:\n      - host: db1\n";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, &no_env) {
            Err(ConfigError::Invalid(e)) => e.iter().map(ToString::to_string).collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_without_a_routing_section() {
        let config = load_str(MINIMAL, &no_env).unwrap();
        assert_eq!(config.routing, RoutingSettings::default());
        assert_eq!(config.databases[0].nodes[0].weight, 1);
        let d = RoutingSettings::default();
        assert_eq!(d.reads, ReadRouting::Replicas);
        assert_eq!(d.primary_reads, Share(0.0));
        assert_eq!(d.read_your_writes_window, Duration::from_secs(5));
        assert_eq!(d.write_wait, Duration::from_secs(5));
        assert!(d.retry_read_only_errors);
        assert!(d.writing_functions.iter().any(|f| f == "nextval"));
        assert_eq!(d.consistency_keys_capacity, 100_000);
    }

    #[test]
    fn the_example_documents_the_defaults() {
        let example = include_str!("../../config.example.yaml");
        let env = |name: &str| (name == "APP_PASSWORD").then(|| "x".to_string());
        let config = load_str(example, &env).unwrap();
        assert_eq!(config.routing, RoutingSettings::default());
        let app = config.database("app").unwrap();
        let ro = config.database("app_ro").unwrap();
        let user = config.user("app").unwrap();
        assert_eq!(app.nodes[0].weight, 1);
        assert_eq!(
            config.routing_settings(app, user).balance,
            Balance::LeastOutstanding
        );
        let ro = config.routing_settings(ro, user);
        assert_eq!(ro.default_target, DefaultTarget::Replica);
        assert_eq!(ro.balance, Balance::RoundRobin);
    }

    #[test]
    fn every_spelling_parses_and_overrides_resolve_database_then_user() {
        let text = format!(
            "{MINIMAL}        weight: 3\n    routing:\n      balance: weighted\n      reads: primary\n\
             \x20     primary_reads: 0.5\n      read_your_writes: window\n\
             \x20     read_your_writes_window: 250ms\n\
             routing:\n  when_no_replica: fail\n  read_write_transactions: classify\n\
             \x20 writing_functions: [my_fn]\n  consistency_keys_capacity: 0\n\
             users:\n  - name: u\n    password: p\n    routing:\n      reads: replicas\n\
             \x20     read_your_writes: off\n      write_wait: 1m\n      default_target: primary\n\
             \x20     retry_read_only_errors: false\n"
        );
        let config = load_str(&text, &no_env).unwrap();
        let db = &config.databases[0];
        assert_eq!(db.nodes[0].weight, 3);
        let s = config.routing_settings(db, config.user("u").unwrap());
        assert_eq!(s.reads, ReadRouting::Replicas);
        assert_eq!(s.balance, Balance::Weighted);
        assert_eq!(s.primary_reads, Share(0.5));
        assert_eq!(s.when_no_replica, WhenNoReplica::Fail);
        assert_eq!(s.read_write_transactions, ReadWriteTransactions::Classify);
        assert_eq!(s.read_your_writes, ReadYourWrites::Off);
        assert_eq!(s.read_your_writes_window, Duration::from_millis(250));
        assert_eq!(s.write_wait, Duration::from_secs(60));
        assert_eq!(s.default_target, DefaultTarget::Primary);
        assert!(!s.retry_read_only_errors);
        assert_eq!(s.writing_functions, ["my_fn"]);
        assert_eq!(s.consistency_keys_capacity, 0);
        let db_only = config.routing.with_overrides(&db.routing);
        assert_eq!(db_only.reads, ReadRouting::Primary);
        assert_eq!(db_only.read_your_writes, ReadYourWrites::Window);
    }

    #[test]
    fn bad_values_are_reported_with_their_paths() {
        let text = format!(
            "{MINIMAL}    routing:\n      primary_reads: -0.1\n\
             routing:\n  primary_reads: 1.5\n  write_wait: 0\n\
             \x20 writing_functions: [nextval, \"public.f\", \"\"]\n\
             users:\n  - name: u\n    password: p\n    routing:\n      read_your_writes: window\n\
             \x20     read_your_writes_window: 0\n"
        );
        assert_eq!(
            errors(&text),
            [
                "routing.primary_reads: must be between 0.0 and 1.0 (got 1.5)",
                "routing.write_wait: must be greater than 0",
                "routing.writing_functions[1]: \"public.f\" is not a function name (letters, digits, _ and $; no schema)",
                "routing.writing_functions[2]: \"\" is not a function name (letters, digits, _ and $; no schema)",
                "databases[0].routing.primary_reads: must be between 0.0 and 1.0 (got -0.1)",
                "users[0].routing.read_your_writes_window: must be greater than 0 when read_your_writes is window",
            ]
        );
    }

    #[test]
    fn process_wide_keys_cannot_be_overridden_and_unknown_values_are_refused() {
        let per_user = format!(
            "{MINIMAL}users:\n  - name: u\n    password: p\n    routing:\n      writing_functions: []\n"
        );
        assert!(matches!(
            load_str(&per_user, &no_env),
            Err(ConfigError::Parse(_))
        ));
        let bad = format!("{MINIMAL}routing:\n  balance: fastest\n");
        assert!(matches!(
            load_str(&bad, &no_env),
            Err(ConfigError::Parse(_))
        ));
    }
}

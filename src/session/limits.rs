//! Per-database and per-user `max_client_conn`: connected clients counted per configured
//! database and user with atomics (a login reads an immutable map and bumps two counters; no
//! lock), and the guard that uncounts a client however its session ends. The counters survive
//! config reloads ([`ClientLimits::inherit`]), so clients of an old generation still count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::ClientError;
use crate::config::Config;

/// One counter and its limit.
#[derive(Debug)]
struct Counter {
    max: Option<usize>,
    count: Arc<AtomicUsize>,
}

/// Client counters of every configured database and user.
#[derive(Debug, Default)]
pub struct ClientLimits {
    databases: HashMap<String, Counter>,
    users: HashMap<String, Counter>,
}

/// A counted client (in its database's and its user's counter, when configured); uncounted when
/// dropped. Inline, so a client's task holds it without an allocation.
#[derive(Debug, Default)]
pub struct ClientLimitGuard {
    counted: [Option<Arc<AtomicUsize>>; 2],
}

impl Drop for ClientLimitGuard {
    fn drop(&mut self) {
        for count in self.counted.iter().flatten() {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ClientLimits {
    /// Counters (at zero) for the databases and users of `config`, with their limits.
    pub fn build(config: &Config) -> ClientLimits {
        let counter = |max| Counter {
            max,
            count: Arc::new(AtomicUsize::new(0)),
        };
        ClientLimits {
            databases: config
                .databases
                .iter()
                .map(|d| (d.name.clone(), counter(d.max_client_conn)))
                .collect(),
            users: config
                .users
                .iter()
                .map(|u| (u.name.clone(), counter(u.max_client_conn)))
                .collect(),
        }
    }

    /// Takes over the counts of `old` (the generation this one replaces) for names in both, so
    /// clients connected before a reload keep counting against the new limits.
    pub fn inherit(&mut self, old: &ClientLimits) {
        for (mine, theirs) in [
            (&mut self.databases, &old.databases),
            (&mut self.users, &old.users),
        ] {
            for (name, counter) in mine.iter_mut() {
                if let Some(previous) = theirs.get(name) {
                    counter.count = previous.count.clone();
                }
            }
        }
    }

    /// Counts a client of `database` as `user`, or refuses it (SQLSTATE 53300) when either is at
    /// its limit. Unknown names are not counted here (login refuses them).
    pub fn admit(&self, database: &str, user: &str) -> Result<ClientLimitGuard, ClientError> {
        let mut guard = ClientLimitGuard::default();
        for (slot, (what, name, counter)) in [
            ("database", database, self.databases.get(database)),
            ("user", user, self.users.get(user)),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(counter) = counter else { continue };
            let now = counter.count.fetch_add(1, Ordering::Relaxed) + 1;
            guard.counted[slot] = Some(counter.count.clone());
            if let Some(max) = counter.max.filter(|max| now > *max) {
                return Err(ClientError::TooManyClientsFor {
                    what,
                    name: name.to_string(),
                    max,
                });
            }
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let yaml = r#"
users:
  - { name: u, auth_method: trust, max_client_conn: 1 }
  - { name: v, auth_method: trust }
databases:
  - { name: d, max_client_conn: 2, nodes: [ { host: 127.0.0.1, role: primary } ] }
"#;
        crate::config::load_str(yaml, &|_| None).unwrap()
    }

    #[test]
    fn refuses_over_the_limit_and_uncounts_on_drop() {
        let limits = ClientLimits::build(&config());
        let first = limits.admit("d", "u").unwrap();
        let err = limits.admit("d", "u").unwrap_err();
        assert!(err.to_string().contains("user \"u\""), "{err}");
        let second = limits.admit("d", "v").unwrap();
        let err = limits.admit("d", "v").unwrap_err();
        assert!(err.to_string().contains("database \"d\""), "{err}");
        drop(first);
        let mut reloaded = ClientLimits::build(&config());
        reloaded.inherit(&limits);
        let _third = reloaded.admit("d", "u").unwrap();
        assert!(reloaded.admit("d", "v").is_err(), "counts carried over");
        drop(second);
        assert!(reloaded.admit("unknown", "nobody").is_ok());
    }
}

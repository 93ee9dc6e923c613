//! Pure per-node state: what one check observed, the fall/rise hysteresis that turns check results
//! into `Health::Up`/`Down`, and the role observed from `pg_is_in_recovery()`.

use std::time::Duration;

use crate::topology::{Health, Lsn, Role};

use super::HealthError;

/// The one query a check runs; its row is read by [`Observation::parse`]. `pg_current_wal_lsn()`
/// fails during recovery, hence the CASE.
pub const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     pg_last_wal_receive_lsn(), \
     EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())";

/// What one successful check of a node saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// `pg_is_in_recovery()`: true on a replica.
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a replica.
    pub lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()` (replicas; NULL on a primary or without streaming).
    pub receive_lsn: Option<Lsn>,
    /// `now() - pg_last_xact_replay_timestamp()`, negative clamped to 0; `None` before any replay.
    pub replay_delay: Option<Duration>,
}

impl Observation {
    /// Reads the row of [`CHECK_SQL`]. Missing or unreadable values are errors, except the NULLs
    /// Postgres legitimately returns (receive LSN and replay delay on a primary).
    pub fn parse(row: &[Option<String>]) -> Result<Observation, HealthError> {
        let [in_recovery, lsn, receive_lsn, delay] = row else {
            return Err(HealthError::BadRow("expected 4 columns"));
        };
        let in_recovery = match in_recovery.as_deref() {
            Some("t") => true,
            Some("f") => false,
            _ => return Err(HealthError::BadRow("pg_is_in_recovery() is not a boolean")),
        };
        let parse_lsn = |value: &Option<String>| match value {
            None => Ok(None),
            Some(text) => Lsn::parse(text)
                .map(Some)
                .ok_or(HealthError::BadRow("unreadable WAL position")),
        };
        let replay_delay = match delay {
            None => None,
            Some(text) => {
                let seconds: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| HealthError::BadRow("unreadable replay delay"))?;
                Some(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
            }
        };
        Ok(Observation {
            in_recovery,
            lsn: parse_lsn(lsn)?,
            receive_lsn: parse_lsn(receive_lsn)?,
            replay_delay,
        })
    }

    /// The role this observation shows.
    pub fn role(&self) -> Role {
        if self.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        }
    }
}

/// A change worth logging (and, for `Health` to `Down`, acting on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Role {
        from: Role,
        to: Role,
    },
    Health {
        from: Health,
        to: Health,
    },
    Freshness {
        from: crate::topology::Freshness,
        to: crate::topology::Freshness,
    },
}

/// One node's check history. A node never checked is `Health::Unknown` (usable); its first
/// success makes it `Up` at once, `fall` consecutive failures make it `Down`, and a down node
/// needs `rise` consecutive successes to be `Up` again.
#[derive(Clone, Debug)]
pub struct NodeTracker {
    role: Role,
    health: Health,
    successes: u32,
    failures: u32,
    last: Option<Observation>,
    last_check: Option<Duration>,
}

impl NodeTracker {
    /// A tracker starting from the configured role (`Unknown` for `auto`).
    pub fn new(configured: Role) -> NodeTracker {
        NodeTracker {
            role: configured,
            health: Health::Unknown,
            successes: 0,
            failures: 0,
            last: None,
            last_check: None,
        }
    }

    /// The observed role once a check succeeded, else the configured one.
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// The last successful observation (kept while the node is down).
    pub fn last(&self) -> Option<&Observation> {
        self.last.as_ref()
    }

    /// How long the last check took, success or not.
    pub fn last_check(&self) -> Option<Duration> {
        self.last_check
    }

    /// Records a successful check that took `took`; returns the role and health changes.
    pub fn succeeded(&mut self, seen: Observation, took: Duration, rise: u32) -> Vec<Transition> {
        let mut changes = Vec::new();
        self.last_check = Some(took);
        self.failures = 0;
        self.successes = self.successes.saturating_add(1);
        let role = seen.role();
        if role != self.role {
            changes.push(Transition::Role {
                from: self.role,
                to: role,
            });
            self.role = role;
        }
        self.last = Some(seen);
        let up = match self.health {
            Health::Unknown => true,
            Health::Down => self.successes >= rise,
            Health::Up => false,
        };
        if up {
            changes.push(self.set_health(Health::Up));
        }
        changes
    }

    /// Records a failed check that took `took`; returns the health change, if any.
    pub fn failed(&mut self, took: Duration, fall: u32) -> Vec<Transition> {
        self.last_check = Some(took);
        self.successes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.health != Health::Down && self.failures >= fall {
            vec![self.set_health(Health::Down)]
        } else {
            Vec::new()
        }
    }

    fn set_health(&mut self, to: Health) -> Transition {
        let from = std::mem::replace(&mut self.health, to);
        Transition::Health { from, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seen(in_recovery: bool) -> Observation {
        Observation {
            in_recovery,
            lsn: Some(Lsn(100)),
            receive_lsn: None,
            replay_delay: None,
        }
    }

    fn health_change(from: Health, to: Health) -> Vec<Transition> {
        vec![Transition::Health { from, to }]
    }

    #[test]
    fn first_success_is_up_and_fall_failures_are_down() {
        let mut node = NodeTracker::new(Role::Primary);
        assert_eq!(node.health(), Health::Unknown);
        assert_eq!(
            node.succeeded(seen(false), MS, 2),
            health_change(Health::Unknown, Health::Up)
        );
        assert!(node.failed(MS, 3).is_empty());
        assert!(node.failed(MS, 3).is_empty());
        assert!(
            node.succeeded(seen(false), MS, 2).is_empty(),
            "a success resets the count"
        );
        assert!(node.failed(MS, 3).is_empty());
        assert!(node.failed(MS, 3).is_empty());
        assert_eq!(node.failed(MS, 3), health_change(Health::Up, Health::Down));
        assert!(node.failed(MS, 3).is_empty(), "already down");
        assert_eq!(node.health(), Health::Down);
        assert_eq!(node.last_check(), Some(MS));
    }

    #[test]
    fn down_node_needs_rise_successes_in_a_row() {
        let mut node = NodeTracker::new(Role::Replica);
        for _ in 0..2 {
            node.failed(MS, 2);
        }
        assert_eq!(
            node.health(),
            Health::Down,
            "never-checked node goes down after fall"
        );
        assert!(node.succeeded(seen(true), MS, 3).is_empty());
        assert!(node.succeeded(seen(true), MS, 3).is_empty());
        node.failed(MS, 2);
        assert!(node.succeeded(seen(true), MS, 3).is_empty());
        assert!(node.succeeded(seen(true), MS, 3).is_empty());
        assert_eq!(
            node.succeeded(seen(true), MS, 3),
            health_change(Health::Down, Health::Up)
        );
    }

    #[test]
    fn observed_role_overrides_configured_and_reports_promotion() {
        let mut node = NodeTracker::new(Role::Unknown);
        let changes = node.succeeded(seen(true), MS, 1);
        assert_eq!(
            changes[0],
            Transition::Role {
                from: Role::Unknown,
                to: Role::Replica
            }
        );
        assert_eq!(node.role(), Role::Replica);
        assert!(node.succeeded(seen(true), MS, 1).is_empty());
        assert_eq!(
            node.succeeded(seen(false), MS, 1),
            vec![Transition::Role {
                from: Role::Replica,
                to: Role::Primary
            }]
        );
        node.failed(MS, 1);
        assert_eq!(
            node.role(),
            Role::Primary,
            "a down node keeps its last role"
        );

        let mut wrong = NodeTracker::new(Role::Primary);
        wrong.succeeded(seen(true), MS, 1);
        assert_eq!(wrong.role(), Role::Replica, "observation beats config");
    }

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn parses_check_rows() {
        let primary =
            Observation::parse(&row(&[Some("f"), Some("0/3000060"), None, None])).unwrap();
        assert_eq!(primary.role(), Role::Primary);
        assert_eq!(primary.lsn, Some(Lsn(0x300_0060)));
        assert_eq!((primary.receive_lsn, primary.replay_delay), (None, None));

        let replica = Observation::parse(&row(&[
            Some("t"),
            Some("1/10"),
            Some("1/20"),
            Some("1.500000"),
        ]))
        .unwrap();
        assert_eq!(replica.role(), Role::Replica);
        assert_eq!(replica.receive_lsn, Some(Lsn((1 << 32) | 0x20)));
        assert_eq!(replica.replay_delay, Some(Duration::from_millis(1500)));

        let skewed = Observation::parse(&row(&[Some("t"), None, None, Some("-0.25")])).unwrap();
        assert_eq!(skewed.replay_delay, Some(Duration::ZERO));

        for bad in [
            row(&[Some("t")]),
            row(&[Some("x"), None, None, None]),
            row(&[None, None, None, None]),
            row(&[Some("t"), Some("zz"), None, None]),
            row(&[Some("t"), None, None, Some("soon")]),
        ] {
            assert!(Observation::parse(&bad).is_err(), "{bad:?}");
        }
    }
}

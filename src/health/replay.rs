//! Replay-position polling for read-your-writes: one task per node that, while the published
//! topology shows the node as a usable replica, asks it for [`REPLAY_SQL`] every
//! `health.lsn_interval` on a dedicated server connection and publishes the position, so a
//! client's reads return to a replica within milliseconds of its write rather than a health
//! interval later. Otherwise (a primary, a down node) it sleeps until a check stores a new
//! snapshot, so a primary costs no wake-ups between checks. It decides nothing else: health,
//! role, lag and freshness stay the checks'. A failing poll drops the connection, backs off and
//! logs (rate-limited); it never marks a node down.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::checker::Published;
use super::HealthError;
use crate::net::WorkerId;
use crate::server::{ConnectParams, ServerConnection};
use crate::topology::{Health, Lsn, NodeId, Role};

/// The one query a poll runs: the replay position, NULL when the node is not in recovery (a
/// node just promoted; the checks will see its new role).
pub const REPLAY_SQL: &str =
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() END";

/// Polls one node until stopped.
pub(super) struct ReplayPoller {
    pub(super) node: NodeId,
    pub(super) name: String,
    pub(super) connect: ConnectParams,
    /// `health.lsn_interval` (> 0).
    pub(super) interval: Duration,
    /// Limit of one poll, connecting included (`health.timeout`).
    pub(super) timeout: Duration,
    /// The longest pause after failures (`health.interval`).
    pub(super) max_backoff: Duration,
    pub(super) published: Arc<Published>,
}

impl ReplayPoller {
    /// Polls every interval (backing off after failures) while the node is a usable replica,
    /// until `stop` is cancelled; then closes its connection.
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut conn: Option<ServerConnection> = None;
        let mut failures = 0u32;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            let started = Instant::now();
            if !self.is_usable_replica() {
                // A primary, an undiscovered or a down node: hold no connection to it.
                if let Some(open) = conn.take() {
                    open.close().await;
                }
                failures = 0;
                // Roles and health change only when a check stores a snapshot (every
                // `health.interval` at most): wait for one instead of waking every
                // `lsn_interval`, many times a second, to look again.
                let changed = self.published.changed();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if !self.is_usable_replica() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = changed => {}
                    }
                }
                next = Instant::now();
                continue;
            }
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                result = self.poll(&mut conn) => result,
            };
            match result {
                Ok(replayed) => {
                    failures = 0;
                    if let Some(lsn) = replayed {
                        self.published.record_replay(self.node, lsn);
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.log_failure(&e, failures);
                }
            }
            next = started + backoff(self.interval, self.max_backoff, failures);
        }
        if let Some(conn) = conn {
            conn.close().await;
        }
    }

    /// Whether the published topology shows this node as a replica not marked down.
    fn is_usable_replica(&self) -> bool {
        self.published
            .current()
            .node(self.node)
            .is_some_and(|n| n.role == Role::Replica && n.health != Health::Down)
    }

    /// One poll within `timeout`, connecting first if needed; `None` when the node is not in
    /// recovery. On any failure the connection is dropped, so the next poll reconnects.
    async fn poll(&self, conn: &mut Option<ServerConnection>) -> Result<Option<Lsn>, HealthError> {
        let outcome = tokio::time::timeout(self.timeout, async {
            let open = match conn {
                Some(open) => open,
                None => conn.insert(self.connect.connect(WorkerId::MAIN).await?),
            };
            let row = open.query_row(REPLAY_SQL, self.timeout).await?;
            parse_replay(&row)
        })
        .await;
        let result = outcome.unwrap_or(Err(HealthError::Timeout(self.timeout)));
        if result.is_err() {
            *conn = None;
        }
        result
    }

    fn log_failure(&self, error: &HealthError, failures: u32) {
        let database = self.published.database();
        let node = &self.name;
        tracing::debug!(%database, %node, failures, %error, "replay position poll failed");
        let key = format!("lsn-poll:{database}:{node}");
        if let Some(suppressed) = crate::logging::repeats().allow(&key) {
            tracing::warn!(%database, %node, %error, suppressed,
                "cannot poll the replay position of a replica; read-your-writes uses the health checks' until it works again");
        }
    }
}

/// The pause before the next poll after `failures` failures in a row: `interval` without
/// failures, then doubling up to `max` (never below `interval`).
pub fn backoff(interval: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(16);
    interval.saturating_mul(factor).min(max).max(interval)
}

/// Reads the row of [`REPLAY_SQL`].
pub fn parse_replay(row: &[Option<String>]) -> Result<Option<Lsn>, HealthError> {
    match row {
        [None] => Ok(None),
        [Some(text)] => Lsn::parse(text)
            .map(Some)
            .ok_or(HealthError::BadRow("unreadable WAL position")),
        _ => Err(HealthError::BadRow("expected 1 column")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_limit() {
        let (interval, max) = (20 * MS, 1000 * MS);
        let pauses: Vec<u128> = (0..8)
            .map(|f| backoff(interval, max, f).as_millis())
            .collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(backoff(interval, max, u32::MAX), max);
        assert_eq!(
            backoff(interval, MS, 3),
            interval,
            "never below the interval"
        );
    }

    #[test]
    fn parses_replay_rows() {
        let row = |v: Option<&str>| vec![v.map(str::to_string)];
        assert_eq!(
            parse_replay(&row(Some("0/3000060"))).unwrap(),
            Some(Lsn(0x300_0060))
        );
        assert_eq!(parse_replay(&row(None)).unwrap(), None);
        assert!(parse_replay(&row(Some("zz"))).is_err());
        assert!(parse_replay(&[]).is_err());
        assert!(parse_replay(&[None, None]).is_err());
    }
}

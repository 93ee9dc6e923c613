//! The I/O of health checks: a task per node that keeps one server connection (reopened when it
//! breaks) and runs [`CHECK_SQL`] once per interval, and the per-database publisher that records
//! each result and stores a new snapshot whenever anything changed.

use crate::metrics::NodeMetrics;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::database::DatabaseHealth;
use super::tracker::{Observation, Transition, CHECK_SQL};
use super::{HealthError, OnDown};
use crate::net::WorkerId;
use crate::server::{ConnectParams, ServerConnection};
use crate::topology::{ClusterSnapshot, Health, Lsn, NodeId, Role, TopologyHandle};

/// One database's health state and the handle it publishes to, shared by its checkers.
pub(super) struct Published {
    database: String,
    handle: TopologyHandle,
    state: Mutex<DatabaseHealth>,
    on_down: OnDown,
    /// Notified each time a check stores a new snapshot: the only time a node's role or health
    /// changes, so a replay poller waits on it while its node is no usable replica.
    changed: tokio::sync::Notify,
}

impl Published {
    pub(super) fn new(
        database: String,
        handle: TopologyHandle,
        state: DatabaseHealth,
        on_down: OnDown,
    ) -> Published {
        Published {
            database,
            handle,
            state: Mutex::new(state),
            on_down,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Records a check result, stores the new snapshot if it differs from the published one, then
    /// logs the changes and reports nodes that went down. The lock is held to update and store
    /// (so snapshots are stored in the order they were made, never an older over a newer one),
    /// not to log.
    fn record(&self, node: NodeId, result: &Result<Observation, HealthError>, took: Duration) {
        let (changes, snapshot, stored) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let changes = state.record(node, result.as_ref().ok().copied(), took);
            let snapshot = state.snapshot();
            let stored = **self.handle.load() != snapshot;
            if stored {
                self.handle.store(Arc::new(snapshot.clone()));
            }
            (changes, snapshot, stored)
        };
        if stored {
            self.changed.notify_waiters();
        }
        for (id, change) in changes {
            let name = snapshot.node(id).map_or("?", |n| n.name.as_str());
            self.log(name, change, result);
            if matches!(
                change,
                Transition::Health {
                    to: Health::Down,
                    ..
                }
            ) {
                (self.on_down)(&self.database, id);
            }
        }
    }

    /// Records a replica's polled replay position and stores a new snapshot if it changed it.
    pub(super) fn record_replay(&self, node: NodeId, replayed: Lsn) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Stored under the lock, so a check's snapshot and this one never overwrite each other
        // out of order.
        if state.record_replay(node, replayed) {
            self.handle.store(Arc::new(state.snapshot()));
        }
    }

    /// Resolves at the next snapshot a check stores (see the `changed` field's doc).
    /// Enable it (`Notified::enable`) before looking at the current snapshot, so that a change in
    /// between is not missed.
    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The database's name, for logs.
    pub(super) fn database(&self) -> &str {
        &self.database
    }

    /// The snapshot as published.
    pub(super) fn current(&self) -> Arc<ClusterSnapshot> {
        self.handle.load_full()
    }

    fn log(&self, node: &str, change: Transition, result: &Result<Observation, HealthError>) {
        let database = &self.database;
        match change {
            Transition::Role {
                from: Role::Replica,
                to: Role::Primary,
            } => tracing::warn!(%database, %node, "node was promoted: now a primary"),
            Transition::Role { from, to } if from != Role::Unknown => {
                tracing::warn!(%database, %node, ?from, ?to, "node changed role")
            }
            Transition::Role { to, .. } => {
                tracing::info!(%database, %node, role = ?to, "node role discovered")
            }
            Transition::Health {
                to: Health::Down, ..
            } => {
                let error = result.as_ref().err().map(ToString::to_string);
                tracing::warn!(%database, %node, error = error.as_deref().unwrap_or(""), "node is down")
            }
            Transition::Health { to, .. } => {
                tracing::info!(%database, %node, health = ?to, "node health changed")
            }
            Transition::Freshness { to, .. } => {
                tracing::info!(%database, %node, freshness = ?to, "replica freshness changed")
            }
        }
    }
}

/// Checks one node until stopped.
pub(super) struct Checker {
    pub(super) node: NodeId,
    pub(super) name: String,
    pub(super) connect: ConnectParams,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) published: Arc<Published>,
    /// Where each check's duration goes, if recorded.
    pub(super) metrics: Option<Arc<NodeMetrics>>,
}

impl Checker {
    /// Checks once per interval (the first at once) until `stop` is cancelled, then closes its
    /// connection.
    pub(super) async fn run(self, stop: CancellationToken) {
        let mut conn: Option<ServerConnection> = None;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            let result = tokio::select! {
                _ = stop.cancelled() => break,
                result = self.check(&mut conn) => result,
            };
            if let Err(e) = &result {
                tracing::debug!(database = %self.published.database, node = %self.name, error = %e, "health check failed");
            }
            let elapsed = started.elapsed();
            if let Some(metrics) = &self.metrics {
                metrics.health_check_duration.observe(elapsed);
            }
            self.published.record(self.node, &result, elapsed);
        }
        if let Some(conn) = conn {
            conn.close().await;
        }
    }

    /// One check within `timeout`, connecting first if needed. On any failure the connection is
    /// dropped, so the next check starts from a fresh one.
    async fn check(&self, conn: &mut Option<ServerConnection>) -> Result<Observation, HealthError> {
        let outcome = tokio::time::timeout(self.timeout, async {
            let open = match conn {
                Some(open) => open,
                None => conn.insert(self.connect.connect(WorkerId::MAIN).await?),
            };
            // The outer timeout bounds the whole check; this one only marks the connection broken.
            let row = open.query_row(CHECK_SQL, self.timeout).await?;
            Observation::parse(&row)
        })
        .await;
        let result = outcome.unwrap_or(Err(HealthError::Timeout(self.timeout)));
        if result.is_err() {
            *conn = None;
        }
        result
    }
}

//! Health checks (layer 3): one checker task per node of each database keeps a dedicated server
//! connection, runs one query per `health.interval`, and the database's [`DatabaseHealth`] turns
//! the results into a new `ClusterSnapshot` stored in that database's `TopologyHandle`.
//!
//! The decisions (fall/rise hysteresis, observed roles, lag and freshness) are pure code in
//! `tracker`, `lag` and `database`; `checker` does the I/O. With `health.lsn_interval` set, a
//! `replay` poller per node also refreshes replicas' replay positions between checks, for
//! read-your-writes (positions only; it decides nothing else).

mod checker;
mod database;
mod lag;
mod replay;
mod tracker;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use database::{DatabaseHealth, Rules};
pub use lag::{measure, next_freshness, LagLimits};
pub use replay::{backoff, parse_replay, REPLAY_SQL};
pub use tracker::{NodeTracker, Observation, Transition, CHECK_SQL};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::ServerTlsConnector;
use crate::server::{ConnectParams, ServerError};
use crate::topology::{NodeId, TopologyHandle};

/// Why one health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("health check returned an unexpected row: {0}")]
    BadRow(&'static str),
    #[error("health check did not finish within {0:?}")]
    Timeout(std::time::Duration),
}

/// Called (from a checker task) when a node of a database goes down, e.g. to close its idle
/// server connections. Must not block.
pub type OnDown = Arc<dyn Fn(&str, NodeId) + Send + Sync>;

/// Starts one checker per node of every database in `config` under `tracker`; they run until
/// `stop` is cancelled and keep the handles of `topology` (one per database, as built by
/// `session::Generation`) up to date; with `health.lsn_interval` > 0, also one replay-position
/// poller per node. Returns how many checkers were started (pollers not counted): none when
/// `health.enabled` is false or no user is configured to log in with (logged).
pub fn spawn(
    config: &Config,
    topology: &HashMap<String, TopologyHandle>,
    tls: &ServerTlsConnector,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    on_down: OnDown,
) -> usize {
    spawn_with_metrics(config, topology, tls, tracker, stop, on_down, None)
}

/// Like [`spawn`], each checker recording how long its checks take into
/// `pgsluice_health_check_duration_seconds` of its node in `metrics`.
pub fn spawn_with_metrics(
    config: &Config,
    topology: &HashMap<String, TopologyHandle>,
    tls: &ServerTlsConnector,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    on_down: OnDown,
    metrics: Option<&Metrics>,
) -> usize {
    let health = &config.health;
    if !health.enabled {
        tracing::info!("health checks disabled; topology stays as configured");
        return 0;
    }
    let Some(user) = health.user_name(config).and_then(|name| config.user(name)) else {
        tracing::warn!("health checks need a configured user to log in with; none is configured");
        return 0;
    };
    let rules = Rules::from_config(health);
    let mut started = 0;
    for database in &config.databases {
        let Some(handle) = topology.get(&database.name) else {
            continue;
        };
        let published = Arc::new(checker::Published::new(
            database.name.clone(),
            handle.clone(),
            DatabaseHealth::new((**handle.load()).clone(), rules),
            on_down.clone(),
        ));
        for (index, node) in database.nodes.iter().enumerate() {
            let connect =
                ConnectParams::for_node(config, database, user, node, tls, health.timeout);
            let checker = checker::Checker {
                node: NodeId(index),
                name: node.display_name(),
                connect,
                interval: health.interval,
                timeout: health.timeout,
                published: published.clone(),
                metrics: metrics.map(|m| m.node(&database.name, &node.display_name())),
            };
            if !health.lsn_interval.is_zero() {
                let poller = replay::ReplayPoller {
                    node: NodeId(index),
                    name: node.display_name(),
                    connect: checker.connect.clone(),
                    interval: health.lsn_interval,
                    timeout: health.timeout,
                    max_backoff: health.interval,
                    published: published.clone(),
                };
                tracker.spawn(poller.run(stop.clone()));
            }
            tracker.spawn(checker.run(stop.clone()));
            started += 1;
        }
    }
    tracing::info!(checkers = started, interval = ?health.interval, lsn_interval = ?health.lsn_interval, user = %user.name, "health checks started");
    started
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_down() -> OnDown {
        Arc::new(|_: &str, _| {})
    }

    /// Neither case spawns anything, so no runtime is needed.
    #[test]
    fn nothing_starts_when_disabled_or_without_a_user() {
        let text = "databases:\n  - name: app\n    nodes:\n      - host: db1\n";
        let mut config = crate::config::load_str(text, &|_| None).unwrap();
        let tls = ServerTlsConnector::new(&config.server_tls).unwrap();
        let topology = HashMap::new();
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        assert_eq!(
            spawn(&config, &topology, &tls, &tracker, &stop, on_down()),
            0
        );
        config.health.enabled = false;
        assert_eq!(
            spawn(&config, &topology, &tls, &tracker, &stop, on_down()),
            0
        );
        assert!(tracker.is_empty());
    }
}

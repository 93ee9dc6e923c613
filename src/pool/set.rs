//! The set of pools built from one config: one per (database, user, node), created up front so that
//! admin views list them all and `min_size` connections open at start.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Pool;
use crate::config::{Config, PoolSettings};
use crate::metrics::Metrics;
use crate::net::ServerTlsConnector;
use crate::server::ConnectParams;
use crate::topology::NodeId;

/// Identifies a pool: the client-facing database and user names, and the node index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
    pub node: NodeId,
}

/// Every pool of one configuration.
#[derive(Debug, Default)]
pub struct PoolSet {
    pools: HashMap<PoolKey, Arc<Pool>>,
}

impl PoolSet {
    /// Builds a pool for each (database, user, node) of `config`, each recording into its handle
    /// from `metrics` (shared with earlier generations' pools of the same labels).
    pub fn build(config: &Config, tls: &ServerTlsConnector, metrics: &Metrics) -> PoolSet {
        PoolSet::build_reusing(config, tls, metrics, None)
    }

    /// Like [`PoolSet::build`], but takes over each pool of `previous` (a reload) whose name,
    /// settings and connection parameters are unchanged, with its idle server connections. The
    /// caller passes `previous` only when the server TLS settings are unchanged too: a kept pool
    /// keeps the TLS connector it was built with.
    pub fn build_reusing(
        config: &Config,
        tls: &ServerTlsConnector,
        metrics: &Metrics,
        previous: Option<&PoolSet>,
    ) -> PoolSet {
        let mut pools = HashMap::new();
        for database in &config.databases {
            for user in &config.users {
                let settings = config.pool_settings(database, user);
                for (index, node) in database.nodes.iter().enumerate() {
                    let connect = ConnectParams::for_node(
                        config,
                        database,
                        user,
                        node,
                        tls,
                        settings.server_connect_timeout,
                    );
                    let name = format!("{}/{}@{}", database.name, user.name, node.display_name());
                    let key = PoolKey {
                        database: database.name.clone(),
                        user: user.name.clone(),
                        node: NodeId(index),
                    };
                    let kept = previous
                        .and_then(|set| set.pools.get(&key))
                        .filter(|old| unchanged(old, &name, &settings, &connect));
                    let pool = match kept {
                        Some(old) => old.clone(),
                        None => {
                            let handle =
                                metrics.pool(&database.name, &user.name, &node.display_name());
                            Pool::with_metrics(name, settings.clone(), connect, handle)
                        }
                    };
                    pools.insert(key, pool);
                }
            }
        }
        PoolSet { pools }
    }

    /// Whether `other` holds the very same pool (not a copy) for `key`: a reload kept it.
    pub fn shares(&self, other: &PoolSet, key: &PoolKey) -> bool {
        match (self.pools.get(key), other.pools.get(key)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The pool for (database, user, node), if configured.
    pub fn get(&self, database: &str, user: &str, node: NodeId) -> Option<&Arc<Pool>> {
        // Building a key allocates; this runs once per session checkout in session mode.
        self.pools.get(&PoolKey {
            database: database.to_string(),
            user: user.to_string(),
            node,
        })
    }

    /// Every pool with its key.
    pub fn iter(&self) -> impl Iterator<Item = (&PoolKey, &Arc<Pool>)> {
        self.pools.iter()
    }

    /// Starts each pool's housekeeping under `tracker` until `stop` is cancelled.
    pub fn spawn_maintenance(&self, tracker: &TaskTracker, stop: &CancellationToken) {
        for pool in self.pools.values() {
            tracker.spawn(pool.clone().maintain(stop.clone()));
        }
    }

    /// Closes the idle server connections of every pool of `node` in `database` (whatever the
    /// user), e.g. when health checks mark the node down. Checked-out connections are untouched.
    pub async fn close_idle_for(&self, database: &str, node: NodeId) {
        for (key, pool) in &self.pools {
            if key.database == database && key.node == node {
                pool.close_idle().await;
            }
        }
    }

    /// Refuses further checkouts everywhere (shutdown).
    pub fn close_all(&self) {
        for pool in self.pools.values() {
            pool.close();
        }
    }
}

/// Whether `pool` was built from the same name, settings and connection parameters (TLS aside).
fn unchanged(pool: &Pool, name: &str, settings: &PoolSettings, connect: &ConnectParams) -> bool {
    let old = pool.connect_params();
    pool.name() == name
        && pool.settings() == settings
        && old.host == connect.host
        && old.port == connect.port
        && old.user == connect.user
        && old.password == connect.password
        && old.database == connect.database
        && old.connect_timeout == connect.connect_timeout
        && old.max_message_size == connect.max_message_size
}

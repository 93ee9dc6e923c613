//! The set of pools built from one config: one per (database, user, node), created up front so that
//! admin views list them all and `min_size` connections open at start.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Pool;
use crate::config::Config;
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
        let mut pools = HashMap::new();
        for database in &config.databases {
            for user in &config.users {
                let settings = config.pool_settings(database, user);
                for (index, node) in database.nodes.iter().enumerate() {
                    let connect = ConnectParams {
                        host: node.host.clone(),
                        port: node.port,
                        user: user.server_user().to_string(),
                        password: user.server_password().map(str::to_string),
                        database: database.server_database().to_string(),
                        tls: tls.clone(),
                        connect_timeout: settings.server_connect_timeout,
                        max_message_size: config.limits.max_message_size,
                    };
                    let name = format!("{}/{}@{}", database.name, user.name, node.display_name());
                    let key = PoolKey {
                        database: database.name.clone(),
                        user: user.name.clone(),
                        node: NodeId(index),
                    };
                    let handle = metrics.pool(&database.name, &user.name, &node.display_name());
                    let pool = Pool::with_metrics(name, settings.clone(), connect, handle);
                    pools.insert(key, pool);
                }
            }
        }
        PoolSet { pools }
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

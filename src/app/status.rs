//! What the HTTP endpoints report about the running proxy: readiness, the `/status` document, and
//! node gauges refreshed from the topology before each scrape. Reads the live generation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::metrics::http::{Readiness, StatusSource};
use crate::metrics::{Metrics, NodeRoleLabel};
use crate::session::Shared;
use crate::topology::{Freshness, Health, NodeState, Role};

/// Lifecycle flags the app sets and the endpoints read.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Client listeners are accepting.
    pub listening: AtomicBool,
    /// Shutdown was requested; no new traffic should come.
    pub draining: AtomicBool,
}

/// [`StatusSource`] over the app's shared state.
#[derive(Debug)]
pub struct AppStatus {
    pub shared: Arc<Shared>,
    pub lifecycle: Arc<Lifecycle>,
}

fn role_name(role: Role) -> &'static str {
    role_label(role).as_str()
}

fn role_label(role: Role) -> NodeRoleLabel {
    match role {
        Role::Primary => NodeRoleLabel::Primary,
        Role::Replica => NodeRoleLabel::Replica,
        Role::Unknown => NodeRoleLabel::Unknown,
    }
}

fn node_json(node: &NodeState) -> Value {
    json!({
        "name": node.name,
        "host": node.host,
        "port": node.port,
        "role": role_name(node.role),
        "health": match node.health {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        },
        "lsn": node.lsn.map(|lsn| lsn.to_string()),
        "lag_bytes": node.lag.map(|lag| lag.bytes),
        "lag_seconds": node.lag.map(|lag| lag.time.as_secs_f64()),
        "freshness": match node.freshness {
            Freshness::Fresh => "fresh",
            Freshness::Lagging => "lagging",
        },
    })
}

impl StatusSource for AppStatus {
    fn readiness(&self) -> Readiness {
        if self.lifecycle.draining.load(Ordering::Relaxed) {
            return Readiness::NotReady("draining".into());
        }
        if !self.lifecycle.listening.load(Ordering::Relaxed) {
            return Readiness::NotReady("not listening yet".into());
        }
        let generation = self.shared.generation.load();
        let usable = generation
            .topology
            .values()
            .any(|handle| handle.load().nodes.iter().any(NodeState::usable));
        if usable {
            Readiness::Ready
        } else {
            Readiness::NotReady("no usable node in any database".into())
        }
    }

    fn status_json(&self) -> Value {
        let generation = self.shared.generation.load();
        let metrics = &generation.metrics;
        let mut databases = serde_json::Map::new();
        for db in &generation.config.databases {
            let nodes: Vec<Value> = generation
                .topology
                .get(&db.name)
                .map(|handle| handle.load().nodes.iter().map(node_json).collect())
                .unwrap_or_default();
            databases.insert(db.name.clone(), json!({ "nodes": nodes }));
        }
        let mut pools: Vec<Value> = generation
            .pools
            .iter()
            .map(|(key, pool)| {
                let stats = pool.stats();
                let node = generation
                    .config
                    .database(&key.database)
                    .and_then(|db| db.nodes.get(key.node.0))
                    .map(|node| node.display_name())
                    .unwrap_or_default();
                json!({
                    "database": key.database,
                    "user": key.user,
                    "node": node,
                    "mode": pool.settings().mode.as_str(),
                    "size": pool.settings().size,
                    "open": stats.open,
                    "idle": stats.idle,
                    "active": stats.active,
                    "waiting": stats.waiting,
                })
            })
            .collect();
        pools.sort_by_key(|p| p.to_string());
        json!({
            "version": metrics.version(),
            "uptime_seconds": metrics.uptime().as_secs(),
            "draining": self.lifecycle.draining.load(Ordering::Relaxed),
            "clients": self.shared.clients.load(Ordering::Relaxed),
            "databases": databases,
            "pools": pools,
        })
    }

    fn refresh(&self, metrics: &Metrics) {
        let generation = self.shared.generation.load();
        for (database, handle) in &generation.topology {
            for node in &handle.load().nodes {
                let lag = node.lag.map(|lag| (lag.bytes, lag.time.as_secs_f64()));
                metrics.node(database, &node.name).set_state(
                    node.usable(),
                    role_label(node.role),
                    lag,
                );
            }
        }
    }
}

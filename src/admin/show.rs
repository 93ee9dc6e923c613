//! The SHOW views: each builds a [`Table`] from the current configuration, pools, topology and the
//! client registry. Pure reads: nothing here waits or changes state.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::command::{Show, HELP};
use super::registry::{ClientEntry, ClientState};
use super::table::{int, text, timestamp, Kind, Table};
use super::View;
use crate::pool::{Pool, PoolKey};
use crate::topology::{Freshness, Health, NodeId, Role};

/// Builds the table for `show`.
pub fn show(show: Show, view: &View<'_>, clients: &[std::sync::Arc<ClientEntry>]) -> Table {
    match show {
        Show::Help => help(),
        Show::Pools => pools(view, clients),
        Show::Clients => clients_table(clients),
        Show::Servers => servers(view),
        Show::Nodes => nodes(view),
        Show::Stats => stats(view, clients),
        Show::Config => super::config_view::config(view.config),
        Show::Workers => workers(view),
        Show::Version => {
            let mut table = Table::new(&[("version", Kind::Text)]);
            table.push(vec![text(version())]);
            table
        }
    }
}

/// `pgsluice <crate version>`.
pub fn version() -> String {
    format!("pgsluice {}", env!("CARGO_PKG_VERSION"))
}

fn help() -> Table {
    let mut table = Table::new(&[("command", Kind::Text), ("description", Kind::Text)]);
    for (command, description) in HELP {
        table.push(vec![text(*command), text(*description)]);
    }
    table
}

/// The pools ordered by database (config order), user (config order), node.
fn sorted_pools<'v>(view: &View<'v>) -> Vec<(&'v PoolKey, &'v std::sync::Arc<Pool>)> {
    let config = view.config;
    let rank_db = |name: &str| config.databases.iter().position(|d| d.name == name);
    let rank_user = |name: &str| config.users.iter().position(|u| u.name == name);
    let mut pools: Vec<_> = view.pools.iter().collect();
    pools.sort_by_key(|(key, _)| (rank_db(&key.database), rank_user(&key.user), key.node));
    pools
}

/// The node's display name from the live topology, else its index.
fn node_name(view: &View<'_>, database: &str, node: NodeId) -> String {
    view.topology
        .get(database)
        .and_then(|t| t.load().node(node).map(|n| n.name.clone()))
        .unwrap_or_else(|| node.0.to_string())
}

/// Longest current wait of clients of each (database, user).
fn max_waits(clients: &[std::sync::Arc<ClientEntry>]) -> HashMap<(&str, &str), Duration> {
    let mut waits = HashMap::new();
    for client in clients {
        if client.state() == ClientState::Waiting {
            let wait = client.waiting_for();
            let entry = waits
                .entry((client.database(), client.user()))
                .or_insert(wait);
            *entry = (*entry).max(wait);
        }
    }
    waits
}

fn pools(view: &View<'_>, clients: &[std::sync::Arc<ClientEntry>]) -> Table {
    let mut table = Table::new(&[
        ("database", Kind::Text),
        ("user", Kind::Text),
        ("node", Kind::Text),
        ("cl_active", Kind::Int),
        ("cl_waiting", Kind::Int),
        ("sv_active", Kind::Int),
        ("sv_idle", Kind::Int),
        ("sv_used", Kind::Int),
        ("sv_tested", Kind::Int),
        ("sv_login", Kind::Int),
        ("maxwait", Kind::Int),
        ("maxwait_us", Kind::Int),
        ("pool_mode", Kind::Text),
        ("paused", Kind::Text),
    ]);
    let waits = max_waits(clients);
    for (key, pool) in sorted_pools(view) {
        let stats = pool.stats();
        // `active` counts slots in use, including connections still being opened.
        let sv_active = stats.open.saturating_sub(stats.idle);
        let sv_login = stats.active.saturating_sub(sv_active);
        let wait = match stats.waiting {
            0 => Duration::ZERO,
            _ => waits
                .get(&(key.database.as_str(), key.user.as_str()))
                .copied()
                .unwrap_or_default(),
        };
        table.push(vec![
            text(&key.database),
            text(&key.user),
            text(node_name(view, &key.database, key.node)),
            int(stats.active as u64),
            int(stats.waiting as u64),
            int(sv_active as u64),
            int(stats.idle as u64),
            int(0u8),
            int(0u8),
            int(sv_login as u64),
            int(wait.as_secs()),
            int(wait.subsec_micros()),
            text(pool.settings().mode.as_str()),
            text(if pool.is_paused() { "yes" } else { "no" }),
        ]);
    }
    table
}

fn clients_table(clients: &[std::sync::Arc<ClientEntry>]) -> Table {
    let mut table = Table::new(&[
        ("type", Kind::Text),
        ("user", Kind::Text),
        ("database", Kind::Text),
        ("state", Kind::Text),
        ("addr", Kind::Text),
        ("port", Kind::Int),
        ("connect_time", Kind::Text),
        ("request_time", Kind::Text),
        ("wait", Kind::Int),
        ("wait_us", Kind::Int),
        ("id", Kind::Int),
        ("pinned", Kind::Text),
    ]);
    for client in clients {
        let state = client.state();
        let wait = client.waiting_for();
        table.push(vec![
            text("C"),
            text(client.user()),
            text(client.database()),
            text(state.as_str()),
            text(client.peer.ip().to_string()),
            int(client.peer.port()),
            timestamp(client.connected_at()),
            timestamp(client.requested_at()),
            int(wait.as_secs()),
            int(wait.subsec_micros()),
            int(client.id),
            client.pinned().map(str::to_string),
        ]);
    }
    table
}

fn servers(view: &View<'_>) -> Table {
    let mut table = Table::new(&[
        ("type", Kind::Text),
        ("user", Kind::Text),
        ("database", Kind::Text),
        ("node", Kind::Text),
        ("state", Kind::Text),
        ("addr", Kind::Text),
        ("port", Kind::Int),
        ("connect_time", Kind::Text),
        ("request_time", Kind::Text),
        ("remote_pid", Kind::Int),
    ]);
    let now = SystemTime::now();
    for (key, pool) in sorted_pools(view) {
        let node = node_name(view, &key.database, key.node);
        let connect = pool.connect_params();
        let row = |state: &str, connect_time, request_time, pid| {
            vec![
                text("S"),
                text(&key.user),
                text(&key.database),
                text(&node),
                text(state),
                text(&connect.host),
                int(connect.port),
                connect_time,
                request_time,
                pid,
            ]
        };
        let stats = pool.stats();
        for _ in 0..stats.open.saturating_sub(stats.idle) {
            // Checked out by a client: the pool does not see inside it.
            table.push(row("active", None, None, None));
        }
        for idle in pool.idle_servers() {
            table.push(row(
                "idle",
                timestamp(now - idle.age),
                timestamp(now - idle.idle_for),
                int(idle.remote_pid),
            ));
        }
    }
    table
}

fn nodes(view: &View<'_>) -> Table {
    let mut table = Table::new(&[
        ("database", Kind::Text),
        ("node", Kind::Text),
        ("host", Kind::Text),
        ("port", Kind::Int),
        ("role", Kind::Text),
        ("health", Kind::Text),
        ("lsn", Kind::Text),
        ("lag_bytes", Kind::Int),
        ("lag_seconds", Kind::Float),
        ("freshness", Kind::Text),
    ]);
    for database in &view.config.databases {
        let Some(topology) = view.topology.get(&database.name) else {
            continue;
        };
        for node in &topology.load().nodes {
            table.push(vec![
                text(&database.name),
                text(&node.name),
                text(&node.host),
                int(node.port),
                text(match node.role {
                    Role::Primary => "primary",
                    Role::Replica => "replica",
                    Role::Unknown => "unknown",
                }),
                text(match node.health {
                    Health::Unknown => "unknown",
                    Health::Up => "up",
                    Health::Down => "down",
                }),
                node.lsn.map(|l| l.to_string()),
                node.lag.and_then(|l| int(l.bytes)),
                node.lag.map(|l| format!("{:.3}", l.time.as_secs_f64())),
                text(match node.freshness {
                    Freshness::Fresh => "fresh",
                    Freshness::Lagging => "lagging",
                }),
            ]);
        }
    }
    table
}

/// One row per worker thread.
fn workers(view: &View<'_>) -> Table {
    let mut table = Table::new(&[
        ("worker", Kind::Int),
        ("clients", Kind::Int),
        ("cpu_percent", Kind::Float),
        ("new_clients", Kind::Text),
        ("moves_asked", Kind::Int),
    ]);
    for (index, worker) in view.workers.iter().enumerate() {
        table.push(vec![
            int(index as u64),
            int(worker.clients as u64),
            worker.cpu.map(|cpu| format!("{:.1}", cpu * 100.0)),
            text(if worker.preferred { "yes" } else { "no" }),
            int(worker.moves_asked as u64),
        ]);
    }
    table
}

/// Counters per database that exist today; the query/transaction counters read 0 until metrics
/// provides them.
const ZERO_STATS: &[&str] = &[
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];

fn stats(view: &View<'_>, clients: &[std::sync::Arc<ClientEntry>]) -> Table {
    let mut columns = vec![
        ("database", Kind::Text),
        ("clients", Kind::Int),
        ("pools", Kind::Int),
        ("sv_open", Kind::Int),
        ("sv_active", Kind::Int),
    ];
    columns.extend(ZERO_STATS.iter().map(|name| (*name, Kind::Int)));
    let mut table = Table::new(&columns);
    for database in &view.config.databases {
        let name = database.name.as_str();
        let client_count = clients.iter().filter(|c| c.database() == name).count();
        let (mut pools, mut open, mut active) = (0u64, 0u64, 0u64);
        for (key, pool) in view.pools.iter() {
            if key.database == name {
                let stats = pool.stats();
                pools += 1;
                open += stats.open as u64;
                active += stats.open.saturating_sub(stats.idle) as u64;
            }
        }
        let mut row = vec![
            text(name),
            int(client_count as u64),
            int(pools),
            int(open),
            int(active),
        ];
        row.extend(ZERO_STATS.iter().map(|_| int(0u8)));
        table.push(row);
    }
    table
}

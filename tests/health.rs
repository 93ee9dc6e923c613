//! Health checks against a real cluster of its own (primary + 2 replicas, all configured `auto`):
//! role discovery, lag and freshness, a replica going down and up (its idle pool connections
//! closed), and a promotion showing up in the published topology.

mod common;

use std::time::{Duration, Instant};

use common::start_proxy;
use pgsluice::devcluster::{roles, ClusterSpec, DevCluster};
use pgsluice::pool::Pool;
use pgsluice::topology::{ClusterSnapshot, Freshness, Health, NodeId, Role, TopologyHandle};
use tokio::task::block_in_place;

const INTERVAL: Duration = Duration::from_millis(200);
/// Bound of every wait for the topology to change.
const WAIT: Duration = Duration::from_secs(15);

fn yaml(cluster: &DevCluster) -> String {
    let nodes: String = cluster
        .nodes()
        .iter()
        .map(|n| {
            format!(
                "      - {{ name: {}, host: 127.0.0.1, port: {} }}\n",
                n.name, n.port
            )
        })
        .collect();
    format!(
        r#"
pool: {{ min_size: 1 }}
users:
  - {{ name: app, password: app-pass, server_user: {user}, server_password: {pass} }}
databases:
  - name: sluice
    server_database: {db}
    nodes:
{nodes}
health: {{ interval: 200ms, timeout: 1s, fall: 3, rise: 2, max_lag_bytes: 64kB, max_lag: 1h, lag_recovery: 0.5 }}
"#,
        user = roles::SCRAM_USER,
        pass = roles::SCRAM_PASSWORD,
        db = roles::DATABASE,
    )
}

/// Polls the published topology until `check` holds; panics with the last snapshot after `WAIT`.
async fn wait_for(
    handle: &TopologyHandle,
    what: &str,
    check: impl Fn(&ClusterSnapshot) -> bool,
) -> (ClusterSnapshot, Duration) {
    let started = Instant::now();
    loop {
        let snapshot = (**handle.load()).clone();
        if check(&snapshot) {
            return (snapshot, started.elapsed());
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for {what}; topology: {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(snapshot: &ClusterSnapshot, index: usize) -> &pgsluice::topology::NodeState {
    snapshot.node(NodeId(index)).expect("configured node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_discover_roles_lag_failures_and_promotion() {
    let cluster = block_in_place(|| {
        DevCluster::start(&ClusterSpec {
            replicas: 2,
            ..ClusterSpec::default()
        })
    })
    .expect("devcluster starts");
    block_in_place(|| {
        cluster.psql_in(
            cluster.primary(),
            roles::DATABASE,
            "CREATE TABLE filler (v text); INSERT INTO filler VALUES ('x');",
        )?;
        cluster.wait_replicas_caught_up()
    })
    .expect("setup");
    let proxy = start_proxy(&yaml(&cluster)).await;
    let first = proxy.app.shared().generation.load().topology["sluice"].clone();
    roles_are_discovered(&first).await;
    // A reload restarts the checkers on the new generation's topology and stops the old ones.
    let config = pgsluice::config::load_str(&yaml(&cluster), &|_| None).expect("config");
    proxy.app.reload(config).expect("reload");
    let handle = proxy.app.shared().generation.load().topology["sluice"].clone();
    roles_are_discovered(&handle).await;
    tokio::time::sleep(INTERVAL * 2).await;
    let frozen = first.load_full();
    paused_replica_lags_then_recovers(&cluster, &handle).await;
    let replica2_pool = proxy
        .app
        .shared()
        .generation
        .load()
        .pools
        .get("sluice", "app", NodeId(2))
        .expect("pool")
        .clone();
    stopped_replica_goes_down_and_up(&cluster, &handle, &replica2_pool).await;
    promotion_is_published(&cluster, &handle).await;
    assert_eq!(
        *first.load_full(),
        *frozen,
        "the old generation's checkers stopped"
    );
    proxy.stop().await;
}

/// Roles of `auto` nodes are discovered; replicas are up with their lag measured.
async fn roles_are_discovered(handle: &TopologyHandle) {
    let (snapshot, _) = wait_for(handle, "roles and lag", |s| {
        s.nodes.iter().all(|n| n.health == Health::Up)
            && node(s, 1).lag.is_some()
            && node(s, 2).lag.is_some()
    })
    .await;
    let roles: Vec<Role> = snapshot.nodes.iter().map(|n| n.role).collect();
    assert_eq!(roles, [Role::Primary, Role::Replica, Role::Replica]);
    assert!(node(&snapshot, 0).lsn.is_some() && node(&snapshot, 0).lag.is_none());
    assert!(snapshot
        .nodes
        .iter()
        .all(|n| n.freshness == Freshness::Fresh));
}

/// Paused replay plus writes on the primary: that replica lags (in bytes and in time), the other
/// stays fresh; resumed, it is fresh again.
async fn paused_replica_lags_then_recovers(cluster: &DevCluster, handle: &TopologyHandle) {
    let replica1 = &cluster.replicas()[0];
    block_in_place(|| {
        cluster.pause_replay(replica1)?;
        cluster.psql_in(
            cluster.primary(),
            roles::DATABASE,
            "INSERT INTO filler SELECT repeat('x', 100) FROM generate_series(1, 5000);",
        )
    })
    .expect("pause and write");
    let (snapshot, _) = wait_for(handle, "replica1 lagging", |s| {
        node(s, 1).freshness == Freshness::Lagging
    })
    .await;
    let lag = node(&snapshot, 1).lag.expect("lag measured");
    assert!(lag.bytes > 64_000, "{lag:?}");
    // Once the WAL is received but not replayed, the lag has a time too.
    wait_for(handle, "replica1 lagging in time", |s| {
        node(s, 1).lag.is_some_and(|l| l.time > Duration::ZERO)
    })
    .await;
    wait_for(handle, "replica2 caught up", |s| {
        node(s, 2).lag.is_some_and(|l| l.bytes < 64_000)
    })
    .await;
    assert_eq!(node(&handle.load(), 2).freshness, Freshness::Fresh);
    block_in_place(|| cluster.resume_replay(replica1)).expect("resume");
    let (snapshot, _) = wait_for(handle, "replica1 fresh again", |s| {
        node(s, 1).freshness == Freshness::Fresh
    })
    .await;
    assert!(node(&snapshot, 1)
        .lag
        .is_some_and(|l| l.time.is_zero() || l.bytes < 32_000));
}

/// A stopped replica is down within about (fall + 1) intervals and its idle server connections
/// are closed; started again, it is up.
async fn stopped_replica_goes_down_and_up(
    cluster: &DevCluster,
    handle: &TopologyHandle,
    pool: &Pool,
) {
    let replica2 = &cluster.replicas()[1];
    assert!(
        common::eventually(WAIT, || pool.stats().idle == 1).await,
        "min_size opens a connection to replica2"
    );
    block_in_place(|| cluster.stop_node(replica2)).expect("stop replica2");
    let (_, took) = wait_for(handle, "replica2 down", |s| {
        node(s, 2).health == Health::Down
    })
    .await;
    eprintln!("replica2 down {took:?} after it stopped");
    assert!(
        took <= INTERVAL * 4 + Duration::from_secs(1),
        "down after {took:?}"
    );
    assert!(
        common::eventually(Duration::from_secs(5), || pool.stats().idle == 0).await,
        "idle connections of a down node are closed"
    );
    block_in_place(|| cluster.start_node(replica2)).expect("start replica2");
    wait_for(handle, "replica2 up", |s| node(s, 2).health == Health::Up).await;
}

/// Primary stopped, replica1 promoted: the topology shows the new primary within two intervals
/// of the promotion finishing.
async fn promotion_is_published(cluster: &DevCluster, handle: &TopologyHandle) {
    block_in_place(|| cluster.stop_node(cluster.primary())).expect("stop primary");
    wait_for(handle, "primary down", |s| {
        node(s, 0).health == Health::Down
    })
    .await;
    block_in_place(|| cluster.promote(&cluster.replicas()[0])).expect("promote");
    let (snapshot, took) = wait_for(handle, "new primary", |s| {
        let primaries: Vec<NodeId> = s.primaries().map(|n| n.id).collect();
        primaries == [NodeId(1)]
    })
    .await;
    eprintln!("new primary published {took:?} after the promotion finished");
    // Two intervals, plus slack for a machine busy running other tests.
    assert!(
        took <= INTERVAL * 2 + Duration::from_millis(600),
        "new primary seen after {took:?}"
    );
    assert_eq!(node(&snapshot, 1).lag, None);
    assert_eq!(
        node(&snapshot, 0).role,
        Role::Primary,
        "the old primary keeps its role, down"
    );
}

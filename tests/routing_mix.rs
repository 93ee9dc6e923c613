//! A measurement, ignored by default (run `benches/routing_mix.sh`): a 90/10 read/write
//! pgbench mix through the proxy on a primary with two streaming replicas, once with
//! read-your-writes by LSN and once with it off. Prints the share of reads the replicas served
//! (from the routing counters `/metrics` exposes) and the throughput of each run.

mod common;

use std::time::Duration;

use common::{pgbench, start_proxy};
use pgsluice::devcluster::{roles, ClusterSpec, DevCluster};
use pgsluice::metrics::{RouteReason, RouteTarget};
use tokio::task::block_in_place;

const READ_SCRIPT: &str = "\\set id random(1, 1000)\nSELECT v FROM mix WHERE id = :id;\n";
const WRITE_SCRIPT: &str = "\\set id random(1, 1000)\nUPDATE mix SET v = v + 1 WHERE id = :id;\n";

fn yaml(cluster: &DevCluster, read_your_writes: &str) -> String {
    format!(
        r#"
pool: {{ mode: transaction, size: 8 }}
users:
  - {{ name: app, password: app-pass, server_user: {user}, server_password: {pass} }}
databases:
  - name: sluice
    server_database: {db}
    nodes:
      - {{ name: n0, host: 127.0.0.1, port: {p0} }}
      - {{ name: n1, host: 127.0.0.1, port: {p1} }}
      - {{ name: n2, host: 127.0.0.1, port: {p2} }}
health: {{ interval: 200ms, lsn_interval: {lsn_interval} }}
routing: {{ read_your_writes: {read_your_writes} }}
"#,
        user = roles::SCRAM_USER,
        pass = roles::SCRAM_PASSWORD,
        db = roles::DATABASE,
        p0 = cluster.primary().port,
        p1 = cluster.replicas()[0].port,
        p2 = cluster.replicas()[1].port,
        lsn_interval = std::env::var("PGSLUICE_MIX_LSN_INTERVAL").unwrap_or_else(|_| "20ms".into()),
    )
}

/// The `tps = ...` figure of pgbench's output.
fn tps(output: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run benches/routing_mix.sh"]
async fn read_write_mix_share_of_replica_reads_and_cost_of_read_your_writes() {
    let seconds: u64 = std::env::var("PGSLUICE_MIX_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let clients = std::env::var("PGSLUICE_MIX_CLIENTS").unwrap_or_else(|_| "8".into());
    // The devcluster commits with synchronous_commit = off: replicas get a commit's WAL only when
    // the WAL writer flushes it (up to 200 ms later), which bounds read-your-writes' replica share.
    let sync_commit = std::env::var("PGSLUICE_MIX_SYNC_COMMIT").unwrap_or_else(|_| "off".into());
    println!(
        "synchronous_commit = {sync_commit}, health.lsn_interval = {}",
        std::env::var("PGSLUICE_MIX_LSN_INTERVAL").unwrap_or_else(|_| "20ms".into())
    );
    let cluster = block_in_place(|| {
        DevCluster::start(&ClusterSpec {
            replicas: 2,
            extra_conf: vec![format!("synchronous_commit = {sync_commit}")],
        })
    })
    .expect("devcluster starts");
    block_in_place(|| {
        cluster.psql_in(
            cluster.primary(),
            roles::DATABASE,
            &format!(
                "CREATE TABLE mix(id int PRIMARY KEY, v int NOT NULL);
                 INSERT INTO mix SELECT g, 0 FROM generate_series(1, 1000) g;
                 GRANT ALL ON mix TO {};",
                roles::SCRAM_USER
            ),
        )?;
        cluster.wait_replicas_caught_up()
    })
    .expect("table set up");
    let dir = std::env::temp_dir().join(format!("pgsluice-mix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (read, write) = (dir.join("read.sql"), dir.join("write.sql"));
    std::fs::write(&read, READ_SCRIPT).unwrap();
    std::fs::write(&write, WRITE_SCRIPT).unwrap();
    for mode in ["lsn", "off"] {
        let proxy = start_proxy(&yaml(&cluster, mode)).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let metrics = proxy.app.metrics().database("sluice");
        let count = |target| {
            RouteReason::ALL
                .iter()
                .map(|r| metrics.routes(target, *r))
                .sum::<u64>()
        };
        let (replica_before, primary_before) =
            (count(RouteTarget::Replica), count(RouteTarget::Primary));
        let writes_before = metrics.routes(RouteTarget::Primary, RouteReason::Write);
        let output = pgbench(
            proxy.addr.port(),
            &[
                "-n",
                "-c",
                &clients,
                "-j",
                "2",
                "-T",
                &seconds.to_string(),
                "-f",
                &format!("{}@9", read.display()),
                "-f",
                &format!("{}@1", write.display()),
                "sluice",
            ],
        )
        .output();
        let output = tokio::time::timeout(Duration::from_secs(seconds + 60), output)
            .await
            .expect("pgbench finishes")
            .expect("pgbench runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let replica = count(RouteTarget::Replica) - replica_before;
        let writes = metrics.routes(RouteTarget::Primary, RouteReason::Write) - writes_before;
        let primary_reads = (count(RouteTarget::Primary) - primary_before).saturating_sub(writes);
        let reads = replica + primary_reads;
        println!(
            "read_your_writes {mode}: {:.0} tps; reads {reads} ({:.1}% on replicas), writes {writes}",
            tps(&stdout),
            100.0 * replica as f64 / reads.max(1) as f64,
        );
        proxy.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

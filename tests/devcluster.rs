//! Live test of the devcluster: a primary and one replica on this machine's Postgres binaries.

use pgsluice::devcluster::{roles, ClusterError, ClusterSpec, DevCluster};

#[test]
fn primary_and_replica_stream_pause_and_stop() -> Result<(), ClusterError> {
    let mut cluster = DevCluster::start(&ClusterSpec::default())?;
    let base = cluster.base_dir().to_path_buf();
    let primary = cluster.primary().clone();
    let replica = cluster.replicas()[0].clone();
    assert_eq!(cluster.nodes().len(), 2);
    assert_ne!(primary.port, replica.port);

    assert_eq!(
        cluster
            .psql(&primary, "SELECT pg_is_in_recovery();")?
            .trim(),
        "f"
    );
    assert_eq!(
        cluster
            .psql(&replica, "SELECT pg_is_in_recovery();")?
            .trim(),
        "t"
    );
    let roles_sql = format!(
        "SELECT count(*) FROM pg_roles WHERE rolname IN ('{}', '{}', '{}', '{}');",
        roles::SCRAM_USER,
        roles::MD5_USER,
        roles::CLEAR_USER,
        roles::TRUST_USER
    );
    assert_eq!(cluster.psql(&primary, &roles_sql)?.trim(), "4");
    let md5 = format!(
        "SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = '{}';",
        roles::MD5_USER
    );
    assert_eq!(cluster.psql(&primary, &md5)?.trim(), "t");

    cluster.psql_in(
        &primary,
        roles::DATABASE,
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1);",
    )?;
    cluster.wait_replicas_caught_up()?;
    let count = "SELECT count(*) FROM t;";
    assert_eq!(
        cluster.psql_in(&replica, roles::DATABASE, count)?.trim(),
        "1"
    );

    cluster.pause_replay(&replica)?;
    cluster.psql_in(&primary, roles::DATABASE, "INSERT INTO t VALUES (2);")?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        cluster.psql_in(&replica, roles::DATABASE, count)?.trim(),
        "1"
    );
    cluster.resume_replay(&replica)?;
    cluster.wait_replicas_caught_up()?;
    assert_eq!(
        cluster.psql_in(&replica, roles::DATABASE, count)?.trim(),
        "2"
    );

    cluster.stop_node(&replica)?;
    assert!(cluster.psql(&replica, "SELECT 1;").is_err());
    cluster.start_node(&replica)?;
    assert_eq!(cluster.psql(&replica, "SELECT 1;")?.trim(), "1");

    cluster.promote(&replica)?;
    assert_eq!(
        cluster
            .psql(&replica, "SELECT pg_is_in_recovery();")?
            .trim(),
        "f"
    );
    assert!(cluster.promote(&primary).is_err());

    cluster.stop();
    assert!(!base.exists());
    Ok(())
}

#[test]
fn shared_cluster_is_started_once() {
    let spec = ClusterSpec {
        replicas: 0,
        extra_conf: vec!["max_connections = 50".to_string()],
    };
    let a = pgsluice::devcluster::shared(&spec);
    let b = pgsluice::devcluster::shared(&ClusterSpec::default());
    assert!(std::ptr::eq(a, b));
    assert!(a.replicas().is_empty());
    let max = a.psql(a.primary(), "SHOW max_connections;").expect("psql");
    assert_eq!(max.trim(), "50");
    // The process exits without Drop; the reaper removes the cluster afterwards.
}

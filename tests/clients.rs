//! Real command-line clients through pgsluice: psql (scripts, COPY, errors) and pgbench (initialise,
//! then a workload in each query mode with zero failed transactions).

mod common;

use tokio::process::Command;

use common::{pg_bin, proxy_yaml, start_proxy};

/// Runs a client to completion without blocking the runtime the in-process proxy shares.
async fn run(cmd: &mut Command) -> String {
    let out = cmd.output().await.expect("client runs");
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn psql_script_with_copy_and_errors() {
    let proxy = start_proxy(&proxy_yaml("size: 2", "")).await;
    let url = proxy.url("app", "app-pass", "sluice");
    let script = "\
DROP TABLE IF EXISTS psql_copy;
CREATE TABLE psql_copy(id int, name text);
COPY psql_copy FROM STDIN WITH (FORMAT csv);
1,one
2,two
3,three
\\.
SELECT string_agg(name, '|' ORDER BY id) FROM psql_copy;
BEGIN;
SELECT 1/0;
ROLLBACK;
SELECT count(*) FROM psql_copy;
DROP TABLE psql_copy;
";
    let out = Command::new(pg_bin("psql"))
        .args(["-X", "-A", "-t", "-d", &url])
        .arg("-c")
        .arg("SELECT 1")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("pgsluice-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("script.sql");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(pg_bin("psql"))
        .args(["-X", "-A", "-t", "-d", &url, "-f"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("one|two|three"), "{stdout}\n{stderr}");
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert!(stdout.lines().any(|l| l.trim() == "3"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
    proxy.stop().await;
}

#[tokio::test]
async fn pgbench_runs_with_zero_failures_in_every_query_mode() {
    let proxy = start_proxy(&proxy_yaml("size: 8", "")).await;
    let port = proxy.addr.port().to_string();
    let env = [("PGPASSWORD", "app-pass"), ("PGSSLMODE", "disable")];
    let base = |cmd: &mut Command| {
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "app"])
            .envs(env);
    };
    let mut init = Command::new(pg_bin("pgbench"));
    base(&mut init);
    run(init.args(["-i", "-s", "1", "-q", "sluice"])).await;
    for mode in ["simple", "extended", "prepared"] {
        let mut bench = Command::new(pg_bin("pgbench"));
        base(&mut bench);
        let out = run(bench.args(["-c", "8", "-j", "2", "-T", "3", "-M", mode, "sluice"])).await;
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
        let processed = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(processed > 0, "{mode}: {out}");
    }
    proxy.stop().await;
}

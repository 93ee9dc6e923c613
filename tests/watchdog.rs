//! systemd integration of the real binary: READY=1 once listening, then WATCHDOG=1 pings at half of
//! `WATCHDOG_USEC`, and STOPPING=1 on SIGTERM, read from a NOTIFY_SOCKET the test owns.

use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::process::Command;

const CONFIG: &str = "listeners: [{ address: \"127.0.0.1:0\" }]
users: [{ name: u, auth_method: trust }]
databases: [{ name: d, nodes: [{ host: 127.0.0.1, port: 1, role: primary }] }]
";

#[tokio::test]
async fn notifies_ready_pings_the_watchdog_and_says_stopping() {
    let dir = std::env::temp_dir().join(format!("pgsluice-watchdog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pgsluice.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // WATCHDOG_PID must be the proxy's own pid: the shell exports its pid, then execs the proxy.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run -c \"$1\""])
        .arg(env!("CARGO_BIN_EXE_pgsluice"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received
        .iter()
        .filter(|m: &&String| m.contains("WATCHDOG=1"))
        .count()
        < 3
    {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("watchdog pings within 20 s; got {received:?}"))
            .unwrap();
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(received[0].contains("READY=1"), "{received:?}");

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(killed.unwrap().success());
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("STOPPING=1 after SIGTERM; got {received:?}"))
            .unwrap();
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains("STOPPING=1") {
            break;
        }
        received.push(message);
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

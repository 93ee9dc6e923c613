//! Client authentication methods, the errors a client sees for bad logins, and TLS on and off, with
//! tokio-postgres and psql as real clients.

mod common;

use tokio::process::Command;

use common::{pg_bin, proxy_yaml, sqlstate, start_proxy, VERIFIER_PASSWORD};

#[tokio::test]
async fn every_auth_method_logs_in_and_reaches_its_server_role() {
    let proxy = start_proxy(&proxy_yaml("size: 2", "")).await;
    for (user, password, role) in [
        ("app", "app-pass", "sluice_scram"),
        ("md5app", "md5-app-pass", "sluice_md5"),
        ("clearapp", "clear-app-pass", "sluice_clear"),
        ("trustapp", "", "sluice_trust"),
        ("verifierapp", VERIFIER_PASSWORD, "sluice_scram"),
    ] {
        let client = proxy
            .connect(user, password, "sluice")
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role, "{user} uses its server role");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let proxy = start_proxy(&proxy_yaml("size: 2", "")).await;
    for (user, password) in [
        ("app", "wrong"),
        ("md5app", "wrong"),
        ("clearapp", "wrong"),
        ("verifierapp", "wrong"),
        ("nobody", "whatever"),
    ] {
        let err = proxy
            .connect(user, password, "sluice")
            .await
            .expect_err("login must fail");
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{user}: {err}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert_eq!(
            message,
            format!("password authentication failed for user \"{user}\"")
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_database_is_3d000() {
    let proxy = start_proxy(&proxy_yaml("size: 2", "")).await;
    let err = proxy
        .connect("app", "app-pass", "nosuchdb")
        .await
        .expect_err("unknown database");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"));
    proxy.stop().await;
}

#[tokio::test]
async fn cleartext_is_refused_without_tls_unless_allowed() {
    // Config validation refuses a cleartext user when TLS is off and it is not allowed...
    let yaml = proxy_yaml("size: 2", "").replace(
        "allow_cleartext_without_tls: true",
        "allow_cleartext_without_tls: false",
    );
    assert!(pgsluice::config::load_str(&yaml, &|_| None).is_err());
    // ...and with TLS offered, a client that does not use it gets no password prompt at all.
    let (_dir, cert, key) = self_signed();
    let extra =
        format!("client_tls: {{ mode: prefer, cert_file: \"{cert}\", key_file: \"{key}\" }}");
    let proxy = start_proxy(&proxy_yaml("size: 2", &extra).replace(
        "allow_cleartext_without_tls: true",
        "allow_cleartext_without_tls: false",
    ))
    .await;
    let base = format!(
        "postgres://clearapp:clear-app-pass@127.0.0.1:{}/sluice",
        proxy.addr.port()
    );
    let out = psql(&format!("{base}?sslmode=disable"), "SELECT 1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cleartext password authentication is refused without TLS"),
        "{stderr}"
    );
    let out = psql(&format!("{base}?sslmode=require"), "SELECT 'over-tls'").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over-tls");
    proxy.stop().await;
}

/// Writes a self-signed certificate for 127.0.0.1/localhost and returns (dir, cert, key).
fn self_signed() -> (tempdir::Dir, String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempdir::Dir::new();
    let cert = dir.path.join("server.crt");
    let key = dir.path.join("server.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (dir, cert.display().to_string(), key.display().to_string())
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "pgsluice-tls-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs psql without blocking the runtime the in-process proxy shares.
async fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .await
        .expect("psql runs")
}

#[tokio::test]
async fn tls_on_and_off_with_psql() {
    let (_dir, cert, key) = self_signed();
    let extra =
        format!("client_tls: {{ mode: prefer, cert_file: \"{cert}\", key_file: \"{key}\" }}");
    let proxy = start_proxy(&proxy_yaml("size: 2", &extra)).await;
    let base = format!(
        "postgres://app:app-pass@127.0.0.1:{}/sluice",
        proxy.addr.port()
    );

    let out = psql(&format!("{base}?sslmode=require"), "SELECT 'tls-ok'").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tls-ok");

    // Channel binding needs the TLS certificate hash: SCRAM-SHA-256-PLUS.
    let out = psql(
        &format!("{base}?sslmode=require&channel_binding=require"),
        "SELECT 'bound'",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Certificate verification against our self-signed cert.
    let out = psql(
        &format!("{base}?sslmode=verify-full&sslrootcert={cert}&host=localhost"),
        "SELECT 1",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = psql(&format!("{base}?sslmode=disable"), "SELECT 'plain-ok'").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "plain-ok");
    proxy.stop().await;
}

#[tokio::test]
async fn tls_required_refuses_plain_clients() {
    let (_dir, cert, key) = self_signed();
    let extra =
        format!("client_tls: {{ mode: require, cert_file: \"{cert}\", key_file: \"{key}\" }}");
    let proxy = start_proxy(&proxy_yaml("size: 2", &extra)).await;
    let base = format!(
        "postgres://app:app-pass@127.0.0.1:{}/sluice",
        proxy.addr.port()
    );
    let out = psql(&format!("{base}?sslmode=disable"), "SELECT 1").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS is required"), "{stderr}");
    let out = psql(&format!("{base}?sslmode=require"), "SELECT 1").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn tls_to_the_server_when_it_offers_none() {
    // The test nodes run without TLS: prefer falls back to plain, require fails clearly.
    let proxy = start_proxy(&proxy_yaml("size: 2", "server_tls: { mode: prefer }")).await;
    proxy.app_client().await;
    proxy.stop().await;
    let proxy = start_proxy(&proxy_yaml("size: 2", "server_tls: { mode: require }")).await;
    let err = proxy
        .connect("app", "app-pass", "sluice")
        .await
        .expect_err("server refuses TLS");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"));
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("refused TLS"), "{message}");
    proxy.stop().await;
}

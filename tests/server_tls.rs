//! TLS from the proxy to Postgres (`server_tls.mode` disable / prefer / require / verify-full) against
//! a dedicated devcluster whose node serves a certificate signed by a test CA made with rcgen.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgsluice::devcluster::{roles, ClusterSpec, DevCluster};

use common::{sqlstate, start_proxy, Proxy};

/// A one-node cluster with `ssl = on`, plus the CA files a proxy may be pointed at.
struct TlsCluster {
    cluster: DevCluster,
    /// The CA that signed the node's certificate.
    ca_file: PathBuf,
    /// An unrelated CA: verify-full against it must fail.
    wrong_ca_file: PathBuf,
}

/// `pg_hba.conf` line making the md5 role reachable over TLS only (it must come first to win).
const MD5_TLS_ONLY_HBA: &str = "hostnossl all sluice_md5 127.0.0.1/32 reject\n";

/// The TLS cluster shared by this binary's tests, started on first use (blocking: call it through
/// [`tls_cluster`] from async code). The reaper of [`DevCluster::start`] removes it at exit.
fn shared_tls_cluster() -> &'static TlsCluster {
    static SHARED: OnceLock<TlsCluster> = OnceLock::new();
    SHARED.get_or_init(|| match start_tls_cluster() {
        Ok(cluster) => cluster,
        Err(e) => panic!("TLS devcluster could not start: {e:#}"),
    })
}

/// [`shared_tls_cluster`] without blocking the test's runtime.
async fn tls_cluster() -> &'static TlsCluster {
    tokio::task::spawn_blocking(shared_tls_cluster)
        .await
        .expect("TLS cluster setup panicked")
}

/// Starts a plain cluster, then turns TLS on by reload: the certificate files live in the cluster's
/// own directory (created by the start) so they are removed with it.
fn start_tls_cluster() -> anyhow::Result<TlsCluster> {
    let cluster = DevCluster::start(&ClusterSpec {
        replicas: 0,
        extra_conf: Vec::new(),
    })?;
    let dir = cluster.base_dir().join("tls");
    std::fs::create_dir_all(&dir)?;
    let files = write_certificates(&dir)?;
    hand_to_server_user(&dir)?;

    let node = cluster.primary();
    let hba_path = node.data_dir.join("pg_hba.conf");
    let hba = std::fs::read_to_string(&hba_path)?;
    std::fs::write(&hba_path, format!("{MD5_TLS_ONLY_HBA}{hba}"))?;
    cluster.psql(
        node,
        &format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}';\n\
             ALTER SYSTEM SET ssl_key_file = '{}';\n\
             ALTER SYSTEM SET ssl = on;\n\
             SELECT pg_reload_conf();\n",
            files.cert.display(),
            files.key.display()
        ),
    )?;
    // The devcluster's psql uses libpq's default sslmode=prefer, so once the postmaster has
    // reloaded, its own session is encrypted.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = cluster.psql(
            node,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();",
        )?;
        if out.trim() == "t" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ssl did not come on after reload; log:\n{}",
            std::fs::read_to_string(cluster.log_path(node)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(TlsCluster {
        cluster,
        ca_file: files.ca,
        wrong_ca_file: files.wrong_ca,
    })
}

/// Paths of the PEM files [`write_certificates`] wrote.
struct CertFiles {
    ca: PathBuf,
    wrong_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA with a distinct name (so a wrong CA is an unknown issuer, not a bad signature).
fn new_ca(name: &str) -> anyhow::Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(rcgen::CertifiedIssuer::self_signed(
        params,
        rcgen::KeyPair::generate()?,
    )?)
}

/// Writes the test CA, an unrelated CA, and a server certificate for `localhost` and `127.0.0.1`
/// signed by the test CA, with its key (mode 0600).
fn write_certificates(dir: &Path) -> anyhow::Result<CertFiles> {
    use std::os::unix::fs::PermissionsExt;
    let ca = new_ca("pgsluice test CA")?;
    let wrong_ca = new_ca("pgsluice unrelated CA")?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    let files = CertFiles {
        ca: dir.join("ca.crt"),
        wrong_ca: dir.join("wrong-ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca.pem())?;
    std::fs::write(&files.wrong_ca, wrong_ca.pem())?;
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600))?;
    Ok(files)
}

/// Postgres refuses a key not owned by its OS user: as root the devcluster runs it as `postgres`.
fn hand_to_server_user(dir: &Path) -> anyhow::Result<()> {
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "chown -R postgres {} failed",
        dir.display()
    );
    Ok(())
}

/// A proxy config for the TLS node at `host` with `server_tls` as given (a flow mapping body).
/// `app` reaches the SCRAM role; `md5app` reaches the md5 role, which the node allows over TLS only.
fn tls_proxy_yaml(host: &str, server_tls: &str) -> String {
    let port = shared_tls_cluster().cluster.primary().port;
    format!(
        r#"
auth: {{ method: scram-sha-256 }}
pool: {{ size: 2 }}
server_tls: {{ {server_tls} }}
users:
  - {{ name: app, password: app-pass, server_user: {scram_user}, server_password: {scram_pass} }}
  - {{ name: md5app, password: md5-app-pass, server_user: {md5_user}, server_password: {md5_pass} }}
databases:
  - name: sluice
    server_database: {db}
    nodes:
      - {{ name: primary, host: {host}, port: {port}, role: primary }}
"#,
        scram_user = roles::SCRAM_USER,
        scram_pass = roles::SCRAM_PASSWORD,
        md5_user = roles::MD5_USER,
        md5_pass = roles::MD5_PASSWORD,
        db = roles::DATABASE,
    )
}

/// Starts a proxy towards the TLS node (starting the node first if needed).
async fn tls_proxy(host: &str, server_tls: &str) -> Proxy {
    tls_cluster().await;
    start_proxy(&tls_proxy_yaml(host, server_tls)).await
}

/// Whether the server connection behind `user`'s session is encrypted, as the node sees it.
async fn server_side_ssl(proxy: &Proxy, user: &str, password: &str) -> bool {
    let client = proxy
        .connect(user, password, "sluice")
        .await
        .unwrap_or_else(|e| panic!("{user} connects through the proxy: {e}"));
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl query");
    row.get::<_, bool>(0)
}

#[tokio::test]
async fn require_encrypts_the_server_connection() {
    let proxy = tls_proxy("127.0.0.1", "mode: require").await;
    assert!(server_side_ssl(&proxy, "app", "app-pass").await);
    proxy.stop().await;
}

#[tokio::test]
async fn prefer_encrypts_and_disable_does_not() {
    let proxy = tls_proxy("127.0.0.1", "mode: prefer").await;
    assert!(server_side_ssl(&proxy, "app", "app-pass").await);
    proxy.stop().await;

    let proxy = tls_proxy("127.0.0.1", "mode: disable").await;
    assert!(!server_side_ssl(&proxy, "app", "app-pass").await);
    proxy.stop().await;
}

#[tokio::test]
async fn verify_full_accepts_the_node_by_name_and_by_ip() {
    let ca = tls_cluster().await.ca_file.display().to_string();
    for host in ["localhost", "127.0.0.1"] {
        let proxy = tls_proxy(host, &format!("mode: verify-full, ca_file: \"{ca}\"")).await;
        assert!(
            server_side_ssl(&proxy, "app", "app-pass").await,
            "verify-full via {host}"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn verify_full_with_the_wrong_ca_fails_clearly() {
    let wrong = tls_cluster().await.wrong_ca_file.display().to_string();
    let proxy = tls_proxy(
        "localhost",
        &format!("mode: verify-full, ca_file: \"{wrong}\""),
    )
    .await;
    let err = proxy
        .connect("app", "app-pass", "sluice")
        .await
        .expect_err("an untrusted server certificate must fail");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    let message = err
        .as_db_error()
        .expect("proxy error")
        .message()
        .to_string();
    // e.g. "cannot connect to server for pool sluice/app@primary: TLS handshake failed: invalid
    // peer certificate: UnknownIssuer"
    assert!(message.contains("TLS handshake failed"), "{message}");
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    proxy.stop().await;
}

#[tokio::test]
async fn tls_only_role_needs_server_tls() {
    // The node rejects sluice_md5 on unencrypted connections (hostnossl ... reject); the proxy
    // reports its failed server connection as 08006 with the node's reason.
    let proxy = tls_proxy("127.0.0.1", "mode: disable").await;
    let err = proxy
        .connect("md5app", "md5-app-pass", "sluice")
        .await
        .expect_err("node refuses the role without TLS");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    let message = err.as_db_error().expect("node error").message().to_string();
    assert!(
        message.contains("server rejected the connection"),
        "{message}"
    );
    assert!(message.contains("no encryption"), "{message}");
    proxy.stop().await;

    let proxy = tls_proxy("127.0.0.1", "mode: require").await;
    assert!(server_side_ssl(&proxy, "md5app", "md5-app-pass").await);
    proxy.stop().await;
}

/// A name for this machine that resolves to 127.0.0.1 only and is not in the node's certificate.
async fn loopback_alias() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_string();
    if name.is_empty() || name == "localhost" {
        return None;
    }
    let addrs: Vec<_> = tokio::net::lookup_host((name.as_str(), 5432))
        .await
        .ok()?
        .collect();
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip() == loopback)).then_some(name)
}

#[tokio::test]
async fn verify_full_checks_the_host_name() {
    let Some(alias) = loopback_alias().await else {
        eprintln!("skipped: the host name does not resolve to 127.0.0.1 only");
        return;
    };
    let ca = tls_cluster().await.ca_file.display().to_string();
    let proxy = tls_proxy(&alias, &format!("mode: verify-full, ca_file: \"{ca}\"")).await;
    let err = proxy
        .connect("app", "app-pass", "sluice")
        .await
        .expect_err("a certificate for another name must fail");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    let message = err
        .as_db_error()
        .expect("proxy error")
        .message()
        .to_string();
    // e.g. "... TLS handshake failed: invalid peer certificate: certificate not valid for name
    // \"vm\"; certificate is only valid for DnsName(\"localhost\") or IpAddress(127.0.0.1)"
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(
        message.contains(&format!("not valid for name \"{alias}\"")),
        "{message}"
    );
    proxy.stop().await;

    // `require` does not check names (libpq semantics).
    let proxy = tls_proxy(&alias, "mode: require").await;
    assert!(server_side_ssl(&proxy, "app", "app-pass").await);
    proxy.stop().await;
}

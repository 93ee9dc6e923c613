//! Shared integration-test harness: one real Postgres primary + replica per test binary, and pgsluice
//! started in-process on port 0 with a config written for the test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgsluice::app::App;
use pgsluice::config;
use pgsluice::devcluster::{self, roles, ClusterSpec, DevCluster};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The cluster shared by every test of this binary (started on first use, stopped at exit).
pub fn cluster() -> &'static DevCluster {
    devcluster::shared(&ClusterSpec {
        replicas: 1,
        ..ClusterSpec::default()
    })
}

/// Password of the test user `verifierapp`, whose config holds only a SCRAM verifier.
pub const VERIFIER_PASSWORD: &str = "v-pass";

/// A config with one database `sluice` (primary + replica) and a user per auth method:
/// `app`/`app-pass` (SCRAM), `md5app`/`md5-app-pass`, `clearapp`/`clear-app-pass`, `trustapp`, and
/// `verifierapp` (SCRAM verifier of [`VERIFIER_PASSWORD`]). `extra` is appended at top level.
pub fn proxy_yaml(pool: &str, extra: &str) -> String {
    let cluster = cluster();
    let verifier = pgsluice::auth::scram::ScramVerifier::generate(VERIFIER_PASSWORD).to_string();
    let primary = cluster.primary().port;
    let replica = cluster.replicas()[0].port;
    // Tests about pooling count server connections on the primary: reads stay there unless the
    // test asks for routing itself.
    let routing = if extra.contains("routing:") {
        ""
    } else {
        "routing: { reads: primary }"
    };
    format!(
        r#"
auth: {{ method: scram-sha-256, allow_cleartext_without_tls: true }}
pool: {{ {pool} }}
users:
  - {{ name: app, password: app-pass, server_user: {scram_user}, server_password: {scram_pass} }}
  - {{ name: md5app, password: md5-app-pass, auth_method: md5, server_user: {md5_user}, server_password: {md5_pass} }}
  - {{ name: clearapp, password: clear-app-pass, auth_method: cleartext, server_user: {clear_user}, server_password: {clear_pass} }}
  - {{ name: trustapp, auth_method: trust, server_user: {trust_user} }}
  - {{ name: verifierapp, password: "{verifier}", server_user: {scram_user}, server_password: {scram_pass} }}
databases:
  - name: sluice
    server_database: {db}
    nodes:
      - {{ name: primary, host: 127.0.0.1, port: {primary}, role: primary }}
      - {{ name: replica1, host: 127.0.0.1, port: {replica}, role: replica }}
{routing}
{extra}
"#,
        scram_user = roles::SCRAM_USER,
        scram_pass = roles::SCRAM_PASSWORD,
        md5_user = roles::MD5_USER,
        md5_pass = roles::MD5_PASSWORD,
        clear_user = roles::CLEAR_USER,
        clear_pass = roles::CLEAR_PASSWORD,
        trust_user = roles::TRUST_USER,
        db = roles::DATABASE,
    )
}

/// pgsluice running in this process.
pub struct Proxy {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts pgsluice on 127.0.0.1:0 with `yaml`; clients still connected when the test stops it are
/// closed after one second (tests of draining use [`start_proxy_with`]).
pub async fn start_proxy(yaml: &str) -> Proxy {
    let mut config = config::load_str(yaml, &|_| None).expect("test config is valid");
    config.limits.shutdown_timeout = Duration::from_secs(1);
    start_proxy_with(config).await
}

/// Starts pgsluice on 127.0.0.1:0 with `config` as given.
pub async fn start_proxy_with(config: config::Config) -> Proxy {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = Arc::new(App::new(config).expect("app starts"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let app = app.clone();
        let shutdown = shutdown.clone();
        async move {
            app.serve(vec![listener], shutdown)
                .await
                .expect("proxy serves")
        }
    });
    Proxy {
        addr,
        app,
        shutdown,
        task,
    }
}

impl Proxy {
    /// A libpq URL for this proxy (no TLS unless `params` says otherwise).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.addr.port()
        )
    }

    /// tokio-postgres connection settings for this proxy.
    pub fn pg_config(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects with tokio-postgres; the connection task runs in the background.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self
            .pg_config(user, password, db)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The usual test login: user `app` on database `sluice`.
    pub async fn app_client(&self) -> tokio_postgres::Client {
        self.connect("app", "app-pass", "sluice")
            .await
            .expect("connect as app")
    }

    /// Drains and stops the proxy.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(60), self.task).await;
    }
}

/// SQLSTATE of a tokio-postgres error, if the server (or proxy) sent one.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|c| c.code().to_string())
}

/// Directory of Postgres client binaries (psql, pgbench) matching the cluster's server.
pub fn pg_bin(name: &str) -> PathBuf {
    let dir =
        std::env::var("PGSLUICE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let candidate = PathBuf::from(dir).join(name);
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from(name)
    }
}

/// Number of server connections the given node role has open to the test database.
pub fn server_connections(role: &str) -> i64 {
    let cluster = cluster();
    let out = cluster
        .psql(
            cluster.primary(),
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND backend_type = 'client backend'"
            ),
        )
        .expect("psql count");
    out.trim().parse().expect("count is a number")
}

/// Polls `check` every 100 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pgbench command against the proxy at `port` as user `app` (run it with tokio::process so
/// the in-process proxy keeps running).
#[allow(dead_code)]
/// `pgbench -i -s 1` on database `sluice` through the proxy at `port`; panics with pgbench's
/// error output if it fails.
pub async fn pgbench_init(port: u16) {
    let out = pgbench(port, &["-i", "-s", "1", "-q", "sluice"])
        .output()
        .await
        .expect("run pgbench -i");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs pgbench through the proxy at `port` with `args` and asserts it succeeded with no failed
/// transaction (`label` names the run in the panic); returns its output.
#[allow(dead_code)]
pub async fn pgbench_without_failures(port: u16, args: &[&str], label: &str) -> String {
    let out = pgbench(port, args).output().await.expect("run pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{label}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{label}: {stdout}"
    );
    stdout
}

pub fn pgbench(port: u16, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(pg_bin("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .env("PGPASSWORD", "app-pass")
        .env("PGSSLMODE", "disable");
    cmd
}

//! Throwaway local Postgres clusters (one primary + N streaming replicas) for integration tests
//! and `pgsluice demo`. Blocking std-only code: it shells out to initdb, pg_ctl, pg_basebackup, psql.

mod conf;
mod exec;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use exec::{log_tail, run, run_output, Runner};

/// Roles and database created on every devcluster's primary, for the proxy's auth tests.
///
/// Each role is reachable from 127.0.0.1 only with the auth method its name says (see `pg_hba.conf`
/// generation); `postgres` is the trusted superuser.
pub mod roles {
    /// Database owned by [`SCRAM_USER`]; every role below may create objects in its `public` schema.
    pub const DATABASE: &str = "sluice";
    /// Role that must authenticate with SCRAM-SHA-256.
    pub const SCRAM_USER: &str = "sluice_scram";
    /// Password of [`SCRAM_USER`].
    pub const SCRAM_PASSWORD: &str = "scram-pass";
    /// Role that must authenticate with md5 (its verifier is stored as md5).
    pub const MD5_USER: &str = "sluice_md5";
    /// Password of [`MD5_USER`].
    pub const MD5_PASSWORD: &str = "md5-pass";
    /// Role that must authenticate with a cleartext password.
    pub const CLEAR_USER: &str = "sluice_clear";
    /// Password of [`CLEAR_USER`].
    pub const CLEAR_PASSWORD: &str = "clear-pass";
    /// Role trusted without a password.
    pub const TRUST_USER: &str = "sluice_trust";
}

/// Why a devcluster operation failed. Messages carry the command, its stderr and, for node
/// operations, the tail of the node's log, so a CI failure is readable from the error alone.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable Postgres bin dir (no initdb found).
    #[error("PostgreSQL binaries not found: {0}")]
    BinariesNotFound(String),
    /// A command exited unsuccessfully.
    #[error("command `{cmd}` failed (exit status {status:?}):\n{stderr}")]
    Command {
        cmd: String,
        status: Option<i32>,
        stderr: String,
    },
    /// A filesystem or process-spawn error.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A wait (startup, catch-up, pause) did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No free loopback port could be reserved, or every start attempt hit a taken port.
    #[error("no free loopback port for {0}")]
    NoFreePort(String),
    /// The given node does not belong to this cluster (or is not a replica where one is needed).
    #[error("unknown or unsuitable node: {0}")]
    UnknownNode(String),
}

/// What cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of streaming replicas of the primary.
    pub replicas: usize,
    /// Extra `postgresql.conf` lines, applied to every node after the devcluster defaults.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            replicas: 1,
            extra_conf: Vec::new(),
        }
    }
}

/// One Postgres instance of a devcluster, listening on `127.0.0.1:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// "primary", "replica1", "replica2", ...
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Data directory (also the Unix socket directory).
    pub data_dir: PathBuf,
}

/// A running throwaway cluster. Dropping it stops every node and removes its directory; a detached
/// reaper does the same if the process dies first (see [`shared`]).
#[derive(Debug)]
pub struct DevCluster {
    primary: Node,
    replicas: Vec<Node>,
    base: PathBuf,
    runner: Runner,
    stopped: bool,
}

/// Distinguishes clusters of one process in directory names.
static CLUSTER_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Attempts at starting one node, each on a newly reserved port.
const START_ATTEMPTS: usize = 5;
/// How long [`DevCluster::wait_replicas_caught_up`] and replica registration may take.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node log included in errors.
const LOG_TAIL_LINES: usize = 30;

impl DevCluster {
    /// Superuser of every node; trusted from 127.0.0.1.
    pub const SUPERUSER: &'static str = "postgres";

    /// Creates and starts a primary (with the [`roles`]) and `spec.replicas` streaming replicas.
    ///
    /// Works as root (commands then run as the OS user `postgres`) and as an ordinary user. On
    /// error everything already started is stopped and removed.
    pub fn start(spec: &ClusterSpec) -> Result<DevCluster, ClusterError> {
        let bin = exec::find_bin_dir()?;
        let as_postgres = exec::running_as_root();
        let seq = CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("pgsluice-{}-{seq}", std::process::id()));
        create_base_dir(&base)?;
        let runner = Runner {
            bin,
            as_postgres,
            cwd: base.clone(),
        };
        runner.chown(&base, true)?;
        let primary = Node {
            name: "primary".into(),
            port: 0,
            data_dir: base.join("primary"),
        };
        let mut cluster = DevCluster {
            primary,
            replicas: Vec::new(),
            base,
            runner,
            stopped: false,
        };
        // From here on, Drop cleans up if a step fails.
        cluster.spawn_reaper(spec.replicas)?;
        cluster.init_primary(spec)?;
        for i in 1..=spec.replicas {
            cluster.add_replica(&format!("replica{i}"))?;
        }
        tracing::info!(base = %cluster.base.display(), primary = cluster.primary.port,
            replicas = ?cluster.replicas.iter().map(|r| r.port).collect::<Vec<_>>(),
            "devcluster started");
        Ok(cluster)
    }

    /// The primary node.
    pub fn primary(&self) -> &Node {
        &self.primary
    }

    /// The replicas, in creation order.
    pub fn replicas(&self) -> &[Node] {
        &self.replicas
    }

    /// Primary first, then the replicas.
    pub fn nodes(&self) -> Vec<&Node> {
        std::iter::once(&self.primary)
            .chain(self.replicas.iter())
            .collect()
    }

    /// Host every node listens on.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// Directory holding every node's data dir and log.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// Server log of `node` (kept outside the data dir).
    pub fn log_path(&self, node: &Node) -> PathBuf {
        self.base.join(format!("{}.log", node.name))
    }

    /// Runs SQL with psql on a node as the superuser; returns stdout (psql -X -A -t -v ON_ERROR_STOP=1).
    ///
    /// The SQL is fed on stdin, so it may hold several statements, including ones that cannot run
    /// in a transaction block (CREATE DATABASE).
    pub fn psql(&self, node: &Node, sql: &str) -> Result<String, ClusterError> {
        self.psql_in(node, "postgres", sql)
    }

    /// Like [`DevCluster::psql`], in database `db`.
    pub fn psql_in(&self, node: &Node, db: &str, sql: &str) -> Result<String, ClusterError> {
        let mut cmd = self.runner.client_command("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.host())
            .arg("-p")
            .arg(node.port.to_string())
            .args(["-U", Self::SUPERUSER, "-d", db, "-f", "-"]);
        run_output(cmd, Some(sql), "")
    }

    /// Pauses WAL replay on `replica` and waits until Postgres reports it paused.
    pub fn pause_replay(&self, replica: &Node) -> Result<(), ClusterError> {
        self.psql(replica, "SELECT pg_wal_replay_pause();")?;
        self.wait_until(
            replica,
            "SELECT pg_get_wal_replay_pause_state() = 'paused';",
            "replay to pause",
        )
    }

    /// Resumes WAL replay on `replica`.
    pub fn resume_replay(&self, replica: &Node) -> Result<(), ClusterError> {
        self.psql(replica, "SELECT pg_wal_replay_resume();")
            .map(|_| ())
    }

    /// Waits until every replica has replayed the primary's current WAL position (timeout 30 s).
    ///
    /// The target is the primary's WAL *insert* position: with `synchronous_commit = off` a just
    /// committed transaction may not be written yet, and the write position would miss it.
    /// A replica whose replay is paused never catches up, so this then returns `Timeout`.
    pub fn wait_replicas_caught_up(&self) -> Result<(), ClusterError> {
        let lsn = self.psql(&self.primary, "SELECT pg_current_wal_insert_lsn();")?;
        let lsn = lsn.trim();
        for replica in &self.replicas {
            let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn;");
            self.wait_until(replica, &sql, &format!("replay of {lsn}"))?;
        }
        Ok(())
    }

    /// Stops `node` (`pg_ctl stop -m fast`); its data dir stays, so [`DevCluster::start_node`]
    /// brings it back on the same port.
    pub fn stop_node(&self, node: &Node) -> Result<(), ClusterError> {
        self.check_member(node)?;
        let mut cmd = self.runner.command("pg_ctl");
        cmd.arg("-D")
            .arg(&node.data_dir)
            .args(["-w", "-t", "60", "stop", "-m", "fast"]);
        run(cmd, None, &log_tail(&self.log_path(node), LOG_TAIL_LINES))
    }

    /// Starts a node previously stopped with [`DevCluster::stop_node`], on its port.
    pub fn start_node(&self, node: &Node) -> Result<(), ClusterError> {
        self.check_member(node)?;
        self.pg_ctl_start(node)
    }

    /// Promotes `replica` to a primary (`pg_ctl promote -w`). The cluster's notion of which node
    /// is "primary" does not change; callers track topology changes themselves.
    pub fn promote(&self, replica: &Node) -> Result<(), ClusterError> {
        if !self.replicas.contains(replica) {
            return Err(ClusterError::UnknownNode(format!(
                "{} is not a replica",
                replica.name
            )));
        }
        let mut cmd = self.runner.command("pg_ctl");
        cmd.arg("-D")
            .arg(&replica.data_dir)
            .args(["-w", "-t", "60", "promote"]);
        run(
            cmd,
            None,
            &log_tail(&self.log_path(replica), LOG_TAIL_LINES),
        )
    }

    /// Stops every node it started (`pg_ctl stop -m immediate`) and removes the directory.
    /// Idempotent; also run on Drop. Errors are logged, not returned: this is cleanup.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let dirs: Vec<PathBuf> = self.nodes().iter().map(|n| n.data_dir.clone()).collect();
        for dir in dirs {
            if !dir.join("postmaster.pid").exists() {
                continue;
            }
            let mut cmd = self.runner.command("pg_ctl");
            cmd.arg("-D")
                .arg(&dir)
                .args(["-w", "stop", "-m", "immediate"]);
            if let Err(e) = run(cmd, None, "") {
                tracing::warn!(dir = %dir.display(), error = %e, "devcluster: stopping node failed");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.base.display(), error = %e, "devcluster: cleanup failed");
            }
        }
    }

    fn check_member(&self, node: &Node) -> Result<(), ClusterError> {
        if self.nodes().contains(&node) {
            Ok(())
        } else {
            Err(ClusterError::UnknownNode(node.name.clone()))
        }
    }

    /// Launches the detached reaper that cleans up if this process exits without Drop running.
    fn spawn_reaper(&self, replicas: usize) -> Result<(), ClusterError> {
        let mut dirs = vec![self.primary.data_dir.clone()];
        dirs.extend((1..=replicas).map(|i| self.base.join(format!("replica{i}"))));
        let dir_refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let script = conf::reaper_script(
            std::process::id(),
            &self.base,
            &self.runner.pg_ctl_shell_prefix(),
            &dir_refs,
        );
        // `setsid -f` forks the reaper into its own session and returns at once, so neither we nor
        // the test harness wait on it, and it survives our exit.
        let mut cmd = Command::new("setsid");
        cmd.args(["-f", "sh", "-c", &script])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = cmd.status().map_err(|e| ClusterError::Io {
            context: "spawning the devcluster reaper (setsid)".into(),
            source: e,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(ClusterError::Command {
                cmd: "setsid -f sh -c <reaper>".into(),
                status: status.code(),
                stderr: String::new(),
            })
        }
    }

    fn init_primary(&mut self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        let dir = self.primary.data_dir.clone();
        let mut cmd = self.runner.command("initdb");
        cmd.arg("-D").arg(&dir).args([
            "-U",
            Self::SUPERUSER,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(cmd, None, "")?;
        append_file(
            &dir.join("postgresql.conf"),
            &conf::postgresql_conf_block(&spec.extra_conf),
        )?;
        self.write_file(&dir.join("pg_hba.conf"), &conf::hba_conf())?;
        self.primary.port = self.start_on_free_port(&self.primary.clone())?;
        self.psql(&self.primary, &conf::roles_sql())?;
        self.psql_in(&self.primary, roles::DATABASE, &conf::grants_sql())?;
        Ok(())
    }

    fn add_replica(&mut self, name: &str) -> Result<(), ClusterError> {
        let mut node = Node {
            name: name.to_string(),
            port: 0,
            data_dir: self.base.join(name),
        };
        let mut cmd = self.runner.command("pg_basebackup");
        cmd.args(["-h", self.host(), "-p"])
            .arg(self.primary.port.to_string())
            .args(["-U", Self::SUPERUSER, "-D"])
            .arg(&node.data_dir)
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"]);
        run(cmd, None, "")?;
        node.port = self.start_on_free_port(&node)?;
        self.replicas.push(node.clone());
        self.wait_until(&node, "SELECT pg_is_in_recovery();", "recovery mode")?;
        let sql = format!(
            "SELECT count(*) > 0 FROM pg_stat_replication WHERE application_name = '{name}';"
        );
        self.wait_until(&self.primary, &sql, &format!("{name} to stream"))
    }

    /// Writes the node include with a fresh port and starts the node, retrying with another port
    /// when Postgres could not bind (tests start clusters in parallel). Returns the port used.
    fn start_on_free_port(&self, node: &Node) -> Result<u16, ClusterError> {
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let conf_text = conf::node_conf(&node.name, port, &node.data_dir);
            self.write_file(&node.data_dir.join(conf::NODE_CONF_FILE), &conf_text)?;
            // A fresh log per attempt, so an old bind error is not mistaken for this one's.
            let _ = std::fs::remove_file(self.log_path(node));
            let attempt = Node {
                port,
                ..node.clone()
            };
            match self.pg_ctl_start(&attempt) {
                Ok(()) => return Ok(port),
                Err(e) if is_port_conflict(&e) => {
                    tracing::debug!(node = %node.name, port, "devcluster: port taken, retrying");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.map_or_else(
            || ClusterError::NoFreePort(node.name.clone()),
            |e| ClusterError::NoFreePort(format!("{}: {e}", node.name)),
        ))
    }

    fn pg_ctl_start(&self, node: &Node) -> Result<(), ClusterError> {
        let log = self.log_path(node);
        let mut cmd = self.runner.command("pg_ctl");
        cmd.arg("-D")
            .arg(&node.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"]);
        run(cmd, None, &log_tail(&log, LOG_TAIL_LINES))
    }

    /// Polls `sql` (which must return one boolean) on `node` until it returns true.
    fn wait_until(&self, node: &Node, sql: &str, what: &str) -> Result<(), ClusterError> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let last = match self.psql(node, sql) {
                Ok(out) if out.trim() == "t" => return Ok(()),
                Ok(out) => format!("last result {:?}", out.trim()),
                Err(e) => format!("last error: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout(format!(
                    "waiting {WAIT_TIMEOUT:?} on {} for {what}; {last}\n{}",
                    node.name,
                    log_tail(&self.log_path(node), LOG_TAIL_LINES)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a file and hands it to `postgres` when root.
    fn write_file(&self, path: &Path, text: &str) -> Result<(), ClusterError> {
        std::fs::write(path, text).map_err(|e| ClusterError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        })?;
        self.runner.chown(path, false)
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.stop()
    }
}

/// One cluster per test binary, started on first use and stopped when the test process exits: a
/// `OnceLock<DevCluster>` cannot run Drop, so the reaper that [`DevCluster::start`] launches for
/// every cluster cleans it up once the process is gone.
///
/// Only the first call's `spec` counts. Tests sharing it must not leave nodes stopped, paused or
/// promoted. Panics with the full error if the cluster cannot start.
pub fn shared(spec: &ClusterSpec) -> &'static DevCluster {
    static SHARED: OnceLock<DevCluster> = OnceLock::new();
    SHARED.get_or_init(|| match DevCluster::start(spec) {
        Ok(cluster) => cluster,
        Err(e) => panic!("pgsluice devcluster could not start: {e}"),
    })
}

fn create_base_dir(base: &Path) -> Result<(), ClusterError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |e| ClusterError::Io {
        context: format!("creating {}", base.display()),
        source: e,
    };
    if base.exists() {
        // Left over from an earlier process with the same pid.
        std::fs::remove_dir_all(base).map_err(io)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(base)
        .map_err(io)?;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

fn append_file(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| ClusterError::Io {
            context: format!("appending to {}", path.display()),
            source: e,
        })
}

/// Reserves a free loopback port by binding port 0 and releasing it (racy; callers retry).
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError::Io {
            context: "reserving a loopback port".into(),
            source: e,
        })
}

/// Whether a start failure was Postgres finding its port (or socket lock) taken.
fn is_port_conflict(err: &ClusterError) -> bool {
    let ClusterError::Command { stderr, .. } = err else {
        return false;
    };
    [
        "could not bind",
        "Address already in use",
        "could not create any TCP/IP sockets",
        ".s.PGSQL.",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_has_one_replica() {
        let spec = ClusterSpec::default();
        assert_eq!(spec.replicas, 1);
        assert!(spec.extra_conf.is_empty());
    }

    #[test]
    fn port_conflicts_are_recognised_from_log_tail() {
        let err = ClusterError::Command {
            cmd: "pg_ctl start".into(),
            status: Some(1),
            stderr: "--- tail ---\nLOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use".into(),
        };
        assert!(is_port_conflict(&err));
        let other = ClusterError::Command {
            cmd: "pg_ctl start".into(),
            status: Some(1),
            stderr: "FATAL: invalid value for parameter".into(),
        };
        assert!(!is_port_conflict(&other));
        assert!(!is_port_conflict(&ClusterError::Timeout("x".into())));
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}

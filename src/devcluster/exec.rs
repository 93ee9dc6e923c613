//! Running Postgres programs for the devcluster: finding the bin dir, deciding whether to run as
//! the OS user `postgres` (when we are root), and turning failures into readable errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::ClusterError;

/// Environment variable naming the Postgres bin dir explicitly.
pub(crate) const PG_BIN_ENV: &str = "PGSLUICE_PG_BIN";

/// Major version `pg_config` must report to be used without the env override.
const PREFERRED_MAJOR: u32 = 15;

/// Chooses the bin dir: the env override if set, else `pg_config`'s if it reports a 15, else the
/// newest candidate (`/usr/lib/postgresql/<major>/bin`). `has_initdb` says whether a dir is usable.
///
/// Pure so the choice is unit-tested; [`find_bin_dir`] feeds it the real machine.
pub(crate) fn choose_bin_dir(
    env: Option<&str>,
    pg_config: Option<(PathBuf, String)>,
    candidates: &[PathBuf],
    has_initdb: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = env.filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesNotFound(format!(
                "{PG_BIN_ENV}={} has no initdb",
                dir.display()
            )))
        };
    }
    if let Some((dir, version)) = pg_config {
        if major_of_version(&version) == Some(PREFERRED_MAJOR) && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    candidates
        .iter()
        .filter(|d| has_initdb(d))
        .filter_map(|d| major_of_bin_dir(d).map(|m| (m, d)))
        .max_by_key(|(m, _)| *m)
        .map(|(_, d)| d.clone())
        .ok_or_else(|| {
            ClusterError::BinariesNotFound(format!(
                "no initdb in {PG_BIN_ENV}, pg_config --bindir or /usr/lib/postgresql/*/bin; \
                 install postgresql (scripts/test.sh does)"
            ))
        })
}

/// Major version from `pg_config --version` output such as "PostgreSQL 15.18 (Debian ...)".
fn major_of_version(version: &str) -> Option<u32> {
    let number = version.split_whitespace().nth(1)?;
    number
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Major version from a `/usr/lib/postgresql/<major>/bin` path.
fn major_of_bin_dir(dir: &Path) -> Option<u32> {
    dir.parent()?.file_name()?.to_str()?.parse().ok()
}

/// Finds the bin dir on this machine (see [`choose_bin_dir`]).
pub(crate) fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let env = std::env::var(PG_BIN_ENV).ok();
    let pg_config = pg_config_output("--bindir")
        .and_then(|dir| pg_config_output("--version").map(|v| (PathBuf::from(dir), v)));
    let candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    choose_bin_dir(env.as_deref(), pg_config, &candidates, &|d| {
        d.join("initdb").is_file()
    })
}

fn pg_config_output(arg: &str) -> Option<String> {
    let out = Command::new("pg_config").arg(arg).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Effective uid from a `/proc/self/status` text (`Uid:\treal\teffective\tsaved\tfs`).
pub(crate) fn euid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this process runs as root (then Postgres commands run as the OS user `postgres`).
pub(crate) fn running_as_root() -> bool {
    if let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(euid_from_status)
    {
        return uid == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Builds and runs Postgres commands, as `postgres` via `runuser` when `as_postgres`.
#[derive(Clone, Debug)]
pub(crate) struct Runner {
    pub(crate) bin: PathBuf,
    pub(crate) as_postgres: bool,
    /// Working directory for every command (the cluster's base dir, readable by `postgres`).
    pub(crate) cwd: PathBuf,
}

impl Runner {
    /// A command for Postgres program `prog` of the bin dir, as `postgres` when root (initdb and
    /// the server refuse root; pg_basebackup must create files the server can own).
    pub(crate) fn command(&self, prog: &str) -> Command {
        self.build(prog, self.as_postgres)
    }

    /// A command for a pure client program (psql) that runs as the current user: it only talks
    /// TCP to a node, so it needs no `runuser` round trip.
    pub(crate) fn client_command(&self, prog: &str) -> Command {
        self.build(prog, false)
    }

    fn build(&self, prog: &str, as_postgres: bool) -> Command {
        let path = self.bin.join(prog);
        let mut cmd = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(&self.cwd)
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }

    /// The shell-quoted prefix that runs `pg_ctl` the same way (for the reaper script).
    pub(crate) fn pg_ctl_shell_prefix(&self) -> String {
        let pg_ctl = super::conf::sh_quote(&self.bin.join("pg_ctl").display().to_string());
        if self.as_postgres {
            format!("runuser -u postgres -- {pg_ctl}")
        } else {
            pg_ctl
        }
    }

    /// Gives `path` to `postgres` when running as root (no-op otherwise).
    pub(crate) fn chown(&self, path: &Path, recursive: bool) -> Result<(), ClusterError> {
        if !self.as_postgres {
            return Ok(());
        }
        let mut cmd = Command::new("chown");
        if recursive {
            cmd.arg("-R");
        }
        cmd.arg("postgres:postgres").arg(path);
        run(cmd, None, "")
    }
}

/// Runs `cmd` (feeding `stdin` if given) and returns its stdout; a non-zero exit becomes
/// [`ClusterError::Command`] with stderr and `context` (e.g. a log tail) appended.
pub(crate) fn run_output(
    mut cmd: Command,
    stdin: Option<&str>,
    context: &str,
) -> Result<String, ClusterError> {
    let desc = describe(&cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| ClusterError::Io {
        context: format!("spawning `{desc}`"),
        source: e,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Ignore write errors: a program that exits early reports the real problem on stderr.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out: Output = child.wait_with_output().map_err(|e| ClusterError::Io {
        context: format!("waiting for `{desc}`"),
        source: e,
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    if !context.is_empty() {
        stderr.push('\n');
        stderr.push_str(context);
    }
    Err(ClusterError::Command {
        cmd: desc,
        status: out.status.code(),
        stderr,
    })
}

/// [`run_output`] without stdin, discarding stdout.
pub(crate) fn run(cmd: Command, stdin: Option<&str>, context: &str) -> Result<(), ClusterError> {
    run_output(cmd, stdin, context).map(|_| ())
}

/// `program arg arg ...` for error messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// The last `lines` lines of a log file, framed for an error message ("" if unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let tail = all.get(start..).unwrap_or(&[]).join("\n");
    format!("--- tail of {} ---\n{tail}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn env_override_wins_and_must_have_initdb() {
        let chosen = choose_bin_dir(Some("/opt/pg/bin"), None, &[], &|_| true).unwrap();
        assert_eq!(chosen, PathBuf::from("/opt/pg/bin"));
        let err = choose_bin_dir(Some("/opt/pg/bin"), None, &[], &|_| false).unwrap_err();
        assert!(matches!(err, ClusterError::BinariesNotFound(_)));
    }

    #[test]
    fn pg_config_used_only_when_it_is_15() {
        let cands = dirs(&["/usr/lib/postgresql/13/bin", "/usr/lib/postgresql/16/bin"]);
        let pgc15 = Some((
            PathBuf::from("/x/15/bin"),
            "PostgreSQL 15.18 (Debian)".into(),
        ));
        assert_eq!(
            choose_bin_dir(None, pgc15, &cands, &|_| true).unwrap(),
            PathBuf::from("/x/15/bin")
        );
        let pgc13 = Some((PathBuf::from("/x/13/bin"), "PostgreSQL 13.2".into()));
        assert_eq!(
            choose_bin_dir(None, pgc13, &cands, &|_| true).unwrap(),
            PathBuf::from("/usr/lib/postgresql/16/bin")
        );
    }

    #[test]
    fn newest_candidate_with_initdb_is_chosen_numerically() {
        let cands = dirs(&[
            "/usr/lib/postgresql/9/bin",
            "/usr/lib/postgresql/15/bin",
            "/usr/lib/postgresql/17/bin",
        ]);
        let no17 = |d: &Path| !d.starts_with("/usr/lib/postgresql/17");
        assert_eq!(
            choose_bin_dir(None, None, &cands, &no17).unwrap(),
            PathBuf::from("/usr/lib/postgresql/15/bin")
        );
        assert!(choose_bin_dir(None, None, &cands, &|_| false).is_err());
        assert!(choose_bin_dir(Some(""), None, &[], &|_| true).is_err());
    }

    #[test]
    fn euid_is_second_uid_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(euid_from_status(status), Some(0));
        assert_eq!(euid_from_status("Name:\tx\n"), None);
        assert_eq!(euid_from_status("Uid:\tabc\n"), None);
    }

    #[test]
    fn failed_command_reports_stderr_and_context() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let err = run(cmd, None, "ctx").unwrap_err();
        match err {
            ClusterError::Command {
                cmd,
                status,
                stderr,
            } => {
                assert!(cmd.starts_with("sh -c"));
                assert_eq!(status, Some(3));
                assert_eq!(stderr, "boom\nctx");
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut cat = Command::new("cat");
        cat.stdin(Stdio::null());
        assert_eq!(run_output(cat, Some("hi"), "").unwrap(), "hi");
    }
}

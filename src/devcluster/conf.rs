//! Pure text generation for devcluster nodes: `postgresql.conf` additions, the per-node include,
//! `pg_hba.conf`, the role setup SQL, and the reaper shell script. No I/O here, so it is unit-tested.

use std::path::Path;

use super::roles;

/// Name of the per-node include file (port, socket directory, cluster name) inside a data dir.
///
/// It lives in the data directory so `pg_basebackup` copies it to replicas, where it is overwritten;
/// `postgresql.conf` includes it last so its settings win over the shared block.
pub(crate) const NODE_CONF_FILE: &str = "pgsluice_node.conf";

/// Lines appended to the primary's `postgresql.conf` (and thus inherited by replicas).
///
/// `extra` lines come after the defaults so a spec can override any of them; the node include comes
/// last so per-node settings cannot be overridden by accident.
pub(crate) fn postgresql_conf_block(extra: &[String]) -> String {
    let mut text = String::from("\n# --- pgsluice devcluster ---\n");
    for line in [
        "listen_addresses = '127.0.0.1'",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
        "max_connections = 200",
        "shared_buffers = 32MB",
        "wal_level = replica",
        "max_wal_senders = 10",
        "hot_standby = on",
        "wal_keep_size = 256MB",
        "log_min_messages = warning",
        "logging_collector = off",
    ] {
        text.push_str(line);
        text.push('\n');
    }
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!("include_if_exists = '{NODE_CONF_FILE}'\n"));
    text
}

/// The per-node include: port, Unix socket directory (never /var/run) and `cluster_name`, which
/// the walreceiver uses as its `application_name` so the primary's `pg_stat_replication` names it.
pub(crate) fn node_conf(name: &str, port: u16, socket_dir: &Path) -> String {
    format!(
        "port = {port}\nunix_socket_directories = '{}'\ncluster_name = '{}'\n",
        conf_quote(&socket_dir.display().to_string()),
        conf_quote(name)
    )
}

/// The complete `pg_hba.conf`: trust locally, trust for replication, `postgres` and `sluice_trust`,
/// md5 and cleartext for their dedicated roles, SCRAM for everyone else (all on 127.0.0.1/32).
pub(crate) fn hba_conf() -> String {
    let net = "127.0.0.1/32";
    format!(
        "# pgsluice devcluster\n\
         local all all trust\n\
         host replication all {net} trust\n\
         host all postgres {net} trust\n\
         host all {trust} {net} trust\n\
         host all {md5} {net} md5\n\
         host all {clear} {net} password\n\
         host all all {net} scram-sha-256\n",
        trust = roles::TRUST_USER,
        md5 = roles::MD5_USER,
        clear = roles::CLEAR_USER,
    )
}

/// SQL run on the primary's `postgres` database: the test roles and the `sluice` database.
///
/// `sluice_md5` is created under `password_encryption = 'md5'` so its verifier is an md5 hash.
pub(crate) fn roles_sql() -> String {
    format!(
        "SET password_encryption = 'scram-sha-256';\n\
         CREATE ROLE {scram} LOGIN PASSWORD '{scram_pw}';\n\
         CREATE ROLE {clear} LOGIN PASSWORD '{clear_pw}';\n\
         CREATE ROLE {trust} LOGIN;\n\
         SET password_encryption = 'md5';\n\
         CREATE ROLE {md5} LOGIN PASSWORD '{md5_pw}';\n\
         RESET password_encryption;\n\
         CREATE DATABASE {db} OWNER {scram};\n",
        scram = roles::SCRAM_USER,
        scram_pw = roles::SCRAM_PASSWORD,
        clear = roles::CLEAR_USER,
        clear_pw = roles::CLEAR_PASSWORD,
        trust = roles::TRUST_USER,
        md5 = roles::MD5_USER,
        md5_pw = roles::MD5_PASSWORD,
        db = roles::DATABASE,
    )
}

/// SQL run in the `sluice` database: every test role may create objects in `public`.
pub(crate) fn grants_sql() -> String {
    format!(
        "GRANT ALL ON SCHEMA public TO {}, {}, {}, {};\n",
        roles::SCRAM_USER,
        roles::MD5_USER,
        roles::CLEAR_USER,
        roles::TRUST_USER
    )
}

/// Shell script that waits while `pid` lives and `base` exists, then stops every node still running
/// (immediate mode) and removes `base`. `pg_ctl_prefix` is the already-quoted command prefix
/// (e.g. `runuser -u postgres -- '/usr/lib/postgresql/15/bin/pg_ctl'`).
///
/// Checking `base` lets the reaper end by itself once [`super::DevCluster::stop`] removed it.
pub(crate) fn reaper_script(
    pid: u32,
    base: &Path,
    pg_ctl_prefix: &str,
    data_dirs: &[&Path],
) -> String {
    let base_q = sh_quote(&base.display().to_string());
    let mut script =
        format!("while kill -0 {pid} 2>/dev/null && [ -d {base_q} ]; do sleep 1; done\n");
    for dir in data_dirs {
        let dir_q = sh_quote(&dir.display().to_string());
        script.push_str(&format!(
            "[ -f {dir_q}/postmaster.pid ] && {pg_ctl_prefix} -D {dir_q} stop -m immediate >/dev/null 2>&1\n"
        ));
    }
    script.push_str(&format!("rm -rf {base_q}\n"));
    script
}

/// Quotes `s` as one POSIX shell word.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Escapes `s` for use inside a single-quoted `postgresql.conf` value.
fn conf_quote(s: &str) -> String {
    s.replace('\'', "''")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn conf_block_has_defaults_then_extra_then_include() {
        let text = postgresql_conf_block(&["max_connections = 50".to_string()]);
        let defaults = text.find("max_connections = 200").unwrap();
        let extra = text.find("max_connections = 50").unwrap();
        let include = text
            .find("include_if_exists = 'pgsluice_node.conf'")
            .unwrap();
        assert!(defaults < extra && extra < include);
        for needle in [
            "fsync = off",
            "wal_level = replica",
            "hot_standby = on",
            "wal_keep_size",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        assert!(!text.contains("/var/run"));
    }

    #[test]
    fn node_conf_sets_port_socket_and_name() {
        let text = node_conf("replica1", 54321, &PathBuf::from("/tmp/x'y/replica1"));
        assert!(text.contains("port = 54321\n"));
        assert!(text.contains("unix_socket_directories = '/tmp/x''y/replica1'"));
        assert!(text.contains("cluster_name = 'replica1'"));
    }

    #[test]
    fn hba_orders_specific_rules_before_scram_catch_all() {
        let text = hba_conf();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "local all all trust");
        assert_eq!(lines[1], "host replication all 127.0.0.1/32 trust");
        assert!(lines.contains(&"host all sluice_md5 127.0.0.1/32 md5"));
        assert!(lines.contains(&"host all sluice_clear 127.0.0.1/32 password"));
        assert!(lines.contains(&"host all sluice_trust 127.0.0.1/32 trust"));
        assert_eq!(
            lines.last().copied(),
            Some("host all all 127.0.0.1/32 scram-sha-256")
        );
    }

    #[test]
    fn roles_sql_creates_md5_role_under_md5_encryption() {
        let sql = roles_sql();
        let md5_mode = sql.find("SET password_encryption = 'md5'").unwrap();
        let md5_role = sql.find("CREATE ROLE sluice_md5").unwrap();
        let scram_role = sql.find("CREATE ROLE sluice_scram").unwrap();
        assert!(scram_role < md5_mode && md5_mode < md5_role);
        assert!(sql.contains("CREATE DATABASE sluice OWNER sluice_scram"));
        assert!(grants_sql().contains("sluice_trust"));
    }

    #[test]
    fn reaper_quotes_paths_and_removes_base() {
        let base = PathBuf::from("/tmp/it's");
        let data = base.join("primary");
        let script = reaper_script(42, &base, "pg_ctl", &[&data]);
        assert!(script.starts_with("while kill -0 42 2>/dev/null && [ -d '/tmp/it'\\''s' ]"));
        assert!(script.contains("pg_ctl -D '/tmp/it'\\''s/primary' stop -m immediate"));
        assert!(script.ends_with("rm -rf '/tmp/it'\\''s'\n"));
    }
}

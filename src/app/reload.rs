//! What a reload may change: settings bound at start (listen addresses, socket options, worker
//! threads, the HTTP listener) need a restart, so a reload reports them and keeps them as running.

use crate::config::Config;

/// Keys a reload cannot apply.
pub const RESTART_ONLY: &[&str] = &[
    "listeners",
    "listen.reuse_port",
    "limits.worker_threads",
    "http.listen",
];

/// Copies the restart-only settings of `running` into `new`, returning the keys whose value
/// differed (the caller reports them): the running process keeps what it bound at start, and the
/// config it shows matches what it does.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.listeners != running.listeners {
        changed.push(RESTART_ONLY[0]);
        new.listeners = running.listeners.clone();
    }
    if new.listen != running.listen {
        changed.push(RESTART_ONLY[1]);
        new.listen = running.listen.clone();
    }
    if new.limits.worker_threads != running.limits.worker_threads {
        changed.push(RESTART_ONLY[2]);
        new.limits.worker_threads = running.limits.worker_threads;
    }
    if new.http.listen != running.http.listen {
        changed.push(RESTART_ONLY[3]);
        new.http.listen = running.http.listen.clone();
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::keep_restart_only;
    use crate::config::parse_str;

    #[test]
    fn restart_only_keys_are_reported_and_kept() {
        let running = parse_str(
            "listeners: [{ address: \"127.0.0.1:6432\" }]\nlimits: { worker_threads: 2 }",
        )
        .unwrap();
        let mut new = parse_str(
            "listeners: [{ address: \"127.0.0.1:7432\" }]\n\
             limits: { worker_threads: 4, max_client_conn: 5 }\n\
             http: { listen: \"127.0.0.1:9930\" }\nlisten: { reuse_port: true }",
        )
        .unwrap();
        let changed = keep_restart_only(&running, &mut new);
        assert_eq!(
            changed,
            [
                "listeners",
                "listen.reuse_port",
                "limits.worker_threads",
                "http.listen"
            ]
        );
        assert_eq!(new.listeners, running.listeners);
        assert_eq!(new.limits.worker_threads, 2);
        assert_eq!(new.http.listen, None);
        assert!(!new.listen.reuse_port);
        // Everything else is applied.
        assert_eq!(new.limits.max_client_conn, 5);
        let mut same = running.clone();
        assert!(keep_restart_only(&running, &mut same).is_empty());
    }
}

//! The `listen` section: socket options shared by every listener (client listeners and `http.listen`).

use serde::Deserialize;

/// How pgsluice opens its listening sockets.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenOptions {
    /// Set SO_REUSEPORT so a second pgsluice can bind the same addresses while this one runs: the
    /// zero-downtime upgrade starts the new process, then drains the old one with SIGTERM. Every
    /// process sharing a port must set it. Default: false. Changing it needs a restart.
    pub reuse_port: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn reuse_port_defaults_off_and_parses() {
        let config = crate::config::parse_str("{}").unwrap();
        assert!(!config.listen.reuse_port);
        let config = crate::config::parse_str("listen: { reuse_port: true }").unwrap();
        assert!(config.listen.reuse_port);
        assert!(crate::config::parse_str("listen: { reuseport: true }").is_err());
    }
}

//! The `http` section: where the HTTP endpoints (`/metrics`, `/live`, `/ready`, `/status`) listen.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ValidationError;

/// HTTP endpoints for Prometheus and orchestrators.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// "ip:port" to serve on; `None` (the default) serves no HTTP at all. Changing it needs a
    /// restart.
    pub listen: Option<String>,
}

impl HttpConfig {
    /// Checks that `listen`, when set, is an IP address with a port.
    pub fn validate(&self) -> Vec<ValidationError> {
        match &self.listen {
            Some(address) if address.parse::<SocketAddr>().is_err() => vec![ValidationError {
                path: "http.listen".to_string(),
                message: format!(
                    "{address:?} is not an IP address with a port (e.g. \"127.0.0.1:9930\")"
                ),
            }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpConfig;

    #[test]
    fn listen_must_be_a_socket_address() {
        assert!(HttpConfig::default().validate().is_empty());
        let ok = HttpConfig {
            listen: Some("127.0.0.1:9930".into()),
        };
        assert!(ok.validate().is_empty());
        let bad = HttpConfig {
            listen: Some("localhost".into()),
        };
        assert_eq!(bad.validate()[0].path, "http.listen");
    }

    #[test]
    fn parses_from_yaml_and_is_validated_with_the_config() {
        let config = crate::config::parse_str("http: { listen: \"127.0.0.1:0\" }").unwrap();
        assert_eq!(config.http.listen.as_deref(), Some("127.0.0.1:0"));
        let bad = crate::config::parse_str("http: { listen: nope }").unwrap();
        let Err(crate::config::ConfigError::Invalid(errors)) = bad.validate() else {
            panic!("http.listen is validated");
        };
        assert!(errors.iter().any(|e| e.path == "http.listen"));
    }
}

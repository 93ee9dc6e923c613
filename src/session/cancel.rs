//! Cancel keys: each client gets its own BackendKeyData from the proxy; a CancelRequest carrying it is
//! forwarded to the server that client is using at that moment, and only to that one.

use std::sync::Arc;

use dashmap::DashMap;

use crate::admin::ClientEntry;
use crate::protocol::startup::CancelKey;

/// Proxy-issued cancel keys of connected clients, each pointing at its client's entry (whose
/// cancel target is set only while the client has a server connection).
#[derive(Debug, Default)]
pub struct CancelRegistry {
    keys: DashMap<CancelKey, Arc<ClientEntry>>,
}

impl CancelRegistry {
    /// Issues a fresh key that no connected client has, for `client` (recorded in its entry). The
    /// client's task gives it back with [`CancelRegistry::release`] when the client leaves.
    pub fn issue(&self, client: &Arc<ClientEntry>) -> CancelKey {
        loop {
            let key = CancelKey {
                process_id: rand::random::<i32>() & i32::MAX,
                secret_key: rand::random::<i32>(),
            };
            if let dashmap::Entry::Vacant(entry) = self.keys.entry(key) {
                entry.insert(client.clone());
                client.set_cancel_key(key);
                return key;
            }
        }
    }

    /// Forgets a key issued by [`CancelRegistry::issue`].
    pub fn release(&self, key: CancelKey) {
        self.keys.remove(&key);
    }

    /// Number of keys issued to connected clients.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no client holds a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forwards a client's CancelRequest to the server it is using. Unknown keys, or clients between
    /// server connections, are ignored silently, as Postgres does.
    pub async fn cancel(&self, key: CancelKey) {
        let client = self.keys.get(&key).map(|entry| entry.value().clone());
        let Some(target) = client.and_then(|client| client.cancel_target()) else {
            tracing::debug!("cancel request with unknown or idle key ignored");
            return;
        };
        target.send().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::ClientRegistry;
    use crate::pool::{CancelTarget, Pool};

    fn entry(clients: &ClientRegistry) -> Arc<ClientEntry> {
        clients.register("127.0.0.1:5000".parse().unwrap(), "u", "d")
    }

    #[test]
    fn keys_are_unique_and_released() {
        let clients = ClientRegistry::default();
        let registry = CancelRegistry::default();
        let a = registry.issue(&entry(&clients));
        let b = registry.issue(&entry(&clients));
        assert_ne!(a, b);
        assert!(a.process_id >= 0);
        assert_eq!(registry.len(), 2);
        registry.release(a);
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn targets_follow_the_client() {
        let tls = crate::net::ServerTlsConnector::new(&crate::config::ServerTls {
            mode: crate::config::ServerTlsMode::Disable,
            ..Default::default()
        })
        .unwrap();
        let connect = crate::server::ConnectParams {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "u".into(),
            password: None,
            database: "d".into(),
            tls,
            connect_timeout: std::time::Duration::from_secs(1),
            max_message_size: 1 << 20,
        };
        let pool = Pool::new("d/u@n".into(), Default::default(), connect);
        let clients = ClientRegistry::default();
        let registry = CancelRegistry::default();
        let client = entry(&clients);
        let key = registry.issue(&client);
        let server_key = CancelKey {
            process_id: 7,
            secret_key: 9,
        };
        let stored = |registry: &CancelRegistry| {
            let client = registry.keys.get(&key).map(|e| e.value().clone());
            client.and_then(|c| c.cancel_target().map(|t| t.server_key))
        };
        client.set_cancel_target(Some(CancelTarget { pool, server_key }));
        assert_eq!(stored(&registry), Some(server_key));
        client.set_cancel_target(None);
        assert_eq!(stored(&registry), None);
    }
}

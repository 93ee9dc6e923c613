//! Cancel keys: each client gets its own BackendKeyData from the proxy; a CancelRequest carrying it is
//! forwarded to the server that client is using at that moment, and only to that one.

use std::time::Duration;

use dashmap::DashMap;

use std::sync::{Arc, Mutex};

use crate::pool::Pool;
use crate::protocol::startup::CancelKey;
use crate::server;

/// How long forwarding one cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a client's cancel request must go: the pool (whose node it is) and the server's own key.
#[derive(Clone, Debug)]
pub struct CancelTarget {
    pub pool: Arc<Pool>,
    pub server_key: CancelKey,
}

/// The target of one client's cancel requests. Only that client writes it (uncontended lock), so
/// changing it at every transaction does not touch the shared map.
type Slot = Arc<Mutex<Option<CancelTarget>>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<CancelTarget>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Proxy-issued cancel keys of connected clients. Entries hold a target only while the client has a
/// server connection.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    keys: DashMap<CancelKey, Slot>,
}

impl CancelRegistry {
    /// Issues a fresh key that no connected client has; removed when the returned guard drops.
    pub fn issue(&self) -> CancelGuard<'_> {
        loop {
            let key = CancelKey {
                process_id: rand::random::<i32>() & i32::MAX,
                secret_key: rand::random::<i32>(),
            };
            if let dashmap::Entry::Vacant(entry) = self.keys.entry(key) {
                let slot = Slot::default();
                entry.insert(slot.clone());
                return CancelGuard {
                    registry: self,
                    key,
                    slot,
                };
            }
        }
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
        let slot = self.keys.get(&key).map(|entry| entry.value().clone());
        let target = slot.and_then(|slot| lock(&slot).clone());
        let Some(target) = target else {
            tracing::debug!("cancel request with unknown or idle key ignored");
            return;
        };
        target.send().await;
    }
}

impl CancelTarget {
    /// Sends a CancelRequest for this server connection to its node, waiting until the node has
    /// taken it (closed the connection), at most a few seconds. Failures are logged.
    pub async fn send(&self) {
        let node = self.pool.connect_params();
        match server::send_cancel(&node.host, node.port, self.server_key, CANCEL_TIMEOUT).await {
            Ok(()) => tracing::info!(pool = %self.pool.name(), "forwarded cancel request"),
            Err(e) => tracing::warn!(error = %e, "could not forward cancel request"),
        }
    }
}

/// A client's cancel key, registered for the life of the client.
#[derive(Debug)]
pub struct CancelGuard<'a> {
    registry: &'a CancelRegistry,
    key: CancelKey,
    slot: Slot,
}

impl CancelGuard<'_> {
    /// The key sent to the client in BackendKeyData.
    pub fn key(&self) -> CancelKey {
        self.key
    }

    /// Points cancel requests at `target` (or nowhere).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *lock(&self.slot) = target;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_removed_on_drop() {
        let registry = CancelRegistry::default();
        let a = registry.issue();
        let b = registry.issue();
        assert_ne!(a.key(), b.key());
        assert!(a.key().process_id >= 0);
        assert_eq!(registry.len(), 2);
        drop(a);
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
        let registry = CancelRegistry::default();
        let guard = registry.issue();
        let server_key = CancelKey {
            process_id: 7,
            secret_key: 9,
        };
        let stored = |registry: &CancelRegistry| {
            let slot = registry.keys.get(&guard.key()).map(|e| e.value().clone());
            slot.and_then(|slot| lock(&slot).as_ref().map(|t| t.server_key))
        };
        guard.set_target(Some(CancelTarget { pool, server_key }));
        assert_eq!(stored(&registry), Some(server_key));
        guard.set_target(None);
        assert_eq!(stored(&registry), None);
    }
}

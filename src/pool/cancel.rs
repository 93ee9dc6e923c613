//! Where a client's cancel request must go: the pool of the node running its query and that
//! server connection's own cancel key.

use std::sync::Arc;
use std::time::Duration;

use super::Pool;
use crate::protocol::startup::CancelKey;
use crate::server;

/// How long forwarding one cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked-out server connection, as a cancel request addresses it.
#[derive(Clone, Debug)]
pub struct CancelTarget {
    pub pool: Arc<Pool>,
    pub server_key: CancelKey,
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

//! The session side of the admin console: log a client of the admin database in like any other,
//! refuse non-admin users, and hand admins to [`crate::admin::serve`] with this process' data.

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::client::Session;
use super::relay::RelayEnd;
use super::{auth, ClientError, Shared};
use crate::admin::{self, AdminError, ClientRegistry, ClientState, Control, View, WorkerView};
use crate::net::Stream;
use crate::net::WorkerId;
use crate::protocol::backend;
use crate::protocol::Framer;

impl admin::Sources for Shared {
    fn with_view<R>(&self, f: impl FnOnce(&View<'_>) -> R) -> R {
        let generation = self.generation.load();
        let workers = self.workers();
        f(&View {
            config: &generation.config,
            pools: &generation.pools,
            topology: &generation.topology,
            workers: &workers,
        })
    }

    fn clients(&self) -> &ClientRegistry {
        &self.registry
    }

    fn control(&self) -> &Control {
        &self.control
    }
}

impl Shared {
    /// The worker threads as the placement sees them now.
    fn workers(&self) -> Vec<WorkerView> {
        let placement = &self.placement;
        let preferred = placement.preferred();
        (0..placement.len())
            .map(WorkerId)
            .map(|worker| WorkerView {
                clients: placement.clients(worker),
                cpu: placement.load(worker),
                preferred: worker == preferred,
                moves_asked: placement.moves_asked(worker),
            })
            .collect()
    }
}

/// Authenticates the client (same credentials as for any database), then runs the console if the
/// user is an admin; anyone else gets 42501. No pool or server connection is involved.
pub(super) async fn serve(
    session: &Session<'_>,
    stream: &mut Stream,
    mut buf: BytesMut,
    framer: &Framer,
    started: Instant,
) -> Result<RelayEnd, ClientError> {
    let config = &session.generation.config;
    if session.user.is_empty() {
        return Err(ClientError::NoUser);
    }
    let remaining = config
        .limits
        .startup_timeout
        .saturating_sub(started.elapsed());
    let tls_cert = session.generation.client_tls.as_ref().map(|t| t.cert_der());
    let login = auth::authenticate(
        &session.generation.auth,
        session.user,
        stream,
        &mut buf,
        framer,
        tls_cert,
    );
    tokio::time::timeout(remaining, login)
        .await
        .map_err(|_| ClientError::StartupTimeout)??;
    if !config.admin.allows(session.user) {
        return Err(ClientError::NotAdmin {
            user: session.user.to_string(),
        });
    }
    let mut out = BytesMut::new();
    backend::encode_auth(&backend::Authentication::Ok, &mut out);
    stream.write_all(&out).await.map_err(ClientError::Io)?;
    session.client.set_state(ClientState::Idle);
    tracing::info!(peer = %session.peer, user = %session.user, "admin console client connected");
    match admin::serve(session.shared, stream, buf, framer, session.client).await {
        Ok(()) => Ok(RelayEnd::ClientTerminated),
        Err(AdminError::Io(e)) => Err(ClientError::Io(e)),
        Err(AdminError::Read(e)) => Err(ClientError::from(e)),
        Err(AdminError::Stopped) => Err(ClientError::ShuttingDown),
    }
}

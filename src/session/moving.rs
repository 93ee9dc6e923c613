//! Clients moving between worker threads at idle points: what travels (a transaction-pooled
//! client whole; a session-pooled one with its server connection), how it is counted on its
//! worker, and how it resumes on the target (sockets re-registered there).

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;

use super::client::{Served, Session};
use super::task::{finish, Client, Registration, Tenancy};
use super::{ClientError, Shared};
use crate::net::{Stream, WorkerId};
use crate::pool::PooledServer;

/// Counts a client on its worker in the placement until dropped; moves with the client.
pub(super) struct Placed {
    shared: Arc<Shared>,
    pub(super) worker: WorkerId,
    counted: bool,
}

impl Placed {
    pub(super) fn new(shared: Arc<Shared>, worker: WorkerId) -> Placed {
        shared.placement.joined(worker);
        Placed {
            shared,
            worker,
            counted: true,
        }
    }

    /// The client now runs on `worker`.
    fn move_to(&mut self, worker: WorkerId) {
        self.shared.placement.left(self.worker);
        self.shared.placement.joined(worker);
        self.worker = worker;
    }

    /// Stops counting here: the transaction-pooled [`Client`] counts itself (it knows its
    /// worker, and an idle client's task keeps no more than it must).
    pub(super) fn into_client(mut self) {
        self.counted = false;
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if self.counted {
            self.shared.placement.left(self.worker);
        }
    }
}

/// A client on its way from one worker thread to another, with everything it holds: its socket
/// (re-registered on arrival) and, if session-pooled, its server connection.
pub struct MovedClient {
    target: WorkerId,
    client: Moving,
}

enum Moving {
    Transactions(Box<Client>),
    Session(Box<SessionClient>),
}

impl MovedClient {
    /// The worker it goes to.
    pub fn target(&self) -> WorkerId {
        self.target
    }

    /// Serves the client on the runtime this runs on (the target's) until it ends, or moves
    /// again (then hands itself over once more).
    pub fn resume(self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let target = self.target;
        match self.client {
            Moving::Transactions(client) => Box::pin(async move {
                let mut client = *client;
                let placement = &client.tenancy.shared.placement;
                placement.left(client.worker);
                placement.joined(target);
                client.worker = target;
                if let Err(e) = client.stream.rebind() {
                    client.finish(Err(ClientError::Io(e))).await;
                    return;
                }
                if let Some(moved) = client.serve().await {
                    moved.hand_over();
                }
            }),
            Moving::Session(session) => Box::pin(async move {
                if let Some(moved) = session.resume(target).await {
                    moved.hand_over();
                }
            }),
        }
    }

    /// Sends the client to its target worker (through the app's hand-off); if there is none,
    /// the client is closed.
    pub(super) fn hand_over(self) {
        let shared = match &self.client {
            Moving::Transactions(client) => client.tenancy.shared.clone(),
            Moving::Session(session) => session.tenancy.shared.clone(),
        };
        if let Err(moved) = shared.placement.hand_over(self) {
            tracing::warn!(target = ?moved.target, "no worker takes moved clients; closing one");
        }
    }

    pub(super) fn transactions(target: WorkerId, client: Client) -> Self {
        MovedClient {
            target,
            client: Moving::Transactions(Box::new(client)),
        }
    }

    pub(super) fn session(target: WorkerId, session: SessionClient) -> Self {
        MovedClient {
            target,
            client: Moving::Session(Box::new(session)),
        }
    }
}

/// A session-pooled client between two relays of its session, moving to another worker.
pub(super) struct SessionClient {
    pub(super) tenancy: Tenancy,
    pub(super) placed: Placed,
    /// Holds the client's entry (left on drop).
    pub(super) registration: Registration,
    pub(super) stream: Stream,
    pub(super) server: PooledServer,
    /// Client bytes already read, not yet forwarded.
    pub(super) buf: BytesMut,
}

impl SessionClient {
    /// Re-registers both sockets with the runtime of `target` (the one this runs on) and serves
    /// the rest of the session there, until it ends or moves again.
    async fn resume(self: Box<Self>, target: WorkerId) -> Option<MovedClient> {
        let SessionClient {
            tenancy,
            mut placed,
            registration,
            mut stream,
            mut server,
            buf,
        } = *self;
        placed.move_to(target);
        let entry = registration.entry.clone()?;
        if let Err(e) = stream.rebind().and_then(|()| server.conn().move_to(target)) {
            finish(&tenancy, &entry, &mut stream, Err(ClientError::Io(e))).await;
            return None;
        }
        let served = {
            let generation = tenancy.generation.clone();
            let session = Session::new(&tenancy.shared, &generation, &entry, target);
            let relays = Box::pin(session.session_relays(&mut stream, buf, server));
            relays.await
        };
        let end = match served {
            Ok(Served::Moved(next, server, buf)) => {
                let session = SessionClient {
                    tenancy,
                    placed,
                    registration,
                    stream,
                    server,
                    buf,
                };
                return Some(MovedClient::session(next, session));
            }
            Ok(Served::Ended(end)) => Ok(end),
            Ok(Served::Pooled(_)) => Ok(super::relay::RelayEnd::ClientGone),
            Err(e) => Err(e),
        };
        finish(&tenancy, &entry, &mut stream, end).await;
        None
    }
}

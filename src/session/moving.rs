//! Clients moving between worker threads at idle points: what travels (a transaction-pooled
//! client whole; a session-pooled one with its server connection), how it is counted on its
//! worker, and how it resumes on the target (sockets re-registered there). A session-pooled
//! client is served as a [`SessionClient`] from its first relay, moved or not.

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;

use super::client::{Session, SessionEnd};
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

/// A session-pooled client with its server connection, served on its worker (see
/// [`SessionClient::relays`]) or moving to another one between two relays of its session.
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
    async fn resume(mut self: Box<Self>, target: WorkerId) -> Option<MovedClient> {
        self.placed.move_to(target);
        let rebound = self.stream.rebind();
        if let Err(e) = rebound.and_then(|()| self.server.conn().move_to(target)) {
            let entry = self.registration.entry.clone()?;
            finish(
                &self.tenancy,
                &entry,
                &mut self.stream,
                Err(ClientError::Io(e)),
            )
            .await;
            return None;
        }
        self.relays().await
    }

    /// Serves the session on the worker it is placed on until it ends, or until it takes a move
    /// (then returns itself to be handed over). The client task boxes this future: the relay
    /// inside is polled through no other box.
    pub(super) async fn relays(self: Box<Self>) -> Option<MovedClient> {
        let SessionClient {
            tenancy,
            placed,
            registration,
            mut stream,
            server,
            buf,
        } = *self;
        let entry = registration.entry.clone()?;
        let served = {
            let generation = tenancy.generation.clone();
            let session = Session::new(&tenancy.shared, &generation, &entry, placed.worker);
            session.session_relays(&mut stream, buf, server).await
        };
        let end = match served {
            Ok(SessionEnd::Moved(next, server, buf)) => {
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
            Ok(SessionEnd::Ended(end)) => Ok(end),
            Err(e) => Err(e),
        };
        finish(&tenancy, &entry, &mut stream, end).await;
        None
    }
}

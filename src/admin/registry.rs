//! The set of connected clients as the admin console sees them: who, from where, since when, what
//! they are doing, and a per-client stop token so `KILL` can end one session.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

/// What a client is doing, for SHOW CLIENTS and SHOW POOLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Startup and authentication.
    Login = 0,
    /// Logged in, holding no server connection (between transactions).
    Idle = 1,
    /// Holding a server connection.
    Active = 2,
    /// Waiting for a server connection (pool full or paused).
    Waiting = 3,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            0 => ClientState::Login,
            1 => ClientState::Idle,
            2 => ClientState::Active,
            _ => ClientState::Waiting,
        }
    }

    /// Lower-case name shown by the console.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// One connected client. Updated by its own session task with relaxed atomic stores only.
#[derive(Debug)]
pub struct ClientEntry {
    /// Unique for the life of the process; what `KILL` takes.
    pub id: u64,
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    /// Wall-clock connect time, for display.
    pub connected_at: SystemTime,
    connected: Instant,
    state: AtomicU8,
    /// Microseconds from `connected` to the last [`ClientEntry::request`].
    requested_us: AtomicU64,
    pinned: OnceLock<&'static str>,
    killed: AtomicBool,
    /// Set before `stop` is cancelled (KILL, or the process stopping): sessions check this atomic
    /// on their hot path, since `CancellationToken::is_cancelled` takes a lock.
    stopping: AtomicBool,
    stop: CancellationToken,
}

impl ClientEntry {
    /// Records a state change: one relaxed store, no clock read.
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The client asks for a server connection: state `Waiting` from now (one clock read).
    pub fn request(&self) {
        let micros = u64::try_from(self.connected.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.requested_us.store(micros, Ordering::Relaxed);
        self.set_state(ClientState::Waiting);
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Wall-clock time of the last request for a server connection (connect time if none yet).
    pub fn requested_at(&self) -> SystemTime {
        self.connected_at + self.requested_offset()
    }

    /// How long the client has been waiting for a server connection (zero unless `Waiting`).
    pub fn waiting_for(&self) -> Duration {
        match self.state() {
            ClientState::Waiting => self
                .connected
                .elapsed()
                .saturating_sub(self.requested_offset()),
            _ => Duration::ZERO,
        }
    }

    fn requested_offset(&self) -> Duration {
        Duration::from_micros(self.requested_us.load(Ordering::Relaxed))
    }

    /// Notes why the client keeps its server connection (first reason wins).
    pub fn pin(&self, reason: &'static str) {
        let _ = self.pinned.set(reason);
    }

    pub fn pinned(&self) -> Option<&'static str> {
        self.pinned.get().copied()
    }

    /// The token the session stops on: a child of the process-wide stop token.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Ends the session (admin `KILL`).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Whether the session was ended by [`ClientEntry::kill`].
    /// Whether the session must stop now (KILL, or the process stopping): one atomic load, for
    /// the relay to check on every wake-up. Its stop token is cancelled just after this is set.
    pub fn stopping(&self) -> &AtomicBool {
        &self.stopping
    }

    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
}

/// Every connected client, by id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: DashMap<u64, Arc<ClientEntry>>,
}

impl ClientRegistry {
    /// Marks every client as stopping; call just before cancelling the process-wide stop token (a
    /// client registered after that is born with its token cancelled, which sessions check when
    /// they first wait on it).
    pub fn stop_all(&self) {
        for entry in self.clients.iter() {
            entry.stopping.store(true, Ordering::Release);
        }
    }

    /// Adds a client in state `Login`; it is removed when the returned handle drops. Its stop token
    /// is a child of `parent`, so stopping the process stops it too.
    pub fn register(
        &self,
        peer: SocketAddr,
        user: &str,
        database: &str,
        parent: &CancellationToken,
    ) -> ClientHandle<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            peer,
            user: user.to_string(),
            database: database.to_string(),
            connected_at: SystemTime::now(),
            connected: Instant::now(),
            state: AtomicU8::new(ClientState::Login as u8),
            requested_us: AtomicU64::new(0),
            pinned: OnceLock::new(),
            killed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            stop: parent.child_token(),
        });
        self.clients.insert(id, entry.clone());
        ClientHandle {
            registry: self,
            entry,
        }
    }

    /// The clients, ordered by id.
    pub fn snapshot(&self) -> Vec<Arc<ClientEntry>> {
        let mut all: Vec<_> = self.clients.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.clients.get(&id).map(|e| e.value().clone())
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// A registered client; unregisters on drop.
#[derive(Debug)]
pub struct ClientHandle<'a> {
    registry: &'a ClientRegistry,
    entry: Arc<ClientEntry>,
}

impl std::ops::Deref for ClientHandle<'_> {
    type Target = ClientEntry;
    fn deref(&self) -> &ClientEntry {
        &self.entry
    }
}

impl Drop for ClientHandle<'_> {
    fn drop(&mut self) {
        self.registry.clients.remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_tracks_state_and_unregisters() {
        let registry = ClientRegistry::default();
        let parent = CancellationToken::new();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = registry.register(peer, "app", "db", &parent);
        let b = registry.register(peer, "ops", "pgsluice", &parent);
        assert_eq!(registry.len(), 2);
        assert_eq!(a.state(), ClientState::Login);
        a.request();
        assert_eq!(a.state(), ClientState::Waiting);
        assert!(a.requested_at() >= a.connected_at);
        a.set_state(ClientState::Active);
        assert_eq!(registry.get(a.id).unwrap().state(), ClientState::Active);
        assert_eq!(a.waiting_for(), Duration::ZERO);
        a.pin("SET");
        a.pin("LISTEN");
        assert_eq!(a.pinned(), Some("SET"));
        registry.get(b.id).unwrap().kill();
        assert!(b.stop_token().is_cancelled() && b.killed());
        assert!(!a.stop_token().is_cancelled());
        let ids: Vec<u64> = registry.snapshot().iter().map(|c| c.id).collect();
        assert_eq!(ids, [a.id, b.id]);
        drop(b);
        assert_eq!(registry.len(), 1);
        parent.cancel();
        assert!(a.stop_token().is_cancelled() && !a.killed());
    }
}

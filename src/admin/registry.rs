//! The set of connected clients as the admin console sees them: who, from where, since when, what
//! they are doing; and per client what other tasks reach it by: its stop signal (`KILL`, drain,
//! shutdown) and the target of its cancel requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use futures_util::task::AtomicWaker;

use crate::pool::CancelTarget;
use crate::protocol::startup::CancelKey;

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
    /// The user name followed by the database name, in one allocation (`user_len` splits them).
    names: Box<str>,
    user_len: u32,
    connected: Instant,
    state: AtomicU8,
    /// Microseconds from `connected` to the last [`ClientEntry::request`].
    requested_us: AtomicU64,
    pinned: OnceLock<&'static str>,
    killed: AtomicBool,
    /// Set (then `wake` woken) when the session must end now: KILL, or the process stopping.
    stopping: AtomicBool,
    /// The session task's waker while it waits, woken for stop and for the proxy's drain: one
    /// slot per client instead of a registered waiter per signal.
    wake: AtomicWaker,
    /// Wake-ups so far, bumped before each: a caller polled many times in a row registers its
    /// waker again only when this moved ([`ClientEntry::poll_stopped_registered`]).
    wakes: AtomicU32,
    /// Where this client's cancel requests go; `None` between server connections.
    cancel: Mutex<Option<CancelTarget>>,
    /// The cancel key issued to this client (BackendKeyData), once issued.
    cancel_key: OnceLock<CancelKey>,
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
        self.connected_at() + self.requested_offset()
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

    /// The user the client logged in as (as the startup packet said, before authentication).
    pub fn user(&self) -> &str {
        self.names.get(..self.user_len as usize).unwrap_or_default()
    }

    /// The database the client asked for.
    pub fn database(&self) -> &str {
        self.names.get(self.user_len as usize..).unwrap_or_default()
    }

    /// Wall-clock connect time, for display (derived from the monotonic connect time).
    pub fn connected_at(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.connected.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// How long the client has been connected.
    pub fn connected_for(&self) -> Duration {
        self.connected.elapsed()
    }

    /// Ends the session now (admin KILL): sets the stop flag and wakes the session's task.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.stop();
    }

    /// Ends the session now (KILL or shutdown): the flag first, then the wake-up.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_up();
    }

    /// Wakes the session's task so it looks at its flags again.
    fn wake_up(&self) {
        self.wakes.fetch_add(1, Ordering::AcqRel);
        self.wake.wake();
    }

    /// Whether the session must stop (KILL or shutdown).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Ready once the session must stop. Registers the session task's waker first (then checks,
    /// so no wake-up is lost): [`ClientEntry::stop`] and [`ClientRegistry::wake_all`] wake it,
    /// so a task waiting on other flags too (the drain) is woken by the same slot.
    pub fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.wake.register(cx.waker());
        match self.is_stopping() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Like [`ClientEntry::poll_stopped`], for a future polled many times by one task (the
    /// relay): the waker is registered at the first poll and again only after a wake-up (which
    /// empties the slot), so most polls cost two loads. `registered` is the caller's record of
    /// the wake-up count it registered at.
    pub fn poll_stopped_registered(
        &self,
        cx: &mut Context<'_>,
        registered: &mut Option<u32>,
    ) -> Poll<()> {
        let wakes = self.wakes.load(Ordering::Acquire);
        if *registered != Some(wakes) {
            self.wake.register(cx.waker());
            *registered = Some(wakes);
        }
        match self.is_stopping() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Completes once the session must stop (KILL or shutdown). Holds no state of its own.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_stopped(cx))
    }

    /// Points this client's cancel requests at `target` (or nowhere). Only the session task
    /// writes it, so the lock is uncontended but for a cancel request reading it.
    pub fn set_cancel_target(&self, target: Option<CancelTarget>) {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// Records the cancel key issued to this client (the first one only).
    pub fn set_cancel_key(&self, key: CancelKey) {
        let _ = self.cancel_key.set(key);
    }

    /// The cancel key issued to this client, if one was.
    pub fn cancel_key(&self) -> Option<CancelKey> {
        self.cancel_key.get().copied()
    }

    /// Where a cancel request for this client goes now, if anywhere.
    pub fn cancel_target(&self) -> Option<CancelTarget> {
        self.cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the session was ended by admin KILL (not by shutdown).
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }
}

/// Every connected client, by id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: DashMap<u64, Arc<ClientEntry>>,
    /// Set by [`ClientRegistry::stop_all`]: clients registered afterwards start stopped.
    stopping_all: AtomicBool,
}

impl ClientRegistry {
    /// Stops every client now (the shutdown timeout was reached), and every client registered
    /// from now on.
    pub fn stop_all(&self) {
        self.stopping_all.store(true, Ordering::Release);
        for entry in self.clients.iter() {
            entry.stop();
        }
    }

    /// Wakes every client's waiting task, so each looks again at the process-wide flags it
    /// watches (the proxy started draining).
    pub fn wake_all(&self) {
        for entry in self.clients.iter() {
            entry.wake_up();
        }
    }

    /// Adds a client in state `Login`. The caller removes it with [`ClientRegistry::unregister`]
    /// when the session ends (the session owns the entry and does it on drop).
    pub fn register(&self, peer: SocketAddr, user: &str, database: &str) -> Arc<ClientEntry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            peer,
            names: [user, database].concat().into_boxed_str(),
            user_len: u32::try_from(user.len()).unwrap_or(u32::MAX),
            connected: Instant::now(),
            state: AtomicU8::new(ClientState::Login as u8),
            requested_us: AtomicU64::new(0),
            pinned: OnceLock::new(),
            killed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake: AtomicWaker::new(),
            wakes: AtomicU32::new(0),
            cancel: Mutex::new(None),
            cancel_key: OnceLock::new(),
        });
        self.clients.insert(id, entry.clone());
        // After the insert: either stop_all saw this entry, or this sees its flag.
        if self.stopping_all.load(Ordering::Acquire) {
            entry.stop();
        }
        entry
    }

    /// Removes a client registered with [`ClientRegistry::register`].
    pub fn unregister(&self, id: u64) {
        self.clients.remove(&id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_tracks_state_and_unregisters() {
        let registry = ClientRegistry::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = registry.register(peer, "app", "db");
        let b = registry.register(peer, "ops", "pgsluice");
        assert_eq!(registry.len(), 2);
        assert_eq!(a.state(), ClientState::Login);
        a.request();
        assert_eq!(a.state(), ClientState::Waiting);
        assert_eq!((a.user(), a.database()), ("app", "db"));
        assert!(a.requested_at() >= a.connected_at() - Duration::from_millis(1));
        a.set_state(ClientState::Active);
        assert_eq!(registry.get(a.id).unwrap().state(), ClientState::Active);
        assert_eq!(a.waiting_for(), Duration::ZERO);
        a.pin("SET");
        a.pin("LISTEN");
        assert_eq!(a.pinned(), Some("SET"));
        registry.get(b.id).unwrap().kill();
        assert!(b.is_stopping() && b.killed());
        assert!(!a.is_stopping());
        let ids: Vec<u64> = registry.snapshot().iter().map(|c| c.id).collect();
        assert_eq!(ids, [a.id, b.id]);
        registry.unregister(b.id);
        assert_eq!(registry.len(), 1);
        registry.stop_all();
        assert!(a.is_stopping() && !a.killed());
        let late = registry.register(peer, "app", "db");
        assert!(late.is_stopping(), "registered after stop_all");
    }

    #[tokio::test]
    async fn stop_wakes_a_waiting_task() {
        let registry = ClientRegistry::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let entry = registry.register(peer, "app", "db");
        let waiting = tokio::spawn({
            let entry = entry.clone();
            async move { entry.stopped().await }
        });
        tokio::task::yield_now().await;
        entry.kill();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
    }
}

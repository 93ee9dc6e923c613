//! Session workers: one thread per core, each running its own single-threaded tokio runtime, like
//! one PgBouncer per core. A client's task and both directions of its relay stay on one thread, so
//! forwarding a message never wakes another thread. Accepted sockets are handed out round robin.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::net::WorkerId;
use crate::session::{self, Shared};

/// A socket accepted by a listener, on its way to a worker.
struct Accepted {
    socket: std::net::TcpStream,
    peer: SocketAddr,
    /// Counts as a session until the worker has spawned the real one, so a drain that waits for
    /// the sessions never misses a socket still in the channel (it would be reset).
    _pending: TaskTrackerToken,
}

/// The worker threads and the channels that feed them.
#[derive(Debug)]
pub struct Workers {
    intake: Vec<mpsc::UnboundedSender<Accepted>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: AtomicUsize,
    stop: CancellationToken,
    sessions: TaskTracker,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Accepted({})", self.peer)
    }
}

impl Workers {
    /// Starts `count` workers (at least one); sessions they run are tracked by `sessions`.
    pub fn start(
        count: usize,
        shared: &Arc<Shared>,
        sessions: &TaskTracker,
    ) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut intake = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            // Sessions need sockets and timers only; no signal or process driver on the hot loop.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let worker = Worker {
                id: WorkerId(index),
                shared: shared.clone(),
                sessions: sessions.clone(),
                stop: stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("pgsluice-worker-{index}"))
                .spawn(move || runtime.block_on(worker.run(rx)))?;
            intake.push(tx);
            threads.push(thread);
        }
        Ok(Workers {
            intake,
            threads,
            next: AtomicUsize::new(0),
            stop,
            sessions: sessions.clone(),
        })
    }

    /// Hands an accepted socket to the next worker.
    pub fn dispatch(&self, socket: TcpStream, peer: SocketAddr) {
        let socket = match socket.into_std() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand over accepted socket");
                return;
            }
        };
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.intake.len();
        let accepted = Accepted {
            socket,
            peer,
            _pending: self.sessions.token(),
        };
        if self.intake[index].send(accepted).is_err() {
            tracing::warn!(%peer, "worker is gone; dropping connection");
        }
    }

    /// Stops the workers once their sessions are done (or abandoned) and waits for the threads.
    pub async fn stop(self, grace: Duration) {
        drop(self.intake);
        self.stop.cancel();
        let threads = self.threads;
        let join = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = tokio::time::timeout(grace, join).await;
    }
}

/// What one worker thread needs.
struct Worker {
    id: WorkerId,
    shared: Arc<Shared>,
    sessions: TaskTracker,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self, mut intake: mpsc::UnboundedReceiver<Accepted>) {
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = intake.recv() => accepted,
            };
            let Some(Accepted {
                socket,
                peer,
                _pending,
            }) = accepted
            else {
                break;
            };
            match TcpStream::from_std(socket) {
                Ok(tcp) => {
                    self.sessions.spawn(session::run_client(
                        self.shared.clone(),
                        tcp,
                        peer,
                        self.id,
                    ));
                }
                Err(e) => tracing::warn!(%peer, error = %e, "cannot adopt accepted socket"),
            }
        }
        // Intake closed: keep the runtime alive for the sessions until told to stop.
        self.stop.cancelled().await;
    }
}

//! Session workers: one thread per core, each running its own single-threaded tokio runtime, like
//! one PgBouncer per core. A client's task and both directions of its relay stay on one thread, so
//! forwarding a message never wakes another thread. Accepted sockets go to the worker the
//! balancer prefers (`app::balance`); clients it moves arrive here too, between transactions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

use crate::metrics::clock;
use crate::net::WorkerId;
use crate::session::{self, MovedClient, Shared};

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
    intake: Arc<Vec<mpsc::UnboundedSender<Intake>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Thread ids of the workers, in order, once each has started (for the balancer).
    pub tids: Arc<Vec<std::sync::OnceLock<u32>>>,
    shared: Arc<Shared>,
    /// Round robin, while balancing is off.
    next: AtomicUsize,
    stop: CancellationToken,
    sessions: TaskTracker,
}

/// What a worker is handed: a new connection, or a client moving in from another worker.
enum Intake {
    Accepted(Accepted),
    Moved {
        client: MovedClient,
        /// Counts as a session while in the channel (like [`Accepted::_pending`]).
        _pending: TaskTrackerToken,
    },
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
        let count = count.max(1);
        let (intake, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let intake = Arc::new(intake);
        let tids: Arc<Vec<_>> = Arc::new((0..count).map(|_| std::sync::OnceLock::new()).collect());
        install_hand_off(shared, &intake, sessions);
        let mut threads = Vec::new();
        for (index, rx) in receivers.into_iter().enumerate() {
            // Sessions need sockets and timers only; no signal or process driver on the hot loop.
            // The latency clock is read once per wake-up, not per request (`metrics::clock`).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .on_thread_unpark(clock::woke)
                .on_thread_park(clock::sleeps)
                .build()?;
            let worker = Worker {
                id: WorkerId(index),
                shared: shared.clone(),
                sessions: sessions.clone(),
                stop: stop.clone(),
            };
            let tids = tids.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pgsluice-worker-{index}"))
                .spawn(move || {
                    if let Some(tid) = super::balance::current_tid() {
                        let _ = tids[index].set(tid);
                    }
                    runtime.block_on(worker.run(rx))
                })?;
            threads.push(thread);
        }
        Ok(Workers {
            intake,
            threads,
            tids,
            shared: shared.clone(),
            next: AtomicUsize::new(0),
            stop,
            sessions: sessions.clone(),
        })
    }

    /// Hands an accepted socket to the worker the balancer prefers for new clients (round robin
    /// while `limits.balance_interval` is 0).
    pub fn dispatch(&self, socket: TcpStream, peer: SocketAddr) {
        let socket = match socket.into_std() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand over accepted socket");
                return;
            }
        };
        let balancing = !self
            .shared
            .generation
            .load()
            .config
            .limits
            .balance_interval
            .is_zero();
        let index = match balancing {
            true => self.shared.placement.preferred().0,
            false => self.next.fetch_add(1, Ordering::Relaxed),
        } % self.intake.len();
        let accepted = Accepted {
            socket,
            peer,
            _pending: self.sessions.token(),
        };
        if self.intake[index].send(Intake::Accepted(accepted)).is_err() {
            tracing::warn!(%peer, "worker is gone; dropping connection");
        }
    }

    /// Stops the workers once their sessions are done (or abandoned) and waits for the threads.
    pub async fn stop(self, grace: Duration) {
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
    async fn run(self, mut intake: mpsc::UnboundedReceiver<Intake>) {
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return,
                received = intake.recv() => received,
            };
            let (socket, peer) = match received {
                None => break,
                Some(Intake::Moved { client, _pending }) => {
                    self.sessions.spawn(client.resume());
                    continue;
                }
                Some(Intake::Accepted(Accepted {
                    socket,
                    peer,
                    _pending,
                })) => (socket, peer),
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

/// Lets clients that take a move reach their target worker through its intake, counted as a
/// session on the way.
fn install_hand_off(
    shared: &Arc<Shared>,
    intake: &Arc<Vec<mpsc::UnboundedSender<Intake>>>,
    sessions: &TaskTracker,
) {
    let intake = Arc::downgrade(intake);
    let sessions = sessions.clone();
    shared
        .placement
        .set_hand_off(Box::new(move |client: MovedClient| {
            let Some(intake) = intake.upgrade() else {
                return Err(client);
            };
            let Some(sender) = intake.get(client.target().0) else {
                return Err(client);
            };
            let moving = Intake::Moved {
                client,
                _pending: sessions.token(),
            };
            sender.send(moving).map_err(|e| match e.0 {
                Intake::Moved { client, .. } => client,
                Intake::Accepted(_) => unreachable!("only moved clients are sent here"),
            })
        }));
}

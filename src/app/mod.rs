//! The application lifecycle: build a generation from config, accept clients on bound listeners and
//! hand them to the session workers, reload, and drain on shutdown. Tests call [`App::serve`] with
//! listeners bound to port 0. The HTTP endpoints (metrics, health, status) run beside it with
//! [`App::bind_http`] and [`App::serve_http`].

pub mod balance;
mod reload;
mod status;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::ControlRequest;
use crate::config;
use crate::config::Config;
use crate::health;
use crate::metrics::Metrics;
use crate::net;
use crate::session::{Generation, GenerationError, Shared};
pub use status::{AppStatus, Lifecycle};
use workers::Workers;

/// How long sessions get to end after they were told to stop (after `shutdown_timeout`).
const HARD_STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the proxy could not start or apply a config.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Generation(#[from] GenerationError),
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// A running proxy: shared session state plus the background tasks it owns.
#[derive(Debug)]
pub struct App {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// Stops the housekeeping of the current generation's pools and its health checkers.
    generation_stop: Mutex<CancellationToken>,
    /// The metrics registry, kept across reloads.
    metrics: Arc<Metrics>,
    /// Listening / draining, for `/ready` and `/status`.
    lifecycle: Arc<Lifecycle>,
    /// Fired when [`App::serve`] has finished; ends [`App::serve_http`].
    stopped: CancellationToken,
    /// The file RELOAD (admin console) re-reads, if the config came from one.
    config_path: Mutex<Option<PathBuf>>,
}

impl App {
    /// Builds the first generation from `config` (TLS files, credentials, pools); opens nothing yet.
    pub fn new(config: Config) -> Result<App, AppError> {
        let metrics = Metrics::new();
        let generation = Generation::build_with_metrics(config, metrics.clone())?;
        let app = App {
            shared: Arc::new(Shared::new(generation)),
            tracker: TaskTracker::new(),
            generation_stop: Mutex::new(CancellationToken::new()),
            metrics,
            lifecycle: Arc::default(),
            stopped: CancellationToken::new(),
            config_path: Mutex::new(None),
        };
        app.start_generation_tasks();
        Ok(app)
    }

    /// Handles shared with sessions (for tests and admin views).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The metrics registry every generation records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn start_generation_tasks(&self) {
        let stop = CancellationToken::new();
        let generation = self.shared.generation.load_full();
        generation.pools.spawn_maintenance(&self.tracker, &stop);
        health::spawn_with_metrics(
            &generation.config,
            &generation.topology,
            &generation.server_tls,
            &self.tracker,
            &stop,
            close_idle_on_down(&generation),
            Some(&self.metrics),
        );
        let old = std::mem::replace(&mut *self.lock_stop(), stop);
        old.cancel();
    }

    fn lock_stop(&self) -> std::sync::MutexGuard<'_, CancellationToken> {
        self.generation_stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the configuration: new sessions use the new one; sessions already running keep the
    /// generation they started with until they end. A config that cannot be built changes nothing.
    /// Settings that need a restart (see [`reload::RESTART_ONLY`]) are logged and kept as running;
    /// pools whose settings did not change are kept with their idle server connections.
    pub fn reload(&self, mut config: Config) -> Result<(), AppError> {
        let current = self.shared.generation.load_full();
        for key in reload::keep_restart_only(&current.config, &mut config) {
            tracing::warn!(
                key,
                "changing this setting needs a restart; keeping the running value"
            );
        }
        let mut generation = Generation::build_after(config, &current)?;
        generation.client_limits.inherit(&current.client_limits);
        generation.keep_consistency_keys(&current);
        let kept = generation
            .pools
            .iter()
            .filter(|(key, _)| generation.pools.shares(&current.pools, key))
            .count();
        self.shared.generation.store(Arc::new(generation));
        self.start_generation_tasks();
        tracing::info!(pools_kept = kept, "configuration reloaded");
        Ok(())
    }

    /// Remembers the file the config came from, for the admin console's RELOAD.
    pub fn set_config_path(&self, path: &Path) {
        *self
            .config_path
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(path.to_path_buf());
    }

    /// Re-reads the config file (see [`App::set_config_path`]) and applies it; the error as text.
    pub fn reload_file(&self) -> Result<(), String> {
        let path = self
            .config_path
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| "no config file to reload".to_string())?;
        let config = config::load_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.reload(config).map_err(|e| e.to_string())
    }

    /// Answers admin console requests until `shutdown` fires (or the console asks for it).
    async fn control_until_shutdown(&self, shutdown: &CancellationToken) {
        let Some(mut requests) = self.shared.control.take_receiver() else {
            return shutdown.cancelled().await;
        };
        loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => return,
                request = requests.recv() => request,
            };
            match request {
                Some(ControlRequest::Reload(answer)) => {
                    let result = self.reload_file();
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "admin RELOAD failed; keeping the running configuration");
                    }
                    let _ = answer.send(result);
                }
                Some(ControlRequest::Shutdown) => {
                    tracing::info!("shutdown requested from the admin console");
                    shutdown.cancel();
                    return;
                }
                None => return shutdown.cancelled().await,
            }
        }
    }

    /// Binds every configured listener (with SO_REUSEPORT when `listen.reuse_port` is set).
    pub async fn bind(config: &Config) -> Result<Vec<TcpListener>, AppError> {
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            listeners.push(listen(&listener.address, config.listen.reuse_port)?);
        }
        Ok(listeners)
    }

    /// Binds the HTTP endpoints' listener if `http.listen` is configured.
    pub async fn bind_http(config: &Config) -> Result<Option<TcpListener>, AppError> {
        let Some(address) = &config.http.listen else {
            return Ok(None);
        };
        listen(address, config.listen.reuse_port).map(Some)
    }

    /// Serves `/metrics`, `/live`, `/ready` and `/status` on `listener` (nothing when `None`) until
    /// [`App::serve`] has finished, so `/ready` reports 503 while draining. Run it beside `serve`.
    /// With `listen.reuse_port` the endpoints stop when the drain starts instead: the port is then
    /// shared with the process taking over, and probes must reach that one, not a draining one.
    pub async fn serve_http(&self, listener: Option<TcpListener>) {
        let Some(listener) = listener else { return };
        let source = Arc::new(AppStatus {
            shared: self.shared.clone(),
            lifecycle: self.lifecycle.clone(),
        });
        let until = if self.shared.generation.load().config.listen.reuse_port {
            self.shared.draining.clone()
        } else {
            self.stopped.clone()
        };
        crate::metrics::http::serve(listener, self.metrics.clone(), source, until).await;
    }

    /// Accepts clients on `listeners` until `shutdown` fires, then drains: stops accepting, lets
    /// sessions finish for up to `shutdown_timeout`, tells the rest to stop, and closes pools.
    /// Sessions run on `limits.worker_threads` worker threads (0: one per CPU).
    pub async fn serve(
        &self,
        listeners: Vec<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), AppError> {
        let sessions = TaskTracker::new();
        // Fixed at startup (restart-only), so the same as the placement's.
        let count = self.shared.placement.len();
        let workers =
            Arc::new(Workers::start(count, &self.shared, &sessions).map_err(AppError::Workers)?);
        let balancing = CancellationToken::new();
        tokio::spawn(balance::run(
            self.shared.clone(),
            workers.tids.clone(),
            balancing.clone(),
        ));
        let accepting = TaskTracker::new();
        for listener in listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, workers = count, "listening");
            }
            accepting.spawn(accept_loop(listener, workers.clone(), shutdown.clone()));
        }
        accepting.close();
        self.lifecycle.listening.store(true, Ordering::Relaxed);
        self.control_until_shutdown(&shutdown).await;
        self.lifecycle.draining.store(true, Ordering::Relaxed);
        self.shared.drain_started.store(true, Ordering::Release);
        self.shared.draining.cancel();
        balancing.cancel();
        self.shared.registry.wake_all();
        accepting.wait().await;
        self.lifecycle.listening.store(false, Ordering::Relaxed);
        sessions.close();
        let timeout = self.shared.generation.load().config.limits.shutdown_timeout;
        tracing::info!(
            clients = sessions.len(),
            ?timeout,
            "shutting down: waiting for clients"
        );
        if tokio::time::timeout(timeout, sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                clients = sessions.len(),
                "shutdown_timeout reached: closing remaining clients"
            );
            self.shared.registry.stop_all();
            let _ = tokio::time::timeout(HARD_STOP_GRACE, sessions.wait()).await;
        }
        if let Ok(workers) = Arc::try_unwrap(workers) {
            workers.stop(HARD_STOP_GRACE).await;
        }
        self.shared.generation.load().pools.close_all();
        self.lock_stop().cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(HARD_STOP_GRACE, self.tracker.wait()).await;
        self.stopped.cancel();
        tracing::info!("stopped");
        Ok(())
    }
}

/// How many connections a listener queues before the kernel refuses more.
const LISTEN_BACKLOG: i32 = 1024;

/// Opens a listening socket on `address` (SO_REUSEADDR, and SO_REUSEPORT when `reuse_port`).
fn listen(address: &str, reuse_port: bool) -> Result<TcpListener, AppError> {
    let bind_error = |source| AppError::Bind {
        address: address.to_string(),
        source,
    };
    let addr: std::net::SocketAddr = address.parse().map_err(|_| {
        bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an IP address with a port",
        ))
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(bind_error)?;
    }
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
    TcpListener::from_std(socket.into()).map_err(bind_error)
}

/// Closes the idle server connections of a node that health checks marked down, in the pools of
/// `generation` (held weakly: checkers stop with their generation).
fn close_idle_on_down(generation: &Arc<Generation>) -> health::OnDown {
    let generation = Arc::downgrade(generation);
    Arc::new(move |database: &str, node| {
        let Some(generation) = generation.upgrade() else {
            return;
        };
        let database = database.to_string();
        tokio::spawn(async move { generation.pools.close_idle_for(&database, node).await });
    })
}

/// Accepts until `shutdown`, then sweeps: connections the kernel already completed (queued in the
/// backlog) are accepted and served rather than reset when the listener closes. With SO_REUSEPORT
/// a newer process on the same port takes every connection from then on.
async fn accept_loop(listener: TcpListener, workers: Arc<Workers>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                net::tune_socket(&tcp);
                workers.dispatch(tcp, peer);
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                if let Some(suppressed) = crate::logging::repeats().allow("accept") {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let swept = sweep_backlog(listener, &workers);
    if swept > 0 {
        tracing::info!(
            clients = swept,
            "accepted the clients queued before closing the listener"
        );
    }
}

/// Accepts every connection already queued on `listener` without waiting, then closes it.
fn sweep_backlog(listener: TcpListener, workers: &Workers) -> usize {
    let Ok(listener) = listener.into_std() else {
        return 0;
    };
    let mut swept = 0;
    while let Ok((socket, peer)) = listener.accept() {
        match socket
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(socket))
        {
            Ok(tcp) => {
                net::tune_socket(&tcp);
                workers.dispatch(tcp, peer);
                swept += 1;
            }
            Err(e) => tracing::warn!(%peer, error = %e, "cannot adopt a queued connection"),
        }
    }
    swept
}

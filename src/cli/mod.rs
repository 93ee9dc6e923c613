//! The command line: `run`, `check-config`, `scram-secret`, `demo`; logging setup, the tokio runtime,
//! signals (SIGTERM/SIGINT drain, SIGHUP reload) and systemd notifications.

mod demo;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{self, Config, LogFormat};

const DEFAULT_CONFIG: &str = "/etc/pgsluice/pgsluice.yaml";

const EXAMPLES: &str = "Examples:
  pgsluice -c /etc/pgsluice/pgsluice.yaml        run the proxy
  pgsluice check-config pgsluice.yaml            validate a config file, listing every error
  echo -n 's3cret' | pgsluice scram-secret        print a SCRAM-SHA-256 verifier for a config
  pgsluice demo                                  throwaway primary + replica with pgsluice in front";

/// pgsluice: a PostgreSQL proxy and connection pooler.
#[derive(Debug, Parser)]
#[command(name = "pgsluice", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Config file (for `run`, the default command).
    #[arg(short, long, env = "PGSLUICE_CONFIG", default_value = DEFAULT_CONFIG, global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate a config file and exit non-zero with every error if it is invalid.
    CheckConfig {
        /// File to check (default: the --config file).
        file: Option<PathBuf>,
    },
    /// Read a password on standard input and print its SCRAM-SHA-256 verifier for `users[].password`.
    ScramSecret,
    /// Start a throwaway local primary + replica and pgsluice in front of them; Ctrl-C stops all.
    Demo {
        /// Port for pgsluice to listen on (0 picks a free one).
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Number of streaming replicas.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Run) => run(&cli.config),
        Some(Command::CheckConfig { file }) => check_config(file.as_deref().unwrap_or(&cli.config)),
        Some(Command::ScramSecret) => scram_secret(),
        Some(Command::Demo { port, replicas }) => demo::demo(port, replicas),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgsluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = config::load_file(path).with_context(|| format!("{}", path.display()))?;
    println!(
        "{}: OK ({} listener(s), {} database(s), {} user(s))",
        path.display(),
        config.listeners.len(),
        config.databases.len(),
        config.users.len()
    );
    Ok(())
}

fn scram_secret() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password on standard input");
    println!("{}", crate::auth::scram::ScramVerifier::generate(password));
    Ok(())
}

/// Sets up logging from the config (RUST_LOG overrides the level).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match config.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Builds the main runtime: accept loops, signals and pool housekeeping. Client sessions run on
/// the app's own worker threads (`limits.worker_threads`), not here.
pub fn runtime(_config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load_file(path).with_context(|| format!("{}", path.display()))?;
    init_logging(&config);
    let runtime = runtime(&config)?;
    runtime.block_on(async move {
        let listeners = App::bind(&config).await?;
        let http = App::bind_http(&config).await?;
        let app = App::new(config)?;
        // The HTTP endpoints run until serving (drain included) ends.
        let serving = serve_with_signals(&app, listeners, Some(path));
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => served,
            () = app.serve_http(http) => serving.await,
        }
    })
}

/// Serves until SIGTERM/SIGINT (drain) and reloads `config_path` on SIGHUP; tells systemd.
pub async fn serve_with_signals(
    app: &App,
    listeners: Vec<tokio::net::TcpListener>,
    config_path: Option<&Path>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    if let Some(path) = config_path {
        app.set_config_path(path);
    }
    let serving = app.serve(listeners, shutdown.clone());
    tokio::pin!(serving);
    notify(&[sd_notify::NotifyState::Ready]);
    let _watchdog = spawn_watchdog();
    loop {
        tokio::select! {
            served = &mut serving => return Ok(served?),
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(app, config_path),
        }
    }
    tracing::info!("shutdown requested");
    notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    Ok(serving.await?)
}

fn reload(app: &App, config_path: Option<&Path>) {
    let Some(path) = config_path else { return };
    notify(&[sd_notify::NotifyState::Reloading]);
    match config::load_file(path) {
        Ok(config) => {
            if let Err(e) = app.reload(config) {
                tracing::error!(error = %e, "reload failed; keeping the running configuration");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; keeping the running configuration")
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// When systemd's watchdog is on (`WatchdogSec=`, seen as `WATCHDOG_USEC` for this pid), pings it
/// at half the interval from a task on the main runtime: a ping proves that the runtime running the
/// accept loops, signals and reloads still gets to run. `None` when the watchdog is off.
fn spawn_watchdog() -> Option<tokio_util::task::AbortOnDropHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return None;
    }
    let period = watchdog_period(usec)?;
    tracing::info!(?period, "systemd watchdog enabled");
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
    });
    Some(tokio_util::task::AbortOnDropHandle::new(task))
}

/// Half of systemd's watchdog interval (in microseconds); `None` for a zero interval.
fn watchdog_period(usec: u64) -> Option<std::time::Duration> {
    (usec > 0).then(|| {
        std::time::Duration::from_micros(usec / 2).max(std::time::Duration::from_millis(1))
    })
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn watchdog_pings_at_half_the_interval() {
        assert_eq!(super::watchdog_period(0), None);
        assert_eq!(
            super::watchdog_period(30_000_000),
            Some(Duration::from_secs(15))
        );
        assert_eq!(super::watchdog_period(1), Some(Duration::from_millis(1)));
    }
}

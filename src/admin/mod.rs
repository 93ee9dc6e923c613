//! The admin console (layer 4): a client that logs in to the virtual admin database (`admin.database`,
//! default `pgsluice`) as one of `admin.users` gets SHOW POOLS/CLIENTS/SERVERS/NODES/STATS/CONFIG/
//! VERSION/HELP, RELOAD, PAUSE, RESUME, KILL and SHUTDOWN over the simple query protocol. The
//! console never uses a server connection. Session hands such clients to [`serve`] after
//! authenticating them; admin never uses session, so session provides the data through [`Sources`].

mod command;
mod config_view;
mod control;
mod registry;
mod show;
mod table;

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use command::{parse, Command, ParseError, Show};
pub use control::{Control, ControlRequest};
pub use registry::{ClientEntry, ClientRegistry, ClientState};
pub use table::{Kind, Table};

use crate::config::Config;
use crate::net::{read_frame, FrameReadError};
use crate::pool::{Pool, PoolSet};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus};
use crate::protocol::startup::CancelKey;
use crate::protocol::{sqlstate, Framer};
use crate::topology::TopologyHandle;

/// How long PAUSE waits for busy server connections to come back before answering anyway.
const PAUSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The current configuration generation as the console reads it.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub config: &'a Config,
    pub pools: &'a PoolSet,
    pub topology: &'a HashMap<String, TopologyHandle>,
    /// The worker threads, in order.
    pub workers: &'a [WorkerView],
}

/// One worker thread as SHOW WORKERS lists it (filled in by the session layer, which places
/// clients on workers).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
    /// Clients it serves now.
    pub clients: usize,
    /// Share of one core it used over the balancer's last interval, once measured.
    pub cpu: Option<f64>,
    /// New clients go to it.
    pub preferred: bool,
    /// Clients the balancer asked to move off it, not yet moved.
    pub moves_asked: usize,
}

/// What the console reads and acts on, provided by the session layer. `with_view` must hand out
/// the generation current at the time of the call (so SHOW after RELOAD shows the new one).
pub trait Sources: Send + Sync {
    fn with_view<R>(&self, f: impl FnOnce(&View<'_>) -> R) -> R;
    fn clients(&self) -> &ClientRegistry;
    fn control(&self) -> &Control;
}

/// Why a console session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin client I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin client: {0}")]
    Read(FrameReadError),
    /// The client's stop token fired (KILL or hard shutdown).
    #[error("admin session stopped")]
    Stopped,
}

/// Whether the console goes on after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Continue,
    /// SHUTDOWN was requested: answer, then close this console.
    Close,
}

/// Serves a logged-in admin client (AuthenticationOk already sent) until it leaves or its entry is
/// stopped (KILL or shutdown).
/// `buf` holds bytes the client sent after its last authentication message.
pub async fn serve<S, IO>(
    sources: &S,
    stream: &mut IO,
    mut buf: BytesMut,
    framer: &Framer,
    client: &ClientEntry,
) -> Result<(), AdminError>
where
    S: Sources,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    greet(&mut out);
    stream.write_all(&out).await?;
    // After an extended-protocol error, skip messages until Sync like a server does.
    let mut skip_to_sync = false;
    loop {
        let frame = tokio::select! {
            frame = read_frame(stream, &mut buf, framer) => frame,
            _ = client.stopped() => return Err(AdminError::Stopped),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(FrameReadError::Closed) => return Ok(()),
            Err(e) => return Err(AdminError::Read(e)),
        };
        out.clear();
        let mut next = Next::Continue;
        match frame.tag() {
            b'X' => return Ok(()),
            b'Q' => {
                let sql = query_text(frame.body());
                next = run_query(sources, &sql, &mut out).await;
                backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
            }
            b'S' => {
                skip_to_sync = false;
                backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
            }
            b'H' => {}
            _ if skip_to_sync => {}
            _ => {
                skip_to_sync = true;
                let error = ErrorFields::new(
                    "ERROR",
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console supports the simple query protocol only",
                )
                .with_hint("Use simple queries, e.g. psql or simple_query().");
                backend::encode_error(&error, &mut out);
            }
        }
        stream.write_all(&out).await?;
        if next == Next::Close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// ParameterStatus, BackendKeyData and the first ReadyForQuery.
fn greet(out: &mut BytesMut) {
    let version = format!("15.0 ({})", show::version());
    let params = [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", "pgsluice-admin"),
    ];
    for (name, value) in params {
        backend::encode_parameter_status(name, value, out);
    }
    // Cancelling a console command does nothing; any key will do.
    let key = CancelKey {
        process_id: 0,
        secret_key: 0,
    };
    backend::encode_backend_key_data(key, out);
    backend::encode_ready_for_query(TransactionStatus::Idle, out);
}

/// The query string of a Query body, without its terminating NUL.
fn query_text(body: &[u8]) -> String {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    String::from_utf8_lossy(text).into_owned()
}

/// Runs every statement of a simple query; the first error ends the query, like Postgres.
async fn run_query<S: Sources>(sources: &S, sql: &str, out: &mut BytesMut) -> Next {
    let statements = command::statements(sql);
    if statements.is_empty() {
        backend::encode_empty_query_response(out);
        return Next::Continue;
    }
    for statement in statements {
        let result = match command::parse(statement) {
            Ok(cmd) => execute(sources, cmd, out).await,
            Err(e) => Err(ErrorFields::new(
                "ERROR",
                sqlstate::SYNTAX_ERROR,
                &e.to_string(),
            )),
        };
        match result {
            Ok(Next::Continue) => {}
            Ok(Next::Close) => return Next::Close,
            Err(error) => {
                backend::encode_error(&error, out);
                return Next::Continue;
            }
        }
    }
    Next::Continue
}

/// Runs one command, writing its result (not ReadyForQuery) to `out`.
async fn execute<S: Sources>(
    sources: &S,
    cmd: Command,
    out: &mut BytesMut,
) -> Result<Next, ErrorFields> {
    match cmd {
        Command::Show(what) => {
            let clients = sources.clients().snapshot();
            let table = sources.with_view(|view| show::show(what, view, &clients));
            table.encode("SHOW", out);
        }
        Command::Reload => {
            let reloaded = sources.control().reload().await;
            reloaded.map_err(|e| {
                ErrorFields::new(
                    "ERROR",
                    sqlstate::CONFIG_FILE_ERROR,
                    &format!("RELOAD failed: {e}"),
                )
            })?;
            backend::encode_command_complete("RELOAD", out);
        }
        Command::Pause(database) => {
            let pools = pools_of(sources, database.as_deref())?;
            pools.iter().for_each(|p| p.pause());
            let busy = wait_idle(&pools, PAUSE_DRAIN_TIMEOUT).await;
            if busy > 0 {
                let message = format!(
                    "paused, but {busy} server connection(s) still busy after {PAUSE_DRAIN_TIMEOUT:?}"
                );
                let notice = ErrorFields::new("WARNING", sqlstate::SUCCESSFUL_COMPLETION, &message);
                backend::encode_notice(&notice, out);
            }
            backend::encode_command_complete("PAUSE", out);
        }
        Command::Resume(database) => {
            pools_of(sources, database.as_deref())?
                .iter()
                .for_each(|p| p.resume());
            backend::encode_command_complete("RESUME", out);
        }
        Command::Kill(id) => {
            let client = sources.clients().get(id).ok_or_else(|| {
                let message = format!("no client with id {id} (see SHOW CLIENTS)");
                ErrorFields::new("ERROR", sqlstate::UNDEFINED_OBJECT, &message)
            })?;
            client.kill();
            tracing::info!(client = id, user = %client.user(), peer = %client.peer, "client killed by admin command");
            backend::encode_command_complete("KILL", out);
        }
        Command::Shutdown => {
            sources.control().shutdown().map_err(|e| {
                ErrorFields::new(
                    "ERROR",
                    sqlstate::INTERNAL_ERROR,
                    &format!("SHUTDOWN failed: {e}"),
                )
            })?;
            tracing::info!("shutdown requested by admin command");
            backend::encode_command_complete("SHUTDOWN", out);
            return Ok(Next::Close);
        }
    }
    Ok(Next::Continue)
}

/// The pools of `database` (all pools when `None`); 42704 for an unknown database.
fn pools_of<S: Sources>(
    sources: &S,
    database: Option<&str>,
) -> Result<Vec<std::sync::Arc<Pool>>, ErrorFields> {
    sources.with_view(|view| {
        if let Some(name) = database {
            if view.config.database(name).is_none() {
                let message = format!("database \"{name}\" is not configured");
                return Err(ErrorFields::new(
                    "ERROR",
                    sqlstate::UNDEFINED_OBJECT,
                    &message,
                ));
            }
        }
        Ok(view
            .pools
            .iter()
            .filter(|(key, _)| database.is_none_or(|name| key.database == name))
            .map(|(_, pool)| pool.clone())
            .collect())
    })
}

/// Waits until no connection of `pools` is checked out, up to `timeout`; returns how many still are.
async fn wait_idle(pools: &[std::sync::Arc<Pool>], timeout: Duration) -> usize {
    let busy = || pools.iter().map(|p| p.stats().active).sum::<usize>();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now_busy = busy();
        if now_busy == 0 || tokio::time::Instant::now() >= deadline {
            return now_busy;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

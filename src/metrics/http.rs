//! A deliberately tiny HTTP/1.1 server for `/metrics`, `/live`, `/ready` and `/status`: GET (and
//! HEAD) only, one request per connection (`Connection: close`), the request head bounded in size
//! and read under a timeout, at most [`MAX_CONNECTIONS`] at once. What `/ready` and `/status`
//! report comes from the app through [`StatusSource`], since this layer cannot see pools or
//! sessions.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Metrics;

/// Largest request head accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 << 10;
/// Time a client gets to send its request head, and to take the response.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 32;

/// Whether the proxy should receive traffic (`/ready`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not ready, with the reason shown in the 503 body.
    NotReady(String),
}

/// What the app exposes to the HTTP endpoints. Implemented in `app` from the live generation.
pub trait StatusSource: Send + Sync {
    /// Ready when listening, a config is loaded, not draining, and some node of some database is
    /// usable.
    fn readiness(&self) -> Readiness;
    /// The `/status` document.
    fn status_json(&self) -> serde_json::Value;
    /// Called before each `/metrics` render: publish values read from elsewhere (node health, role,
    /// lag from the topology).
    fn refresh(&self, metrics: &Metrics);
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("no complete request within {IO_TIMEOUT:?}")]
    Timeout,
    #[error("malformed request line")]
    Malformed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
}

/// Parses the request line of a complete request head.
pub fn parse_request(head: &[u8]) -> Result<Request<'_>, HttpError> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(HttpError::Malformed)?;
    let line = std::str::from_utf8(head.get(..line_end).ok_or(HttpError::Malformed)?)
        .map_err(|_| HttpError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(HttpError::Malformed);
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request { method, path })
}

/// A response ready to write.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            _ => "Service Unavailable",
        };
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Answers one request.
pub fn respond(request: &Request<'_>, metrics: &Metrics, source: &dyn StatusSource) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    match request.path {
        "/metrics" => {
            source.refresh(metrics);
            Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics.render(),
            }
        }
        "/live" => Response::text(200, "ok\n"),
        "/ready" => match source.readiness() {
            Readiness::Ready => Response::text(200, "ready\n"),
            Readiness::NotReady(reason) => Response::text(503, format!("not ready: {reason}\n")),
        },
        "/status" => Response {
            status: 200,
            content_type: "application/json",
            body: source.status_json().to_string(),
        },
        _ => Response::text(404, "not found\n"),
    }
}

/// Serves HTTP on `listener` until `stop` fires; connections in progress are finished (they are
/// bounded by [`IO_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    source: Arc<dyn StatusSource>,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP endpoints listening (/metrics /live /ready /status)");
    }
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                let metrics = metrics.clone();
                let source = source.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = handle(tcp, &metrics, source.as_ref()).await {
                        tracing::debug!(error = %e, "HTTP request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Reads one request head, answers it, closes.
async fn handle(
    mut tcp: TcpStream,
    metrics: &Metrics,
    source: &dyn StatusSource,
) -> Result<(), HttpError> {
    let response = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut tcp)).await {
        Err(_) => Err(HttpError::Timeout),
        Ok(head) => head,
    };
    let (bytes, result) = match response {
        Ok(head) => match parse_request(&head) {
            Ok(request) => {
                let head_only = request.method == "HEAD";
                (respond(&request, metrics, source).encode(head_only), Ok(()))
            }
            Err(e) => (Response::text(400, "bad request\n").encode(false), Err(e)),
        },
        Err(HttpError::TooLarge) => (
            Response::text(431, "request too large\n").encode(false),
            Err(HttpError::TooLarge),
        ),
        Err(HttpError::Timeout) => (
            Response::text(408, "timeout\n").encode(false),
            Err(HttpError::Timeout),
        ),
        Err(e) => return Err(e),
    };
    tokio::time::timeout(IO_TIMEOUT, async {
        tcp.write_all(&bytes).await?;
        tcp.shutdown().await
    })
    .await
    .map_err(|_| HttpError::Timeout)??;
    result
}

/// Reads until the blank line that ends the head, at most [`MAX_REQUEST`] bytes. A body, if any,
/// is ignored (only GET and HEAD are served).
async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, HttpError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Malformed);
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_REQUEST {
            return Err(HttpError::TooLarge);
        }
    }
}

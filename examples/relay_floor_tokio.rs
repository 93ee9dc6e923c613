//! relay_floor_tokio: the least CPU a relay on tokio spends per message here, to set beside
//! `benches/relay_floor.c` (the same relay on bare epoll) and pgsluice.
//!
//! One single-threaded tokio runtime, as a pgsluice session worker; one task per client that
//! copies bytes between the client and its own server connection in both directions (two futures
//! polled by the task through `select!`, as pgsluice's relay drives both directions from one task;
//! it ends when either side closes). No parsing, no
//! pooling, no auth (Postgres's trust auth passes through). Its CPU above `floor` is what tokio's
//! per-wake-up machinery costs; pgsluice's CPU above it is pgsluice's own relay work.
//!
//! `benches/pgbench_compare.sh` builds and runs it as target `floor-tokio`.
//! Usage: relay_floor_tokio LISTEN_PORT UPSTREAM_PORT   (both on 127.0.0.1)

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Read sizes as pgsluice's relay uses them: small client requests, larger server results.
const CLIENT_READ: usize = 8 * 1024;
const SERVER_READ: usize = 16 * 1024;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: relay_floor_tokio LISTEN_PORT UPSTREAM_PORT");
        std::process::exit(2);
    };
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("port {s}: {e}")))
    };
    let (listen, upstream) = (port(&listen)?, port(&upstream)?);
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: u16, upstream: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", listen)).await?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream).await {
                eprintln!("relay_floor_tokio: {e}");
            }
        });
    }
}

/// Copies both directions until either side closes.
async fn relay(client: TcpStream, upstream: u16) -> io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        biased;
        r = copy(client_read, server_write, CLIENT_READ) => r,
        r = copy(server_read, client_write, SERVER_READ) => r,
    }
}

/// One read, then one write of what it got, until the source closes.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    size: usize,
) -> io::Result<()> {
    let mut buf = vec![0u8; size];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

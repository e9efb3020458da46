//! TCP listeners: accept, choose an endpoint, splice bytes both ways.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::proxy::{Ctx, Slot};

/// Most bytes buffered per direction of a connection: large enough to keep a fast stream
/// busy, small enough that ten thousand streams stay under a gigabyte.
const COPY_BUFFER: usize = 64 * 1024;
/// Bytes buffered per direction at first.
const FIRST_BUFFER: usize = 4 * 1024;
/// How long a connect to an endpoint may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a listener whose accepted connections already have Nagle off: Linux copies
/// TCP_NODELAY from the listener, which saves a system call per connection.
pub(crate) async fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

/// Accepts on `listener` until `stop` fires; connections already running are not touched.
pub(crate) async fn serve(
    listener: TcpListener,
    slot: Arc<Slot>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    // One wait for the stop signal for the listener's life, not one per accepted connection.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // No yield per accept: it costs a reactor poll (epoll_wait) per connection
                    // and measured worse for p99 too; tokio's cooperative budget already makes
                    // a long burst of accepts give way to the connections in flight.
                    accept(stream, peer, &slot, &ctx);
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(listener = %slot.key, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped.as_mut() => return,
        }
    }
}

fn accept(client: TcpStream, peer: SocketAddr, slot: &Arc<Slot>, ctx: &Arc<Ctx>) {
    let current = slot.current.load_full();
    if !current.frontend.admits(peer.ip()) {
        debug!(listener = %slot.key, %peer, "source not in loadBalancerSourceRanges; refused");
        refuse(&client);
        return;
    }
    let Some(endpoint) = slot.balancer.pick(&current.frontend, peer.ip(), Instant::now()) else {
        current.counters.no_endpoint.inc();
        refuse(&client);
        return;
    };
    let slot = Arc::clone(slot);
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let _active = ctx.track(&current.counters);
        let upstream = match connect(endpoint).await {
            Ok(upstream) => upstream,
            Err(err) => {
                current.counters.connect_errors.inc();
                debug!(listener = %slot.key, %endpoint, %err, "connect failed; trying another endpoint");
                let retry = slot.balancer.other(&current.frontend, endpoint);
                match retry {
                    Some(other) => match connect(other).await {
                        Ok(upstream) => upstream,
                        Err(_) => return refuse(&client),
                    },
                    None => return refuse(&client),
                }
            }
        };
        splice(client, upstream, &current.counters).await;
    });
}

async fn connect(endpoint: SocketAddr) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn splice(mut client: TcpStream, mut upstream: TcpStream, counters: &crate::metrics::Counters) {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let ended = AtomicBool::new(false);
    let outcome = tokio::try_join!(
        pipe(client_read, upstream_write, &ended),
        pipe(upstream_read, client_write, &ended)
    );
    match outcome {
        Ok((to_endpoint, to_client)) => {
            counters.to_endpoints.inc_by(to_endpoint);
            counters.to_clients.inc_by(to_client);
        }
        Err(err) => debug!(%err, "connection ended with an error"),
    }
}

/// Copies one direction until end of stream, then half-closes the other side; the second
/// direction to end skips that, since dropping both sockets right after sends the FIN.
///
/// The buffer starts small and doubles while reads fill it, up to `COPY_BUFFER`: short
/// request/response connections never pay for (or zero) 64 KiB, long streams get it.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    ended: &AtomicBool,
) -> io::Result<u64> {
    let mut buf = BytesMut::with_capacity(FIRST_BUFFER);
    let mut total = 0u64;
    loop {
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            if !ended.swap(true, Ordering::AcqRel) {
                to.shutdown().await?;
            }
            return Ok(total);
        }
        to.write_all(&buf).await?;
        total += n as u64;
        let grow = n == buf.capacity() && buf.capacity() < COPY_BUFFER;
        let capacity = buf.capacity();
        buf.clear();
        if grow {
            buf.reserve(capacity * 2);
        }
    }
}

/// Closes with a TCP RST, so that the client learns at once that nobody will answer, as
/// kube-proxy's reject rules make it learn.
fn refuse(client: &TcpStream) {
    let _ = socket2::SockRef::from(client).set_linger(Some(Duration::ZERO));
}

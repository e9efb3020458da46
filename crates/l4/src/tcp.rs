//! TCP listeners: accept, choose an endpoint, splice bytes both ways.

use std::future::{Future, poll_fn};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socket2::{Domain, Protocol as SocketProtocol, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
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
    SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

/// Accepts on `listener` until its task is aborted; connections already running are not
/// touched.
pub(crate) async fn serve(listener: TcpListener, slot: Arc<Slot>, ctx: Arc<Ctx>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                // No yield per accept: it costs a reactor poll (epoll_wait) per connection and
                // measured worse for p99 too; tokio's cooperative budget already makes a long
                // burst of accepts give way to the connections in flight.
                accept(client, peer, &slot, &ctx);
            }
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(listener = %slot.key, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn accept(mut client: TcpStream, peer: SocketAddr, slot: &Arc<Slot>, ctx: &Arc<Ctx>) {
    let current = slot.current.load_full();
    if !current.frontend.admits(peer.ip()) {
        debug!(listener = %slot.key, %peer, "source not in loadBalancerSourceRanges; refused");
        refuse(&client);
        return;
    }
    let Some(endpoint) = slot.balancer.pick(&current.frontend, peer.ip(), Instant::now()) else {
        current.counters(&slot.key, &ctx.metrics).no_endpoint.inc();
        refuse(&client);
        return;
    };
    let slot = Arc::clone(slot);
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let counters = current.counters(&slot.key, &ctx.metrics);
        let _active = ctx.track(counters);
        let mut first = BytesMut::new();
        if let Err(err) = read_waiting(&mut client, &mut first).await {
            debug!(listener = %slot.key, %peer, %err, "reading the client failed before the connect");
            return;
        }
        let upstream = match connect(endpoint, &first).await {
            Ok(upstream) => upstream,
            Err(err) => {
                counters.connect_errors.inc();
                debug!(listener = %slot.key, %endpoint, %err, "connect failed; trying another endpoint");
                let retry = slot.balancer.other(&current.frontend, endpoint);
                match retry {
                    Some(other) => match connect(other, &first).await {
                        Ok(upstream) => upstream,
                        Err(_) => return refuse(&client),
                    },
                    None => return refuse(&client),
                }
            }
        };
        counters.to_endpoints.inc_by(first.len() as u64);
        splice(client, upstream, first, counters).await;
    });
}

/// Reads what the client has sent already, without waiting: a client that speaks first
/// (HTTP, TLS) has usually sent by the time it is accepted, and those bytes then go out with
/// the connect, the way HAProxy does it, instead of a turn of the event loop later.
///
/// One poll of an ordinary read: tokio takes an accepted socket as readable until a read
/// says otherwise, and a short read marks it drained, so the copy loop that follows waits
/// for the next event instead of trying the socket again.
async fn read_waiting(client: &mut TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    buf.reserve(FIRST_BUFFER);
    let mut read = pin!(client.read_buf(buf));
    match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(result) => result.map(drop),
        Poll::Pending => Ok(()),
    }
}

/// Connects to `endpoint` and writes `first` to it.
///
/// A connect to a local or nearby endpoint has usually completed by the time the system call
/// returns, so `first` is written at once, before tokio registers the socket (a socket it
/// has just registered counts as not writable until the reactor's next turn). A refused
/// connect shows up as that write's error. Only a write that would block waits, and only
/// then is the timeout armed. With nothing to write, the connect is confirmed the usual
/// way: writable, then `SO_ERROR`.
async fn connect(endpoint: SocketAddr, first: &[u8]) -> io::Result<TcpStream> {
    let socket =
        Socket::new(Domain::for_address(endpoint), Type::STREAM.nonblocking(), Some(SocketProtocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&endpoint.into()) {
        Err(err) if err.raw_os_error() != Some(libc::EINPROGRESS) => return Err(err),
        _ => {}
    }
    let sent = match first {
        [] => 0,
        _ => match (&socket).write(first) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Err(err) => return Err(err),
        },
    };
    let mut stream = TcpStream::from_std(socket.into())?;
    if sent > 0 && sent == first.len() {
        return Ok(stream);
    }
    let established = async {
        if first.is_empty() {
            stream.writable().await?;
            return stream.take_error()?.map_or(Ok(()), Err);
        }
        stream.write_all(&first[sent..]).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, established)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(stream)
}

/// Copies both ways until both ends are done; `first` (already written to the endpoint)
/// becomes the client-to-endpoint buffer.
async fn splice(
    mut client: TcpStream,
    mut upstream: TcpStream,
    first: BytesMut,
    counters: &crate::metrics::Counters,
) {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let ended = AtomicBool::new(false);
    let outcome = tokio::try_join!(
        pipe(client_read, upstream_write, first, &ended),
        pipe(upstream_read, client_write, BytesMut::new(), &ended)
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
async fn pipe<R, W>(mut from: R, mut to: W, mut buf: BytesMut, ended: &AtomicBool) -> io::Result<u64>
where
    R: AsyncRead + AsRef<TcpStream> + Unpin,
    W: AsyncWrite + AsRef<TcpStream> + Unpin,
{
    buf.clear();
    buf.reserve(FIRST_BUFFER);
    let mut total = 0u64;
    loop {
        let fin = fin_queued(from.as_ref()).await?;
        let room = buf.capacity();
        let n = from.read_buf(&mut buf).await?;
        // A read that leaves room after the FIN was queued has taken everything up to it: the
        // end of stream is known without the read that would return 0.
        let at_end = n == 0 || (fin && n < room);
        if at_end && n > 0 {
            write_all_before_fin(to.as_ref(), &buf).await?;
        } else if n > 0 {
            to.write_all(&buf).await?;
        }
        total += n as u64;
        if at_end {
            if !ended.swap(true, Ordering::AcqRel) {
                to.shutdown().await?;
            }
            return Ok(total);
        }
        let grow = n == room && room < COPY_BUFFER;
        buf.clear();
        if grow {
            buf.reserve(room * 2);
        }
    }
}

/// Waits until `stream` is readable and says whether the peer's FIN is already queued behind
/// what there is to read, found without a system call: tokio keeps a socket's closed state
/// from the event that made it readable. A reset (an error) does not count: its read must
/// report it.
async fn fin_queued(stream: &TcpStream) -> io::Result<bool> {
    let ready = stream.ready(Interest::READABLE).await?;
    Ok(ready.is_read_closed() && !ready.is_error())
}

/// Writes the last bytes before a FIN with `MSG_MORE`: the kernel holds them, and the
/// shutdown that follows sends them and the FIN in one segment. A request/response
/// connection then costs one segment fewer, and its processing on both sides.
async fn write_all_before_fin(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            SockRef::from(stream).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
        });
        match sent {
            Ok(n) => buf = &buf[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Closes with a TCP RST, so that the client learns at once that nobody will answer, as
/// kube-proxy's reject rules make it learn.
fn refuse(client: &TcpStream) {
    let _ = SockRef::from(client).set_linger(Some(Duration::ZERO));
}

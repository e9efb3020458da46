//! TCP listeners: accept, choose an endpoint, splice bytes both ways.

use std::future::poll_fn;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use portico_accept::{Gate, Seat};
use socket2::{Domain, Protocol as SocketProtocol, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::idle::Registered;
use crate::listener::{Ctx, Current, Slot};

/// Most bytes buffered per direction of a connection: large enough to keep a fast stream
/// busy, small enough that ten thousand streams stay under a gigabyte.
const COPY_BUFFER: usize = 64 * 1024;
/// Bytes one read takes into a buffer on the stack. A direction moves to a heap buffer only
/// when a read fills this (a stream), or when the other side cannot take all of it at once.
const STACK_READ: usize = 4 * 1024;
/// How long a connect to an endpoint may take before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a listener whose accepted connections already have Nagle off: Linux copies
/// TCP_NODELAY from the listener, which saves a system call per connection.
pub(crate) async fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

/// Accepts on `listener`, within the bounds of its `gate`, until its task is aborted;
/// connections already running are not touched.
pub(crate) async fn serve(listener: TcpListener, gate: Gate, slot: Arc<Slot>, ctx: Arc<Ctx>) {
    loop {
        // No yield per accept: it costs a reactor poll (epoll_wait) per connection and
        // measured worse for p99 too; tokio's cooperative budget already makes a long burst of
        // accepts give way to the connections in flight.
        let (client, peer, seat) = gate.accept(&listener).await;
        accept(client, peer, seat, &slot, &ctx);
    }
}

fn accept(client: TcpStream, peer: SocketAddr, seat: Seat, slot: &Arc<Slot>, ctx: &Arc<Ctx>) {
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
    let key = ctx.connections.key();
    let moved = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(relay(
        client,
        seat,
        peer,
        endpoint,
        current,
        Arc::clone(slot),
        Arc::clone(ctx),
        key,
        Arc::clone(&moved),
    ));
    ctx.connections.add(key, moved, task.abort_handle());
}

/// Connects the accepted `client` to `endpoint` (or another, if it refuses) and splices the
/// two; the connection is followed as `key` by the idle sweeps, its reads counted in `moved`.
#[allow(clippy::too_many_arguments)]
async fn relay(
    mut client: TcpStream,
    _seat: Seat,
    peer: SocketAddr,
    endpoint: SocketAddr,
    current: Arc<Current>,
    slot: Arc<Slot>,
    ctx: Arc<Ctx>,
    key: u64,
    moved: Arc<AtomicU64>,
) {
    let _followed = Registered { connections: &ctx.connections, key };
    {
        let counters = current.counters(&slot.key, &ctx.metrics);
        let _active = ctx.track(counters);
        let first = match read_waiting(&mut client).await {
            Ok(first) => first,
            Err(err) => {
                debug!(listener = %slot.key, %peer, %err, "reading the client failed before the connect");
                return;
            }
        };
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
        drop(first);
        splice(client, upstream, counters, &moved).await;
    }
}

/// Reads what the client has sent already, without waiting: a client that speaks first
/// (HTTP, TLS) has usually sent by the time it is accepted, and those bytes then go out with
/// the connect, the way HAProxy does it, instead of a turn of the event loop later.
///
/// tokio takes an accepted socket as readable until a read says otherwise, so this is one
/// system call. The bytes are kept in a buffer of their own size only until the connect is
/// done (a retry on another endpoint sends them again).
async fn read_waiting(client: &mut TcpStream) -> io::Result<Vec<u8>> {
    poll_fn(|cx| match read_on_stack(client, cx, |bytes| Ok(bytes.to_vec())) {
        Poll::Pending => Poll::Ready(Ok(Vec::new())),
        done => done,
    })
    .await
}

/// Polls one read of up to `STACK_READ` bytes into a buffer on the stack and hands them to
/// `take`. The buffer lives only during the poll, so it is no part of the task that waits.
/// tokio's read marks a socket drained after a short read, so the next wait is for a new
/// event rather than for a read that would fail.
fn read_on_stack<R, T>(
    from: &mut R,
    cx: &mut std::task::Context<'_>,
    take: impl FnOnce(&[u8]) -> io::Result<T>,
) -> Poll<io::Result<T>>
where
    R: AsyncRead + Unpin,
{
    let mut chunk = [MaybeUninit::uninit(); STACK_READ];
    let mut read = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(from).poll_read(cx, &mut read))?;
    Poll::Ready(take(read.filled()))
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

/// Copies both ways until both ends are done, counting reads in `moved` for the idle sweeps.
async fn splice(
    mut client: TcpStream,
    mut upstream: TcpStream,
    counters: &crate::metrics::Counters,
    moved: &AtomicU64,
) {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let ended = AtomicBool::new(false);
    let outcome = tokio::try_join!(
        pipe(client_read, upstream_write, &ended, moved),
        pipe(upstream_read, client_write, &ended, moved)
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
/// Messages that fit in `STACK_READ` are read into a buffer on the stack and sent from there,
/// so a connection waiting between them (a pooled database or keep-alive connection) holds no
/// buffer at all. Only what the other side cannot take at once is kept on the heap. A read
/// that fills the stack buffer starts a heap buffer that doubles while reads fill it, up to
/// `COPY_BUFFER`; once reads are small again it is freed.
async fn pipe<R, W>(mut from: R, to: W, ended: &AtomicBool, activity: &AtomicU64) -> io::Result<u64>
where
    R: AsyncRead + AsRef<TcpStream> + Unpin,
    W: AsRef<TcpStream>,
{
    let to = to.as_ref();
    let mut buf = BytesMut::new();
    let mut room = STACK_READ;
    let mut total = 0u64;
    loop {
        let fin = fin_queued(from.as_ref()).await?;
        let (n, at_end) = if room == STACK_READ {
            poll_fn(|cx| {
                read_on_stack(&mut from, cx, |bytes| {
                    let at_end = ends_stream(bytes.len(), fin, STACK_READ);
                    let sent = send_now(to, bytes, at_end)?;
                    buf.extend_from_slice(&bytes[sent..]);
                    Ok((bytes.len(), at_end))
                })
            })
            .await?
        } else {
            buf.reserve(room);
            let space = buf.capacity();
            let n = from.read_buf(&mut buf).await?;
            (n, ends_stream(n, fin, space))
        };
        send_all(to, &buf, at_end).await?;
        total += n as u64;
        activity.fetch_add(1, Ordering::Relaxed);
        if at_end {
            if !ended.swap(true, Ordering::AcqRel) {
                SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
            }
            return Ok(total);
        }
        buf.clear();
        if n >= room && room < COPY_BUFFER {
            room *= 2;
        } else if n <= STACK_READ && room > STACK_READ {
            room = STACK_READ;
        }
        if room == STACK_READ && buf.capacity() > 0 {
            buf = BytesMut::new();
        }
    }
}

/// Whether a read of `n` bytes into `room` ends the stream: it returned 0, or it left room
/// after the FIN was queued, so it took everything up to the FIN without the read that would
/// return 0.
fn ends_stream(n: usize, fin: bool, room: usize) -> bool {
    n == 0 || (fin && n < room)
}

/// Waits until `stream` is readable and says whether the peer's FIN is already queued behind
/// what there is to read, found without a system call: tokio keeps a socket's closed state
/// from the event that made it readable. A reset (an error) does not count: its read must
/// report it.
async fn fin_queued(stream: &TcpStream) -> io::Result<bool> {
    let ready = stream.ready(Interest::READABLE).await?;
    Ok(ready.is_read_closed() && !ready.is_error())
}

/// Sends what the socket takes now, without waiting. Bytes before a FIN go with `MSG_MORE`:
/// the kernel holds them, and the shutdown that follows sends them and the FIN in one
/// segment, which saves a request/response connection one segment and its processing on
/// both sides.
fn send_now(stream: &TcpStream, mut bytes: &[u8], before_fin: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if before_fin { libc::MSG_MORE } else { 0 };
    let len = bytes.len();
    while !bytes.is_empty() {
        match stream.try_io(Interest::WRITABLE, || SockRef::from(stream).send_with_flags(bytes, flags)) {
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    Ok(len - bytes.len())
}

/// Sends all of `bytes`, waiting for room as needed.
async fn send_all(stream: &TcpStream, mut bytes: &[u8], before_fin: bool) -> io::Result<()> {
    loop {
        bytes = &bytes[send_now(stream, bytes, before_fin)?..];
        if bytes.is_empty() {
            return Ok(());
        }
        stream.writable().await?;
    }
}

/// Closes with a TCP RST, so that the client learns at once that nobody will answer, as
/// kube-proxy's reject rules make it learn.
fn refuse(client: &TcpStream) {
    let _ = SockRef::from(client).set_linger(Some(Duration::ZERO));
}

//! Connections to endpoints: pooled HTTP/1.1 keep-alive connections, or one shared HTTP/2
//! connection, with or without TLS, per endpoint.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_plan::annotations::BackendProtocol;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::{ClientBody, Watched};

/// Request bodies sent to endpoints.
pub(crate) type UpstreamBody = Watched<ClientBody>;

/// Idle HTTP/1.1 connections kept per endpoint (for each of the two HTTP/1.1 paths).
const MAX_IDLE: usize = 256;
/// How long an idle connection is kept: shorter than the usual server keep-alive timeouts,
/// so that a server rarely closes a connection just as it is reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// One endpoint of a backend, as spoken to with one protocol.
pub(crate) struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How it is spoken to.
    pub protocol: BackendProtocol,
    /// Requests being served now (for least-loaded choice).
    pub in_flight: AtomicUsize,
    idle: Mutex<Vec<(http1::SendRequest<UpstreamBody>, Instant)>>,
    shared: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
    /// Idle plain connections of the HTTP/1.1 path (`crate::h1`).
    streams: Mutex<Vec<(TcpStream, Instant)>>,
}

/// A connection ready for one request.
pub(crate) enum Sender {
    /// A plain socket to an HTTP/1.1 endpoint (`crate::raw`); `reused` if it came from the pool.
    Plain { stream: TcpStream, reused: bool },
    /// HTTP/1.1: one request at a time; back to the pool once the response has been read.
    Http1(http1::SendRequest<UpstreamBody>),
    /// HTTP/2: multiplexed, shared by all requests to the endpoint.
    Http2(http2::SendRequest<UpstreamBody>),
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, protocol: BackendProtocol) -> Self {
        Endpoint {
            addr,
            protocol,
            in_flight: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
            streams: Mutex::new(Vec::new()),
        }
    }

    /// An idle plain connection that is still open at `now`, if there is one.
    pub(crate) fn idle_stream(&self, now: Instant) -> Option<TcpStream> {
        loop {
            let (stream, since) = self.streams.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && still_open(&stream) {
                return Some(stream);
            }
        }
    }

    /// A plain connection for one request: an idle one unless `fresh` is asked, else a new one
    /// within `timeout`. The flag says whether it came from the pool.
    pub(crate) async fn plain_stream(
        &self,
        fresh: bool,
        now: Instant,
        timeout: Duration,
    ) -> io::Result<(TcpStream, bool)> {
        if !fresh && let Some(stream) = self.idle_stream(now) {
            return Ok((stream, true));
        }
        Ok((within(timeout, open(self.addr)).await?, false))
    }

    /// Keeps a plain connection whose exchange ended cleanly at `now` for the next request.
    pub(crate) fn keep_stream(&self, stream: TcpStream, now: Instant) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.len() < MAX_IDLE {
            streams.push((stream, now));
        }
    }

    /// A pooled connection if one is open; otherwise `None` (connect with [`Self::connect`]).
    pub(crate) async fn pooled(&self) -> Option<Sender> {
        if is_h2(self.protocol) {
            let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            return shared.as_ref().filter(|s| s.is_ready()).cloned().map(Sender::Http2);
        }
        loop {
            let popped = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let (mut sender, since) = popped?;
            if sender.is_closed() || since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            // A connection checked in as its response ended may still be settling: wait.
            if sender.ready().await.is_ok() {
                return Some(Sender::Http1(sender));
            }
        }
    }

    /// Gives a connection whose response has been read in full back to the pool.
    pub(crate) fn check_in(&self, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    /// Opens a new connection (TLS and HTTP handshakes included) within `timeout`.
    pub(crate) async fn connect(
        &self,
        tls: &tokio_rustls::TlsConnector,
        timeout: Duration,
    ) -> io::Result<Sender> {
        let connecting = async {
            let stream = open(self.addr).await?;
            match self.protocol {
                BackendProtocol::Http | BackendProtocol::Grpc => self.handshake(stream).await,
                BackendProtocol::Https | BackendProtocol::Grpcs => {
                    let name = ServerName::IpAddress(self.addr.ip().into());
                    let stream = tls.connect(name, stream).await?;
                    self.handshake(stream).await
                }
            }
        };
        within(timeout, connecting).await
    }

    async fn handshake<I>(&self, io: I) -> io::Result<Sender>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let addr = self.addr;
        if is_h2(self.protocol) {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io)
                .await
                .map_err(io::Error::other)?;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    debug!(endpoint = %addr, %err, "HTTP/2 connection to endpoint ended");
                }
            });
            *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
            return Ok(Sender::Http2(sender));
        }
        let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                debug!(endpoint = %addr, %err, "connection to endpoint ended");
            }
        });
        Ok(Sender::Http1(sender))
    }
}

/// A TCP connection to `addr`, Nagle off (requests and answers are written whole).
async fn open(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs a connect step, failing with `TimedOut` after `timeout`.
async fn within<T>(timeout: Duration, step: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Whether an idle connection is still usable: nothing, not even its end, has arrived on it.
/// The readiness the reactor already holds answers without a system call in the usual case.
fn still_open(stream: &TcpStream) -> bool {
    match stream.poll_read_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        // Readiness can be left over from the last answer: a read settles it.
        Poll::Ready(Ok(())) => {
            matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Whether requests go to the endpoint over HTTP/2.
pub(crate) fn is_h2(protocol: BackendProtocol) -> bool {
    matches!(protocol, BackendProtocol::Grpc | BackendProtocol::Grpcs)
}

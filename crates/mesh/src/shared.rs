//! What the proxy's loops share: the table of the Plan served, the certificates, the pooled
//! tunnels, the metrics and the drain; and what one served Pod's loops know of it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portico_accept::Limits;
use portico_dataplane::drain::Watch;
use portico_kernel::capture::ProxyPorts;
use portico_model::ObjectKey;
use portico_plan::authz::{Attributes, HttpAttributes, Verdict};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::certs::Certificates;
use crate::metrics::{ConnectionLabels, DenialLabels, Metrics, UNKNOWN};
use crate::netns::PodNetns;
use crate::table::{Local, MeshTable};
use crate::tunnel::{HANDSHAKE, Pool};

/// Shared by every loop of the proxy.
pub struct Shared {
    /// The ports the proxy listens on in each Pod.
    pub ports: ProxyPorts,
    /// The table of the Plan served.
    pub table: ArcSwap<MeshTable>,
    /// The certificates, once the CA is loaded.
    pub certs: OnceLock<Certificates>,
    /// Pooled tunnels to other proxies.
    pub pool: Pool,
    /// Metric handles.
    pub metrics: Metrics,
    /// The drain signal.
    pub drain: Watch,
    /// How many connections the proxy's listeners hold, in all and each.
    pub limits: Arc<Limits>,
    /// How long a relayed connection may pass no byte before it is closed.
    pub idle: Duration,
}

/// One served Pod, as its loops know it.
#[derive(Debug)]
pub struct Served {
    /// The Pod.
    pub pod: ObjectKey,
    /// Its network namespace.
    pub netns: PodNetns,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// What is known of a client before its first request.
#[derive(Clone, Debug)]
pub struct Source {
    /// Its SPIFFE ID, none over plaintext.
    pub principal: Option<String>,
    /// Its identity's namespace.
    pub namespace: Option<String>,
    /// Its address.
    pub ip: IpAddr,
}

impl Shared {
    /// The Pod as the table served now has it; `None` once it is no longer meshed here.
    pub fn local(&self, pod: &ObjectKey) -> Option<Arc<Local>> {
        self.table.load().local.get(pod).cloned()
    }

    /// The certificates; an error until the CA is loaded.
    pub fn certs(&self) -> io::Result<&Certificates> {
        self.certs.get().ok_or_else(|| io::Error::other("the mesh CA is not loaded"))
    }
}

/// Passes bytes both ways until both sides are done, or until neither has sent a byte for
/// the idle time, then records the connection.
pub async fn relay<A, B>(shared: &Shared, client: &mut A, server: &mut B, labels: &ConnectionLabels)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    shared.metrics.opened.get_or_create(labels).inc();
    let _hold = shared.drain.hold();
    let last = AtomicU64::new(0);
    let mut client = Active { inner: client, started, last: &last };
    let mut server = Active { inner: server, started, last: &last };
    let idle = async {
        loop {
            let quiet_since = started + Duration::from_millis(last.load(Ordering::Relaxed));
            if quiet_since.elapsed() >= shared.idle {
                return;
            }
            tokio::time::sleep_until((quiet_since + shared.idle).into()).await;
        }
    };
    let (sent, received, outcome) = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut server) => match copied {
            Ok((sent, received)) => (sent, received, "closed"),
            Err(_) => (0, 0, "reset"),
        },
        () = idle => (0, 0, "idle"),
    };
    shared.metrics.ended(labels, sent, received, started.elapsed(), outcome);
}

/// A stream that notes when it last read a byte, in milliseconds since `started`.
struct Active<'a, S> {
    inner: &'a mut S,
    started: Instant,
    last: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = u64::try_from(this.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A client stream whose bytes are counted both ways: read (sent by the client) and written
/// (received by it).
pub struct Tally<S> {
    inner: S,
    /// Bytes read from and written to the client.
    pub counts: Arc<[AtomicU64; 2]>,
}

impl<S> Tally<S> {
    /// Counts `inner`'s bytes.
    pub fn new(inner: S) -> Self {
        Tally { inner, counts: Arc::default() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tally<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.counts[0].fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tally<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.counts[1].fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts on `listener` within the proxy's bounds until the drain, handing each connection to
/// `handle` on a task of its own that keeps its seat. Accepting that fails (descriptors run
/// out) is retried after a pause, not given up.
pub async fn accept<F, Fut>(shared: &Shared, listener: TcpListener, name: String, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let gate = shared.limits.gate(name);
    let drained = shared.drain.signaled();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => return,
            (stream, from, seat) = gate.accept(&listener) => {
                // Answers go out in several writes (TLS records, HTTP/2 frames): Nagle's
                // algorithm would hold each later one for the peer's delayed ACK.
                let _ = stream.set_nodelay(true);
                let handled = handle(stream, from);
                tokio::spawn(async move {
                    handled.await;
                    drop(seat);
                });
            }
        }
    }
}

/// A connection to `to` from the Pod's namespace, within [`HANDSHAKE`].
pub async fn connect(served: &Served, to: SocketAddr) -> io::Result<TcpStream> {
    match tokio::time::timeout(HANDSHAKE, served.netns.connect(to)).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {to} took over {HANDSHAKE:?}"),
        )),
    }
}

/// Whether the policies of the Pod let `source` reach `target` (with `http`, the request read
/// from the connection); a denial is counted and logged.
pub fn authorized(
    shared: &Shared,
    served: &Served,
    local: &Local,
    source: &Source,
    target: SocketAddr,
    http: Option<HttpAttributes<'_>>,
) -> bool {
    let attributes = Attributes {
        source_principal: source.principal.as_deref(),
        source_namespace: source.namespace.as_deref(),
        source_ip: source.ip,
        destination_ip: target.ip(),
        destination_port: target.port(),
        http,
    };
    let Verdict::Deny { by } = local.policy.evaluate(&attributes) else { return true };
    let policy = by.map_or_else(|| "no ALLOW policy matched".to_owned(), |key| key.to_string());
    let principal = source.principal.as_deref().unwrap_or(UNKNOWN);
    let labels = DenialLabels {
        destination_workload: served.pod.to_string(),
        source_principal: principal.to_owned(),
        policy: policy.clone(),
    };
    shared.metrics.denied.get_or_create(&labels).inc();
    tracing::info!(
        target: "portico::mesh::access",
        pod = %served.pod,
        source = %source.ip,
        source_principal = principal,
        destination = %target,
        policy,
        "denied"
    );
    false
}

/// Closes `stream` with a reset, as a refused connection is answered.
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

//! What the proxy's loops share: the table of the Plan served, the certificates, the pooled
//! tunnels, the metrics and the drain; and what one served Pod's loops know of it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portico_dataplane::drain::Watch;
use portico_kernel::capture::ProxyPorts;
use portico_model::ObjectKey;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::certs::Certificates;
use crate::metrics::{ConnectionLabels, Metrics};
use crate::netns::PodNetns;
use crate::table::{Local, MeshTable};
use crate::tunnel::Pool;

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

impl Shared {
    /// The Pod as the table served now has it; `None` once it is no longer meshed here.
    pub fn local(&self, pod: &ObjectKey) -> Option<Local> {
        self.table.load().local.get(pod).cloned()
    }

    /// The certificates; an error until the CA is loaded.
    pub fn certs(&self) -> io::Result<&Certificates> {
        self.certs.get().ok_or_else(|| io::Error::other("the mesh CA is not loaded"))
    }
}

/// Passes bytes both ways until both sides are done, then records the connection.
pub async fn relay<A, B>(shared: &Shared, client: &mut A, server: &mut B, labels: &ConnectionLabels)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    shared.metrics.opened.get_or_create(labels).inc();
    let _hold = shared.drain.hold();
    let (sent, received, outcome) = match tokio::io::copy_bidirectional(client, server).await {
        Ok((sent, received)) => (sent, received, "closed"),
        Err(_) => (0, 0, "reset"),
    };
    shared.metrics.ended(labels, sent, received, started.elapsed(), outcome);
}

/// Accepts on `listener` until the drain, handing each connection to `handle` on a task of its
/// own. Accepting that fails (descriptors run out) is retried after a pause, not given up.
pub async fn accept<F, Fut>(shared: &Shared, listener: TcpListener, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let drained = shared.drain.signaled();
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    tokio::spawn(handle(stream, from));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mesh: accepting failed; trying again shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Closes `stream` with a reset, as a refused connection is answered.
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

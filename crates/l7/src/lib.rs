//! The Ingress data plane: HTTP and HTTPS listeners that route requests by host and path to
//! the ready endpoints of Services, as the Plan's [`IngressPlan`](portico_plan::IngressPlan)
//! says. A new Plan swaps the route table and certificates atomically: requests and
//! connections already open carry on with what they started with.
#![forbid(unsafe_code)]

mod alarm;
mod balance;
mod body;
mod chunked;
mod codec;
mod decision;
mod exchange;
mod failure;
mod fields;
mod fnv;
mod h1;
mod hyper_engine;
pub mod metrics;
mod raw;
mod request;
mod rewind;
mod shared;
mod spare;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portico_accept::{Gate, Limits, Seat};
use portico_dataplane::drain::{Hold, Watch};
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_model::Diagnostic;
use portico_plan::Plan;
use portico_tls::{Alpn, CertResolver, Served, client, server};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info};

pub use metrics::{AccessLog, Metrics};
pub use portico_tls::TlsError;

use crate::rewind::Rewind;
use crate::shared::{Conn, Shared, Table};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the Ingress listeners.
#[derive(Clone)]
pub struct Options {
    /// Longest wait for a request's headers, idle keep-alive time included (slowloris).
    pub header_timeout: Duration,
    /// Where access log lines go; `None` for no access log.
    pub access_log: Option<Arc<AccessLog>>,
    /// Which engine reads HTTP/1.x connections.
    pub http1: Http1Engine,
    /// Most client connections in all.
    pub connections: usize,
    /// Most client connections of one listener.
    pub connections_per_listener: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            header_timeout: Duration::from_secs(60),
            access_log: None,
            http1: Http1Engine::default(),
            connections: 4096,
            connections_per_listener: 2048,
        }
    }
}

/// The engine that reads HTTP/1.x connections. Both apply the same request rules, route with
/// the same decision and forward through the same exchange; a differential test holds them to
/// the same answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Http1Engine {
    /// Portico's own: each head parsed once and checked, ordinary requests relayed on raw
    /// sockets.
    #[default]
    Portico,
    /// hyper's HTTP/1 server for every request: the library path, slower; the reference the
    /// Portico engine is tested against, and a fallback.
    Hyper,
}

/// What can go wrong applying a Plan.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A listener could not be opened (address taken, not local).
    #[error("Ingress {scheme} listener {addr}: {source}")]
    Bind {
        /// `HTTP` or `HTTPS`.
        scheme: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate did not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

struct Listener {
    addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
}

/// The Ingress listeners and what they route to.
pub struct IngressProxy {
    shared: Arc<Shared>,
    certs: Arc<CertResolver>,
    acceptor: TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    listeners: Mutex<Vec<Listener>>,
    header_timeout: Duration,
    http1: Http1Engine,
    /// Shutdown: listeners close and idle connections end when it is signalled.
    drain: Watch,
    /// A Plan was applied.
    applied: AtomicBool,
    limits: Arc<Limits>,
}

impl IngressProxy {
    /// A proxy with nothing to serve yet; it stops accepting, and finishes what its
    /// connections started, once `drain` is signalled.
    pub fn new(options: Options, metrics: Arc<Metrics>, drain: Watch) -> Result<Self, IngressError> {
        let certs = Arc::new(CertResolver::new()?);
        let acceptor = TlsAcceptor::from(server::ingress_config(Arc::clone(&certs))?);
        let tls_http = TlsConnector::from(client::endpoint_config(Alpn::Http1)?);
        let tls_h2 = TlsConnector::from(client::endpoint_config(Alpn::H2)?);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout)
            .keep_alive(true)
            .max_buf_size(fields::MAX_HEAD);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let unrouted = Arc::new(metrics.route("", ""));
        let limits = Limits::new(
            "Ingress",
            options.connections,
            options.connections_per_listener,
            metrics.accept.clone(),
        );
        let shared = Arc::new(Shared {
            table: ArcSwapOption::empty(),
            routes: std::sync::RwLock::default(),
            unrouted,
            tls_http,
            tls_h2,
            metrics,
            access_log: options.access_log,
            rotation: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            ids: std::hash::RandomState::new(),
        });
        Ok(IngressProxy {
            shared,
            certs,
            acceptor,
            builder: Arc::new(builder),
            listeners: Mutex::new(Vec::new()),
            header_timeout: options.header_timeout,
            http1: options.http1,
            drain,
            applied: AtomicBool::new(false),
            limits,
        })
    }

    /// Serves `plan` from the next request on. Listeners open with the first Plan, move when
    /// their address changes, and a bind that failed is tried again with the next; open
    /// connections are never cut.
    async fn serve_plan(&self, plan: &Arc<Plan>) -> Vec<IngressError> {
        let previous = self.shared.table.load_full();
        let table = Table::new(Arc::clone(plan), previous.as_deref(), &self.shared);
        self.shared.table.store(Some(Arc::new(table)));
        let served = plan.ingress.certificates.iter().map(|c| Served {
            secret: &c.secret,
            hosts: &c.hosts,
            cert_pem: &c.cert_pem,
            key_pem: &c.key_pem,
        });
        let mut errors: Vec<IngressError> =
            self.certs.apply(served).into_iter().map(IngressError::from).collect();
        // An ingress controller listens from the start, and answers 404 while nothing matches.
        let wanted = [(plan.ingress_addresses.http, false), (plan.ingress_addresses.https, true)];
        let mut listeners = self.listeners.lock().await;
        self.applied.store(true, Ordering::Release);
        if self.drain.is_draining() {
            return errors;
        }
        listeners.retain(|l| {
            let keep = wanted.contains(&(l.addr, l.tls));
            if !keep {
                info!(listener = %l.addr, "closing Ingress listener");
                let _ = l.stop.send(true);
            }
            keep
        });
        for (addr, tls) in wanted {
            if listeners.iter().any(|l| l.addr == addr && l.tls == tls) {
                continue;
            }
            let scheme = if tls { "HTTPS" } else { "HTTP" };
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let (stop, stopped) = watch::channel(false);
                    let acceptor = tls.then(|| self.acceptor.clone());
                    let gate = self.limits.gate(format_args!("{scheme} {addr}"));
                    tokio::spawn(self.accept_loop(listener, gate, acceptor, stopped));
                    info!(listener = %addr, scheme, "Ingress listener open");
                    listeners.push(Listener { addr, tls, stop });
                }
                Err(source) => errors.push(IngressError::Bind { scheme, addr, source }),
            }
        }
        errors
    }

    fn accept_loop(
        &self,
        listener: TcpListener,
        gate: Gate,
        acceptor: Option<TlsAcceptor>,
        mut stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        let builder = Arc::clone(&self.builder);
        let (header_timeout, http1) = (self.header_timeout, self.http1);
        let drain = self.drain.clone();
        async move {
            // One wait for each signal for the listener's life, not one per connection.
            let stopped = stop.changed();
            let drained = drain.signaled();
            tokio::pin!(stopped, drained);
            loop {
                tokio::select! {
                    biased;
                    (stream, peer, seat) = gate.accept(&listener) => {
                        let task = Connection {
                            shared: Arc::clone(&shared),
                            header_timeout,
                            http1,
                            builder: Arc::clone(&builder),
                            drain: drain.clone(),
                            _open: OpenGuard::new(&drain, &shared),
                            _seat: seat,
                        };
                        tokio::spawn(task.run(stream, peer, acceptor.clone()));
                    }
                    _ = stopped.as_mut() => return,
                    () = drained.as_mut() => return,
                }
            }
        }
    }
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    header_timeout: Duration,
    http1: Http1Engine,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Watch,
    _open: OpenGuard,
    _seat: Seat,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, acceptor: Option<TlsAcceptor>) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let conn = Arc::new(Conn::new(peer, local, acceptor.is_some()));
        match acceptor {
            None => self.serve_http1(stream, conn).await,
            // Boxed: a TLS session and its handshake are kilobytes, and in line they would size
            // every connection's task, plain HTTP ones too, for as long as each stays open.
            Some(acceptor) => Box::pin(self.serve_tls(stream, conn, acceptor)).await,
        }
    }

    /// Completes the TLS handshake, then serves HTTP/2 or the HTTP/1.1 path by ALPN.
    async fn serve_tls(self, stream: TcpStream, conn: Arc<Conn>, acceptor: TlsAcceptor) {
        let peer = conn.peer;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Box::pin(self.serve(TokioIo::new(tls), conn)).await;
            }
            Ok(Ok(tls)) => self.serve_http1(tls, conn).await,
            Ok(Err(err)) => debug!(%peer, %err, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// Serves HTTP/1.x with the chosen engine; hyper takes over an HTTP/2 preface.
    async fn serve_http1<I>(self, io: I, conn: Arc<Conn>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.http1 == Http1Engine::Hyper {
            return Box::pin(self.serve(TokioIo::new(io), conn)).await;
        }
        let client = h1::Client::new(
            io,
            Arc::clone(&conn),
            Arc::clone(&self.shared),
            self.header_timeout,
            self.drain.clone(),
        );
        if let h1::Served::Handoff(io, read) = client.serve().await {
            // Boxed, like the HTTP/2 branch of `serve_tls`: hyper's connection state is kilobytes, and
            // in line it would size every connection's task, copied whole as it is spawned.
            Box::pin(self.serve(TokioIo::new(Rewind::new(read, io)), conn)).await;
        }
    }

    async fn serve<I>(self, io: I, conn: Arc<Conn>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (shared, info) = (Arc::clone(&self.shared), Arc::clone(&conn));
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            hyper_engine::handle(req, Arc::clone(&info), Arc::clone(&shared))
        });
        let connection = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    debug!(peer = %conn.peer, %err, "client connection ended");
                }
            }
            () = self.drain.signaled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// Counts a client connection as open while it lives, and holds shutdown until it ends.
struct OpenGuard {
    shared: Arc<Shared>,
    _drain: Hold,
}

impl OpenGuard {
    fn new(drain: &Watch, shared: &Arc<Shared>) -> Self {
        shared.metrics.connections.inc();
        OpenGuard { shared: Arc::clone(shared), _drain: drain.hold() }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.shared.metrics.connections.dec();
    }
}

impl DataPlane for IngressProxy {
    fn name(&self) -> &'static str {
        "ingress"
    }

    /// Serves the Plan's Ingress rules and certificates; listeners that cannot be opened and
    /// certificates that do not load are errors.
    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(async move {
            let errors = self.serve_plan(plan).await;
            errors.iter().map(|err| Diagnostic::error(err.to_string())).collect()
        })
    }

    fn readiness(&self) -> Readiness {
        Readiness::after_first_plan(self.applied.load(Ordering::Acquire))
    }
}

//! The running proxy: one task per listener, reconciled with each new table.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use portico_accept::Limits;
use portico_dataplane::drain::{Hold, Watch};
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_model::Diagnostic;
use portico_plan::{Plan, Protocol};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tracing::{debug, info};

use crate::balance::Balancer;
use crate::idle::{self, Connections};
use crate::metrics::{Counters, FrontendLabels, Metrics};
use crate::table::{Frontend, ListenKey, Table, frontends};
use crate::{tcp, udp};
use prometheus_client::metrics::gauge::Gauge;

/// How long a UDP flow lives without an answer, as conntrack keeps an unreplied UDP entry.
const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);
/// How long a TCP connection lives without a byte either way: conntrack's timeout for an
/// established TCP connection, which kube-proxy sets (24 h).
const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(24 * 3600);
/// UDP flows one listener keeps; past it, the one idle longest makes room.
const DEFAULT_UDP_FLOWS_PER_LISTENER: usize = 4096;
/// UDP flows all listeners keep together (each holds a socket, a file descriptor).
const DEFAULT_UDP_FLOWS: usize = 16384;
/// TCP connections one listener holds; past it, new ones wait in the listen queue.
const DEFAULT_TCP_CONNECTIONS_PER_LISTENER: usize = 8192;
/// TCP connections all listeners hold together (each holds two descriptors).
const DEFAULT_TCP_CONNECTIONS: usize = 16384;
/// How often a listener that could not be opened is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Tunables of the proxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a UDP flow lives without an answer from its endpoint.
    pub udp_idle: Duration,
    /// How long a TCP connection lives without a byte either way.
    pub tcp_idle: Duration,
    /// Most UDP flows one listener keeps.
    pub udp_flows_per_listener: usize,
    /// Most UDP flows in all.
    pub udp_flows: usize,
    /// Most TCP connections one listener holds.
    pub tcp_connections_per_listener: usize,
    /// Most TCP connections in all.
    pub tcp_connections: usize,
    /// The node served: its NodePorts, and the HostPorts of its Pods.
    pub node: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            udp_idle: DEFAULT_UDP_IDLE,
            tcp_idle: DEFAULT_TCP_IDLE,
            udp_flows_per_listener: DEFAULT_UDP_FLOWS_PER_LISTENER,
            udp_flows: DEFAULT_UDP_FLOWS,
            tcp_connections_per_listener: DEFAULT_TCP_CONNECTIONS_PER_LISTENER,
            tcp_connections: DEFAULT_TCP_CONNECTIONS,
            node: "localhost".to_owned(),
        }
    }
}

/// A listener that could not be opened (its port is taken, the address is not local, ...).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {key} for {method} {service}: {source}")]
pub struct BindError {
    /// The listener.
    pub key: ListenKey,
    /// What wanted it.
    pub method: &'static str,
    /// `namespace/name` of the Service (or Pod, for a HostPort).
    pub service: String,
    /// Why not.
    #[source]
    pub source: io::Error,
}

/// What a listener serves right now; swapped whole on reload.
pub(crate) struct Current {
    pub(crate) frontend: Frontend,
    counters: std::sync::OnceLock<Counters>,
}

impl Current {
    /// This frontend's metrics, made on first use: a listener nobody connects to has none.
    pub(crate) fn counters(&self, key: &ListenKey, metrics: &Metrics) -> &Counters {
        self.counters.get_or_init(|| metrics.counters(&FrontendLabels::new(key, &self.frontend)))
    }
}

/// One listener's lasting state.
pub(crate) struct Slot {
    pub(crate) key: ListenKey,
    pub(crate) current: ArcSwap<Current>,
    pub(crate) balancer: Balancer,
}

/// What every connection task shares.
pub(crate) struct Ctx {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) options: Options,
    active: AtomicUsize,
    /// UDP flows of all listeners.
    pub(crate) flows: AtomicUsize,
    /// Open TCP connections, swept for idle ones.
    pub(crate) connections: Arc<Connections>,
    /// The bounds on TCP connections.
    pub(crate) limits: Arc<Limits>,
    /// Shutdown: listeners close when it is signalled, and it waits for open connections.
    drain: Watch,
}

/// Counts one open connection or flow while alive, and holds shutdown until it ends.
pub(crate) struct Active<'a> {
    ctx: &'a Ctx,
    gauge: Gauge,
    _drain: Hold,
}

impl Ctx {
    pub(crate) fn track(&self, counters: &Counters) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        counters.active.inc();
        counters.accepted.inc();
        Active { ctx: self, gauge: counters.active.clone(), _drain: self.drain.hold() }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.ctx.active.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Counts one UDP flow towards the proxy's bound while alive.
pub(crate) struct FlowCount<'a>(&'a Ctx);

impl Ctx {
    pub(crate) fn count_flow(&self) -> FlowCount<'_> {
        self.flows.fetch_add(1, Ordering::Relaxed);
        FlowCount(self)
    }
}

impl Drop for FlowCount<'_> {
    fn drop(&mut self) {
        self.0.flows.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Running {
    slot: Arc<Slot>,
    stop: AbortHandle,
}

/// The listeners of the table last applied.
#[derive(Default)]
struct Listeners {
    running: BTreeMap<ListenKey, Running>,
    /// Those that could not be opened: tried again every [`RETRY_EVERY`] until they open or
    /// leave the table.
    waiting: BTreeMap<ListenKey, Arc<Current>>,
    /// How many listeners share each set of metric labels (a NodePort's, on every node
    /// address): a set's series go with its last listener.
    labels: HashMap<FrontendLabels, usize>,
    /// A task is trying the waiting listeners again.
    retrying: bool,
    /// The tasks that close idle TCP connections, and the listeners on the drain signal, run.
    started: bool,
}

/// What the proxy and its retry task share.
struct Inner {
    ctx: Arc<Ctx>,
    listeners: Mutex<Listeners>,
    /// A table was applied.
    applied: AtomicBool,
}

/// The userspace proxy: listeners for every frontend of the table last applied.
pub struct L4Proxy {
    inner: Arc<Inner>,
}

impl L4Proxy {
    /// A proxy with no listeners yet; its listeners close when `drain` is signalled.
    pub fn new(options: Options, metrics: Arc<Metrics>, drain: Watch) -> Self {
        let limits = Limits::new(
            "L4",
            options.tcp_connections,
            options.tcp_connections_per_listener,
            metrics.accept.clone(),
        );
        let ctx = Arc::new(Ctx {
            limits,
            metrics,
            options,
            active: AtomicUsize::new(0),
            flows: AtomicUsize::new(0),
            connections: Arc::default(),
            drain,
        });
        Self { inner: Arc::new(Inner { ctx, listeners: Mutex::default(), applied: AtomicBool::new(false) }) }
    }

    /// Makes the listeners match `table`: new ones open, gone ones close (their established
    /// connections carry on), the rest switch to their new frontend at once. Listeners that
    /// cannot be opened are returned, and tried again every second until they open; everything
    /// else is served.
    pub async fn apply_table(&self, table: &Table) -> Vec<BindError> {
        let ctx = &self.inner.ctx;
        let mut listeners = self.inner.listeners.lock().await;
        if ctx.drain.is_draining() {
            return Vec::new();
        }
        if !std::mem::replace(&mut listeners.started, true) {
            tokio::spawn(idle::sweep(Arc::downgrade(&ctx.connections), ctx.options.tcp_idle));
            tokio::spawn(close_on_drain(Arc::downgrade(&self.inner), ctx.drain.signaled()));
        }
        self.inner.applied.store(true, Ordering::Release);
        let Listeners { running, waiting, labels, .. } = &mut *listeners;
        running.retain(|key, r| {
            let keep = table.frontends.contains_key(key);
            if !keep {
                debug!(listener = %key, "closing listener");
                r.stop.abort();
                release(labels, &FrontendLabels::new(key, &r.slot.current.load().frontend), &ctx.metrics);
            }
            keep
        });
        waiting.retain(|key, _| table.frontends.contains_key(key));
        let mut errors = Vec::new();
        for (key, frontend) in &table.frontends {
            let current = Arc::new(Current { frontend: frontend.clone(), counters: Default::default() });
            let fresh = FrontendLabels::new(key, frontend);
            if let Some(r) = running.get(key) {
                let old = FrontendLabels::new(key, &r.slot.current.load().frontend);
                if old != fresh {
                    *labels.entry(fresh).or_default() += 1;
                    release(labels, &old, &ctx.metrics);
                }
                r.slot.current.store(current);
                continue;
            }
            match open(*key, &current, ctx).await {
                Ok(r) => {
                    debug!(listener = %key, service = %frontend.service, method = frontend.method, "listening");
                    *labels.entry(fresh).or_default() += 1;
                    waiting.remove(key);
                    running.insert(*key, r);
                }
                Err(source) => {
                    waiting.insert(*key, current);
                    errors.push(BindError {
                        key: *key,
                        method: frontend.method,
                        service: frontend.service.clone(),
                        source,
                    });
                }
            }
        }
        info!(listeners = running.len(), failed = errors.len(), "L4 listeners applied");
        if !listeners.waiting.is_empty() && !listeners.retrying {
            listeners.retrying = true;
            tokio::spawn(retry(Arc::downgrade(&self.inner)));
        }
        errors
    }

    /// Open connections and UDP flows.
    pub fn active(&self) -> usize {
        self.inner.ctx.active.load(Ordering::Relaxed)
    }
}

impl DataPlane for L4Proxy {
    fn name(&self) -> &'static str {
        "l4"
    }

    /// Serves the listeners [`frontends`] derives from `plan` for this node; listeners two
    /// frontends want are warnings, those that cannot be opened errors.
    fn apply<'a>(&'a self, plan: &'a Arc<Plan>) -> Applying<'a> {
        Box::pin(async move {
            let table = frontends(plan, &self.inner.ctx.options.node);
            let mut diagnostics: Vec<Diagnostic> = table
                .conflicts
                .iter()
                .map(|(key, conflict)| Diagnostic::warning(format!("{key}: {conflict}; not served")))
                .collect();
            let errors = self.apply_table(&table).await;
            diagnostics.extend(errors.iter().map(|err| Diagnostic::error(err.to_string())));
            diagnostics
        })
    }

    fn readiness(&self) -> Readiness {
        Readiness::after_first_plan(self.inner.applied.load(Ordering::Acquire))
    }
}

/// Closes every listener when the drain is signalled (UDP flows end with theirs); open TCP
/// connections hold the drain until they end.
async fn close_on_drain(inner: Weak<Inner>, signaled: impl Future<Output = ()>) {
    signaled.await;
    let Some(inner) = inner.upgrade() else { return };
    let mut listeners = inner.listeners.lock().await;
    listeners.waiting.clear();
    for (_, r) in std::mem::take(&mut listeners.running) {
        r.stop.abort();
    }
}

/// Opens the listener at `key` for `current` and starts serving it.
async fn open(key: ListenKey, current: &Arc<Current>, ctx: &Arc<Ctx>) -> io::Result<Running> {
    let slot =
        Arc::new(Slot { key, current: ArcSwap::new(Arc::clone(current)), balancer: Balancer::default() });
    let task = match key.protocol {
        Protocol::Tcp => {
            let gate = ctx.limits.gate(key);
            tokio::spawn(tcp::serve(tcp::listen(key.addr).await?, gate, Arc::clone(&slot), Arc::clone(ctx)))
        }
        Protocol::Udp => {
            tokio::spawn(udp::serve(UdpSocket::bind(key.addr).await?, Arc::clone(&slot), Arc::clone(ctx)))
        }
        Protocol::Sctp => return Err(io::Error::new(io::ErrorKind::Unsupported, "SCTP is not proxied")),
    };
    Ok(Running { slot, stop: task.abort_handle() })
}

/// One listener fewer with these metric labels; its series go when none is left.
fn release(labels: &mut HashMap<FrontendLabels, usize>, gone: &FrontendLabels, metrics: &Metrics) {
    if let Some(count) = labels.get_mut(gone) {
        *count -= 1;
        if *count == 0 {
            labels.remove(gone);
            metrics.remove(gone);
        }
    }
}

/// Tries the listeners that could not be opened again, every [`RETRY_EVERY`], until none
/// waits or the proxy is gone.
async fn retry(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut listeners = inner.listeners.lock().await;
        let waiting = std::mem::take(&mut listeners.waiting);
        for (key, current) in waiting {
            match open(key, &current, &inner.ctx).await {
                Ok(r) => {
                    info!(listener = %key, service = %current.frontend.service, "listening, after waiting for the address");
                    *listeners.labels.entry(FrontendLabels::new(&key, &current.frontend)).or_default() += 1;
                    listeners.running.insert(key, r);
                }
                Err(err) => {
                    debug!(listener = %key, %err, "still cannot listen");
                    listeners.waiting.insert(key, current);
                }
            }
        }
        if listeners.waiting.is_empty() {
            listeners.retrying = false;
            return;
        }
    }
}

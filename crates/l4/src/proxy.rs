//! The running proxy: one task per listener, reconciled with each new table.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use portico_accept::Limits;
use portico_dataplane::drain::Watch;
use portico_dataplane::{Applying, DataPlane, Readiness};
use portico_model::Diagnostic;
use portico_plan::{Plan, Protocol};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tracing::{debug, info};

use crate::balance::Balancer;
use crate::idle;
use crate::listener::{Ctx, Current, Slot};
use crate::metrics::{FrontendLabels, Metrics};
use crate::options::Options;
use crate::table::{ListenKey, Table, frontends};
use crate::{tcp, udp};

/// How often a listener that could not be opened is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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
            let current = Arc::new(Current::new(frontend.clone()));
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

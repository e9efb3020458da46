//! What a listener and its connections share: the frontend it serves now, its balancer, and
//! the proxy-wide context (metrics, settings, bounds, the drain) each connection counts in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use portico_accept::Limits;
use portico_dataplane::drain::{Hold, Watch};
use prometheus_client::metrics::gauge::Gauge;

use crate::balance::Balancer;
use crate::idle::Connections;
use crate::metrics::{Counters, FrontendLabels, Metrics};
use crate::options::Options;
use crate::table::{Frontend, ListenKey};

/// What a listener serves right now; swapped whole on reload.
pub(crate) struct Current {
    pub(crate) frontend: Frontend,
    counters: std::sync::OnceLock<Counters>,
}

impl Current {
    /// Serving `frontend`, with no metrics yet.
    pub(crate) fn new(frontend: Frontend) -> Self {
        Current { frontend, counters: std::sync::OnceLock::new() }
    }

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
    pub(crate) active: AtomicUsize,
    /// UDP flows of all listeners.
    pub(crate) flows: AtomicUsize,
    /// Open TCP connections, swept for idle ones.
    pub(crate) connections: Arc<Connections>,
    /// The bounds on TCP connections.
    pub(crate) limits: Arc<Limits>,
    /// Shutdown: listeners close when it is signalled, and it waits for open connections.
    pub(crate) drain: Watch,
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

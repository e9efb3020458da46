//! The running proxy: one task per listener, reconciled with each new table.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use portico_plan::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;
use tracing::{debug, info};

use crate::balance::Balancer;
use crate::metrics::{Counters, FrontendLabels, Metrics};
use crate::table::{Frontend, ListenKey, Table};
use crate::{tcp, udp};
use prometheus_client::metrics::gauge::Gauge;

/// How long a UDP flow lives without an answer, as conntrack keeps an unreplied UDP entry.
const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);

/// Tunables of the proxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long a UDP flow lives without an answer from its endpoint.
    pub udp_idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { udp_idle: DEFAULT_UDP_IDLE }
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
}

/// Counts one open connection or flow while alive.
pub(crate) struct Active<'a> {
    ctx: &'a Ctx,
    gauge: Gauge,
}

impl Ctx {
    pub(crate) fn track(&self, counters: &Counters) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        counters.active.inc();
        counters.accepted.inc();
        Active { ctx: self, gauge: counters.active.clone() }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.ctx.active.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

struct Running {
    slot: Arc<Slot>,
    stop: AbortHandle,
}

/// The userspace proxy: listeners for every frontend of the table last applied.
pub struct L4Proxy {
    ctx: Arc<Ctx>,
    running: Mutex<BTreeMap<ListenKey, Running>>,
}

impl L4Proxy {
    /// A proxy with no listeners yet.
    pub fn new(options: Options, metrics: Arc<Metrics>) -> Self {
        Self {
            ctx: Arc::new(Ctx { metrics, options, active: AtomicUsize::new(0) }),
            running: Mutex::default(),
        }
    }

    /// Makes the listeners match `table`: new ones open, gone ones close (their established
    /// connections carry on), the rest switch to their new frontend at once. Listeners that
    /// cannot be opened are returned; everything else is served.
    pub async fn apply(&self, table: &Table) -> Vec<BindError> {
        let mut running = self.running.lock().await;
        running.retain(|key, r| {
            let keep = table.frontends.contains_key(key);
            if !keep {
                debug!(listener = %key, "closing listener");
                r.stop.abort();
            }
            keep
        });
        let mut errors = Vec::new();
        for (key, frontend) in &table.frontends {
            let current = Arc::new(Current { frontend: frontend.clone(), counters: Default::default() });
            if let Some(r) = running.get(key) {
                r.slot.current.store(current);
                continue;
            }
            let slot =
                Arc::new(Slot { key: *key, current: ArcSwap::new(current), balancer: Balancer::default() });
            let ctx = Arc::clone(&self.ctx);
            let opened = match key.protocol {
                Protocol::Tcp => tcp::listen(key.addr)
                    .await
                    .map(|l| tokio::spawn(tcp::serve(l, Arc::clone(&slot), ctx)).abort_handle()),
                Protocol::Udp => UdpSocket::bind(key.addr)
                    .await
                    .map(|s| tokio::spawn(udp::serve(s, Arc::clone(&slot), ctx)).abort_handle()),
                Protocol::Sctp => Err(io::Error::new(io::ErrorKind::Unsupported, "SCTP is not proxied")),
            };
            match opened {
                Ok(stop) => {
                    debug!(listener = %key, service = %frontend.service, method = frontend.method, "listening");
                    running.insert(*key, Running { slot, stop });
                }
                Err(source) => errors.push(BindError {
                    key: *key,
                    method: frontend.method,
                    service: frontend.service.clone(),
                    source,
                }),
            }
        }
        info!(listeners = running.len(), failed = errors.len(), "L4 listeners applied");
        errors
    }

    /// Open connections and UDP flows.
    pub fn active(&self) -> usize {
        self.ctx.active.load(Ordering::Relaxed)
    }

    /// Closes every listener, then waits up to `grace` for open connections to finish.
    pub async fn shutdown(&self, grace: Duration) {
        for (_, r) in std::mem::take(&mut *self.running.lock().await) {
            r.stop.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

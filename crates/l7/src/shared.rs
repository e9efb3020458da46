//! What every connection of the Ingress shares: the route table of the Plan served (with each
//! route's metrics, kept across reloads), the metrics, the access log and the connectors
//! towards endpoints; and what one connection knows of itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwapOption;
use portico_model::ObjectKey;
use portico_plan::Plan;
use portico_plan::annotations::BackendProtocol;
use portico_plan::routes::{BackendRef, HttpListener};

use crate::fnv::FnvMap;
use crate::metrics::{AccessLog, Figures, LogLine, Metrics, RouteMetrics};
use crate::upstream::Endpoint;

/// What every request handler shares.
pub(crate) struct Shared {
    /// `None` until the first Plan.
    pub table: ArcSwapOption<Table>,
    pub tls_http: tokio_rustls::TlsConnector,
    pub tls_h2: tokio_rustls::TlsConnector,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Metric handles by Ingress, then Service, made on first use and kept across tables
    /// (their series live as long as the process anyway).
    pub routes: RwLock<HashMap<ObjectKey, HashMap<ObjectKey, Arc<RouteMetrics>>>>,
    /// Requests no rule matched.
    pub unrouted: Arc<RouteMetrics>,
    /// Drives round-robin.
    pub rotation: AtomicU64,
    /// Drives the choice among weighted backends, and request ids.
    pub sequence: AtomicU64,
    /// Keys made request ids: seeded from the OS at start.
    pub ids: std::hash::RandomState,
}

/// The routes being served and the endpoints behind them.
pub(crate) struct Table {
    pub plan: Arc<Plan>,
    pub endpoints: FnvMap<(SocketAddr, BackendProtocol), Arc<Endpoint>>,
    /// The metric handles of each backend in the Plan, by its address there.
    metrics: FnvMap<usize, Arc<RouteMetrics>>,
}

impl Table {
    /// The table for `plan`, keeping the endpoint state (pools, load) of `previous`.
    pub(crate) fn new(plan: Arc<Plan>, previous: Option<&Table>, shared: &Shared) -> Table {
        let mut endpoints = FnvMap::default();
        let mut metrics = FnvMap::default();
        let routes =
            plan.http_routes.listeners.iter().flat_map(|l| l.hosts.iter()).flat_map(|(_, v)| &v.routes);
        for route in routes {
            let protocol = route.policy.backend_protocol;
            for backend in &route.backends {
                metrics.insert(address(backend), shared.route_metrics(&backend.owner, &backend.service));
                for addr in &backend.endpoints {
                    let key = (*addr, protocol);
                    endpoints.entry(key).or_insert_with(|| {
                        match previous.and_then(|p| p.endpoints.get(&key)) {
                            Some(kept) => Arc::clone(kept),
                            None => Arc::new(Endpoint::new(*addr, protocol)),
                        }
                    });
                }
            }
        }
        Table { plan, endpoints, metrics }
    }

    /// The routes of the listener for plain HTTP (`tls` false) or HTTPS.
    pub(crate) fn listener(&self, tls: bool) -> Option<&HttpListener> {
        self.plan.http_routes.listeners.iter().find(|l| l.tls == tls)
    }

    /// The metric handles of requests sent to `backend`, counted against its owner.
    pub(crate) fn route_metrics(&self, shared: &Shared, backend: &BackendRef) -> Arc<RouteMetrics> {
        match self.metrics.get(&address(backend)) {
            Some(found) => Arc::clone(found),
            None => shared.route_metrics(&backend.owner, &backend.service),
        }
    }
}

/// Where a backend is in its Plan: the same for the Plan's life, and distinct per backend.
fn address(backend: &BackendRef) -> usize {
    std::ptr::from_ref(backend) as usize
}

impl Shared {
    /// The metric handles of an Ingress → Service pair (`ingress` empty: a default backend).
    pub(crate) fn route_metrics(&self, ingress: &ObjectKey, service: &ObjectKey) -> Arc<RouteMetrics> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = routes.get(ingress).and_then(|s| s.get(service)) {
            return Arc::clone(found);
        }
        drop(routes);
        let made = Arc::new(self.metrics.route(&label(ingress), &label(service)));
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let by_service = routes.entry(ingress.clone()).or_default();
        Arc::clone(by_service.entry(service.clone()).or_insert(made))
    }
}

/// `namespace/name`, or empty for no object.
fn label(key: &ObjectKey) -> String {
    if key.name.is_empty() { String::new() } else { key.to_string() }
}

/// The client connection a request came on.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address and the local port as text, made once per connection.
    pub(crate) client_ip: String,
    pub(crate) local_port: String,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        Conn { peer, tls, client_ip: peer.ip().to_string(), local_port: local.port().to_string() }
    }
}

impl Shared {
    pub(crate) fn finish(&self, route: &RouteMetrics, figures: &Figures, log: Option<&LogLine>) {
        route.record(figures.status, figures.duration, figures.bytes_in, figures.bytes_out);
        if let (Some(access_log), Some(line)) = (&self.access_log, log) {
            access_log.write(route, figures, line);
        }
    }
}

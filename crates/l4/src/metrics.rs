//! Prometheus metrics of the L4 proxy, per service, port and method.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::table::{Frontend, ListenKey};

/// Labels of one frontend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabels {
    /// `namespace/name`.
    pub service: String,
    /// Port name or number.
    pub port: String,
    /// TCP or UDP.
    pub protocol: String,
    /// ClusterIP, NodePort, LoadBalancer, ExternalIP or HostPort.
    pub method: String,
}

impl FrontendLabels {
    /// The labels of `frontend` listening at `key`.
    pub fn new(key: &ListenKey, frontend: &Frontend) -> Self {
        Self {
            service: frontend.service.clone(),
            port: frontend.port.clone(),
            protocol: key.protocol.to_string(),
            method: frontend.method.to_string(),
        }
    }
}

/// The proxy's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open TCP connections and UDP flows.
    pub active: Family<FrontendLabels, Gauge>,
    /// TCP connections and UDP flows accepted.
    pub accepted: Family<FrontendLabels, Counter>,
    /// Bytes from clients to endpoints.
    pub bytes_to_endpoints: Family<FrontendLabels, Counter>,
    /// Bytes from endpoints to clients.
    pub bytes_to_clients: Family<FrontendLabels, Counter>,
    /// Connections refused because no endpoint was ready.
    pub no_endpoint: Family<FrontendLabels, Counter>,
    /// Connections whose endpoints could not be reached.
    pub connect_errors: Family<FrontendLabels, Counter>,
    /// UDP datagrams dropped because no flow could be made for them (out of descriptors).
    pub udp_dropped: Family<FrontendLabels, Counter>,
    /// TCP connections that waited for room, and failed accepts.
    pub accept: portico_accept::Counters,
}

impl Metrics {
    /// New metrics registered under `portico_l4_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let mut metrics = Metrics::default();
        let l4 = registry.sub_registry_with_prefix("portico_l4");
        metrics.accept = portico_accept::Counters::register(l4);
        l4.register("active", "Open TCP connections and UDP flows", metrics.active.clone());
        l4.register("accepted", "TCP connections and UDP flows accepted", metrics.accepted.clone());
        l4.register_with_unit(
            "to_endpoints",
            "Bytes from clients to endpoints",
            prometheus_client::registry::Unit::Bytes,
            metrics.bytes_to_endpoints.clone(),
        );
        l4.register_with_unit(
            "to_clients",
            "Bytes from endpoints to clients",
            prometheus_client::registry::Unit::Bytes,
            metrics.bytes_to_clients.clone(),
        );
        l4.register("no_endpoint", "Connections refused: no endpoint ready", metrics.no_endpoint.clone());
        l4.register(
            "connect_errors",
            "Connections whose endpoints could not be reached",
            metrics.connect_errors.clone(),
        );
        l4.register(
            "udp_dropped",
            "UDP datagrams dropped: no flow could be made for them",
            metrics.udp_dropped.clone(),
        );
        metrics
    }

    /// Drops the series of a frontend that is gone.
    pub fn remove(&self, labels: &FrontendLabels) {
        self.active.remove(labels);
        self.accepted.remove(labels);
        self.bytes_to_endpoints.remove(labels);
        self.bytes_to_clients.remove(labels);
        self.no_endpoint.remove(labels);
        self.connect_errors.remove(labels);
        self.udp_dropped.remove(labels);
    }
}

/// One frontend's metrics, looked up once per reload so that a connection only touches
/// atomics.
#[derive(Clone, Debug)]
pub struct Counters {
    /// Open connections and flows.
    pub active: Gauge,
    /// Connections and flows accepted.
    pub accepted: Counter,
    /// Bytes from clients to endpoints.
    pub to_endpoints: Counter,
    /// Bytes from endpoints to clients.
    pub to_clients: Counter,
    /// Refused: no endpoint.
    pub no_endpoint: Counter,
    /// Endpoints unreachable.
    pub connect_errors: Counter,
    /// UDP datagrams without a flow.
    pub udp_dropped: Counter,
}

impl Metrics {
    /// The metrics of the frontend labelled `labels`.
    pub fn counters(&self, labels: &FrontendLabels) -> Counters {
        Counters {
            active: self.active.get_or_create(labels).clone(),
            accepted: self.accepted.get_or_create(labels).clone(),
            to_endpoints: self.bytes_to_endpoints.get_or_create(labels).clone(),
            to_clients: self.bytes_to_clients.get_or_create(labels).clone(),
            no_endpoint: self.no_endpoint.get_or_create(labels).clone(),
            connect_errors: self.connect_errors.get_or_create(labels).clone(),
            udp_dropped: self.udp_dropped.get_or_create(labels).clone(),
        }
    }
}

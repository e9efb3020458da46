//! Prometheus metrics of the Ingress data plane, and the access log.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/name` of the Ingress, empty for requests no rule matched.
    pub ingress: String,
    /// `namespace/name` of the Service, empty when none.
    pub service: String,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub status: String,
}

/// Labels of per-route series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// `namespace/name` of the Service.
    pub service: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// Every series of the Ingress data plane.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    bytes_out: Family<RouteLabels, Counter>,
    bytes_in: Family<RouteLabels, Counter>,
    connect_errors: Family<RouteLabels, Counter>,
    /// Client connections open now.
    pub connections: Gauge,
    /// Client connections that waited for room, and failed accepts.
    pub(crate) accept: portico_accept::Counters,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_out: Family::default(),
            bytes_in: Family::default(),
            connect_errors: Family::default(),
            connections: Gauge::default(),
            accept: portico_accept::Counters::register(registry.sub_registry_with_prefix("portico_ingress")),
        };
        registry.register(
            "portico_ingress_requests",
            "HTTP requests served by the Ingress listeners",
            m.requests.clone(),
        );
        registry.register(
            "portico_ingress_request_duration_seconds",
            "Time from request headers to the end of the response body",
            m.duration.clone(),
        );
        registry.register(
            "portico_ingress_response_bytes",
            "Response body bytes sent to clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "portico_ingress_request_bytes",
            "Request body bytes sent to endpoints",
            m.bytes_in.clone(),
        );
        registry.register(
            "portico_ingress_upstream_connect_errors",
            "Connections to endpoints that failed",
            m.connect_errors.clone(),
        );
        registry.register("portico_ingress_connections", "Client connections open", m.connections.clone());
        m
    }

    /// The series of one Ingress → Service pair, looked up once per route table rather than
    /// once per request.
    pub(crate) fn route(&self, ingress: &str, service: &str) -> RouteMetrics {
        let pair = RouteLabels { ingress: ingress.into(), service: service.into() };
        let class = |status: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    ingress: ingress.into(),
                    service: service.into(),
                    status: status.into(),
                })
                .clone()
        };
        RouteMetrics {
            ingress: ingress.into(),
            service: service.into(),
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(class),
            duration: self.duration.get_or_create(&pair).clone(),
            bytes_out: self.bytes_out.get_or_create(&pair).clone(),
            bytes_in: self.bytes_in.get_or_create(&pair).clone(),
            connect_errors: self.connect_errors.get_or_create(&pair).clone(),
        }
    }
}

/// The series of one Ingress → Service pair, and its names for the access log.
pub(crate) struct RouteMetrics {
    pub ingress: Arc<str>,
    pub service: Arc<str>,
    by_class: [Counter; 5],
    duration: Histogram,
    bytes_out: Counter,
    bytes_in: Counter,
    connect_errors: Counter,
}

impl RouteMetrics {
    /// Counts a failed connect to one of the Service's endpoints.
    pub(crate) fn connect_error(&self) {
        self.connect_errors.inc();
    }

    /// Records a finished request.
    pub(crate) fn record(&self, status: u16, duration: Duration, bytes_in: u64, bytes_out: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(duration.as_secs_f64());
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }
}

/// What the access log says about a request beyond its route and figures; filled in only
/// when there is an access log.
#[derive(Debug, Default)]
pub(crate) struct LogLine {
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub endpoint: String,
    pub request_id: String,
}

/// One request's figures, for the access log.
pub(crate) struct Figures {
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One JSON line per request, buffered and flushed every second (and when dropped).
pub struct AccessLog {
    out: Mutex<std::io::BufWriter<Box<dyn Write + Send>>>,
}

impl AccessLog {
    /// Writes to `out`; flushing is driven by [`AccessLog::flush`].
    pub fn new(out: Box<dyn Write + Send>) -> Arc<Self> {
        Arc::new(AccessLog { out: Mutex::new(std::io::BufWriter::with_capacity(64 * 1024, out)) })
    }

    /// Writes what is buffered.
    pub fn flush(&self) {
        let _ = self.out.lock().unwrap_or_else(PoisonError::into_inner).flush();
    }

    pub(crate) fn write(&self, route: &RouteMetrics, f: &Figures, e: &LogLine) {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let line = serde_json::json!({
            "time": time,
            "client": e.client,
            "method": e.method,
            "host": e.host,
            "path": e.path,
            "status": f.status,
            "ingress": &*route.ingress,
            "service": &*route.service,
            "endpoint": e.endpoint,
            "duration_ms": (f.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "bytes_in": f.bytes_in,
            "bytes_out": f.bytes_out,
            "request_id": e.request_id,
        });
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = serde_json::to_writer(&mut *out, &line);
        let _ = out.write_all(b"\n");
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

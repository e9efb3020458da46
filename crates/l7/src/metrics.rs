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

    /// Counts a connect failure towards a Service's endpoint.
    pub(crate) fn connect_error(&self, ingress: &str, service: &str) {
        self.connect_errors
            .get_or_create(&RouteLabels { ingress: ingress.into(), service: service.into() })
            .inc();
    }

    /// Records a finished request.
    pub(crate) fn record(&self, entry: &AccessEntry) {
        let class = match entry.status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let route = RouteLabels { ingress: entry.ingress.clone(), service: entry.service.clone() };
        self.requests
            .get_or_create(&RequestLabels {
                ingress: entry.ingress.clone(),
                service: entry.service.clone(),
                status: class.into(),
            })
            .inc();
        self.duration.get_or_create(&route).observe(entry.duration.as_secs_f64());
        self.bytes_out.get_or_create(&route).inc_by(entry.bytes_out);
        self.bytes_in.get_or_create(&route).inc_by(entry.bytes_in);
    }
}

/// What the access log says about one request.
#[derive(Debug, Default)]
pub(crate) struct AccessEntry {
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub ingress: String,
    pub service: String,
    pub endpoint: String,
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub request_id: String,
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

    pub(crate) fn write(&self, e: &AccessEntry) {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let line = serde_json::json!({
            "time": time,
            "client": e.client,
            "method": e.method,
            "host": e.host,
            "path": e.path,
            "status": e.status,
            "ingress": e.ingress,
            "service": e.service,
            "endpoint": e.endpoint,
            "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "bytes_in": e.bytes_in,
            "bytes_out": e.bytes_out,
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

//! The mesh's metrics, labelled as Istio's TCP metrics are (reporter, source and destination
//! workload and principal, Service, whether mutual TLS carried it), and its access log: one
//! line per connection when it ends, with both identities.

use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The labels of a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `source` (the client's proxy) or `destination` (the server's).
    pub reporter: &'static str,
    /// `namespace/pod`, or `unknown` for a source outside the mesh.
    pub source_workload: String,
    /// The client's SPIFFE ID, or `unknown` over plaintext.
    pub source_principal: String,
    /// `namespace/pod`, or `unknown` outside the mesh.
    pub destination_workload: String,
    /// The server's SPIFFE ID, or `unknown` outside the mesh.
    pub destination_principal: String,
    /// `namespace/name` of the Service dialled, or `unknown`.
    pub destination_service: String,
    /// `mutual_tls` or `none`.
    pub security_policy: &'static str,
}

/// The labels of a denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// `namespace/pod` of the workload that denied it.
    pub destination_workload: String,
    /// The client's SPIFFE ID, or `unknown` over plaintext.
    pub source_principal: String,
    /// The policy that denied it, or `no ALLOW policy matched`.
    pub policy: String,
}

/// The labels of a failed handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `source` (dialling a peer) or `destination` (answering one).
    pub reporter: &'static str,
    /// `namespace/pod` of the workload on this node.
    pub workload: String,
}

/// The labels of a certificate.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    /// The SPIFFE ID.
    pub identity: String,
}

/// Every handle.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Connections opened.
    pub opened: Family<ConnectionLabels, Counter>,
    /// Connections closed.
    pub closed: Family<ConnectionLabels, Counter>,
    /// Bytes from client to server.
    pub sent: Family<ConnectionLabels, Counter>,
    /// Bytes from server to client.
    pub received: Family<ConnectionLabels, Counter>,
    /// Connections and requests refused by policy.
    pub denied: Family<DenialLabels, Counter>,
    /// TLS handshakes that failed.
    pub handshake_failures: Family<HandshakeLabels, Counter>,
    /// When each held certificate expires (Unix seconds).
    pub certificate_expiry: Family<IdentityLabels, Gauge>,
    /// Certificates issued again before they expired.
    pub renewals: Counter,
}

impl Metrics {
    /// Handles registered in `registry` (under a `portico_mesh` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "tcp_connections_opened",
            "TCP connections opened through the mesh",
            m.opened.clone(),
        );
        registry.register(
            "tcp_connections_closed",
            "TCP connections closed through the mesh",
            m.closed.clone(),
        );
        registry.register("tcp_sent_bytes", "Bytes from client to server through the mesh", m.sent.clone());
        registry.register(
            "tcp_received_bytes",
            "Bytes from server to client through the mesh",
            m.received.clone(),
        );
        registry.register(
            "denied",
            "Connections and requests denied by authorization policy",
            m.denied.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Mutual TLS handshakes between proxies that failed",
            m.handshake_failures.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each workload certificate held expires",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "certificate_renewals",
            "Workload certificates issued again before they expired",
            m.renewals.clone(),
        );
        m
    }

    /// Records a connection that ended after `elapsed`, and logs it.
    pub fn ended(
        &self,
        labels: &ConnectionLabels,
        sent: u64,
        received: u64,
        elapsed: Duration,
        outcome: &str,
    ) {
        self.closed.get_or_create(labels).inc();
        self.sent.get_or_create(labels).inc_by(sent);
        self.received.get_or_create(labels).inc_by(received);
        tracing::info!(
            target: "portico::mesh::access",
            reporter = labels.reporter,
            source = %labels.source_workload,
            source_principal = %labels.source_principal,
            destination = %labels.destination_workload,
            destination_principal = %labels.destination_principal,
            service = %labels.destination_service,
            security = labels.security_policy,
            sent,
            received,
            millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            outcome,
            "connection"
        );
    }

    /// Records when `identity`'s certificate expires.
    pub fn expires(&self, identity: &str, at: SystemTime) {
        let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let labels = IdentityLabels { identity: identity.to_owned() };
        self.certificate_expiry.get_or_create(&labels).set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }
}

/// `unknown`, as Istio labels what it does not know.
pub const UNKNOWN: &str = "unknown";

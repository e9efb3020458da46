//! Prometheus metrics of cluster DNS.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the query counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The question's type: `A`, `AAAA`, `SRV`, …, `other`.
    pub qtype: &'static str,
    /// The response code sent: `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, `FORMERR`, …
    pub rcode: &'static str,
    /// `zone` (answered from the Plan) or `upstream` (forwarded).
    pub source: &'static str,
}

/// Every series of cluster DNS.
pub struct Metrics {
    queries: Family<QueryLabels, Counter>,
    duration: Histogram,
    /// TCP clients that waited for room, and failed accepts.
    pub(crate) accept: portico_accept::Counters,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            queries: Family::default(),
            // 10 µs to ~5 s.
            duration: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            accept: portico_accept::Counters::register(registry.sub_registry_with_prefix("portico_dns_tcp")),
        };
        registry.register(
            "portico_dns_queries",
            "DNS queries answered, by type, response code and source",
            m.queries.clone(),
        );
        registry.register(
            "portico_dns_request_duration_seconds",
            "Time from a DNS query to its answer (upstream time included for forwarded names)",
            m.duration.clone(),
        );
        m
    }

    /// Counts one answered query.
    pub(crate) fn record(&self, query: &[u8], answer: &[u8], source: &'static str, took: Duration) {
        let labels =
            QueryLabels { qtype: qtype_name(question_type(query)), rcode: rcode_name(answer), source };
        self.queries.get_or_create(&labels).inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// The name of a message's first question, read straight from its bytes.
pub(crate) fn question_name(message: &[u8]) -> Option<String> {
    let mut name = String::new();
    let mut at = 12;
    loop {
        let len = usize::from(*message.get(at)?);
        if len == 0 || len >= 0xc0 {
            break;
        }
        name.push_str(&String::from_utf8_lossy(message.get(at + 1..at + 1 + len)?));
        name.push('.');
        at += 1 + len;
    }
    Some(name)
}

/// The type of a message's first question, read straight from its bytes.
pub(crate) fn question_type(message: &[u8]) -> Option<u16> {
    let mut at = 12;
    loop {
        let len = usize::from(*message.get(at)?);
        if len == 0 {
            break;
        }
        // Compression pointers do not occur in questions of queries.
        if len >= 0xc0 {
            return None;
        }
        at += 1 + len;
    }
    let ty = message.get(at + 1..at + 3)?;
    Some(u16::from_be_bytes([ty[0], ty[1]]))
}

pub(crate) fn qtype_name(qtype: Option<u16>) -> &'static str {
    match qtype {
        Some(1) => "A",
        Some(2) => "NS",
        Some(5) => "CNAME",
        Some(6) => "SOA",
        Some(12) => "PTR",
        Some(16) => "TXT",
        Some(28) => "AAAA",
        Some(33) => "SRV",
        Some(255) => "ANY",
        _ => "other",
    }
}

pub(crate) fn rcode_name(answer: &[u8]) -> &'static str {
    match answer.get(3).map(|b| b & 0x0f) {
        Some(0) => "NOERROR",
        Some(1) => "FORMERR",
        Some(2) => "SERVFAIL",
        Some(3) => "NXDOMAIN",
        Some(4) => "NOTIMP",
        Some(5) => "REFUSED",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_type_and_rcode_from_bytes() {
        // Header (id 1, RD), one question: "a.b" type SRV class IN.
        let query = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 1, b'b', 0, 0, 33, 0, 1];
        assert_eq!(question_type(&query), Some(33));
        assert_eq!(question_name(&query).as_deref(), Some("a.b."));
        assert_eq!(qtype_name(question_type(&query)), "SRV");
        assert_eq!(question_type(&query[..15]), None);
        let mut answer = query;
        answer[3] = 0x83;
        assert_eq!(rcode_name(&answer), "NXDOMAIN");
        assert_eq!(rcode_name(&[0, 1]), "other");
    }
}

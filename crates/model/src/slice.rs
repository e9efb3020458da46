//! What Portico keeps of an EndpointSlice once it is accepted: only what the planner reads.
//! A whole `EndpointSlice` object takes about 4 KB for five endpoints; this takes a quarter.

use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::diagnostic::ObjectKey;
use crate::validate::SERVICE_NAME_LABEL;

/// An EndpointSlice, reduced to what the planner reads.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSliceRecord {
    /// Namespace of the slice.
    pub namespace: Box<str>,
    /// Its `kubernetes.io/service-name` label: the Service it belongs to.
    pub service: Option<Box<str>>,
    /// Whether `addressType` is FQDN (such slices are not proxied).
    pub fqdn: bool,
    /// `ports`.
    pub ports: Box<[SlicePort]>,
    /// `endpoints`.
    pub endpoints: Box<[EndpointRecord]>,
}

/// One port of a slice.
#[derive(Clone, Debug, PartialEq)]
pub struct SlicePort {
    /// `name`, "" when unnamed.
    pub name: Box<str>,
    /// `protocol` as written.
    pub protocol: Option<Box<str>>,
    /// `port`.
    pub port: Option<i32>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointRecord {
    /// The first of `addresses`, parsed (Kubernetes uses only the first).
    pub address: Option<IpAddr>,
    /// `conditions.ready`.
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    pub terminating: Option<bool>,
    /// `nodeName`.
    pub node_name: Option<Box<str>>,
    /// `zone`.
    pub zone: Option<Box<str>>,
    /// `hostname`.
    pub hostname: Option<Box<str>>,
    /// `targetRef`, when it names a Pod.
    pub pod: Option<Box<ObjectKey>>,
    /// `hints`; boxed, since few endpoints have them.
    pub hints: Option<Box<SliceHints>>,
}

/// Topology hints of one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceHints {
    /// `forZones[].name`.
    pub for_zones: Vec<String>,
    /// `forNodes[].name`.
    pub for_nodes: Vec<String>,
}

impl From<EndpointSlice> for EndpointSliceRecord {
    fn from(slice: EndpointSlice) -> Self {
        let meta = slice.metadata;
        EndpointSliceRecord {
            namespace: meta.namespace.unwrap_or_else(|| "default".into()).into(),
            service: meta.labels.and_then(|mut l| l.remove(SERVICE_NAME_LABEL)).map(Into::into),
            fqdn: slice.address_type == "FQDN",
            ports: slice
                .ports
                .into_iter()
                .flatten()
                .map(|p| SlicePort {
                    name: p.name.unwrap_or_default().into(),
                    protocol: p.protocol.map(Into::into),
                    port: p.port,
                })
                .collect(),
            endpoints: slice
                .endpoints
                .into_iter()
                .map(|e| {
                    let c = e.conditions.unwrap_or_default();
                    EndpointRecord {
                        address: e.addresses.first().and_then(|a| a.parse().ok()),
                        ready: c.ready,
                        serving: c.serving,
                        terminating: c.terminating,
                        node_name: e.node_name.map(Into::into),
                        zone: e.zone.map(Into::into),
                        hostname: e.hostname.map(Into::into),
                        pod: e.target_ref.filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| {
                            Some(Box::new(ObjectKey::new(r.namespace.unwrap_or_default(), r.name?)))
                        }),
                        hints: e.hints.map(|h| {
                            Box::new(SliceHints {
                                for_zones: h.for_zones.into_iter().flatten().map(|z| z.name).collect(),
                                for_nodes: h.for_nodes.into_iter().flatten().map(|n| n.name).collect(),
                            })
                        }),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::load::parse_text;
    use crate::object::Object;
    use std::path::Path;

    #[test]
    fn keeps_what_the_planner_reads() {
        let yaml = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: ns\n  labels: {kubernetes.io/service-name: web, other: x}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}, {port: 9090}]\nendpoints:\n- addresses: [127.0.0.7, 127.0.0.8]\n  conditions: {ready: false, serving: true, terminating: true}\n  nodeName: n1\n  zone: z1\n  hostname: web-0\n  targetRef: {kind: Pod, namespace: ns, name: web-0}\n  hints: {forZones: [{name: z1}], forNodes: [{name: n1}]}\n- addresses: [not-an-ip]\n  targetRef: {kind: Node, name: n2}\n";
        let (mut objects, diags) = parse_text(Path::new("s.yaml"), yaml);
        assert!(diags.is_empty(), "{diags:?}");
        let Some((_, Object::EndpointSlice(slice))) = objects.pop() else { panic!("no EndpointSlice") };
        let record = EndpointSliceRecord::from(*slice);
        assert_eq!((&*record.namespace, record.service.as_deref(), record.fqdn), ("ns", Some("web"), false));
        let ports: Vec<_> = record.ports.iter().map(|p| (&*p.name, p.protocol.as_deref(), p.port)).collect();
        assert_eq!(ports, vec![("http", Some("TCP"), Some(8080)), ("", None, Some(9090))]);
        let first = &record.endpoints[0];
        assert_eq!(first.address, Some("127.0.0.7".parse().unwrap()));
        assert_eq!((first.ready, first.serving, first.terminating), (Some(false), Some(true), Some(true)));
        assert_eq!((first.node_name.as_deref(), first.zone.as_deref()), (Some("n1"), Some("z1")));
        assert_eq!(first.hostname.as_deref(), Some("web-0"));
        assert_eq!(first.pod.as_deref(), Some(&ObjectKey::new("ns", "web-0")));
        let hints = first.hints.as_deref().unwrap();
        assert_eq!(
            (hints.for_zones.as_slice(), hints.for_nodes.as_slice()),
            (&["z1".to_string()][..], &["n1".to_string()][..])
        );
        let second = &record.endpoints[1];
        assert_eq!((second.address, second.pod.is_none(), second.ready), (None, true, None));
    }
}

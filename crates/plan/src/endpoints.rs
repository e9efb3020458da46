//! Endpoints: read from EndpointSlices, or derived from Pods and a selector as the
//! EndpointSlice controller would, and chosen per traffic scope as kube-proxy does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portico_model::{EndpointSliceRecord, ObjectKey};
use serde::Serialize;

use crate::Protocol;
use crate::pods::PodPlan;
use crate::services::resolve_target_port;

/// One backend address and port of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Backend address.
    pub address: IpAddr,
    /// Backend port (the Service's targetPort resolved for this backend).
    pub port: u16,
    /// Ready for new traffic.
    pub ready: bool,
    /// Able to serve, whether or not terminating.
    pub serving: bool,
    /// Being shut down.
    pub terminating: bool,
    /// Node it runs on, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Box<str>>,
    /// Zone it runs in, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<Box<str>>,
    /// DNS hostname within a headless Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Box<str>>,
    /// The Pod behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<ObjectKey>>,
    /// Topology hints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hints: Option<Box<Hints>>,
}

/// Topology-aware routing hints of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hints {
    /// Zones that should use this endpoint.
    pub for_zones: Vec<String>,
    /// Nodes that should use this endpoint.
    pub for_nodes: Vec<String>,
}

/// Which endpoints a packet may go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Any endpoint in the cluster; hints apply for a node in `zone`.
    Cluster {
        /// The receiving node's name.
        node: &'a str,
        /// The receiving node's zone.
        zone: Option<&'a str>,
    },
    /// Only endpoints on this node.
    Local {
        /// The receiving node's name.
        node: &'a str,
    },
}

/// The endpoints traffic in `scope` goes to: ready ones; if none, those serving and
/// terminating; never those not serving. Hints narrow the choice only when every ready
/// endpoint carries them and the narrowed set is not empty.
pub fn select<'e>(endpoints: &'e [Endpoint], scope: Scope<'_>) -> Vec<&'e Endpoint> {
    let in_scope = |e: &&Endpoint| match scope {
        Scope::Cluster { .. } => true,
        Scope::Local { node } => e.node.as_deref() == Some(node),
    };
    let ready: Vec<&Endpoint> = endpoints.iter().filter(in_scope).filter(|e| e.ready).collect();
    if ready.is_empty() {
        return endpoints.iter().filter(in_scope).filter(|e| e.serving && e.terminating).collect();
    }
    let Scope::Cluster { node, zone } = scope else { return ready };
    if ready.iter().all(|e| e.hints.is_some()) {
        let hinted: Vec<&Endpoint> = ready
            .iter()
            .copied()
            .filter(|e| {
                e.hints.as_ref().is_some_and(|h| {
                    h.for_nodes.iter().any(|n| n == node)
                        || zone.is_some_and(|z| h.for_zones.iter().any(|hz| hz == z))
                })
            })
            .collect();
        if !hinted.is_empty() {
            return hinted;
        }
    }
    ready
}

/// Endpoints of one Service port from its EndpointSlices: slice ports match by name and
/// protocol, as kube-proxy matches them.
pub fn from_slices(slices: &[&EndpointSliceRecord], port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        if slice.fqdn {
            continue;
        }
        for slice_port in slice.ports.iter() {
            if &*slice_port.name != port_name
                || Protocol::parse(slice_port.protocol.as_deref()) != Some(protocol)
            {
                continue;
            }
            let Some(port) = slice_port.port.and_then(|p| u16::try_from(p).ok()) else { continue };
            for e in slice.endpoints.iter() {
                let Some(address) = e.address else {
                    continue;
                };
                if !seen.insert((address, port)) {
                    continue;
                }
                let ready = e.ready.unwrap_or(true);
                out.push(Endpoint {
                    address,
                    port,
                    ready,
                    serving: e.serving.unwrap_or(ready),
                    terminating: e.terminating.unwrap_or(false),
                    node: e.node_name.as_deref().map(Into::into),
                    zone: e.zone.as_deref().map(Into::into),
                    hostname: e.hostname.as_deref().map(Into::into),
                    pod: e.pod.clone(),
                    hints: e.hints.as_ref().map(|h| {
                        Box::new(Hints { for_zones: h.for_zones.clone(), for_nodes: h.for_nodes.clone() })
                    }),
                });
            }
        }
    }
    out.shrink_to_fit();
    out
}

/// Endpoints of one Service port derived from the Pods its selector picks, as the
/// EndpointSlice controller writes them: Pods without the (named) target port are left out.
pub fn from_pods(
    pods: &[&PodPlan],
    service: &ObjectKey,
    port: i32,
    target: Option<&IntOrString>,
    protocol: Protocol,
    publish_not_ready: bool,
) -> Vec<Endpoint> {
    pods.iter()
        .filter_map(|pod| {
            let target_port = resolve_target_port(pod, port, target, protocol)?;
            // The hostname is published only for the Service the Pod names as its subdomain.
            let hostname =
                pod.hostname.clone().filter(|_| pod.subdomain.as_deref() == Some(service.name.as_str()));
            Some(Endpoint {
                address: *pod.ips.first()?,
                port: target_port,
                ready: publish_not_ready || (pod.ready && !pod.terminating),
                serving: publish_not_ready || pod.ready,
                terminating: pod.terminating,
                node: Some(pod.node.as_str().into()),
                zone: pod.zone.as_deref().map(Into::into),
                hostname: hostname.map(Into::into),
                pod: Some(Box::new(pod.key.clone())),
                hints: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(n: u8, ready: bool, serving: bool, terminating: bool, node: &str) -> Endpoint {
        Endpoint {
            address: IpAddr::from([127, 98, 0, n]),
            port: 8080,
            ready,
            serving,
            terminating,
            node: Some(node.into()),
            zone: None,
            hostname: None,
            pod: None,
            hints: None,
        }
    }

    fn addrs(selected: Vec<&Endpoint>) -> Vec<u8> {
        selected
            .iter()
            .map(|e| match e.address {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn ready_first_then_serving_terminating() {
        let all = vec![
            ep(1, true, true, false, "a"),
            ep(2, false, true, true, "a"),
            ep(3, false, false, true, "b"),
        ];
        let cluster = Scope::Cluster { node: "a", zone: None };
        assert_eq!(addrs(select(&all, cluster)), vec![1]);
        let draining = vec![
            ep(2, false, true, true, "a"),
            ep(3, false, false, true, "b"),
            ep(4, false, true, false, "a"),
        ];
        assert_eq!(addrs(select(&draining, cluster)), vec![2]);
    }

    #[test]
    fn local_scope_falls_back_separately() {
        let all = vec![ep(1, true, true, false, "a"), ep(2, false, true, true, "b")];
        assert_eq!(addrs(select(&all, Scope::Local { node: "b" })), vec![2]);
        assert_eq!(addrs(select(&all, Scope::Local { node: "c" })), Vec::<u8>::new());
    }

    #[test]
    fn hints_apply_only_when_every_ready_endpoint_has_them() {
        let mut a = ep(1, true, true, false, "a");
        let mut b = ep(2, true, true, false, "b");
        a.hints = Some(Box::new(Hints { for_zones: vec!["z1".into()], for_nodes: vec![] }));
        b.hints = Some(Box::new(Hints { for_zones: vec!["z2".into()], for_nodes: vec![] }));
        let scope = Scope::Cluster { node: "x", zone: Some("z2") };
        assert_eq!(addrs(select(&[a.clone(), b.clone()], scope)), vec![2]);
        b.hints = None;
        assert_eq!(addrs(select(&[a, b], scope)), vec![1, 2]);
    }
}

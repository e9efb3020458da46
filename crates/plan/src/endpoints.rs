//! Endpoints: read from EndpointSlices, or derived from Pods and a selector as the
//! EndpointSlice controller would, and chosen per traffic scope as kube-proxy does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portico_model::{EndpointRecord, EndpointSliceRecord, ObjectKey};
use serde::Serialize;

use crate::Protocol;
use crate::families::IpFamily;
use crate::pods::PodPlan;

/// One backend address and port of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Backend address.
    pub address: IpAddr,
    /// Backend port (the Service's targetPort resolved for this backend); [`NO_PORT`] for
    /// the endpoints of a headless Service without ports.
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

/// The port of an endpoint of a headless Service without ports: it has none.
pub const NO_PORT: u16 = 0;

/// Endpoints of one Service port from its EndpointSlices: slice ports match by name and
/// protocol, as kube-proxy matches them, and only slices of the Service's `families` count
/// (the EndpointSlice controller writes one slice per family of the Service).
pub fn from_slices(
    slices: &[&EndpointSliceRecord],
    port_name: &str,
    protocol: Protocol,
    families: &[IpFamily],
) -> Vec<Endpoint> {
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
            for (e, address) in in_families(slice, families) {
                if seen.insert((address, port)) {
                    out.push(slice_endpoint(e, address, port));
                }
            }
        }
    }
    out.shrink_to_fit();
    out
}

/// Endpoints of a headless Service without ports from its EndpointSlices: every address of
/// its families, whatever ports the slices list (DNS names addresses, not ports).
pub fn from_slices_without_ports(slices: &[&EndpointSliceRecord], families: &[IpFamily]) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<Endpoint> = slices
        .iter()
        .filter(|slice| !slice.fqdn)
        .flat_map(|slice| in_families(slice, families))
        .filter(|(_, address)| seen.insert(*address))
        .map(|(e, address)| slice_endpoint(e, address, NO_PORT))
        .collect();
    out.shrink_to_fit();
    out
}

/// A slice's endpoints with an address of one of `families`. A slice holds one family (its
/// `addressType`, which validation holds its addresses to), so this is the slice's family.
fn in_families<'s>(
    slice: &'s EndpointSliceRecord,
    families: &'s [IpFamily],
) -> impl Iterator<Item = (&'s EndpointRecord, IpAddr)> + 's {
    slice
        .endpoints
        .iter()
        .filter_map(|e| Some((e, e.address?)))
        .filter(|(_, address)| families.contains(&IpFamily::of(address)))
}

fn slice_endpoint(e: &EndpointRecord, address: IpAddr, port: u16) -> Endpoint {
    let ready = e.ready.unwrap_or(true);
    Endpoint {
        address,
        port,
        ready,
        serving: e.serving.unwrap_or(ready),
        terminating: e.terminating.unwrap_or(false),
        node: e.node_name.as_deref().map(Into::into),
        zone: e.zone.as_deref().map(Into::into),
        hostname: e.hostname.as_deref().map(Into::into),
        pod: e.pod.clone(),
        hints: e
            .hints
            .as_ref()
            .map(|h| Box::new(Hints { for_zones: h.for_zones.clone(), for_nodes: h.for_nodes.clone() })),
    }
}

/// The Pods a Service selects, as the EndpointSlice controller sees them for that Service.
#[derive(Clone, Copy)]
pub struct Selected<'a> {
    /// The Pods its selector picks.
    pub pods: &'a [&'a PodPlan],
    /// The Service.
    pub service: &'a ObjectKey,
    /// Its IP families: a Pod is an endpoint once per family it has an address of.
    pub families: &'a [IpFamily],
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready: bool,
}

/// Endpoints of one Service port derived from the Pods its selector picks, as the
/// EndpointSlice controller writes them: Pods without the (named) target port are left out.
pub fn from_pods(
    selected: Selected<'_>,
    port: i32,
    target: Option<&IntOrString>,
    protocol: Protocol,
) -> Vec<Endpoint> {
    selected
        .pods
        .iter()
        .filter_map(|pod| Some((pod, pod.target_port(port, target, protocol)?)))
        .flat_map(|(pod, target_port)| pod_endpoints(pod, selected, target_port))
        .collect()
}

/// Endpoints of a headless Service without ports derived from the Pods its selector picks:
/// their addresses, with no port (kubernetes/kubernetes#67622).
pub fn from_pods_without_ports(selected: Selected<'_>) -> Vec<Endpoint> {
    selected.pods.iter().flat_map(|pod| pod_endpoints(pod, selected, NO_PORT)).collect()
}

/// One endpoint per family of the Service that the Pod has an address of, in family order.
fn pod_endpoints<'a>(
    pod: &'a PodPlan,
    selected: Selected<'a>,
    port: u16,
) -> impl Iterator<Item = Endpoint> + 'a {
    // The hostname is published only for the Service the Pod names as its subdomain.
    let hostname =
        pod.hostname.as_deref().filter(|_| pod.subdomain.as_deref() == Some(selected.service.name.as_str()));
    selected.families.iter().filter_map(move |family| {
        let address = *pod.ips.iter().find(|ip| IpFamily::of(ip) == *family)?;
        Some(Endpoint {
            address,
            port,
            ready: selected.publish_not_ready || (pod.ready && !pod.terminating),
            serving: selected.publish_not_ready || pod.ready,
            terminating: pod.terminating,
            node: Some(pod.node.as_str().into()),
            zone: pod.zone.as_deref().map(Into::into),
            hostname: hostname.map(Into::into),
            pod: Some(Box::new(pod.key.clone())),
            hints: None,
        })
    })
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

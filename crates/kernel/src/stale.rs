//! Which UDP conntrack entries a new Plan leaves pointing nowhere. UDP has no connection to
//! end: an entry made for a Service keeps sending a client's datagrams to the endpoint first
//! chosen for as long as the client keeps talking, even after that endpoint is gone, so a
//! DNS client would time out for minutes. kube-proxy deletes such entries after each sync;
//! these are its two cases, from the Plan served before and the one served now.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use portico_plan::endpoints::{Scope, select};
use portico_plan::{Plan, Protocol, ServicePlan, ServicePort};

use crate::conntrack::{self, Filter};

/// A Service port: namespace, name, port.
type Key<'p> = (&'p str, &'p str, u16);

/// What one UDP Service port is, as far as its flows are concerned.
#[derive(Default)]
struct UdpPort {
    /// Its ClusterIPs, LoadBalancer IPs and external IPs.
    addresses: Vec<IpAddr>,
    port: u16,
    node_port: Option<u16>,
    /// The endpoint addresses traffic may go to, in either traffic scope.
    endpoints: BTreeSet<IpAddr>,
}

/// The entries to delete once `new` is in the kernel in place of `old` (`None`: nothing was
/// served before): flows to an endpoint a UDP Service port no longer uses, and flows to a
/// UDP Service port that had no endpoints (made while it answered with ICMP unreachable, they
/// would not be rewritten to the endpoints it has now).
pub fn stale_udp_flows(old: Option<&Plan>, new: &Plan, node: &str) -> Vec<Filter> {
    let before = old.map(|plan| udp_ports(plan, node)).unwrap_or_default();
    let now = udp_ports(new, node);
    let mut filters = Vec::new();
    let udp = |orig_dst, orig_dst_port, reply_src| Filter {
        protocol: conntrack::Protocol::Udp,
        orig_dst,
        orig_dst_port,
        reply_src,
        reply_src_port: None,
    };
    for (key, was) in &before {
        let empty = UdpPort::default();
        let is = now.get(key).unwrap_or(&empty);
        for gone in was.endpoints.difference(&is.endpoints) {
            for address in &was.addresses {
                filters.push(udp(Some(*address), Some(was.port), Some(*gone)));
            }
            if let Some(node_port) = was.node_port {
                filters.push(udp(None, Some(node_port), Some(*gone)));
            }
        }
    }
    for (key, is) in &now {
        let had_none = before.get(key).is_none_or(|was| was.endpoints.is_empty());
        if !had_none || is.endpoints.is_empty() {
            continue;
        }
        for address in &is.addresses {
            filters.push(udp(Some(*address), Some(is.port), None));
        }
        if let Some(node_port) = is.node_port {
            filters.push(udp(None, Some(node_port), None));
        }
    }
    filters
}

/// The UDP ports of the proxied Services of `plan`, seen from `node`.
fn udp_ports<'p>(plan: &'p Plan, node: &str) -> BTreeMap<Key<'p>, UdpPort> {
    let zone = plan.nodes.iter().find(|n| n.name == node).and_then(|n| n.zone.as_deref());
    let mut out = BTreeMap::new();
    for service in plan.services.iter().filter(|s| s.proxied) {
        for port in service.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
            out.insert(
                (service.key.namespace.as_str(), service.key.name.as_str(), port.port),
                udp_port(service, port, node, zone),
            );
        }
    }
    out
}

fn udp_port(service: &ServicePlan, port: &ServicePort, node: &str, zone: Option<&str>) -> UdpPort {
    let cluster = select(&port.endpoints, Scope::Cluster { node, zone });
    let local = select(&port.endpoints, Scope::Local { node });
    UdpPort {
        addresses: service
            .cluster_ips
            .iter()
            .chain(&service.load_balancer_ips)
            .chain(&service.external_ips)
            .copied()
            .collect(),
        port: port.port,
        node_port: port.node_port,
        endpoints: cluster.into_iter().chain(local).map(|e| e.address).collect(),
    }
}

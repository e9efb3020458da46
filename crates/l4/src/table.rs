//! From a Plan to the listeners of one node: which address and port forwards where.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use portico_plan::endpoints::{Scope, select};
use portico_plan::{Endpoint, IpFamily, Plan, Protocol, ServicePlan, ServicePort, TrafficPolicy};

/// A listening socket: address, port and transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    /// Address and port.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl fmt::Display for ListenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// What one listener forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontend {
    /// `namespace/name` of the Service, or of the Pod for a HostPort.
    pub service: String,
    /// The Service port's name, or its number when unnamed.
    pub port: String,
    /// ClusterIP, NodePort, LoadBalancer, ExternalIP or HostPort.
    pub method: &'static str,
    /// Endpoints chosen for this listener's traffic scope (ready, else serving+terminating).
    pub endpoints: Vec<SocketAddr>,
    /// ClientIP session affinity timeout.
    pub affinity: Option<Duration>,
    /// Only these client ranges may connect (empty: everyone).
    pub source_ranges: Vec<IpNet>,
}

impl Frontend {
    /// Whether `client` may use this frontend.
    pub fn admits(&self, client: IpAddr) -> bool {
        self.source_ranges.is_empty() || self.source_ranges.iter().any(|r| r.contains(&client))
    }
}

/// Every listener of one node, and the addresses two objects both wanted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Listener → frontend.
    pub frontends: BTreeMap<ListenKey, Frontend>,
    /// Listeners claimed twice; the first claim is served, these are not.
    pub conflicts: Vec<(ListenKey, String)>,
}

impl Table {
    fn add(&mut self, key: ListenKey, frontend: Frontend) {
        if let Some(first) = self.frontends.get(&key) {
            self.conflicts.push((
                key,
                format!(
                    "{} {} wants {key}, already used by {} {}",
                    frontend.method, frontend.service, first.method, first.service
                ),
            ));
        } else {
            self.frontends.insert(key, frontend);
        }
    }
}

/// The listeners `node` serves for `plan`: ClusterIPs, the node's NodePorts, LoadBalancer
/// IPs, external IPs and the HostPorts of Pods on this node. SCTP is not proxied.
pub fn frontends(plan: &Plan, node: &str) -> Table {
    let mut table = Table::default();
    let this = plan.nodes.iter().find(|n| n.name == node);
    let node_addresses: &[IpAddr] = this.map(|n| n.addresses.as_slice()).unwrap_or_default();
    let zone = this.and_then(|n| n.zone.as_deref());
    for service in plan.services.iter().filter(|s| s.proxied) {
        for port in service.ports.iter().filter(|p| p.protocol != Protocol::Sctp) {
            let scope = |policy| scope(policy, node, zone);
            let mut add = |ip: &IpAddr, listen_port: u16, method: &'static str, policy| {
                // As kube-proxy, one proxy per IP family: a listener of a family the Service
                // does not have is not opened, and one that is forwards within its family.
                let Some(mut frontend) = frontend(service, port, method, scope(policy), IpFamily::of(ip))
                else {
                    return;
                };
                if method == "LoadBalancer" {
                    frontend.source_ranges.clone_from(&service.load_balancer_source_ranges);
                }
                table.add(
                    ListenKey { addr: SocketAddr::new(*ip, listen_port), protocol: port.protocol },
                    frontend,
                );
            };
            for ip in &service.cluster_ips {
                add(ip, port.port, "ClusterIP", service.internal_traffic_policy);
            }
            if let Some(node_port) = port.node_port {
                for ip in node_addresses {
                    add(ip, node_port, "NodePort", service.external_traffic_policy);
                }
            }
            for ip in &service.load_balancer_ips {
                add(ip, port.port, "LoadBalancer", service.external_traffic_policy);
            }
        }
    }
    host_ports(plan, node, node_addresses, &mut table);
    // externalIPs come last: any Service may claim any address there (CVE-2020-8554), so
    // they never take a listener an allocated address or a HostPort already has.
    for service in plan.services.iter().filter(|s| s.proxied) {
        for port in service.ports.iter().filter(|p| p.protocol != Protocol::Sctp) {
            let scope = scope(service.external_traffic_policy, node, zone);
            for ip in &service.external_ips {
                let key = ListenKey { addr: SocketAddr::new(*ip, port.port), protocol: port.protocol };
                if let Some(frontend) = frontend(service, port, "ExternalIP", scope, IpFamily::of(ip)) {
                    table.add(key, frontend);
                }
            }
        }
    }
    table
}

/// HostPorts of the Pods on `node`.
fn host_ports(plan: &Plan, node: &str, node_addresses: &[IpAddr], table: &mut Table) {
    for hp in plan.host_ports.iter().filter(|h| h.node == node && h.protocol != Protocol::Sctp) {
        let frontend = Frontend {
            service: hp.pod.to_string(),
            port: hp.host_port.to_string(),
            method: "HostPort",
            endpoints: vec![SocketAddr::new(hp.pod_ip, hp.container_port)],
            affinity: None,
            source_ranges: Vec::new(),
        };
        let addresses: Vec<IpAddr> = match hp.host_ip {
            Some(ip) => vec![ip],
            None => node_addresses.to_vec(),
        };
        for ip in addresses {
            table.add(
                ListenKey { addr: SocketAddr::new(ip, hp.host_port), protocol: hp.protocol },
                frontend.clone(),
            );
        }
    }
}

/// Which endpoints traffic under `policy` may reach from `node`.
fn scope<'a>(policy: TrafficPolicy, node: &'a str, zone: Option<&'a str>) -> Scope<'a> {
    match policy {
        TrafficPolicy::Cluster => Scope::Cluster { node, zone },
        TrafficPolicy::Local => Scope::Local { node },
    }
}

/// The frontend of `port` for a listener of `family`, forwarding to the endpoints of that
/// family only; `None` when the Service is not of that family.
fn frontend(
    service: &ServicePlan,
    port: &ServicePort,
    method: &'static str,
    scope: Scope<'_>,
    family: IpFamily,
) -> Option<Frontend> {
    if !service.ip_families.is_empty() && !service.ip_families.contains(&family) {
        return None;
    }
    let of_family = |e: &Endpoint| IpFamily::of(&e.address) == family;
    // Single-stack Services (most) need no copy of their endpoints.
    let endpoints: std::borrow::Cow<'_, [Endpoint]> = if port.endpoints.iter().all(of_family) {
        std::borrow::Cow::Borrowed(&port.endpoints)
    } else {
        std::borrow::Cow::Owned(port.endpoints.iter().filter(|e| of_family(e)).cloned().collect())
    };
    Some(Frontend {
        service: service.key.to_string(),
        port: if port.name.is_empty() { port.port.to_string() } else { port.name.clone() },
        method,
        endpoints: select(&endpoints, scope).iter().map(|e| SocketAddr::new(e.address, e.port)).collect(),
        affinity: service.session_affinity_timeout.map(|s| Duration::from_secs(u64::from(s))),
        source_ranges: Vec::new(),
    })
}

//! The seed's question answered for one Plan: every way each workload is exposed, with the
//! layer, who can reach it, where, and what it costs in external addresses.

use std::net::IpAddr;

use portico_model::ObjectRef;
use serde::Serialize;

use crate::Plan;
use crate::ingress::{Backend, PathKind};
use crate::services::{ServiceKind, ServicePlan};

/// An exposure method of the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Service virtual IP.
    ClusterIP,
    /// Port on every node.
    NodePort,
    /// External load-balancer IP.
    LoadBalancer,
    /// `spec.externalIPs` of a Service.
    ExternalIP,
    /// HTTP(S) route.
    Ingress,
    /// DNS straight to the Pods.
    Headless,
    /// DNS alias.
    ExternalName,
    /// Port of one node mapped to one Pod.
    HostPort,
}

/// OSI layer the method works at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Layer {
    /// Transport: IP and port.
    L4,
    /// Application: HTTP host and path.
    L7,
    /// Name resolution only.
    #[serde(rename = "DNS")]
    Dns,
}

/// What a method looks at to choose where a connection or request goes: the seed's
/// "routing" difference between a LoadBalancer and an Ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Routing {
    /// The address and port the client connects to: one Service per address and port.
    AddressAndPort,
    /// The HTTP host and path of each request: many Services behind one address.
    HostAndPath,
    /// The DNS name asked for; clients then connect to what it resolves to.
    Name,
}

impl Layer {
    /// How a method at this layer routes.
    pub fn routing(self) -> Routing {
        match self {
            Layer::L4 => Routing::AddressAndPort,
            Layer::L7 => Routing::HostAndPath,
            Layer::Dns => Routing::Name,
        }
    }
}

impl Routing {
    /// Short words for a table cell.
    pub fn describe(self) -> &'static str {
        match self {
            Routing::AddressAndPort => "ip:port",
            Routing::HostAndPath => "host+path",
            Routing::Name => "name",
        }
    }
}

/// Who can reach an entry point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reach {
    /// Pods (and nodes) inside the cluster only.
    Cluster,
    /// Anyone who can reach any node.
    EveryNode,
    /// Anyone who can reach this one node.
    Node(String),
    /// Anyone who can reach the external address.
    Outside,
}

impl Reach {
    /// Short words for a table cell.
    pub fn describe(&self) -> String {
        match self {
            Reach::Cluster => "cluster pods".into(),
            Reach::EveryNode => "every node".into(),
            Reach::Node(n) => format!("node {n}"),
            Reach::Outside => "outside".into(),
        }
    }
}

/// One entry point of one workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The object that creates the entry point.
    pub object: ObjectRef,
    /// The method.
    pub method: Method,
    /// Layer of operation.
    pub layer: Layer,
    /// What it routes by (follows from the layer).
    pub routing: Routing,
    /// Who can reach it.
    pub reachable_from: Reach,
    /// Addresses, URLs or DNS names.
    pub addresses: Vec<String>,
    /// Ports, e.g. `80/TCP→http`.
    pub ports: Vec<String>,
    /// Whether TLS is terminated here.
    pub tls: bool,
    /// Ready backends.
    pub ready: usize,
    /// All backends.
    pub total: usize,
    /// External IPs this entry point uses up on its own.
    pub external_ips: Vec<IpAddr>,
    /// What it costs, in words.
    pub cost: String,
}

/// Every exposure in the plan: Services (each method they imply), Ingress routes, HostPorts.
pub fn exposures(plan: &Plan) -> Vec<Exposure> {
    let mut out = Vec::new();
    for service in &plan.services {
        service_exposures(plan, service, &mut out);
    }
    ingress_exposures(plan, &mut out);
    for hp in &plan.host_ports {
        let addresses = match hp.host_ip {
            Some(ip) => vec![ip.to_string()],
            None => node_addresses(plan, Some(&hp.node)),
        };
        out.push(Exposure {
            object: ObjectRef::new("Pod", hp.pod.clone()),
            method: Method::HostPort,
            layer: Layer::L4,
            routing: Layer::L4.routing(),
            reachable_from: Reach::Node(hp.node.clone()),
            addresses,
            ports: vec![format!("{}/{}→{}", hp.host_port, hp.protocol, hp.container_port)],
            tls: false,
            ready: 1,
            total: 1,
            external_ips: Vec::new(),
            cost: "port on 1 node".into(),
        });
    }
    out
}

fn node_addresses(plan: &Plan, node: Option<&str>) -> Vec<String> {
    plan.nodes
        .iter()
        .filter(|n| node.is_none_or(|name| n.name == name))
        .flat_map(|n| n.addresses.iter().map(ToString::to_string))
        .collect()
}

fn service_exposures(plan: &Plan, service: &ServicePlan, out: &mut Vec<Exposure>) {
    let (ready, total) = service.backend_counts();
    let object = ObjectRef::new("Service", service.key.clone());
    let dns_name = format!("{}.{}.svc.{}", service.key.name, service.key.namespace, plan.cluster_domain);
    let row = |method,
               layer,
               reachable_from,
               addresses: Vec<String>,
               ports: Vec<String>,
               external_ips: Vec<IpAddr>,
               cost: String| Exposure {
        object: object.clone(),
        method,
        layer,
        routing: layer.routing(),
        reachable_from,
        addresses,
        ports,
        tls: false,
        ready,
        total,
        external_ips,
        cost,
    };
    let target = |p: &crate::ServicePort| {
        let mut targets: Vec<u16> = p.endpoints.iter().map(|e| e.port).collect();
        targets.sort_unstable();
        targets.dedup();
        match targets.as_slice() {
            [one] if *one != p.port => format!("→{one}"),
            [] | [_] => String::new(),
            _ => "→(per pod)".into(),
        }
    };
    let service_ports: Vec<String> =
        service.ports.iter().map(|p| format!("{}/{}{}", p.port, p.protocol, target(p))).collect();
    match service.kind {
        ServiceKind::ExternalName => {
            let target = service.external_name.clone().unwrap_or_default();
            out.push(row(
                Method::ExternalName,
                Layer::Dns,
                Reach::Cluster,
                vec![format!("{dns_name} → CNAME {target}")],
                Vec::new(),
                Vec::new(),
                "none".into(),
            ));
            return;
        }
        ServiceKind::Headless => {
            out.push(row(
                Method::Headless,
                Layer::Dns,
                Reach::Cluster,
                vec![dns_name],
                service_ports,
                Vec::new(),
                "none".into(),
            ));
            return;
        }
        _ => {}
    }
    let ips = |ips: &[IpAddr]| ips.iter().map(ToString::to_string).collect::<Vec<_>>();
    out.push(row(
        Method::ClusterIP,
        Layer::L4,
        Reach::Cluster,
        ips(&service.cluster_ips),
        service_ports.clone(),
        Vec::new(),
        "none".into(),
    ));
    if matches!(service.kind, ServiceKind::NodePort | ServiceKind::LoadBalancer) {
        let node_ports: Vec<String> =
            service.ports.iter().filter_map(|p| p.node_port.map(|n| format!("{n}/{}", p.protocol))).collect();
        if !node_ports.is_empty() {
            out.push(row(
                Method::NodePort,
                Layer::L4,
                Reach::EveryNode,
                node_addresses(plan, None),
                node_ports,
                Vec::new(),
                "port on every node".into(),
            ));
        }
    }
    if service.kind == ServiceKind::LoadBalancer {
        let (addresses, cost) = if service.load_balancer_ips.is_empty() {
            (vec!["<pending>".to_string()], "waiting for an IP".into())
        } else {
            let n = service.load_balancer_ips.len();
            let mut cost = format!("{n} own IP{}", if n == 1 { "" } else { "s" });
            cost.push_str(&announced_by(plan, &service.load_balancer_ips));
            (ips(&service.load_balancer_ips), cost)
        };
        out.push(row(
            Method::LoadBalancer,
            Layer::L4,
            Reach::Outside,
            addresses,
            service_ports.clone(),
            service.load_balancer_ips.clone(),
            cost,
        ));
    }
    if !service.external_ips.is_empty() {
        let n = service.external_ips.len();
        out.push(row(
            Method::ExternalIP,
            Layer::L4,
            Reach::Outside,
            ips(&service.external_ips),
            service_ports,
            service.external_ips.clone(),
            format!("{n} routed IP{}", if n == 1 { "" } else { "s" }),
        ));
    }
}

/// Who answers ARP and NDP for `addresses`, when an `L2Advertisement` covers them: the first
/// node of each ranking (the next ones take over when it fails).
fn announced_by(plan: &Plan, addresses: &[IpAddr]) -> String {
    let firsts: Vec<(IpAddr, &str)> = addresses
        .iter()
        .filter_map(|a| {
            let announcement = plan.announcements.iter().find(|x| x.address == *a)?;
            Some((*a, announcement.nodes.first().map_or("no node", String::as_str)))
        })
        .collect();
    match firsts.as_slice() {
        [] => String::new(),
        [(_, node), rest @ ..] if rest.iter().all(|(_, n)| n == node) => format!(", announced by {node}"),
        all => {
            let each: Vec<String> = all.iter().map(|(a, n)| format!("{a} by {n}")).collect();
            format!(", announced: {}", each.join(", "))
        }
    }
}

fn ingress_exposures(plan: &Plan, out: &mut Vec<Exposure>) {
    for (host, vhost) in plan.ingress.virtual_hosts() {
        for route in &vhost.routes {
            let scheme = if vhost.tls { "https" } else { "http" };
            let suffix = if route.kind == PathKind::Exact { " (exact)" } else { "" };
            let port = if vhost.tls {
                plan.ingress_addresses.https.port()
            } else {
                plan.ingress_addresses.http.port()
            };
            let url = format!("{scheme}://{host}:{port}{}{suffix}", route.path);
            out.push(ingress_row(
                plan,
                ObjectRef::new("Ingress", route.ingress.clone()),
                url,
                &route.backend,
                vhost.tls,
            ));
        }
    }
    if let Some(default) = &plan.ingress.default_backend {
        let object = ObjectRef::new("Ingress", default.ingress.clone());
        let url = format!("http://*:{}/ (default backend)", plan.ingress_addresses.http.port());
        out.push(ingress_row(plan, object, url, &default.backend, false));
    }
}

fn ingress_row(plan: &Plan, object: ObjectRef, url: String, backend: &Backend, tls: bool) -> Exposure {
    let total =
        plan.services.iter().find(|s| s.key == backend.service).map(|s| s.backend_counts().1).unwrap_or(0);
    let (http, https) = (plan.ingress_addresses.http, plan.ingress_addresses.https);
    let mut ports = vec![format!("{}/TCP", http.port())];
    if tls {
        ports.push(format!("{}/TCP", https.port()));
    }
    Exposure {
        object,
        method: Method::Ingress,
        layer: Layer::L7,
        routing: Layer::L7.routing(),
        reachable_from: Reach::Outside,
        addresses: vec![format!("{url} → {}:{}", backend.service.name, backend.port)],
        ports,
        tls,
        ready: backend.endpoints.len(),
        total,
        external_ips: Vec::new(),
        cost: format!(
            "shared {}",
            if tls { plan.ingress_addresses.https.ip() } else { plan.ingress_addresses.http.ip() }
        ),
    }
}

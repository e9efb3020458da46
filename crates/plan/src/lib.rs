//! The planner: a pure function from the typed [`Store`] (plus the previous allocations) to
//! an immutable, versioned [`Plan`] that every data plane serves. No I/O happens here.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod annotations;
pub mod config;
pub mod dns;
pub mod endpoints;
pub mod exposure;
pub mod families;
pub mod ingress;
mod order;
pub mod pattern;
pub mod pods;
pub mod services;
pub mod workloads;

use std::fmt;
use std::net::IpAddr;

use portico_model::{Diagnostic, Store};
use serde::Serialize;

pub use alloc::Allocations;
pub use config::PlanConfig;
pub use endpoints::{Endpoint, Scope};
pub use families::{IpFamily, IpFamilyPolicy};
pub use ingress::IngressPlan;
pub use pods::{HostPort, PodPlan};
pub use services::{ServiceKind, ServicePlan, ServicePort, TrafficPolicy};

/// Transport protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// Reads a Kubernetes `protocol` field (TCP when absent).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A node and its addresses.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// Node name.
    pub name: String,
    /// Addresses NodePorts and HostPorts are served on.
    pub addresses: Vec<IpAddr>,
    /// `topology.kubernetes.io/zone`, if labelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// Everything the data planes serve, computed in one go from one store.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Increases with every plan served.
    pub generation: u64,
    /// The cluster DNS zone.
    pub cluster_domain: String,
    /// Nodes (in standalone mode: this host).
    pub nodes: Vec<NodePlan>,
    /// Services, by namespace and name.
    pub services: Vec<ServicePlan>,
    /// Pods, by namespace and name.
    pub pods: Vec<PodPlan>,
    /// HostPort mappings.
    pub host_ports: Vec<HostPort>,
    /// HTTP routes and certificates.
    pub ingress: IngressPlan,
    /// Where the ingress listens.
    pub ingress_addresses: IngressAddresses,
    /// The cluster DNS zone: every name under `cluster_domain`, and the reverse names of
    /// cluster addresses, with their records.
    pub dns: dns::DnsZone,
}

/// Where the ingress data plane listens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngressAddresses {
    /// Plain HTTP.
    pub http: std::net::SocketAddr,
    /// HTTPS.
    pub https: std::net::SocketAddr,
}

/// A plan with the allocations it needed and the problems met while planning.
#[derive(Debug)]
pub struct Planned {
    /// The plan to serve.
    pub plan: Plan,
    /// What is allocated now; persist it so the next plan keeps the same values.
    pub allocations: Allocations,
    /// Cross-object problems (clashes, missing backends, ...).
    pub diagnostics: Vec<Diagnostic>,
}

/// Plans `store`: allocations keep what `previous` had for objects that still exist.
pub fn plan(store: &Store, config: &PlanConfig, previous: &Allocations, generation: u64) -> Planned {
    let mut allocations = Allocations::default();
    let mut diagnostics = Vec::new();
    let nodes = plan_nodes(store, config);
    let workload_pods = workloads::expand(store, &nodes, &mut diagnostics);
    let (pods, host_ports) = pods::plan_pods(
        &[&store.pods, &workload_pods],
        &nodes,
        config,
        previous,
        &mut allocations,
        &mut diagnostics,
    );
    let services =
        services::plan_services(store, &pods, config, previous, &mut allocations, &mut diagnostics);
    let ingress = ingress::plan_ingress(store, &services, config, &mut diagnostics);
    let dns = match config.dns_records {
        true => dns::build(&config.cluster_domain, &services, &pods),
        false => dns::DnsZone { apex: config.cluster_domain.clone(), ..dns::DnsZone::default() },
    };
    let plan = Plan {
        generation,
        cluster_domain: config.cluster_domain.clone(),
        nodes,
        services,
        pods,
        host_ports,
        ingress,
        ingress_addresses: IngressAddresses { http: config.ingress_http, https: config.ingress_https },
        dns,
    };
    Planned { plan, allocations, diagnostics }
}

fn plan_nodes(store: &Store, config: &PlanConfig) -> Vec<NodePlan> {
    let mut nodes: Vec<NodePlan> = store
        .nodes
        .values()
        .map(|n| {
            let addresses = n
                .object
                .status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect();
            NodePlan {
                name: n.object.metadata.name.clone().unwrap_or_default(),
                addresses,
                zone: n
                    .object
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("topology.kubernetes.io/zone"))
                    .cloned(),
            }
        })
        .collect();
    if !nodes.iter().any(|n| n.name == config.local_node) {
        nodes.push(NodePlan {
            name: config.local_node.clone(),
            addresses: config.local_node_addresses.clone(),
            zone: None,
        });
    }
    nodes
}

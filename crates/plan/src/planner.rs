//! The Plan, and the function that makes it from the store: each part planned by its own
//! module, in the order each needs the others.

use portico_model::{Diagnostic, Store};
use serde::Serialize;

use crate::nodes::{NodePlan, plan_nodes};
use crate::routes::HttpRoutes;
use crate::routes::from_ingress::from_ingress;
use crate::{
    Allocations, HostPort, IngressPlan, PlanConfig, PodPlan, ServicePlan, dns, ingress, pods, services,
    workloads,
};
use crate::{announce, mesh};

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
    /// The HTTP routes of every listener, whatever they came from.
    pub http_routes: HttpRoutes,
    /// The cluster DNS zone: every name under `cluster_domain`, and the reverse names of
    /// cluster addresses, with their records.
    pub dns: dns::DnsZone,
    /// Each LoadBalancer address an `L2Advertisement` covers, and the nodes that may
    /// announce it, in the order they take it.
    pub announcements: Vec<announce::Announcement>,
    /// The meshed Pods, their identities and the policies that apply to them.
    pub mesh: mesh::MeshPlan,
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
        !store.nodes.is_empty(),
        config,
        previous,
        &mut allocations,
        &mut diagnostics,
    );
    let (services, load_balancers) =
        services::plan_services(store, &pods, config, previous, &mut allocations, &mut diagnostics);
    let announcements = announce::announcements(store, &nodes, &services, &load_balancers, &mut diagnostics);
    let ingress = ingress::plan_ingress(store, &services, config, &mut diagnostics);
    let dns = match config.dns_records {
        true => dns::build(&config.cluster_domain, &services, &pods),
        false => dns::DnsZone { apex: config.cluster_domain.clone(), ..dns::DnsZone::default() },
    };
    let http_routes = from_ingress(&ingress, config.ingress_http, config.ingress_https);
    let mesh = mesh::plan_mesh(store, &pods, &[&store.pods, &workload_pods], config, &mut diagnostics);
    let plan = Plan {
        generation,
        cluster_domain: config.cluster_domain.clone(),
        nodes,
        services,
        pods,
        host_ports,
        ingress,
        ingress_addresses: IngressAddresses { http: config.ingress_http, https: config.ingress_https },
        http_routes,
        dns,
        announcements,
        mesh,
    };
    Planned { plan, allocations, diagnostics }
}

//! Services as kube-proxy sees them: addresses, ports, policies and endpoints.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use portico_model::{Diagnostic, EndpointSliceRecord, ObjectKey, ObjectKind, ObjectRef, Store, Stored};
use serde::Serialize;

use crate::Protocol;
use crate::alloc::{Allocations, CidrPool, Claim, Holders, PortPool, assign};
use crate::config::PlanConfig;
use crate::endpoints::{self, Endpoint, Selected};
use crate::families::{self, IpFamily, IpFamilyPolicy, ServiceCidrs, ServiceFamilies};
use crate::lb;
use crate::order::by_age;
use crate::pods::{PodIndex, PodPlan};

/// Label naming the proxy that owns a Service; kube-proxy (and Portico) leave such Services
/// to that proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Whether another proxy serves `service`: it is labelled with another proxy's name, or
/// Portico has a name of its own (`own`) and the Service is not labelled with it — how
/// Portico runs beside kube-proxy, which leaves labelled Services alone.
pub fn other_proxy(service: &Service, own: Option<&str>) -> bool {
    let label = service.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL));
    match (label, own) {
        (Some(label), Some(own)) => label != own,
        (None, None) => false,
        _ => true,
    }
}

/// How a Service is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceKind {
    /// A virtual IP reachable inside the cluster.
    ClusterIP,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus an external IP.
    LoadBalancer,
    /// No virtual IP: DNS names the endpoints directly.
    Headless,
    /// A DNS alias (CNAME) for a name outside the cluster.
    ExternalName,
}

/// Traffic policy: any endpoint in the cluster, or only those on the receiving node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum TrafficPolicy {
    /// Any ready endpoint.
    #[default]
    Cluster,
    /// Only endpoints on the node the traffic arrived at.
    Local,
}

/// One Service, ready to serve.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    /// Namespace and name.
    pub key: ObjectKey,
    /// How it is exposed.
    pub kind: ServiceKind,
    /// False when another proxy owns it (or it has no virtual IP): DNS only.
    pub proxied: bool,
    /// The CNAME target of an ExternalName Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// Virtual IPs, one per IP family in `ip_families` order (empty for headless and
    /// ExternalName).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ipFamilies` as the API server resolves them, primary first: the families of the
    /// ClusterIPs and of the endpoints (empty for ExternalName).
    pub ip_families: Vec<IpFamily>,
    /// `spec.ipFamilyPolicy`, given or defaulted (none for ExternalName).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<IpFamilyPolicy>,
    /// `spec.externalIPs`: served like LoadBalancer IPs.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer IPs.
    pub load_balancer_ips: Vec<IpAddr>,
    /// Ports with their endpoints.
    pub ports: Vec<ServicePort>,
    /// The endpoints of a headless Service without ports: addresses for DNS, each with
    /// [`crate::endpoints::NO_PORT`]. Kept apart from `ports` so that a port always is one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints_without_ports: Vec<Endpoint>,
    /// ClientIP affinity timeout in seconds, when affinity is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<u32>,
    /// Policy for traffic from outside (NodePort, LoadBalancer, external IPs).
    pub external_traffic_policy: TrafficPolicy,
    /// Policy for traffic to the ClusterIP.
    pub internal_traffic_policy: TrafficPolicy,
    /// NodePort answering health checks for `externalTrafficPolicy: Local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    /// Only these sources may reach the LoadBalancer IPs (empty: everyone).
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready_addresses: bool,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name ("" when the Service has one unnamed port).
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port on the virtual IP.
    pub port: u16,
    /// Port on every node, for NodePort and LoadBalancer Services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// `appProtocol`, e.g. `kubernetes.io/h2c`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Every endpoint with its own target port and conditions.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePlan {
    /// Every endpoint: those of each port, then those of a headless Service without ports.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.ports.iter().flat_map(|p| &p.endpoints).chain(&self.endpoints_without_ports)
    }

    /// Ready backends and all backends: distinct Pods, or distinct addresses where no Pod is
    /// known. A dual-stack Pod is one backend, though it is an endpoint in each family.
    pub fn backend_counts(&self) -> (usize, usize) {
        let mut all: BTreeMap<Backend<'_>, bool> = BTreeMap::new();
        for e in self.endpoints() {
            let backend = e.pod.as_deref().map_or(Backend::Address(e.address), Backend::Pod);
            *all.entry(backend).or_default() |= e.ready;
        }
        (all.values().filter(|r| **r).count(), all.len())
    }
}

/// What one backend is known by.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Backend<'a> {
    Pod(&'a ObjectKey),
    Address(IpAddr),
}

/// The Services planned, and the LoadBalancer addresses given out with their pools.
pub type PlannedServices = (Vec<ServicePlan>, BTreeMap<ObjectKey, Vec<lb::Assigned>>);

/// Plans every Service: allocation first (oldest Services first), then endpoints.
pub fn plan_services(
    store: &Store,
    pods: &[PodPlan],
    config: &PlanConfig,
    previous: &Allocations,
    allocations: &mut Allocations,
    diagnostics: &mut Vec<Diagnostic>,
) -> PlannedServices {
    let services = by_age(store.services.values(), |s| s.metadata.creation_timestamp.as_ref());
    let mut admission = Admission { services: &services, rejected: vec![false; services.len()], diagnostics };
    // Admitted Services' addresses lie in the API server's ranges, whichever they are.
    let whole: [IpNet; 2] = [IpNet::V4(Default::default()), IpNet::V6(Default::default())];
    let cidrs = ServiceCidrs::new(if config.admitted { &whole } else { &config.service_cidrs });
    let families = resolve_families(&cidrs, config.admitted, &mut admission);
    let cluster_ips = allocate_cluster_ips(&cidrs, &families, previous, allocations, &mut admission);
    let node_ports = allocate_node_ports(config, previous, allocations, &mut admission);
    let (lb_ips, assigned) = allocate_lb_ips(
        store,
        &services,
        &families,
        &admission.rejected,
        config,
        previous,
        allocations,
        admission.diagnostics,
    );
    let rejected = admission.rejected;
    let slices = slices_by_service(store);
    let pods = PodIndex::new(pods);
    let mut plans = Vec::new();
    for (i, service) in services.iter().enumerate() {
        if rejected[i] {
            continue;
        }
        let key = key_of(service);
        let plan = service_plan(
            service,
            &key,
            families[i].as_ref(),
            cluster_ips.get(&key).cloned().unwrap_or_default(),
            node_ports.get(&key),
            lb_ips.get(&key).cloned().unwrap_or_default(),
            slices.get(&key).map(Vec::as_slice).unwrap_or_default(),
            &pods,
            config.service_proxy_name.as_deref(),
            diagnostics,
        );
        plans.push(plan);
    }
    plans.sort_by(|a, b| a.key.cmp(&b.key));
    plans.shrink_to_fit();
    (plans, assigned)
}

/// Services in age order, and which of them the API server would have rejected.
struct Admission<'a> {
    services: &'a [&'a Stored<Service>],
    rejected: Vec<bool>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Admission<'_> {
    fn reject(&mut self, i: usize, field: impl Into<String>, problem: impl std::fmt::Display) {
        self.rejected[i] = true;
        let service = self.services[i];
        self.diagnostics.push(
            Diagnostic::error(format!("{problem}; the API server would reject this Service"))
                .at(&service.origin)
                .on(reference(service))
                .field(field),
        );
    }
}

fn key_of(service: &Stored<Service>) -> ObjectKey {
    portico_model::object::key_of(ObjectKind::Service, &service.object.metadata)
}

fn reference(service: &Stored<Service>) -> ObjectRef {
    ObjectRef::new("Service", key_of(service))
}

fn kind_of(service: &Service) -> ServiceKind {
    let spec = service.spec.as_ref();
    match spec.and_then(|s| s.type_.as_deref()) {
        Some("ExternalName") => ServiceKind::ExternalName,
        _ if spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") => ServiceKind::Headless,
        Some("NodePort") => ServiceKind::NodePort,
        Some("LoadBalancer") => ServiceKind::LoadBalancer,
        _ => ServiceKind::ClusterIP,
    }
}

/// Whether a Service of this kind gets ClusterIPs.
fn has_cluster_ip(kind: ServiceKind) -> bool {
    matches!(kind, ServiceKind::ClusterIP | ServiceKind::NodePort | ServiceKind::LoadBalancer)
}

/// Each Service's families and policy, by index; none for ExternalName Services (which have
/// neither) and for Services the API server would reject over them.
fn resolve_families(
    cidrs: &ServiceCidrs,
    admitted: bool,
    admission: &mut Admission<'_>,
) -> Vec<Option<ServiceFamilies>> {
    let services = admission.services;
    let no_spec = ServiceSpec::default();
    let mut out = Vec::with_capacity(services.len());
    for (i, service) in services.iter().enumerate() {
        if kind_of(&service.object) == ServiceKind::ExternalName {
            out.push(None);
            continue;
        }
        let spec = service.object.spec.as_ref().unwrap_or(&no_spec);
        if let Some(stored) = admitted.then(|| families::as_stored(spec)).flatten() {
            out.push(Some(stored));
            continue;
        }
        match families::resolve(spec, cidrs) {
            Ok(resolved) => out.push(Some(resolved)),
            Err(problem) => {
                admission.reject(i, problem.field, problem.message);
                out.push(None);
            }
        }
    }
    out
}

/// ClusterIPs per family from that family's CIDR, oldest Services first; each Service's in
/// the order of its families.
fn allocate_cluster_ips(
    cidrs: &ServiceCidrs,
    families: &[Option<ServiceFamilies>],
    previous: &Allocations,
    allocations: &mut Allocations,
    admission: &mut Admission<'_>,
) -> BTreeMap<ObjectKey, Vec<IpAddr>> {
    let services = admission.services;
    let no_spec = ServiceSpec::default();
    let mut by_family: Vec<BTreeMap<IpFamily, IpAddr>> = vec![BTreeMap::new(); services.len()];
    let mut held = Holders::new();
    for (family, cidr) in cidrs.iter() {
        let pool = CidrPool::service(*cidr);
        let mut who = Vec::new();
        let mut claims = Vec::new();
        for (i, service) in services.iter().enumerate() {
            let wanted = families[i].as_ref().is_some_and(|f| f.families.contains(family));
            if !wanted || admission.rejected[i] || !has_cluster_ip(kind_of(&service.object)) {
                continue;
            }
            let spec = service.object.spec.as_ref().unwrap_or(&no_spec);
            let requested =
                families::requested_ips(spec).into_iter().find(|r| IpFamily::of(&r.ip) == *family);
            let owner = key_of(service).to_string();
            let prev = previous_in(&previous.cluster_ips, &owner, cidr);
            claims.push(Claim { owner, requested: requested.as_ref().map(|r| r.ip), previous: prev });
            who.push((i, requested.map_or_else(|| "spec.clusterIP".to_owned(), |r| r.field)));
        }
        for ((i, field), result) in who.into_iter().zip(assign(&pool, &claims, &mut held, |_, _| false)) {
            match result {
                Ok(ip) => {
                    by_family[i].insert(*family, ip);
                }
                Err(err) => admission.reject(i, field, err),
            }
        }
    }
    let mut out = BTreeMap::new();
    for (i, service) in services.iter().enumerate() {
        let Some(resolved) = families[i].as_ref().filter(|_| !admission.rejected[i]) else { continue };
        let ips: Vec<IpAddr> =
            resolved.families.iter().filter_map(|f| by_family[i].get(f).copied()).collect();
        if !ips.is_empty() {
            allocations.cluster_ips.insert(key_of(service).to_string(), ips.clone());
            out.insert(key_of(service), ips);
        }
    }
    out
}

/// The address `owner` held before inside `net`, if any.
fn previous_in(held: &BTreeMap<String, Vec<IpAddr>>, owner: &str, net: &IpNet) -> Option<IpAddr> {
    held.get(owner).and_then(|ips| ips.iter().copied().find(|ip| net.contains(ip)))
}

/// Per Service: port key → NodePort, plus the health-check NodePort under key "".
type NodePorts = BTreeMap<ObjectKey, BTreeMap<String, u16>>;

fn port_key(port: &k8s_openapi::api::core::v1::ServicePort) -> String {
    match port.name.as_deref() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => format!("{}/{}", port.port, port.protocol.as_deref().unwrap_or("TCP")),
    }
}

const HEALTH_CHECK: &str = "";

/// Which Service (index), port key and field a NodePort claim is for.
type PortSlot = (usize, String, String);

fn allocate_node_ports(
    config: &PlanConfig,
    previous: &Allocations,
    allocations: &mut Allocations,
    admission: &mut Admission<'_>,
) -> NodePorts {
    let services = admission.services;
    let pool = PortPool::node_ports(config.node_port_range.clone());
    // NodePorts are unique per protocol; one Service may use one number for TCP and UDP.
    let mut held_by_proto: BTreeMap<Protocol, Holders<u16>> = BTreeMap::new();
    let mut out = NodePorts::new();
    // Explicit and previous NodePorts of every Service are claimed before fresh ones.
    let mut per_proto: BTreeMap<Protocol, (Vec<PortSlot>, Vec<Claim<u16>>)> = BTreeMap::new();
    for (i, service) in services.iter().enumerate() {
        let kind = kind_of(&service.object);
        if !matches!(kind, ServiceKind::NodePort | ServiceKind::LoadBalancer) {
            continue;
        }
        let Some(spec) = service.object.spec.as_ref() else { continue };
        let owner = key_of(service).to_string();
        let allocate = kind == ServiceKind::NodePort || spec.allocate_load_balancer_node_ports != Some(false);
        for (p, port) in spec.ports.iter().flatten().enumerate() {
            let requested = port.node_port.filter(|n| *n != 0).and_then(|n| u16::try_from(n).ok());
            if requested.is_none() && !allocate {
                continue;
            }
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
            let key = port_key(port);
            let prev = previous.node_ports.get(&owner).and_then(|m| m.get(&key)).copied();
            let entry = per_proto.entry(protocol).or_default();
            entry.0.push((i, key, format!("spec.ports[{p}].nodePort")));
            entry.1.push(Claim { owner: owner.clone(), requested, previous: prev });
        }
        if kind == ServiceKind::LoadBalancer && spec.external_traffic_policy.as_deref() == Some("Local") {
            let requested =
                spec.health_check_node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0);
            let prev = previous.health_check_node_ports.get(&owner).copied();
            let entry = per_proto.entry(Protocol::Tcp).or_default();
            entry.0.push((i, HEALTH_CHECK.into(), "spec.healthCheckNodePort".into()));
            entry.1.push(Claim { owner: owner.clone(), requested, previous: prev });
        }
    }
    // A NodePort number belongs to one Service on every protocol; previous values are
    // reserved up front so that fresh ones for an earlier protocol cannot take them.
    let mut other_owner: BTreeMap<Protocol, std::collections::HashMap<u16, String>> = BTreeMap::new();
    for (protocol, (_, claims)) in &per_proto {
        for claim in claims {
            if let Some(prev) = claim.previous.or(claim.requested) {
                for other in per_proto.keys().filter(|p| *p != protocol) {
                    other_owner.entry(*other).or_default().entry(prev).or_insert_with(|| claim.owner.clone());
                }
            }
        }
    }
    for (protocol, (who, claims)) in &per_proto {
        let mut held = Holders::new();
        let reserved = other_owner.remove(protocol).unwrap_or_default();
        let held_elsewhere: std::collections::HashMap<u16, String> =
            held_by_proto.values().flat_map(|m| m.iter().map(|(k, v)| (*k, v.clone()))).collect();
        let taken = |n: u16, owner: &str| {
            held_elsewhere.get(&n).is_some_and(|h| h != owner) || reserved.get(&n).is_some_and(|h| h != owner)
        };
        let results = assign(&pool, claims, &mut held, taken);
        for ((i, key, field), result) in who.iter().zip(results) {
            match result {
                Ok(port) => {
                    out.entry(key_of(services[*i])).or_default().insert(key.clone(), port);
                }
                Err(err) => admission.reject(*i, field.clone(), err),
            }
        }
        held_by_proto.insert(*protocol, held);
    }
    for (key, ports) in &out {
        let mut ports = ports.clone();
        if let Some(hc) = ports.remove(HEALTH_CHECK) {
            allocations.health_check_node_ports.insert(key.to_string(), hc);
        }
        allocations.node_ports.insert(key.to_string(), ports);
    }
    out
}

/// LoadBalancer addresses (see [`lb`]); a Service of another `loadBalancerClass` keeps
/// what its own controller put in its status.
#[allow(clippy::too_many_arguments)]
fn allocate_lb_ips(
    store: &Store,
    services: &[&Stored<Service>],
    families: &[Option<ServiceFamilies>],
    rejected: &[bool],
    config: &PlanConfig,
    previous: &Allocations,
    allocations: &mut Allocations,
    diagnostics: &mut Vec<Diagnostic>,
) -> (BTreeMap<ObjectKey, Vec<IpAddr>>, BTreeMap<ObjectKey, Vec<lb::Assigned>>) {
    let pools = lb::pools(store, &config.load_balancer_pools, diagnostics);
    let no_labels = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut requests = Vec::new();
    for (i, service) in services.iter().enumerate() {
        if kind_of(&service.object) != ServiceKind::LoadBalancer || rejected[i] {
            continue;
        }
        let key = key_of(service);
        if !lb::serves_class(&service.object, config.load_balancer_class_only) {
            out.insert(key, lb::status_ips(&service.object));
            continue;
        }
        let namespace = store.namespaces.get(&ObjectKey::cluster(key.namespace.clone()));
        requests.push(lb::Request {
            service,
            families: families[i].as_ref().map(|f| f.families.clone()).unwrap_or_default(),
            labels: service.object.metadata.labels.as_ref().unwrap_or(&no_labels),
            namespace_labels: namespace.and_then(|n| n.object.metadata.labels.as_ref()).unwrap_or(&no_labels),
            key,
        });
    }
    let assigned = lb::assign(&requests, &pools, &previous.load_balancer_ips, diagnostics);
    for (key, given) in &assigned {
        let ips: Vec<IpAddr> = given.iter().map(|a| a.address).collect();
        allocations.load_balancer_ips.insert(key.to_string(), ips.clone());
        out.insert(key.clone(), ips);
    }
    (out, assigned)
}

fn slices_by_service(store: &Store) -> BTreeMap<ObjectKey, Vec<&EndpointSliceRecord>> {
    let mut out: BTreeMap<ObjectKey, Vec<&EndpointSliceRecord>> = BTreeMap::new();
    for slice in store.endpoint_slices.values() {
        let Some(service) = slice.object.service.as_deref() else { continue };
        out.entry(ObjectKey::new(&*slice.object.namespace, service)).or_default().push(&slice.object);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn service_plan(
    service: &Stored<Service>,
    key: &ObjectKey,
    families: Option<&ServiceFamilies>,
    cluster_ips: Vec<IpAddr>,
    node_ports: Option<&BTreeMap<String, u16>>,
    load_balancer_ips: Vec<IpAddr>,
    slices: &[&EndpointSliceRecord],
    pods: &PodIndex<'_>,
    proxy_name: Option<&str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> ServicePlan {
    let spec = service.object.spec.clone().unwrap_or_default();
    let kind = kind_of(&service.object);
    let policy = |p: &Option<String>| {
        if p.as_deref() == Some("Local") { TrafficPolicy::Local } else { TrafficPolicy::Cluster }
    };
    let other_proxy = other_proxy(&service.object, proxy_name);
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let selector = spec.selector.clone().unwrap_or_default();
    let selected: Vec<&PodPlan> = if selector.is_empty() || kind == ServiceKind::ExternalName {
        Vec::new()
    } else {
        pods.select(&key.namespace, &selector)
    };
    if !selector.is_empty() && kind != ServiceKind::ExternalName && slices.is_empty() && selected.is_empty() {
        let wanted = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        diagnostics.push(
            Diagnostic::warning(format!(
                "selector {wanted} matches no Pod in namespace {}; the Service has no endpoints",
                key.namespace
            ))
            .at(&service.origin)
            .on(reference(service))
            .field("spec.selector"),
        );
    }
    let ip_families = families.map(|f| f.families.clone()).unwrap_or_default();
    if slices.is_empty() && !selected.is_empty() && !has_address_in(&selected, &ip_families) {
        let wanted = ip_families.iter().map(ToString::to_string).collect::<Vec<_>>().join(" or ");
        diagnostics.push(
            Diagnostic::warning(format!(
                "the Pods the selector matches have no {wanted} address; the Service has no endpoints"
            ))
            .at(&service.origin)
            .on(reference(service))
            .field("spec.selector"),
        );
    }
    let selected = Selected { pods: &selected, service: key, families: &ip_families, publish_not_ready };
    let mut ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let protocol = Protocol::parse(port.protocol.as_deref())?;
            let endpoints = if !slices.is_empty() {
                endpoints::from_slices(slices, port.name.as_deref().unwrap_or(""), protocol, &ip_families)
            } else {
                endpoints::from_pods(selected, port.port, port.target_port.as_ref(), protocol)
            };
            Some(ServicePort {
                name: port.name.clone().unwrap_or_default(),
                protocol,
                port: u16::try_from(port.port).ok()?,
                node_port: node_ports.and_then(|m| m.get(&port_key(port))).copied(),
                app_protocol: port.app_protocol.clone(),
                endpoints,
            })
        })
        .collect();
    // A filtered collect keeps room for every port it could have had; ten thousand plans
    // stay in memory.
    ports.shrink_to_fit();
    // Without ports, a headless Service still has endpoints: their addresses are its DNS
    // records (kubernetes/kubernetes#67622).
    let endpoints_without_ports = match (kind, spec.ports.as_deref().unwrap_or_default().is_empty()) {
        (ServiceKind::Headless, true) if !slices.is_empty() => {
            endpoints::from_slices_without_ports(slices, &ip_families)
        }
        (ServiceKind::Headless, true) => endpoints::from_pods_without_ports(selected),
        _ => Vec::new(),
    };
    ServicePlan {
        key: key.clone(),
        kind,
        proxied: !other_proxy
            && matches!(kind, ServiceKind::ClusterIP | ServiceKind::NodePort | ServiceKind::LoadBalancer),
        external_name: spec.external_name.clone().filter(|_| kind == ServiceKind::ExternalName),
        cluster_ips,
        ip_families,
        ip_family_policy: families.map(|f| f.policy),
        external_ips: spec.external_ips.iter().flatten().filter_map(|s| s.parse().ok()).collect(),
        load_balancer_ips,
        ports,
        endpoints_without_ports,
        session_affinity_timeout: (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        }),
        external_traffic_policy: policy(&spec.external_traffic_policy),
        internal_traffic_policy: policy(&spec.internal_traffic_policy),
        health_check_node_port: node_ports.and_then(|m| m.get(HEALTH_CHECK)).copied(),
        load_balancer_source_ranges: spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect(),
        publish_not_ready_addresses: publish_not_ready,
    }
}

/// Whether any of `pods` has an address of one of `families`.
fn has_address_in(pods: &[&PodPlan], families: &[IpFamily]) -> bool {
    pods.iter().flat_map(|p| &p.ips).any(|ip| families.contains(&IpFamily::of(ip)))
}

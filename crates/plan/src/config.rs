//! What the planner needs to know about this installation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;

use ipnet::IpNet;
use serde::Serialize;

/// The controller name an IngressClass must carry for Portico to serve it.
pub const INGRESS_CONTROLLER: &str = "portico.dev/ingress-controller";

/// Ranges, pools and names the planner allocates from and reports.
///
/// The defaults keep everything on loopback, so that a standalone Portico only ever serves
/// this host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanConfig {
    /// Service CIDRs ClusterIPs come from, one per IP family.
    pub service_cidrs: Vec<IpNet>,
    /// NodePorts come from this range.
    pub node_port_range: RangeInclusive<u16>,
    /// LoadBalancer IPs come from these pools, in order.
    pub load_balancer_pools: Vec<IpNet>,
    /// Pods without `status.podIP` get an address from here.
    pub pod_cidr: IpNet,
    /// The node Pods without `spec.nodeName` run on, and whose addresses NodePorts use when
    /// no Node object describes it.
    pub local_node: String,
    /// Addresses of the local node when no Node object gives them.
    pub local_node_addresses: Vec<IpAddr>,
    /// Ingress class names served even without an IngressClass object.
    pub ingress_class_names: Vec<String>,
    /// Where the ingress listens for plain HTTP.
    pub ingress_http: SocketAddr,
    /// Where the ingress listens for HTTPS.
    pub ingress_https: SocketAddr,
    /// The cluster DNS zone.
    pub cluster_domain: String,
    /// The mesh's trust domain: every workload identity is `spiffe://<it>/ns/…/sa/…`.
    pub trust_domain: String,
    /// AuthorizationPolicies in this namespace apply to every workload (Istio's root namespace).
    pub mesh_root_namespace: String,
    /// Whether the objects come from an API server that admitted them: Services' ClusterIPs
    /// and IP families are taken as it stored them, whatever `service_cidrs` says (the
    /// cluster's range is the API server's to know).
    pub admitted: bool,
    /// With a name, only the Services labelled `service.kubernetes.io/service-proxy-name` with
    /// it are proxied (the others are kube-proxy's, which leaves labelled ones alone); without,
    /// every Service without that label.
    pub service_proxy_name: Option<String>,
    /// Only Services of Portico's own `spec.loadBalancerClass` get LoadBalancer addresses
    /// (those without a class are left to MetalLB or a cloud's controller).
    pub load_balancer_class_only: bool,
    /// Whether the Plan carries the DNS zone's records: not when nothing serves them
    /// (`run --dns off`), since ten thousand Services make a zone of megabytes.
    pub dns_records: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            service_cidrs: vec![net("127.96.0.0/16")],
            node_port_range: 30000..=32767,
            load_balancer_pools: vec![net("127.97.0.0/24")],
            pod_cidr: net("127.98.0.0/16"),
            local_node: "localhost".into(),
            local_node_addresses: vec![loopback],
            ingress_class_names: vec!["portico".into()],
            ingress_http: SocketAddr::new(loopback, 8080),
            ingress_https: SocketAddr::new(loopback, 8443),
            cluster_domain: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            mesh_root_namespace: "istio-system".into(),
            admitted: false,
            service_proxy_name: None,
            load_balancer_class_only: false,
            dns_records: true,
        }
    }
}

fn net(s: &str) -> IpNet {
    match s.parse() {
        Ok(n) => n,
        Err(_) => unreachable!("built-in CIDR {s} is valid"),
    }
}

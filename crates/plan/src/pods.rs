//! Pods as the data planes need them: address, node, readiness, ports, and HostPorts.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portico_model::{Diagnostic, ObjectKey, ObjectRef, PodRecord, Stored};
use serde::Serialize;

use ipnet::IpNet;

use crate::alloc::{Allocations, CidrPool, Claim, Holders, assign};
use crate::config::PlanConfig;
use crate::order::by_age;
use crate::placement::{WantedHostPort, place, wanted_host_ports};
use crate::{NodePlan, Protocol};

/// A Pod the planner accepted.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPlan {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The node it runs on.
    pub node: String,
    /// The node's zone, if labelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Its addresses: `status.podIPs`, or one allocated from the Pod CIDR.
    pub ips: Vec<IpAddr>,
    /// Whether the address was allocated by Portico rather than given in the manifest.
    pub allocated_ip: bool,
    /// `spec.hostNetwork`: it uses its node's addresses and network namespace.
    pub host_network: bool,
    /// Ready condition (true when the manifest carries no conditions: standalone Pods run).
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// `spec.hostname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `spec.subdomain`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// `spec.serviceAccountName`: the identity the Pod runs as (the mesh issues its
    /// certificate for it). Always set, as on a Pod the API server admitted: its ServiceAccount
    /// admission names [`DEFAULT_SERVICE_ACCOUNT`] when the manifest names none.
    pub service_account: String,
    /// Labels, for selectors.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    /// Containers and their ports.
    pub containers: Vec<ContainerPlan>,
    /// The controller that runs it, e.g. `Deployment default/web`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<ObjectRef>,
}

/// The ServiceAccount of a Pod whose manifest names none: every namespace has one of this name.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// One container of a Pod.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// True when the container runs Portico's built-in echo workload: its image's last path
    /// segment is `portico` and its first argument is `echo`.
    pub echo: bool,
    /// Declared ports.
    pub ports: Vec<ContainerPort>,
}

/// A declared container port.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Port name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port number inside the Pod.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// A host port mapped to a Pod's port on its node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    /// The node whose port is opened.
    pub node: String,
    /// Only this host address, or every address of the node when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port on the node.
    pub host_port: u16,
    /// The Pod served.
    pub pod: ObjectKey,
    /// The Pod's address.
    pub pod_ip: IpAddr,
    /// The Pod's port.
    pub container_port: u16,
}

impl PodPlan {
    /// The port number a Service `targetPort` name refers to in this Pod.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }

    /// The port a Service port's `targetPort` means in this Pod: numbers as they are (the
    /// Service port itself when unset), names through its container ports; `None` when the
    /// Pod has no such port.
    pub fn target_port(&self, port: i32, target: Option<&IntOrString>, protocol: Protocol) -> Option<u16> {
        match target {
            None => u16::try_from(port).ok(),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => self.named_port(s, protocol),
            },
        }
    }
}

/// Pods by (namespace, label key, label value): a selector looks only at Pods carrying its
/// rarest pair, instead of every Pod for every Service.
pub struct PodIndex<'a> {
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a PodPlan>>,
}

impl<'a> PodIndex<'a> {
    /// Indexes `pods`, keeping their order within each entry.
    pub fn new(pods: &'a [PodPlan]) -> Self {
        let mut by_label: HashMap<(&str, &str, &str), Vec<&PodPlan>> = HashMap::new();
        for pod in pods {
            for (k, v) in &pod.labels {
                by_label.entry((&pod.key.namespace, k, v)).or_default().push(pod);
            }
        }
        Self { by_label }
    }

    /// Pods in `namespace` whose labels carry every pair of a non-empty `selector`.
    pub fn select(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<&'a PodPlan> {
        let candidates = selector
            .iter()
            .map(|(k, v)| {
                self.by_label.get(&(namespace, k.as_str(), v.as_str())).map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|pods| pods.len())
            .unwrap_or_default();
        candidates
            .iter()
            .copied()
            .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect()
    }
}

/// Plans every Pod that is not finished: its node (placing those that name none), its
/// addresses (allocated from its node's pod CIDRs where missing) and HostPorts. `pods` holds
/// the Pods of the manifests and those the workloads run; `described` tells whether Node
/// objects describe the cluster (else the one node there is takes every Pod).
pub fn plan_pods(
    pods: &[&BTreeMap<ObjectKey, Stored<PodRecord>>],
    nodes: &[NodePlan],
    described: bool,
    config: &PlanConfig,
    previous: &Allocations,
    allocations: &mut Allocations,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vec<PodPlan>, Vec<HostPort>) {
    let live: Vec<&Stored<PodRecord>> = by_age(pods.iter().flat_map(|m| m.values()), |p| p.created.as_ref())
        .into_iter()
        .filter(|p| !matches!(p.object.phase.as_deref(), Some("Succeeded" | "Failed")))
        .collect();
    let placed = place(&live, nodes, described, &config.local_node, previous, allocations, diagnostics);
    let allocated = allocate_ips(&live, &placed, nodes, config, previous, allocations, diagnostics);
    let mut plans = Vec::new();
    for pod in live {
        let record = &pod.object;
        let Some(node) = placed.get(&record.key) else { continue };
        let node_plan = nodes.iter().find(|n| &n.name == node);
        let (ips, allocated_ip) = if record.host_network {
            (node_plan.map(|n| n.addresses.clone()).unwrap_or_default(), false)
        } else if let Some(ips) = allocated.get(&record.key) {
            (ips.clone(), true)
        } else {
            (record.ips.clone(), false)
        };
        if ips.is_empty() {
            continue;
        }
        let zone = node_plan.and_then(|n| n.zone.clone());
        plans.push(pod_plan(record, Placement { node: node.clone(), zone }, ips, allocated_ip));
    }
    // HostPort clashes are settled oldest first; the plan lists Pods by name.
    let host_ports = host_ports(&plans, pods, diagnostics);
    plans.sort_by(|a, b| a.key.cmp(&b.key));
    (plans, host_ports)
}

/// Addresses for the Pods that have none, as a CNI plugin gives them: one from each of its
/// node's pod CIDRs (one per family), or from the configuration's pod CIDR where the node
/// has none. A Pod keeps what it had while it stays inside those ranges.
fn allocate_ips<'p>(
    live: &[&'p Stored<PodRecord>],
    placed: &HashMap<ObjectKey, String>,
    nodes: &[NodePlan],
    config: &PlanConfig,
    previous: &Allocations,
    allocations: &mut Allocations,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<ObjectKey, Vec<IpAddr>> {
    // Each range hands out to every Pod that needs one of its addresses, oldest first.
    let mut by_range: BTreeMap<IpNet, Vec<&'p Stored<PodRecord>>> = BTreeMap::new();
    for pod in live.iter().copied().filter(|p| p.object.ips.is_empty() && !p.object.host_network) {
        let Some(node) = placed.get(&pod.object.key) else { continue };
        for range in pod_ranges(nodes.iter().find(|n| &n.name == node), config) {
            by_range.entry(range).or_default().push(pod);
        }
    }
    let mut held: Holders<IpAddr> = live
        .iter()
        .flat_map(|p| p.object.ips.iter())
        .map(|ip| (*ip, String::from("a Pod manifest")))
        .collect();
    let mut allocated: HashMap<ObjectKey, Vec<IpAddr>> = HashMap::new();
    for (range, needing) in by_range {
        let claims: Vec<Claim<IpAddr>> = needing
            .iter()
            .map(|p| {
                let owner = p.object.key.to_string();
                let had = previous.pod_ips.get(&owner).into_iter().flatten().find(|ip| range.contains(*ip));
                Claim { previous: had.copied(), owner, requested: None }
            })
            .collect();
        let results = assign(&CidrPool::pods(range), &claims, &mut held, |_, _| false);
        for (pod, result) in needing.iter().zip(results) {
            match result {
                Ok(ip) => {
                    allocations.pod_ips.entry(pod.object.key.to_string()).or_default().push(ip);
                    allocated.entry(pod.object.key.clone()).or_default().push(ip);
                }
                Err(err) => diagnostics.push(
                    Diagnostic::error(format!("no Pod IP: {err}"))
                        .at(&pod.origin)
                        .on(ObjectRef::new("Pod", pod.object.key.clone()))
                        .field("status.podIP"),
                ),
            }
        }
    }
    allocated
}

/// The ranges a Pod on `node` gets addresses from: the first of each family of the node's
/// pod CIDRs, else the configuration's pod CIDR.
fn pod_ranges(node: Option<&NodePlan>, config: &PlanConfig) -> Vec<IpNet> {
    let cidrs = node.map(|n| n.pod_cidrs.as_slice()).unwrap_or_default();
    let v4 = cidrs.iter().find(|c| matches!(c, IpNet::V4(_)));
    let v6 = cidrs.iter().find(|c| matches!(c, IpNet::V6(_)));
    let mut ranges: Vec<IpNet> = cidrs.iter().filter(|c| Some(*c) == v4 || Some(*c) == v6).copied().collect();
    if ranges.is_empty() {
        ranges.push(config.pod_cidr);
    }
    ranges
}

/// Where a Pod runs.
struct Placement {
    node: String,
    zone: Option<String>,
}

fn pod_plan(pod: &PodRecord, at: Placement, ips: Vec<IpAddr>, allocated_ip: bool) -> PodPlan {
    let containers = pod
        .containers
        .iter()
        .map(|c| ContainerPlan {
            name: c.name.clone(),
            echo: is_echo(c.image.as_deref(), &c.argv),
            ports: c
                .ports
                .iter()
                .filter_map(|p| {
                    Some(ContainerPort {
                        name: p.name.clone(),
                        port: u16::try_from(p.container_port).ok()?,
                        protocol: Protocol::parse(p.protocol.as_deref())?,
                    })
                })
                .collect(),
        })
        .collect();
    PodPlan {
        key: pod.key.clone(),
        node: at.node,
        zone: at.zone,
        ips,
        allocated_ip,
        host_network: pod.host_network,
        // A Pod whose manifest carries no conditions is one standalone Portico runs.
        ready: pod.ready.unwrap_or(true),
        terminating: pod.deleting,
        hostname: pod.hostname.clone(),
        subdomain: pod.subdomain.clone(),
        service_account: pod.service_account.as_deref().unwrap_or(DEFAULT_SERVICE_ACCOUNT).to_owned(),
        labels: pod.labels.clone(),
        containers,
        owner: pod.owner.clone(),
    }
}

/// Whether a container asks for the built-in echo workload.
fn is_echo(image: Option<&str>, argv: &[String]) -> bool {
    let Some(image) = image else { return false };
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split(['@', ':']).next().unwrap_or(name);
    let first = argv.iter().find(|a| a.as_str() != "portico");
    name == "portico" && first.is_some_and(|a| a == "echo")
}

/// HostPorts per node; of two Pods wanting the same (hostIP, protocol, port), the older
/// keeps it (the scheduler would never have placed the other there).
fn host_ports(
    plans: &[PodPlan],
    pods: &[&BTreeMap<ObjectKey, Stored<PodRecord>>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<HostPort> {
    let mut out: Vec<(HostPort, WantedHostPort)> = Vec::new();
    for plan in plans {
        let Some(stored) = pods.iter().find_map(|m| m.get(&plan.key)) else { continue };
        let Some(pod_ip) = plan.ips.first().copied() else { continue };
        for wanted in wanted_host_ports(&stored.object) {
            let clash = out.iter().find(|(h, w)| h.node == plan.node && w.clashes(&wanted));
            if let Some((clash, _)) = clash {
                diagnostics.push(
                    Diagnostic::error(format!(
                        "hostPort {}/{} on node {} is already taken by Pod {}; not served",
                        wanted.host_port, wanted.protocol, plan.node, clash.pod
                    ))
                    .at(&stored.origin)
                    .on(ObjectRef::new("Pod", plan.key.clone()))
                    .field(format!("spec.containers[{}].ports[{}].hostPort", wanted.container, wanted.index)),
                );
                continue;
            }
            let host_port = HostPort {
                node: plan.node.clone(),
                host_ip: wanted.host_ip,
                protocol: wanted.protocol,
                host_port: wanted.host_port,
                pod: plan.key.clone(),
                pod_ip,
                container_port: wanted.container_port,
            };
            out.push((host_port, wanted));
        }
    }
    out.into_iter().map(|(h, _)| h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> PodPlan {
        PodPlan {
            key: ObjectKey::new(namespace, name),
            node: "n".into(),
            zone: None,
            ips: vec![IpAddr::from([127, 98, 0, 1])],
            allocated_ip: true,
            host_network: false,
            ready: true,
            terminating: false,
            hostname: None,
            subdomain: None,
            service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            containers: Vec::new(),
            owner: None,
        }
    }

    #[test]
    fn index_selects_by_every_pair_within_the_namespace() {
        let pods = vec![
            pod("a", "web-1", &[("app", "web"), ("tier", "front")]),
            pod("a", "web-2", &[("app", "web")]),
            pod("b", "web-3", &[("app", "web"), ("tier", "front")]),
        ];
        let index = PodIndex::new(&pods);
        let names = |ns: &str, sel: &[(&str, &str)]| {
            let sel: BTreeMap<String, String> =
                sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            index.select(ns, &sel).iter().map(|p| p.key.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names("a", &[("app", "web")]), vec!["web-1", "web-2"]);
        assert_eq!(names("a", &[("app", "web"), ("tier", "front")]), vec!["web-1"]);
        assert_eq!(names("b", &[("app", "web")]), vec!["web-3"]);
        assert!(names("a", &[("app", "db")]).is_empty());
    }

    #[test]
    fn echo_detection() {
        let args = vec!["echo".to_string()];
        assert!(is_echo(Some("ghcr.io/portico-dev/portico:0.1"), &args));
        assert!(is_echo(Some("portico"), &["portico".into(), "echo".into()]));
        assert!(!is_echo(Some("nginx"), &args));
        assert!(!is_echo(Some("portico"), &["run".into()]));
    }
}

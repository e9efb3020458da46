//! The scheduler's part: a node for every Pod that names none, chosen as kube-scheduler
//! would (a ready node, matching its `nodeSelector`, with its HostPorts free, the Pods of one
//! controller spread over the nodes), and the HostPorts each Pod asks for.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use portico_model::{Diagnostic, ObjectKey, ObjectRef, PodRecord, Stored};

use crate::alloc::Allocations;
use crate::{NodePlan, Protocol};

/// One HostPort a container asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WantedHostPort {
    /// Index of the container, for the field path.
    pub container: usize,
    /// Index of the port within the container.
    pub index: usize,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port on the node.
    pub host_port: u16,
    /// Only this node address (`None`: every address, also when written `0.0.0.0`).
    pub host_ip: Option<IpAddr>,
    /// The Pod's port.
    pub container_port: u16,
}

impl WantedHostPort {
    /// Whether two Pods asking for these could not share a node: the same protocol and port
    /// on the same address, or on every address.
    pub fn clashes(&self, other: &WantedHostPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// The HostPorts `pod` asks for; ports without a usable protocol or number are not asked
/// (validation reported them).
pub(crate) fn wanted_host_ports(pod: &PodRecord) -> Vec<WantedHostPort> {
    let mut out = Vec::new();
    for (container, c) in pod.containers.iter().enumerate() {
        for (index, port) in c.ports.iter().enumerate() {
            let Some(host_port) = port.host_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
            else {
                continue;
            };
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
            let Ok(container_port) = u16::try_from(port.container_port) else { continue };
            let host_ip = port
                .host_ip
                .as_deref()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .filter(|ip| !ip.is_unspecified());
            out.push(WantedHostPort { container, index, protocol, host_port, host_ip, container_port });
        }
    }
    out
}

/// What one node holds while Pods are placed.
#[derive(Default)]
struct Load<'a> {
    pods: usize,
    by_owner: HashMap<&'a ObjectRef, usize>,
    host_ports: Vec<WantedHostPort>,
}

/// The node of every Pod of `pods` (oldest first) that can run: its `spec.nodeName`, else a
/// node chosen here. When the manifests describe no nodes (`described` false), the one node
/// there is stands for the cluster and takes every Pod, its selectors unread. A Pod no node
/// fits stays pending (absent from the result) with a warning naming why.
pub(crate) fn place(
    pods: &[&Stored<PodRecord>],
    nodes: &[NodePlan],
    described: bool,
    local_node: &str,
    previous: &Allocations,
    allocations: &mut Allocations,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<ObjectKey, String> {
    let mut placed = HashMap::with_capacity(pods.len());
    if !described {
        for pod in pods {
            let node = pod.object.node_name.clone().unwrap_or_else(|| local_node.to_owned());
            placed.insert(pod.object.key.clone(), node);
        }
        return placed;
    }
    let mut loads: BTreeMap<&str, Load<'_>> =
        nodes.iter().map(|n| (n.name.as_str(), Load::default())).collect();
    // Pods bound to a node hold their place before the scheduler looks at the others.
    for pod in pods {
        let Some(node) = pod.object.node_name.as_deref() else { continue };
        if let Some(load) = loads.get_mut(node) {
            load.add(&pod.object);
        }
        placed.insert(pod.object.key.clone(), node.to_owned());
    }
    for pod in pods.iter().filter(|p| p.object.node_name.is_none()) {
        let record = &pod.object;
        let wanted = wanted_host_ports(record);
        let fits = |node: &NodePlan, load: &Load<'_>| -> Result<(), Misfit> {
            if !node.ready {
                return Err(Misfit::NotReady);
            }
            if !record.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
                return Err(Misfit::Selector);
            }
            if wanted.iter().any(|w| load.host_ports.iter().any(|h| h.clashes(w))) {
                return Err(Misfit::HostPort);
            }
            Ok(())
        };
        let owner = record.key.to_string();
        let kept = previous
            .pod_nodes
            .get(&owner)
            .and_then(|name| nodes.iter().find(|n| &n.name == name))
            .filter(|n| loads.get(n.name.as_str()).is_some_and(|load| fits(n, load).is_ok()));
        let chosen = kept.or_else(|| {
            nodes
                .iter()
                .filter(|n| loads.get(n.name.as_str()).is_some_and(|load| fits(n, load).is_ok()))
                .min_by_key(|n| loads.get(n.name.as_str()).map(|load| load.spread_key(record.owner.as_ref())))
        });
        let Some(node) = chosen else {
            let misfits: Vec<Misfit> = nodes
                .iter()
                .filter_map(|n| loads.get(n.name.as_str()).and_then(|load| fits(n, load).err()))
                .collect();
            let mut warning =
                Diagnostic::warning(format!("pending: no node can run it ({})", Misfit::summary(&misfits)))
                    .at(&pod.origin)
                    .on(ObjectRef::new("Pod", record.key.clone()));
            if misfits.contains(&Misfit::Selector) {
                warning = warning.field("spec.nodeSelector");
            }
            diagnostics.push(warning);
            continue;
        };
        if let Some(load) = loads.get_mut(node.name.as_str()) {
            load.add(record);
        }
        allocations.pod_nodes.insert(owner, node.name.clone());
        placed.insert(record.key.clone(), node.name.clone());
    }
    placed
}

impl<'a> Load<'a> {
    fn add(&mut self, pod: &'a PodRecord) {
        self.pods += 1;
        if let Some(owner) = &pod.owner {
            *self.by_owner.entry(owner).or_default() += 1;
        }
        self.host_ports.extend(wanted_host_ports(pod));
    }

    /// Fewer Pods of the same controller first (spreading its replicas, as the scheduler's
    /// default topology spread does), then fewer Pods in all; the first node on a tie.
    fn spread_key(&self, owner: Option<&ObjectRef>) -> (usize, usize) {
        (owner.and_then(|o| self.by_owner.get(o)).copied().unwrap_or(0), self.pods)
    }
}

/// Why a node cannot run a Pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misfit {
    NotReady,
    Selector,
    HostPort,
}

impl Misfit {
    /// "2 nodes not ready, 1 not matching its nodeSelector", as the scheduler's event says.
    fn summary(misfits: &[Misfit]) -> String {
        let count = |m: Misfit| misfits.iter().filter(|x| **x == m).count();
        let parts: Vec<String> = [
            (Misfit::NotReady, "not ready"),
            (Misfit::Selector, "not matching its nodeSelector"),
            (Misfit::HostPort, "without its hostPorts free"),
        ]
        .into_iter()
        .filter(|(m, _)| count(*m) > 0)
        .map(|(m, what)| format!("{} {} {what}", count(m), if count(m) == 1 { "node" } else { "nodes" }))
        .collect();
        if parts.is_empty() { "no nodes".to_owned() } else { parts.join(", ") }
    }
}

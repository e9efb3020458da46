//! The lab network as data, before anything is built: which namespaces, links, addresses,
//! routes and sysctls, and the `ip` commands that make them. Pure, so that what a lab would do
//! to a host is checked without root.
//!
//! The shape: namespace `<prefix>lan` holds bridge `br0`; each node (`<prefix>node-<i>`) and
//! `<prefix>outside` has `eth0` on it. Each Pod (`<prefix>pod-<namespace>-<name>`) has `eth0`
//! with its /32 and /128, the other end (`vp<k>`) in its node, which routes the Pod's
//! addresses to it and the other nodes' Pod CIDRs to their LAN addresses ("host-gw"). Pods'
//! default routes go through their node; nothing else has one, so nothing leaves the lab.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use portico_model::ObjectKey;
use portico_plan::{NodePlan, Plan, PodPlan};

use crate::addressing::{
    LAN_V4, LAN_V6, LB_POOL_V4, LB_POOL_V6, NodeIndex, OUTSIDE_V4, OUTSIDE_V6, POD_GATEWAY_V6,
};

/// The longest lab prefix: namespace names stay short enough to read in `ip netns list`.
pub const MAX_PREFIX_LEN: usize = 20;
/// The longest namespace name: it is a file name under `/run/netns`.
const MAX_NAMESPACE_LEN: usize = 255;
/// The longest interface name the kernel takes (IFNAMSIZ less the terminating zero).
pub const MAX_INTERFACE_LEN: usize = 15;
/// The bridge of the LAN namespace.
const BRIDGE: &str = "br0";
/// Every node's, `outside`'s and Pod's link towards the rest of the lab.
const ETH0: &str = "eth0";
/// `outside`'s port on the bridge.
const OUTSIDE_PORT: &str = "out";

/// Sysctls of every namespace: no duplicate address detection, so that IPv6 addresses
/// (link-local ones included) work the moment they are added instead of a second later.
const EVERY_NAMESPACE: [Sysctl; 2] = [
    Sysctl { key: "net.ipv6.conf.all.accept_dad", value: "0" },
    Sysctl { key: "net.ipv6.conf.default.accept_dad", value: "0" },
];
/// Sysctls of nodes: they route between their Pods and the LAN, and the kernel data plane
/// will DNAT NodePorts on 127.0.0.1 as kube-proxy does.
const NODE: [Sysctl; 3] = [
    Sysctl { key: "net.ipv4.ip_forward", value: "1" },
    Sysctl { key: "net.ipv6.conf.all.forwarding", value: "1" },
    Sysctl { key: "net.ipv4.conf.all.route_localnet", value: "1" },
];

/// A prefix that could name namespaces other than the lab's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "lab prefix {0:?} must be 1 to {MAX_PREFIX_LEN} lowercase letters, digits and hyphens ending in a hyphen (such as ptl123-), so that it names this lab's namespaces and no others"
)]
pub struct BadPrefix(pub String);

/// Checks that `prefix` can name a lab: lowercase letters, digits and hyphens, ending in a
/// hyphen so that lab `ptl1-` never claims lab `ptl12-`'s namespaces.
pub fn check_prefix(prefix: &str) -> Result<(), BadPrefix> {
    let ok = (2..=MAX_PREFIX_LEN).contains(&prefix.len())
        && prefix.ends_with('-')
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(BadPrefix(prefix.to_owned())) }
}

/// The whole lab network, described.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// What every namespace's name starts with.
    pub prefix: String,
    /// The namespaces: the LAN, `outside`, the nodes by number, the Pods by key.
    pub namespaces: Vec<Namespace>,
    /// Where each Pod of the lab runs: its own namespace, or its node's for a Pod on the
    /// host network.
    pub pods: BTreeMap<ObjectKey, String>,
    /// Nodes and Pods left out, and why.
    pub skipped: Vec<Skipped>,
}

/// One network namespace of the lab.
#[derive(Clone, Debug, PartialEq)]
pub struct Namespace {
    /// Its name under `ip netns`.
    pub name: String,
    /// What it stands for.
    pub role: Role,
    /// Sysctls set in it before any link exists, so new links inherit them.
    pub sysctls: Vec<Sysctl>,
    /// Links created from it (a veth's peer goes to another lab namespace).
    pub links: Vec<Link>,
    /// Its interfaces, brought up and addressed in this order.
    pub interfaces: Vec<Interface>,
    /// Its routes.
    pub routes: Vec<Route>,
}

/// What a namespace stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The LAN: a bridge and nothing else.
    Lan,
    /// A client on the LAN outside every node.
    Outside,
    /// A node.
    Node(NodeIndex),
    /// A Pod.
    Pod(ObjectKey),
}

/// Which group of namespaces is built when: each stage needs links the one before made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The LAN, which creates every node's and `outside`'s `eth0`.
    Lan,
    /// Nodes and `outside`, which address their `eth0`; nodes create their Pods' `eth0`.
    Hosts,
    /// Pods, which address their `eth0`.
    Pods,
}

impl Role {
    /// When a namespace of this role is built.
    pub fn stage(&self) -> Stage {
        match self {
            Role::Lan => Stage::Lan,
            Role::Outside | Role::Node(_) => Stage::Hosts,
            Role::Pod(_) => Stage::Pods,
        }
    }
}

/// A sysctl and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// Its name, e.g. `net.ipv4.ip_forward`.
    pub key: &'static str,
    /// Its value.
    pub value: &'static str,
}

/// A link a namespace creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// A bridge.
    Bridge {
        /// Its name.
        name: String,
    },
    /// A veth pair whose other end is created directly in another lab namespace.
    Veth {
        /// This end's name.
        name: String,
        /// The other end's name.
        peer: String,
        /// The namespace the other end is created in.
        peer_namespace: String,
    },
}

/// An interface of a namespace: brought up, enslaved and addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// The bridge it is a port of, if any.
    pub master: Option<String>,
    /// Its addresses.
    pub addresses: Vec<IpNet>,
}

/// A route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination; a prefix length of 0 is a default route.
    pub to: IpNet,
    /// The gateway, if not on-link.
    pub via: Option<IpAddr>,
    /// The interface.
    pub dev: String,
    /// The gateway is on the link though no address of the interface covers it.
    pub onlink: bool,
}

/// A node or Pod the lab leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// What, e.g. `node localhost` or `Pod default/web`.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// The commands that build one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The namespace.
    pub namespace: String,
    /// When it runs.
    pub stage: Stage,
    /// `key=value` for `sysctl -w`, run inside the namespace before any batch.
    pub sysctls: Vec<String>,
    /// Lines for `ip -n <namespace> -batch -`.
    pub lines: Vec<String>,
}

impl Batch {
    /// The command that sets the sysctls: `ip netns exec <namespace> sysctl -q -w …`.
    pub fn sysctl_argv(&self) -> Vec<String> {
        let mut argv: Vec<String> =
            ["ip", "netns", "exec", &self.namespace, "sysctl", "-q", "-w"].map(String::from).into();
        argv.extend(self.sysctls.iter().cloned());
        argv
    }

    /// The command the lines are fed to: `ip -n <namespace> -batch -`.
    pub fn ip_argv(&self) -> Vec<String> {
        ["ip", "-n", &self.namespace, "-batch", "-"].map(String::from).into()
    }
}

impl Layout {
    /// The lab `plan`'s nodes and Pods make, its namespaces named from `prefix`.
    pub fn from_plan(prefix: &str, plan: &Plan) -> Result<Layout, BadPrefix> {
        Layout::new(prefix, &plan.nodes, &plan.pods)
    }

    /// The lab for `nodes` and `pods`, its namespaces named from `prefix`. Only lab nodes
    /// (`lab-node-<i>` claiming no address or Pod CIDR but the lab's) and their Pods are in it;
    /// the rest is listed in [`Layout::skipped`]. The same input in any order gives the same
    /// layout.
    pub fn new(prefix: &str, nodes: &[NodePlan], pods: &[PodPlan]) -> Result<Layout, BadPrefix> {
        check_prefix(prefix)?;
        let mut skipped = Vec::new();
        let lab_nodes = lab_nodes(nodes, &mut skipped);
        let lan_name = format!("{prefix}lan");
        let outside_name = format!("{prefix}outside");
        let node_name = |i: NodeIndex| format!("{prefix}node-{i}");

        let mut sorted: Vec<&PodPlan> = pods.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let mut placed: BTreeMap<ObjectKey, String> = BTreeMap::new();
        let mut owners: BTreeMap<String, &ObjectKey> = BTreeMap::new();
        let mut pods_of: BTreeMap<NodeIndex, Vec<(String, PodAddresses)>> = BTreeMap::new();
        let mut pod_namespaces = Vec::new();
        for pod in sorted {
            let what = format!("Pod {}", pod.key);
            let Some(&i) = lab_nodes.get(pod.node.as_str()) else {
                let reason = format!("it runs on node {:?}, which is not a lab node", pod.node);
                skipped.push(Skipped { what, reason });
                continue;
            };
            if placed.contains_key(&pod.key) {
                skipped.push(Skipped { what, reason: "the Pod is listed twice".into() });
                continue;
            }
            let addresses = match pod_addresses(i, &pod.ips) {
                Ok(Some(addresses)) => addresses,
                // A Pod on the host network runs in its node's namespace.
                Ok(None) => {
                    placed.insert(pod.key.clone(), node_name(i));
                    continue;
                }
                Err(reason) => {
                    skipped.push(Skipped { what, reason });
                    continue;
                }
            };
            let name = format!("{prefix}pod-{}-{}", pod.key.namespace, pod.key.name);
            // `a-b/c` and `a/b-c` would share a name: the first keeps it.
            if let Some(other) = owners.get(&name) {
                let reason = format!("its namespace {name} is Pod {other}'s already");
                skipped.push(Skipped { what, reason });
                continue;
            }
            if name.len() > MAX_NAMESPACE_LEN {
                let reason = format!("its namespace name would be longer than {MAX_NAMESPACE_LEN} bytes");
                skipped.push(Skipped { what, reason });
                continue;
            }
            placed.insert(pod.key.clone(), name.clone());
            owners.insert(name.clone(), &pod.key);
            pods_of.entry(i).or_default().push((name.clone(), addresses));
            pod_namespaces.push((name, pod.key.clone(), i, addresses));
        }

        let mut indices: Vec<NodeIndex> = lab_nodes.values().copied().collect();
        indices.sort();
        let mut namespaces = vec![lan(&lan_name, &outside_name, &indices, node_name)];
        namespaces.push(outside(&outside_name, indices.first().copied()));
        for &i in &indices {
            let pods = pods_of.get(&i).map_or(&[][..], Vec::as_slice);
            namespaces.push(node(node_name(i), i, &indices, pods));
        }
        for (name, key, i, addresses) in pod_namespaces {
            namespaces.push(pod_namespace(name, key, i, addresses));
        }
        Ok(Layout { prefix: prefix.to_owned(), namespaces, pods: placed, skipped })
    }

    /// The namespace a Pod runs in (its node's for a Pod on the host network), if the lab has it.
    pub fn namespace_of(&self, pod: &ObjectKey) -> Option<&str> {
        self.pods.get(pod).map(String::as_str)
    }

    /// The namespace of a lab node, if the lab has it.
    pub fn node_namespace(&self, node: NodeIndex) -> Option<&str> {
        self.namespaces.iter().find(|n| n.role == Role::Node(node)).map(|n| n.name.as_str())
    }

    /// The namespace of the client outside every node.
    pub fn outside_namespace(&self) -> String {
        format!("{}outside", self.prefix)
    }

    /// The commands that build each namespace, in the order of [`Layout::namespaces`]; run
    /// every batch's sysctls first, then the batches stage by stage.
    pub fn commands(&self) -> Vec<Batch> {
        self.namespaces.iter().map(Namespace::batch).collect()
    }
}

impl Namespace {
    /// The commands that build it.
    fn batch(&self) -> Batch {
        let mut lines = Vec::new();
        for link in &self.links {
            lines.push(match link {
                // No multicast snooping: IPv6 neighbour discovery is flooded as on a plain switch.
                Link::Bridge { name } => format!("link add {name} type bridge mcast_snooping 0"),
                Link::Veth { name, peer, peer_namespace } => {
                    format!("link add {name} type veth peer name {peer} netns {peer_namespace}")
                }
            });
        }
        for interface in &self.interfaces {
            let name = &interface.name;
            if let Some(master) = &interface.master {
                lines.push(format!("link set {name} master {master}"));
            }
            lines.push(format!("link set {name} up"));
            for address in &interface.addresses {
                // The sysctls turn duplicate address detection off already; nodad says so here.
                let nodad = if address.addr().is_ipv6() { " nodad" } else { "" };
                lines.push(format!("addr add {address} dev {name}{nodad}"));
            }
        }
        for route in &self.routes {
            let to = if route.to.prefix_len() == 0 { "default".to_owned() } else { route.to.to_string() };
            let mut line = format!("route add {to}");
            if let Some(via) = route.via {
                line.push_str(&format!(" via {via}"));
            }
            line.push_str(&format!(" dev {}", route.dev));
            if route.onlink {
                line.push_str(" onlink");
            }
            lines.push(line);
        }
        Batch {
            namespace: self.name.clone(),
            stage: self.role.stage(),
            sysctls: self.sysctls.iter().map(|s| format!("{}={}", s.key, s.value)).collect(),
            lines,
        }
    }
}

/// A Pod's addresses, at most one per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PodAddresses {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

/// The lab nodes among `nodes`, by name; the others are skipped with their reason.
fn lab_nodes<'a>(nodes: &'a [NodePlan], skipped: &mut Vec<Skipped>) -> BTreeMap<&'a str, NodeIndex> {
    let mut found = BTreeMap::new();
    for node in nodes {
        let what = format!("node {}", node.name);
        let Some(i) = NodeIndex::of_name(&node.name) else {
            let reason = "only lab-node-1 to lab-node-200 are lab nodes".to_owned();
            skipped.push(Skipped { what, reason });
            continue;
        };
        if found.contains_key(node.name.as_str()) {
            skipped.push(Skipped { what, reason: "the node is listed twice".into() });
            continue;
        }
        // The lab gives each node its addresses; a node claiming others would have the
        // planner serve NodePorts and Pods on addresses no namespace has.
        if let Some(ip) = node.addresses.iter().find(|ip| !i.addresses().contains(ip)) {
            let reason = format!("it claims address {ip}, which the lab does not give it");
            skipped.push(Skipped { what, reason });
            continue;
        }
        if let Some(cidr) = node.pod_cidrs.iter().find(|c| !i.pod_cidrs().contains(c)) {
            let reason = format!("it claims Pod CIDR {cidr}, which the lab does not give it");
            skipped.push(Skipped { what, reason });
            continue;
        }
        found.insert(node.name.as_str(), i);
    }
    found
}

/// A Pod's addresses on node `i`: `None` for a Pod on the host network (its addresses are the
/// node's); an error naming the first address the lab cannot give it.
fn pod_addresses(i: NodeIndex, ips: &[IpAddr]) -> Result<Option<PodAddresses>, String> {
    if !ips.is_empty() && ips.iter().all(|ip| i.addresses().contains(ip)) {
        return Ok(None);
    }
    let mut addresses = PodAddresses { v4: None, v6: None };
    for ip in ips {
        match *ip {
            IpAddr::V4(v4) => {
                let cidr = i.pod_cidr_v4();
                if !cidr.contains(&v4) || v4 == cidr.network() || v4 == cidr.broadcast() {
                    return Err(format!("its address {v4} is not a host of its node's Pod CIDR {cidr}"));
                }
                if v4 == i.pod_gateway_v4() {
                    return Err(format!("its address {v4} is its node's gateway for Pods"));
                }
                if addresses.v4.replace(v4).is_some() {
                    return Err("it has two IPv4 addresses".into());
                }
            }
            IpAddr::V6(v6) => {
                let cidr = i.pod_cidr_v6();
                if !cidr.contains(&v6) || v6 == cidr.network() {
                    return Err(format!("its address {v6} is not a host of its node's Pod CIDR {cidr}"));
                }
                if addresses.v6.replace(v6).is_some() {
                    return Err("it has two IPv6 addresses".into());
                }
            }
        }
    }
    match addresses {
        PodAddresses { v4: None, v6: None } => Err("it has no address".into()),
        _ => Ok(Some(addresses)),
    }
}

/// The loopback interface, up and with the addresses the kernel gives it.
fn loopback() -> Interface {
    Interface { name: "lo".into(), master: None, addresses: Vec::new() }
}

/// A bridge port named `n<i>` for node `i`.
fn lan_port(i: NodeIndex) -> String {
    format!("n{i}")
}

/// The LAN: bridge `br0`, one port per node and one for `outside`, each the peer of their `eth0`.
fn lan(name: &str, outside: &str, nodes: &[NodeIndex], node_name: impl Fn(NodeIndex) -> String) -> Namespace {
    let mut links = vec![Link::Bridge { name: BRIDGE.into() }];
    let mut interfaces =
        vec![loopback(), Interface { name: BRIDGE.into(), master: None, addresses: Vec::new() }];
    let ports =
        nodes.iter().map(|&i| (lan_port(i), node_name(i))).chain([(OUTSIDE_PORT.into(), outside.into())]);
    for (port, peer_namespace) in ports {
        links.push(Link::Veth { name: port.clone(), peer: ETH0.into(), peer_namespace });
        interfaces.push(Interface { name: port, master: Some(BRIDGE.into()), addresses: Vec::new() });
    }
    Namespace {
        name: name.into(),
        role: Role::Lan,
        sysctls: EVERY_NAMESPACE.to_vec(),
        links,
        interfaces,
        routes: Vec::new(),
    }
}

/// `eth0` on the LAN with `v4` and `v6`.
fn lan_interface(v4: Ipv4Addr, v6: Ipv6Addr) -> Interface {
    Interface {
        name: ETH0.into(),
        master: None,
        addresses: vec![
            IpNet::V4(Ipv4Net::new_assert(v4, LAN_V4.prefix_len())),
            IpNet::V6(Ipv6Net::new_assert(v6, LAN_V6.prefix_len())),
        ],
    }
}

/// `outside`: on the LAN, with the LoadBalancer pools routed through node `via` (a stand-in
/// for the L2 announcement that will come), and no other route.
fn outside(name: &str, via: Option<NodeIndex>) -> Namespace {
    let routes = via.map_or_else(Vec::new, |i| {
        vec![
            Route { to: LB_POOL_V4.into(), via: Some(i.v4().into()), dev: ETH0.into(), onlink: false },
            Route { to: LB_POOL_V6.into(), via: Some(i.v6().into()), dev: ETH0.into(), onlink: false },
        ]
    });
    Namespace {
        name: name.into(),
        role: Role::Outside,
        sysctls: EVERY_NAMESPACE.to_vec(),
        links: Vec::new(),
        interfaces: vec![loopback(), lan_interface(OUTSIDE_V4, OUTSIDE_V6)],
        routes,
    }
}

/// Node `i`: on the LAN, one veth per Pod (`vp<k>`, k from 1) carrying the Pods' gateways and
/// routes, and the other nodes' Pod CIDRs routed to them.
fn node(name: String, i: NodeIndex, nodes: &[NodeIndex], pods: &[(String, PodAddresses)]) -> Namespace {
    let mut links = Vec::new();
    let mut interfaces = vec![loopback(), lan_interface(i.v4(), i.v6())];
    let mut routes = Vec::new();
    for (k, (pod_namespace, addresses)) in pods.iter().enumerate() {
        let port = format!("vp{}", k + 1);
        links.push(Link::Veth {
            name: port.clone(),
            peer: ETH0.into(),
            peer_namespace: pod_namespace.clone(),
        });
        // Every Pod's link has the same gateway addresses: one IPv4 address may sit on many
        // interfaces, and link-local ones belong to their link.
        interfaces.push(Interface {
            name: port.clone(),
            master: None,
            addresses: vec![
                IpNet::V4(Ipv4Net::new_assert(i.pod_gateway_v4(), 32)),
                IpNet::V6(Ipv6Net::new_assert(POD_GATEWAY_V6, 64)),
            ],
        });
        if let Some(v4) = addresses.v4 {
            routes.push(Route { to: Ipv4Net::from(v4).into(), via: None, dev: port.clone(), onlink: false });
        }
        if let Some(v6) = addresses.v6 {
            routes.push(Route { to: Ipv6Net::from(v6).into(), via: None, dev: port.clone(), onlink: false });
        }
    }
    for &other in nodes.iter().filter(|&&n| n != i) {
        routes.push(Route {
            to: other.pod_cidr_v4().into(),
            via: Some(other.v4().into()),
            dev: ETH0.into(),
            onlink: false,
        });
        routes.push(Route {
            to: other.pod_cidr_v6().into(),
            via: Some(other.v6().into()),
            dev: ETH0.into(),
            onlink: false,
        });
    }
    let sysctls = EVERY_NAMESPACE.iter().chain(&NODE).copied().collect();
    Namespace { name, role: Role::Node(i), sysctls, links, interfaces, routes }
}

/// A Pod on node `i`: `eth0` (created by the node) with its addresses and default routes
/// through the node.
fn pod_namespace(name: String, key: ObjectKey, i: NodeIndex, addresses: PodAddresses) -> Namespace {
    let mut routes = Vec::new();
    let mut nets = Vec::new();
    if let Some(v4) = addresses.v4 {
        nets.push(IpNet::V4(v4.into()));
        // The gateway is outside the Pod's /32, so it is declared on the link.
        routes.push(Route {
            to: IpNet::V4(Ipv4Net::default()),
            via: Some(i.pod_gateway_v4().into()),
            dev: ETH0.into(),
            onlink: true,
        });
    }
    if let Some(v6) = addresses.v6 {
        nets.push(IpNet::V6(v6.into()));
        routes.push(Route {
            to: IpNet::V6(Ipv6Net::default()),
            via: Some(POD_GATEWAY_V6.into()),
            dev: ETH0.into(),
            onlink: false,
        });
    }
    Namespace {
        name,
        role: Role::Pod(key),
        sysctls: EVERY_NAMESPACE.to_vec(),
        links: Vec::new(),
        interfaces: vec![loopback(), Interface { name: ETH0.into(), master: None, addresses: nets }],
        routes,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use portico_plan::Allocations;
    use portico_testkit::manifests::Pod;
    use portico_testkit::plan::planned_with;

    use super::*;
    use crate::addressing::{in_lab, plan_config};
    use crate::nodes::nodes_manifest;

    const PREFIX: &str = "ptlu-";

    /// A Pod on `node` with `ips`.
    fn pod(name: &str, node: &str, ips: &[&str]) -> String {
        let pod = Pod::new(name).spec(&format!("  nodeName: {node}\n"));
        ips.iter().fold(pod, |p, ip| p.ip(ip)).to_string()
    }

    /// Two lab nodes, three Pods of the lab, one on the host network and four the lab leaves out.
    fn plan() -> Plan {
        let yaml = [
            nodes_manifest(2).expect("2 nodes"),
            pod("a", "lab-node-1", &["198.19.1.2", "2001:db8:1:1::2"]),
            pod("b", "lab-node-1", &["198.19.1.3", "2001:db8:1:1::3"]),
            pod("c", "lab-node-2", &["198.19.2.2", "2001:db8:1:2::2"]),
            Pod::new("host").spec("  nodeName: lab-node-2\n  hostNetwork: true\n").to_string(),
            pod("far", "elsewhere", &["10.0.0.5"]),
            pod("stray", "lab-node-1", &["198.19.2.9"]),
            pod("gateway", "lab-node-1", &["198.19.1.1"]),
            pod("twice", "lab-node-1", &["2001:db8:1:1::7", "2001:db8:1:1::8"]),
        ]
        .concat();
        planned_with(&yaml, &plan_config(), &Allocations::default(), 1).without_errors().plan
    }

    fn layout() -> Layout {
        Layout::from_plan(PREFIX, &plan()).expect("layout")
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn namespaces_pods_and_what_is_left_out() {
        let layout = layout();
        let names: Vec<&str> = layout.namespaces.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ptlu-lan",
                "ptlu-outside",
                "ptlu-node-1",
                "ptlu-node-2",
                "ptlu-pod-default-a",
                "ptlu-pod-default-b",
                "ptlu-pod-default-c"
            ]
        );
        assert_eq!(layout.namespace_of(&key("a")), Some("ptlu-pod-default-a"));
        assert_eq!(layout.namespace_of(&key("host")), Some("ptlu-node-2"), "host network: its node");
        assert_eq!(layout.namespace_of(&key("far")), None);
        assert_eq!(layout.node_namespace(NodeIndex::new(2).expect("2")), Some("ptlu-node-2"));
        assert_eq!(layout.outside_namespace(), "ptlu-outside");
        let skipped: Vec<(&str, &str)> =
            layout.skipped.iter().map(|s| (s.what.as_str(), s.reason.as_str())).collect();
        assert_eq!(
            skipped,
            [
                ("Pod default/far", "it runs on node \"elsewhere\", which is not a lab node"),
                ("Pod default/gateway", "its address 198.19.1.1 is its node's gateway for Pods"),
                (
                    "Pod default/stray",
                    "its address 198.19.2.9 is not a host of its node's Pod CIDR 198.19.1.0/24"
                ),
                ("Pod default/twice", "it has two IPv6 addresses"),
            ]
        );
    }

    #[test]
    fn nodes_that_claim_what_the_lab_does_not_give_are_left_out() {
        let mut plan = plan();
        let mut impostor = plan.nodes[0].clone();
        impostor.name = "lab-node-3".into();
        let mut foreign = plan.nodes[0].clone();
        foreign.name = "localhost".into();
        let mut cidr = plan.nodes[1].clone();
        cidr.pod_cidrs = vec!["198.19.9.0/24".parse().expect("cidr")];
        plan.nodes = vec![plan.nodes[0].clone(), impostor, foreign, cidr];
        let layout = Layout::from_plan(PREFIX, &plan).expect("layout");
        let skipped: Vec<String> =
            layout.skipped.iter().map(|s| format!("{}: {}", s.what, s.reason)).collect();
        assert_eq!(
            &skipped[..3],
            [
                "node lab-node-3: it claims address 198.18.0.11, which the lab does not give it",
                "node localhost: only lab-node-1 to lab-node-200 are lab nodes",
                "node lab-node-2: it claims Pod CIDR 198.19.9.0/24, which the lab does not give it",
            ]
        );
        assert!(
            skipped
                .contains(&"Pod default/c: it runs on node \"lab-node-2\", which is not a lab node".into())
        );
        assert!(!layout.namespaces.iter().any(|n| n.name.contains("node-2") || n.name.contains("node-3")));
    }

    #[test]
    fn each_namespace_gets_the_commands_of_the_design() {
        let batches = layout().commands();
        let of = |name: &str| batches.iter().find(|b| b.namespace == name).expect(name);
        let lan = of("ptlu-lan");
        assert_eq!(lan.stage, Stage::Lan);
        assert_eq!(
            lan.lines,
            [
                "link add br0 type bridge mcast_snooping 0",
                "link add n1 type veth peer name eth0 netns ptlu-node-1",
                "link add n2 type veth peer name eth0 netns ptlu-node-2",
                "link add out type veth peer name eth0 netns ptlu-outside",
                "link set lo up",
                "link set br0 up",
                "link set n1 master br0",
                "link set n1 up",
                "link set n2 master br0",
                "link set n2 up",
                "link set out master br0",
                "link set out up",
            ]
        );
        let node = of("ptlu-node-1");
        assert_eq!(node.stage, Stage::Hosts);
        assert_eq!(
            node.sysctls,
            [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.route_localnet=1",
            ]
        );
        assert_eq!(
            node.lines,
            [
                "link add vp1 type veth peer name eth0 netns ptlu-pod-default-a",
                "link add vp2 type veth peer name eth0 netns ptlu-pod-default-b",
                "link set lo up",
                "link set eth0 up",
                "addr add 198.18.0.11/24 dev eth0",
                "addr add 2001:db8::11/64 dev eth0 nodad",
                "link set vp1 up",
                "addr add 198.19.1.1/32 dev vp1",
                "addr add fe80::1/64 dev vp1 nodad",
                "link set vp2 up",
                "addr add 198.19.1.1/32 dev vp2",
                "addr add fe80::1/64 dev vp2 nodad",
                "route add 198.19.1.2/32 dev vp1",
                "route add 2001:db8:1:1::2/128 dev vp1",
                "route add 198.19.1.3/32 dev vp2",
                "route add 2001:db8:1:1::3/128 dev vp2",
                "route add 198.19.2.0/24 via 198.18.0.12 dev eth0",
                "route add 2001:db8:1:2::/64 via 2001:db8::12 dev eth0",
            ]
        );
        assert_eq!(
            of("ptlu-outside").lines[4..],
            [
                "route add 198.18.1.0/24 via 198.18.0.11 dev eth0",
                "route add 2001:db8:1b::/120 via 2001:db8::11 dev eth0",
            ]
        );
        let pod = of("ptlu-pod-default-c");
        assert_eq!(pod.stage, Stage::Pods);
        assert_eq!(pod.sysctls, ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]);
        assert_eq!(
            pod.lines,
            [
                "link set lo up",
                "link set eth0 up",
                "addr add 198.19.2.2/32 dev eth0",
                "addr add 2001:db8:1:2::2/128 dev eth0 nodad",
                "route add default via 198.19.2.1 dev eth0 onlink",
                "route add default via fe80::1 dev eth0",
            ]
        );
        assert_eq!(pod.ip_argv(), ["ip", "-n", "ptlu-pod-default-c", "-batch", "-"]);
        assert_eq!(
            pod.sysctl_argv()[..7],
            ["ip", "netns", "exec", "ptlu-pod-default-c", "sysctl", "-q", "-w"]
        );
    }

    /// The words of a line that name an interface.
    fn interface_names(line: &str) -> Vec<&str> {
        let words: Vec<&str> = line.split(' ').collect();
        let mut names: Vec<&str> = words
            .windows(2)
            .filter(|w| ["dev", "name", "master", "set"].contains(&w[0]))
            .map(|w| w[1])
            .collect();
        if let ["link", "add", name, ..] = words[..] {
            names.push(name);
        }
        names
    }

    #[test]
    fn every_command_stays_in_the_lab() {
        let layout = layout();
        let batches = layout.commands();
        assert_eq!(batches.len(), layout.namespaces.len());
        let lab: BTreeSet<&str> = layout.namespaces.iter().map(|n| n.name.as_str()).collect();
        for batch in &batches {
            let ns = batch.namespace.as_str();
            assert!(ns.starts_with(PREFIX) && lab.contains(ns), "{ns}");
            // Each command runs in the namespace: ip's -n, or ip netns exec.
            assert_eq!(batch.ip_argv()[1..3], ["-n", ns]);
            assert_eq!(batch.sysctl_argv()[1..4], ["netns", "exec", ns]);
            for line in &batch.lines {
                let words: Vec<&str> = line.split(' ').collect();
                for pair in words.windows(2).filter(|w| w[0] == "netns") {
                    assert!(lab.contains(pair[1]), "{ns}: {line}: a peer outside the lab");
                }
                for word in &words {
                    let ip = match (word.parse::<IpNet>(), word.parse::<IpAddr>()) {
                        (Ok(net), _) => net.addr(),
                        (_, Ok(ip)) => ip,
                        _ => continue,
                    };
                    let gateway = ip == IpAddr::V6(POD_GATEWAY_V6);
                    assert!(in_lab(ip) || gateway, "{ns}: {line}: {ip} is outside the lab's ranges");
                }
                if words.contains(&"default") {
                    assert_eq!(batch.stage, Stage::Pods, "{ns}: {line}: only Pods have a default route");
                    assert!(line.contains(" via "), "{ns}: {line}");
                }
                for name in interface_names(line) {
                    assert!(name.len() <= MAX_INTERFACE_LEN, "{ns}: {line}: {name} is too long");
                }
            }
        }
        for namespace in &layout.namespaces {
            for route in &namespace.routes {
                let to = route.to;
                match namespace.role {
                    Role::Pod(_) => {
                        assert_eq!(to.prefix_len(), 0, "{}: Pods only route to their node", namespace.name)
                    }
                    Role::Outside => assert!([IpNet::from(LB_POOL_V4), LB_POOL_V6.into()].contains(&to)),
                    Role::Node(_) => {
                        assert!(in_lab(to.network()) && to.prefix_len() > 0, "{}: {to}", namespace.name)
                    }
                    Role::Lan => panic!("the LAN routes nothing"),
                }
            }
        }
    }

    #[test]
    fn interface_names_stay_short_and_namespace_names_within_a_file_name() {
        let mut plan = plan();
        let long = ["x".repeat(63), "y".repeat(63), "z".repeat(63), "w".repeat(61)].join(".");
        let a = plan.pods.iter().find(|p| p.key.name == "a").expect("a").clone();
        for k in 4..=253u8 {
            let mut pod = a.clone();
            pod.key = key(&format!("p{k}"));
            pod.ips = vec![IpAddr::from([198, 19, 1, k])];
            plan.pods.push(pod);
        }
        let mut too_long = plan.pods.iter().find(|p| p.key.name == "c").expect("c").clone();
        too_long.key = key(&long);
        plan.pods.push(too_long);
        let layout = Layout::from_plan(PREFIX, &plan).expect("layout");
        assert!(layout.namespaces.iter().all(|n| n.name.len() <= MAX_NAMESPACE_LEN));
        assert_eq!(layout.pods.len(), 3 + 250 + 1, "a, b, c, p4 to p253 and the host network Pod");
        let reason = layout.skipped.iter().find(|s| s.what.ends_with(&long)).map(|s| s.reason.as_str());
        assert_eq!(reason, Some("its namespace name would be longer than 255 bytes"));
        for namespace in &layout.namespaces {
            for link in &namespace.links {
                let (Link::Bridge { name } | Link::Veth { name, .. }) = link;
                assert!(name.len() <= MAX_INTERFACE_LEN, "{name}");
            }
        }
        let lines: Vec<String> = layout.commands().into_iter().flat_map(|b| b.lines).collect();
        assert!(lines.iter().any(|l| l.ends_with("dev vp252")), "252 Pods on node 1");
        for line in &lines {
            for name in interface_names(line) {
                assert!(name.len() <= MAX_INTERFACE_LEN, "{line}: {name}");
            }
        }
    }

    #[test]
    fn two_pods_whose_names_would_share_a_namespace_are_not_both_built() {
        let mut plan = plan();
        let c = plan.pods.iter().find(|p| p.key.name == "c").expect("c").clone();
        let mut first = c.clone();
        first.key = ObjectKey::new("x-y", "z");
        let mut second = c;
        second.key = ObjectKey::new("x", "y-z");
        second.ips = vec![IpAddr::from([198, 19, 2, 3])];
        plan.pods.extend([first, second]);
        let layout = Layout::from_plan(PREFIX, &plan).expect("layout");
        assert_eq!(layout.namespace_of(&ObjectKey::new("x", "y-z")), Some("ptlu-pod-x-y-z"), "first by key");
        assert_eq!(layout.namespace_of(&ObjectKey::new("x-y", "z")), None);
        assert!(layout.skipped.contains(&Skipped {
            what: "Pod x-y/z".into(),
            reason: "its namespace ptlu-pod-x-y-z is Pod x/y-z's already".into(),
        }));
    }

    #[test]
    fn the_same_input_in_any_order_gives_the_same_commands() {
        let plan = plan();
        let first = Layout::from_plan(PREFIX, &plan).expect("layout");
        let mut nodes = plan.nodes.clone();
        let mut pods = plan.pods.clone();
        nodes.reverse();
        pods.reverse();
        let second = Layout::new(PREFIX, &nodes, &pods).expect("layout");
        assert_eq!(first, second);
        assert_eq!(first.commands(), second.commands());
    }

    #[test]
    fn a_prefix_names_one_lab_only() {
        for good in ["ptl1-", "ptl12345a-", "a-"] {
            assert_eq!(check_prefix(good), Ok(()), "{good}");
        }
        for bad in ["", "-", "ptl1", "PTL-", "ptl_1-", "ptl 1-", "a-very-long-prefix-of-21-", "../x-"] {
            assert_eq!(check_prefix(bad), Err(BadPrefix(bad.into())), "{bad:?}");
            assert_eq!(Layout::new(bad, &[], &[]), Err(BadPrefix(bad.into())));
        }
    }
}

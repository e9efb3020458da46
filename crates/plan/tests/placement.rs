//! Pods placed on the nodes the manifests describe, as a scheduler and a CNI plugin would:
//! ready nodes, nodeSelectors, HostPorts, spread, addresses from the node's pod CIDRs.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use ipnet::IpNet;
use portico_plan::{Allocations, Plan, PlanConfig, PodPlan};
use portico_testkit::plan::{Planned, planned_with};

const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {disk: ssd}}
spec: {podCIDRs: [198.19.1.0/24, '2001:db8:1:1::/64'], podCIDR: 198.19.1.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 198.19.2.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.12}]}
---
apiVersion: v1
kind: Node
metadata: {name: n3}
spec: {podCIDR: 198.19.3.0/24}
status:
  addresses: [{type: InternalIP, address: 198.18.0.13}]
  conditions: [{type: Ready, status: 'False'}]
---
";

/// A Pod without a node, with a `nodeSelector` and HostPort when given.
fn pod(name: &str, selector: &str, host_port: Option<u16>) -> String {
    let host_port = host_port.map(|p| format!(", hostPort: {p}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeSelector: {{{selector}}}\n  containers: [{{name: c, image: x, ports: [{{containerPort: 80{host_port}}}]}}]\n---\n"
    )
}

fn workload(kind: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{extra}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      nodeSelector: {{}}\n      containers: [{{name: c, image: x}}]\n---\n"
    )
}

/// The lab's way: the node agent names itself one of the Node objects.
fn config() -> PlanConfig {
    PlanConfig { local_node: "n1".into(), ..PlanConfig::default() }
}

fn plan(yaml: &str, previous: &Allocations) -> Planned {
    planned_with(yaml, &config(), previous, 1)
}

fn find<'p>(plan: &'p Plan, name: &str) -> &'p PodPlan {
    plan.pods.iter().find(|p| p.key.name == name).unwrap_or_else(|| panic!("no Pod {name}"))
}

fn per_node<'p>(plan: &'p Plan, prefix: &str) -> BTreeMap<&'p str, usize> {
    let mut count = BTreeMap::new();
    for p in plan.pods.iter().filter(|p| p.key.name.starts_with(prefix)) {
        *count.entry(p.node.as_str()).or_default() += 1;
    }
    count
}

fn cidr(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn pods_go_to_ready_nodes_that_match_spread_per_controller() {
    let yaml = [
        NODES.to_owned(),
        workload("Deployment", "web", "  replicas: 4\n"),
        workload("Deployment", "api", "  replicas: 2\n"),
        pod("fast", "disk: ssd", None),
        pod("nowhere", "disk: hdd", None),
    ]
    .concat();
    let planned = plan(&yaml, &Allocations::default());
    assert!(planned.loading.is_empty(), "{:?}", planned.loading);
    let plan = &planned.plan;
    assert_eq!(plan.nodes.len(), 3, "the local node is one of the Node objects");
    assert_eq!(per_node(plan, "web-"), BTreeMap::from([("n1", 2), ("n2", 2)]), "spread, never on n3");
    assert_eq!(per_node(plan, "api-"), BTreeMap::from([("n1", 1), ("n2", 1)]), "each controller spread");
    assert_eq!(find(plan, "fast").node, "n1", "only n1 has disk: ssd");
    assert!(plan.pods.iter().all(|p| p.key.name != "nowhere"), "no node matches: pending");
    let pending: Vec<_> = planned
        .planning
        .iter()
        .filter(|d| d.object.as_ref().is_some_and(|o| o.key.name == "nowhere"))
        .collect();
    assert_eq!(pending.len(), 1, "{:?}", planned.planning);
    assert_eq!(pending[0].field.as_deref(), Some("spec.nodeSelector"));
    assert!(pending[0].message.contains("1 node not ready"), "{}", pending[0].message);
    assert!(pending[0].message.contains("2 nodes not matching its nodeSelector"), "{}", pending[0].message);
}

#[test]
fn pod_ips_come_from_their_nodes_pod_cidrs_one_per_family() {
    let yaml = [NODES.to_owned(), workload("Deployment", "web", "  replicas: 4\n")].concat();
    let plan = plan(&yaml, &Allocations::default()).plan;
    let mut seen = Vec::new();
    for p in plan.pods.iter().filter(|p| p.key.name.starts_with("web-")) {
        let ranges: Vec<IpNet> = match p.node.as_str() {
            "n1" => vec![cidr("198.19.1.0/24"), cidr("2001:db8:1:1::/64")],
            "n2" => vec![cidr("198.19.2.0/24")],
            other => panic!("{} on {other}", p.key),
        };
        assert_eq!(p.ips.len(), ranges.len(), "{}: one address per family of its node: {:?}", p.key, p.ips);
        for (ip, range) in p.ips.iter().zip(&ranges) {
            assert!(range.contains(ip), "{}: {ip} outside {range}", p.key);
            assert!(*ip != range.network(), "{}: the network address", p.key);
        }
        assert!(p.allocated_ip);
        seen.extend(p.ips.iter().copied());
    }
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no address twice: {seen:?}");
}

#[test]
fn host_ports_keep_pods_apart_and_a_pod_with_none_free_is_pending() {
    let yaml =
        [NODES.to_owned(), pod("a", "", Some(18000)), pod("b", "", Some(18000)), pod("c", "", Some(18000))]
            .concat();
    let planned = plan(&yaml, &Allocations::default());
    let plan = &planned.plan;
    assert_ne!(find(plan, "a").node, find(plan, "b").node, "one HostPort 18000 per node");
    assert!(plan.pods.iter().all(|p| p.key.name != "c"), "the two ready nodes hold 18000");
    let served: Vec<(&str, &str)> =
        plan.host_ports.iter().map(|h| (h.pod.name.as_str(), h.node.as_str())).collect();
    assert_eq!(served.len(), 2, "{served:?}");
    for (pod, node) in served {
        assert_eq!(find(plan, pod).node, node, "a HostPort is opened only on its Pod's node");
    }
    let message = &planned
        .planning
        .iter()
        .find(|d| d.object.as_ref().is_some_and(|o| o.key.name == "c"))
        .unwrap()
        .message;
    assert!(message.contains("2 nodes without its hostPorts free"), "{message}");
    assert!(planned.errors().is_empty(), "placement avoids clashes instead of reporting them");
}

#[test]
fn daemon_sets_run_on_every_selected_node_even_not_ready() {
    let selective =
        workload("DaemonSet", "ssd-agent", "").replace("nodeSelector: {}", "nodeSelector: {disk: ssd}");
    let yaml = [NODES.to_owned(), workload("DaemonSet", "agent", ""), selective].concat();
    let plan = plan(&yaml, &Allocations::default()).plan;
    assert_eq!(per_node(&plan, "agent-"), BTreeMap::from([("n1", 1), ("n2", 1), ("n3", 1)]));
    assert_eq!(per_node(&plan, "ssd-agent-"), BTreeMap::from([("n1", 1)]));
    assert!(cidr("198.19.3.0/24").contains(&find(&plan, "agent-n3").ips[0]));
}

#[test]
fn placements_and_addresses_stay_when_the_cluster_changes() {
    let yaml = [NODES.to_owned(), workload("Deployment", "web", "  replicas: 4\n")].concat();
    let first = plan(&yaml, &Allocations::default());
    // An older Deployment comes first in the next placement: without the previous
    // allocations it would take the places web's Pods had.
    let older = workload("Deployment", "old", "  replicas: 3\n")
        .replace("metadata: {name: old}", "metadata: {name: old, creationTimestamp: '2020-01-01T00:00:00Z'}");
    let second = plan(&format!("{yaml}{older}"), &first.allocations);
    for p in first.plan.pods.iter() {
        let again = find(&second.plan, &p.key.name);
        assert_eq!((&again.node, &again.ips), (&p.node, &p.ips), "{} moved", p.key);
    }
    assert_eq!(per_node(&second.plan, "old-").values().sum::<usize>(), 3);
}

#[test]
fn without_node_objects_one_node_runs_every_pod_its_selectors_unread() {
    let yaml = [
        pod("fast", "disk: ssd", None),
        workload("DaemonSet", "agent", "").replace("nodeSelector: {}", "nodeSelector: {disk: ssd}"),
    ]
    .concat();
    let planned = planned_with(&yaml, &PlanConfig::default(), &Allocations::default(), 1);
    let local = PlanConfig::default().local_node;
    assert_eq!(find(&planned.plan, "fast").node, local);
    assert_eq!(find(&planned.plan, &format!("agent-{local}")).node, local);
    assert!(PlanConfig::default().pod_cidr.contains(&find(&planned.plan, "fast").ips[0]));
    assert!(planned.diagnostics().is_empty(), "{:?}", planned.diagnostics());
}

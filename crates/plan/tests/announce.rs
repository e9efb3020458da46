//! Which node announces each LoadBalancer address: the same answer on every agent for the same
//! manifests, only nodes an `L2Advertisement` selects and that are ready, only nodes with a
//! ready local endpoint under `externalTrafficPolicy: Local`, an even spread, and a node's
//! going moving only its own addresses.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use portico_plan::announce::{Announcement, rank};
use portico_plan::{Allocations, PlanConfig};
use portico_testkit::plan::{Planned, planned_with};

/// Nodes `names`, labelled `zone: z<i>`; `unready` ones say so.
fn nodes(names: &[&str], unready: &[&str]) -> String {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ready = if unready.contains(n) { "False" } else { "True" };
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {n}, labels: {{zone: z{i}}}}}\nstatus: {{conditions: [{{type: Ready, status: '{ready}'}}]}}\n---\n"
            )
        })
        .collect()
}

const POOLS: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: announced, namespace: metallb-system, labels: {l2: 'yes'}}
spec: {addresses: [198.18.1.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: silent, namespace: metallb-system}
spec: {addresses: [198.18.2.0/24], autoAssign: false}
---
";

/// A LoadBalancer Service with `spec` lines (indented by two), and an EndpointSlice with one
/// ready endpoint on each of `on`.
fn service(name: &str, spec: &str, on: &[&str]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n{spec}---\n"
    );
    if !on.is_empty() {
        out += &format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n"
        );
        for (i, node) in on.iter().enumerate() {
            out += &format!(
                "- {{addresses: ['198.19.0.{}'], nodeName: {node}, conditions: {{ready: true}}}}\n",
                i + 1
            );
        }
        out += "---\n";
    }
    out
}

/// Planned as node `a`'s agent (the Plan's nodes are the Node objects and this one).
fn plan(yaml: &str) -> Planned {
    let config = PlanConfig { local_node: "a".into(), ..PlanConfig::default() };
    planned_with(yaml, &config, &Allocations::default(), 1)
}

fn announcement<'p>(planned: &'p Planned, service: &str) -> &'p Announcement {
    planned
        .plan
        .announcements
        .iter()
        .find(|a| a.service.name == service)
        .unwrap_or_else(|| panic!("{service} is not announced"))
}

#[test]
fn every_agent_ranks_the_same_nodes_for_the_same_address() {
    let advert = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all, namespace: metallb-system}\n---\n";
    let body = POOLS.to_owned() + advert + &service("web", "", &[]);
    let one = plan(&(nodes(&["a", "b", "c"], &[]) + &body));
    // The same Nodes, written in another order.
    let other = plan(&(body + &nodes(&["c", "a", "b"], &[])));
    assert_eq!(one.plan.announcements, other.plan.announcements);
    let web = announcement(&one, "web");
    assert_eq!(web.address.to_string(), "198.18.1.0");
    assert_eq!(web.pool, "announced");
    assert_eq!(web.nodes.len(), 3);
    assert!(web.interfaces.is_empty(), "every interface");
    let address: IpAddr = "198.18.1.0".parse().unwrap();
    assert_eq!(rank(["b", "c", "a"], &address), web.nodes);
    // explain says who answers for it.
    let rows = portico_plan::exposure::exposures(&one.plan);
    let lb = rows.iter().find(|r| r.method == portico_plan::exposure::Method::LoadBalancer).unwrap();
    assert_eq!(lb.cost, format!("1 own IP, announced by {}", web.nodes[0]));
}

#[test]
fn only_selected_and_ready_nodes_announce_and_only_covered_pools() {
    let advert = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: some, namespace: metallb-system}\nspec:\n  ipAddressPoolSelectors: [{matchLabels: {l2: 'yes'}}]\n  nodeSelectors: [{matchExpressions: [{key: zone, operator: In, values: [z0, z1]}]}]\n  interfaces: [eth0]\n---\n";
    let yaml = nodes(&["a", "b", "c"], &["b"])
        + POOLS
        + advert
        + &service("web", "", &[])
        + &service("quiet", "  loadBalancerIP: 198.18.2.9\n", &[]);
    let planned = plan(&yaml);
    let web = announcement(&planned, "web");
    assert_eq!(web.nodes, ["a"], "b is not ready, c's zone is not selected");
    assert_eq!(web.interfaces, ["eth0"]);
    assert!(
        planned.plan.announcements.iter().all(|a| a.service.name != "quiet"),
        "no advertisement covers the silent pool"
    );
    // Without any L2Advertisement nothing is announced.
    let none = plan(&(nodes(&["a"], &[]) + POOLS + &service("web", "", &[])));
    assert!(none.plan.announcements.is_empty());
}

#[test]
fn a_local_policy_leaves_only_nodes_with_a_ready_endpoint_and_says_when_there_is_none() {
    let advert = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all, namespace: metallb-system}\n---\n";
    let yaml = nodes(&["a", "b", "c"], &[])
        + POOLS
        + advert
        + &service("local", "  externalTrafficPolicy: Local\n", &["b", "c"])
        + &service("nowhere", "  externalTrafficPolicy: Local\n", &[])
        + &service("cluster", "", &["b"]);
    let planned = plan(&yaml);
    let mut local = announcement(&planned, "local").nodes.clone();
    local.sort();
    assert_eq!(local, ["b", "c"]);
    assert_eq!(announcement(&planned, "cluster").nodes.len(), 3, "Cluster policy: any node");
    assert!(announcement(&planned, "nowhere").nodes.is_empty());
    let said: Vec<String> = planned.diagnostics().iter().map(|d| d.message.clone()).collect();
    assert!(said.iter().any(|m| m.starts_with("no node may announce 198.18.1.")), "{said:?}");
}

#[test]
fn addresses_spread_evenly_and_a_node_going_moves_only_its_own() {
    let names = ["node-1", "node-2", "node-3"];
    let addresses: Vec<IpAddr> =
        (0..300u32).map(|i| IpAddr::from((0xc612_0100u32 + i).to_be_bytes())).collect();
    let mut first: BTreeMap<String, usize> = BTreeMap::new();
    for address in &addresses {
        *first.entry(rank(names, address)[0].clone()).or_default() += 1;
    }
    for name in names {
        let n = first.get(name).copied().unwrap_or_default();
        assert!((70..=130).contains(&n), "{name} takes {n} of 300: {first:?}");
    }
    // node-2 goes: the addresses it had move, the others stay where they were.
    for address in &addresses {
        let before = rank(names, address);
        let after = rank(["node-1", "node-3"], address);
        if before[0] != "node-2" {
            assert_eq!(before[0], after[0], "{address} moved");
        } else {
            assert_eq!(before[1], after[0], "{address} goes to its next node");
        }
    }
}

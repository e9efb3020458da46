//! The lab's nodes as Node objects, so that the planner sees the same nodes, addresses and
//! Pod CIDRs as the namespaces the lab builds.

use std::fmt::Write as _;

use crate::addressing::{NodeIndex, TooManyNodes};

/// Nodes `lab-node-1` to `lab-node-<n>` as YAML, one `---`-separated Node document each:
/// hostname label, Pod CIDRs (IPv4 first), IPv4 and IPv6 InternalIPs and a Ready condition,
/// as a kubelet and the node IPAM controller would have written them.
pub fn nodes_manifest(n: usize) -> Result<String, TooManyNodes> {
    let mut yaml = String::new();
    for i in NodeIndex::first(n)? {
        let name = i.name();
        let [v4, v6] = i.pod_cidrs();
        // Addresses are quoted: an IPv6 address is not always a plain YAML scalar.
        let _ = write!(
            yaml,
            "apiVersion: v1\n\
             kind: Node\n\
             metadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n\
             spec:\n  podCIDR: '{v4}'\n  podCIDRs:\n  - '{v4}'\n  - '{v6}'\n\
             status:\n  addresses:\n  - type: InternalIP\n    address: '{}'\n  \
             - type: InternalIP\n    address: '{}'\n  \
             conditions:\n  - type: Ready\n    status: 'True'\n\
             ---\n",
            i.v4(),
            i.v6(),
        );
    }
    Ok(yaml)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use portico_plan::Allocations;
    use portico_testkit::plan::planned_with;

    use super::*;
    use crate::addressing::plan_config;

    #[test]
    fn the_planner_finds_every_node_with_its_cidrs_and_addresses() {
        let yaml = nodes_manifest(3).expect("3 nodes");
        assert_eq!(yaml.matches("kind: Node\n").count(), 3);
        let planned = planned_with(&yaml, &plan_config(), &Allocations::default(), 1).clean();
        let nodes = &planned.plan.nodes;
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["lab-node-1", "lab-node-2", "lab-node-3"], "and no node the planner adds");
        for node in nodes {
            let i = NodeIndex::of_name(&node.name).expect("a lab node");
            assert_eq!(node.addresses, i.addresses(), "{}", node.name);
            assert_eq!(node.pod_cidrs, i.pod_cidrs(), "{}", node.name);
            assert!(node.ready, "{}", node.name);
            assert_eq!(
                node.labels,
                BTreeMap::from([("kubernetes.io/hostname".to_owned(), node.name.clone())]),
                "{}",
                node.name
            );
        }
    }

    #[test]
    fn a_lab_has_1_to_200_nodes() {
        assert_eq!(nodes_manifest(0), Err(TooManyNodes(0)));
        assert_eq!(nodes_manifest(201), Err(TooManyNodes(201)));
        let all = nodes_manifest(200).expect("200 nodes");
        assert!(all.contains("name: lab-node-200\n") && all.contains("address: '2001:db8::210'"));
    }
}

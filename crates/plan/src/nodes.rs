//! The nodes a Plan serves: from Node objects, and this host when none describes it.

use std::net::IpAddr;

use portico_model::Store;
use serde::Serialize;

use crate::PlanConfig;

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

/// The nodes of `store`, with the local node added when no Node object describes it.
pub(crate) fn plan_nodes(store: &Store, config: &PlanConfig) -> Vec<NodePlan> {
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

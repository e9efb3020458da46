//! The nodes a Plan serves: from Node objects, and this host when none describes it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
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
    /// The ranges its Pods' addresses come from (`spec.podCIDRs`, else `spec.podCIDR`; this
    /// host's: the pod CIDR of the configuration).
    pub pod_cidrs: Vec<IpNet>,
    /// Its labels, which `nodeSelector`s match.
    pub labels: BTreeMap<String, String>,
    /// Whether it is ready: false only when its `Ready` condition says so. Nodes written by
    /// hand in a folder of manifests seldom carry a status, and a node agent reports its own.
    pub ready: bool,
}

impl NodePlan {
    /// What a Node object says of itself.
    fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let addresses = status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let spec = node.spec.as_ref();
        let listed = spec.and_then(|s| s.pod_cidrs.clone()).filter(|c| !c.is_empty());
        let pod_cidrs = listed
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let name = node.metadata.name.clone().unwrap_or_default();
        // The kubelet labels every node with its name.
        let mut labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
        labels.entry("kubernetes.io/hostname".to_owned()).or_insert_with(|| name.clone());
        let not_ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status != "True");
        NodePlan {
            name,
            addresses,
            zone: labels.get("topology.kubernetes.io/zone").cloned(),
            pod_cidrs,
            labels,
            ready: !not_ready,
        }
    }
}

/// The nodes of `store`, with the local node added when no Node object describes it.
pub(crate) fn plan_nodes(store: &Store, config: &PlanConfig) -> Vec<NodePlan> {
    let mut nodes: Vec<NodePlan> = store.nodes.values().map(|n| NodePlan::of(&n.object)).collect();
    if !nodes.iter().any(|n| n.name == config.local_node) {
        nodes.push(NodePlan {
            name: config.local_node.clone(),
            addresses: config.local_node_addresses.clone(),
            zone: None,
            pod_cidrs: vec![config.pod_cidr],
            labels: BTreeMap::from([("kubernetes.io/hostname".to_owned(), config.local_node.clone())]),
            ready: true,
        });
    }
    nodes
}

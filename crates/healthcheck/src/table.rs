//! From a Plan to the health checks one node answers: port → Service and its local endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use portico_model::ObjectKey;
use portico_plan::{Plan, TrafficPolicy};

/// What one health-check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The Service checked.
    pub service: ObjectKey,
    /// Its ready, non-terminating endpoints on this node, each address and port once (so a
    /// Pod behind two Service ports counts twice, as kube-proxy counts it).
    pub local_endpoints: usize,
}

/// The health checks `node` answers for `plan`: every proxied Service with
/// `externalTrafficPolicy: Local` and a `healthCheckNodePort`.
pub fn checks(plan: &Plan, node: &str) -> BTreeMap<u16, Check> {
    let mut out = BTreeMap::new();
    for service in
        plan.services.iter().filter(|s| s.proxied && s.external_traffic_policy == TrafficPolicy::Local)
    {
        let Some(port) = service.health_check_node_port else { continue };
        let local: BTreeSet<(IpAddr, u16)> = service
            .ports
            .iter()
            .flat_map(|p| &p.endpoints)
            .filter(|e| e.node.as_deref() == Some(node) && e.ready && !e.terminating)
            .map(|e| (e.address, e.port))
            .collect();
        out.insert(port, Check { service: service.key.clone(), local_endpoints: local.len() });
    }
    out
}

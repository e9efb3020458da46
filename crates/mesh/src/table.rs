//! The mesh's view of a Plan, for one node: where each Service address leads, which addresses
//! are meshed workloads and as whom, and the workloads this node's proxy serves with the
//! policies that apply to them. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portico_model::{Diagnostic, ObjectKey, ObjectRef};
use portico_plan::Plan;
use portico_plan::Protocol;
use portico_plan::authz::EffectivePolicy;
use portico_plan::endpoints::{Scope, select};
use portico_plan::mesh::MeshWorkload;
use portico_tls::SpiffeId;

/// A meshed workload as a peer: who answers at its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The Pod.
    pub pod: ObjectKey,
    /// Its identity.
    pub identity: SpiffeId,
}

/// A workload this node's proxy serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    /// As the Plan has it.
    pub workload: MeshWorkload,
    /// Its identity.
    pub identity: SpiffeId,
    /// The policies that apply to it.
    pub policy: EffectivePolicy,
}

/// The endpoints a Service address leads to, taken in turn.
#[derive(Debug, Default)]
pub struct Backends {
    /// The Service.
    pub service: ObjectKey,
    /// Ready endpoints.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backends {
    /// The next endpoint, round robin; `None` without any.
    pub fn pick(&self) -> Option<SocketAddr> {
        let n = self.endpoints.len();
        (n > 0).then(|| self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n])
    }
}

/// The mesh's table for one node.
#[derive(Debug, Default)]
pub struct MeshTable {
    /// TCP Service addresses (ClusterIPs, external and LoadBalancer IPs, with their ports).
    pub services: HashMap<SocketAddr, Arc<Backends>>,
    /// Meshed workloads by address.
    pub peers: HashMap<IpAddr, Peer>,
    /// The meshed workloads on this node.
    pub local: BTreeMap<ObjectKey, Arc<Local>>,
}

impl MeshTable {
    /// Where a connection to `to` goes: a Service address's next endpoint, else `to` itself;
    /// `None` for a Service address without endpoints.
    pub fn resolve(&self, to: SocketAddr) -> Option<(SocketAddr, Option<&ObjectKey>)> {
        match self.services.get(&to) {
            Some(backends) => backends.pick().map(|e| (e, Some(&backends.service))),
            None => Some((to, None)),
        }
    }
}

/// The table of `node`; a warning for each workload whose identity is not a SPIFFE ID.
pub fn table(plan: &Plan, node: &str) -> (MeshTable, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut table = MeshTable::default();
    for workload in &plan.mesh.workloads {
        let identity = match workload.identity.parse::<SpiffeId>() {
            Ok(identity) => identity,
            Err(e) => {
                diagnostics.push(
                    Diagnostic::warning(format!("not meshed: its identity is not a SPIFFE ID: {e}"))
                        .on(ObjectRef::new("Pod", workload.pod.clone())),
                );
                continue;
            }
        };
        for ip in &workload.ips {
            table.peers.insert(*ip, Peer { pod: workload.pod.clone(), identity: identity.clone() });
        }
        if workload.node == node {
            let policy = workload.policy.clone();
            table.local.insert(
                workload.pod.clone(),
                Arc::new(Local { workload: workload.clone(), identity, policy }),
            );
        }
    }
    let scope = Scope::Cluster {
        node,
        zone: plan.nodes.iter().find(|n| n.name == node).and_then(|n| n.zone.as_deref()),
    };
    for service in &plan.services {
        let addresses: Vec<IpAddr> = service
            .cluster_ips
            .iter()
            .chain(&service.external_ips)
            .chain(&service.load_balancer_ips)
            .copied()
            .collect();
        for port in service.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            for address in &addresses {
                let endpoints = select(&port.endpoints, scope)
                    .into_iter()
                    .filter(|e| e.address.is_ipv4() == address.is_ipv4())
                    .map(|e| SocketAddr::new(e.address, e.port))
                    .collect();
                let backends =
                    Backends { service: service.key.clone(), endpoints, next: AtomicUsize::new(0) };
                table.services.insert(SocketAddr::new(*address, port.port), Arc::new(backends));
            }
        }
    }
    (table, diagnostics)
}

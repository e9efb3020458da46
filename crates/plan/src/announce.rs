//! Which node answers ARP and neighbour solicitations for each LoadBalancer address, decided
//! by every node agent alike from the Plan alone, with no shared writes: the nodes that may
//! announce an address (selected by an `L2Advertisement` of its pool, ready, and holding a
//! ready endpoint of the Service under `externalTrafficPolicy: Local`), ranked by a hash of
//! node and address (rendezvous hashing). The first of them still alive announces it, so
//! addresses spread evenly over the nodes and a node's going moves only its own addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use portico_model::metallb::L2Advertisement;
use portico_model::selector::selector_matches;
use portico_model::{Diagnostic, ObjectKey, ObjectRef, Store, Stored};
use serde::Serialize;

use crate::alloc::stable_hash;
use crate::endpoints::{Scope, select};
use crate::lb::Assigned;
use crate::nodes::NodePlan;
use crate::services::{ServicePlan, TrafficPolicy};

/// One LoadBalancer address and who may announce it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    /// The address.
    pub address: IpAddr,
    /// The Service it was given to (the first, when Services share it).
    pub service: ObjectKey,
    /// Its pool.
    pub pool: String,
    /// The nodes that may announce it, in the order they take it: the first one alive does.
    pub nodes: Vec<String>,
    /// The interfaces to announce on; empty: every interface.
    pub interfaces: Vec<String>,
}

/// The announcements of every address given from a pool an `L2Advertisement` selects; a
/// warning for each address no node may announce.
pub fn announcements(
    store: &Store,
    nodes: &[NodePlan],
    services: &[ServicePlan],
    assigned: &BTreeMap<ObjectKey, Vec<Assigned>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Announcement> {
    let advertisements: Vec<&Stored<L2Advertisement>> = store.l2_advertisements.values().collect();
    let mut out: BTreeMap<IpAddr, Announcement> = BTreeMap::new();
    for service in services {
        let Some(given) = assigned.get(&service.key) else { continue };
        for Assigned { address, pool } in given {
            let selecting: Vec<&L2Advertisement> = advertisements
                .iter()
                .map(|a| &a.object)
                .filter(|a| selects_pool(a, pool, pool_labels(store, pool)))
                .collect();
            if selecting.is_empty() {
                continue;
            }
            let eligible: Vec<&NodePlan> = nodes
                .iter()
                .filter(|n| n.ready)
                .filter(|n| selecting.iter().any(|a| matches_any(&a.spec.node_selectors, &n.labels)))
                .filter(|n| {
                    service.external_traffic_policy != TrafficPolicy::Local
                        || has_local_endpoint(service, &n.name)
                })
                .collect();
            let interfaces: BTreeSet<String> = match selecting.iter().any(|a| a.spec.interfaces.is_empty()) {
                true => BTreeSet::new(),
                false => selecting.iter().flat_map(|a| a.spec.interfaces.iter().cloned()).collect(),
            };
            let entry = out.entry(*address).or_insert_with(|| Announcement {
                address: *address,
                service: service.key.clone(),
                pool: pool.clone(),
                nodes: Vec::new(),
                interfaces: interfaces.into_iter().collect(),
            });
            // Services sharing an address: a node that may announce it for any of them may.
            let mut names: BTreeSet<String> = entry.nodes.iter().cloned().collect();
            names.extend(eligible.iter().map(|n| n.name.clone()));
            entry.nodes = rank(names.iter().map(String::as_str), address);
        }
    }
    for announcement in out.values().filter(|a| a.nodes.is_empty()) {
        let message = format!(
            "no node may announce {} (pool {}): none is ready, matches an L2Advertisement's nodeSelectors and, under externalTrafficPolicy Local, runs a ready endpoint",
            announcement.address, announcement.pool
        );
        let mut diagnostic = Diagnostic::warning(message)
            .on(ObjectRef::new("Service", announcement.service.clone()))
            .field("status.loadBalancer");
        if let Some(stored) = store.services.get(&announcement.service) {
            diagnostic = diagnostic.at(&stored.origin);
        }
        diagnostics.push(diagnostic);
    }
    out.into_values().collect()
}

/// `nodes` in the order they take `address`: by a hash of node and address, highest first.
pub fn rank<'n>(nodes: impl IntoIterator<Item = &'n str>, address: &IpAddr) -> Vec<String> {
    let mut scored: Vec<(u64, &str)> = nodes.into_iter().map(|n| (score(n, address), n)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n.to_owned()).collect()
}

/// The stable hash of node and address, mixed: FNV's last bytes barely move its high bits,
/// and addresses differ in their last bytes.
fn score(node: &str, address: &IpAddr) -> u64 {
    let mut h = stable_hash(&format!("{node}/{address}"));
    // splitmix64's finalizer.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn pool_labels<'s>(store: &'s Store, pool: &str) -> Option<&'s BTreeMap<String, String>> {
    store
        .ip_address_pools
        .values()
        .find(|p| p.object.metadata.name.as_deref() == Some(pool))?
        .object
        .metadata
        .labels
        .as_ref()
}

/// Whether the advertisement covers the pool: by name, by label, or (with neither) every pool.
fn selects_pool(
    advertisement: &L2Advertisement,
    pool: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let spec = &advertisement.spec;
    if spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty() {
        return true;
    }
    let empty = BTreeMap::new();
    spec.ip_address_pools.iter().any(|p| p == pool)
        || spec
            .ip_address_pool_selectors
            .iter()
            .any(|s| selector_matches(s, labels.unwrap_or(&empty)).unwrap_or(false))
}

fn matches_any(selectors: &[LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| selector_matches(s, labels).unwrap_or(false))
}

/// Whether the node's own data plane would send the Service's traffic somewhere: the local
/// endpoints its Local policy selects.
fn has_local_endpoint(service: &ServicePlan, node: &str) -> bool {
    service.ports.iter().any(|p| !select(&p.endpoints, Scope::Local { node }).is_empty())
}

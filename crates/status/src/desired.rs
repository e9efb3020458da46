//! What the API server should hold, from a Plan and the objects as the API server has them:
//! pure, so that every replica computes the same and only the Lease holder writes it.
//!
//! Only Portico's own objects are written: Services of an unset or Portico's
//! `loadBalancerClass`, and Ingresses Portico serves (its class). A status already as wanted
//! is not written again, and addresses are compared without their order or `ipMode`, so an API
//! server that drops a field it does not know never makes a write loop.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use portico_model::{Diagnostic, ObjectKey, Severity, Store};
use portico_plan::Plan;
use portico_plan::lb;
use portico_plan::services::ServiceKind;

/// Which statuses this process writes, and where its Ingresses are reached.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    /// LoadBalancer Services' addresses (the node agents' role).
    pub services: bool,
    /// Ingresses' addresses (the ingress role).
    pub ingresses: bool,
    /// The Service whose addresses the Ingresses are published with (ingress-nginx's
    /// `--publish-service`); without one, the listeners' own addresses, else this node's.
    pub publish_service: Option<ObjectKey>,
    /// This node's name, for its addresses.
    pub node: String,
    /// Only Services of Portico's `loadBalancerClass` are Portico's (not those without one).
    pub load_balancer_class_only: bool,
}

/// One status to write.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// A Service's `status.loadBalancer.ingress` (an empty list takes back what it had).
    Service {
        /// The Service.
        service: ObjectKey,
        /// Its LoadBalancer addresses.
        addresses: Vec<IpAddr>,
    },
    /// An Ingress's `status.loadBalancer.ingress`.
    Ingress {
        /// The Ingress.
        ingress: ObjectKey,
        /// Where it is reached.
        addresses: Vec<IpAddr>,
    },
}

impl Status {
    /// The object written.
    pub fn object(&self) -> (&'static str, &ObjectKey) {
        match self {
            Status::Service { service, .. } => ("Service", service),
            Status::Ingress { ingress, .. } => ("Ingress", ingress),
        }
    }
}

/// An Event to publish on an object: a problem `check` would report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Note {
    /// The object it is about.
    pub object: Reference,
    /// `Rejected` (an error: not served as written) or `Problem` (a warning).
    pub reason: &'static str,
    /// The field and the message.
    pub note: String,
}

/// An object an Event names, with the uid that ties the Event to this very object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `v1`, `networking.k8s.io/v1`, …
    pub api_version: String,
    /// `Service`, `Ingress`, …
    pub kind: String,
    /// Namespace and name.
    pub key: ObjectKey,
    /// `metadata.uid`, when known.
    pub uid: Option<String>,
}

impl Reference {
    /// As the Events API takes it.
    pub fn to_object_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            namespace: Some(self.key.namespace.clone()).filter(|n| !n.is_empty()),
            name: Some(self.key.name.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }
}

/// The statuses that differ from what the API server holds.
pub fn statuses(store: &Store, plan: &Plan, scope: &Scope) -> Vec<Status> {
    let mut out = Vec::new();
    if scope.services {
        out.extend(service_statuses(store, plan, scope.load_balancer_class_only));
    }
    if scope.ingresses {
        out.extend(ingress_statuses(store, plan, scope));
    }
    out
}

fn service_statuses(store: &Store, plan: &Plan, class_only: bool) -> Vec<Status> {
    let mut out = Vec::new();
    for service in &plan.services {
        let Some(stored) = store.services.get(&service.key) else { continue };
        if !lb::serves_class(&stored.object, class_only) {
            continue;
        }
        let wanted = match service.kind {
            ServiceKind::LoadBalancer => service.load_balancer_ips.clone(),
            // No longer a LoadBalancer: the addresses it was given are taken back.
            _ => Vec::new(),
        };
        if !same(&wanted, &lb::status_ips(&stored.object)) {
            out.push(Status::Service { service: service.key.clone(), addresses: wanted });
        }
    }
    out
}

fn ingress_statuses(store: &Store, plan: &Plan, scope: &Scope) -> Vec<Status> {
    let addresses = ingress_addresses(plan, scope);
    let mut out = Vec::new();
    for key in plan.ingress.status.iter().map(|s| &s.ingress) {
        let Some(stored) = store.ingresses.get(key) else { continue };
        if !same(&addresses, &ingress_status_ips(&stored.object)) {
            out.push(Status::Ingress { ingress: key.clone(), addresses: addresses.clone() });
        }
    }
    out
}

/// Where the Ingresses are reached: the published Service's addresses as ingress-nginx
/// publishes them (a LoadBalancer's addresses and external IPs, none while it waits for an
/// address; another Service's external IPs, else its ClusterIPs), else the listeners'
/// addresses, else this node's.
fn ingress_addresses(plan: &Plan, scope: &Scope) -> Vec<IpAddr> {
    if let Some(key) = &scope.publish_service {
        let Some(service) = plan.services.iter().find(|s| &s.key == key) else { return Vec::new() };
        let mut addresses = service.load_balancer_ips.clone();
        addresses.extend(&service.external_ips);
        if addresses.is_empty() && service.kind != ServiceKind::LoadBalancer {
            addresses.clone_from(&service.cluster_ips);
        }
        return dedup(addresses);
    }
    let listeners = [plan.ingress_addresses.http.ip(), plan.ingress_addresses.https.ip()];
    let bound: Vec<IpAddr> = listeners.into_iter().filter(|ip| !ip.is_unspecified()).collect();
    if !bound.is_empty() {
        return dedup(bound);
    }
    plan.nodes.iter().find(|n| n.name == scope.node).map(|n| n.addresses.clone()).unwrap_or_default()
}

fn ingress_status_ips(ingress: &Ingress) -> Vec<IpAddr> {
    let held =
        ingress.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    held.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
}

fn dedup(addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut seen = BTreeSet::new();
    addresses.into_iter().filter(|a| seen.insert(*a)).collect()
}

fn same(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

/// The Events for `diagnostics` on Portico's objects: Services (all of them are Portico's to
/// proxy), the address pools, and the Ingresses it serves; never another class's.
pub fn notes(store: &Store, plan: &Plan, diagnostics: &[Diagnostic], scope: &Scope) -> Vec<Note> {
    let served: BTreeSet<&ObjectKey> = plan.ingress.status.iter().map(|s| &s.ingress).collect();
    let mut out = BTreeSet::new();
    for diagnostic in diagnostics {
        let Some(object) = &diagnostic.object else { continue };
        let key = &object.key;
        let found = match object.kind.as_str() {
            "Service" if scope.services => {
                store.services.get(key).map(|s| ("v1", s.object.metadata.uid.clone()))
            }
            "IPAddressPool" if scope.services => store
                .ip_address_pools
                .get(key)
                .map(|s| (portico_model::metallb::API_VERSION, s.object.metadata.uid.clone())),
            "L2Advertisement" if scope.services => store
                .l2_advertisements
                .get(key)
                .map(|s| (portico_model::metallb::API_VERSION, s.object.metadata.uid.clone())),
            "Ingress" if scope.ingresses && served.contains(key) => {
                store.ingresses.get(key).map(|s| ("networking.k8s.io/v1", s.object.metadata.uid.clone()))
            }
            _ => None,
        };
        let Some((api_version, uid)) = found else { continue };
        let reason = match diagnostic.severity {
            Severity::Error => "Rejected",
            Severity::Warning => "Problem",
        };
        let note = match &diagnostic.field {
            Some(field) => format!("{field}: {}", diagnostic.message),
            None => diagnostic.message.clone(),
        };
        let object = Reference {
            api_version: api_version.to_owned(),
            kind: object.kind.clone(),
            key: key.clone(),
            uid,
        };
        out.insert(Note { object, reason, note });
    }
    out.into_iter().collect()
}

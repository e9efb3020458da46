//! Status write-back, for Portico in a cluster: what the planner decided (LoadBalancer and
//! Ingress addresses) and what it found wrong (as Events), written to the API server by the one
//! replica that holds a Lease.

#![forbid(unsafe_code)]

pub mod desired;
pub mod lease;
pub mod writer;

pub use desired::{Scope, notes, statuses};
pub use lease::{Election, LeaseOptions};
pub use writer::{Batch, FIELD_MANAGER, StatusWriter};

/// One permission the writer and the Lease need, as an RBAC rule names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group ("" for the core group).
    pub group: &'static str,
    /// Resource, with its subresource.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Needed to write the Services' statuses (the agent's role).
    pub services: bool,
    /// Needed to write the Ingresses' statuses (the ingress role).
    pub ingresses: bool,
}

/// Every write this crate makes: status patches, Events (created, then patched as a series),
/// and the Lease (read, created, replaced).
pub const PERMISSIONS: [Permission; 4] = [
    Permission {
        group: "",
        resource: "services/status",
        verbs: &["patch"],
        services: true,
        ingresses: false,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "ingresses/status",
        verbs: &["patch"],
        services: false,
        ingresses: true,
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        services: true,
        ingresses: true,
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        services: true,
        ingresses: true,
    },
];

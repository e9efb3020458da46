//! What Portico keeps in the API server, in a cluster: what the planner decided (LoadBalancer
//! and Ingress addresses) and what it found wrong (as Events), written by the one replica that
//! holds a Lease; and the Secrets every replica shares (the mesh's CA), made once.

#![forbid(unsafe_code)]

pub mod desired;
pub mod lease;
pub mod secret;
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
    /// Only in Portico's own namespace (a Role, not a ClusterRole).
    pub namespaced: bool,
    /// Only with the mesh's capture (`deploy/mesh`).
    pub mesh: bool,
}

/// Every write this crate makes: status patches, Events (created, then patched as a series),
/// the Lease (read, created, replaced), and, with the mesh, the agents' shared CA Secret (read,
/// created once).
pub const PERMISSIONS: [Permission; 5] = [
    Permission {
        group: "",
        resource: "services/status",
        verbs: &["patch"],
        services: true,
        ingresses: false,
        namespaced: false,
        mesh: false,
    },
    Permission {
        group: "networking.k8s.io",
        resource: "ingresses/status",
        verbs: &["patch"],
        services: false,
        ingresses: true,
        namespaced: false,
        mesh: false,
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        services: true,
        ingresses: true,
        namespaced: false,
        mesh: false,
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        services: true,
        ingresses: true,
        namespaced: true,
        mesh: false,
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "create"],
        services: true,
        ingresses: false,
        namespaced: true,
        mesh: true,
    },
];

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

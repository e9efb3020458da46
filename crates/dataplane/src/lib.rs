//! The contract between the serve loop and its data planes (the L4 proxy, the Ingress
//! proxy, cluster DNS, the local Pods, and later the kernel data plane, the LoadBalancer
//! announcer and the mesh): each takes every new Plan whole and derives its own table from
//! it, returns what it could not serve as diagnostics, reports whether it is ready, and stops
//! on one drain signal shared by all.

pub mod drain;
mod plane;

pub use plane::{Applying, DataPlane, Readiness};

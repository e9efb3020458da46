//! The planner: a pure function from the typed [`Store`] (plus the previous allocations) to
//! an immutable, versioned [`Plan`] that every data plane serves. No I/O happens here.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod annotations;
pub mod announce;
pub mod authz;
pub mod config;
pub mod dns;
pub mod endpoints;
pub mod exposure;
pub mod families;
pub mod ingress;
pub mod lb;
pub mod mesh;
mod nodes;
mod order;
pub mod pattern;
mod placement;
mod planner;
pub mod pods;
mod protocol;
pub mod routes;
pub mod services;
pub mod workloads;

pub use alloc::Allocations;
pub use config::PlanConfig;
pub use endpoints::{Endpoint, Scope};
pub use families::{IpFamily, IpFamilyPolicy};
pub use ingress::IngressPlan;
pub use nodes::NodePlan;
pub use planner::{IngressAddresses, Plan, Planned, plan};
pub use pods::{HostPort, PodPlan};
pub use protocol::Protocol;
pub use services::{ServiceKind, ServicePlan, ServicePort, TrafficPolicy};

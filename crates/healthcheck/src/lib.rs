//! `healthCheckNodePort`: each node answers a load balancer's health check for a Service with
//! `externalTrafficPolicy: Local`, 200 while it has a local ready endpoint and 503 without, so
//! that the load balancer sends traffic only to nodes that keep it (as kube-proxy does).
#![forbid(unsafe_code)]

mod server;
pub mod table;

pub use server::HealthChecks;
pub use table::{Check, checks};

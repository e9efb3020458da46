//! Cluster DNS: answers for the zone the Plan defines (Kubernetes DNS specification 1.1.0),
//! decided by [`answer`] from the zone alone; names outside it are for the upstream servers.
#![forbid(unsafe_code)]

pub mod answer;
mod cache;
mod encode;
pub mod forward;
pub mod metrics;
pub mod search;
pub mod server;
pub mod wire;

pub use answer::{Answer, QueryType, Rcode, Reply, Rr, answer};
pub use server::{DnsServer, Options, bind};
pub use wire::{Response, Settings, respond};

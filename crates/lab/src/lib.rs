//! A small cluster network on one Linux host, made of network namespaces: a LAN bridge,
//! nodes on it routing their Pods' CIDRs to each other, Pods behind their node, and a client
//! `outside` the nodes, all on addresses of the benchmarking and documentation ranges.
//!
//! [`addressing`] is the address plan, [`nodes::nodes_manifest`] the Node objects the planner
//! reads for it, [`layout::Layout`] what a lab is made of (pure), and [`netns`] builds it with
//! iproute2, runs processes in it, reports on it and tears it down.
#![forbid(unsafe_code)]

pub mod addressing;
pub mod layout;
pub mod netns;
pub mod nodes;

pub use addressing::{NodeIndex, plan_config};
pub use layout::Layout;
pub use netns::{NetnsError, build, exec, spawn, status, teardown};
pub use nodes::nodes_manifest;

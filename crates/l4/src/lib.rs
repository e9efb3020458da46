//! The userspace L4 service proxy: every ClusterIP, NodePort, LoadBalancer IP, external IP
//! and HostPort of a [`Plan`](portico_plan::Plan) as a TCP or UDP listener on this host,
//! forwarding to the endpoints kube-proxy would choose. No root, no kernel changes.
//!
//! The shape: [`table::frontends`] turns a Plan into listen address → [`table::Frontend`]
//! (pure); [`proxy::L4Proxy::apply_table`] reconciles running listeners with it, swapping each
//! listener's frontend atomically so that established connections never notice a reload.
#![forbid(unsafe_code)]

pub mod balance;
mod idle;
mod listener;
pub mod metrics;
mod options;
pub mod proxy;
pub mod table;
mod tcp;
mod udp;

pub use metrics::Metrics;
pub use options::Options;
pub use proxy::{BindError, L4Proxy};
pub use table::{Frontend, ListenKey, Table, frontends};

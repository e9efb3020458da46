//! The kernel data plane: what Portico asks of the Linux kernel's networking.

pub mod conntrack;

pub use conntrack::{ConntrackError, Filter, Protocol, delete};

//! LoadBalancer addresses on a LAN without a cloud, as MetalLB's L2 mode offers them: for
//! each address one node answers ARP requests (IPv4) and neighbour solicitations (IPv6) with
//! its own link-layer address, and says so unasked (gratuitous ARP, unsolicited neighbour
//! advertisement) when it takes an address over, so that clients move at once.
//!
//! Which node that is comes from the Plan ([`portico_plan::announce`]: the nodes that may
//! announce an address, ranked the same on every node) and from which of them are alive
//! ([`liveness`]: heartbeats among the node agents, with a hold-down so that a node coming
//! back does not flap); [`election::mine`] puts the two together. [`wire`] reads and writes
//! the messages, [`link`] answers and announces on an interface.
#![forbid(unsafe_code)]

pub mod election;
pub mod link;
pub mod liveness;
mod plane;
pub mod wire;

pub use plane::{Announcer, Options};

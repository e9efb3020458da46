//! The kernel data plane: every proxied Service, NodePort, LoadBalancer IP, external IP and
//! HostPort of a [`Plan`](portico_plan::Plan) as nftables rules, in kube-proxy's nftables
//! design (KEP-3866): per family a main `portico` table and 16 Service tables, verdict maps
//! keyed by destination, one chain per Service port (and per endpoint under affinity).
//!
//! The shape: [`compile::compile`] turns a Plan into a [`Ruleset`] (pure); [`diff`] turns the
//! last applied ruleset and the desired one into transactions; [`apply::Applier`] runs them
//! (over netlink by [`netlink::NetlinkNft`], or through `nft -f`), sending only differences,
//! and falls back to a full resync after a failure;
//! [`conntrack::delete`] removes the UDP flows that point at endpoints no longer there.
//!
//! HostPorts from `127.0.0.1` are DNAT-ed to a Pod address, which the kernel routes only with
//! `net.ipv4.conf.all.route_localnet=1`; the caller sets that sysctl, as the CNI portmap
//! plugin does.
#![forbid(unsafe_code)]

pub mod apply;
pub mod capture;
pub mod compile;
pub mod conntrack;
pub mod diff;
mod expr;
pub mod incremental;
mod names;
pub mod netlink;
mod nfnetlink;
mod plane;
pub mod ruleset;
pub mod stale;

pub use apply::{Applier, Nft, NftCommand, NftError, SyncKind, SyncReport, remove_all};
pub use compile::{CompileOptions, Compiled, Destination, compile};
pub use conntrack::{ConntrackError, Filter};
pub use diff::{DiffOptions, Update};
pub use expr::Unsupported;
pub use netlink::NetlinkNft;
pub use plane::{KernelProxy, Options, Writer, WriterKind};
pub use ruleset::{Chain, Command, Family, Hook, Ruleset, Set, SetDecl, Table, TableId};

//! The service mesh's node proxy, in the shape of Istio ambient's ztunnel: every meshed Pod
//! of this node gets the certificate of its ServiceAccount's SPIFFE ID ([`certs`], issued by
//! the CA of [`authority`]); its TCP traffic is captured inside its own network namespace
//! ([`netns`], with the rules of `portico_kernel::capture`); connections between meshed Pods
//! travel through HTTP/2 CONNECT tunnels over mutual TLS 1.3 ([`tunnel`], [`outbound`],
//! [`inbound`]) and are decided by the AuthorizationPolicies that apply to the server; every
//! connection is counted and logged with both identities ([`metrics`]). [`plane`] is the
//! data plane that does it for each Plan, from the table [`table`] derives.
#![forbid(unsafe_code)]

pub mod authority;
pub mod certs;
pub mod inbound;
pub mod metrics;
pub mod netns;
pub mod outbound;
pub mod plane;
pub mod requests;
pub mod shared;
pub mod table;
pub mod tunnel;

pub use plane::{Mesh, Options};

//! What Portico's tests share, so that no test file carries its own copy: Plans made from
//! YAML text ([`plan`]), manifests built from a few values ([`manifests`]), loopback address
//! blocks and free ports ([`net`]), a fleet of echo backends ([`echo`]), a raw HTTP/1.1 client
//! ([`http`]), a TLS client ([`tls`]), DNS queries and answers ([`dns`]) and the check that a
//! kernel test may run ([`root`]), and an API server that lists and watches ([`api`]).
//!
//! A dev-dependency only. It stands below the data planes: it may use `portico-model`,
//! `portico-plan` and `portico-echo`, never `portico-l4`, `portico-l7`, `portico-dns` or the
//! binary. Its helpers panic with what went wrong, as test code does.
#![forbid(unsafe_code)]

pub mod api;
pub mod dns;
pub mod echo;
pub mod http;
pub mod kustomize;
pub mod manifests;
pub mod net;
pub mod plan;
pub mod root;
pub mod tls;

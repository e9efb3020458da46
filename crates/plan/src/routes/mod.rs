//! The HTTP route model every builder fills and the Ingress data plane will serve, whatever
//! the routes came from (Ingress today; Gateway API HTTPRoute/GRPCRoute and mesh routes
//! later): listeners → virtual hosts → ordered routes, each with its matches, filters,
//! weighted backends and policy.
//!
//! A request is served by the first route of its virtual host that one of its matches
//! takes. The data plane then applies, in order: the policy's allow-list (403), a
//! [`Filter::RequestRedirect`] (answered at once), the body limit (413), the choice of a
//! backend by weight, and the other filters.

pub mod filters;
pub mod from_ingress;
pub mod hosts;
pub mod matching;
pub mod normalize;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;
use portico_model::ObjectKey;
use serde::Serialize;

pub use filters::{Filter, HeaderModifier, PathRewrite, RequestRedirect};
pub use hosts::{HostName, Hosts, normalize_host};
pub use matching::{NamedMatch, PathMatch, Request, RouteMatch, ValueMatch};

use crate::annotations::{BackendProtocol, CookieAffinity};

/// Every HTTP listener and what it serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoutes {
    /// The listeners, plain HTTP first.
    pub listeners: Vec<HttpListener>,
}

/// One address that speaks HTTP, in plain text or over TLS.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpListener {
    /// Where it listens.
    pub address: SocketAddr,
    /// Whether connections start with a TLS handshake.
    pub tls: bool,
    /// Its virtual hosts by the host names they serve.
    pub hosts: Hosts<VirtualHost>,
}

impl HttpListener {
    /// The route for a request to `host`; `None` when nothing takes it (404).
    pub fn route(&self, host: &str, request: &impl Request) -> Option<&HttpRoute> {
        self.hosts.get(host)?.route(request)
    }
}

/// The routes of one set of host names, in the order they are tried.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// Tried in order; the first that takes the request serves it.
    pub routes: Vec<HttpRoute>,
}

impl VirtualHost {
    /// The first route that takes `request`.
    pub fn route(&self, request: &impl Request) -> Option<&HttpRoute> {
        self.routes.iter().find(|r| r.matches(request))
    }
}

/// One route: when it applies, what it changes, where requests go, and how.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// The object whose rule this is.
    pub owner: ObjectKey,
    /// It takes a request that any of these takes.
    pub matches: Vec<RouteMatch>,
    /// What it does besides forwarding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// Where requests go, shared by weight. The last is the route's own: what is answered
    /// before a backend is chosen (403, redirects, 413) is counted against it.
    pub backends: Vec<BackendRef>,
    /// How requests are checked and forwarded.
    pub policy: Arc<RoutePolicy>,
}

impl HttpRoute {
    /// Whether the route takes `request`.
    pub fn matches(&self, request: &impl Request) -> bool {
        self.matches.iter().any(|m| m.matches(request))
    }

    /// The route's own backend, which answers made before a backend is chosen count against.
    pub fn own_backend(&self) -> Option<&BackendRef> {
        self.backends.last()
    }

    /// The redirect answered instead of forwarding, if any.
    pub fn redirect(&self) -> Option<&RequestRedirect> {
        self.filters.iter().find_map(|f| match f {
            Filter::RequestRedirect(redirect) => Some(redirect),
            _ => None,
        })
    }

    /// The path to send upstream for `path` (normalised, without query): rewritten or as it is.
    pub fn upstream_path<'p>(&self, path: &'p str) -> Cow<'p, str> {
        self.filters
            .iter()
            .find_map(|f| match f {
                Filter::UrlRewrite(rewrite) => Some(rewrite.apply(path)),
                _ => None,
            })
            .unwrap_or(Cow::Borrowed(path))
    }

    /// The backend for a request: the only one with weight, or one by weight with `draw()`
    /// (called only when there is a choice); `None` when no backend has weight.
    pub fn backend(&self, draw: impl FnOnce() -> u64) -> Option<&BackendRef> {
        let mut weighted = self.backends.iter().filter(|b| b.weight > 0);
        let first = weighted.next()?;
        if weighted.next().is_none() {
            return Some(first);
        }
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        let mut left = draw() % total;
        self.backends.iter().find(|b| match left.checked_sub(u64::from(b.weight)) {
            Some(rest) => {
                left = rest;
                false
            }
            None => true,
        })
    }
}

/// A Service port behind a route, with its share of the route's requests.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// The Service.
    pub service: ObjectKey,
    /// The Service port, as the route names it (number or name).
    pub port: String,
    /// Ready endpoints to send requests to; empty means 503.
    pub endpoints: Vec<SocketAddr>,
    /// Its share against the route's other backends; 0 takes nothing.
    pub weight: u32,
    /// The object that sent requests here, which they are counted against (a canary's own).
    pub owner: ObjectKey,
}

/// How a route's requests are checked and forwarded.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePolicy {
    /// How the endpoints are spoken to.
    pub backend_protocol: BackendProtocol,
    /// Largest request body in bytes; `None` is unlimited.
    pub body_limit: Option<u64>,
    /// Waits towards the endpoints.
    pub timeouts: Timeouts,
    /// Sticky sessions by cookie, with the cookie's path resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<CookieAffinity>,
    /// Clients allowed; empty allows all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_sources: Vec<IpNet>,
}

/// Waits towards the endpoints, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Connecting.
    pub connect_seconds: u64,
    /// Between request bytes passed upstream.
    pub send_seconds: u64,
    /// Between response bytes from upstream.
    pub read_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::matching::tests::Sample;
    use super::*;

    fn backend(name: &str, weight: u32) -> BackendRef {
        BackendRef {
            service: ObjectKey::new("default", name),
            port: "80".into(),
            endpoints: Vec::new(),
            weight,
            owner: ObjectKey::new("default", "route"),
        }
    }

    fn route(path: PathMatch, backends: Vec<BackendRef>) -> HttpRoute {
        HttpRoute {
            owner: ObjectKey::new("default", "route"),
            matches: vec![RouteMatch::path(path)],
            filters: Vec::new(),
            backends,
            policy: Arc::new(RoutePolicy {
                backend_protocol: BackendProtocol::Http,
                body_limit: None,
                timeouts: Timeouts { connect_seconds: 5, send_seconds: 60, read_seconds: 60 },
                affinity: None,
                allow_sources: Vec::new(),
            }),
        }
    }

    #[test]
    fn weights_share_the_draws() {
        let split = route(PathMatch::Prefix("/".into()), vec![backend("canary", 30), backend("main", 70)]);
        let mut counts = [0; 2];
        for n in 0..100 {
            let chosen = split.backend(|| n).expect("a backend");
            counts[usize::from(chosen.service.name == "main")] += 1;
        }
        assert_eq!(counts, [30, 70]);
    }

    #[test]
    fn one_weighted_backend_needs_no_draw() {
        let only = route(PathMatch::Prefix("/".into()), vec![backend("canary", 0), backend("main", 100)]);
        let chosen = only.backend(|| unreachable!("no choice to draw for"));
        assert_eq!(chosen.map(|b| b.service.name.as_str()), Some("main"));
        let none = route(PathMatch::Prefix("/".into()), vec![backend("a", 0)]);
        assert!(none.backend(|| 0).is_none());
    }

    #[test]
    fn the_first_route_that_takes_the_request_serves_it() {
        let mut header = RouteMatch::path(PathMatch::Prefix("/".into()));
        header
            .headers
            .push(NamedMatch { name: "x-canary".into(), value: ValueMatch::Exact("always".into()) });
        let mut by_header = route(PathMatch::Prefix("/".into()), vec![backend("canary", 1)]);
        by_header.matches = vec![header];
        let vhost = VirtualHost {
            routes: vec![
                route(PathMatch::Exact("/exact".into()), vec![backend("exact", 1)]),
                by_header,
                route(PathMatch::Prefix("/".into()), vec![backend("main", 1)]),
            ],
        };
        let served = |request: Sample| {
            vhost.route(&request).and_then(|r| r.backend(|| 0)).map(|b| b.service.name.clone())
        };
        assert_eq!(served(Sample::get("/exact").header("x-canary", "always")).as_deref(), Some("exact"));
        assert_eq!(served(Sample::get("/x").header("X-Canary", "always")).as_deref(), Some("canary"));
        assert_eq!(served(Sample::get("/x").header("x-canary", "never")).as_deref(), Some("main"));
    }

    #[test]
    fn listeners_route_by_host() {
        let mut hosts = Hosts::default();
        hosts.insert(
            HostName::Exact("a.test"),
            VirtualHost { routes: vec![route(PathMatch::Prefix("/api".into()), vec![backend("a", 1)])] },
        );
        let listener = HttpListener { address: ([127, 0, 0, 1], 80).into(), tls: false, hosts };
        assert!(listener.route("A.test:80", &Sample::get("/api/x")).is_some());
        assert!(listener.route("a.test", &Sample::get("/other")).is_none(), "no route: 404");
        assert!(listener.route("b.test", &Sample::get("/api")).is_none(), "no host: 404");
    }
}

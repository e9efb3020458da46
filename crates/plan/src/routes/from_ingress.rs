//! Ingress, with its ingress-nginx annotations, as HTTP routes: each path rule a route,
//! a canary's header and cookie rules routes of their own before it and its weight a second
//! backend, `rewrite-target` and the HTTPS redirect filters, a default backend the catch-all
//! route of its virtual hosts. The routes answer every request as the Ingress matcher does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use portico_model::ObjectKey;

use super::{
    BackendRef, Filter, HostName, Hosts, HttpListener, HttpRoute, HttpRoutes, NamedMatch, PathMatch,
    PathRewrite, RequestRedirect, RouteMatch, RoutePolicy, Timeouts, ValueMatch, VirtualHost,
};
use crate::annotations::{CanaryRule, CookieAffinity, IngressOptions};
use crate::ingress::{Backend, DefaultBackend, IngressPlan, PathKind, Route, regex_source};
use crate::pattern::Pattern;

/// The routes of an Ingress plan on its plain HTTP and its HTTPS listener.
pub fn from_ingress(plan: &IngressPlan, http: SocketAddr, https: SocketAddr) -> HttpRoutes {
    let mut policies = Policies::default();
    let plain =
        Builder { plan, tls: false, https_port: https.port(), policies: &mut policies }.listener(http);
    let secure =
        Builder { plan, tls: true, https_port: https.port(), policies: &mut policies }.listener(https);
    HttpRoutes { listeners: vec![plain, secure] }
}

/// What building one listener's routes needs.
struct Builder<'p> {
    plan: &'p IngressPlan,
    tls: bool,
    https_port: u16,
    policies: &'p mut Policies,
}

impl Builder<'_> {
    fn listener(mut self, address: SocketAddr) -> HttpListener {
        let plan = self.plan;
        let mut hosts = Hosts::default();
        for (name, vhost) in plan.virtual_hosts() {
            let mut routes = Vec::new();
            for route in &vhost.routes {
                routes.extend(self.rule(route, vhost.tls));
            }
            let default = vhost.default_backend.as_ref().or(plan.default_backend.as_ref());
            routes.extend(default.map(|d| self.catch_all(d, vhost.tls)));
            hosts.insert(name, VirtualHost { routes });
        }
        if hosts.any.is_none()
            && let Some(default) = &plan.default_backend
        {
            hosts.insert(HostName::Any, VirtualHost { routes: vec![self.catch_all(default, false)] });
        }
        HttpListener { address, tls: self.tls, hosts }
    }

    /// The routes of one path rule: its canary's forced choices first, then the rule itself
    /// (shared with the canary by weight). None when its regex does not compile, as it then
    /// matches nothing.
    fn rule(&mut self, route: &Route, host_tls: bool) -> Vec<HttpRoute> {
        let Some(path) = path_match(route) else { return Vec::new() };
        let mut filters = self.redirect(&route.options, host_tls).into_iter().collect::<Vec<_>>();
        if let Some(target) = &route.options.rewrite_target {
            filters.push(Filter::UrlRewrite(match &route.pattern {
                Some(pattern) => PathRewrite::Captures { pattern: pattern.clone(), template: target.clone() },
                None => PathRewrite::ReplaceFullPath(target.clone()),
            }));
        }
        let policy = self.policies.of(&route.options, &route.path);
        let main = |weight| backend_ref(&route.backend, weight, &route.ingress);
        let made = |matched: RouteMatch, backends: Vec<BackendRef>| HttpRoute {
            owner: route.ingress.clone(),
            matches: vec![matched],
            filters: filters.clone(),
            backends,
            policy: Arc::clone(&policy),
        };
        let Some(canary) = &route.canary else {
            return vec![made(RouteMatch::path(path), vec![main(1)])];
        };
        // The rule's own backend stays last, without weight: what is answered before a
        // backend is chosen is counted against it, as for the requests it takes.
        let to_canary = || vec![backend_ref(&canary.backend, 1, &canary.ingress), main(0)];
        let mut routes: Vec<HttpRoute> = forced_choices(&canary.rule)
            .into_iter()
            .map(|(condition, takes_canary)| {
                let mut matched = RouteMatch::path(path.clone());
                match condition {
                    Condition::Header(header) => matched.headers.push(header),
                    Condition::Cookie(cookie) => matched.cookies.push(cookie),
                }
                made(matched, if takes_canary { to_canary() } else { vec![main(1)] })
            })
            .collect();
        let CanaryRule { weight, weight_total, .. } = canary.rule;
        let shared = vec![
            backend_ref(&canary.backend, weight, &canary.ingress),
            main(weight_total.saturating_sub(weight)),
        ];
        routes.push(made(RouteMatch::path(path), shared));
        routes
    }

    /// The route a default backend serves unmatched requests by: every path, no rewrite.
    fn catch_all(&mut self, default: &DefaultBackend, host_tls: bool) -> HttpRoute {
        HttpRoute {
            owner: default.ingress.clone(),
            matches: vec![RouteMatch::path(PathMatch::Prefix("/".into()))],
            filters: self.redirect(&default.options, host_tls).into_iter().collect(),
            backends: vec![backend_ref(&default.backend, 1, &default.ingress)],
            policy: self.policies.of(&default.options, "/"),
        }
    }

    /// The HTTPS redirect of `ssl-redirect` (when the host has TLS) or `force-ssl-redirect`,
    /// on the plain listener.
    fn redirect(&self, options: &IngressOptions, host_tls: bool) -> Option<Filter> {
        let wanted = options.force_ssl_redirect || (options.ssl_redirect && host_tls);
        (!self.tls && wanted).then(|| {
            Filter::RequestRedirect(RequestRedirect {
                scheme: Some("https".into()),
                port: Some(self.https_port),
                status: 308,
            })
        })
    }
}

/// The path condition of an Ingress path rule.
fn path_match(route: &Route) -> Option<PathMatch> {
    Some(match (&route.pattern, route.kind) {
        (Some(pattern), _) => PathMatch::Regex(pattern.clone()),
        (None, PathKind::Exact) => PathMatch::Exact(route.path.clone()),
        (None, PathKind::Prefix) => PathMatch::Prefix(route.path.clone()),
        (None, PathKind::Regex) => PathMatch::Regex(Pattern::new(&regex_source(&route.path)).ok()?),
    })
}

/// A condition a canary rule forces its choice by.
enum Condition {
    Header(NamedMatch),
    Cookie(NamedMatch),
}

/// The conditions that force a canary's choice, in ingress-nginx's order (header, then
/// cookie), each with whether it sends the request to the canary.
fn forced_choices(rule: &CanaryRule) -> Vec<(Condition, bool)> {
    let named = |name: &str, value: ValueMatch| NamedMatch { name: name.to_owned(), value };
    let exact = |value: &str| ValueMatch::Exact(value.to_owned());
    let mut out = Vec::new();
    if let Some(header) = &rule.header {
        match (&rule.header_value, &rule.header_pattern) {
            (Some(value), _) => out.push((Condition::Header(named(header, exact(value))), true)),
            (None, Some(pattern)) => {
                out.push((Condition::Header(named(header, ValueMatch::Regex(pattern.clone()))), true));
            }
            (None, None) => {
                out.push((Condition::Header(named(header, exact("always"))), true));
                out.push((Condition::Header(named(header, exact("never"))), false));
            }
        }
    }
    if let Some(cookie) = &rule.cookie {
        out.push((Condition::Cookie(named(cookie, exact("always"))), true));
        out.push((Condition::Cookie(named(cookie, exact("never"))), false));
    }
    out
}

fn backend_ref(backend: &Backend, weight: u32, owner: &ObjectKey) -> BackendRef {
    BackendRef {
        service: backend.service.clone(),
        port: backend.port.clone(),
        endpoints: backend.endpoints.clone(),
        weight,
        owner: owner.clone(),
    }
}

/// Route policies made once per Ingress's options (and, for affinity without a cookie path,
/// per rule path), shared by the routes that have them.
#[derive(Default)]
struct Policies {
    made: HashMap<(*const IngressOptions, Option<String>), Arc<RoutePolicy>>,
}

impl Policies {
    /// The policy of a rule with `options` and path `path`.
    fn of(&mut self, options: &Arc<IngressOptions>, path: &str) -> Arc<RoutePolicy> {
        let cookie_path = options.affinity.as_ref().filter(|a| a.path.is_none()).map(|_| path.to_owned());
        let key = (Arc::as_ptr(options), cookie_path);
        let made = self.made.entry(key).or_insert_with_key(|(_, cookie_path)| {
            Arc::new(RoutePolicy {
                backend_protocol: options.backend_protocol,
                body_limit: options.body_limit,
                timeouts: Timeouts {
                    connect_seconds: options.connect_timeout_seconds,
                    send_seconds: options.send_timeout_seconds,
                    read_seconds: options.read_timeout_seconds,
                },
                affinity: options.affinity.as_ref().map(|a| CookieAffinity {
                    path: a.path.clone().or_else(|| cookie_path.clone()),
                    ..a.clone()
                }),
                allow_sources: options.allow_sources.clone(),
            })
        });
        Arc::clone(made)
    }
}

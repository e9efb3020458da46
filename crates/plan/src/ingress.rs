//! Ingress: which Ingresses are ours, their routes (host → ordered path matchers → backend
//! endpoints), default backends and TLS certificates, and the matching rules of the
//! networking.k8s.io/v1 API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use portico_model::validate::{TLS_SECRET_TYPE, secret_value};
use portico_model::{Diagnostic, ObjectKey, ObjectKind, ObjectRef, Store, Stored};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use crate::config::{INGRESS_CONTROLLER, PlanConfig};
use crate::endpoints::{Scope, select};
use crate::order::by_age;
use crate::services::ServicePlan;

/// Annotation naming an Ingress's class, older than (and preferred over) `ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotation marking the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Everything the L7 data plane serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressPlan {
    /// Hosts named exactly, lowercase.
    pub exact_hosts: BTreeMap<String, VirtualHost>,
    /// Wildcard hosts by the suffix after `*.` (`*.foo.com` is stored as `foo.com`).
    pub wildcard_hosts: BTreeMap<String, VirtualHost>,
    /// Rules without a host: they match every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any_host: Option<VirtualHost>,
    /// The backend for requests no rule matches (the oldest Ingress's `defaultBackend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<Backend>,
    /// Certificates by the hosts they serve.
    pub certificates: Vec<Certificate>,
    /// Ingresses served, for their status.
    pub ingresses: Vec<ObjectKey>,
}

/// Routes of one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// Paths in match order: longest first, Exact before Prefix, then oldest Ingress.
    pub routes: Vec<Route>,
    /// Backend for this host's unmatched paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<Backend>,
    /// Whether a certificate covers this host.
    pub tls: bool,
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix on `/`, trailing slashes ignored (also ImplementationSpecific).
    Prefix,
}

/// One path rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The path as written.
    pub path: String,
    /// How it matches.
    pub kind: PathKind,
    /// Where matching requests go.
    pub backend: Backend,
    /// The Ingress the rule comes from.
    pub ingress: ObjectKey,
}

/// A Service port behind a route.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The Service.
    pub service: ObjectKey,
    /// The Service port, as the Ingress names it (number or name).
    pub port: String,
    /// Ready endpoints to send requests to; empty means 503.
    pub endpoints: Vec<SocketAddr>,
}

/// A TLS certificate from a `kubernetes.io/tls` Secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// The Secret it came from.
    pub secret: ObjectKey,
    /// Hosts it serves (may include wildcards); empty: the default certificate.
    pub hosts: Vec<String>,
    /// PEM certificate chain.
    #[serde(skip)]
    pub cert_pem: Arc<[u8]>,
    /// PEM private key (never serialized).
    #[serde(skip)]
    pub key_pem: Arc<[u8]>,
}

/// What a request matched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RouteMatch<'a> {
    /// A path rule.
    Route(&'a Route),
    /// No rule: a default backend.
    Default(&'a Backend),
    /// Nothing: answer 404.
    NotFound,
}

impl IngressPlan {
    /// The virtual host a Host header selects: exact, then wildcard, then host-less rules.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let host = normalize_host(host);
        if let Some(v) = self.exact_hosts.get(&host) {
            return Some(v);
        }
        if let Some((_, suffix)) = host.split_once('.')
            && let Some(v) = self.wildcard_hosts.get(suffix)
        {
            return Some(v);
        }
        self.any_host.as_ref()
    }

    /// Routes a request by Host header and path (without query or fragment).
    pub fn route(&self, host: &str, path: &str) -> RouteMatch<'_> {
        let vhost = self.virtual_host(host);
        if let Some(route) = vhost.and_then(|v| v.routes.iter().find(|r| path_matches(r.kind, &r.path, path)))
        {
            return RouteMatch::Route(route);
        }
        match vhost.and_then(|v| v.default_backend.as_ref()).or(self.default_backend.as_ref()) {
            Some(backend) => RouteMatch::Default(backend),
            None => RouteMatch::NotFound,
        }
    }

    /// The certificate for a TLS server name: exact host, then wildcard, then default.
    pub fn certificate(&self, server_name: Option<&str>) -> Option<&Certificate> {
        let name = server_name.map(normalize_host).unwrap_or_default();
        let wildcard = name.split_once('.').map(|(_, suffix)| format!("*.{suffix}"));
        self.certificates
            .iter()
            .find(|c| c.hosts.contains(&name))
            .or_else(|| {
                self.certificates.iter().find(|c| c.hosts.iter().any(|h| Some(h) == wildcard.as_ref()))
            })
            .or_else(|| self.certificates.iter().find(|c| c.hosts.is_empty()))
    }
}

/// Lowercase, without `:port` and without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = if host.starts_with('[') {
        host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host)
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request path matches a rule path of `kind`.
pub fn path_matches(kind: PathKind, rule: &str, request: &str) -> bool {
    match kind {
        PathKind::Exact => rule == request,
        PathKind::Prefix => {
            let rule = rule.trim_end_matches('/');
            rule.is_empty()
                || request == rule
                || (request.len() > rule.len()
                    && request.starts_with(rule)
                    && request.as_bytes()[rule.len()] == b'/')
        }
    }
}

/// Sort key for match order: longer (trailing slash ignored for Prefix) first, Exact first.
fn precedence(route: &Route) -> (std::cmp::Reverse<usize>, u8) {
    let len = match route.kind {
        PathKind::Exact => route.path.len(),
        PathKind::Prefix => route.path.trim_end_matches('/').len(),
    };
    (std::cmp::Reverse(len), if route.kind == PathKind::Exact { 0 } else { 1 })
}

/// Plans every Ingress whose class is ours.
pub fn plan_ingress(
    store: &Store,
    services: &[ServicePlan],
    config: &PlanConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> IngressPlan {
    let classes = Classes::new(store, config);
    let by_key: BTreeMap<&ObjectKey, &ServicePlan> = services.iter().map(|s| (&s.key, s)).collect();
    let mut plan = IngressPlan::default();
    let mut host_tls: Vec<String> = Vec::new();
    let ingresses = by_age(store.ingresses.values(), |i| i.metadata.creation_timestamp.as_ref());
    for ingress in ingresses {
        let key = portico_model::object::key_of(ObjectKind::Ingress, &ingress.object.metadata);
        let reference = ObjectRef::new("Ingress", key.clone());
        match classes.serves(&ingress.object) {
            Ok(()) => {}
            Err(why) => {
                diagnostics.push(
                    Diagnostic::warning(format!("not served: {why}"))
                        .at(&ingress.origin)
                        .on(reference)
                        .field("spec.ingressClassName"),
                );
                continue;
            }
        }
        let Some(spec) = &ingress.object.spec else { continue };
        let mut ctx = IngressCtx { ingress, key: &key, services: &by_key, diagnostics: &mut *diagnostics };
        for (t, tls) in spec.tls.iter().flatten().enumerate() {
            if let Some(cert) =
                ctx.certificate(t, tls.secret_name.as_deref(), tls.hosts.clone().unwrap_or_default(), store)
            {
                host_tls.extend(cert.hosts.iter().cloned());
                plan.certificates.push(cert);
            }
        }
        let default_backend = spec.default_backend.as_ref().map(|b| ctx.backend("spec.defaultBackend", b));
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.as_deref().filter(|h| !h.is_empty()).map(str::to_ascii_lowercase);
            let vhost = match &host {
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => plan.wildcard_hosts.entry(suffix.to_string()).or_default(),
                    None => plan.exact_hosts.entry(h.clone()).or_default(),
                },
                None => plan.any_host.get_or_insert_with(VirtualHost::default),
            };
            if vhost.default_backend.is_none() {
                vhost.default_backend.clone_from(&default_backend);
            }
            for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let kind = if path.path_type == "Exact" { PathKind::Exact } else { PathKind::Prefix };
                let rule_path = path.path.clone().unwrap_or_else(|| "/".into());
                let field = format!("spec.rules[{r}].http.paths[{p}]");
                let backend = ctx.backend(&format!("{field}.backend"), &path.backend);
                if let Some(older) = vhost.routes.iter().find(|o| o.kind == kind && o.path == rule_path) {
                    ctx.diagnostics.push(
                        Diagnostic::warning(format!(
                            "{} {rule_path} on host {} is already routed by the older Ingress {}; this rule is ignored",
                            if kind == PathKind::Exact { "Exact" } else { "Prefix" },
                            host.as_deref().unwrap_or("*"),
                            older.ingress
                        ))
                        .at(&ingress.origin)
                        .on(ObjectRef::new("Ingress", key.clone()))
                        .field(format!("{field}.path")),
                    );
                    continue;
                }
                vhost.routes.push(Route { path: rule_path, kind, backend, ingress: key.clone() });
            }
        }
        if plan.default_backend.is_none() {
            plan.default_backend = default_backend;
        }
        plan.ingresses.push(key);
    }
    let all_hosts = plan
        .exact_hosts
        .iter_mut()
        .map(|(h, v)| (h.clone(), v))
        .chain(plan.wildcard_hosts.iter_mut().map(|(h, v)| (format!("*.{h}"), v)));
    for (host, vhost) in all_hosts {
        // Stable sort keeps older Ingresses first among equals.
        vhost.routes.sort_by_key(precedence);
        vhost.tls = host_tls.contains(&host);
    }
    if let Some(any) = &mut plan.any_host {
        any.routes.sort_by_key(precedence);
    }
    plan.ingresses.sort();
    plan
}

/// The IngressClasses Portico serves.
struct Classes {
    ours: Vec<String>,
    default: Option<(String, bool)>,
}

impl Classes {
    fn new(store: &Store, config: &PlanConfig) -> Self {
        let mut ours = config.ingress_class_names.clone();
        let mut default = None;
        for class in store.ingress_classes.values() {
            let name = class.object.metadata.name.clone().unwrap_or_default();
            let mine =
                class.object.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(INGRESS_CONTROLLER);
            if mine {
                ours.push(name.clone());
            } else {
                ours.retain(|n| *n != name);
            }
            let is_default = class
                .object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .map(String::as_str)
                == Some("true");
            if is_default && default.is_none() {
                default = Some((name, mine));
            }
        }
        Self { ours, default }
    }

    fn serves(&self, ingress: &Ingress) -> Result<(), String> {
        let annotation = ingress.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        let class = annotation.or(ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_ref()));
        match (class, &self.default) {
            (Some(c), _) if self.ours.contains(c) => Ok(()),
            (Some(c), _) => Err(format!(
                "IngressClass {c:?} is not served by Portico (controller {INGRESS_CONTROLLER}; classes served: {})",
                self.ours.join(", ")
            )),
            (None, Some((_, true))) | (None, None) => Ok(()),
            (None, Some((name, false))) => Err(format!(
                "no class given and the default IngressClass {name:?} belongs to another controller"
            )),
        }
    }
}

struct IngressCtx<'a> {
    ingress: &'a Stored<Ingress>,
    key: &'a ObjectKey,
    services: &'a BTreeMap<&'a ObjectKey, &'a ServicePlan>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl IngressCtx<'_> {
    fn error(&mut self, field: String, message: String) {
        self.diagnostics.push(
            Diagnostic::error(message)
                .at(&self.ingress.origin)
                .on(ObjectRef::new("Ingress", self.key.clone()))
                .field(field),
        );
    }

    /// Resolves a backend to endpoints; a missing Service or port is reported and the route
    /// answers 503, as in any ingress controller.
    fn backend(&mut self, field: &str, backend: &IngressBackend) -> Backend {
        let Some(svc) = &backend.service else {
            return Backend { service: ObjectKey::default(), port: String::new(), endpoints: Vec::new() };
        };
        let service_key = ObjectKey::new(self.key.namespace.clone(), svc.name.clone());
        let port_ref = svc.port.as_ref();
        let port_text = port_ref
            .and_then(|p| p.name.clone())
            .or_else(|| port_ref.and_then(|p| p.number).map(|n| n.to_string()))
            .unwrap_or_default();
        let mut out =
            Backend { service: service_key.clone(), port: port_text.clone(), endpoints: Vec::new() };
        let Some(service) = self.services.get(&service_key) else {
            self.error(
                format!("{field}.service.name"),
                format!("Service {service_key} does not exist; requests get 503"),
            );
            return out;
        };
        let port = service.ports.iter().find(|p| match port_ref {
            Some(r) if r.name.is_some() => r.name.as_deref() == Some(p.name.as_str()),
            Some(r) => r.number.is_some_and(|n| i32::from(p.port) == n),
            None => false,
        });
        let Some(port) = port else {
            let have =
                service
                    .ports
                    .iter()
                    .map(|p| {
                        if p.name.is_empty() {
                            p.port.to_string()
                        } else {
                            format!("{} ({})", p.port, p.name)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
            self.error(
                format!("{field}.service.port"),
                format!("Service {service_key} has no port {port_text} (it has: {have}); requests get 503"),
            );
            return out;
        };
        out.endpoints = select(&port.endpoints, Scope::Cluster { node: "", zone: None })
            .iter()
            .map(|e| SocketAddr::new(e.address, e.port))
            .collect();
        out
    }

    fn certificate(
        &mut self,
        t: usize,
        secret_name: Option<&str>,
        hosts: Vec<String>,
        store: &Store,
    ) -> Option<Certificate> {
        let field = format!("spec.tls[{t}].secretName");
        let Some(name) = secret_name.filter(|n| !n.is_empty()) else {
            self.error(field, "required: the kubernetes.io/tls Secret holding the certificate".into());
            return None;
        };
        let secret_key = ObjectKey::new(self.key.namespace.clone(), name);
        let Some(secret) = store.secrets.get(&secret_key) else {
            self.error(
                field,
                format!("Secret {secret_key} does not exist; TLS for these hosts is not served"),
            );
            return None;
        };
        if secret.object.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            let actual = secret.object.type_.as_deref().unwrap_or("Opaque");
            self.error(field, format!("Secret {secret_key} has type {actual}, not {TLS_SECRET_TYPE}; TLS for these hosts is not served"));
            return None;
        }
        let cert = secret_value(&secret.object, "tls.crt").unwrap_or_default();
        let key = secret_value(&secret.object, "tls.key").unwrap_or_default();
        let certs_ok = CertificateDer::pem_slice_iter(cert).next().is_some_and(|c| c.is_ok());
        let key_ok = PrivateKeyDer::from_pem_slice(key).is_ok();
        if !certs_ok || !key_ok {
            let which = if certs_ok {
                "tls.key holds no PEM private key"
            } else {
                "tls.crt holds no PEM certificate"
            };
            self.error(field, format!("Secret {secret_key}: {which}; TLS for these hosts is not served"));
            return None;
        }
        Some(Certificate {
            secret: secret_key,
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            cert_pem: Arc::from(cert),
            key_pem: Arc::from(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, kind: PathKind, service: &str) -> Route {
        Route {
            path: path.into(),
            kind,
            backend: Backend {
                service: ObjectKey::new("default", service),
                port: "80".into(),
                endpoints: vec![],
            },
            ingress: ObjectKey::new("default", "i"),
        }
    }

    fn plan_with(routes: Vec<Route>) -> IngressPlan {
        let mut vhost = VirtualHost { routes, default_backend: None, tls: false };
        vhost.routes.sort_by_key(precedence);
        IngressPlan { any_host: Some(vhost), ..IngressPlan::default() }
    }

    /// The examples table of the Kubernetes Ingress documentation, row by row.
    #[test]
    fn kubernetes_docs_examples_table() {
        use PathKind::{Exact, Prefix};
        // (rule paths, request, the rule path that should match)
        type Row<'a> = (Vec<(&'a str, PathKind)>, &'a str, Option<&'a str>);
        let rows: Vec<Row> = vec![
            (vec![("/", Prefix)], "/anything/at/all", Some("/")),
            (vec![("/foo", Exact)], "/foo", Some("/foo")),
            (vec![("/foo", Exact)], "/bar", None),
            (vec![("/foo", Exact)], "/foo/", None),
            (vec![("/foo/", Exact)], "/foo", None),
            (vec![("/foo", Prefix)], "/foo", Some("/foo")),
            (vec![("/foo", Prefix)], "/foo/", Some("/foo")),
            (vec![("/foo/", Prefix)], "/foo", Some("/foo/")),
            (vec![("/foo/", Prefix)], "/foo/", Some("/foo/")),
            (vec![("/aaa/bb", Prefix)], "/aaa/bbb", None),
            (vec![("/aaa/bbb", Prefix)], "/aaa/bbb", Some("/aaa/bbb")),
            (vec![("/aaa/bbb/", Prefix)], "/aaa/bbb", Some("/aaa/bbb/")),
            (vec![("/aaa/bbb", Prefix)], "/aaa/bbb/", Some("/aaa/bbb")),
            (vec![("/aaa/bbb", Prefix)], "/aaa/bbb/ccc", Some("/aaa/bbb")),
            (vec![("/aaa/bbb", Prefix)], "/aaa/bbbxyz", None),
            (vec![("/", Prefix), ("/aaa", Prefix)], "/aaa/ccc", Some("/aaa")),
            (vec![("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)], "/aaa/bbb", Some("/aaa/bbb")),
            (vec![("/", Prefix), ("/aaa", Prefix), ("/aaa/bbb", Prefix)], "/ccc", Some("/")),
            (vec![("/aaa", Prefix)], "/ccc", None),
        ];
        for (paths, request, expected) in rows {
            let plan = plan_with(paths.iter().map(|(p, k)| route(p, *k, "svc")).collect());
            let got = match plan.route("any.host", request) {
                RouteMatch::Route(r) => Some(r.path.as_str()),
                _ => None,
            };
            assert_eq!(got, expected, "paths {paths:?}, request {request}");
        }
        // Mixed: /foo Prefix and /foo Exact, request /foo → Exact, whatever the YAML order.
        for order in [vec![("/foo", Prefix), ("/foo", Exact)], vec![("/foo", Exact), ("/foo", Prefix)]] {
            let plan = plan_with(
                order
                    .iter()
                    .map(|(p, k)| route(p, *k, if *k == Exact { "exact" } else { "prefix" }))
                    .collect(),
            );
            match plan.route("h", "/foo") {
                RouteMatch::Route(r) => assert_eq!(r.backend.service.name, "exact"),
                other => panic!("no match: {other:?}"),
            }
        }
    }

    #[test]
    fn hosts_exact_wildcard_and_any() {
        let mut plan = IngressPlan::default();
        plan.exact_hosts.insert(
            "foo.bar.com".into(),
            VirtualHost { routes: vec![route("/", PathKind::Prefix, "exact")], ..Default::default() },
        );
        plan.wildcard_hosts.insert(
            "foo.com".into(),
            VirtualHost { routes: vec![route("/", PathKind::Prefix, "wild")], ..Default::default() },
        );
        let name = |host: &str| match plan.route(host, "/") {
            RouteMatch::Route(r) => r.backend.service.name.clone(),
            _ => "404".into(),
        };
        assert_eq!(name("FOO.bar.com:8080"), "exact");
        assert_eq!(name("bar.foo.com"), "wild");
        assert_eq!(name("baz.bar.foo.com"), "404");
        assert_eq!(name("foo.com"), "404");
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Example.COM:443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
    }
}

//! Ingress: which Ingresses are ours, their routes (host → ordered path matchers → backend
//! endpoints), default backends and TLS certificates, and the matching rules of the
//! networking.k8s.io/v1 API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use portico_model::validate::{TLS_SECRET_TYPE, secret_value};
use portico_model::{Diagnostic, ObjectKey, ObjectKind, ObjectRef, Store, Stored};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use crate::annotations::{self, CanaryRule, IngressOptions};
use crate::config::{INGRESS_CONTROLLER, PlanConfig};
use crate::endpoints::{Scope, select};
use crate::order::by_age;
use crate::pattern::Pattern;
use crate::routes::filters::expand_captures;
use crate::routes::hosts;
pub use crate::routes::hosts::HostName as RuleHost;
use crate::routes::hosts::normalize_host;
use crate::routes::matching::prefix_matches;
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
    pub default_backend: Option<DefaultBackend>,
    /// Certificates by the hosts they serve.
    pub certificates: Vec<Certificate>,
    /// Ingresses served, for their status.
    pub ingresses: Vec<ObjectKey>,
    /// Where each served Ingress can be reached: its `status.loadBalancer`.
    pub status: Vec<IngressStatus>,
}

/// The addresses one Ingress is served on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressStatus {
    /// The Ingress.
    pub ingress: ObjectKey,
    /// The HTTP listener, and the HTTPS one when the Ingress has `tls`.
    pub addresses: Vec<SocketAddr>,
}

/// Routes of one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// Paths in match order: longest first, Exact before Prefix, then oldest Ingress.
    pub routes: Vec<Route>,
    /// Backend for this host's unmatched paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<DefaultBackend>,
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
    /// ImplementationSpecific with `use-regex` or `rewrite-target`: a case-insensitive regex
    /// anchored at the start of the path, as ingress-nginx reads it.
    Regex,
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
    /// The compiled path of a `Regex` rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// The Ingress's annotations, typed.
    pub options: Arc<IngressOptions>,
    /// A canary Ingress that takes part of this rule's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

impl Route {
    /// Whether the request path (normalised, without query) matches this rule.
    pub fn matches(&self, path: &str) -> bool {
        match &self.pattern {
            Some(pattern) => pattern.is_match(path),
            None => path_matches(self.kind, &self.path, path),
        }
    }

    /// The path to send upstream: `rewrite-target` applied (with the regex's groups), or the
    /// request path as it is.
    pub fn upstream_path<'p>(&self, path: &'p str) -> std::borrow::Cow<'p, str> {
        let Some(target) = &self.options.rewrite_target else { return path.into() };
        match &self.pattern {
            Some(pattern) => expand_captures(pattern, target, path).into(),
            None => target.clone().into(),
        }
    }
}

/// The canary side of a rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Where the canary's requests go.
    pub backend: Backend,
    /// When a request is the canary's.
    pub rule: CanaryRule,
    /// The canary Ingress.
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

/// An Ingress's `defaultBackend`: where the requests it serves but no rule matches go.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultBackend {
    /// The Ingress it belongs to: its requests are that Ingress's (metrics, logs).
    pub ingress: ObjectKey,
    /// That Ingress's annotations, typed: they apply to these requests too.
    pub options: Arc<IngressOptions>,
    /// Where the requests go.
    #[serde(flatten)]
    pub backend: Backend,
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
    Default(&'a DefaultBackend),
    /// Nothing: answer 404.
    NotFound,
}

impl IngressPlan {
    /// Every virtual host with its rule host: exact names, wildcards, then host-less rules.
    pub fn virtual_hosts(&self) -> impl Iterator<Item = (RuleHost<'_>, &VirtualHost)> {
        let exact = self.exact_hosts.iter().map(|(h, v)| (RuleHost::Exact(h.as_str()), v));
        let wildcard = self.wildcard_hosts.iter().map(|(s, v)| (RuleHost::Wildcard(s.as_str()), v));
        exact.chain(wildcard).chain(self.any_host.iter().map(|v| (RuleHost::Any, v)))
    }

    /// The virtual host a Host header selects: exact, then wildcard, then host-less rules.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        hosts::pick(&self.exact_hosts, &self.wildcard_hosts, self.any_host.as_ref(), host)
    }

    /// Routes a request by Host header and path (without query or fragment).
    pub fn route(&self, host: &str, path: &str) -> RouteMatch<'_> {
        self.route_in(self.virtual_host(host), path)
    }

    /// Routes a path within the virtual host [`Self::virtual_host`] chose.
    pub fn route_in<'a>(&'a self, vhost: Option<&'a VirtualHost>, path: &str) -> RouteMatch<'a> {
        if let Some(route) = vhost.and_then(|v| v.routes.iter().find(|r| r.matches(path))) {
            return RouteMatch::Route(route);
        }
        match vhost.and_then(|v| v.default_backend.as_ref()).or(self.default_backend.as_ref()) {
            Some(backend) => RouteMatch::Default(backend),
            None => RouteMatch::NotFound,
        }
    }

    /// The virtual host of a rule's host (`None`: every host), created when new.
    fn virtual_host_mut(&mut self, host: Option<&str>) -> &mut VirtualHost {
        match host {
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => self.wildcard_hosts.entry(suffix.to_owned()).or_default(),
                None => self.exact_hosts.entry(h.to_owned()).or_default(),
            },
            None => self.any_host.get_or_insert_with(VirtualHost::default),
        }
    }

    /// The existing virtual host of a rule's host.
    fn existing_virtual_host_mut(&mut self, host: Option<&str>) -> Option<&mut VirtualHost> {
        match host {
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => self.wildcard_hosts.get_mut(suffix),
                None => self.exact_hosts.get_mut(h),
            },
            None => self.any_host.as_mut(),
        }
    }

    /// The certificate for a TLS server name: exact host, then wildcard, then default.
    pub fn certificate(&self, server_name: Option<&str>) -> Option<&Certificate> {
        let name = server_name.map(normalize_host).unwrap_or_default();
        let wildcard = name.split_once('.').map(|(_, suffix)| format!("*.{suffix}"));
        self.certificates
            .iter()
            .find(|c| c.hosts.iter().any(|h| *h == name))
            .or_else(|| {
                self.certificates.iter().find(|c| c.hosts.iter().any(|h| Some(h) == wildcard.as_ref()))
            })
            .or_else(|| self.certificates.iter().find(|c| c.hosts.is_empty()))
    }
}

/// Whether a request path matches a rule path of `kind`.
pub fn path_matches(kind: PathKind, rule: &str, request: &str) -> bool {
    match kind {
        PathKind::Exact => rule == request,
        PathKind::Regex => Pattern::new(&regex_source(rule)).is_ok_and(|p| p.is_match(request)),
        PathKind::Prefix => prefix_matches(rule, request),
    }
}

/// The regex an ingress-nginx regex path stands for: case-insensitive, anchored at the start.
pub(crate) fn regex_source(path: &str) -> String {
    format!("(?i)^(?:{path})")
}

/// Sort key for match order: longer (trailing slash ignored for Prefix) first, Exact first.
fn precedence(route: &Route) -> (std::cmp::Reverse<usize>, u8) {
    let len = match route.kind {
        PathKind::Exact | PathKind::Regex => route.path.len(),
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
    let mut canaries = Vec::new();
    let defaults = Arc::new(IngressOptions::default());
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
        let annotated = ingress.object.metadata.annotations.as_ref();
        let options = if annotated.is_some_and(|a| a.keys().any(|k| k.starts_with(annotations::NGINX_PREFIX)))
        {
            let (options, problems) = annotations::parse(annotated);
            for problem in problems {
                ctx.report(
                    problem.warning,
                    format!("metadata.annotations[{}]", problem.key),
                    problem.message,
                );
            }
            Arc::new(options)
        } else {
            // Most Ingresses carry no ingress-nginx annotation: they share one default.
            Arc::clone(&defaults)
        };
        let has_tls = spec.tls.as_ref().is_some_and(|t| !t.is_empty());
        let mut addresses = vec![config.ingress_http];
        if has_tls {
            addresses.push(config.ingress_https);
        }
        plan.status.push(IngressStatus { ingress: key.clone(), addresses });
        if options.canary.is_some() {
            plan.ingresses.push(key.clone());
            canaries.push((ingress, key.clone(), Arc::clone(&options)));
            continue;
        }
        for (t, tls) in spec.tls.iter().flatten().enumerate() {
            if let Some(cert) =
                ctx.certificate(t, tls.secret_name.as_deref(), tls.hosts.clone().unwrap_or_default(), store)
            {
                host_tls.extend(cert.hosts.iter().cloned());
                plan.certificates.push(cert);
            }
        }
        let default_backend = spec.default_backend.as_ref().map(|b| DefaultBackend {
            ingress: key.clone(),
            options: Arc::clone(&options),
            backend: ctx.backend("spec.defaultBackend", b),
        });
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.as_deref().filter(|h| !h.is_empty()).map(str::to_ascii_lowercase);
            let vhost = plan.virtual_host_mut(host.as_deref());
            if vhost.default_backend.is_none() {
                vhost.default_backend.clone_from(&default_backend);
            }
            for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("spec.rules[{r}].http.paths[{p}]");
                let Some(mut route) = ctx.route(&field, path, &options) else { continue };
                if let Some(older) =
                    vhost.routes.iter().find(|o| o.kind == route.kind && o.path == route.path)
                {
                    ctx.report(
                        true,
                        format!("{field}.path"),
                        format!(
                            "{:?} {} on host {} is already routed by the older Ingress {}; this rule is ignored",
                            route.kind,
                            route.path,
                            host.as_deref().unwrap_or("*"),
                            older.ingress
                        ),
                    );
                    continue;
                }
                route.ingress = key.clone();
                vhost.routes.push(route);
            }
        }
        if plan.default_backend.is_none() {
            plan.default_backend = default_backend;
        }
        plan.ingresses.push(key);
    }
    for (ingress, key, options) in canaries {
        attach_canaries(&mut plan, ingress, &key, &options, &by_key, diagnostics);
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
    plan.status.sort_by(|a, b| a.ingress.cmp(&b.ingress));
    plan
}

/// Gives each canary Ingress's rules to the routes they shadow: same host, same path and
/// path type, served by a non-canary Ingress.
fn attach_canaries(
    plan: &mut IngressPlan,
    ingress: &Stored<Ingress>,
    key: &ObjectKey,
    options: &Arc<IngressOptions>,
    services: &BTreeMap<&ObjectKey, &ServicePlan>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Some(rule) = &options.canary else { return };
    let mut ctx = IngressCtx { ingress, key, services, diagnostics };
    let rules = ingress.object.spec.iter().flat_map(|s| s.rules.iter().flatten());
    for (r, ingress_rule) in rules.enumerate() {
        let host = ingress_rule.host.as_deref().filter(|h| !h.is_empty()).map(str::to_ascii_lowercase);
        for (p, path) in ingress_rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = format!("spec.rules[{r}].http.paths[{p}]");
            let Some(canary) = ctx.route(&field, path, options) else { continue };
            let main = plan
                .existing_virtual_host_mut(host.as_deref())
                .and_then(|v| v.routes.iter_mut().find(|m| m.kind == canary.kind && m.path == canary.path));
            let problem = match main {
                Some(main) if main.canary.is_none() => {
                    main.canary =
                        Some(Canary { backend: canary.backend, rule: rule.clone(), ingress: key.clone() });
                    continue;
                }
                Some(main) => format!(
                    "the rule of {} already has the canary {}; this one is ignored",
                    main.ingress,
                    main.canary.as_ref().map(|c| c.ingress.to_string()).unwrap_or_default()
                ),
                None => format!(
                    "no non-canary Ingress routes {:?} {} on host {}; this canary rule is ignored",
                    canary.kind,
                    canary.path,
                    host.as_deref().unwrap_or("*")
                ),
            };
            ctx.report(true, format!("{field}.path"), problem);
        }
    }
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
    fn report(&mut self, warning: bool, field: String, message: String) {
        let diagnostic = if warning { Diagnostic::warning(message) } else { Diagnostic::error(message) };
        self.diagnostics.push(
            diagnostic.at(&self.ingress.origin).on(ObjectRef::new("Ingress", self.key.clone())).field(field),
        );
    }

    fn error(&mut self, field: String, message: String) {
        self.report(false, field, message);
    }

    /// One path rule, typed; `None` (reported) when its regex does not compile.
    fn route(&mut self, field: &str, path: &HTTPIngressPath, options: &Arc<IngressOptions>) -> Option<Route> {
        let kind = match path.path_type.as_str() {
            "Exact" => PathKind::Exact,
            "ImplementationSpecific" if options.use_regex => PathKind::Regex,
            _ => PathKind::Prefix,
        };
        let rule_path = path.path.clone().unwrap_or_else(|| "/".into());
        let pattern = match kind {
            PathKind::Regex => match Pattern::new(&regex_source(&rule_path)) {
                Ok(p) => Some(p),
                Err(err) => {
                    self.error(
                        format!("{field}.path"),
                        format!("not a regular expression ({err}); rule not served"),
                    );
                    return None;
                }
            },
            _ => None,
        };
        let mut options = Arc::clone(options);
        let captures = options.rewrite_target.as_deref().is_some_and(|t| {
            t.as_bytes().windows(2).any(|w| w[0] == b'$' && (w[1].is_ascii_digit() || w[1] == b'{'))
        });
        if captures && kind != PathKind::Regex {
            self.error(
                format!("{field}.pathType"),
                "rewrite-target refers to capture groups, which only an ImplementationSpecific (regex) path has; \
                 this rule is served without the rewrite"
                    .into(),
            );
            Arc::make_mut(&mut options).rewrite_target = None;
        }
        let backend = self.backend(&format!("{field}.backend"), &path.backend);
        Some(Route {
            path: rule_path,
            kind,
            backend,
            ingress: self.key.clone(),
            pattern,
            options,
            canary: None,
        })
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
            pattern: None,
            options: Arc::default(),
            canary: None,
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
}

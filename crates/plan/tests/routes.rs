//! The HTTP routes built from Ingresses answer every request as the Ingress matcher does:
//! the same route, backend (canaries included), redirect, upstream path and options, on a
//! table of hosts, paths, headers, cookies and draws over a set of Ingresses.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use portico_model::ObjectKey;
use portico_plan::annotations::{CanaryRule, IngressOptions};
use portico_plan::ingress::{Backend, IngressPlan, RouteMatch};
use portico_plan::routes::from_ingress::from_ingress;
use portico_plan::routes::{HttpListener, HttpRoutes, Request};
use portico_plan::{Plan, PlanConfig};
use portico_testkit::manifests::ingress;

/// What a request comes to: nothing (404), or a backend reached a certain way.
#[derive(Debug, PartialEq)]
enum Outcome {
    NotFound,
    Served {
        /// The object it is counted against, and the Service.
        owner: ObjectKey,
        service: ObjectKey,
        redirect: bool,
        upstream: String,
        body_limit: Option<u64>,
        allowed: usize,
        cookie_path: Option<String>,
    },
}

/// A request of the table.
struct Asked<'a> {
    path: &'a str,
    header: Option<&'a str>,
    cookie: Option<&'a str>,
}

impl Request for Asked<'_> {
    fn path(&self) -> &str {
        self.path
    }
    fn method(&self) -> &str {
        "GET"
    }
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header.filter(|_| name.eq_ignore_ascii_case("x-canary"))
    }
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookie.filter(|_| name == "cc")
    }
    fn query(&self) -> Option<&str> {
        None
    }
}

/// Today's answer: the Ingress matcher, then the canary rule as the data plane reads it.
fn by_ingress(plan: &IngressPlan, tls: bool, host: &str, asked: &Asked, draw: u64) -> Outcome {
    let vhost = plan.virtual_host(host);
    let (route, owner, backend, options): (_, &ObjectKey, &Backend, &Arc<IngressOptions>) =
        match plan.route_in(vhost, asked.path) {
            RouteMatch::NotFound => return Outcome::NotFound,
            RouteMatch::Default(d) => (None, &d.ingress, &d.backend, &d.options),
            RouteMatch::Route(r) => (Some(r), &r.ingress, &r.backend, &r.options),
        };
    let (owner, backend) = match route.and_then(|r| r.canary.as_ref()) {
        Some(canary) if takes_canary(&canary.rule, asked, draw) => (&canary.ingress, &canary.backend),
        _ => (owner, backend),
    };
    let host_tls = vhost.is_some_and(|v| v.tls);
    let affinity = options.affinity.as_ref();
    Outcome::Served {
        owner: owner.clone(),
        service: backend.service.clone(),
        redirect: !tls && (options.force_ssl_redirect || (options.ssl_redirect && host_tls)),
        upstream: route.map_or(asked.path.into(), |r| r.upstream_path(asked.path).into_owned()),
        body_limit: options.body_limit,
        allowed: options.allow_sources.len(),
        cookie_path: affinity
            .map(|a| a.path.clone().unwrap_or_else(|| route.map_or("/".into(), |r| r.path.clone()))),
    }
}

/// The canary decision of the data plane before the route model, written out as it was.
fn takes_canary(rule: &CanaryRule, asked: &Asked, draw: u64) -> bool {
    if let Some(value) = rule.header.as_ref().and_then(|h| asked.header(h)) {
        let chosen = match (&rule.header_value, &rule.header_pattern) {
            (Some(want), _) => (value == want).then_some(true),
            (None, Some(pattern)) => pattern.is_match(value).then_some(true),
            (None, None) => match value {
                "always" => Some(true),
                "never" => Some(false),
                _ => None,
            },
        };
        if let Some(chosen) = chosen {
            return chosen;
        }
    }
    match rule.cookie.as_deref().and_then(|c| asked.cookie(c)) {
        Some("always") => return true,
        Some("never") => return false,
        _ => {}
    }
    rule.weight > 0 && draw % u64::from(rule.weight_total) < u64::from(rule.weight)
}

/// The route model's answer.
fn by_routes(listener: &HttpListener, host: &str, asked: &Asked, draw: u64) -> Outcome {
    let Some(route) = listener.route(host, asked) else { return Outcome::NotFound };
    let backend = route.backend(|| draw).unwrap();
    Outcome::Served {
        owner: backend.owner.clone(),
        service: backend.service.clone(),
        redirect: route.redirect().is_some(),
        upstream: route.upstream_path(asked.path).into_owned(),
        body_limit: route.policy.body_limit,
        allowed: route.policy.allow_sources.len(),
        cookie_path: route.policy.affinity.as_ref().map(|a| a.path.clone().unwrap()),
    }
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n---\n"
    )
}

const CANARY: &str = "nginx.ingress.kubernetes.io/canary: 'true'";

/// Ingresses with every path kind, host kind, default backends, rewrites, redirects, options
/// and each kind of canary rule.
fn scenario() -> Plan {
    let mut yaml: String =
        ["web", "api", "fallback", "wild", "anyhost", "rewrite", "canary"].map(service).concat();
    let default = "  defaultBackend: {service: {name: fallback, port: {number: 80}}}\n";
    let rules = [
        ("/foo", "Exact", "api"),
        ("/foo", "Prefix", "web"),
        ("/", "Prefix", "web"),
        ("/aaa/bbb/", "Prefix", "api"),
    ];
    yaml +=
        &ingress("main", "nginx.ingress.kubernetes.io/proxy-body-size: 8m", Some("a.test"), &rules, default);
    yaml += &ingress(
        "wild",
        "nginx.ingress.kubernetes.io/force-ssl-redirect: 'true'",
        Some("*.w.test"),
        &[("/", "Prefix", "wild")],
        "",
    );
    yaml += &ingress(
        "anyhost",
        "nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8",
        None,
        &[("/any", "Prefix", "anyhost")],
        "",
    );
    let rewrite =
        "nginx.ingress.kubernetes.io/rewrite-target: /$2, nginx.ingress.kubernetes.io/affinity: cookie";
    yaml += &ingress(
        "rewrite",
        rewrite,
        Some("c.test"),
        &[("/something(/|$)(.*)", "ImplementationSpecific", "rewrite")],
        "",
    );
    yaml += &ingress(
        "literal",
        "nginx.ingress.kubernetes.io/rewrite-target: /landing",
        Some("c.test"),
        &[("/old", "Prefix", "web")],
        "",
    );
    let canaries = [
        (
            "by-header",
            "nginx.ingress.kubernetes.io/canary-by-header: X-Canary, nginx.ingress.kubernetes.io/canary-by-cookie: cc, nginx.ingress.kubernetes.io/canary-weight: '25'",
        ),
        (
            "by-value",
            "nginx.ingress.kubernetes.io/canary-by-header: X-Canary, nginx.ingress.kubernetes.io/canary-by-header-value: beta",
        ),
        (
            "by-pattern",
            "nginx.ingress.kubernetes.io/canary-by-header: X-Canary, nginx.ingress.kubernetes.io/canary-by-header-pattern: '^be'",
        ),
        (
            "by-cookie",
            "nginx.ingress.kubernetes.io/canary-by-cookie: cc, nginx.ingress.kubernetes.io/canary-weight: '100'",
        ),
        (
            "by-weight",
            "nginx.ingress.kubernetes.io/canary-weight: '3', nginx.ingress.kubernetes.io/canary-weight-total: '7'",
        ),
    ];
    for (name, annotations) in canaries {
        let host = format!("{name}.test");
        yaml += &ingress(&format!("{name}-main"), "", Some(&host), &[("/", "Prefix", "web")], "");
        yaml += &ingress(
            name,
            &format!("{CANARY}, {annotations}"),
            Some(&host),
            &[("/", "Prefix", "canary")],
            "",
        );
    }
    portico_testkit::plan::planned(&yaml).without_errors().plan
}

const HOSTS: &[&str] = &[
    "a.test",
    "A.TEST:80",
    "x.w.test",
    "y.x.w.test",
    "c.test",
    "other.test",
    "by-header.test",
    "by-value.test",
    "by-pattern.test",
    "by-cookie.test",
    "by-weight.test",
];
const PATHS: &[&str] = &[
    "/",
    "/foo",
    "/foo/",
    "/foo/bar",
    "/aaa/bbb",
    "/aaa/bbbx",
    "/any",
    "/any/x",
    "/something/new/path",
    "/SOMETHING",
    "/old/x",
    "/x",
];
const HEADERS: &[Option<&str>] = &[None, Some("always"), Some("never"), Some("other"), Some("beta")];
const COOKIES: &[Option<&str>] = &[None, Some("always"), Some("never")];

/// Every request of the table gets the same outcome from both; returns how many were asked.
fn same_answers(ingress: &IngressPlan, routes: &HttpRoutes) -> usize {
    let mut asked_count = 0;
    for listener in &routes.listeners {
        for host in HOSTS {
            for path in PATHS {
                for header in HEADERS {
                    for cookie in COOKIES {
                        for draw in [0, 2, 3, 6, 24, 25, 99] {
                            let asked = Asked { path, header: *header, cookie: *cookie };
                            let want = by_ingress(ingress, listener.tls, host, &asked, draw);
                            let got = by_routes(listener, host, &asked, draw);
                            assert_eq!(
                                got, want,
                                "tls {} host {host} path {path} header {header:?} cookie {cookie:?} draw {draw}",
                                listener.tls
                            );
                            asked_count += 1;
                        }
                    }
                }
            }
        }
    }
    asked_count
}

#[test]
fn the_routes_of_the_plan_answer_as_the_ingress_matcher() {
    let plan = scenario();
    assert_eq!(plan.http_routes.listeners.len(), 2);
    assert_eq!(plan.http_routes.listeners[0].address, PlanConfig::default().ingress_http);
    assert!(same_answers(&plan.ingress, &plan.http_routes) > 10_000);
}

#[test]
fn a_host_with_tls_redirects_plain_requests() {
    let mut plan = scenario();
    for vhost in plan.ingress.exact_hosts.values_mut() {
        vhost.tls = true;
    }
    let config = PlanConfig::default();
    let routes = from_ingress(&plan.ingress, config.ingress_http, config.ingress_https);
    same_answers(&plan.ingress, &routes);
    let asked = Asked { path: "/x", header: None, cookie: None };
    let plain = routes.listeners[0].route("a.test", &asked).unwrap();
    let location = plain.redirect().unwrap().location("http", "a.test:80", "/x", Some("q=1"));
    assert_eq!(location, format!("https://a.test:{}/x?q=1", config.ingress_https.port()));
    assert!(routes.listeners[1].route("a.test", &asked).unwrap().redirect().is_none());
}

#[test]
fn canaries_become_matches_and_weights() {
    let plan = scenario();
    let vhost = plan.http_routes.listeners[1].hosts.get("by-header.test").unwrap();
    let shape: Vec<(String, Vec<(String, u32)>)> = vhost
        .routes
        .iter()
        .map(|r| {
            let condition = serde_json::to_string(&r.matches[0]).unwrap();
            (condition, r.backends.iter().map(|b| (b.service.name.clone(), b.weight)).collect())
        })
        .collect();
    let path = r#""path":{"Prefix":"/"}"#;
    let header =
        |v: &str| format!(r#"{{{path},"headers":[{{"name":"X-Canary","value":{{"Exact":"{v}"}}}}]}}"#);
    let cookie = |v: &str| format!(r#"{{{path},"cookies":[{{"name":"cc","value":{{"Exact":"{v}"}}}}]}}"#);
    let to = |s: &str| vec![(s.to_owned(), 1)];
    assert_eq!(
        shape,
        vec![
            (header("always"), vec![("canary".into(), 1), ("web".into(), 0)]),
            (header("never"), to("web")),
            (cookie("always"), vec![("canary".into(), 1), ("web".into(), 0)]),
            (cookie("never"), to("web")),
            (format!("{{{path}}}"), vec![("canary".into(), 25), ("web".into(), 75)]),
            (format!("{{{path}}}"), to("fallback")),
        ],
        "the canary's forced choices, its weights, then the plan's default backend"
    );
}

#[test]
fn annotations_become_filters_and_policies() {
    let plan = scenario();
    let [plain, secure] = &plan.http_routes.listeners[..] else { panic!("two listeners") };
    let filters = |listener: &HttpListener, host: &str, path: &str| {
        let asked = Asked { path, header: None, cookie: None };
        serde_json::to_string(&listener.route(host, &asked).unwrap().filters).unwrap()
    };
    let captures =
        r#"[{"urlRewrite":{"captures":{"pattern":"(?i)^(?:/something(/|$)(.*))","template":"/$2"}}}]"#;
    assert_eq!(filters(secure, "c.test", "/something/x"), captures);
    assert_eq!(filters(secure, "c.test", "/old"), r#"[{"urlRewrite":{"replaceFullPath":"/landing"}}]"#);
    let https = PlanConfig::default().ingress_https.port();
    let redirect = format!(r#"[{{"requestRedirect":{{"scheme":"https","port":{https},"status":308}}}}]"#);
    assert_eq!(filters(plain, "x.w.test", "/"), redirect, "force-ssl-redirect, on the plain listener");
    assert_eq!(filters(secure, "x.w.test", "/"), "[]");
    let asked = Asked { path: "/something/x", header: None, cookie: None };
    let affinity = secure.route("c.test", &asked).unwrap().policy.affinity.clone().unwrap();
    assert_eq!(affinity.path.as_deref(), Some("/something(/|$)(.*)"), "the cookie's path is the rule's");
}

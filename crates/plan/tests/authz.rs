//! Istio AuthorizationPolicies deciding connections and requests as Istio documents it: which
//! policies apply to a Pod (root namespace, namespace, selector, targetRefs), CUSTOM then DENY
//! then ALLOW, AUDIT deciding nothing, rules of `from`, `to` and `when`, every kind of value,
//! plaintext sources, HTTP-only fields on plain connections, and what Portico cannot see.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use portico_model::authz::DEFAULT_ROOT_NAMESPACE;
use portico_model::{ObjectKey, Store, parse_text};
use portico_plan::authz::{Attributes, EffectivePolicy, HttpAttributes, Verdict, effective};
use proptest::prelude::*;

const ROOT: &str = DEFAULT_ROOT_NAMESPACE;

/// The store `yaml` makes, which must load without errors.
fn store(yaml: &str) -> Store {
    let (objects, mut diagnostics) = parse_text(Path::new("authz.yaml"), yaml);
    let (store, more) = Store::from_objects(objects);
    diagnostics.extend(more);
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    store
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The policies of `yaml` for a Pod in `namespace` with `pod_labels`, under `root`.
fn policies_under(yaml: &str, root: &str, namespace: &str, pod_labels: &[(&str, &str)]) -> EffectivePolicy {
    let store = store(yaml);
    effective(
        store.authorization_policies.iter().map(|(k, s)| (k, &s.object)),
        root,
        namespace,
        &labels(pod_labels),
    )
}

/// The policies of `yaml` for the Pod `app: web` in `shop`.
fn policies(yaml: &str) -> EffectivePolicy {
    policies_under(yaml, ROOT, "shop", &[("app", "web")])
}

/// An AuthorizationPolicy `name` in `namespace` with `spec` lines (indented by two).
fn policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}\n---\n"
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A plain connection from the mTLS peer `cluster.local/ns/front/sa/shopper` at 10.1.0.5 to
/// 10.2.0.9:8080.
fn l4() -> Attributes<'static> {
    Attributes {
        source_principal: Some("cluster.local/ns/front/sa/shopper"),
        source_namespace: Some("front"),
        source_ip: ip("10.1.0.5"),
        destination_ip: ip("10.2.0.9"),
        destination_port: 8080,
        http: None,
    }
}

/// The same connection from a plaintext source.
fn plaintext() -> Attributes<'static> {
    Attributes { source_principal: None, source_namespace: None, ..l4() }
}

const NO_HEADERS: &[(&str, &str)] = &[];

/// The same connection carrying `method path` to `host` with `headers`.
fn http(
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Attributes<'static> {
    Attributes { http: Some(HttpAttributes { method, path, host, headers }), ..l4() }
}

fn get(path: &'static str) -> Attributes<'static> {
    http("GET", path, "web.shop.example", NO_HEADERS)
}

fn key(namespace: &str, name: &str) -> Option<ObjectKey> {
    Some(ObjectKey::new(namespace, name))
}

fn allowed_by(name: &str) -> Verdict {
    Verdict::Allow { by: key("shop", name) }
}

fn denied_by(name: &str) -> Verdict {
    Verdict::Deny { by: key("shop", name) }
}

const ALLOWED: Verdict = Verdict::Allow { by: None };
const NOT_ALLOWED: Verdict = Verdict::Deny { by: None };

#[test]
fn policies_are_evaluated_custom_then_deny_then_allow_and_audit_decides_nothing() {
    let everything = "  rules: [{}]";
    let cases: Vec<(&str, String, Verdict)> = vec![
        ("no policy", String::new(), ALLOWED),
        ("allow-nothing: an ALLOW policy without rules", policy("shop", "a", ""), NOT_ALLOWED),
        ("allow-all", policy("shop", "a", everything), allowed_by("a")),
        ("deny-all", policy("shop", "d", &format!("  action: DENY\n{everything}")), denied_by("d")),
        (
            "DENY wins over ALLOW",
            policy("shop", "a", everything) + &policy("shop", "d", &format!("  action: DENY\n{everything}")),
            denied_by("d"),
        ),
        (
            "CUSTOM comes before DENY, and denies: no external authorizer",
            policy("shop", "z", &format!("  action: CUSTOM\n  provider: {{name: ext}}\n{everything}"))
                + &policy("shop", "d", &format!("  action: DENY\n{everything}")),
            denied_by("z"),
        ),
        ("AUDIT alone allows", policy("shop", "au", &format!("  action: AUDIT\n{everything}")), ALLOWED),
        (
            "AUDIT does not open an allow-nothing",
            policy("shop", "au", &format!("  action: AUDIT\n{everything}")) + &policy("shop", "a", ""),
            NOT_ALLOWED,
        ),
        (
            "a DENY rule that does not match leaves the ALLOW",
            policy("shop", "d", "  action: DENY\n  rules: [{to: [{operation: {ports: ['9090']}}]}]")
                + &policy("shop", "a", everything),
            allowed_by("a"),
        ),
        (
            "the first matching ALLOW policy by key is named",
            policy("shop", "b", everything) + &policy("shop", "a", everything),
            allowed_by("a"),
        ),
    ];
    for (name, yaml, expected) in cases {
        assert_eq!(policies(&yaml).evaluate(&l4()), expected, "{name}");
    }
}

/// Decides `attributes` against the ALLOW policy `a` in `shop` with `rules` (a YAML flow list).
fn allow(rules: &str, attributes: &Attributes<'_>) -> Verdict {
    policies(&policy("shop", "a", &format!("  rules: {rules}"))).evaluate(attributes)
}

/// Decides `attributes` against the DENY policy `d` in `shop` with `rules`.
fn deny(rules: &str, attributes: &Attributes<'_>) -> Verdict {
    policies(&policy("shop", "d", &format!("  action: DENY\n  rules: {rules}"))).evaluate(attributes)
}

#[test]
fn sources_match_principals_namespaces_accounts_and_addresses() {
    let a = allowed_by("a");
    let cases: Vec<(&str, Attributes<'static>, Verdict)> = vec![
        ("{from: [{source: {principals: [cluster.local/ns/front/sa/shopper]}}]}", l4(), a.clone()),
        ("{from: [{source: {principals: [cluster.local/ns/front/sa/other]}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {principals: ['cluster.local/ns/front/*']}}]}", l4(), a.clone()),
        ("{from: [{source: {principals: ['*/sa/shopper']}}]}", l4(), a.clone()),
        ("{from: [{source: {principals: ['*/sa/shop']}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {principals: ['*']}}]}", l4(), a.clone()),
        // A plaintext source has no principal: not even `*` matches it.
        ("{from: [{source: {principals: ['*']}}]}", plaintext(), NOT_ALLOWED),
        ("{from: [{source: {notPrincipals: ['*/sa/shopper']}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {notPrincipals: ['*/sa/intruder']}}]}", l4(), a.clone()),
        // ... and so no `not*` value names it.
        ("{from: [{source: {notPrincipals: ['*']}}]}", plaintext(), a.clone()),
        ("{from: [{source: {namespaces: [front, back]}}]}", l4(), a.clone()),
        ("{from: [{source: {namespaces: [back]}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {namespaces: ['fr*']}}]}", l4(), a.clone()),
        ("{from: [{source: {namespaces: ['*']}}]}", plaintext(), NOT_ALLOWED),
        ("{from: [{source: {notNamespaces: [front]}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {notNamespaces: [front]}}]}", plaintext(), a.clone()),
        ("{from: [{source: {serviceAccounts: [front/shopper]}}]}", l4(), a.clone()),
        // Without a namespace, the policy's own.
        ("{from: [{source: {serviceAccounts: [shopper]}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {notServiceAccounts: [front/shopper]}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {serviceAccounts: [front/shopper]}}]}", plaintext(), NOT_ALLOWED),
        ("{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}", l4(), a.clone()),
        ("{from: [{source: {ipBlocks: [10.1.0.5]}}]}", plaintext(), a.clone()),
        ("{from: [{source: {ipBlocks: [10.1.0.6, '2001:db8::/32']}}]}", l4(), NOT_ALLOWED),
        ("{from: [{source: {ipBlocks: [10.0.0.0/8], notIpBlocks: [10.1.0.0/24]}}]}", l4(), NOT_ALLOWED),
        // Every field of a source must match...
        ("{from: [{source: {namespaces: [front], ipBlocks: [10.9.0.0/16]}}]}", l4(), NOT_ALLOWED),
        // ... and one source of the list is enough.
        ("{from: [{source: {namespaces: [back]}}, {source: {ipBlocks: [10.1.0.0/16]}}]}", l4(), a.clone()),
    ];
    for (rules, attributes, expected) in cases {
        assert_eq!(allow(&format!("[{rules}]"), &attributes), expected, "{rules} {attributes:?}");
    }
    // `spiffe://` on the peer's identity is the same identity.
    let spiffe = Attributes { source_principal: Some("spiffe://cluster.local/ns/front/sa/shopper"), ..l4() };
    assert_eq!(allow("[{from: [{source: {principals: [cluster.local/ns/front/sa/shopper]}}]}]", &spiffe), a);
    // An IPv4 peer on a dual-stack socket.
    let mapped = Attributes { source_ip: ip("::ffff:10.1.0.5"), ..l4() };
    assert_eq!(allow("[{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}]", &mapped), a);
    // A rule needs a source, an operation and every condition.
    let rule = "[{from: [{source: {namespaces: [front]}}], to: [{operation: {ports: ['8080']}}], when: [{key: source.ip, values: [10.1.0.0/16]}]}]";
    assert_eq!(allow(rule, &l4()), a);
    assert_eq!(allow(rule, &Attributes { destination_port: 8081, ..l4() }), NOT_ALLOWED);
    assert_eq!(allow(rule, &Attributes { source_ip: ip("10.3.0.1"), ..l4() }), NOT_ALLOWED);
    assert_eq!(allow(rule, &plaintext()), NOT_ALLOWED);
    // One rule of the list is enough.
    assert_eq!(
        allow("[{to: [{operation: {ports: ['1']}}]}, {from: [{source: {namespaces: [front]}}]}]", &l4()),
        a
    );
}

#[test]
fn operations_and_conditions_match_ports_hosts_methods_paths_and_headers() {
    let a = allowed_by("a");
    let user: &'static [(&str, &str)] = &[("X-User", "alice"), ("x-role", "admin")];
    let twice: &'static [(&str, &str)] = &[("x-user", "alice"), ("x-user", "bob")];
    let cases: Vec<(&str, Attributes<'static>, Verdict)> = vec![
        ("{to: [{operation: {ports: ['8080', '8443']}}]}", l4(), a.clone()),
        ("{to: [{operation: {ports: ['80']}}]}", l4(), NOT_ALLOWED),
        ("{to: [{operation: {notPorts: ['8080']}}]}", l4(), NOT_ALLOWED),
        ("{to: [{operation: {notPorts: ['80']}}]}", l4(), a.clone()),
        ("{to: [{operation: {methods: [GET, HEAD]}}]}", get("/"), a.clone()),
        ("{to: [{operation: {methods: [GET]}}]}", http("POST", "/", "h", NO_HEADERS), NOT_ALLOWED),
        // Methods are compared as sent.
        ("{to: [{operation: {methods: [get]}}]}", get("/"), NOT_ALLOWED),
        ("{to: [{operation: {notMethods: [DELETE]}}]}", get("/"), a.clone()),
        ("{to: [{operation: {paths: [/api/items]}}]}", get("/api/items"), a.clone()),
        ("{to: [{operation: {paths: [/api/items]}}]}", get("/api/items/1"), NOT_ALLOWED),
        ("{to: [{operation: {paths: ['/api/*']}}]}", get("/api/items/1"), a.clone()),
        ("{to: [{operation: {paths: ['*/info']}}]}", get("/v2/info"), a.clone()),
        // The query is not part of the path.
        ("{to: [{operation: {paths: [/api/items]}}]}", get("/api/items?page=2"), a.clone()),
        ("{to: [{operation: {paths: ['*.json']}}]}", get("/a.json?x=1.html"), a.clone()),
        ("{to: [{operation: {paths: ['/items/{*}/price']}}]}", get("/items/42/price"), a.clone()),
        ("{to: [{operation: {paths: ['/items/{*}/price']}}]}", get("/items/4/2/price"), NOT_ALLOWED),
        ("{to: [{operation: {paths: ['/files/{**}']}}]}", get("/files/a/b/c.txt"), a.clone()),
        (
            "{to: [{operation: {paths: ['/api/*'], notPaths: ['/api/admin*']}}]}",
            get("/api/admin/x"),
            NOT_ALLOWED,
        ),
        // Hosts are compared without case.
        ("{to: [{operation: {hosts: [WEB.shop.example]}}]}", get("/"), a.clone()),
        ("{to: [{operation: {hosts: ['*.Shop.Example']}}]}", get("/"), a.clone()),
        ("{to: [{operation: {notHosts: ['web.*']}}]}", get("/"), NOT_ALLOWED),
        ("{to: [{operation: {ports: ['8080'], methods: [GET]}}]}", get("/"), a.clone()),
        ("{to: [{operation: {ports: ['80'], methods: [GET]}}]}", get("/"), NOT_ALLOWED),
        (
            "{when: [{key: 'request.headers[x-user]', values: [alice]}]}",
            http("GET", "/", "h", user),
            a.clone(),
        ),
        (
            "{when: [{key: 'request.headers[x-user]', values: ['al*']}]}",
            http("GET", "/", "h", user),
            a.clone(),
        ),
        (
            "{when: [{key: 'request.headers[x-user]', values: [bob]}]}",
            http("GET", "/", "h", user),
            NOT_ALLOWED,
        ),
        (
            "{when: [{key: 'request.headers[x-user]', notValues: [alice]}]}",
            http("GET", "/", "h", user),
            NOT_ALLOWED,
        ),
        ("{when: [{key: 'request.headers[x-user]', values: ['*']}]}", get("/"), NOT_ALLOWED),
        ("{when: [{key: 'request.headers[x-user]', notValues: [eve]}]}", get("/"), a.clone()),
        // Repeated fields are one value, joined.
        (
            "{when: [{key: 'request.headers[x-user]', values: [alice]}]}",
            http("GET", "/", "h", twice),
            NOT_ALLOWED,
        ),
        (
            "{when: [{key: 'request.headers[x-user]', values: ['alice,bob']}]}",
            http("GET", "/", "h", twice),
            a.clone(),
        ),
        ("{when: [{key: source.ip, values: [10.1.0.0/16]}]}", l4(), a.clone()),
        ("{when: [{key: source.ip, notValues: [10.1.0.5]}]}", l4(), NOT_ALLOWED),
        ("{when: [{key: destination.ip, values: [10.2.0.9]}]}", l4(), a.clone()),
        ("{when: [{key: destination.ip, values: [10.2.0.0/24], notValues: [10.2.0.9]}]}", l4(), NOT_ALLOWED),
        ("{when: [{key: destination.port, values: ['8080']}]}", l4(), a.clone()),
        ("{when: [{key: destination.port, notValues: ['8080']}]}", l4(), NOT_ALLOWED),
        ("{when: [{key: source.namespace, values: [front]}]}", l4(), a.clone()),
        ("{when: [{key: source.namespace, values: [front]}]}", plaintext(), NOT_ALLOWED),
        ("{when: [{key: source.principal, values: ['*/sa/shopper']}]}", l4(), a.clone()),
        ("{when: [{key: source.principal, notValues: ['*']}]}", plaintext(), a.clone()),
        // Every condition must hold.
        (
            "{when: [{key: destination.port, values: ['8080']}, {key: source.namespace, values: [back]}]}",
            l4(),
            NOT_ALLOWED,
        ),
    ];
    for (rules, attributes, expected) in cases {
        assert_eq!(allow(&format!("[{rules}]"), &attributes), expected, "{rules} {attributes:?}");
    }
}

#[test]
fn http_fields_on_a_plain_connection_never_allow_and_still_deny() {
    let methods = "[{to: [{operation: {methods: [POST]}}]}]";
    // An ALLOW rule with HTTP fields allows no plain connection (istiod omits it for ztunnel).
    assert_eq!(allow(methods, &l4()), NOT_ALLOWED);
    assert_eq!(allow(methods, &http("POST", "/", "h", NO_HEADERS)), allowed_by("a"));
    // Even where its ports alone would have matched.
    assert_eq!(
        allow("[{to: [{operation: {ports: ['8080']}}, {operation: {methods: [GET]}}]}]", &l4()),
        NOT_ALLOWED
    );
    // A DENY rule is enforced without its HTTP fields: more restrictive, never less.
    assert_eq!(deny(methods, &l4()), denied_by("d"));
    assert_eq!(deny(methods, &get("/")), ALLOWED);
    assert_eq!(deny(methods, &http("POST", "/", "h", NO_HEADERS)), denied_by("d"));
    let ported = "[{to: [{operation: {ports: ['9090'], paths: ['/admin*']}}]}]";
    assert_eq!(deny(ported, &l4()), ALLOWED, "the port still counts");
    assert_eq!(deny(ported, &Attributes { destination_port: 9090, ..l4() }), denied_by("d"));
    let header = "[{when: [{key: 'request.headers[x-debug]', values: ['1']}], from: [{source: {namespaces: [front]}}]}]";
    assert_eq!(deny(header, &l4()), denied_by("d"));
    assert_eq!(deny(header, &plaintext()), ALLOWED, "the source still counts");
    assert_eq!(deny(header, &get("/")), ALLOWED);
}

#[test]
fn what_portico_cannot_see_never_allows_and_always_denies() {
    let jwt = "[{from: [{source: {requestPrincipals: ['*']}}]}]";
    assert_eq!(allow(jwt, &get("/")), NOT_ALLOWED);
    assert_eq!(deny(jwt, &l4()), denied_by("d"));
    let remote = "[{from: [{source: {remoteIpBlocks: [192.0.2.0/24], namespaces: [back]}}]}]";
    assert_eq!(deny(remote, &l4()), ALLOWED, "the rest of the source still counts");
    assert_eq!(deny(remote, &Attributes { source_namespace: Some("back"), ..l4() }), denied_by("d"));
    for key in ["remote.ip", "request.auth.claims[iss]", "connection.sni"] {
        let rules = format!("[{{when: [{{key: '{key}', values: [x]}}]}}]");
        assert_eq!(allow(&rules, &get("/")), NOT_ALLOWED, "{key}");
        assert_eq!(deny(&rules, &get("/")), denied_by("d"), "{key}");
    }
}

#[test]
fn policies_apply_by_namespace_root_namespace_selector_and_never_by_target() {
    let all = "  rules: [{}]";
    let selected = "  selector: {matchLabels: {app: web}}\n  rules: [{}]";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("its namespace, no selector", policy("shop", "p", all), vec!["shop/p"]),
        ("another namespace", policy("attic", "p", all), vec![]),
        ("the root namespace: the whole mesh", policy(ROOT, "p", all), vec!["istio-system/p"]),
        ("a root selector selects in every namespace", policy(ROOT, "p", selected), vec!["istio-system/p"]),
        (
            "a root selector that does not match",
            policy(ROOT, "p", "  selector: {matchLabels: {app: db}}\n  rules: [{}]"),
            vec![],
        ),
        ("matching labels", policy("shop", "p", selected), vec!["shop/p"]),
        (
            "every label must match",
            policy("shop", "p", "  selector: {matchLabels: {app: web, tier: gold}}\n  rules: [{}]"),
            vec![],
        ),
        (
            "an empty selector selects all",
            policy("shop", "p", "  selector: {}\n  rules: [{}]"),
            vec!["shop/p"],
        ),
        (
            "targetRefs: a waypoint's, not Portico's",
            policy("shop", "p", "  targetRefs: [{kind: Service, name: web}]\n  rules: [{}]"),
            vec![],
        ),
    ];
    for (name, yaml, expected) in cases {
        let effective = policies_under(&yaml, ROOT, "shop", &[("app", "web"), ("tier", "silver")]);
        let keys: Vec<String> = effective.allow.iter().map(|p| p.key.to_string()).collect();
        assert_eq!(keys, expected, "{name}");
        assert_eq!(effective.is_empty(), expected.is_empty(), "{name}");
    }
    // The root namespace is the mesh's to choose.
    let yaml = policy("mesh-root", "p", all) + &policy(ROOT, "q", all);
    let keys: Vec<String> =
        policies_under(&yaml, "mesh-root", "shop", &[]).allow.iter().map(|p| p.key.to_string()).collect();
    assert_eq!(keys, ["mesh-root/p"]);
    // Both versions are one kind.
    let beta = policy("shop", "old", "  action: DENY\n  rules: [{}]").replace("/v1\n", "/v1beta1\n");
    assert!(beta.contains("security.istio.io/v1beta1"));
    assert_eq!(policies(&(beta + &policy("shop", "new", all))).evaluate(&l4()), denied_by("old"));
}

#[test]
fn http_is_needed_only_where_a_rule_with_http_fields_could_decide() {
    let yaml = policy(
        "shop",
        "a",
        "  rules: [{to: [{operation: {ports: ['8080'], methods: [GET]}}]}, {to: [{operation: {ports: ['9090']}}]}]",
    ) + &policy(
        "shop",
        "d",
        "  action: DENY\n  rules: [{when: [{key: 'request.headers[x-debug]', values: ['1']}, {key: destination.port, notValues: ['7070']}]}]",
    ) + &policy(
        "shop",
        "j",
        "  rules: [{from: [{source: {requestPrincipals: ['*']}}], to: [{operation: {ports: ['6060'], paths: [/x]}}]}]",
    ) + &policy(
        "shop",
        "au",
        "  action: AUDIT\n  rules: [{to: [{operation: {ports: ['5050'], methods: [GET]}}]}]",
    );
    let effective = policies(&yaml);
    assert!(effective.needs_http(8080), "ALLOW with methods on 8080");
    assert!(effective.needs_http(9090), "the DENY header rule covers every port but 7070");
    assert!(!effective.needs_http(7070), "no rule with HTTP fields can decide 7070");
    assert!(effective.needs_http(6060), "the DENY still covers 6060");
    let without_deny =
        policy(
            "shop",
            "j",
            "  rules: [{from: [{source: {requestPrincipals: ['*']}}], to: [{operation: {paths: [/x]}}]}]",
        ) + &policy("shop", "au", "  action: AUDIT\n  rules: [{to: [{operation: {methods: [GET]}}]}]");
    let effective = policies(&without_deny);
    assert!(!effective.needs_http(80), "an ALLOW rule that never matches, and AUDIT, decide nothing");
    assert!(
        !policies(&policy("shop", "a", "  rules: [{to: [{operation: {ports: ['80']}}]}]")).needs_http(80)
    );
}

#[test]
fn explain_describes_each_policy_and_rule_on_one_line() {
    let yaml = policy(
        "shop",
        "d",
        "  action: DENY\n  rules: [{from: [{source: {namespaces: [foo]}}], to: [{operation: {ports: ['8080']}}]}]",
    ) + &policy(
        "shop",
        "a",
        "  rules:\n  - from: [{source: {principals: ['*/sa/front'], notIpBlocks: [10.0.0.1, 10.9.0.0/16]}}, {source: {serviceAccounts: [robot]}}]\n    to: [{operation: {methods: [GET, HEAD], paths: ['/api/*']}}]\n  - when: [{key: 'request.headers[x-user]', notValues: [eve]}, {key: destination.port, values: ['80']}]\n  - from: [{source: {requestPrincipals: ['*']}}]",
    ) + &policy("shop", "none", "")
        + &policy("shop", "z", "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]")
        + &policy("shop", "au", "  action: AUDIT\n  rules: [{to: [{operation: {notPorts: ['22']}}]}]");
    assert_eq!(
        policies(&yaml).describe(),
        [
            "CUSTOM shop/z (provider ext: no external authorizer, denied): everything",
            "DENY shop/d: from ns foo to port 8080",
            "ALLOW shop/a rules[0]: from principal */sa/front, not ip 10.0.0.1|10.9.0.0/16 or sa shop/robot to method GET|HEAD, path /api/* (HTTP: its ports are read as HTTP and decided request by request)",
            "ALLOW shop/a rules[1]: when not request.headers[x-user] eve and destination.port 80 (HTTP: its ports are read as HTTP and decided request by request)",
            "ALLOW shop/a rules[2]: from anyone (never matches: Portico cannot check requestPrincipals)",
            "ALLOW shop/none: nothing (no rules)",
            "AUDIT shop/au: to not port 22",
        ]
    );
    assert!(policies("").describe().is_empty());
}

#[test]
fn the_compiled_form_is_plain_comparable_data() {
    let yaml = policy(
        "shop",
        "a",
        "  rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}], to: [{operation: {ports: ['80'], paths: ['/{**}']}}]}]",
    );
    let (one, two) = (policies(&yaml), policies(&yaml));
    assert_eq!(one, two);
    assert_ne!(one, policies(&yaml.replace("'80'", "'81'")));
    let json = serde_json::to_value(&one).unwrap();
    assert_eq!(json["allow"][0]["key"], serde_json::json!({"namespace": "shop", "name": "a"}));
    assert_eq!(json["allow"][0]["rules"][0]["to"][0]["ports"]["any_of"], serde_json::json!([80]));
    assert_eq!(
        json["allow"][0]["rules"][0]["from"][0]["ip_blocks"]["any_of"],
        serde_json::json!(["10.0.0.0/8"])
    );
}

/// Owned attributes for proptest, borrowed as [`Attributes`].
#[derive(Clone, Debug)]
struct Request {
    principal: Option<(String, String)>,
    source_ip: IpAddr,
    destination_ip: IpAddr,
    port: u16,
    http: Option<HttpRequest>,
}

/// Owned HTTP attributes.
#[derive(Clone, Debug)]
struct HttpRequest {
    method: String,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
}

fn requests() -> impl Strategy<Value = Request> {
    let word = || prop::sample::select(vec!["front", "back", "shop", "", "a*", "GET", "POST", "x-user"]);
    let principal = prop::option::of((word(), word()));
    let address =
        prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u16; 8]>().prop_map(IpAddr::from),];
    let headers = prop::collection::vec((word(), word()), 0..3);
    let http = prop::option::of((word(), "/[a-z/]{0,12}", word(), headers));
    (principal, address.clone(), address, any::<u16>(), http).prop_map(
        |(principal, source_ip, destination_ip, port, http)| Request {
            principal: principal.map(|(ns, sa)| (ns.to_owned(), format!("cluster.local/ns/{ns}/sa/{sa}"))),
            source_ip,
            destination_ip,
            port,
            http: http.map(|(method, path, host, headers)| HttpRequest {
                method: method.to_owned(),
                path,
                host: host.to_owned(),
                headers: headers.into_iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect(),
            }),
        },
    )
}

fn decide(effective: &EffectivePolicy, request: &Request) -> Verdict {
    let headers: Vec<(&str, &str)> = request
        .http
        .iter()
        .flat_map(|http| http.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .collect();
    let attributes = Attributes {
        source_principal: request.principal.as_ref().map(|(_, p)| p.as_str()),
        source_namespace: request.principal.as_ref().map(|(ns, _)| ns.as_str()),
        source_ip: request.source_ip,
        destination_ip: request.destination_ip,
        destination_port: request.port,
        http: request.http.as_ref().map(|http| HttpAttributes {
            method: &http.method,
            path: &http.path,
            host: &http.host,
            headers: &headers,
        }),
    };
    effective.evaluate(&attributes)
}

/// The policies a workload of `shop` lives under in the properties: some of each kind.
fn mixed() -> String {
    policy(
        "shop",
        "a1",
        "  rules: [{from: [{source: {namespaces: [front]}}], to: [{operation: {methods: [GET], ports: ['80']}}]}]",
    ) + &policy(
        "shop",
        "a2",
        "  selector: {matchLabels: {app: web}}\n  rules: [{when: [{key: 'request.headers[x-user]', values: ['*']}]}, {from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]",
    ) + &policy(
        "shop",
        "d1",
        "  action: DENY\n  rules: [{from: [{source: {notNamespaces: [front, back]}}], to: [{operation: {notPorts: ['443']}}]}]",
    ) + &policy(ROOT, "mesh", "  action: DENY\n  rules: [{to: [{operation: {paths: ['/admin*']}}]}]")
        + &policy("shop", "au", "  action: AUDIT\n  rules: [{}]")
}

proptest! {
    #[test]
    fn deny_all_denies_everything(request in requests(), extra in any::<bool>()) {
        let mut yaml = policy("shop", "deny-all", "  action: DENY\n  rules: [{}]");
        if extra {
            yaml += &mixed();
        }
        let verdict = decide(&policies(&yaml), &request);
        // Among other policies, the first DENY policy that matches is named, maybe another.
        let denying = [key("shop", "deny-all"), key("shop", "d1"), key(ROOT, "mesh")];
        match &verdict {
            Verdict::Deny { by } if extra => prop_assert!(denying.contains(by), "{:?}", verdict),
            _ => prop_assert_eq!(verdict, denied_by("deny-all")),
        }
    }

    #[test]
    fn an_allow_policy_of_another_namespace_changes_no_verdict(
        request in requests(),
        rules in prop::sample::select(vec![
            "  rules: [{}]",
            "",
            "  selector: {matchLabels: {app: web}}\n  rules: [{}]",
            "  rules: [{from: [{source: {principals: ['*']}}]}]",
            "  rules: [{to: [{operation: {methods: [GET]}}]}]",
        ]),
    ) {
        let base = mixed();
        let before = decide(&policies(&base), &request);
        let after = decide(&policies(&(base + &policy("elsewhere", "open", rules))), &request);
        prop_assert_eq!(before, after);
    }
}

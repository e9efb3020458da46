//! Istio's `AuthorizationPolicy` read from the files users already have, at
//! `security.istio.io/v1` and `v1beta1`: every field, the errors Istio's webhook would give
//! (naming the field), fields Istio does not know refused as the API server would, and a
//! warning for each part Portico does not enforce.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use portico_model::authz::{Action, Wildcard};
use portico_model::{Object, ObjectKey, ObjectRef, Severity, Store, parse_text};

/// Parses and admits `yaml`; returns the store and every diagnostic as
/// `severity field: message`.
fn admit(yaml: &str) -> (Store, Vec<String>) {
    let (objects, mut diagnostics) = parse_text(Path::new("policies.yaml"), yaml);
    let (store, more) = Store::from_objects(objects);
    diagnostics.extend(more);
    let said = diagnostics
        .iter()
        .map(|d| format!("{} {}: {}", d.severity, d.field.as_deref().unwrap_or(""), d.message))
        .collect();
    (store, said)
}

/// A policy `p` in namespace `shop` with `spec` (YAML flow or block, indented by two).
fn policy(version: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/{version}\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n{spec}\n"
    )
}

const FULL: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/front, 'cluster.local/ns/ops/*']
        notPrincipals: ['*/sa/intruder']
        namespaces: [shop]
        notNamespaces: [attic]
        ipBlocks: [10.0.0.0/8, 192.0.2.7]
        notIpBlocks: [10.9.0.0/16]
    - source:
        serviceAccounts: [front, ops/robot]
    to:
    - operation:
        hosts: ['*.shop.example']
        notHosts: [admin.shop.example]
        ports: ['8080']
        notPorts: ['9090']
        methods: [GET, HEAD]
        notMethods: [DELETE]
        paths: ['/api/*', '/items/{*}/price']
        notPaths: ['/api/admin*']
    when:
    - key: request.headers[x-tenant]
      values: [acme]
      notValues: [evil]
    - key: destination.port
      values: ['8080']
status: {validationMessages: []}
";

#[test]
fn a_policy_is_read_whole_at_either_version() {
    for version in ["v1", "v1beta1"] {
        let (store, said) =
            admit(&FULL.replace("security.istio.io/v1", &format!("security.istio.io/{version}")));
        assert!(said.is_empty(), "{version}: {said:?}");
        let stored = &store.authorization_policies[&ObjectKey::new("shop", "web")];
        let policy = &stored.object;
        assert_eq!(policy.api_version.as_deref(), Some(format!("security.istio.io/{version}").as_str()));
        assert_eq!(policy.spec.action, Action::Allow);
        assert_eq!(policy.spec.selector.as_ref().unwrap().match_labels["app"], "web");
        let rule = &policy.spec.rules[0];
        let sources: Vec<_> = rule.from.iter().flatten().map(|f| f.source.clone().unwrap()).collect();
        assert_eq!(sources[0].principals, ["cluster.local/ns/shop/sa/front", "cluster.local/ns/ops/*"]);
        assert_eq!(sources[0].not_ip_blocks, ["10.9.0.0/16"]);
        assert_eq!(sources[1].service_accounts, ["front", "ops/robot"]);
        let operation = rule.to.as_ref().unwrap()[0].operation.clone().unwrap();
        assert_eq!(
            (operation.ports, operation.not_ports),
            (vec!["8080".to_owned()], vec!["9090".to_owned()])
        );
        assert_eq!(operation.not_paths, ["/api/admin*"]);
        assert_eq!(rule.when[0].key, "request.headers[x-tenant]");
        assert_eq!(rule.when[0].not_values, ["evil"]);
    }
    assert_eq!(
        Wildcard::parse("cluster.local/ns/ops/*").unwrap(),
        Wildcard::Prefix("cluster.local/ns/ops/".into())
    );
}

#[test]
fn a_policy_is_an_object_like_the_others() {
    let (objects, diagnostics) = parse_text(
        Path::new("p.yaml"),
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing}\nspec:\n",
    );
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert!(matches!(objects[0].1, Object::AuthorizationPolicy(_)));
    assert_eq!(objects[0].1.kind().name(), "AuthorizationPolicy");
    assert_eq!(objects[0].1.key().to_string(), "default/allow-nothing", "namespaced, default namespace");
    let Object::AuthorizationPolicy(nothing) = &objects[0].1 else { unreachable!() };
    assert_eq!(nothing.spec, Default::default(), "an empty spec is the empty spec");
    let (mut store, said) = admit(FULL);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(store.len(), 1);
    let reference = ObjectRef::new("AuthorizationPolicy", ObjectKey::new("shop", "web"));
    assert!(store.remove(&reference));
    assert!(store.is_empty() && !store.remove(&reference));
}

#[test]
fn other_versions_and_unknown_fields_are_refused_naming_the_field() {
    let (store, said) = admit(&policy("v1alpha1", "  action: DENY\n  rules: [{}]"));
    assert!(store.authorization_policies.is_empty());
    assert_eq!(
        said,
        [
            "error apiVersion: apiVersion security.istio.io/v1alpha1 is not supported for AuthorizationPolicy; use security.istio.io/v1"
        ]
    );
    let (store, said) = admit(&policy(
        "v1",
        "  actoin: DENY\n  rules:\n  - from: [{source: {principal: [a]}}]\n    to: [{operation: {ports: ['80'], verbs: [GET]}}]",
    ));
    assert!(store.authorization_policies.is_empty());
    let fields: Vec<&str> = said.iter().map(|s| s.split(':').next().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "error spec.actoin",
            "error spec.rules[0].from[0].source.principal",
            "error spec.rules[0].to[0].operation.verbs"
        ]
    );
    assert!(said.iter().all(|s| s.contains("unknown field")), "{said:?}");
    let (_, said) = admit(&policy("v1", "  action: PERMIT"));
    assert!(said[0].starts_with("error spec.action: unknown variant `PERMIT`"), "{said:?}");
    let (_, said) = admit(&policy("v1", "  rules: [{to: [{operation: {ports: [8080]}}]}]"));
    assert!(said[0].starts_with("error spec.rules[0].to[0].operation.ports[0]: invalid type"), "{said:?}");
}

#[test]
fn what_istios_webhook_rejects_is_refused_naming_the_field() {
    let cases = [
        ("  action: CUSTOM\n  rules: [{}]", "spec.provider.name: required"),
        ("  action: CUSTOM\n  provider: {name: ext}", "spec.rules: CUSTOM action without rules"),
        ("  action: DENY", "spec.rules: DENY action without rules"),
        ("  action: ALLOW\n  provider: {name: ext}", "spec.provider: may only be set with the CUSTOM action"),
        (
            "  selector: {matchLabels: {app: web}}\n  targetRefs: [{kind: Service, name: web}]",
            "spec.targetRefs: only one of selector",
        ),
        (
            "  targetRef: {kind: Service, name: a}\n  targetRefs: [{kind: Service, name: b}]",
            "spec.targetRefs: only one",
        ),
        ("  targetRefs: [{kind: Deployment, name: web}]", "spec.targetRefs[0].kind: /Deployment is not"),
        (
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway}]",
            "spec.targetRefs[0].name: required",
        ),
        ("  selector: {matchLabels: {app: 'web*'}}", "spec.selector.matchLabels[app]: wildcards"),
        ("  rules: [{from: []}]", "spec.rules[0].from: must not be empty"),
        ("  rules: [{to: []}]", "spec.rules[0].to: must not be empty"),
        ("  rules: [{from: [{}]}]", "spec.rules[0].from[0].source: required"),
        ("  rules: [{from: [{source: {}}]}]", "spec.rules[0].from[0].source: must not be empty"),
        ("  rules: [{to: [{}]}]", "spec.rules[0].to[0].operation: required"),
        ("  rules: [{to: [{operation: {}}]}]", "spec.rules[0].to[0].operation: must not be empty"),
        (
            "  rules: [{}, {to: [{operation: {ports: ['80']}}, {operation: {ports: ['80', '0']}}]}]",
            "spec.rules[1].to[1].operation.ports[1]: \"0\" is not a port",
        ),
        ("  rules: [{to: [{operation: {notPorts: [http]}}]}]", "spec.rules[0].to[0].operation.notPorts[0]:"),
        ("  rules: [{to: [{operation: {ports: ['65536']}}]}]", "spec.rules[0].to[0].operation.ports[0]:"),
        (
            "  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]",
            "spec.rules[0].from[0].source.ipBlocks[0]:",
        ),
        (
            "  rules: [{from: [{source: {notIpBlocks: [ten]}}]}]",
            "spec.rules[0].from[0].source.notIpBlocks[0]:",
        ),
        (
            "  rules: [{from: [{source: {principals: ['']}}]}]",
            "spec.rules[0].from[0].source.principals[0]: empty",
        ),
        (
            "  rules: [{from: [{source: {namespaces: [a, '']}}]}]",
            "spec.rules[0].from[0].source.namespaces[1]: empty",
        ),
        (
            "  rules: [{from: [{source: {principals: ['cluster.local/ns/*/sa/web']}}]}]",
            "spec.rules[0].from[0].source.principals[0]: \"cluster.local/ns/*/sa/web\": `*` may only",
        ),
        ("  rules: [{to: [{operation: {hosts: ['*.shop.*']}}]}]", "spec.rules[0].to[0].operation.hosts[0]:"),
        ("  rules: [{to: [{operation: {paths: ['']}}]}]", "spec.rules[0].to[0].operation.paths[0]: empty"),
        (
            "  rules: [{to: [{operation: {paths: ['/a/{*}.txt']}}]}]",
            "spec.rules[0].to[0].operation.paths[0]: \"/a/{*}.txt\" is not a valid path template",
        ),
        (
            "  rules: [{to: [{operation: {notPaths: ['/{**}/a/{*}']}}]}]",
            "spec.rules[0].to[0].operation.notPaths[0]:",
        ),
        (
            "  rules: [{from: [{source: {namespaces: [shop], serviceAccounts: [web]}}]}]",
            "spec.rules[0].from[0].source: serviceAccounts cannot be set with namespaces or principals",
        ),
        (
            "  rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]",
            "spec.rules[0].from[0].source.serviceAccounts[0]:",
        ),
        (
            "  rules: [{when: [{key: source.ip}]}]",
            "spec.rules[0].when[0]: at least one of values or notValues",
        ),
        ("  rules: [{when: [{values: [x]}]}]", "spec.rules[0].when[0].key: required"),
        ("  rules: [{when: [{key: 'destination.labels[app]', values: [x]}]}]", "spec.rules[0].when[0].key:"),
        ("  rules: [{when: [{key: request.headers, values: [x]}]}]", "spec.rules[0].when[0].key:"),
        (
            "  rules: [{when: [{key: source.user, values: [x]}]}]",
            "spec.rules[0].when[0].key: unknown attribute",
        ),
        (
            "  rules: [{when: [{key: destination.port, values: ['80'], notValues: ['99999']}]}]",
            "spec.rules[0].when[0].notValues[0]:",
        ),
        ("  rules: [{when: [{key: source.ip, values: [10.0.0.1/40]}]}]", "spec.rules[0].when[0].values[0]:"),
        (
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{from: [{source: {principals: [a]}}]}]",
            "spec.rules[0].from[0].source.principals: not supported with the CUSTOM action",
        ),
        (
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{when: [{key: source.namespace, values: [a]}]}]",
            "spec.rules[0].when[0].key: not supported with the CUSTOM action",
        ),
    ];
    for (spec, expected) in cases {
        let (store, said) = admit(&policy("v1", spec));
        assert!(said.iter().any(|s| s.starts_with(&format!("error {expected}"))), "{spec}\n{said:?}");
        assert!(store.authorization_policies.is_empty(), "{spec}: refused");
    }
}

#[test]
fn what_portico_does_not_enforce_is_accepted_with_a_warning_saying_what_it_does() {
    let warned = |spec: &str| {
        let (store, said) = admit(&policy("v1beta1", spec));
        assert_eq!(store.authorization_policies.len(), 1, "{spec}: accepted\n{said:?}");
        assert!(said.iter().all(|s| s.starts_with("warning ")), "{said:?}");
        said
    };
    let said = warned("  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]");
    assert_eq!(
        said,
        [
            "warning spec.rules[0].from[0].source.requestPrincipals: Portico does not authenticate requests by JWT (RequestAuthentication): this ALLOW rule never matches"
        ]
    );
    let said = warned(
        "  action: DENY\n  rules: [{from: [{source: {notRemoteIpBlocks: [10.0.0.0/8]}}], to: [{operation: {ports: ['80']}}]}]",
    );
    assert_eq!(
        said,
        [
            "warning spec.rules[0].from[0].source.notRemoteIpBlocks: Portico reads neither X-Forwarded-For nor the PROXY protocol: Portico ignores the field, so this DENY rule matches more requests"
        ]
    );
    let said = warned("  action: DENY\n  rules: [{when: [{key: 'request.auth.claims[iss]', values: [me]}]}]");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("warning spec.rules[0].when[0].key: JWT claims"), "{said:?}");
    let said = warned("  targetRefs: [{kind: Service, name: web}]\n  rules: [{}]");
    assert!(
        said[0]
            .starts_with("warning spec.targetRefs: Portico applies an AuthorizationPolicy by its selector"),
        "{said:?}"
    );
    let said = warned(
        "  action: CUSTOM\n  provider: {name: ext-authz}\n  rules: [{to: [{operation: {paths: ['/admin*']}}]}]",
    );
    assert!(
        said[0].starts_with("warning spec.provider.name: Portico has no external authorizer"),
        "{said:?}"
    );
    let said = warned("  action: AUDIT\n  rules: [{}]");
    assert!(said[0].starts_with("warning spec.action: Portico keeps no audit log"), "{said:?}");
    let said = warned("  rules: [{from: [{source: {principals: [spiffe://cluster.local/ns/a/sa/b]}}]}]");
    assert!(said[0].starts_with(
        "warning spec.rules[0].from[0].source.principals[0]: principals are SPIFFE IDs without spiffe://"
    ));
    let said = warned("  selector: {}");
    assert!(said[0].starts_with("warning spec.selector: a selector without labels"), "{said:?}");
    // Istio's own warning: a DENY rule of HTTP attributes only denies every plain connection.
    let said = warned("  action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}]}]");
    assert!(
        said[0].starts_with("warning spec.rules[0]: this DENY rule names only HTTP attributes"),
        "{said:?}"
    );
    let (_, said) = admit(&policy(
        "v1",
        "  action: DENY\n  rules: [{to: [{operation: {methods: [POST], ports: ['80']}}]}]",
    ));
    assert!(said.is_empty(), "ports name what it is meant for: {said:?}");
    // Supported attributes, HTTP ones included, need no word at all.
    let (_, said) = admit(&policy(
        "v1",
        "  rules:\n  - when:\n    - {key: source.ip, values: [10.0.0.0/8]}\n    - {key: source.namespace, values: [shop]}\n    - {key: source.principal, notValues: ['*/sa/x']}\n    - {key: destination.ip, values: ['2001:db8::/64']}\n    - {key: 'request.headers[x-user]', values: [alice]}",
    ));
    assert!(said.is_empty(), "{said:?}");
    let (store, said) = admit(FULL);
    assert!(said.is_empty() && !store.authorization_policies.is_empty(), "{said:?}");
    let diagnostics = Store::from_objects(
        parse_text(Path::new("f.yaml"), &policy("v1", "  action: AUDIT\n  rules: [{}]")).0,
    )
    .1;
    assert_eq!(diagnostics[0].severity, Severity::Warning);
    assert_eq!(diagnostics[0].object.as_ref().unwrap().to_string(), "AuthorizationPolicy shop/p");
}

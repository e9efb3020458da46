//! Istio AuthorizationPolicies as they decide one connection, or one request, to one workload:
//! [`effective`] picks the policies that apply to a Pod and compiles them once into plain data
//! (ports, CIDRs, wildcards and path templates read), [`EffectivePolicy::evaluate`] decides
//! without parsing anything.
//!
//! The semantics are Istio's documented ones (istio.io, "Authorization Policy" reference and
//! "Security" concepts; istiod's `pilot/pkg/security/authz` and ztunnel's `src/rbac.rs`):
//!
//! - CUSTOM policies first, then DENY, then ALLOW: any matching CUSTOM or DENY policy denies;
//!   without ALLOW policies the request is allowed; with some, only if one matches. AUDIT
//!   policies never change a verdict.
//! - A policy without rules matches nothing; the empty rule `{}` matches everything. A rule
//!   matches when one of its `from`, one of its `to` and all of its `when` do; a source or an
//!   operation when every field it sets does: one of the values, and none of the `not*` ones.
//! - A policy in the root namespace applies to the whole mesh; one without a selector to every
//!   workload of its namespace; a selector's labels must all be the Pod's.
//! - Principals are SPIFFE IDs without `spiffe://`. A plaintext source has no principal and no
//!   namespace: `principals`, `namespaces` and `serviceAccounts` (and `*`, which means "any
//!   non-empty value") never match it, and their `not*` forms always do, as in Envoy and
//!   ztunnel.
//!
//! What Portico cannot see is handled as istiod hands it to ztunnel
//! (`pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go`, `handleRule`, and
//! its status messages "Within an ALLOW policy, rules matching HTTP attributes are omitted"
//! and "DENY policy with HTTP attributes is enforced without the HTTP rules"), and as the
//! sidecar's TCP filter chain does (`pilot/pkg/security/authz/model`, `checkError`: an ALLOW
//! rule is dropped, a DENY, AUDIT or CUSTOM rule loses the field):
//!
//! - On a connection read only at L4 (`Attributes::http` is `None`), the HTTP-only fields
//!   (`hosts`, `methods`, `paths`, their `not*` forms, `request.headers[...]`) make an ALLOW
//!   rule never match, and are ignored in any other rule, which therefore matches more.
//!   ztunnel itself, handed a DENY rule whose only fields were HTTP ones, holds an empty
//!   match that matches nothing, contrary to the status message; Portico follows the message
//!   and the sidecar, and fails closed.
//! - Fields Portico never sees (`requestPrincipals` and JWT keys: no RequestAuthentication;
//!   `remoteIpBlocks` and `remote.ip`: no X-Forwarded-For or PROXY protocol;
//!   `connection.sni`; Envoy filter metadata) are treated the same way whether or not the
//!   request is HTTP.
//! - CUSTOM policies have no external authorizer to ask: what they match is denied, as Istio
//!   denies it when a policy's provider is not defined in the mesh configuration
//!   (`deny-due-to-bad-CUSTOM-action`).
//! - Policies with `targetRef`/`targetRefs` attach to waypoints and gateways, which Portico
//!   does not run: they apply to no workload, as ztunnel ignores them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use portico_model::ObjectKey;
use portico_model::authz::{
    self, Action, AuthorizationPolicy, ConditionKey, PathPattern, TemplatePiece, Wildcard,
};
use serde::Serialize;

/// The policies that apply to one workload, in the order they are evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EffectivePolicy {
    /// CUSTOM policies: Portico has no external authorizer, so what they match is denied.
    pub custom: Vec<CompiledPolicy>,
    /// DENY policies.
    pub deny: Vec<CompiledPolicy>,
    /// ALLOW policies: once there is one, what none of them matches is denied.
    pub allow: Vec<CompiledPolicy>,
    /// AUDIT policies: listed, never deciding.
    pub audit: Vec<CompiledPolicy>,
}

/// One policy, read once: ports, CIDRs, wildcards and path templates parsed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompiledPolicy {
    /// The policy's namespace and name.
    pub key: ObjectKey,
    /// What a match does.
    pub action: Action,
    /// The external authorizer a CUSTOM policy names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    rules: Vec<Rule>,
}

/// One rule: any `from`, any `to`, every `when`. Empty lists put no constraint.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Rule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    from: Vec<Source>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    to: Vec<Operation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    when: Vec<Condition>,
    /// Whether it names HTTP-only attributes (hosts, methods, paths, request headers).
    http: bool,
    /// The fields it names that Portico never sees, left out of the lists above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unseen: Vec<String>,
}

/// A field's values: one of `any_of` (when there are any) and none of `none_of`.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct Values<T> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    any_of: Vec<T>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    none_of: Vec<T>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Source {
    principals: Values<Wildcard>,
    namespaces: Values<Wildcard>,
    service_accounts: Values<ServiceAccount>,
    ip_blocks: Values<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct ServiceAccount {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Operation {
    ports: Values<u16>,
    hosts: Values<Wildcard>,
    methods: Values<Wildcard>,
    paths: Values<PathPattern>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
enum Condition {
    SourceIp(Values<IpNet>),
    SourceNamespace(Values<Wildcard>),
    SourcePrincipal(Values<Wildcard>),
    DestinationIp(Values<IpNet>),
    DestinationPort(Values<u16>),
    RequestHeader { name: String, values: Values<Wildcard> },
}

/// What is known of one connection (and, once read, its HTTP request) when it is decided.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// The peer's SPIFFE ID from mTLS (`cluster.local/ns/default/sa/sleep`, `spiffe://` may be
    /// there or not); `None` for a plaintext source.
    pub source_principal: Option<&'a str>,
    /// The peer identity's namespace; `None` for a plaintext source.
    pub source_namespace: Option<&'a str>,
    /// The connection's source address.
    pub source_ip: IpAddr,
    /// The address the connection was made to.
    pub destination_ip: IpAddr,
    /// The port the connection was made to.
    pub destination_port: u16,
    /// The HTTP request, when the connection is read as HTTP; `None` at L4.
    pub http: Option<HttpAttributes<'a>>,
}

/// What an HTTP request tells.
#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    /// The method, as sent (compared case-sensitively).
    pub method: &'a str,
    /// The normalized path; a query or fragment is ignored.
    pub path: &'a str,
    /// The `Host` (or `:authority`), as sent (compared case-insensitively).
    pub host: &'a str,
    /// The request's fields; names compared case-insensitively, repeated ones joined by `,`.
    pub headers: &'a [(&'a str, &'a str)],
}

/// A decision, and the policy that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Allowed: by the ALLOW policy that matched, or `None` when no ALLOW policy applies.
    Allow {
        /// The ALLOW policy that matched.
        by: Option<ObjectKey>,
    },
    /// Denied: by the CUSTOM or DENY policy that matched, or `None` when no ALLOW policy did.
    Deny {
        /// The CUSTOM or DENY policy that matched.
        by: Option<ObjectKey>,
    },
}

/// The policies of `policies` that apply to a Pod of `namespace` with `labels`, compiled,
/// each list in key order. `root_namespace` is the mesh's ([`authz::DEFAULT_ROOT_NAMESPACE`]
/// unless configured otherwise).
pub fn effective<'a>(
    policies: impl IntoIterator<Item = (&'a ObjectKey, &'a AuthorizationPolicy)>,
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> EffectivePolicy {
    let mut effective = EffectivePolicy::default();
    for (key, policy) in policies {
        let spec = &policy.spec;
        let in_scope = key.namespace == namespace || key.namespace == root_namespace;
        let selected = spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
        if !in_scope || !selected || spec.has_target_refs() {
            continue;
        }
        let compiled = CompiledPolicy {
            key: key.clone(),
            action: spec.action,
            provider: spec
                .provider
                .as_ref()
                .filter(|_| spec.action == Action::Custom)
                .map(|p| p.name.clone()),
            rules: spec.rules.iter().map(|rule| Rule::compile(rule, &key.namespace)).collect(),
        };
        match spec.action {
            Action::Custom => effective.custom.push(compiled),
            Action::Deny => effective.deny.push(compiled),
            Action::Allow => effective.allow.push(compiled),
            Action::Audit => effective.audit.push(compiled),
        }
    }
    for list in [&mut effective.custom, &mut effective.deny, &mut effective.allow, &mut effective.audit] {
        list.sort_by(|a, b| a.key.cmp(&b.key));
    }
    effective
}

impl EffectivePolicy {
    /// Decides one connection or request.
    pub fn evaluate(&self, attributes: &Attributes<'_>) -> Verdict {
        let attributes = Attributes {
            // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6 addresses.
            source_ip: attributes.source_ip.to_canonical(),
            destination_ip: attributes.destination_ip.to_canonical(),
            ..*attributes
        };
        if let Some(policy) = self.custom.iter().chain(&self.deny).find(|p| p.matches(&attributes)) {
            return Verdict::Deny { by: Some(policy.key.clone()) };
        }
        if self.allow.is_empty() {
            return Verdict::Allow { by: None };
        }
        match self.allow.iter().find(|p| p.matches(&attributes)) {
            Some(policy) => Verdict::Allow { by: Some(policy.key.clone()) },
            None => Verdict::Deny { by: None },
        }
    }

    /// Whether deciding a connection to `port` needs the HTTP request (some rule that could
    /// decide it has HTTP fields).
    pub fn needs_http(&self, port: u16) -> bool {
        self.custom.iter().chain(&self.deny).chain(&self.allow).any(|policy| {
            policy.rules.iter().any(|rule| rule.http && !rule.never(policy.action) && rule.admits_port(port))
        })
    }

    /// One line per policy and rule, for `portico explain` (e.g. "DENY ns/name: from ns foo
    /// to port 8080").
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for policy in self.custom.iter().chain(&self.deny).chain(&self.allow).chain(&self.audit) {
            let head = match &policy.provider {
                Some(provider) => {
                    format!(
                        "{} {} (provider {provider}: no external authorizer, denied)",
                        policy.action, policy.key
                    )
                }
                None => format!("{} {}", policy.action, policy.key),
            };
            match policy.rules.as_slice() {
                [] => lines.push(format!("{head}: nothing (no rules)")),
                [rule] => lines.push(format!("{head}: {}", rule.describe(policy.action))),
                rules => lines.extend(
                    rules
                        .iter()
                        .enumerate()
                        .map(|(i, rule)| format!("{head} rules[{i}]: {}", rule.describe(policy.action))),
                ),
            }
        }
        lines
    }

    /// Whether no policy applies.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty() && self.audit.is_empty()
    }
}

impl CompiledPolicy {
    fn matches(&self, attributes: &Attributes<'_>) -> bool {
        self.rules.iter().any(|rule| rule.matches(self.action, attributes))
    }
}

impl Rule {
    fn compile(rule: &authz::Rule, namespace: &str) -> Rule {
        let mut unseen = Vec::new();
        let from: Vec<Source> = rule
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .map(|source| Source::compile(source, namespace, &mut unseen))
            .collect();
        let to: Vec<Operation> =
            rule.to.iter().flatten().filter_map(|t| t.operation.as_ref()).map(Operation::compile).collect();
        let when: Vec<Condition> =
            rule.when.iter().filter_map(|condition| Condition::compile(condition, &mut unseen)).collect();
        let http = rule
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .any(authz::Operation::has_http_fields)
            || when.iter().any(|c| matches!(c, Condition::RequestHeader { .. }));
        unseen.sort();
        unseen.dedup();
        Rule { from, to, when, http, unseen }
    }

    /// Whether an ALLOW rule can never match: Portico cannot check all of it. (Other rules
    /// lose the fields instead, and match more.)
    fn never(&self, action: Action) -> bool {
        action == Action::Allow && !self.unseen.is_empty()
    }

    /// Whether it matches, in a policy of `action`: an ALLOW rule with HTTP fields matches no
    /// plain connection, other rules match one without them.
    fn matches(&self, action: Action, a: &Attributes<'_>) -> bool {
        if self.never(action) || (action == Action::Allow && self.http && a.http.is_none()) {
            return false;
        }
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a)))
            && self.when.iter().all(|c| c.matches(a))
    }

    /// Whether some connection to `port` could match it.
    fn admits_port(&self, port: u16) -> bool {
        let same = |p: &u16| *p == port;
        (self.to.is_empty() || self.to.iter().any(|o| o.ports.test(same)))
            && self.when.iter().all(|c| match c {
                Condition::DestinationPort(ports) => ports.test(same),
                _ => true,
            })
    }

    fn describe(&self, action: Action) -> String {
        let mut parts = Vec::new();
        if !self.from.is_empty() {
            parts.push(format!(
                "from {}",
                self.from.iter().map(Source::describe).collect::<Vec<_>>().join(" or ")
            ));
        }
        if !self.to.is_empty() {
            parts.push(format!(
                "to {}",
                self.to.iter().map(Operation::describe).collect::<Vec<_>>().join(" or ")
            ));
        }
        if !self.when.is_empty() {
            parts.push(format!(
                "when {}",
                self.when.iter().map(Condition::describe).collect::<Vec<_>>().join(" and ")
            ));
        }
        let mut text = if parts.is_empty() { "everything".to_owned() } else { parts.join(" ") };
        if !self.unseen.is_empty() {
            let fields = self.unseen.join(", ");
            text.push_str(&match action {
                Action::Allow => format!(" (never matches: Portico cannot check {fields})"),
                _ => format!(" (without {fields}, which Portico cannot check)"),
            });
        }
        if self.http {
            // The mesh reads every port such a rule covers as HTTP (`needs_http`).
            text.push_str(" (HTTP: its ports are read as HTTP and decided request by request)");
        }
        text
    }
}

impl<T> Values<T> {
    /// Reads `values` and `not_values` with `parse`. What does not parse is left out, as istiod
    /// leaves it out; validation has refused such policies already.
    fn parse<E>(values: &[String], not_values: &[String], parse: impl Fn(&str) -> Result<T, E>) -> Values<T> {
        let read = |list: &[String]| list.iter().filter_map(|v| parse(v).ok()).collect();
        Values { any_of: read(values), none_of: read(not_values) }
    }

    /// Whether the attribute passes: `holds` says whether it is one value (false when the
    /// attribute is absent).
    fn test(&self, holds: impl Fn(&T) -> bool) -> bool {
        (self.any_of.is_empty() || self.any_of.iter().any(&holds)) && !self.none_of.iter().any(&holds)
    }

    fn describe(&self, label: &str, show: impl Fn(&T) -> String) -> Vec<String> {
        let list = |values: &[T]| values.iter().map(&show).collect::<Vec<_>>().join("|");
        let mut parts = Vec::new();
        if !self.any_of.is_empty() {
            parts.push(format!("{label} {}", list(&self.any_of)));
        }
        if !self.none_of.is_empty() {
            parts.push(format!("not {label} {}", list(&self.none_of)));
        }
        parts
    }
}

impl Source {
    fn compile(source: &authz::Source, namespace: &str, unseen: &mut Vec<String>) -> Source {
        for (name, values) in [
            ("requestPrincipals", &source.request_principals),
            ("notRequestPrincipals", &source.not_request_principals),
            ("remoteIpBlocks", &source.remote_ip_blocks),
            ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
        ] {
            if !values.is_empty() {
                unseen.push(name.to_owned());
            }
        }
        let account = |text: &str| {
            authz::parse_service_account(text, namespace)
                .map(|(namespace, name)| ServiceAccount { namespace, name })
        };
        Source {
            principals: Values::parse(&source.principals, &source.not_principals, Wildcard::parse),
            namespaces: Values::parse(&source.namespaces, &source.not_namespaces, Wildcard::parse),
            service_accounts: Values::parse(&source.service_accounts, &source.not_service_accounts, account),
            ip_blocks: Values::parse(&source.ip_blocks, &source.not_ip_blocks, authz::parse_ip_block),
        }
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        let principal = a.principal();
        let account = principal.and_then(service_account_of);
        self.principals.test(|w| principal.is_some_and(|p| wildcard(w, p)))
            && self.namespaces.test(|w| a.source_namespace.is_some_and(|n| wildcard(w, n)))
            && self.service_accounts.test(|sa| account == Some((sa.namespace.as_str(), sa.name.as_str())))
            && self.ip_blocks.test(|net| net.contains(&a.source_ip))
    }

    fn describe(&self) -> String {
        let mut parts = self.principals.describe("principal", ToString::to_string);
        parts.extend(self.namespaces.describe("ns", ToString::to_string));
        parts.extend(self.service_accounts.describe("sa", |sa| format!("{}/{}", sa.namespace, sa.name)));
        parts.extend(self.ip_blocks.describe("ip", block));
        if parts.is_empty() { "anyone".to_owned() } else { parts.join(", ") }
    }
}

impl Operation {
    fn compile(operation: &authz::Operation) -> Operation {
        Operation {
            ports: Values::parse(&operation.ports, &operation.not_ports, authz::parse_port),
            hosts: Values::parse(&operation.hosts, &operation.not_hosts, Wildcard::parse),
            methods: Values::parse(&operation.methods, &operation.not_methods, Wildcard::parse),
            paths: Values::parse(&operation.paths, &operation.not_paths, PathPattern::parse),
        }
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        if !self.ports.test(|p| *p == a.destination_port) {
            return false;
        }
        let Some(http) = &a.http else { return true };
        let path = http.path.find(['?', '#']).map_or(http.path, |end| &http.path[..end]);
        self.hosts.test(|w| wildcard_ignoring_case(w, http.host))
            && self.methods.test(|w| wildcard(w, http.method))
            && self.paths.test(|p| path_matches(p, path))
    }

    fn describe(&self) -> String {
        let mut parts = self.ports.describe("port", ToString::to_string);
        parts.extend(self.hosts.describe("host", ToString::to_string));
        parts.extend(self.methods.describe("method", ToString::to_string));
        parts.extend(self.paths.describe("path", ToString::to_string));
        parts.join(", ")
    }
}

impl Condition {
    /// Reads a condition; a key Portico never sees is noted in `unseen` and left out.
    fn compile(condition: &authz::Condition, unseen: &mut Vec<String>) -> Option<Condition> {
        let (values, not) = (&condition.values, &condition.not_values);
        Some(match ConditionKey::parse(&condition.key) {
            Ok(ConditionKey::SourceIp) => {
                Condition::SourceIp(Values::parse(values, not, authz::parse_ip_block))
            }
            Ok(ConditionKey::DestinationIp) => {
                Condition::DestinationIp(Values::parse(values, not, authz::parse_ip_block))
            }
            Ok(ConditionKey::DestinationPort) => {
                Condition::DestinationPort(Values::parse(values, not, authz::parse_port))
            }
            Ok(ConditionKey::SourceNamespace) => {
                Condition::SourceNamespace(Values::parse(values, not, Wildcard::parse))
            }
            Ok(ConditionKey::SourcePrincipal) => {
                Condition::SourcePrincipal(Values::parse(values, not, Wildcard::parse))
            }
            Ok(ConditionKey::RequestHeader(name)) => {
                Condition::RequestHeader { name, values: Values::parse(values, not, Wildcard::parse) }
            }
            Ok(ConditionKey::Unseen(_)) | Err(_) => {
                unseen.push(condition.key.clone());
                return None;
            }
        })
    }

    fn matches(&self, a: &Attributes<'_>) -> bool {
        match self {
            Condition::SourceIp(nets) => nets.test(|net| net.contains(&a.source_ip)),
            Condition::DestinationIp(nets) => nets.test(|net| net.contains(&a.destination_ip)),
            Condition::DestinationPort(ports) => ports.test(|p| *p == a.destination_port),
            Condition::SourceNamespace(names) => {
                names.test(|w| a.source_namespace.is_some_and(|n| wildcard(w, n)))
            }
            Condition::SourcePrincipal(names) => {
                names.test(|w| a.principal().is_some_and(|p| wildcard(w, p)))
            }
            Condition::RequestHeader { name, values } => match &a.http {
                Some(http) => {
                    let value = http.header(name);
                    values.test(|w| value.as_deref().is_some_and(|v| wildcard(w, v)))
                }
                None => true,
            },
        }
    }

    fn describe(&self) -> String {
        let parts = match self {
            Condition::SourceIp(nets) => nets.describe("source.ip", block),
            Condition::DestinationIp(nets) => nets.describe("destination.ip", block),
            Condition::DestinationPort(ports) => ports.describe("destination.port", ToString::to_string),
            Condition::SourceNamespace(names) => names.describe("source.namespace", ToString::to_string),
            Condition::SourcePrincipal(names) => names.describe("source.principal", ToString::to_string),
            Condition::RequestHeader { name, values } => {
                values.describe(&format!("request.headers[{name}]"), ToString::to_string)
            }
        };
        parts.join(", ")
    }
}

impl Attributes<'_> {
    /// The peer's SPIFFE ID without `spiffe://`, as policies write it.
    fn principal(&self) -> Option<&str> {
        self.source_principal.map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
    }
}

impl HttpAttributes<'_> {
    /// A field's value, repeated fields joined by `,` as Envoy's header matchers see them.
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
        let first = values.next()?;
        let rest: Vec<&str> = values.collect();
        match rest.is_empty() {
            true => Some(Cow::Borrowed(first)),
            false => Some(Cow::Owned(std::iter::once(first).chain(rest).collect::<Vec<_>>().join(","))),
        }
    }
}

/// Namespace and ServiceAccount of a SPIFFE ID `<trust domain>/ns/<namespace>/sa/<name>`.
fn service_account_of(principal: &str) -> Option<(&str, &str)> {
    let mut parts = principal.split('/');
    let (_, ns, namespace, sa, name) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (ns == "ns" && sa == "sa" && parts.next().is_none()).then_some((namespace, name))
}

fn wildcard(w: &Wildcard, value: &str) -> bool {
    match w {
        Wildcard::Exact(s) => value == s,
        Wildcard::Prefix(s) => value.starts_with(s.as_str()),
        Wildcard::Suffix(s) => value.ends_with(s.as_str()),
        Wildcard::Presence => !value.is_empty(),
    }
}

/// As [`wildcard`], ignoring ASCII case: Istio matches hosts so.
fn wildcard_ignoring_case(w: &Wildcard, value: &str) -> bool {
    let bytes = value.as_bytes();
    match w {
        Wildcard::Exact(s) => value.eq_ignore_ascii_case(s),
        Wildcard::Prefix(s) => bytes.get(..s.len()).is_some_and(|b| b.eq_ignore_ascii_case(s.as_bytes())),
        Wildcard::Suffix(s) => bytes
            .len()
            .checked_sub(s.len())
            .and_then(|start| bytes.get(start..))
            .is_some_and(|b| b.eq_ignore_ascii_case(s.as_bytes())),
        Wildcard::Presence => !value.is_empty(),
    }
}

fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Wildcard(w) => wildcard(w, path),
        PathPattern::Template(pieces) => template_matches(pieces, path),
    }
}

/// Envoy's URI templates: `{*}` is one or more characters of one segment, `{**}` (the last
/// operator) zero or more characters, `/` included.
fn template_matches(pieces: &[TemplatePiece], path: &str) -> bool {
    match pieces {
        [] => path.is_empty(),
        [TemplatePiece::Literal(text), rest @ ..] => {
            path.strip_prefix(text.as_str()).is_some_and(|path| template_matches(rest, path))
        }
        [TemplatePiece::Segment, rest @ ..] => {
            let end = path.find('/').unwrap_or(path.len());
            end > 0 && template_matches(rest, &path[end..])
        }
        [TemplatePiece::Rest] => true,
        [TemplatePiece::Rest, TemplatePiece::Literal(suffix)] => path.ends_with(suffix.as_str()),
        // Parsing keeps `{**}` last, with at most a literal after it.
        [TemplatePiece::Rest, ..] => false,
    }
}

/// An IP block as written: an address alone when the block is one address.
fn block(net: &IpNet) -> String {
    match net.prefix_len() == net.max_prefix_len() {
        true => net.addr().to_string(),
        false => net.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn template(text: &str) -> PathPattern {
        PathPattern::parse(text).unwrap()
    }

    #[test]
    fn path_templates_match_as_envoy_reads_them() {
        let cases = [
            ("/foo/{*}", "/foo/bar", true),
            ("/foo/{*}", "/foo/bar/baz", false),
            ("/foo/{*}", "/foo/", false),
            ("/foo/{**}/", "/foo/bar/", true),
            ("/foo/{**}/", "/foo//", true),
            ("/foo/{**}/", "/foo/bar", false),
            ("/foo/{*}/bar/{**}", "/foo/buzz/bar/", true),
            ("/foo/{*}/bar/{**}", "/foo/buzz/bar/baz", true),
            ("/foo/{*}/bar/{**}", "/foo/buzz/baz/", false),
            ("/{**}", "/", true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(path_matches(&template(pattern), path), expected, "{pattern} {path}");
        }
    }

    #[test]
    fn hosts_ignore_case_and_principals_name_their_account() {
        let suffix = Wildcard::parse("*.Example.com").unwrap();
        assert!(wildcard_ignoring_case(&suffix, "api.EXAMPLE.com"));
        assert!(!wildcard_ignoring_case(&suffix, "example.com") && !wildcard_ignoring_case(&suffix, "m"));
        assert!(wildcard_ignoring_case(&Wildcard::parse("API*").unwrap(), "api.example.com"));
        assert_eq!(service_account_of("cluster.local/ns/shop/sa/web"), Some(("shop", "web")));
        assert_eq!(service_account_of("cluster.local/ns/shop/sa/web/x"), None);
        assert_eq!(service_account_of("cluster.local/sa/shop/ns/web"), None);
    }

    #[test]
    fn repeated_headers_are_joined() {
        let headers = [("X-A", "1"), ("x-b", "2"), ("x-a", "3")];
        let http = HttpAttributes { method: "GET", path: "/", host: "h", headers: &headers };
        assert_eq!(http.header("x-a").as_deref(), Some("1,3"));
        assert_eq!(http.header("X-B").as_deref(), Some("2"));
        assert_eq!(http.header("x-c"), None);
    }
}

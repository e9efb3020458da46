//! Istio's `AuthorizationPolicy` (`security.istio.io/v1`, and `v1beta1`, the same schema under
//! its older name), read as istiod reads it, so that a mesh's existing policies configure
//! Portico's unchanged; and the grammar of its values (wildcards, path templates, ports, IP
//! blocks, condition keys), shared by the checks here and the planner's evaluation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The API group and version Istio serves the kind at now.
pub const API_VERSION: &str = "security.istio.io/v1";

/// The older version, with the same schema; many clusters' files still use it.
pub const API_VERSION_V1BETA1: &str = "security.istio.io/v1beta1";

/// Every version the kind is read at, the preferred first.
pub const API_VERSIONS: &[&str] = &[API_VERSION, API_VERSION_V1BETA1];

/// Istio's default root namespace: policies there apply to the whole mesh.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// `AuthorizationPolicy`: which requests to a mesh's workloads are allowed or denied.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// `security.istio.io/v1` or `security.istio.io/v1beta1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `AuthorizationPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name, namespace (the root namespace makes it mesh-wide), labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Whom it applies to, what it does, when. An empty `spec:` is the empty spec (an ALLOW
    /// policy without rules: allow nothing), as the API server reads it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: AuthorizationPolicySpec,
    /// What istiod reported (conditions, validation messages); read and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// A value written as null (`spec:` with nothing after it) read as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The workloads of its namespace it applies to; without, all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A waypoint or gateway resource it attaches to (deprecated form of `targetRefs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Waypoint or gateway resources it attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches when one rule does; without rules nothing matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What a match does.
    #[serde(default)]
    pub action: Action,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// Whether it names a target resource (`targetRef` or `targetRefs`) instead of workloads.
    pub fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// `spec.action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Allow what matches; once a workload has an ALLOW policy, deny what none allows.
    #[default]
    Allow,
    /// Deny what matches.
    Deny,
    /// Mark what matches for audit logging; never changes a verdict.
    Audit,
    /// Ask an external authorizer (`provider`) about what matches.
    Custom,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        })
    }
}

/// `spec.selector`: Istio's workload selector, labels only.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Every one must be among the Pod's labels.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `spec.targetRef` and each of `spec.targetRefs`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// API group: `gateway.networking.k8s.io`, `networking.istio.io`, or empty for core.
    #[serde(default)]
    pub group: String,
    /// `Gateway`, `GatewayClass`, `Service` or `ServiceEntry`.
    #[serde(default)]
    pub kind: String,
    /// The resource's name.
    #[serde(default)]
    pub name: String,
    /// The resource's namespace: the policy's own, when set at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.provider`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// The provider's name in Istio's mesh configuration.
    #[serde(default)]
    pub name: String,
}

/// One of `spec.rules`: any `from`, any `to`, every `when`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Sources, one of which must match; absent, any source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<From>>,
    /// Operations, one of which must match; absent, any operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<To>>,
    /// Conditions, all of which must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// One of a rule's `from`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct From {
    /// The source (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One of a rule's `to`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct To {
    /// The operation (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `from[].source`: every field set must match; within a field, any value.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Source {
    /// Peer identities, SPIFFE IDs without `spiffe://` (`cluster.local/ns/default/sa/sleep`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT identities (`<iss>/<sub>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// The peer identity's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// The peer identity's ServiceAccount, `namespace/name`, or `name` in the policy's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// The packet's source address: addresses or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// The original client, from `X-Forwarded-For` or the PROXY protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `to[].operation`: every field set must match; within a field, any value.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Operation {
    /// HTTP `Host` (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings (`"8080"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// HTTP paths: wildcards or path templates (`/api/{*}/items/{**}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

impl Operation {
    /// Whether it sets a field only an HTTP request has (hosts, methods, paths).
    pub fn has_http_fields(&self) -> bool {
        [&self.hosts, &self.not_hosts, &self.methods, &self.not_methods, &self.paths, &self.not_paths]
            .iter()
            .any(|values| !values.is_empty())
    }
}

/// One of a rule's `when`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// An Istio attribute: `source.ip`, `request.headers[x-user]`, ...
    #[serde(default)]
    pub key: String,
    /// One must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// None may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// What a `when` key names, as istiod reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionKey {
    /// `source.ip`: the packet's source address.
    SourceIp,
    /// `source.namespace`: the peer identity's namespace.
    SourceNamespace,
    /// `source.principal`: the peer identity.
    SourcePrincipal,
    /// `destination.ip`: the address the connection was made to.
    DestinationIp,
    /// `destination.port`: the port the connection was made to.
    DestinationPort,
    /// `request.headers[name]`: an HTTP request header.
    RequestHeader(String),
    /// A valid key Portico never sees (`remote.ip`, `request.auth.*`, `connection.sni`,
    /// `experimental.envoy.filters.*`), with what it would need to see it.
    Unseen(&'static str),
}

impl ConditionKey {
    /// Reads a key; an unknown or retired key is an error, as on Istio's webhook.
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        let bracketed = |prefix: &str| -> Result<Option<String>, String> {
            let Some(rest) = key.strip_prefix(prefix) else { return Ok(None) };
            match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(inner) if !inner.is_empty() => Ok(Some(inner.to_owned())),
                _ => Err(format!("{key:?} should have the form {prefix}[name]")),
            }
        };
        if let Some(name) = bracketed("request.headers")? {
            return Ok(ConditionKey::RequestHeader(name));
        }
        if bracketed("request.auth.claims")?.is_some() {
            return Ok(ConditionKey::Unseen("JWT claims (Portico does not authenticate requests by JWT)"));
        }
        if key.starts_with("experimental.envoy.filters.") {
            bracketed(key.split('[').next().unwrap_or(key))?;
            return Ok(ConditionKey::Unseen("Envoy filter metadata (Portico runs no Envoy filters)"));
        }
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "remote.ip" => ConditionKey::Unseen(
                "the original client address (Portico reads neither X-Forwarded-For nor the PROXY protocol)",
            ),
            "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
                ConditionKey::Unseen("JWT fields (Portico does not authenticate requests by JWT)")
            }
            "connection.sni" => ConditionKey::Unseen("the TLS server name (Portico does not read it)"),
            "destination.namespace" => {
                return Err(format!("{key} is replaced by the policy's metadata.namespace"));
            }
            "destination.name" | "destination.user" => {
                return Err(format!("{key} is retired: only supported in v1alpha1"));
            }
            _ if key.starts_with("destination.labels") => {
                return Err(format!("{key} is replaced by spec.selector"));
            }
            _ => return Err(format!("unknown attribute {key:?}")),
        })
    }
}

/// A string value as Istio matches it: `abc` exactly, `abc*` as a prefix, `*abc` as a suffix,
/// `*` for any non-empty value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "match", content = "value", rename_all = "lowercase")]
pub enum Wildcard {
    /// The whole value.
    Exact(String),
    /// The value starts with it.
    Prefix(String),
    /// The value ends with it.
    Suffix(String),
    /// Any value but the empty one.
    Presence,
}

impl Wildcard {
    /// Reads a value; empty, and `*` anywhere but at one end, are refused.
    pub fn parse(text: &str) -> Result<Wildcard, String> {
        if text.is_empty() {
            return Err("empty value not allowed".to_owned());
        }
        if text == "*" {
            return Ok(Wildcard::Presence);
        }
        let (prefix, suffix) = (text.strip_suffix('*'), text.strip_prefix('*'));
        let inner = prefix.or(suffix).unwrap_or(text);
        // Istio would compare such a `*` literally, and no request ever carries it.
        if inner.contains('*') || (prefix.is_some() && suffix.is_some()) {
            return Err(format!("{text:?}: `*` may only stand alone or at the start or at the end"));
        }
        Ok(match (prefix, suffix) {
            (Some(p), _) => Wildcard::Prefix(p.to_owned()),
            (_, Some(s)) => Wildcard::Suffix(s.to_owned()),
            _ => Wildcard::Exact(text.to_owned()),
        })
    }
}

impl fmt::Display for Wildcard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wildcard::Exact(s) => f.write_str(s),
            Wildcard::Prefix(s) => write!(f, "{s}*"),
            Wildcard::Suffix(s) => write!(f, "*{s}"),
            Wildcard::Presence => f.write_str("*"),
        }
    }
}

/// A `paths` value: a wildcard, or a path template with `{*}` and `{**}` operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathPattern {
    /// Exact, prefix, suffix or presence.
    Wildcard(Wildcard),
    /// An Envoy URI template, in pieces.
    Template(Vec<TemplatePiece>),
}

/// A piece of a path template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplatePiece {
    /// Text that must be there as written.
    Literal(String),
    /// `{*}`: one or more characters within one segment (no `/`).
    Segment,
    /// `{**}`: zero or more characters, `/` included; the last operator.
    Rest,
}

impl PathPattern {
    /// Reads a `paths` value. A template must keep each operator to a whole segment, with
    /// `{**}` last and no `*`, `{` or `}` elsewhere, as Istio documents the field.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if !(text.contains("{*}") || text.contains("{**}")) {
            return Wildcard::parse(text).map(PathPattern::Wildcard);
        }
        let bad = |why: &str| Err(format!("{text:?} is not a valid path template: {why}"));
        let mut pieces: Vec<TemplatePiece> = Vec::new();
        let mut literal = String::new();
        let segments: Vec<&str> = text.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                literal.push('/');
            }
            let operator = match *segment {
                "{*}" => TemplatePiece::Segment,
                "{**}" => TemplatePiece::Rest,
                _ if segment.contains(['*', '{', '}']) => {
                    return bad(
                        "an operator must be a whole segment, and `*`, `{`, `}` appear only in `{*}` and `{**}`",
                    );
                }
                _ => {
                    literal.push_str(segment);
                    continue;
                }
            };
            if pieces.contains(&TemplatePiece::Rest) {
                return bad("`{**}` must be the last operator");
            }
            if !literal.is_empty() {
                pieces.push(TemplatePiece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(operator);
        }
        if !literal.is_empty() {
            pieces.push(TemplatePiece::Literal(literal));
        }
        Ok(PathPattern::Template(pieces))
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Wildcard(w) => w.fmt(f),
            PathPattern::Template(pieces) => pieces.iter().try_for_each(|piece| match piece {
                TemplatePiece::Literal(s) => f.write_str(s),
                TemplatePiece::Segment => f.write_str("{*}"),
                TemplatePiece::Rest => f.write_str("{**}"),
            }),
        }
    }
}

/// A port of `ports`, `notPorts` or `destination.port`: a number from 1 to 65535, as text.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("{text:?} is not a port (a number from 1 to 65535, written as a string)")),
    }
}

/// An IP block of `ipBlocks` or `source.ip`/`destination.ip`: an address (a block of one) or a
/// CIDR; bits past the prefix are ignored, as Istio ignores them.
pub fn parse_ip_block(text: &str) -> Result<IpNet, String> {
    if text.contains('/') {
        return text
            .parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| format!("{text:?} is not a CIDR such as 203.0.113.0/24"));
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("{text:?} is not an IP address"))
}

/// A `serviceAccounts` value: `namespace/name`, or `name` in `namespace`.
pub fn parse_service_account(text: &str, namespace: &str) -> Result<(String, String), String> {
    let (ns, name) = text.split_once('/').unwrap_or((namespace, text));
    let fine = |part: &str| !part.is_empty() && !part.contains(['/', '*']);
    match fine(ns) && fine(name) {
        true => Ok((ns.to_owned(), name.to_owned())),
        false => {
            Err(format!("{text:?} is not a ServiceAccount (name, or namespace/name, without wildcards)"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn wildcards_stand_at_one_end_or_alone() {
        assert_eq!(Wildcard::parse("a").unwrap(), Wildcard::Exact("a".into()));
        assert_eq!(Wildcard::parse("a*").unwrap(), Wildcard::Prefix("a".into()));
        assert_eq!(Wildcard::parse("*a").unwrap(), Wildcard::Suffix("a".into()));
        assert_eq!(Wildcard::parse("*").unwrap(), Wildcard::Presence);
        for bad in ["", "a*b", "*a*", "**", "cluster.local/ns/*/sa/x"] {
            assert!(Wildcard::parse(bad).is_err(), "{bad}");
        }
        for text in ["a", "a*", "*a", "*"] {
            assert_eq!(Wildcard::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn path_templates_keep_operators_to_whole_segments() {
        let pieces = |text| match PathPattern::parse(text).unwrap() {
            PathPattern::Template(p) => p,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pieces("/foo/{*}/bar/{**}"),
            [
                TemplatePiece::Literal("/foo/".into()),
                TemplatePiece::Segment,
                TemplatePiece::Literal("/bar/".into()),
                TemplatePiece::Rest
            ]
        );
        assert_eq!(PathPattern::parse("/foo/{*}/bar/{**}").unwrap().to_string(), "/foo/{*}/bar/{**}");
        for bad in ["/{**}/foo/{*}", "/foo/{*}.txt", "/*/baz/{*}", "/{x}/{*}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PathPattern::parse("/api/*").unwrap(),
            PathPattern::Wildcard(Wildcard::Prefix("/api/".into()))
        );
    }

    #[test]
    fn ports_blocks_and_keys() {
        assert_eq!(parse_port("8080"), Ok(8080));
        for bad in ["0", "65536", "+80", "http", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ip_block("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_ip_block("10.1.2.3/16").unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(parse_ip_block("2001:db8::1").unwrap().prefix_len(), 128);
        assert!(parse_ip_block("10.0.0.0/33").is_err() && parse_ip_block("ten").is_err());
        assert_eq!(
            ConditionKey::parse("request.headers[x-user]"),
            Ok(ConditionKey::RequestHeader("x-user".into()))
        );
        assert!(matches!(ConditionKey::parse("request.auth.claims[iss]"), Ok(ConditionKey::Unseen(_))));
        for bad in ["request.headers", "request.headers[]", "destination.labels[app]", "source.user", ""] {
            assert!(ConditionKey::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_service_account("web", "shop").unwrap(), ("shop".into(), "web".into()));
        assert_eq!(parse_service_account("ops/web", "shop").unwrap(), ("ops".into(), "web".into()));
        assert!(
            parse_service_account("a/b/c", "shop").is_err() && parse_service_account("/x", "shop").is_err()
        );
    }
}

//! Per-object checks: what the API server would reject, plus exposure mistakes it would
//! accept that a person still wants to hear about. Checks that need other objects (clashes,
//! missing backends) belong to the planner, which decides who wins.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::authz::{
    self, Action, AuthorizationPolicy, ConditionKey, Operation, PathPattern, PolicyTargetReference, Source,
    Wildcard,
};
use crate::diagnostic::Diagnostic;
use crate::metallb::{AddressRange, IpAddressPool, L2Advertisement};
use crate::names::{ingress_host_problem, is_dns_label, is_dns_subdomain, is_dns1035_label, is_port_name};
use crate::object::{Object, ObjectKind, Workload};
use crate::selector::selector_matches;

/// Why Portico never sees a JWT identity.
const JWT: &str = "Portico does not authenticate requests by JWT (RequestAuthentication)";
/// Why Portico never sees a remote address.
const REMOTE: &str = "Portico reads neither X-Forwarded-For nor the PROXY protocol";

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Secret type an Ingress TLS certificate must have.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// All problems of one object on its own. Diagnostics come without origin or object; the
/// caller attaches both.
pub fn validate(object: &Object) -> Vec<Diagnostic> {
    let mut v = Findings::default();
    v.metadata(object.kind(), object.metadata());
    match object {
        Object::Service(s) => v.service(s),
        Object::IpAddressPool(p) => v.ip_address_pool(p),
        Object::L2Advertisement(a) => v.l2_advertisement(a),
        Object::AuthorizationPolicy(p) => v.authorization_policy(p),
        Object::EndpointSlice(s) => v.endpoint_slice(s),
        Object::Pod(p) => v.pod(p),
        Object::Ingress(i) => v.ingress(i),
        Object::Secret(s) => v.secret(s),
        Object::IngressClass(c) => {
            if c.spec.as_ref().and_then(|s| s.controller.as_deref()).unwrap_or("").is_empty() {
                v.error("spec.controller", "required: the controller that serves this class");
            }
        }
        Object::Node(n) => {
            let spec = n.spec.as_ref();
            let cidrs = spec.and_then(|s| s.pod_cidrs.as_deref()).unwrap_or_default();
            for (i, cidr) in cidrs.iter().enumerate() {
                if let Err(why) = cidr_family(cidr) {
                    v.error(format!("spec.podCIDRs[{i}]"), why);
                }
            }
            let families: Vec<bool> = cidrs.iter().filter_map(|c| cidr_family(c).ok()).collect();
            if cidrs.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
                v.error("spec.podCIDRs", "at most two, one IPv4 and one IPv6");
            }
            if let Some(cidr) = spec.and_then(|s| s.pod_cidr.as_deref()) {
                match cidr_family(cidr) {
                    Err(why) => v.error("spec.podCIDR", why),
                    Ok(_) if cidrs.first().is_some_and(|first| first != cidr) => {
                        v.error("spec.podCIDR", "must be the first of spec.podCIDRs when both are set")
                    }
                    Ok(_) => {}
                }
            }
            for (i, a) in n.status.iter().flat_map(|s| s.addresses.iter().flatten()).enumerate() {
                if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                    && a.address.parse::<IpAddr>().is_err()
                {
                    v.error(
                        format!("status.addresses[{i}].address"),
                        format!("{:?} is not an IP address", a.address),
                    );
                }
            }
        }
        Object::Workload(w) => v.workload(w),
        Object::Namespace(_) => {}
    }
    v.0
}

/// Whether `text` is a CIDR (`198.18.1.0/24`, `2001:db8::/64`): `Ok(true)` for IPv6.
fn cidr_family(text: &str) -> Result<bool, String> {
    let bad = || format!("{text:?} is not a CIDR such as 10.244.1.0/24");
    let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
    let address: IpAddr = address.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    match prefix <= if address.is_ipv6() { 128 } else { 32 } {
        true => Ok(address.is_ipv6()),
        false => Err(bad()),
    }
}

#[derive(Default)]
struct Findings(Vec<Diagnostic>);

impl Findings {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::error(message).field(field));
    }

    fn warning(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic::warning(message).field(field));
    }

    /// MetalLB's checks of a pool: at least one address entry, each a CIDR or range of one
    /// family, no two entries sharing an address; selectors that can be read.
    fn ip_address_pool(&mut self, pool: &IpAddressPool) {
        let addresses = &pool.spec.addresses;
        if addresses.is_empty() {
            self.error("spec.addresses", "required: at least one CIDR or range (first-last)");
        }
        let mut read: Vec<(usize, AddressRange)> = Vec::new();
        for (i, text) in addresses.iter().enumerate() {
            match AddressRange::parse(text) {
                Ok(range) => {
                    if let Some((j, _)) = read.iter().find(|(_, r)| r.overlaps(&range)) {
                        self.error(
                            format!("spec.addresses[{i}]"),
                            format!("{text} overlaps spec.addresses[{j}]"),
                        );
                    }
                    read.push((i, range));
                }
                Err(why) => self.error(format!("spec.addresses[{i}]"), why),
            }
        }
        if let Some(allocation) = &pool.spec.service_allocation {
            for (i, namespace) in allocation.namespaces.iter().enumerate() {
                if !is_dns_label(namespace) {
                    let field = format!("spec.serviceAllocation.namespaces[{i}]");
                    self.error(field, format!("{namespace:?} is not a valid namespace name"));
                }
            }
            self.selectors("spec.serviceAllocation.namespaceSelectors", &allocation.namespace_selectors);
            self.selectors("spec.serviceAllocation.serviceSelectors", &allocation.service_selectors);
        }
    }

    /// MetalLB's checks of an L2 advertisement: pools named as names, readable selectors.
    fn l2_advertisement(&mut self, advertisement: &L2Advertisement) {
        let spec = &advertisement.spec;
        for (i, pool) in spec.ip_address_pools.iter().enumerate() {
            if !is_dns_subdomain(pool) {
                self.error(format!("spec.ipAddressPools[{i}]"), format!("{pool:?} is not a pool name"));
            }
        }
        self.selectors("spec.ipAddressPoolSelectors", &spec.ip_address_pool_selectors);
        self.selectors("spec.nodeSelectors", &spec.node_selectors);
        for (i, interface) in spec.interfaces.iter().enumerate() {
            // Linux interface names: 1 to 15 bytes, no '/', no whitespace.
            if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', ':']) {
                self.error(
                    format!("spec.interfaces[{i}]"),
                    format!("{interface:?} is not an interface name"),
                );
            }
        }
    }

    /// What Istio's webhook rejects in an AuthorizationPolicy (`ValidateAuthorizationPolicy`),
    /// its warnings, and a warning for each part Portico does not enforce, saying what it does
    /// instead.
    fn authorization_policy(&mut self, policy: &AuthorizationPolicy) {
        let spec = &policy.spec;
        let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
        let targets = if spec.target_refs.is_empty() { "spec.targetRef" } else { "spec.targetRefs" };
        let kinds_set = [spec.selector.is_some(), spec.target_ref.is_some(), !spec.target_refs.is_empty()];
        if kinds_set.into_iter().filter(|set| *set).count() > 1 {
            self.error(targets, "only one of selector, targetRef and targetRefs may be set");
        }
        if let Some(selector) = &spec.selector {
            if selector.match_labels.is_empty() {
                self.warning(
                    "spec.selector",
                    "a selector without labels selects every workload of the namespace, as no selector does",
                );
            }
            for (key, value) in &selector.match_labels {
                let field = format!("spec.selector.matchLabels[{key}]");
                if key.is_empty() {
                    self.error(field, "an empty key is not supported");
                } else if key.contains('*') || value.contains('*') {
                    self.error(field, format!("wildcards are not supported in a selector: {key}={value}"));
                }
            }
        }
        let references = spec.target_ref.iter().map(|r| ("spec.targetRef".to_owned(), r));
        let references = references
            .chain(spec.target_refs.iter().enumerate().map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)));
        for (at, reference) in references {
            self.target_reference(&at, reference);
        }
        if spec.has_target_refs() {
            self.warning(
                targets,
                "Portico applies an AuthorizationPolicy by its selector, or to every workload of its namespace, only: this one attaches to a waypoint or gateway, which Portico does not run, so it applies to no workload (ztunnel ignores it too)",
            );
        }
        match spec.action {
            Action::Custom if spec.rules.is_empty() => self.error(
                "spec.rules",
                "CUSTOM action without rules is meaningless as it will never be triggered; add an empty rule {} to trigger it for every request",
            ),
            Action::Custom if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) => {
                self.error("spec.provider.name", "required with the CUSTOM action")
            }
            Action::Custom => self.warning(
                "spec.provider.name",
                "Portico has no external authorizer to ask: as Istio does when the provider is not defined in its mesh configuration, Portico denies the requests this policy matches",
            ),
            Action::Deny if spec.rules.is_empty() => self.error(
                "spec.rules",
                "DENY action without rules is meaningless as it will never be triggered; add an empty rule {} to deny every request",
            ),
            Action::Audit => self.warning(
                "spec.action",
                "Portico keeps no audit log: an AUDIT policy never changes a verdict, and `portico explain` lists it",
            ),
            Action::Allow | Action::Deny => {}
        }
        if spec.provider.is_some() && spec.action != Action::Custom {
            self.error(
                "spec.provider",
                format!("may only be set with the CUSTOM action, not {}", spec.action),
            );
        }
        for (r, rule) in spec.rules.iter().enumerate() {
            self.authorization_rule(&format!("spec.rules[{r}]"), rule, spec.action, namespace);
        }
    }

    /// A `targetRef`: named, and of a kind a policy can attach to.
    fn target_reference(&mut self, at: &str, reference: &PolicyTargetReference) {
        if reference.name.is_empty() {
            self.error(format!("{at}.name"), "required");
        }
        let group = reference.group.as_str();
        let allowed = match reference.kind.as_str() {
            "Gateway" | "GatewayClass" => group == "gateway.networking.k8s.io",
            "Service" => matches!(group, "" | "core"),
            "ServiceEntry" => group == "networking.istio.io",
            _ => false,
        };
        if !allowed {
            self.error(
                format!("{at}.kind"),
                format!("{group}/{} is not a Gateway, GatewayClass (gateway.networking.k8s.io), Service (core) or ServiceEntry (networking.istio.io)", reference.kind),
            );
        }
    }

    fn authorization_rule(&mut self, at: &str, rule: &authz::Rule, action: Action, namespace: &str) {
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            self.error(format!("{at}.from"), "must not be empty: leave it out to match any source");
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            self.error(format!("{at}.to"), "must not be empty: leave it out to match any operation");
        }
        let sources: Vec<&Source> = rule.from.iter().flatten().filter_map(|f| f.source.as_ref()).collect();
        let operations: Vec<&Operation> =
            rule.to.iter().flatten().filter_map(|t| t.operation.as_ref()).collect();
        for (f, from) in rule.from.iter().flatten().enumerate() {
            match &from.source {
                Some(source) => self.source(&format!("{at}.from[{f}].source"), source, action, namespace),
                None => self.error(format!("{at}.from[{f}].source"), "required"),
            }
        }
        for (t, to) in rule.to.iter().flatten().enumerate() {
            match &to.operation {
                Some(operation) => self.operation(&format!("{at}.to[{t}].operation"), operation),
                None => self.error(format!("{at}.to[{t}].operation"), "required"),
            }
        }
        for (w, condition) in rule.when.iter().enumerate() {
            self.condition(&format!("{at}.when[{w}]"), condition, action);
        }
        // Istio's own warning, with its own test: a `from` of JWT or remote addresses only, or a
        // `to` without ports, leaves nothing a plain TCP connection can be told apart by.
        let layer4_source = sources.iter().any(|s| {
            [
                &s.principals,
                &s.not_principals,
                &s.namespaces,
                &s.not_namespaces,
                &s.service_accounts,
                &s.not_service_accounts,
                &s.ip_blocks,
                &s.not_ip_blocks,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            ]
            .iter()
            .any(|values| !values.is_empty())
        });
        let layer4_operation = operations.iter().any(|o| !o.ports.is_empty() || !o.not_ports.is_empty());
        let http_only = (!sources.is_empty() && operations.is_empty() && !layer4_source)
            || (!operations.is_empty() && !layer4_operation);
        if action == Action::Deny && http_only {
            self.warning(
                at,
                "this DENY rule names only HTTP attributes: on a connection Portico does not read as HTTP they are ignored, so it denies every such connection under its scope; name the ports it is meant for",
            );
        }
    }

    /// A `from[].source`.
    fn source(&mut self, at: &str, source: &Source, action: Action, namespace: &str) {
        if *source == Source::default() {
            self.error(at, "must not be empty: set a field, or leave out this source to match any");
        }
        let identities =
            [&source.principals, &source.not_principals, &source.namespaces, &source.not_namespaces];
        let accounts = [&source.service_accounts, &source.not_service_accounts];
        if identities.iter().any(|v| !v.is_empty()) && accounts.iter().any(|v| !v.is_empty()) {
            self.error(at, "serviceAccounts cannot be set with namespaces or principals");
        }
        for (name, values) in [
            ("principals", &source.principals),
            ("notPrincipals", &source.not_principals),
            ("namespaces", &source.namespaces),
            ("notNamespaces", &source.not_namespaces),
            ("requestPrincipals", &source.request_principals),
            ("notRequestPrincipals", &source.not_request_principals),
        ] {
            self.each(at, name, values, Wildcard::parse);
        }
        for (name, values) in [("principals", &source.principals), ("notPrincipals", &source.not_principals)]
        {
            for (i, value) in values.iter().enumerate() {
                if value.starts_with("spiffe://") {
                    self.warning(
                        format!("{at}.{name}[{i}]"),
                        "principals are SPIFFE IDs without spiffe:// (cluster.local/ns/NAMESPACE/sa/ACCOUNT): this value never matches",
                    );
                }
            }
        }
        for (name, values) in [
            ("serviceAccounts", &source.service_accounts),
            ("notServiceAccounts", &source.not_service_accounts),
        ] {
            self.each(at, name, values, |v| authz::parse_service_account(v, namespace));
        }
        for (name, values) in [
            ("ipBlocks", &source.ip_blocks),
            ("notIpBlocks", &source.not_ip_blocks),
            ("remoteIpBlocks", &source.remote_ip_blocks),
            ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
        ] {
            self.each(at, name, values, authz::parse_ip_block);
        }
        if action == Action::Custom {
            for (name, values) in [
                ("principals", &source.principals),
                ("notPrincipals", &source.not_principals),
                ("namespaces", &source.namespaces),
                ("notNamespaces", &source.not_namespaces),
                ("serviceAccounts", &source.service_accounts),
                ("notServiceAccounts", &source.not_service_accounts),
                ("requestPrincipals", &source.request_principals),
                ("notRequestPrincipals", &source.not_request_principals),
            ] {
                if !values.is_empty() {
                    self.error(format!("{at}.{name}"), "not supported with the CUSTOM action");
                }
            }
        }
        for (name, values, unseen) in [
            ("requestPrincipals", &source.request_principals, JWT),
            ("notRequestPrincipals", &source.not_request_principals, JWT),
            ("remoteIpBlocks", &source.remote_ip_blocks, REMOTE),
            ("notRemoteIpBlocks", &source.not_remote_ip_blocks, REMOTE),
        ] {
            if !values.is_empty() {
                self.unseen(format!("{at}.{name}"), unseen, action);
            }
        }
    }

    /// A `to[].operation`.
    fn operation(&mut self, at: &str, operation: &Operation) {
        if *operation == Operation::default() {
            self.error(at, "must not be empty: set a field, or leave out this operation to match any");
        }
        for (name, values) in [("ports", &operation.ports), ("notPorts", &operation.not_ports)] {
            self.each(at, name, values, authz::parse_port);
        }
        for (name, values) in [
            ("hosts", &operation.hosts),
            ("notHosts", &operation.not_hosts),
            ("methods", &operation.methods),
            ("notMethods", &operation.not_methods),
        ] {
            self.each(at, name, values, Wildcard::parse);
        }
        for (name, values) in [("paths", &operation.paths), ("notPaths", &operation.not_paths)] {
            self.each(at, name, values, PathPattern::parse);
        }
    }

    /// A `when` condition: a known key, and values that key can hold.
    fn condition(&mut self, at: &str, condition: &authz::Condition, action: Action) {
        if condition.key.is_empty() {
            self.error(format!("{at}.key"), "required");
            return;
        }
        if condition.values.is_empty() && condition.not_values.is_empty() {
            self.error(
                at,
                format!("at least one of values or notValues must be set for key {}", condition.key),
            );
        }
        let key = match ConditionKey::parse(&condition.key) {
            Ok(key) => key,
            Err(why) => return self.error(format!("{at}.key"), why),
        };
        for (name, values) in [("values", &condition.values), ("notValues", &condition.not_values)] {
            match &key {
                ConditionKey::SourceIp | ConditionKey::DestinationIp => {
                    self.each(at, name, values, authz::parse_ip_block)
                }
                ConditionKey::DestinationPort => self.each(at, name, values, authz::parse_port),
                ConditionKey::SourceNamespace
                | ConditionKey::SourcePrincipal
                | ConditionKey::RequestHeader(_) => self.each(at, name, values, Wildcard::parse),
                ConditionKey::Unseen(_) => self.each(at, name, values, |v| match v.is_empty() {
                    true => Err("empty value not allowed"),
                    false => Ok(()),
                }),
            }
        }
        let identity = matches!(key, ConditionKey::SourceNamespace | ConditionKey::SourcePrincipal);
        if action == Action::Custom && (identity || condition.key.starts_with("request.auth.")) {
            self.error(format!("{at}.key"), "not supported with the CUSTOM action");
        }
        if let ConditionKey::Unseen(why) = key {
            self.unseen(format!("{at}.key"), why, action);
        }
    }

    /// Each value of the list `name` under `at`, read by `parse`; an error names its index.
    fn each<T, E: Into<String>>(
        &mut self,
        at: &str,
        name: &str,
        values: &[String],
        parse: impl Fn(&str) -> Result<T, E>,
    ) {
        for (i, value) in values.iter().enumerate() {
            if let Err(why) = parse(value) {
                self.error(format!("{at}.{name}[{i}]"), why);
            }
        }
    }

    /// A field whose attribute Portico never sees: what the planner's evaluation does instead
    /// (`portico_plan::authz`): an ALLOW rule never matches, any other rule matches as if the
    /// field were not there, as istiod hands such rules to ztunnel.
    fn unseen(&mut self, field: String, why: &str, action: Action) {
        let effect = match action {
            Action::Allow => "this ALLOW rule never matches".to_owned(),
            other => format!("Portico ignores the field, so this {other} rule matches more requests"),
        };
        self.warning(field, format!("{why}: {effect}"));
    }

    /// Each selector of a list read as the planner will read it.
    fn selectors(&mut self, field: &str, selectors: &[LabelSelector]) {
        let empty = std::collections::BTreeMap::new();
        for (i, selector) in selectors.iter().enumerate() {
            if let Err(why) = selector_matches(selector, &empty) {
                self.error(format!("{field}[{i}]"), why);
            }
        }
    }

    fn metadata(&mut self, kind: ObjectKind, meta: &ObjectMeta) {
        let name = meta.name.as_deref().unwrap_or("");
        let (ok, rule) = match kind {
            ObjectKind::Service => {
                (is_dns1035_label(name), "a DNS-1035 label (lowercase, starts with a letter)")
            }
            ObjectKind::Namespace => (is_dns_label(name), "a DNS label (lowercase alphanumerics and '-')"),
            _ => (is_dns_subdomain(name), "a lowercase DNS subdomain"),
        };
        if name.is_empty() {
            self.error("metadata.name", "required");
        } else if !ok {
            self.error("metadata.name", format!("{name:?} must be {rule}"));
        }
        if let Some(ns) = &meta.namespace
            && kind.namespaced()
            && !is_dns_label(ns)
        {
            self.error("metadata.namespace", format!("{ns:?} is not a valid namespace name"));
        }
    }

    fn service(&mut self, service: &Service) {
        let Some(spec) = &service.spec else {
            self.error("spec", "required");
            return;
        };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
            self.error(
                "spec.type",
                format!("{kind:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
            );
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let ports = spec.ports.as_deref().unwrap_or_default();
        if kind == "ExternalName" {
            match spec.external_name.as_deref() {
                None | Some("") => self.error("spec.externalName", "required when type is ExternalName"),
                Some(name) if name.parse::<IpAddr>().is_ok() => self.error(
                    "spec.externalName",
                    format!("{name:?} is an IP address; ExternalName must be a DNS name (use a Service without selector and an EndpointSlice for IPs)"),
                ),
                Some(name) if !is_dns_subdomain(name.trim_end_matches('.')) => {
                    self.error("spec.externalName", format!("{name:?} is not a lowercase DNS name (RFC 1123)"))
                }
                Some(_) => {}
            }
        } else if ports.is_empty() && !headless {
            self.error(
                "spec.ports",
                "required: at least one port (only headless and ExternalName Services may have none)",
            );
        }
        if headless && matches!(kind, "NodePort" | "LoadBalancer") {
            self.error(
                "spec.clusterIP",
                format!("may not be None when type is {kind}: node ports need a cluster IP"),
            );
        }
        if let Some(ip) = spec.cluster_ip.as_deref()
            && !matches!(ip, "" | "None")
            && ip.parse::<IpAddr>().is_err()
        {
            self.error("spec.clusterIP", format!("{ip:?} is not an IP address, \"None\" or empty"));
        }
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
            if !matches!(ip.as_str(), "" | "None") && ip.parse::<IpAddr>().is_err() {
                self.error(format!("spec.clusterIPs[{i}]"), format!("{ip:?} is not an IP address"));
            }
        }
        if kind == "ExternalName" {
            self.external_name_families(spec);
        } else {
            self.service_families(spec, headless);
        }
        self.service_ports(kind, headless, ports);
        match spec.session_affinity.as_deref() {
            None | Some("None") | Some("ClientIP") => {}
            Some(other) => self.error("spec.sessionAffinity", format!("{other:?} is not None or ClientIP")),
        }
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        if let Some(t) = timeout
            && !(1..=86400).contains(&t)
        {
            self.error(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("{t} is outside 1–86400"),
            );
        }
        for (field, value) in [
            ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
            ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
        ] {
            if let Some(p) = value.as_deref()
                && !matches!(p, "Cluster" | "Local")
            {
                self.error(field, format!("{p:?} is not Cluster or Local"));
            }
        }
        if spec.external_traffic_policy.is_some()
            && !matches!(kind, "NodePort" | "LoadBalancer")
            && spec.external_ips.is_none()
        {
            self.error(
                "spec.externalTrafficPolicy",
                format!("may only be set when type is NodePort or LoadBalancer, not {kind}"),
            );
        }
        if spec.health_check_node_port.is_some()
            && !(kind == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local"))
        {
            self.error(
                "spec.healthCheckNodePort",
                "may only be set for type LoadBalancer with externalTrafficPolicy Local",
            );
        }
        for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
            if ip.parse::<IpAddr>().is_err() {
                self.error(format!("spec.externalIPs[{i}]"), format!("{ip:?} is not an IP address"));
            }
        }
        for (i, cidr) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
            if !is_cidr(cidr) {
                self.error(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{cidr:?} is not a CIDR such as 192.0.2.0/24"),
                );
            }
        }
        if let Some(ip) = spec.load_balancer_ip.as_deref()
            && !ip.is_empty()
            && ip.parse::<IpAddr>().is_err()
        {
            self.error("spec.loadBalancerIP", format!("{ip:?} is not an IP address"));
        }
        if kind == "ExternalName" && spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
            self.warning("spec.selector", "ignored: an ExternalName Service has no endpoints");
        }
    }

    /// `ipFamilyPolicy`, `ipFamilies` and `clusterIPs` on their own and against each other,
    /// as the API server's validation has them; what needs the cluster's families (which it
    /// has, how many) is the planner's to check.
    fn service_families(&mut self, spec: &ServiceSpec, headless: bool) {
        let policy = spec.ip_family_policy.as_deref();
        if let Some(p) = policy
            && !matches!(p, "SingleStack" | "PreferDualStack" | "RequireDualStack")
        {
            self.error(
                "spec.ipFamilyPolicy",
                format!("{p:?} is not SingleStack, PreferDualStack or RequireDualStack"),
            );
        }
        let families = spec.ip_families.as_deref().unwrap_or_default();
        if families.len() > 2 {
            self.error(
                "spec.ipFamilies",
                format!("has {} entries; at most two, one IPv4 and one IPv6", families.len()),
            );
            return;
        }
        for (i, family) in families.iter().enumerate() {
            if !matches!(family.as_str(), "IPv4" | "IPv6") {
                self.error(format!("spec.ipFamilies[{i}]"), format!("{family:?} is not IPv4 or IPv6"));
            } else if families[..i].contains(family) {
                self.error(format!("spec.ipFamilies[{i}]"), format!("{family} is listed twice"));
            }
        }
        let Some(requested) = self.requested_cluster_ips(spec) else { return };
        if policy == Some("SingleStack") && (families.len() == 2 || requested.len() == 2) {
            let which = if families.len() == 2 {
                "spec.ipFamilies has two families"
            } else {
                "spec.clusterIPs has two addresses"
            };
            self.error(
                "spec.ipFamilyPolicy",
                format!(
                    "SingleStack takes one IP family, but {which}: use PreferDualStack or RequireDualStack"
                ),
            );
        }
        // A headless Service's families name no ClusterIP: "None" has none.
        if headless {
            return;
        }
        for (i, ((field, ip), family)) in requested.iter().zip(families).enumerate() {
            let matches = match family.as_str() {
                "IPv4" => ip.is_ipv4(),
                "IPv6" => ip.is_ipv6(),
                _ => true,
            };
            if !matches {
                self.error(
                    field.as_str(),
                    format!("{ip} is not an {family} address, as spec.ipFamilies[{i}] asks"),
                );
            }
        }
    }

    /// The ClusterIPs a Service asks for, with their fields: `spec.clusterIPs`, else
    /// `spec.clusterIP` (the API server fills either from the other, and the first of
    /// `clusterIPs` must be `clusterIP`); at most one per family. `None` when they are wrong.
    fn requested_cluster_ips(&mut self, spec: &ServiceSpec) -> Option<Vec<(String, IpAddr)>> {
        let ips = spec.cluster_ips.as_deref().unwrap_or_default();
        let single = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
        if let (Some(single), Some(first)) = (single, ips.first())
            && single != first
        {
            self.error("spec.clusterIPs[0]", format!("{first:?} must match spec.clusterIP ({single:?})"));
            return None;
        }
        if ips.len() > 1 && ips.iter().any(|ip| ip == "None") {
            self.error("spec.clusterIPs", "\"None\" must be the first and only value");
            return None;
        }
        if ips.len() > 2 {
            self.error(
                "spec.clusterIPs",
                format!("has {} addresses; at most two, one per IP family", ips.len()),
            );
            return None;
        }
        let requested: Vec<(String, IpAddr)> = if ips.is_empty() {
            single
                .and_then(|ip| ip.parse().ok())
                .map(|ip| ("spec.clusterIP".to_owned(), ip))
                .into_iter()
                .collect()
        } else {
            ips.iter()
                .enumerate()
                .filter_map(|(i, ip)| Some((format!("spec.clusterIPs[{i}]"), ip.parse().ok()?)))
                .collect()
        };
        if let [(_, first), (field, second)] = requested.as_slice()
            && first.is_ipv4() == second.is_ipv4()
        {
            let family = if first.is_ipv4() { "IPv4" } else { "IPv6" };
            self.error(
                field.as_str(),
                format!("{second} is {family} like spec.clusterIPs[0]; at most one address per IP family"),
            );
            return None;
        }
        Some(requested)
    }

    /// An ExternalName Service has no addresses, so no families either.
    fn external_name_families(&mut self, spec: &ServiceSpec) {
        if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
            self.error("spec.ipFamilies", "may not be set for an ExternalName Service");
        }
        if spec.ip_family_policy.is_some() {
            self.error("spec.ipFamilyPolicy", "may not be set for an ExternalName Service");
        }
    }

    fn service_ports(
        &mut self,
        kind: &str,
        headless: bool,
        ports: &[k8s_openapi::api::core::v1::ServicePort],
    ) {
        let mut names = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for (i, port) in ports.iter().enumerate() {
            let at = |f: &str| format!("spec.ports[{i}].{f}");
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                self.error(at("protocol"), format!("{protocol:?} is not TCP, UDP or SCTP"));
            }
            if !(1..=65535).contains(&port.port) {
                self.error(at("port"), format!("{} is outside 1–65535", port.port));
            } else if !seen.insert((port.port, protocol.to_string())) {
                self.error(at("port"), format!("{}/{protocol} is listed twice", port.port));
            }
            match port.name.as_deref() {
                Some(name) if !name.is_empty() => {
                    if !is_dns_label(name) {
                        self.error(
                            at("name"),
                            format!("{name:?} must be a DNS label (lowercase alphanumerics and '-')"),
                        );
                    } else if !names.insert(name.to_string()) {
                        self.error(at("name"), format!("{name:?} is used by two ports"));
                    }
                }
                _ if ports.len() > 1 => {
                    self.error(at("name"), "required when a Service has more than one port")
                }
                _ => {}
            }
            match &port.target_port {
                Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                    self.error(at("targetPort"), format!("{n} is outside 1–65535"))
                }
                Some(IntOrString::String(s)) if s.parse::<i32>().is_err() && !is_port_name(s) => self.error(
                    at("targetPort"),
                    format!("{s:?} is not a port number or a port name (≤ 15 lowercase alphanumerics and '-', with a letter)"),
                ),
                _ => {}
            }
            if let Some(node_port) = port.node_port.filter(|p| *p != 0) {
                if kind == "ClusterIP" || kind == "ExternalName" || headless {
                    let why =
                        if headless { "a headless Service".to_string() } else { format!("type {kind}") };
                    self.error(
                        at("nodePort"),
                        format!("may not be set for {why}; use type NodePort or LoadBalancer"),
                    );
                } else if !(1..=65535).contains(&node_port) {
                    self.error(at("nodePort"), format!("{node_port} is outside 1–65535"));
                }
            }
        }
    }

    fn endpoint_slice(&mut self, slice: &EndpointSlice) {
        let family = slice.address_type.as_str();
        if !matches!(family, "IPv4" | "IPv6" | "FQDN") {
            self.error("addressType", format!("{family:?} is not IPv4, IPv6 or FQDN"));
        }
        if !slice.metadata.labels.as_ref().is_some_and(|l| l.contains_key(SERVICE_NAME_LABEL)) {
            self.warning(
                format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                "missing: this EndpointSlice belongs to no Service and is not used",
            );
        }
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            if endpoint.addresses.is_empty() {
                self.error(format!("endpoints[{i}].addresses"), "required: at least one address");
            }
            for (j, address) in endpoint.addresses.iter().enumerate() {
                let ok = match family {
                    "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => address.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => is_dns_subdomain(address),
                };
                if !ok {
                    self.error(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{address:?} is not a valid {family} address"),
                    );
                }
            }
        }
        for (i, port) in slice.ports.iter().flatten().enumerate() {
            if let Some(n) = port.port
                && !(1..=65535).contains(&n)
            {
                self.error(format!("ports[{i}].port"), format!("{n} is outside 1–65535"));
            }
        }
    }

    fn pod(&mut self, pod: &Pod) {
        let Some(spec) = &pod.spec else {
            self.error("spec", "required");
            return;
        };
        self.pod_spec("spec", spec);
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
            && ip.parse::<IpAddr>().is_err()
        {
            self.error("status.podIP", format!("{ip:?} is not an IP address"));
        }
        for (i, ip) in pod.status.iter().flat_map(|s| s.pod_ips.iter().flatten()).enumerate() {
            if ip.ip.parse::<IpAddr>().is_err() {
                self.error(format!("status.podIPs[{i}].ip"), format!("{:?} is not an IP address", ip.ip));
            }
        }
    }

    /// A Pod's spec, or a workload's Pod template spec, found at `at`.
    fn pod_spec(&mut self, at: &str, spec: &PodSpec) {
        if spec.containers.is_empty() {
            self.error(format!("{at}.containers"), "required: at least one container");
        }
        let mut names = BTreeSet::new();
        for (c, container) in spec.containers.iter().enumerate() {
            for (i, port) in container.ports.iter().flatten().enumerate() {
                let at = |f: &str| format!("{at}.containers[{c}].ports[{i}].{f}");
                if !(1..=65535).contains(&port.container_port) {
                    self.error(at("containerPort"), format!("{} is outside 1–65535", port.container_port));
                }
                if let Some(hp) = port.host_port.filter(|p| *p != 0)
                    && !(1..=65535).contains(&hp)
                {
                    self.error(at("hostPort"), format!("{hp} is outside 1–65535"));
                }
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                    self.error(at("protocol"), format!("{protocol:?} is not TCP, UDP or SCTP"));
                }
                if let Some(ip) = port.host_ip.as_deref()
                    && !ip.is_empty()
                    && ip.parse::<IpAddr>().is_err()
                {
                    self.error(at("hostIP"), format!("{ip:?} is not an IP address"));
                }
                if let Some(name) = port.name.as_deref() {
                    if !is_port_name(name) {
                        self.error(at("name"), format!("{name:?} is not a valid port name (≤ 15 lowercase alphanumerics and '-', with a letter)"));
                    } else if !names.insert((name.to_string(), protocol.to_string())) {
                        self.error(at("name"), format!("{name:?} is used by two ports of this Pod"));
                    }
                }
            }
        }
        for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
            if let Some(v) = value.as_deref()
                && !is_dns_label(v)
            {
                self.error(format!("{at}.{field}"), format!("{v:?} must be a DNS label"));
            }
        }
    }

    fn workload(&mut self, workload: &Workload) {
        if workload.replicas.is_some_and(|r| r < 0) {
            self.error("spec.replicas", "must not be negative");
        }
        let labels = workload.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        let selector = &workload.selector;
        if selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
            && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        {
            self.error("spec.selector", "required: a label selector matching the Pod template's labels");
        } else {
            match selector_matches(selector, &labels) {
                Ok(true) => {}
                Ok(false) => self.error(
                    "spec.template.metadata.labels",
                    "do not match spec.selector: the controller would never see its own Pods",
                ),
                Err(problem) => self.error("spec.selector", problem),
            }
        }
        match &workload.template.spec {
            Some(spec) => self.pod_spec("spec.template.spec", spec),
            None => self.error("spec.template.spec", "required"),
        }
    }

    fn ingress(&mut self, ingress: &Ingress) {
        let Some(spec) = &ingress.spec else {
            self.error("spec", "required");
            return;
        };
        if spec.rules.as_ref().is_none_or(Vec::is_empty) && spec.default_backend.is_none() {
            self.error("spec", "needs rules or a defaultBackend");
        }
        if let Some(backend) = &spec.default_backend {
            self.backend("spec.defaultBackend", backend);
        }
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty())
                && let Some(problem) = ingress_host_problem(host)
            {
                self.error(format!("spec.rules[{r}].host"), problem);
            }
            let Some(http) = &rule.http else { continue };
            if http.paths.is_empty() {
                self.error(format!("spec.rules[{r}].http.paths"), "required: at least one path");
            }
            for (p, path) in http.paths.iter().enumerate() {
                let at = |f: &str| format!("spec.rules[{r}].http.paths[{p}].{f}");
                match path.path_type.as_str() {
                    "Exact" | "Prefix" | "ImplementationSpecific" => {}
                    "" => self.error(at("pathType"), "required: Exact, Prefix or ImplementationSpecific"),
                    other => self.error(
                        at("pathType"),
                        format!("{other:?} is not Exact, Prefix or ImplementationSpecific"),
                    ),
                }
                match path.path.as_deref() {
                    Some(p) if !p.starts_with('/') => {
                        self.error(at("path"), format!("{p:?} must start with '/'"))
                    }
                    None if path.path_type != "ImplementationSpecific" => {
                        self.error(at("path"), format!("required for pathType {}", path.path_type))
                    }
                    _ => {}
                }
                self.backend(&at("backend"), &path.backend);
            }
        }
        for (t, tls) in spec.tls.iter().flatten().enumerate() {
            for (h, host) in tls.hosts.iter().flatten().enumerate() {
                if let Some(problem) = ingress_host_problem(host) {
                    self.error(format!("spec.tls[{t}].hosts[{h}]"), problem);
                }
            }
        }
    }

    fn backend(&mut self, at: &str, backend: &IngressBackend) {
        match (&backend.service, &backend.resource) {
            (Some(_), Some(_)) => self.error(at, "service and resource are mutually exclusive"),
            (None, None) => self.error(at, "needs a service or a resource"),
            (None, Some(_)) => self.warning(
                format!("{at}.resource"),
                "resource backends are not served by Portico; requests get 503",
            ),
            (Some(service), None) => {
                if service.name.is_empty() {
                    self.error(format!("{at}.service.name"), "required");
                }
                match service.port.as_ref().map(|p| (&p.name, p.number)) {
                    None | Some((None, None)) => {
                        self.error(format!("{at}.service.port"), "required: a number or a name")
                    }
                    Some((Some(_), Some(_))) => {
                        self.error(format!("{at}.service.port"), "name and number are mutually exclusive")
                    }
                    Some((None, Some(n))) if !(1..=65535).contains(&n) => {
                        self.error(format!("{at}.service.port.number"), format!("{n} is outside 1–65535"))
                    }
                    _ => {}
                }
            }
        }
    }

    fn secret(&mut self, secret: &Secret) {
        if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            return;
        }
        for key in ["tls.crt", "tls.key"] {
            if secret_value(secret, key).is_none() {
                self.error(
                    format!("data[{key}]"),
                    format!("required for a Secret of type {TLS_SECRET_TYPE}"),
                );
            }
        }
    }
}

/// A Secret's value for `key`, from `stringData` (which wins, as on the API server) or `data`.
pub fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes())
        .or_else(|| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice()))
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else { return false };
    let Ok(ip) = ip.parse::<IpAddr>() else { return false };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.parse::<u8>().is_ok_and(|l| l <= max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_text;
    use std::path::Path;

    fn findings(yaml: &str) -> Vec<(String, String)> {
        let (objects, diags) = parse_text(Path::new("t.yaml"), yaml);
        assert!(diags.is_empty(), "{diags:?}");
        objects
            .iter()
            .flat_map(|(_, o)| validate(o))
            .map(|d| (d.field.unwrap_or_default(), d.message))
            .collect()
    }

    #[test]
    fn service_port_mistakes() {
        let f = findings(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: ClusterIP\n  ports:\n  - {name: a, port: 70000}\n  - {name: a, port: 80, nodePort: 30001}\n  - {port: 81}\n",
        );
        let fields: Vec<&str> = f.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.ports[0].port", "spec.ports[1].name", "spec.ports[1].nodePort", "spec.ports[2].name"]
        );
    }

    #[test]
    fn node_pod_cidrs_are_cidrs_one_per_family() {
        let f = findings(
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 198.18.9.0/24, podCIDRs: [198.18.1.0/33, 198.18.2.0/24, 'x']}\n",
        );
        let fields: Vec<&str> = f.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.podCIDRs[0]", "spec.podCIDRs[2]", "spec.podCIDRs", "spec.podCIDR"],
            "{f:?}"
        );
        assert!(f[0].1.contains("is not a CIDR"), "{f:?}");
        let fine = findings(
            "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\nspec: {podCIDR: 198.18.1.0/24, podCIDRs: [198.18.1.0/24, '2001:db8:1::/64']}\n",
        );
        assert!(fine.is_empty(), "{fine:?}");
    }

    #[test]
    fn headless_with_node_ports() {
        let f = findings(
            "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  type: NodePort\n  clusterIP: None\n  ports: [{port: 80, nodePort: 30080}]\n",
        );
        assert!(
            f.iter().any(|(field, m)| field == "spec.clusterIP" && m.contains("may not be None")),
            "{f:?}"
        );
        assert!(f.iter().any(|(field, _)| field == "spec.ports[0].nodePort"), "{f:?}");
    }

    #[test]
    fn external_name_must_be_dns() {
        let f = findings(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: 192.0.2.1}\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, "spec.externalName");
        assert!(f[0].1.contains("IP address"));
    }

    #[test]
    fn ingress_path_and_host_mistakes() {
        let f = findings(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: a.example.com:80\n    http:\n      paths:\n      - path: api\n        pathType: Prefix\n        backend: {service: {name: api, port: {number: 80}}}\n  - host: '*.*.example.com'\n    http:\n      paths:\n      - path: /\n        pathType: ''\n        backend: {service: {name: api, port: {number: 80}}}\n",
        );
        let fields: Vec<&str> = f.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[1].host",
                "spec.rules[1].http.paths[0].pathType"
            ]
        );
    }

    #[test]
    fn tls_secret_needs_both_keys() {
        let f = findings(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
        );
        assert_eq!(
            f,
            vec![(
                "data[tls.key]".to_string(),
                "required for a Secret of type kubernetes.io/tls".to_string()
            )]
        );
    }

    #[test]
    fn ip_family_mistakes_that_need_no_cluster() {
        let service = |spec: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec:\n{spec}  ports: [{{port: 80}}]\n"
            )
        };
        let fields = |spec: &str| findings(&service(spec)).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(fields("  ipFamilyPolicy: DualStack\n"), ["spec.ipFamilyPolicy"]);
        assert_eq!(fields("  ipFamilies: [IPv4, IPv6, IPv4]\n"), ["spec.ipFamilies"]);
        assert_eq!(fields("  ipFamilies: [IPv4, ipv6]\n"), ["spec.ipFamilies[1]"]);
        assert_eq!(
            fields("  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv6]\n"),
            ["spec.ipFamilies[1]"]
        );
        assert_eq!(
            fields("  ipFamilyPolicy: SingleStack\n  clusterIPs: [10.0.0.1, 'fd00::1']\n"),
            ["spec.ipFamilyPolicy"]
        );
        assert_eq!(fields("  clusterIP: 10.0.0.1\n  clusterIPs: [10.0.0.2]\n"), ["spec.clusterIPs[0]"]);
        assert_eq!(fields("  clusterIPs: [10.0.0.1, 10.0.0.2]\n"), ["spec.clusterIPs[1]"]);
        assert_eq!(fields("  ipFamilies: [IPv6]\n  clusterIP: 10.0.0.1\n"), ["spec.clusterIP"]);
        // Headless: "None" names no family.
        assert!(fields("  clusterIP: None\n  ipFamilies: [IPv6]\n").is_empty());
        let dual = "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]\n  clusterIPs: ['fd00::1', 10.0.0.1]\n";
        assert!(fields(dual).is_empty());
        let external = "apiVersion: v1\nkind: Service\nmetadata: {name: e}\nspec: {type: ExternalName, externalName: a.example, ipFamilyPolicy: SingleStack}\n";
        assert_eq!(
            findings(external),
            [("spec.ipFamilyPolicy".to_string(), "may not be set for an ExternalName Service".to_string())]
        );
    }

    #[test]
    fn valid_service_has_no_findings() {
        let f = findings(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, protocol: UDP}\n",
        );
        assert!(f.is_empty(), "{f:?}");
    }
}

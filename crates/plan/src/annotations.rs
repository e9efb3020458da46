//! The ingress-nginx annotations users bring with them, read into typed options. Values are
//! parsed and checked here, once, and are never pasted into any configuration text.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Serialize;

use crate::pattern::Pattern;

/// Prefix of every ingress-nginx annotation.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Default cookie name of `affinity: cookie`, as in ingress-nginx.
pub const DEFAULT_AFFINITY_COOKIE: &str = "INGRESSCOOKIE";

/// Behaviour of one Ingress's routes, from its annotations (ingress-nginx defaults otherwise).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressOptions {
    /// `ssl-redirect`: redirect HTTP to HTTPS (308) when the host has TLS; default true.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: redirect to HTTPS even when the host has no TLS of its own.
    pub force_ssl_redirect: bool,
    /// `rewrite-target`: the path sent upstream; `$1`… refer to a regex path's groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite_target: Option<String>,
    /// `use-regex` (implied by `rewrite-target`): ImplementationSpecific paths are regexes.
    pub use_regex: bool,
    /// `backend-protocol`: how the endpoints are spoken to.
    pub backend_protocol: BackendProtocol,
    /// `proxy-body-size`: largest request body in bytes; `None` is unlimited (`0`).
    pub body_limit: Option<u64>,
    /// `proxy-connect-timeout` in seconds.
    pub connect_timeout_seconds: u64,
    /// `proxy-send-timeout` in seconds: longest wait to pass request bytes upstream.
    pub send_timeout_seconds: u64,
    /// `proxy-read-timeout` in seconds: longest wait for response bytes from upstream.
    pub read_timeout_seconds: u64,
    /// `affinity: cookie` and its `session-cookie-*` settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<CookieAffinity>,
    /// `whitelist-source-range` / `allowlist-source-range`: clients allowed; empty allows all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_sources: Vec<IpNet>,
    /// `canary: "true"` and its rules: this Ingress diverts part of another's traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRule>,
}

impl Default for IngressOptions {
    fn default() -> Self {
        IngressOptions {
            ssl_redirect: true,
            force_ssl_redirect: false,
            rewrite_target: None,
            use_regex: false,
            backend_protocol: BackendProtocol::Http,
            body_limit: Some(1024 * 1024),
            connect_timeout_seconds: 5,
            send_timeout_seconds: 60,
            read_timeout_seconds: 60,
            affinity: None,
            allow_sources: Vec::new(),
            canary: None,
        }
    }
}

/// How requests are sent to endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 with keep-alive.
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/1.1 over TLS (the endpoint's certificate is not verified, as in ingress-nginx).
    #[serde(rename = "HTTPS")]
    Https,
    /// gRPC: HTTP/2 without TLS.
    #[serde(rename = "GRPC")]
    Grpc,
    /// gRPC over TLS.
    #[serde(rename = "GRPCS")]
    Grpcs,
}

/// Sticky sessions by cookie.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CookieAffinity {
    /// Cookie name.
    pub name: String,
    /// Cookie `Path`; the matched rule's path when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Cookie `Max-Age` in seconds; a session cookie when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
}

/// When a canary Ingress takes a request instead of the main one. Header beats cookie,
/// cookie beats weight, as in ingress-nginx.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRule {
    /// `canary-by-header`: header whose value `always`/`never` forces the choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `canary-by-header-value`: this exact value (instead of `always`) selects the canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`: values matching this regex select the canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_pattern: Option<Pattern>,
    /// `canary-by-cookie`: cookie whose value `always`/`never` forces the choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// `canary-weight`: share of the remaining requests, out of `weight_total`.
    pub weight: u32,
    /// `canary-weight-total` (default 100).
    pub weight_total: u32,
}

/// A problem with one annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct AnnotationProblem {
    /// The full annotation key.
    pub key: String,
    /// What is wrong and what happens instead.
    pub message: String,
    /// Whether the Ingress is still served as written apart from this annotation.
    pub warning: bool,
}

/// ingress-nginx annotations that inject configuration text; never honoured.
const SNIPPETS: &[&str] = &["configuration-snippet", "server-snippet", "auth-snippet", "stream-snippet"];

/// ingress-nginx annotations understood with this one.
const KNOWN: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "rewrite-target",
    "use-regex",
    "backend-protocol",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-send-timeout",
    "proxy-read-timeout",
    "affinity",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-max-age",
    "whitelist-source-range",
    "allowlist-source-range",
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
];

/// Reads an Ingress's annotations. Values that do not parse keep their default and are
/// reported; annotations of other tools are ignored.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> (IngressOptions, Vec<AnnotationProblem>) {
    let mut reader = Reader { values: BTreeMap::new(), problems: Vec::new() };
    for (key, value) in annotations.into_iter().flatten() {
        let Some(name) = key.strip_prefix(NGINX_PREFIX) else { continue };
        if SNIPPETS.contains(&name) {
            reader.warn(name, "configuration snippets are never applied (Portico has no configuration text to inject into); ignored".into());
        } else if KNOWN.contains(&name) {
            reader.values.insert(name, value.trim());
        } else {
            reader.warn(name, format!("not supported by Portico; ignored (supported: {})", KNOWN.join(", ")));
        }
    }
    let mut o = IngressOptions::default();
    if let Some(v) = reader.boolean("ssl-redirect") {
        o.ssl_redirect = v;
    }
    o.force_ssl_redirect = reader.boolean("force-ssl-redirect").unwrap_or(false);
    o.rewrite_target = reader.text("rewrite-target").map(str::to_owned);
    o.use_regex = reader.boolean("use-regex").unwrap_or(false) || o.rewrite_target.is_some();
    if let Some(p) = reader.parsed("backend-protocol", "one of HTTP, HTTPS, GRPC, GRPCS", |v| {
        match v.to_ascii_uppercase().as_str() {
            "HTTP" => Some(BackendProtocol::Http),
            "HTTPS" => Some(BackendProtocol::Https),
            "GRPC" => Some(BackendProtocol::Grpc),
            "GRPCS" => Some(BackendProtocol::Grpcs),
            _ => None,
        }
    }) {
        o.backend_protocol = p;
    }
    if let Some(size) =
        reader.parsed("proxy-body-size", "a size such as 8m, 512k, 1g or 0 (unlimited)", parse_size)
    {
        o.body_limit = (size > 0).then_some(size);
    }
    for (name, field) in [
        ("proxy-connect-timeout", &mut o.connect_timeout_seconds),
        ("proxy-send-timeout", &mut o.send_timeout_seconds),
        ("proxy-read-timeout", &mut o.read_timeout_seconds),
    ] {
        if let Some(seconds) =
            reader.parsed(name, "whole seconds from 1 to 86400, such as 30 or 30s", parse_seconds)
        {
            *field = seconds;
        }
    }
    o.affinity = reader.affinity();
    o.allow_sources = reader.sources();
    o.canary = reader.canary();
    (o, reader.problems)
}

struct Reader<'a> {
    values: BTreeMap<&'a str, &'a str>,
    problems: Vec<AnnotationProblem>,
}

impl<'a> Reader<'a> {
    fn problem(&mut self, name: &str, message: String, warning: bool) {
        self.problems.push(AnnotationProblem { key: format!("{NGINX_PREFIX}{name}"), message, warning });
    }

    fn warn(&mut self, name: &str, message: String) {
        self.problem(name, message, true);
    }

    fn text(&self, name: &str) -> Option<&'a str> {
        self.values.get(name).copied().filter(|v| !v.is_empty())
    }

    /// The value of `name` read by `parse`; a value that does not parse is an error
    /// saying what was `expected`, and `None` is returned.
    fn parsed<T>(&mut self, name: &str, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        let value = self.text(name)?;
        let out = parse(value);
        if out.is_none() {
            self.problem(name, format!("{value:?} is not {expected}; the default applies"), false);
        }
        out
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        self.parsed(name, "true or false", |v| match v.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    fn affinity(&mut self) -> Option<CookieAffinity> {
        let kind = self.text("affinity")?;
        if kind != "cookie" {
            self.problem(
                "affinity",
                format!("{kind:?} is not a supported affinity (only \"cookie\")"),
                false,
            );
            return None;
        }
        let name = self.text("session-cookie-name").unwrap_or(DEFAULT_AFFINITY_COOKIE);
        let valid_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            self.problem(
                "session-cookie-name",
                format!("{name:?} is not a cookie name (letters, digits, - _ .)"),
                false,
            );
        }
        let path = self.text("session-cookie-path").map(str::to_owned);
        if path.as_deref().is_some_and(|p| !p.starts_with('/') || p.contains([';', ',', ' '])) {
            self.problem("session-cookie-path", "must start with / and hold no ; , or spaces".into(), false);
            return None;
        }
        let max_age_seconds =
            self.parsed("session-cookie-max-age", "a whole number of seconds", |v| v.parse::<u64>().ok());
        let name = if valid_name { name } else { DEFAULT_AFFINITY_COOKIE };
        Some(CookieAffinity { name: name.to_owned(), path, max_age_seconds })
    }

    fn sources(&mut self) -> Vec<IpNet> {
        let names = ["allowlist-source-range", "whitelist-source-range"];
        let Some((name, value)) = names.iter().find_map(|n| self.text(n).map(|v| (*n, v))) else {
            return Vec::new();
        };
        let mut nets = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<IpNet>().or_else(|_| part.parse::<std::net::IpAddr>().map(IpNet::from)) {
                Ok(net) => nets.push(net),
                Err(_) => {
                    // Failing open would expose what the list protects: deny everyone instead.
                    self.problem(
                        name,
                        format!("{part:?} is not a CIDR; every client is refused (403) until it is fixed"),
                        false,
                    );
                    return vec![deny_all()];
                }
            }
        }
        nets
    }

    fn canary(&mut self) -> Option<CanaryRule> {
        if !self.boolean("canary").unwrap_or(false) {
            for name in KNOWN.iter().filter(|n| n.starts_with("canary-")) {
                if self.text(name).is_some() {
                    self.warn(
                        name,
                        "has no effect without nginx.ingress.kubernetes.io/canary: \"true\"".into(),
                    );
                }
            }
            return None;
        }
        let weight_total = self.parsed("canary-weight-total", "a whole number from 1", |v| {
            v.parse::<u32>().ok().filter(|n| *n > 0)
        });
        let weight_total = weight_total.unwrap_or(100);
        let weight = self
            .parsed("canary-weight", &format!("a whole number from 0 to {weight_total}"), |v| {
                v.parse::<u32>().ok().filter(|n| *n <= weight_total)
            })
            .unwrap_or(0);
        let header_pattern = self.parsed("canary-by-header-pattern", "a regular expression", |v| {
            Pattern::new(&format!("^(?:{v})$")).ok()
        });
        Some(CanaryRule {
            header: self.text("canary-by-header").map(str::to_owned),
            header_value: self.text("canary-by-header-value").map(str::to_owned),
            header_pattern,
            cookie: self.text("canary-by-cookie").map(str::to_owned),
            weight,
            weight_total,
        })
    }
}

/// A range no client address falls in (`::/128`): the allow-list of an unreadable annotation.
fn deny_all() -> IpNet {
    IpNet::V6(ipnet::Ipv6Net::from(std::net::Ipv6Addr::UNSPECIFIED))
}

/// An nginx size: bytes, or with a k/m/g suffix (either case).
fn parse_size(v: &str) -> Option<u64> {
    let (digits, unit) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Whole seconds, bare or with an `s` suffix, from 1 to a day.
fn parse_seconds(v: &str) -> Option<u64> {
    v.strip_suffix('s').unwrap_or(v).parse::<u64>().ok().filter(|s| (1..=86_400).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (IngressOptions, Vec<AnnotationProblem>) {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), (*v).to_owned())).collect();
        parse(Some(&map))
    }

    #[test]
    fn defaults_are_ingress_nginx_defaults() {
        let (o, problems) = parse(None);
        assert!(problems.is_empty());
        assert_eq!(o, IngressOptions::default());
        assert!(o.ssl_redirect && !o.force_ssl_redirect);
        assert_eq!(o.body_limit, Some(1 << 20));
        assert_eq!((o.connect_timeout_seconds, o.read_timeout_seconds), (5, 60));
    }

    #[test]
    fn typed_values() {
        let (o, problems) = read(&[
            ("ssl-redirect", "false"),
            ("force-ssl-redirect", "True"),
            ("rewrite-target", "/$2"),
            ("backend-protocol", "grpc"),
            ("proxy-body-size", "8m"),
            ("proxy-read-timeout", "3600"),
            ("proxy-connect-timeout", "2s"),
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-max-age", "172800"),
            ("whitelist-source-range", "10.0.0.0/8, 192.168.1.1"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!o.ssl_redirect && o.force_ssl_redirect && o.use_regex);
        assert_eq!(o.rewrite_target.as_deref(), Some("/$2"));
        assert_eq!(o.backend_protocol, BackendProtocol::Grpc);
        assert_eq!(o.body_limit, Some(8 << 20));
        assert_eq!((o.read_timeout_seconds, o.connect_timeout_seconds), (3600, 2));
        let affinity = o.affinity.expect("affinity");
        assert_eq!((affinity.name.as_str(), affinity.max_age_seconds), ("route", Some(172_800)));
        assert_eq!(o.allow_sources.len(), 2);
        assert_eq!(read(&[("proxy-body-size", "0")]).0.body_limit, None);
    }

    #[test]
    fn bad_values_are_errors_and_keep_defaults() {
        let (o, problems) = read(&[
            ("ssl-redirect", "yes"),
            ("backend-protocol", "FCGI"),
            ("proxy-body-size", "8 MB"),
            ("proxy-read-timeout", "0"),
        ]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| !p.warning));
        assert!(problems.iter().any(|p| p.key.ends_with("backend-protocol") && p.message.contains("FCGI")));
        assert!(o.ssl_redirect);
        assert_eq!(o.backend_protocol, BackendProtocol::Http);
    }

    #[test]
    fn an_unreadable_allow_list_denies_everyone() {
        let (o, problems) = read(&[("whitelist-source-range", "10.0.0.0/8,not-a-cidr")]);
        assert_eq!(problems.len(), 1);
        assert!(!o.allow_sources.is_empty());
        let client: std::net::IpAddr = "10.1.2.3".parse().expect("address");
        assert!(!o.allow_sources.iter().any(|n| n.contains(&client)));
    }

    #[test]
    fn unknown_and_snippet_annotations_warn() {
        let (_, problems) =
            read(&[("configuration-snippet", "more_set_headers x;"), ("enable-cors", "true")]);
        assert_eq!(problems.len(), 2);
        assert!(problems.iter().all(|p| p.warning));
        assert!(problems[0].message.contains("never applied"));
        assert!(problems[1].key.ends_with("enable-cors") && problems[1].message.contains("not supported"));
    }

    #[test]
    fn canary_rules() {
        let (o, problems) = read(&[
            ("canary", "true"),
            ("canary-weight", "30"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-pattern", "beta|alpha"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let c = o.canary.expect("canary");
        assert_eq!((c.weight, c.weight_total), (30, 100));
        let pattern = c.header_pattern.expect("pattern");
        assert!(pattern.is_match("beta") && !pattern.is_match("betamax"));
        let (o, problems) = read(&[("canary", "true"), ("canary-weight", "130")]);
        assert_eq!(o.canary.map(|c| c.weight), Some(0));
        assert_eq!(problems.len(), 1);
        let (o, problems) = read(&[("canary-weight", "30")]);
        assert!(o.canary.is_none());
        assert!(problems[0].warning && problems[0].message.contains("without"));
    }
}

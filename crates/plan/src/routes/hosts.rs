//! Host names as routes see them: the normal form of a `Host`, the three kinds of host a
//! virtual host can serve, and the choice between them (exact, then wildcard, then any).

use std::borrow::Cow;
use std::collections::BTreeMap;

/// The host names of a virtual host: one name, a one-label wildcard, or every host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostName<'a> {
    /// Exactly this name.
    Exact(&'a str),
    /// `*.` followed by this suffix.
    Wildcard(&'a str),
    /// Every host.
    Any,
}

impl std::fmt::Display for HostName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostName::Exact(name) => f.write_str(name),
            HostName::Wildcard(suffix) => write!(f, "*.{suffix}"),
            HostName::Any => f.write_str("*"),
        }
    }
}

/// Virtual hosts of one kind of value by the host names they serve.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hosts<V> {
    /// Hosts named exactly, lowercase.
    pub exact: BTreeMap<String, V>,
    /// Wildcard hosts by the suffix after `*.` (`*.foo.com` is stored as `foo.com`).
    pub wildcard: BTreeMap<String, V>,
    /// What serves every other host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any: Option<V>,
}

impl<V> Default for Hosts<V> {
    fn default() -> Self {
        Hosts { exact: BTreeMap::new(), wildcard: BTreeMap::new(), any: None }
    }
}

impl<V> Hosts<V> {
    /// What a `Host` header selects: the exact name, then a one-label wildcard, then any.
    pub fn get(&self, host: &str) -> Option<&V> {
        pick(&self.exact, &self.wildcard, self.any.as_ref(), host)
    }

    /// Every entry with its host names: exact names, wildcards, then any.
    pub fn iter(&self) -> impl Iterator<Item = (HostName<'_>, &V)> {
        let exact = self.exact.iter().map(|(h, v)| (HostName::Exact(h.as_str()), v));
        let wildcard = self.wildcard.iter().map(|(s, v)| (HostName::Wildcard(s.as_str()), v));
        exact.chain(wildcard).chain(self.any.iter().map(|v| (HostName::Any, v)))
    }

    /// Puts `value` under `name`, replacing what was there.
    pub fn insert(&mut self, name: HostName<'_>, value: V) {
        match name {
            HostName::Exact(host) => {
                self.exact.insert(host.to_owned(), value);
            }
            HostName::Wildcard(suffix) => {
                self.wildcard.insert(suffix.to_owned(), value);
            }
            HostName::Any => self.any = Some(value),
        }
    }
}

/// The entry a `Host` header selects among exact names, wildcards (by suffix) and any host.
pub(crate) fn pick<'v, V>(
    exact: &'v BTreeMap<String, V>,
    wildcard: &'v BTreeMap<String, V>,
    any: Option<&'v V>,
    host: &str,
) -> Option<&'v V> {
    let host = normalize_host(host);
    if let Some(v) = exact.get(host.as_ref()) {
        return Some(v);
    }
    if let Some((_, suffix)) = host.split_once('.')
        && let Some(v) = wildcard.get(suffix)
    {
        return Some(v);
    }
    any
}

/// Lowercase, without `:port` and without a trailing dot (borrowed when already so).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    plain_host(host).map_or_else(|| normal_host(host), Into::into)
}

/// The normal form of a host, made step by step.
fn normal_host(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        host.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(host)
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) { host.to_ascii_lowercase().into() } else { host.into() }
}

/// The common case, found in one pass over the bytes: a name, maybe with `:port`, without IPv6
/// brackets, a final dot or upper case. Its normal form is the name as it is; `None` for the
/// rest, which `normal_host` handles.
fn plain_host(host: &str) -> Option<&str> {
    let bytes = host.as_bytes();
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b':' if bytes[i + 1..].iter().all(u8::is_ascii_digit) => {
                end = i;
                break;
            }
            b':' | b'[' => return None,
            b if b.is_ascii_uppercase() => return None,
            _ => {}
        }
    }
    let name = &host[..end];
    (!name.ends_with('.')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Example.COM:443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("example.com"), "example.com");
    }

    #[test]
    fn the_most_specific_host_wins() {
        let mut hosts = Hosts::default();
        hosts.insert(HostName::Exact("a.example.com"), "exact");
        hosts.insert(HostName::Wildcard("example.com"), "wildcard");
        hosts.insert(HostName::Any, "any");
        assert_eq!(hosts.get("A.Example.com:8080"), Some(&"exact"));
        assert_eq!(hosts.get("b.example.com."), Some(&"wildcard"));
        assert_eq!(hosts.get("c.b.example.com"), Some(&"any"), "a wildcard covers one label");
        assert_eq!(hosts.get("example.com"), Some(&"any"), "a wildcard needs its label");
        hosts.any = None;
        assert_eq!(hosts.get("other.test"), None);
        let names: Vec<String> = hosts.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(names, ["a.example.com", "*.example.com"]);
    }

    proptest::proptest! {
        /// What the one-pass check makes of a plain host is what the step-by-step
        /// normalisation makes of it, over hosts made of the characters that matter.
        #[test]
        fn the_quick_form_of_a_plain_host_is_its_normal_form(host in "[a-zA-Z0-9.:\\[\\]]{0,12}") {
            if let Some(quick) = plain_host(&host) {
                let normal = normal_host(&host);
                proptest::prop_assert_eq!(quick, normal.as_ref());
            }
        }
    }
}

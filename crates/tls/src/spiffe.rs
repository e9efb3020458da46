//! Workload identities as SPIFFE IDs (the SPIFFE-ID specification): `spiffe://` and a trust
//! domain, then a path; a Kubernetes workload's is its ServiceAccount's,
//! `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, as Istio and Linkerd write
//! it, so that identities read the same across meshes.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID the specification allows, in bytes.
const MAX_LEN: usize = 2048;
/// The longest trust domain, in bytes.
const MAX_TRUST_DOMAIN: usize = 255;

/// A SPIFFE ID: a trust domain and a path of segments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    /// The path without its leading `/`; empty for the trust domain's own ID.
    path: String,
}

/// Why a text is not a SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a SPIFFE ID: {reason}")]
pub struct InvalidSpiffeId {
    /// The text.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SpiffeId {
    /// The identity of a Kubernetes ServiceAccount: `/ns/NAMESPACE/sa/NAME`.
    pub fn service_account(trust_domain: &str, namespace: &str, name: &str) -> Result<Self, InvalidSpiffeId> {
        let text = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{name}");
        let id: SpiffeId = text.parse()?;
        // A '/' in a name would make another identity's path.
        match id.service_account_of() == Some((namespace, name)) {
            true => Ok(id),
            false => Err(InvalidSpiffeId { text, reason: "a namespace or ServiceAccount name holds a '/'" }),
        }
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path, with its leading `/` (empty for the trust domain's own ID).
    pub fn path(&self) -> String {
        if self.path.is_empty() { String::new() } else { format!("/{}", self.path) }
    }

    /// The namespace and ServiceAccount of a `/ns/NAMESPACE/sa/NAME` identity.
    pub fn service_account_of(&self) -> Option<(&str, &str)> {
        let mut segments = self.path.split('/');
        match (segments.next(), segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(namespace), Some("sa"), Some(name), None) => Some((namespace, name)),
            _ => None,
        }
    }
}

impl FromStr for SpiffeId {
    type Err = InvalidSpiffeId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidSpiffeId { text: text.to_owned(), reason };
        if text.len() > MAX_LEN {
            return Err(invalid("longer than 2048 bytes"));
        }
        let rest = text.strip_prefix("spiffe://").ok_or_else(|| invalid("the scheme is not spiffe://"))?;
        let (trust_domain, path) = match rest.split_once('/') {
            Some((domain, path)) => (domain, Some(path)),
            None => (rest, None),
        };
        if trust_domain.is_empty() {
            return Err(invalid("the trust domain is empty"));
        }
        if trust_domain.len() > MAX_TRUST_DOMAIN {
            return Err(invalid("the trust domain is longer than 255 bytes"));
        }
        // Lowercase letters, digits, dots, dashes and underscores: no port, no user info.
        if !trust_domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(invalid("the trust domain has a character other than a-z, 0-9, '.', '-' and '_'"));
        }
        let path = path.unwrap_or_default();
        if rest.contains('/') && path.is_empty() {
            return Err(invalid("the path ends with '/'"));
        }
        for segment in path.split('/').filter(|_| !path.is_empty()) {
            if segment.is_empty() {
                return Err(invalid("the path has an empty segment"));
            }
            if segment == "." || segment == ".." {
                return Err(invalid("the path has a '.' or '..' segment"));
            }
            if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return Err(invalid("the path has a character other than letters, digits, '.', '-' and '_'"));
            }
        }
        Ok(SpiffeId { trust_domain: trust_domain.to_owned(), path: path.to_owned() })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_service_accounts_identity_reads_back() {
        let id = SpiffeId::service_account("cluster.local", "shop", "web").unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.service_account_of(), Some(("shop", "web")));
        let parsed: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
        assert_eq!(parsed, id);
        let domain: SpiffeId = "spiffe://example.org".parse().unwrap();
        assert_eq!((domain.path(), domain.service_account_of()), (String::new(), None));
        let other: SpiffeId = "spiffe://example.org/workload/api".parse().unwrap();
        assert_eq!(other.service_account_of(), None);
    }

    #[test]
    fn what_the_specification_refuses_is_refused_by_reason() {
        for (text, reason) in [
            ("http://cluster.local/ns/a/sa/b", "scheme"),
            ("spiffe:///ns/a/sa/b", "trust domain is empty"),
            ("spiffe://Cluster.local/ns/a", "trust domain has a character"),
            ("spiffe://cluster.local:8080/ns/a", "trust domain has a character"),
            ("spiffe://user@cluster.local/ns/a", "trust domain has a character"),
            ("spiffe://cluster.local/", "ends with '/'"),
            ("spiffe://cluster.local/ns//sa", "empty segment"),
            ("spiffe://cluster.local/ns/../sa", "'.' or '..'"),
            ("spiffe://cluster.local/ns/a b", "character other than letters"),
            ("spiffe://cluster.local/ns/%41", "character other than letters"),
        ] {
            let error = text.parse::<SpiffeId>().unwrap_err();
            assert!(error.reason.contains(reason), "{text}: {error}");
        }
        let long = format!("spiffe://cluster.local/{}", "a".repeat(2048));
        assert!(long.parse::<SpiffeId>().is_err());
        assert!(
            SpiffeId::service_account("cluster.local", "Shop", "web").is_ok(),
            "namespaces are checked elsewhere"
        );
        assert!(SpiffeId::service_account("cluster.local", "shop", "w/eb").is_err());
    }
}

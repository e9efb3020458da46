//! Name rules of the Kubernetes API (DNS labels, subdomains, port names, Ingress hosts).

use std::net::IpAddr;

/// An RFC 1123 label: 1–63 lowercase alphanumerics or `-`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1035 label (Service names): a DNS label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// An RFC 1123 subdomain: dot-separated DNS labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// An IANA service name (named ports): ≤ 15 lowercase alphanumerics or `-`, at least one
/// letter, no leading, trailing or doubled `-`.
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Why an Ingress host is not acceptable, or `None` when it is.
///
/// Hosts are DNS names, never IPs, never with a port; a wildcard is only `*.` as the whole
/// first label.
pub fn ingress_host_problem(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return Some(format!("{host:?} is an IP address; Ingress hosts must be DNS names"));
    }
    if host.contains(':') {
        return Some(format!("{host:?} has a port; Ingress hosts carry no port"));
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Some(format!(
            "{host:?} is not a valid wildcard: `*` may only be the whole first label, as in *.example.com"
        ));
    }
    if !is_dns_subdomain(rest) {
        return Some(format!("{host:?} is not a lowercase DNS name (RFC 1123)"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns1035_label("web"));
        assert!(!is_dns1035_label("1web"));
        assert!(is_dns_subdomain("api.example.com"));
        assert!(!is_dns_subdomain("api..example.com"));
    }

    #[test]
    fn port_names() {
        assert!(is_port_name("http"));
        assert!(is_port_name("h2c-8080"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("http--alt"));
        assert!(!is_port_name("a-very-long-port-name"));
    }

    #[test]
    fn ingress_hosts() {
        assert_eq!(ingress_host_problem("foo.bar.com"), None);
        assert_eq!(ingress_host_problem("*.foo.com"), None);
        assert!(ingress_host_problem("foo.com:8080").is_some());
        assert!(ingress_host_problem("10.0.0.1").is_some());
        assert!(ingress_host_problem("foo.*.com").is_some());
        assert!(ingress_host_problem("*foo.com").is_some());
        assert!(ingress_host_problem("*").is_some());
        assert!(ingress_host_problem("Foo.com").is_some());
    }
}

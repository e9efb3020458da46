//! Server-side search (what CoreDNS's `autopath` does, from the Plan's Pods): a Pod's resolver
//! tries `<name>.<its namespace>.svc.<zone>` first (ndots:5), and when that name does not
//! exist the server walks the rest of the Pod's search path itself and answers with a CNAME to
//! the first name that has records, so one query replaces up to a dozen. It must stay off when
//! clients reach the server through SNAT: the client address would not be the Pod's.

/// The names to try, in order, when a Pod of `namespace` asks for `name` (lower-case, no
/// trailing dot): the rest of its search path (`svc.<zone>`, `<zone>`, the host's search
/// domains), then the bare name. `None` when `name` is not `<x>.<namespace>.svc.<zone>`.
pub fn candidates(name: &str, namespace: &str, zone: &str, host_domains: &[String]) -> Option<Vec<String>> {
    let x = name.strip_suffix(&format!(".{namespace}.svc.{zone}")).filter(|x| !x.is_empty())?;
    let mut names = vec![format!("{x}.svc.{zone}"), format!("{x}.{zone}")];
    names.extend(host_domains.iter().map(|domain| format!("{x}.{}", domain.trim_end_matches('.'))));
    names.push(x.to_owned());
    Some(names)
}

/// The search domains of a resolv.conf text (its last `search` line, as the resolver reads it).
pub fn resolv_conf_domains(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("search"))
        .rfind(|rest| rest.starts_with(char::is_whitespace))
        .map(|rest| rest.split_whitespace().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_domains_of_resolv_conf() {
        let text =
            "search old.example\nnameserver 127.0.0.53\nsearch Corp.Example. lab.example\nsearchx no\n";
        assert_eq!(resolv_conf_domains(text), ["corp.example", "lab.example"]);
        assert!(resolv_conf_domains("nameserver 127.0.0.53\n").is_empty());
    }

    #[test]
    fn the_rest_of_the_search_path_then_the_bare_name() {
        let domains = vec!["corp.example.".to_owned()];
        assert_eq!(
            candidates("web.other.default.svc.cluster.local", "default", "cluster.local", &domains),
            Some(vec![
                "web.other.svc.cluster.local".to_owned(),
                "web.other.cluster.local".to_owned(),
                "web.other.corp.example".to_owned(),
                "web.other".to_owned(),
            ])
        );
        assert_eq!(candidates("web.default.svc.cluster.local", "other", "cluster.local", &domains), None);
        assert_eq!(candidates("default.svc.cluster.local", "default", "cluster.local", &domains), None);
    }
}

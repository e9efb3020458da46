//! What a route does to a request besides sending it on: answer with a redirect, rewrite the
//! path sent upstream, change request or response headers.

use std::borrow::Cow;

use serde::Serialize;

use super::hosts::normalize_host;
use super::matching::prefix_matches;
use crate::pattern::Pattern;

/// One change a route makes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Filter {
    /// Answer with a redirect instead of forwarding.
    RequestRedirect(RequestRedirect),
    /// Send another path upstream.
    UrlRewrite(PathRewrite),
    /// Change the headers sent upstream.
    RequestHeaders(HeaderModifier),
    /// Change the headers sent back to the client.
    ResponseHeaders(HeaderModifier),
}

/// A redirect answered in place of the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    /// The scheme of the location (`https`); the request's when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The port of the location, left out when it is the scheme's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The status: 301, 302, 303, 307 or 308.
    pub status: u16,
}

impl RequestRedirect {
    /// The location for a request to `host` (as sent) with `path` and `query` as sent.
    pub fn location(&self, request_scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(request_scheme);
        let bare = normalize_host(host);
        let bare = if bare.contains(':') { format!("[{bare}]") } else { bare.into_owned() };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = match self.port {
            Some(port) if port != default_port => format!("{bare}:{port}"),
            _ => bare,
        };
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme}://{authority}{path}{query}")
    }
}

/// How the path sent upstream is made from the request's.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathRewrite {
    /// This path instead, whatever was asked.
    ReplaceFullPath(String),
    /// The matched prefix replaced, the rest of the path kept.
    ReplacePrefixMatch {
        /// The route's prefix.
        prefix: String,
        /// What takes its place.
        replacement: String,
    },
    /// The template with `$1`, `${name}`… taken from the pattern's groups in the path
    /// (ingress-nginx's `rewrite-target` on a regex path); made absolute when it is not.
    Captures {
        /// The route's path pattern.
        pattern: Pattern,
        /// The path template.
        template: String,
    },
}

impl PathRewrite {
    /// The path to send upstream for `path` (normalised, without query).
    pub fn apply<'p>(&self, path: &'p str) -> Cow<'p, str> {
        match self {
            PathRewrite::ReplaceFullPath(target) => target.clone().into(),
            PathRewrite::ReplacePrefixMatch { prefix, replacement } => {
                if !prefix_matches(prefix, path) {
                    return path.into();
                }
                let rest = &path[prefix.trim_end_matches('/').len()..];
                let out = format!("{}{rest}", replacement.trim_end_matches('/'));
                if out.is_empty() { "/".into() } else { out.into() }
            }
            PathRewrite::Captures { pattern, template } => expand_captures(pattern, template, path).into(),
        }
    }
}

/// `template` with `$1`, `${name}`… taken from `pattern`'s groups in `path`, made absolute;
/// the template as it is when the pattern does not match.
pub(crate) fn expand_captures(pattern: &Pattern, template: &str, path: &str) -> String {
    let Some(captures) = pattern.regex().captures(path) else { return template.to_owned() };
    let mut out = String::new();
    captures.expand(template, &mut out);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Header changes: set (replacing), add (appending), remove, in that order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Headers given this one value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Values appended to what is there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Headers taken out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// Applies the changes to a list of fields (names compared in any case).
    pub fn apply(&self, fields: &mut Vec<(String, String)>) {
        for (name, value) in &self.set {
            fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            fields.push((name.clone(), value.clone()));
        }
        fields.extend(self.add.iter().cloned());
        fields.retain(|(n, _)| !self.remove.iter().any(|r| r.eq_ignore_ascii_case(n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations() {
        let https = |port| RequestRedirect { scheme: Some("https".into()), port, status: 308 };
        assert_eq!(
            https(Some(443)).location("http", "Shop.Test:80", "/a b", Some("q=1")),
            "https://shop.test/a b?q=1"
        );
        assert_eq!(https(Some(8443)).location("http", "[::1]:80", "/", None), "https://[::1]:8443/");
        let same = RequestRedirect { scheme: None, port: None, status: 301 };
        assert_eq!(same.location("http", "a.test", "/x", None), "http://a.test/x");
    }

    #[test]
    fn path_rewrites() {
        let full = PathRewrite::ReplaceFullPath("/new".into());
        assert_eq!(full.apply("/old/x"), "/new");
        let prefix =
            |p: &str, r: &str| PathRewrite::ReplacePrefixMatch { prefix: p.into(), replacement: r.into() };
        assert_eq!(prefix("/api/", "/v2").apply("/api/users"), "/v2/users");
        assert_eq!(prefix("/api", "/").apply("/api"), "/");
        assert_eq!(prefix("/api", "/").apply("/api/x"), "/x");
        assert_eq!(prefix("/api", "/v2").apply("/apix"), "/apix", "not under the prefix: kept");
        let pattern = Pattern::new("(?i)^(?:/something(/|$)(.*))").expect("regex");
        let captures = PathRewrite::Captures { pattern, template: "$2".into() };
        assert_eq!(captures.apply("/something/new/path"), "/new/path");
        assert_eq!(captures.apply("/something"), "/");
    }

    #[test]
    fn header_changes() {
        let mut fields = vec![("Accept".into(), "*/*".into()), ("X-Debug".into(), "1".into())];
        let modifier = HeaderModifier {
            set: vec![("accept".into(), "text/html".into())],
            add: vec![("Via".into(), "portico".into())],
            remove: vec!["x-debug".into()],
        };
        modifier.apply(&mut fields);
        let want: Vec<(String, String)> =
            vec![("accept".into(), "text/html".into()), ("Via".into(), "portico".into())];
        assert_eq!(fields, want);
    }
}

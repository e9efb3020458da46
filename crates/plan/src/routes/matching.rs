//! When a route takes a request: its path, header, cookie, query and method conditions, all
//! of which must hold, read from whatever the data plane parsed through [`Request`].

use serde::Serialize;

use crate::pattern::Pattern;

/// What matching reads of a request; the data plane implements it over its parsed head.
pub trait Request {
    /// The path in its normal form, without query or fragment.
    fn path(&self) -> &str;
    /// The method, as sent (methods are case-sensitive).
    fn method(&self) -> &str;
    /// The first value of header `name` (any case).
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str>;
    /// The value of the first cookie called `name`.
    fn cookie(&self, name: &str) -> Option<&str>;
    /// The query string, without its `?`.
    fn query(&self) -> Option<&str>;
}

/// One set of conditions, all required.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The path condition.
    pub path: PathMatch,
    /// Headers, by their first value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NamedMatch>,
    /// Cookies, by the first cookie of each name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<NamedMatch>,
    /// Query parameters, by the first parameter of each name, compared as sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<NamedMatch>,
    /// The method, when only one is taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl RouteMatch {
    /// Conditions on the path alone.
    pub fn path(path: PathMatch) -> Self {
        RouteMatch { path, headers: Vec::new(), cookies: Vec::new(), query: Vec::new(), method: None }
    }

    /// Whether `request` meets every condition.
    pub fn matches(&self, request: &impl Request) -> bool {
        self.path.matches(request.path())
            && self.method.as_deref().is_none_or(|m| m == request.method())
            && self.headers.iter().all(|h| h.value.holds(request.header(&h.name)))
            && self.cookies.iter().all(|c| c.value.holds(request.cookie(&c.name)))
            && self.query.iter().all(|q| q.value.holds(request.query().and_then(|s| parameter(s, &q.name))))
    }
}

/// How a path is compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum PathMatch {
    /// The whole path, case-sensitive.
    Exact(String),
    /// Element-wise prefix on `/`, trailing slashes ignored.
    Prefix(String),
    /// A regex, searched in the path: anchor it to match from the start.
    Regex(Pattern),
}

impl PathMatch {
    /// Whether a request path (normalised, without query) matches.
    // Tried for every route on the way to a request's: inlined into the data plane's matcher.
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(rule) => rule == path,
            PathMatch::Prefix(rule) => prefix_matches(rule, path),
            PathMatch::Regex(pattern) => pattern.is_match(path),
        }
    }
}

/// Element-wise prefix: `/foo` takes `/foo` and `/foo/bar` but not `/foobar`.
#[inline]
pub fn prefix_matches(rule: &str, path: &str) -> bool {
    let rule = rule.trim_end_matches('/');
    rule.is_empty()
        || path == rule
        || (path.len() > rule.len() && path.starts_with(rule) && path.as_bytes()[rule.len()] == b'/')
}

/// A condition on one named value of a request (a header, a cookie, a query parameter).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedMatch {
    /// The name.
    pub name: String,
    /// What its value must be.
    pub value: ValueMatch,
}

/// How a value is compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ValueMatch {
    /// Equal, byte for byte.
    Exact(String),
    /// The regex is found in the value.
    Regex(Pattern),
}

impl ValueMatch {
    /// Whether a value is present and meets the condition.
    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueMatch::Exact(want), Some(value)) => want == value,
            (ValueMatch::Regex(pattern), Some(value)) => pattern.is_match(value),
            (_, None) => false,
        }
    }
}

/// The value of the first parameter called `name` in a query string (empty when it has no `=`).
fn parameter<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request for tests: its path, method, headers, cookies and query.
    #[derive(Default)]
    pub(crate) struct Sample {
        pub path: String,
        pub method: String,
        pub headers: Vec<(String, String)>,
        pub cookies: Vec<(String, String)>,
        pub query: Option<String>,
    }

    impl Sample {
        pub(crate) fn get(path: &str) -> Self {
            Sample { path: path.into(), method: "GET".into(), ..Sample::default() }
        }

        pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }

        pub(crate) fn cookie(mut self, name: &str, value: &str) -> Self {
            self.cookies.push((name.into(), value.into()));
            self
        }
    }

    impl Request for Sample {
        fn path(&self) -> &str {
            &self.path
        }
        fn method(&self) -> &str {
            &self.method
        }
        fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
        fn cookie(&self, name: &str) -> Option<&str> {
            self.cookies.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        }
        fn query(&self) -> Option<&str> {
            self.query.as_deref()
        }
    }

    fn named(name: &str, value: ValueMatch) -> NamedMatch {
        NamedMatch { name: name.into(), value }
    }

    #[test]
    fn path_kinds() {
        let exact = PathMatch::Exact("/foo".into());
        assert!(exact.matches("/foo") && !exact.matches("/foo/") && !exact.matches("/Foo"));
        let prefix = PathMatch::Prefix("/foo/".into());
        assert!(prefix.matches("/foo") && prefix.matches("/foo/bar") && !prefix.matches("/foobar"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
        let regex = PathMatch::Regex(Pattern::new("(?i)^(?:/api/v[0-9]+)").expect("regex"));
        assert!(regex.matches("/API/v2/users") && !regex.matches("/x/api/v2"));
    }

    #[test]
    fn every_condition_must_hold() {
        let mut rule = RouteMatch::path(PathMatch::Prefix("/".into()));
        rule.method = Some("POST".into());
        rule.headers.push(named("X-Env", ValueMatch::Exact("beta".into())));
        rule.cookies.push(named("flag", ValueMatch::Regex(Pattern::new("^on$").expect("regex"))));
        rule.query.push(named("v", ValueMatch::Exact("2".into())));
        let full = || {
            let mut r = Sample::get("/x").header("x-env", "beta").cookie("flag", "on");
            r.method = "POST".into();
            r.query = Some("a&v=2&v=3".into());
            r
        };
        assert!(rule.matches(&full()));
        let mut get = full();
        get.method = "GET".into();
        assert!(!rule.matches(&get), "method");
        let mut other = full();
        other.headers[0].1 = "Beta".into();
        assert!(!rule.matches(&other), "header values are exact");
        let mut no_cookie = full();
        no_cookie.cookies.clear();
        assert!(!rule.matches(&no_cookie), "a missing cookie fails");
        let mut later = full();
        later.query = Some("v=3&v=2".into());
        assert!(!rule.matches(&later), "the first parameter of a name counts");
    }

    #[test]
    fn query_parameters() {
        assert_eq!(parameter("a=1&b=2", "b"), Some("2"));
        assert_eq!(parameter("flag&b", "flag"), Some(""));
        assert_eq!(parameter("ab=1", "a"), None);
    }
}

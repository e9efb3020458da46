//! Which endpoint of a backend takes a request: cookie affinity first, then the less busy of
//! two in round-robin order (as nginx's `least_conn` would pick between them), the same for
//! both HTTP engines and for retries.

use std::hash::Hasher as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portico_plan::annotations::{BackendProtocol, CookieAffinity};
use portico_plan::routes::BackendRef;

use crate::fields::Fields;
use crate::fnv::{Fnv, FnvMap};
use crate::upstream::Endpoint;

/// The endpoint of `backend` for a request: the affinity cookie's (`sticky`) if it is still
/// there, else the less busy of the next two in round-robin order (`rotation` turns once per
/// choice); never `avoid`, the one that just failed.
pub(crate) fn choose(
    backend: &BackendRef,
    endpoints: &FnvMap<(SocketAddr, BackendProtocol), Arc<Endpoint>>,
    rotation: &AtomicU64,
    protocol: BackendProtocol,
    avoid: Option<SocketAddr>,
    sticky: Option<&str>,
) -> Option<Arc<Endpoint>> {
    let endpoint = |addr: &SocketAddr| endpoints.get(&(*addr, protocol));
    if let Some(token) = sticky
        && let Some(addr) =
            backend.endpoints.iter().find(|a| Some(**a) != avoid && affinity_token(a) == token)
    {
        return endpoint(addr).cloned();
    }
    let usable = backend.endpoints.iter().filter(|a| Some(**a) != avoid).count();
    if usable == 0 {
        return None;
    }
    let turn = rotation.fetch_add(1, Ordering::Relaxed);
    let first = usize::try_from(turn % usable as u64).unwrap_or(0);
    let mut candidates = backend.endpoints.iter().filter(|a| Some(**a) != avoid).cycle().skip(first);
    let a = endpoint(candidates.next()?)?;
    if usable == 1 {
        return Some(Arc::clone(a));
    }
    match candidates.next().and_then(endpoint) {
        Some(b) if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) => {
            Some(Arc::clone(b))
        }
        _ => Some(Arc::clone(a)),
    }
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie<'h>(fields: &'h impl Fields, name: &str) -> Option<&'h str> {
    fields
        .all("cookie")
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that pins a client to `endpoint`, unless its cookie already does.
pub(crate) fn affinity_cookie(
    affinity: Option<&CookieAffinity>,
    sticky: Option<&str>,
    endpoint: SocketAddr,
) -> Option<String> {
    let affinity = affinity?;
    let token = affinity_token(&endpoint);
    if sticky == Some(token.as_str()) {
        return None;
    }
    let path = affinity.path.as_deref().unwrap_or("/");
    let mut cookie = format!("{}={token}; Path={path}; HttpOnly", affinity.name);
    if let Some(max_age) = affinity.max_age_seconds {
        cookie.push_str(&format!("; Max-Age={max_age}"));
    }
    Some(cookie)
}

/// The affinity cookie's value for an endpoint: a hash, so the cookie does not reveal
/// the endpoint's address.
fn affinity_token(addr: &SocketAddr) -> String {
    let mut hash = Fnv::default();
    hash.write(addr.to_string().as_bytes());
    format!("{:016x}", hash.finish())
}

#[cfg(test)]
mod tests {
    use http::header::{self, HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; route=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "route"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "rout"), None);
    }
}

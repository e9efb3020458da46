//! One request: route it, apply the Ingress's options, choose an endpoint, forward it and
//! stream the answer back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use portico_plan::Plan;
use portico_plan::annotations::{BackendProtocol, CanaryRule, IngressOptions};
use portico_plan::ingress::{Backend, Route, RouteMatch};
use tracing::debug;

use crate::body::{OnEnd, Watched};
use crate::metrics::{AccessEntry, AccessLog, Metrics};
use crate::normalize::normalize_path;
use crate::upstream::{BoxError, Endpoint, Sender, UpstreamBody, is_h2};

/// Bodies sent to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What every request handler shares.
pub(crate) struct Shared {
    /// `None` until the first Plan.
    pub table: ArcSwapOption<Table>,
    pub tls_http: tokio_rustls::TlsConnector,
    pub tls_h2: tokio_rustls::TlsConnector,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Drives round-robin.
    pub rotation: AtomicU64,
    /// Drives canary weights and request ids.
    pub sequence: AtomicU64,
}

/// The routes being served and the endpoints behind them.
pub(crate) struct Table {
    pub plan: Arc<Plan>,
    pub endpoints: HashMap<(SocketAddr, BackendProtocol), Arc<Endpoint>>,
}

impl Table {
    /// The table for `plan`, keeping the endpoint state (pools, load) of `previous`.
    pub(crate) fn new(plan: Arc<Plan>, previous: Option<&Table>) -> Table {
        let mut endpoints = HashMap::new();
        let ingress = &plan.ingress;
        let hosts =
            ingress.exact_hosts.values().chain(ingress.wildcard_hosts.values()).chain(&ingress.any_host);
        let mut backends: Vec<(&Backend, BackendProtocol)> = Vec::new();
        for vhost in hosts {
            backends.extend(vhost.default_backend.iter().map(|b| (b, BackendProtocol::Http)));
            for route in &vhost.routes {
                let protocol = route.options.backend_protocol;
                backends.push((&route.backend, protocol));
                backends.extend(route.canary.iter().map(|c| (&c.backend, protocol)));
            }
        }
        backends.extend(ingress.default_backend.iter().map(|b| (b, BackendProtocol::Http)));
        for (backend, protocol) in backends {
            for addr in &backend.endpoints {
                let key = (*addr, protocol);
                endpoints.entry(key).or_insert_with(|| match previous.and_then(|p| p.endpoints.get(&key)) {
                    Some(kept) => Arc::clone(kept),
                    None => Arc::new(Endpoint::new(*addr, protocol)),
                });
            }
        }
        Table { plan, endpoints }
    }
}

/// The client connection a request came on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// Serves one request; never fails (errors become 4xx/5xx responses).
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Conn,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some(table) = shared.table.load_full() else {
        let mut response =
            Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(response);
    };
    let entry = AccessEntry {
        client: conn.peer.ip().to_string(),
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        ..AccessEntry::default()
    };
    let mut exchange = Exchange { shared, table, conn, started: Instant::now(), entry };
    Ok(exchange.serve(req).await)
}

/// The state of one request while it is being served.
struct Exchange {
    shared: Arc<Shared>,
    table: Arc<Table>,
    conn: Conn,
    started: Instant,
    entry: AccessEntry,
}

impl Exchange {
    async fn serve(&mut self, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(host) = host_of(&req).map(str::to_owned) else {
            return self.local(StatusCode::BAD_REQUEST, "no Host header\n");
        };
        self.entry.host.clone_from(&host);
        let path = match normalize_path(req.uri().path()) {
            Ok(path) => path.into_owned(),
            Err(why) => return self.local(StatusCode::BAD_REQUEST, &format!("bad path: {why}\n")),
        };
        let table = Arc::clone(&self.table);
        let ingress = &table.plan.ingress;
        let vhost = ingress.virtual_host(&host);
        let defaults = IngressOptions::default();
        let (route, backend, options) = match ingress.route_in(vhost, &path) {
            RouteMatch::NotFound => return self.local(StatusCode::NOT_FOUND, "no Ingress rule matches\n"),
            RouteMatch::Default(backend) => (None, backend, &defaults),
            RouteMatch::Route(route) => (Some(route), &route.backend, &*route.options),
        };
        if let Some(route) = route {
            self.entry.ingress = route.ingress.to_string();
            if !options.allow_sources.is_empty()
                && !options.allow_sources.iter().any(|net| net.contains(&self.conn.peer.ip()))
            {
                return self.local(StatusCode::FORBIDDEN, "client address not allowed\n");
            }
            let host_tls = vhost.is_some_and(|v| v.tls);
            if !self.conn.tls && (options.force_ssl_redirect || (options.ssl_redirect && host_tls)) {
                return self.redirect_to_https(&req, &host);
            }
        }
        if let Some(limit) = options.body_limit
            && content_length(req.headers()).is_some_and(|n| n > limit)
        {
            return self.local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        let backend = match route.and_then(|r| r.canary.as_ref()) {
            Some(canary) if self.takes_canary(&canary.rule, req.headers()) => {
                self.entry.ingress = canary.ingress.to_string();
                &canary.backend
            }
            _ => backend,
        };
        let upstream_path = route.map_or(path.as_str().into(), |r| r.upstream_path(&path)).into_owned();
        self.forward(req, backend, options, &host, &upstream_path, route).await
    }

    fn takes_canary(&self, rule: &CanaryRule, headers: &HeaderMap) -> bool {
        if let Some(value) =
            rule.header.as_ref().and_then(|h| headers.get(h.as_str())).and_then(|v| v.to_str().ok())
        {
            let chosen = match (&rule.header_value, &rule.header_pattern) {
                (Some(want), _) => (value == want).then_some(true),
                (None, Some(pattern)) => pattern.is_match(value).then_some(true),
                (None, None) => match value {
                    "always" => Some(true),
                    "never" => Some(false),
                    _ => None,
                },
            };
            if let Some(chosen) = chosen {
                return chosen;
            }
        }
        match rule.cookie.as_deref().and_then(|c| cookie(headers, c)) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
        rule.weight > 0 && mix(self.next()) % u64::from(rule.weight_total) < u64::from(rule.weight)
    }

    fn next(&self) -> u64 {
        self.shared.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// The endpoint for a request: the affinity cookie's if it is still there, else the less
    /// busy of the next two in round-robin order.
    fn choose(
        &self,
        backend: &Backend,
        protocol: BackendProtocol,
        avoid: Option<SocketAddr>,
        sticky: Option<&str>,
    ) -> Option<Arc<Endpoint>> {
        let candidates: Vec<&SocketAddr> = backend.endpoints.iter().filter(|a| Some(**a) != avoid).collect();
        if let Some(token) = sticky
            && let Some(addr) = candidates.iter().find(|a| affinity_token(a) == token)
        {
            return self.table.endpoints.get(&(**addr, protocol)).cloned();
        }
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let turn = self.shared.rotation.fetch_add(1, Ordering::Relaxed);
        let first = usize::try_from(turn % n as u64).unwrap_or(0);
        let a = self.table.endpoints.get(&(*candidates[first], protocol))?;
        if n == 1 {
            return Some(Arc::clone(a));
        }
        let b = self.table.endpoints.get(&(*candidates[(first + 1) % n], protocol));
        match b {
            Some(b) if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) => {
                Some(Arc::clone(b))
            }
            _ => Some(Arc::clone(a)),
        }
    }

    async fn forward(
        &mut self,
        mut req: Request<Incoming>,
        backend: &Backend,
        options: &IngressOptions,
        host: &str,
        upstream_path: &str,
        route: Option<&Route>,
    ) -> Response<ProxyBody> {
        self.entry.service = backend.service.to_string();
        let protocol = options.backend_protocol;
        let affinity = options.affinity.as_ref();
        let sticky = affinity.and_then(|a| cookie(req.headers(), &a.name)).map(str::to_owned);
        let Some(mut endpoint) = self.choose(backend, protocol, None, sticky.as_deref()) else {
            return self.local(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint\n");
        };
        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let request_id = self.request_id(&parts.headers);
        self.entry.request_id.clone_from(&request_id);
        prepare_request(&mut parts.headers, upgrade);
        self.add_forwarding(&mut parts.headers, host, &request_id);
        let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let h2 = is_h2(protocol);
        let uri = if h2 {
            let scheme = if protocol == BackendProtocol::Grpcs { "https" } else { "http" };
            format!("{scheme}://{host}{upstream_path}{query}")
        } else {
            format!("{upstream_path}{query}")
        };
        parts.uri = match uri.parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => return self.local(StatusCode::BAD_REQUEST, "bad request target\n"),
        };
        if !h2
            && !parts.headers.contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(host)
        {
            parts.headers.insert(header::HOST, value);
        }
        parts.version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        let bytes_in = Arc::new(AtomicU64::new(0));
        let send_timeout = Duration::from_secs(options.send_timeout_seconds);
        let read_timeout = Duration::from_secs(options.read_timeout_seconds);
        let connect_timeout = Duration::from_secs(options.connect_timeout_seconds);
        let body = Watched::new(body, Arc::clone(&bytes_in), options.body_limit, send_timeout);
        let mut request = Some(Request::from_parts(parts, body.boxed_unsync()));
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut in_flight = InFlight(Arc::clone(&endpoint));
        let mut retried = false;
        let outcome = loop {
            let Some(req) = request.take() else { break Err(Failure::Gateway) };
            let sender = match self.connection(&endpoint, connect_timeout).await {
                Ok(sender) => sender,
                Err(err) => {
                    self.shared.metrics.connect_error(&self.entry.ingress, &self.entry.service);
                    debug!(endpoint = %endpoint.addr, %err, "connect to endpoint failed");
                    // Nothing was sent: any request may go to another endpoint, once.
                    let other = (!retried)
                        .then(|| self.choose(backend, protocol, Some(endpoint.addr), None))
                        .flatten();
                    match other {
                        Some(next) => {
                            retried = true;
                            next.in_flight.fetch_add(1, Ordering::Relaxed);
                            in_flight = InFlight(Arc::clone(&next));
                            endpoint = next;
                            request = Some(req);
                            continue;
                        }
                        None => break Err(Failure::Gateway),
                    }
                }
            };
            match tokio::time::timeout(read_timeout, send(sender, req)).await {
                Err(_) => break Err(Failure::Timeout),
                Ok(Ok(sent)) => break Ok(sent),
                // A pooled connection closed just before the request went out: the request
                // is handed back untouched and goes on a new connection.
                Ok(Err((err, Some(unsent)))) if !retried => {
                    debug!(endpoint = %endpoint.addr, %err, "pooled connection was closed; retrying");
                    retried = true;
                    request = Some(unsent);
                }
                Ok(Err((err, _))) => {
                    debug!(endpoint = %endpoint.addr, %err, "request to endpoint failed");
                    let too_large = options.body_limit.is_some_and(|l| bytes_in.load(Ordering::Relaxed) > l);
                    break Err(if too_large { Failure::TooLarge } else { Failure::Gateway });
                }
            }
        };
        self.entry.endpoint = endpoint.addr.to_string();
        let (mut response, sender) = match outcome {
            Ok(sent) => sent,
            Err(Failure::Timeout) => {
                return self.local(StatusCode::GATEWAY_TIMEOUT, "endpoint did not answer in time\n");
            }
            Err(Failure::TooLarge) => {
                return self.local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            }
            Err(Failure::Gateway) => return self.local(StatusCode::BAD_GATEWAY, "endpoint unreachable\n"),
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            tunnel(client_upgrade, hyper::upgrade::on(&mut response), endpoint.addr);
        }
        let (mut parts, body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(&mut parts.headers, switching);
        parts.headers.insert(header::SERVER, HeaderValue::from_static("portico"));
        if let Some(affinity) = affinity
            && sticky.as_deref() != Some(affinity_token(&endpoint.addr).as_str())
        {
            let path = affinity.path.as_deref().or(route.map(|r| r.path.as_str())).unwrap_or("/");
            let mut cookie =
                format!("{}={}; Path={path}; HttpOnly", affinity.name, affinity_token(&endpoint.addr));
            if let Some(max_age) = affinity.max_age_seconds {
                cookie.push_str(&format!("; Max-Age={max_age}"));
            }
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                parts.headers.append(header::SET_COOKIE, value);
            }
        }
        self.entry.status = parts.status.as_u16();
        let bytes_out = Arc::new(AtomicU64::new(0));
        let finish = Finish {
            shared: Arc::clone(&self.shared),
            entry: std::mem::take(&mut self.entry),
            started: self.started,
            bytes_in,
            bytes_out: Arc::clone(&bytes_out),
            sender: if switching { None } else { sender },
            in_flight,
        };
        let body = Watched::new(body, bytes_out, None, read_timeout).on_end(Box::new(finish));
        Response::from_parts(parts, body.boxed_unsync())
    }

    /// A connection to `endpoint`: pooled if one is free, else new.
    async fn connection(&self, endpoint: &Endpoint, timeout: Duration) -> std::io::Result<Sender> {
        if let Some(sender) = endpoint.pooled().await {
            return Ok(sender);
        }
        let tls = if is_h2(endpoint.protocol) { &self.shared.tls_h2 } else { &self.shared.tls_http };
        endpoint.connect(tls, timeout).await
    }

    fn request_id(&self, headers: &HeaderMap) -> String {
        let given = headers.get("x-request-id").and_then(|v| v.to_str().ok());
        match given.filter(|v| !v.is_empty() && v.len() <= 200) {
            Some(id) => id.to_owned(),
            None => {
                format!("{:016x}{:016x}", mix(self.next()), mix(self.started.elapsed().as_nanos() as u64))
            }
        }
    }

    fn add_forwarding(&self, headers: &mut HeaderMap, host: &str, request_id: &str) {
        let client = self.conn.peer.ip().to_string();
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            // Appended, never trusted: routing and allow-lists use the socket's address.
            Some(earlier) => format!("{earlier}, {client}"),
            None => client.clone(),
        };
        let proto = if self.conn.tls { "https" } else { "http" };
        let pairs = [
            ("x-forwarded-for", forwarded_for),
            ("x-real-ip", client),
            ("x-forwarded-proto", proto.to_owned()),
            ("x-forwarded-host", host.to_owned()),
            ("x-forwarded-port", self.conn.local.port().to_string()),
            ("x-request-id", request_id.to_owned()),
        ];
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }

    fn redirect_to_https(&mut self, req: &Request<Incoming>, host: &str) -> Response<ProxyBody> {
        let bare = portico_plan::ingress::normalize_host(host);
        let bare = if bare.contains(':') { format!("[{bare}]") } else { bare };
        let port = self.table.plan.ingress_addresses.https.port();
        let authority = if port == 443 { bare } else { format!("{bare}:{port}") };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{authority}{target}");
        let mut response = self.local(StatusCode::PERMANENT_REDIRECT, "");
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }

    /// A response made here rather than by an endpoint; logged at once.
    fn local(&mut self, status: StatusCode, text: &str) -> Response<ProxyBody> {
        self.entry.status = status.as_u16();
        self.entry.duration = self.started.elapsed();
        self.shared.log(&self.entry);
        let body =
            Full::new(Bytes::copy_from_slice(text.as_bytes())).map_err(|never| match never {}).boxed_unsync();
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("portico"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }
}

impl Shared {
    fn log(&self, entry: &AccessEntry) {
        self.metrics.record(entry);
        if let Some(log) = &self.access_log {
            log.write(entry);
        }
    }
}

enum Failure {
    Gateway,
    Timeout,
    TooLarge,
}

type Sent = (Response<Incoming>, Option<http1::SendRequest<UpstreamBody>>);

/// Sends on `sender`; an error carries the request back when it never left.
async fn send(
    sender: Sender,
    req: Request<UpstreamBody>,
) -> Result<Sent, (hyper::Error, Option<Request<UpstreamBody>>)> {
    match sender {
        Sender::Http1(mut s) => match s.try_send_request(req).await {
            Ok(response) => Ok((response, Some(s))),
            Err(mut e) => {
                let unsent = e.take_message();
                Err((e.into_error(), unsent))
            }
        },
        Sender::Http2(mut s) => match s.try_send_request(req).await {
            Ok(response) => Ok((response, None)),
            Err(mut e) => {
                let unsent = e.take_message();
                Err((e.into_error(), unsent))
            }
        },
    }
}

/// Decrements an endpoint's in-flight count when the request is over.
struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bookkeeping when a proxied response body ends.
struct Finish {
    shared: Arc<Shared>,
    entry: AccessEntry,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    sender: Option<http1::SendRequest<UpstreamBody>>,
    in_flight: InFlight,
}

impl OnEnd for Finish {
    fn end(self: Box<Self>, complete: bool) {
        let Finish { shared, mut entry, started, bytes_in, bytes_out, sender, in_flight } = *self;
        if complete && let Some(sender) = sender {
            in_flight.0.check_in(sender);
        }
        entry.duration = started.elapsed();
        entry.bytes_in = bytes_in.load(Ordering::Relaxed);
        entry.bytes_out = bytes_out.load(Ordering::Relaxed);
        shared.log(&entry);
    }
}

/// Joins the client's and the endpoint's upgraded connections (WebSocket and the like).
fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, endpoint: SocketAddr) {
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    debug!(%endpoint, %err, "upgraded connection ended");
                }
            }
            Err(err) => debug!(%endpoint, %err, "upgrade failed"),
        }
    });
}

/// The Host a request is for: the URI's authority (HTTP/2, absolute-form), else `Host`.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .filter(|h| !h.is_empty())
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_lists(req.headers(), "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Headers of one hop that must not be forwarded (RFC 9110 §7.6.1), plus those the
/// `Connection` header names. An upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Request headers as the endpoint should see them.
fn prepare_request(headers: &mut HeaderMap, upgrade: bool) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    strip_hop_by_hop(headers, upgrade);
    // gRPC servers insist on `te: trailers`; it is the one TE value passed on.
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // 100-continue is answered here, when the body is first read.
    headers.remove(header::EXPECT);
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The affinity cookie's value for an endpoint: a hash, so the cookie does not reveal
/// the endpoint's address.
fn affinity_token(addr: &SocketAddr) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.to_string().bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// SplitMix64: spreads a counter over 64 bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        prepare_request(&mut h, false);
        assert!(
            h.get("x-private").is_none()
                && h.get("keep-alive").is_none()
                && h.get(header::CONNECTION).is_none()
        );
        assert_eq!(h.get(header::TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.get(header::EXPECT).is_none());
        assert!(h.get("x-kept").is_some());
        let mut up = HeaderMap::new();
        up.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        up.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up.get(header::UPGRADE).map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        assert_eq!(up.get(header::CONNECTION).map(|v| v.as_bytes()), Some(&b"upgrade"[..]));
    }

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

//! One request: route it, apply the Ingress's options, choose an endpoint, forward it and
//! stream the answer back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use portico_model::ObjectKey;
use portico_plan::Plan;
use portico_plan::annotations::{BackendProtocol, CanaryRule, IngressOptions};
use portico_plan::ingress::{Backend, DefaultBackend, Route, RouteMatch};
use tracing::debug;

use crate::balance::{self, affinity_cookie, cookie};
use crate::body::{BoxError, ClientBody, Counted, OnEnd, Watched};
use crate::failure::Failure;
use crate::fields::{
    Connection, FORWARDING_FIELDS, Fields, is_hop_by_hop, put_field, replaced_here, within_limits,
};
use crate::fnv::FnvMap;
use crate::metrics::{AccessLog, Figures, LogLine, Metrics, RouteMetrics};
use crate::normalize::normalize_path;
use crate::raw::RawBody;
use crate::request::{self, Refusal};
use crate::upstream::{Endpoint, Sender, UpstreamBody, is_h2};

/// Bodies sent to clients: an endpoint's, passed through, or one made here.
pub(crate) type ProxyBody = Either<Watched<AnswerBody>, Full<Bytes>>;

/// An endpoint's answer body: read by a hyper client connection, or off a plain socket.
pub(crate) type AnswerBody = Either<Incoming, RawBody>;

/// What every request handler shares.
pub(crate) struct Shared {
    /// `None` until the first Plan.
    pub table: ArcSwapOption<Table>,
    pub tls_http: tokio_rustls::TlsConnector,
    pub tls_h2: tokio_rustls::TlsConnector,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Metric handles by Ingress, then Service, made on first use and kept across tables
    /// (their series live as long as the process anyway).
    pub routes: RwLock<HashMap<ObjectKey, HashMap<ObjectKey, Arc<RouteMetrics>>>>,
    /// Requests no rule matched.
    pub unrouted: Arc<RouteMetrics>,
    /// Drives round-robin.
    pub rotation: AtomicU64,
    /// Drives canary weights and request ids.
    pub sequence: AtomicU64,
    /// Keys made request ids: seeded from the OS at start.
    pub ids: std::hash::RandomState,
}

/// The routes being served and the endpoints behind them.
pub(crate) struct Table {
    pub plan: Arc<Plan>,
    pub endpoints: FnvMap<(SocketAddr, BackendProtocol), Arc<Endpoint>>,
    /// The metric handles of each backend in the Plan, by its address there.
    metrics: FnvMap<usize, Arc<RouteMetrics>>,
}

impl Table {
    /// The table for `plan`, keeping the endpoint state (pools, load) of `previous`.
    pub(crate) fn new(plan: Arc<Plan>, previous: Option<&Table>, shared: &Shared) -> Table {
        let mut endpoints = FnvMap::default();
        let mut metrics = FnvMap::default();
        let ingress = &plan.ingress;
        let mut backends: Vec<(&Backend, BackendProtocol, &ObjectKey)> = Vec::new();
        for (_, vhost) in ingress.virtual_hosts() {
            backends.extend(vhost.default_backend.iter().map(DefaultBackend::parts));
            for route in &vhost.routes {
                let protocol = route.options.backend_protocol;
                backends.push((&route.backend, protocol, &route.ingress));
                backends.extend(route.canary.iter().map(|c| (&c.backend, protocol, &c.ingress)));
            }
        }
        backends.extend(ingress.default_backend.iter().map(DefaultBackend::parts));
        for (backend, protocol, from) in backends {
            metrics.insert(address(backend), shared.route_metrics(from, &backend.service));
            for addr in &backend.endpoints {
                let key = (*addr, protocol);
                endpoints.entry(key).or_insert_with(|| match previous.and_then(|p| p.endpoints.get(&key)) {
                    Some(kept) => Arc::clone(kept),
                    None => Arc::new(Endpoint::new(*addr, protocol)),
                });
            }
        }
        Table { plan, endpoints, metrics }
    }

    /// The metric handles of requests from Ingress `from` to `backend`.
    fn route_metrics(&self, shared: &Shared, from: &ObjectKey, backend: &Backend) -> Arc<RouteMetrics> {
        match self.metrics.get(&address(backend)) {
            Some(found) => Arc::clone(found),
            None => shared.route_metrics(from, &backend.service),
        }
    }
}

/// Where a backend is in its Plan: the same for the Plan's life, and distinct per backend.
fn address(backend: &Backend) -> usize {
    std::ptr::from_ref(backend) as usize
}

impl Shared {
    /// The metric handles of an Ingress → Service pair (`ingress` empty: a default backend).
    fn route_metrics(&self, ingress: &ObjectKey, service: &ObjectKey) -> Arc<RouteMetrics> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = routes.get(ingress).and_then(|s| s.get(service)) {
            return Arc::clone(found);
        }
        drop(routes);
        let made = Arc::new(self.metrics.route(&label(ingress), &label(service)));
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let by_service = routes.entry(ingress.clone()).or_default();
        Arc::clone(by_service.entry(service.clone()).or_insert(made))
    }
}

/// `namespace/name`, or empty for no object.
fn label(key: &ObjectKey) -> String {
    if key.name.is_empty() { String::new() } else { key.to_string() }
}

/// The client connection a request came on.
#[derive(Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address and the local port as text, made once per connection.
    client_ip: String,
    local_port: String,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        Conn { peer, tls, client_ip: peer.ip().to_string(), local_port: local.port().to_string() }
    }
}

/// A request's id: the client's or one made here.
pub(crate) enum RequestId<'f> {
    Given(&'f str),
    Made([u8; 32]),
}

impl RequestId<'_> {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }

    /// The id as bytes: a made one needs no UTF-8 check where bytes will do.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Given(given) => given.as_bytes(),
            RequestId::Made(hex) => hex,
        }
    }
}

/// The fields that tell an endpoint who asked, and how.
pub(crate) struct Forwarding<'f> {
    conn: Arc<Conn>,
    /// The client's `X-Forwarded-For` list with its address appended; `None` if it sent none.
    forwarded_for: Option<String>,
    host: &'f str,
    request_id: RequestId<'f>,
}

impl Forwarding<'_> {
    /// The values of [`FORWARDING_FIELDS`], in that order.
    fn values(&self) -> [&[u8]; 6] {
        [
            self.forwarded_for.as_deref().unwrap_or(&self.conn.client_ip).as_bytes(),
            self.conn.client_ip.as_bytes(),
            if self.conn.tls { b"https" } else { b"http" },
            self.host.as_bytes(),
            self.conn.local_port.as_bytes(),
            self.request_id.as_bytes(),
        ]
    }

    /// Writes the forwarding fields into a head for an endpoint.
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        for (name, value) in FORWARDING_FIELDS.iter().zip(self.values()) {
            put_field(out, name, value);
        }
    }

    fn header_values(&self) -> Vec<(HeaderName, HeaderValue)> {
        FORWARDING_FIELDS
            .iter()
            .zip(self.values())
            .filter_map(|(name, value)| {
                Some((HeaderName::from_static(name), HeaderValue::from_bytes(value).ok()?))
            })
            .collect()
    }
}

/// Serves one request; never fails (errors become 4xx/5xx responses).
pub(crate) async fn handle(
    req: Request<Incoming>,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some(table) = shared.table.load_full() else {
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(response);
    };
    let mut exchange = Exchange::new(shared, table, conn, req.method().as_str(), req.uri().path());
    // Boxed: hyper moves each HTTP/2 stream's future into its own task, several copies on the
    // way, and serving one is kilobytes of state; copied whole, it costs more than the box.
    Ok(Box::pin(exchange.serve(req.map(ClientBody::Hyper))).await)
}

/// The state of one request while it is being served.
pub(crate) struct Exchange {
    shared: Arc<Shared>,
    table: Arc<Table>,
    conn: Arc<Conn>,
    started: Instant,
    /// Where the request's figures are counted: its Ingress and Service, once known.
    route: Arc<RouteMetrics>,
    log: Option<LogLine>,
}

impl Exchange {
    /// A request that has just arrived, routed by `table`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        table: Arc<Table>,
        conn: Arc<Conn>,
        method: &str,
        path: &str,
    ) -> Self {
        let log = shared.access_log.as_ref().map(|_| LogLine {
            client: conn.peer.ip().to_string(),
            method: method.to_owned(),
            path: path.to_owned(),
            ..LogLine::default()
        });
        let route = Arc::clone(&shared.unrouted);
        Exchange { shared, table, conn, started: Instant::now(), route, log }
    }

    /// Counts a failed connect to one of the chosen Service's endpoints.
    pub(crate) fn connect_failed(&self, endpoint: SocketAddr, err: &std::io::Error) {
        self.route.connect_error();
        debug!(%endpoint, %err, "connect to endpoint failed");
    }

    /// Notes the endpoint that served the request, for the access log.
    pub(crate) fn served_by(&mut self, endpoint: SocketAddr) {
        if let Some(log) = &mut self.log {
            log.endpoint = endpoint.to_string();
        }
    }

    /// When the request arrived.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Counts and logs the request as finished; returns the time it finished.
    pub(crate) fn complete(&self, status: u16, bytes_in: u64, bytes_out: u64) -> Instant {
        let now = Instant::now();
        let figures = Figures { status, duration: now - self.started, bytes_in, bytes_out };
        self.shared.finish(&self.route, &figures, self.log.as_ref());
        now
    }
}

/// What routing needs of a request that passed the rules of [`request::check`].
pub(crate) struct Head<'r, F> {
    /// The authority it is for.
    pub host: &'r str,
    /// The path as the client sent it.
    pub path: &'r str,
    pub query: Option<&'r str>,
    /// Its declared body length.
    pub length: Option<u64>,
    pub fields: &'r F,
}

/// What to do with a request, decided from its head.
pub(crate) enum Decision<'t> {
    /// Answer here with this status and text.
    Answer(StatusCode, std::borrow::Cow<'static, str>),
    /// Send the client to this HTTPS location.
    Redirect(String),
    /// Pass the request on.
    Forward(Forward<'t>),
}

/// Where a request goes, and with which options.
pub(crate) struct Forward<'t> {
    pub route: Option<&'t Route>,
    pub backend: &'t Backend,
    pub options: &'t IngressOptions,
    /// The path to send upstream when it is not the client's (normalised or rewritten).
    pub path: Option<String>,
}

impl Exchange {
    /// Serves a request hyper's server read: HTTP/2, or HTTP/1.x when hyper serves it all
    /// ([`crate::Http1Engine::Hyper`]).
    async fn serve(&mut self, req: Request<ClientBody>) -> Response<ProxyBody> {
        let version = match req.version() {
            Version::HTTP_10 => request::Version::Http10,
            Version::HTTP_11 => request::Version::Http11,
            _ => request::Version::Http2,
        };
        let uri = req.uri();
        let target = request::Target::Split {
            scheme: uri.scheme_str(),
            authority: uri.authority().map(http::uri::Authority::as_str),
            path_and_query: uri.path_and_query().map_or("", http::uri::PathAndQuery::as_str),
        };
        let head = request::Head { method: req.method().as_str(), version, target, fields: req.headers() };
        let checked = match request::check(&head) {
            Ok(checked) => checked,
            Err(refusal) => return self.refuse(refusal),
        };
        let table = Arc::clone(&self.table);
        let length = checked.length();
        let head = Head {
            host: checked.authority,
            path: checked.path,
            query: checked.query,
            length,
            fields: req.headers(),
        };
        let mut answer = match self.decide(&table, &head) {
            Decision::Answer(status, text) => self.local(status, &text),
            Decision::Redirect(location) => self.redirect(&location),
            Decision::Forward(forward) => {
                let host = checked.authority.to_owned();
                return self.forward(req, forward, &host).await;
            }
        };
        // A body that is not read leaves an HTTP/1 connection unusable, as on the HTTP/1.1 engine.
        if checked.has_body() {
            answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        answer
    }

    /// The answer to a request the rules refuse; the connection closes after it.
    fn refuse(&mut self, refusal: Refusal) -> Response<ProxyBody> {
        let mut response = self.local(refusal.status, &format!("{refusal}\n"));
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// Routes a request and applies its Ingress's checks; counts it against its route from
    /// here on.
    pub(crate) fn decide<'t, F: Fields>(&mut self, table: &'t Table, head: &Head<'_, F>) -> Decision<'t> {
        if let Some(log) = &mut self.log {
            log.host = head.host.to_owned();
        }
        // `Some` only when the normal form differs from what the client sent.
        let normalized = match normalize_path(head.path) {
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Ok(std::borrow::Cow::Owned(path)) => Some(path),
            Err(why) => {
                return Decision::Answer(StatusCode::BAD_REQUEST, format!("bad path: {why}\n").into());
            }
        };
        let ingress = &table.plan.ingress;
        let vhost = ingress.virtual_host(head.host);
        let path = normalized.as_deref().unwrap_or(head.path);
        // A default backend serves its Ingress's requests: counted as that Ingress's, under
        // its annotations.
        let (route, from, backend, options) = match ingress.route_in(vhost, path) {
            RouteMatch::NotFound => {
                return Decision::Answer(StatusCode::NOT_FOUND, "no Ingress rule matches\n".into());
            }
            RouteMatch::Default(default) => (None, &default.ingress, &default.backend, &*default.options),
            RouteMatch::Route(route) => (Some(route), &route.ingress, &route.backend, &*route.options),
        };
        self.route = table.route_metrics(&self.shared, from, backend);
        if !options.allow_sources.is_empty()
            && !options.allow_sources.iter().any(|net| net.contains(&self.conn.peer.ip()))
        {
            return Decision::Answer(StatusCode::FORBIDDEN, "client address not allowed\n".into());
        }
        let host_tls = vhost.is_some_and(|v| v.tls);
        if !self.conn.tls && (options.force_ssl_redirect || (options.ssl_redirect && host_tls)) {
            return Decision::Redirect(self.https_location(head));
        }
        if let Some(limit) = options.body_limit
            && head.length.is_some_and(|n| n > limit)
        {
            return Decision::Answer(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n".into());
        }
        let backend = match route.and_then(|r| r.canary.as_ref()) {
            Some(canary) if self.takes_canary(&canary.rule, head.fields) => {
                self.route = table.route_metrics(&self.shared, &canary.ingress, &canary.backend);
                &canary.backend
            }
            _ => backend,
        };
        let path = match route.map(|r| r.upstream_path(path)) {
            Some(std::borrow::Cow::Owned(p)) => Some(p),
            _ => normalized,
        };
        Decision::Forward(Forward { route, backend, options, path })
    }

    fn takes_canary(&self, rule: &CanaryRule, fields: &impl Fields) -> bool {
        if let Some(value) = rule.header.as_ref().and_then(|h| fields.first(h)) {
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
        match rule.cookie.as_deref().and_then(|c| cookie(fields, c)) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
        rule.weight > 0 && mix(self.next()) % u64::from(rule.weight_total) < u64::from(rule.weight)
    }

    fn next(&self) -> u64 {
        self.shared.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// The endpoint for a request, as [`balance::choose`] picks it among this table's.
    pub(crate) fn choose(
        &self,
        backend: &Backend,
        protocol: BackendProtocol,
        avoid: Option<SocketAddr>,
        sticky: Option<&str>,
    ) -> Option<Arc<Endpoint>> {
        balance::choose(backend, &self.table.endpoints, &self.shared.rotation, protocol, avoid, sticky)
    }

    /// Forwards a request that `decide` sent on, for `host`, its routed authority; `host` is also
    /// the `Host` the endpoint gets. A request for an upgrade that hyper's server read is
    /// joined to the endpoint's here; for one the HTTP/1.1 engine read, the endpoint's side of
    /// the upgrade stays in the answer's extensions, for that engine to join.
    pub(crate) async fn forward(
        &mut self,
        mut req: Request<ClientBody>,
        to: Forward<'_>,
        host: &str,
    ) -> Response<ProxyBody> {
        let Forward { route, backend, options, path: rewritten } = to;
        let protocol = options.backend_protocol;
        let affinity = options.affinity.as_ref();
        let sticky = affinity.and_then(|a| cookie(req.headers(), &a.name)).map(str::to_owned);
        let Some(mut endpoint) = self.choose(backend, protocol, None, sticky.as_deref()) else {
            return self.local(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint\n");
        };
        let upgrade = is_upgrade(&req);
        let client_upgrade =
            if upgrade { req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() } else { None };
        let (mut parts, body) = req.into_parts();
        // Plain HTTP/1.1 endpoints get requests on bare pooled sockets; upgrades need hyper's
        // client to hand over the connection.
        let plain = protocol == BackendProtocol::Http && !upgrade;
        let forwarding = self.forwarding(&parts.headers, host);
        // On a bare socket the forwarding fields are written straight into the head, after
        // the client's fields (its own forwarding fields left out), instead of six header
        // values made and hashed into the map for each request.
        let (added, forwarding) = if plain {
            let mut added = Vec::with_capacity(256);
            forwarding.put(&mut added);
            (added, Vec::new())
        } else {
            (Vec::new(), forwarding.header_values())
        };
        // The forwarding fields written apart from the map, into the head.
        let forwarded_apart = if plain { FORWARDING_FIELDS.len() } else { 0 };
        let h2 = is_h2(protocol);
        prepare_request(&mut parts.headers, upgrade, h2, parts.version == Version::HTTP_2);
        for (name, value) in forwarding {
            parts.headers.insert(name, value);
        }
        if let Some(uri) = upstream_uri(&parts.uri, rewritten.as_deref(), h2.then_some((protocol, host))) {
            match uri.parse::<Uri>() {
                Ok(uri) => parts.uri = uri,
                Err(_) => return self.local(StatusCode::BAD_REQUEST, "bad request target\n"),
            }
        }
        // The endpoint gets the authority that was routed, whatever `Host` the client sent
        // beside it; over HTTP/2 it is the target's.
        parts.headers.remove(header::HOST);
        if !h2 {
            let Ok(value) = HeaderValue::from_str(host) else {
                return self.local(StatusCode::BAD_REQUEST, "bad Host\n");
            };
            parts.headers.insert(header::HOST, value);
        }
        parts.version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        if !h2 && !within_limits(head_size(&parts, &added), parts.headers.len() + forwarded_apart) {
            return self.local(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large to send on\n");
        }
        let counted = Arc::new(Counted::default());
        let send_timeout = Duration::from_secs(options.send_timeout_seconds);
        let read_timeout = Duration::from_secs(options.read_timeout_seconds);
        let connect_timeout = Duration::from_secs(options.connect_timeout_seconds);
        let body = Watched::new(body, Arc::clone(&counted), true, options.body_limit, send_timeout);
        let mut request = Some(Request::from_parts(parts, body));
        let mut in_flight = InFlight::new(&endpoint);
        let (mut retried, mut fresh) = (false, false);
        let outcome = loop {
            let Some(req) = request.take() else { break Err(Failure::Unreachable) };
            let sender = match self.connection(&endpoint, connect_timeout, plain, fresh).await {
                Ok(sender) => sender,
                Err(err) => {
                    self.connect_failed(endpoint.addr, &err);
                    // Nothing was sent: any request may go to another endpoint, once.
                    let other = (!retried)
                        .then(|| self.choose(backend, protocol, Some(endpoint.addr), None))
                        .flatten();
                    match other {
                        Some(next) => {
                            retried = true;
                            in_flight = InFlight::new(&next);
                            endpoint = next;
                            request = Some(req);
                            continue;
                        }
                        None => break Err(Failure::Unreachable),
                    }
                }
            };
            match tokio::time::timeout(read_timeout, send(sender, req, &added, &endpoint)).await {
                Err(_) => break Err(Failure::TimedOut),
                Ok(Ok(sent)) => break Ok(sent),
                // A pooled connection closed just before the request went out (or, for a
                // request safe to repeat, before its answer): the request is handed back
                // and goes on a new connection.
                Ok(Err((err, Some(unsent)))) if !retried => {
                    debug!(endpoint = %endpoint.addr, %err, "pooled connection was closed; retrying");
                    retried = true;
                    fresh = true;
                    request = Some(unsent);
                }
                Ok(Err((err, _))) => {
                    debug!(endpoint = %endpoint.addr, %err, "request to endpoint failed");
                    let too_large =
                        options.body_limit.is_some_and(|l| counted.bytes_in.load(Ordering::Relaxed) > l);
                    break Err(if too_large {
                        Failure::TooLarge
                    } else if counted.client_fault.load(Ordering::Relaxed) {
                        Failure::BadBody
                    } else {
                        Failure::Unreachable
                    });
                }
            }
        };
        self.served_by(endpoint.addr);
        let (mut response, sender) = match outcome {
            Ok(sent) => sent,
            Err(failure) => return self.failed(&failure),
        };
        // An answer whose framing fields are named as hop-by-hop could be read two ways.
        let mut connection = Connection::default();
        for value in response.headers().get_all(header::CONNECTION) {
            connection.add(value.as_bytes());
        }
        if connection.names_framing {
            return self.failed(&Failure::Ambiguous);
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            tunnel(client_upgrade, hyper::upgrade::on(&mut response), endpoint.addr);
        }
        let (mut parts, body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(&mut parts.headers, switching);
        parts.headers.insert(header::SERVER, HeaderValue::from_static("portico"));
        if let Some(cookie) = affinity_cookie(options, route, sticky.as_deref(), endpoint.addr)
            && let Ok(value) = HeaderValue::from_str(&cookie)
        {
            parts.headers.append(header::SET_COOKIE, value);
        }
        let finish = Finish {
            shared: Arc::clone(&self.shared),
            route: Arc::clone(&self.route),
            log: self.log.take(),
            status: parts.status.as_u16(),
            started: self.started,
            counted: Arc::clone(&counted),
            sender: if switching { None } else { sender },
            in_flight,
        };
        let body = Watched::new(body, counted, false, None, read_timeout).on_end(Box::new(finish));
        Response::from_parts(parts, Either::Left(body))
    }

    /// A connection to `endpoint`: pooled if one is free (and not `fresh` asked), else new;
    /// a bare socket when `plain`.
    async fn connection(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
        plain: bool,
        fresh: bool,
    ) -> std::io::Result<Sender> {
        if plain {
            let (stream, reused) = endpoint.plain_stream(fresh, Instant::now(), timeout).await?;
            return Ok(Sender::Plain { stream, reused });
        }
        if !fresh && let Some(sender) = endpoint.pooled().await {
            return Ok(sender);
        }
        let tls = if is_h2(endpoint.protocol) { &self.shared.tls_h2 } else { &self.shared.tls_http };
        // Boxed: connecting (TLS and HTTP handshakes) is rare and its future large, and it
        // would otherwise size every request's future held by the HTTP/2 server.
        Box::pin(endpoint.connect(tls, timeout)).await
    }

    /// The client's `X-Request-Id` when it gives a sensible one, else a new unpredictable one.
    pub(crate) fn request_id<'f>(&self, fields: &'f impl Fields) -> RequestId<'f> {
        if let Some(given) = fields.first("x-request-id").filter(|v| !v.is_empty() && v.len() <= 200) {
            return RequestId::Given(given);
        }
        // The counter keyed by a hasher seeded from the OS's randomness (SipHash): another
        // process, or this one after a restart, cannot predict or repeat the sequence.
        let n = self.next();
        let words = [self.shared.ids.hash_one((n, 0u8)), self.shared.ids.hash_one((n, 1u8))];
        let mut id = [0u8; 32];
        for (half, word) in words.into_iter().enumerate() {
            for i in 0..16 {
                let nibble = (word >> (60 - 4 * i)) & 0xf;
                id[half * 16 + i] = b"0123456789abcdef"[nibble as usize];
            }
        }
        RequestId::Made(id)
    }

    /// The forwarding fields the endpoint gets for a request to `host`; logs the request id.
    pub(crate) fn forwarding<'f>(&mut self, fields: &'f impl Fields, host: &'f str) -> Forwarding<'f> {
        let request_id = self.request_id(fields);
        if let Some(log) = &mut self.log {
            log.request_id = request_id.as_str().to_owned();
        }
        // Appended, never trusted: routing and allow-lists use the socket's address.
        let earlier: Vec<&str> = fields.all("x-forwarded-for").collect();
        let forwarded_for =
            (!earlier.is_empty()).then(|| format!("{}, {}", earlier.join(", "), self.conn.peer.ip()));
        Forwarding { conn: Arc::clone(&self.conn), forwarded_for, host, request_id }
    }

    /// Where a plain-HTTP request goes to be served over HTTPS.
    fn https_location<F>(&self, head: &Head<'_, F>) -> String {
        let bare = portico_plan::ingress::normalize_host(head.host);
        let bare = if bare.contains(':') { format!("[{bare}]") } else { bare.into_owned() };
        let port = self.table.plan.ingress_addresses.https.port();
        let authority = if port == 443 { bare } else { format!("{bare}:{port}") };
        let query = head.query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("https://{authority}{}{query}", head.path)
    }

    fn redirect(&mut self, location: &str) -> Response<ProxyBody> {
        let mut response = self.local(StatusCode::PERMANENT_REDIRECT, "");
        if let Ok(value) = HeaderValue::from_str(location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }

    /// Counts and logs a response made here.
    pub(crate) fn settle(&mut self, status: StatusCode) -> Instant {
        self.complete(status.as_u16(), 0, 0)
    }

    /// A response made here rather than by an endpoint; counted and logged at once.
    /// The answer to a request an endpoint did not serve.
    fn failed(&mut self, failure: &Failure) -> Response<ProxyBody> {
        match failure.answer() {
            Ok((status, text)) => self.local(status, text),
            Err(refusal) => self.refuse(refusal),
        }
    }

    fn local(&mut self, status: StatusCode, text: &str) -> Response<ProxyBody> {
        self.settle(status);
        let mut response = Response::new(Either::Right(Full::new(Bytes::copy_from_slice(text.as_bytes()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("portico"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }
}

/// The request target to send upstream, when it is not the client's as it came: a new path
/// (normalised or rewritten; the query is kept), or the absolute form HTTP/2 needs.
fn upstream_uri(original: &Uri, path: Option<&str>, h2: Option<(BackendProtocol, &str)>) -> Option<String> {
    let absolute = original.scheme().is_some();
    if path.is_none() && h2.is_none() && !absolute {
        return None;
    }
    let path = path.unwrap_or(original.path());
    let query = original.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(match h2 {
        Some((protocol, host)) => {
            let scheme = if protocol == BackendProtocol::Grpcs { "https" } else { "http" };
            format!("{scheme}://{host}{path}{query}")
        }
        None => format!("{path}{query}"),
    })
}

impl Shared {
    fn finish(&self, route: &RouteMetrics, figures: &Figures, log: Option<&LogLine>) {
        route.record(figures.status, figures.duration, figures.bytes_in, figures.bytes_out);
        if let (Some(access_log), Some(line)) = (&self.access_log, log) {
            access_log.write(route, figures, line);
        }
    }
}

type Sent = (Response<AnswerBody>, Option<http1::SendRequest<UpstreamBody>>);

/// Sends on `sender` to `endpoint`, with the `added` header fields on a bare socket; an error
/// carries the request back when it can go on another connection.
async fn send(
    sender: Sender,
    req: Request<UpstreamBody>,
    added: &[u8],
    endpoint: &Arc<Endpoint>,
) -> Result<Sent, (BoxError, Option<Request<UpstreamBody>>)> {
    let hyper_failed = |mut e: hyper::client::conn::TrySendError<_>| {
        let unsent = e.take_message();
        (BoxError::from(e.into_error()), unsent)
    };
    match sender {
        Sender::Plain { stream, reused } => {
            match crate::raw::send(stream, reused, req, added, endpoint).await {
                Ok(response) => Ok((response.map(Either::Right), None)),
                Err((failure, unsent)) => Err((failure.into(), unsent)),
            }
        }
        Sender::Http1(mut s) => match s.try_send_request(req).await {
            Ok(response) => Ok((response.map(Either::Left), Some(s))),
            Err(e) => Err(hyper_failed(e)),
        },
        Sender::Http2(mut s) => match s.try_send_request(req).await {
            Ok(response) => Ok((response.map(Either::Left), None)),
            Err(e) => Err(hyper_failed(e)),
        },
    }
}

/// The size of the HTTP/1.1 head `parts` make, with the `added` field lines.
fn head_size(parts: &http::request::Parts, added: &[u8]) -> usize {
    let target = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let fields: usize = parts.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    parts.method.as_str().len() + target + " HTTP/1.1\r\n".len() + 1 + fields + added.len() + 2
}

/// Counts a request against an endpoint's in-flight requests while it lives.
pub(crate) struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub(crate) fn new(endpoint: &Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(endpoint))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bookkeeping when a proxied response body ends.
struct Finish {
    shared: Arc<Shared>,
    route: Arc<RouteMetrics>,
    log: Option<LogLine>,
    status: u16,
    started: Instant,
    counted: Arc<Counted>,
    sender: Option<http1::SendRequest<UpstreamBody>>,
    in_flight: InFlight,
}

impl OnEnd for Finish {
    fn end(self: Box<Self>, complete: bool) {
        let Finish { shared, route, log, status, started, counted, sender, in_flight } = *self;
        if complete && let Some(sender) = sender {
            in_flight.0.check_in(sender);
        }
        let figures = Figures {
            status,
            duration: started.elapsed(),
            bytes_in: counted.bytes_in.load(Ordering::Relaxed),
            bytes_out: counted.bytes_out.load(Ordering::Relaxed),
        };
        shared.finish(&route, &figures, log.as_ref());
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

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().lists("connection", "upgrade")
}

/// Headers of one hop that must not be forwarded (RFC 9110 §7.6.1), plus those the
/// `Connection` header names. An upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of them: one pass over the names beats nine removals.
    if !upgrade && !headers.keys().any(|n| is_hop_by_hop(n.as_str())) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .all("connection")
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let hop_by_hop: Vec<HeaderName> = headers.keys().filter(|n| is_hop_by_hop(n.as_str())).cloned().collect();
    for name in listed.into_iter().chain(hop_by_hop) {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Request headers as the endpoint should see them. `h2`: the endpoint is spoken to over
/// HTTP/2; `from_h2`: the client spoke HTTP/2.
fn prepare_request(headers: &mut HeaderMap, upgrade: bool, h2: bool, from_h2: bool) {
    let trailers = headers.lists("te", "trailers");
    // A body of unknown length is sent on chunked again: the endpoint's connection is a new
    // hop, but without the header the client library would drop a GET's body.
    // (HTTP/2 frames bodies itself and forbids the header.)
    let chunked = !h2
        && headers.contains_key(header::TRANSFER_ENCODING)
        && !headers.contains_key(header::CONTENT_LENGTH);
    strip_hop_by_hop(headers, upgrade);
    if headers.keys().any(|name| replaced_here(name.as_str())) {
        let replaced: Vec<HeaderName> =
            headers.keys().filter(|n| replaced_here(n.as_str())).cloned().collect();
        for name in replaced {
            headers.remove(name);
        }
    }
    // gRPC servers insist on `te: trailers`; it is the one TE value passed on.
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if chunked {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    // 100-continue is answered here, when the body is first read.
    headers.remove(header::EXPECT);
    // HTTP/2 may split cookies over several fields; HTTP/1.1 has them on one line (RFC 9113
    // §8.2.3).
    if from_h2 && !h2 && headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, value);
        }
    }
    // Several identical lengths (the only kind the rules let through) go on as one.
    if let Some(length) = headers.get(header::CONTENT_LENGTH).cloned() {
        headers.insert(header::CONTENT_LENGTH, length);
    }
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
        prepare_request(&mut h, false, false, false);
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

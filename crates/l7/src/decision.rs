//! The routing decision for a request head, whichever engine read it: its route, its
//! Ingress's checks and redirects, a canary's share, its id and the forwarding fields; and the
//! answers made here. `Exchange` carries one request from its arrival to its end.

use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use portico_plan::annotations::{CanaryRule, IngressOptions};
use portico_plan::ingress::{Backend, Route, RouteMatch};
use tracing::debug;

use crate::balance::cookie;
use crate::body::Watched;
use crate::failure::Failure;
use crate::fields::{FORWARDING_FIELDS, Fields, put_field};
use crate::metrics::{Figures, LogLine, RouteMetrics};
use crate::normalize::normalize_path;
use crate::raw::RawBody;
use crate::request::Refusal;
use crate::shared::{Conn, Shared, Table};

/// Bodies sent to clients: an endpoint's, passed through, or one made here.
pub(crate) type ProxyBody = Either<Watched<AnswerBody>, Full<Bytes>>;

/// An endpoint's answer body: read by a hyper client connection, or off a plain socket.
pub(crate) type AnswerBody = Either<Incoming, RawBody>;

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

    pub(crate) fn header_values(&self) -> Vec<(HeaderName, HeaderValue)> {
        FORWARDING_FIELDS
            .iter()
            .zip(self.values())
            .filter_map(|(name, value)| {
                Some((HeaderName::from_static(name), HeaderValue::from_bytes(value).ok()?))
            })
            .collect()
    }
}

/// The state of one request while it is being served.
pub(crate) struct Exchange {
    pub(crate) shared: Arc<Shared>,
    pub(crate) table: Arc<Table>,
    pub(crate) conn: Arc<Conn>,
    pub(crate) started: Instant,
    /// Where the request's figures are counted: its Ingress and Service, once known.
    pub(crate) route: Arc<RouteMetrics>,
    pub(crate) log: Option<LogLine>,
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
    /// The answer to a request the rules refuse; the connection closes after it.
    pub(crate) fn refuse(&mut self, refusal: Refusal) -> Response<ProxyBody> {
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

    pub(crate) fn takes_canary(&self, rule: &CanaryRule, fields: &impl Fields) -> bool {
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

    pub(crate) fn next(&self) -> u64 {
        self.shared.sequence.fetch_add(1, Ordering::Relaxed)
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
    pub(crate) fn https_location<F>(&self, head: &Head<'_, F>) -> String {
        let bare = portico_plan::ingress::normalize_host(head.host);
        let bare = if bare.contains(':') { format!("[{bare}]") } else { bare.into_owned() };
        let port = self.table.plan.ingress_addresses.https.port();
        let authority = if port == 443 { bare } else { format!("{bare}:{port}") };
        let query = head.query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("https://{authority}{}{query}", head.path)
    }

    pub(crate) fn redirect(&mut self, location: &str) -> Response<ProxyBody> {
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
    pub(crate) fn failed(&mut self, failure: &Failure) -> Response<ProxyBody> {
        match failure.answer() {
            Ok((status, text)) => self.local(status, text),
            Err(refusal) => self.refuse(refusal),
        }
    }

    pub(crate) fn local(&mut self, status: StatusCode, text: &str) -> Response<ProxyBody> {
        self.settle(status);
        let mut response = Response::new(Either::Right(Full::new(Bytes::copy_from_slice(text.as_bytes()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::SERVER, HeaderValue::from_static("portico"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }
}

/// SplitMix64: spreads a counter over 64 bits.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

//! The routing decision for a request head, whichever engine read it: its route among the
//! Plan's HTTP routes of the listener it came on, the route's policy and redirect, its backend
//! by weight, its id and the forwarding fields; and the answers made here. `Exchange` carries one request from its arrival to its end.

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
use portico_plan::routes::{BackendRef, Request, RoutePolicy};
use tracing::debug;

use crate::balance::cookie;
use crate::body::Watched;
use crate::failure::Failure;
use crate::fields::{FORWARDING_FIELDS, Fields, put_field};
use crate::metrics::{Figures, LogLine, RouteMetrics};
use crate::raw::RawBody;
use crate::request::Refusal;
use crate::shared::{Conn, Shared, Table};
use portico_plan::routes::normalize::normalize_path;

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
    /// Its method.
    pub method: &'r str,
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
    /// Send the client to this location with this status.
    Redirect(StatusCode, String),
    /// Pass the request on.
    Forward(Forward<'t>),
}

/// Where a request goes, and under which policy.
pub(crate) struct Forward<'t> {
    pub backend: &'t BackendRef,
    pub policy: &'t RoutePolicy,
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

    /// Routes a request by the routes of the listener it came on and applies its route's
    /// policy and redirect; counts it against its route from here on.
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
        let path = normalized.as_deref().unwrap_or(head.path);
        let asked = Asked { head, path };
        let Some(route) = table.listener(self.conn.tls).and_then(|l| l.route(head.host, &asked)) else {
            return Decision::Answer(StatusCode::NOT_FOUND, "no Ingress rule matches\n".into());
        };
        let own = route.own_backend();
        if let Some(own) = own {
            self.route = table.route_metrics(&self.shared, own);
        }
        let policy = &*route.policy;
        if !policy.allow_sources.is_empty()
            && !policy.allow_sources.iter().any(|net| net.contains(&self.conn.peer.ip()))
        {
            return Decision::Answer(StatusCode::FORBIDDEN, "client address not allowed\n".into());
        }
        if let Some(redirect) = route.redirect() {
            let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::PERMANENT_REDIRECT);
            let scheme = if self.conn.tls { "https" } else { "http" };
            return Decision::Redirect(status, redirect.location(scheme, head.host, head.path, head.query));
        }
        if let Some(limit) = policy.body_limit
            && head.length.is_some_and(|n| n > limit)
        {
            return Decision::Answer(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n".into());
        }
        let Some(backend) = route.backend(|| mix(self.next())) else {
            return Decision::Answer(StatusCode::SERVICE_UNAVAILABLE, "no backend takes requests\n".into());
        };
        if !own.is_some_and(|own| std::ptr::eq(own, backend)) {
            self.route = table.route_metrics(&self.shared, backend);
        }
        let path = match route.upstream_path(path) {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => normalized,
        };
        Decision::Forward(Forward { backend, policy, path })
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

    pub(crate) fn redirect(&mut self, status: StatusCode, location: &str) -> Response<ProxyBody> {
        let mut response = self.local(status, "");
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

/// A request head as the route model reads it: its normalised path and its fields.
struct Asked<'a, 'r, F> {
    head: &'a Head<'r, F>,
    path: &'a str,
}

impl<F: Fields> Request for Asked<'_, '_, F> {
    fn path(&self) -> &str {
        self.path
    }

    fn method(&self) -> &str {
        self.head.method
    }

    fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.head.fields.first(name)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        cookie(self.head.fields, name)
    }

    fn query(&self) -> Option<&str> {
        self.head.query
    }
}

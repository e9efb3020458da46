//! Forwarding a decided request to an endpoint and its answer back, for both engines: the
//! endpoint choice, connect and retry, the request as the endpoint gets it, streaming, 101
//! tunnels and the bookkeeping when the body ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use portico_plan::annotations::BackendProtocol;
use portico_plan::routes::{BackendRef, RoutePolicy};
use tracing::debug;

use crate::balance::{self, affinity_cookie, cookie};
use crate::body::{BoxError, ClientBody, Counted, OnEnd, Watched};
use crate::decision::{AnswerBody, Exchange, Forward, ProxyBody};
use crate::failure::Failure;
use crate::fields::{Connection, FORWARDING_FIELDS, Fields, is_hop_by_hop, replaced_here, within_limits};
use crate::metrics::{Figures, LogLine, RouteMetrics};
use crate::shared::Shared;
use crate::upstream::{Endpoint, Sender, UpstreamBody, is_h2};

impl Exchange {
    /// The endpoint for a request, as [`balance::choose`] picks it among this table's.
    pub(crate) fn choose(
        &self,
        backend: &BackendRef,
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
        let Forward { backend, policy, path: rewritten } = to;
        let protocol = policy.backend_protocol;
        let affinity = policy.affinity.as_ref();
        let sticky = affinity.and_then(|a| cookie(req.headers(), &a.name)).map(str::to_owned);
        let Some(endpoint) = self.choose(backend, protocol, None, sticky.as_deref()) else {
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
        let timeouts = Timeouts::of(policy);
        let body = Watched::new(body, Arc::clone(&counted), true, policy.body_limit, timeouts.send);
        let mut request = Some(Request::from_parts(parts, body));
        let mut attempt = Attempt::new(endpoint);
        let outcome = loop {
            let Some(req) = request.take() else { break Err(Failure::Unreachable) };
            let this = &*self;
            let connecting = |endpoint: Arc<Endpoint>, fresh| async move {
                this.connection(&endpoint, timeouts.connect, plain, fresh).await
            };
            let sender = match this.connect(&mut attempt, backend, protocol, connecting).await {
                Ok(sender) => sender,
                Err(failure) => break Err(failure),
            };
            let endpoint = &attempt.endpoint;
            match tokio::time::timeout(timeouts.read, send(sender, req, &added, endpoint)).await {
                Err(_) => break Err(Failure::TimedOut),
                Ok(Ok(sent)) => break Ok(sent),
                // A pooled connection closed just before the request went out (or, for a
                // request safe to repeat, before its answer): the request is handed back
                // and goes on a new connection.
                Ok(Err((err, Some(unsent)))) if !attempt.retried => {
                    debug!(endpoint = %endpoint.addr, %err, "pooled connection was closed; retrying");
                    attempt.retried = true;
                    attempt.fresh = true;
                    request = Some(unsent);
                }
                Ok(Err((err, _))) => {
                    debug!(endpoint = %endpoint.addr, %err, "request to endpoint failed");
                    let too_large =
                        policy.body_limit.is_some_and(|l| counted.bytes_in.load(Ordering::Relaxed) > l);
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
        let Attempt { endpoint, in_flight, .. } = attempt;
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
        if let Some(cookie) = affinity_cookie(affinity, sticky.as_deref(), endpoint.addr)
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
        let body = Watched::new(body, counted, false, None, timeouts.read).on_end(Box::new(finish));
        Response::from_parts(parts, Either::Left(body))
    }

    /// A connection to `endpoint`: pooled if one is free (and not `fresh` asked), else new;
    /// a bare socket when `plain`.
    pub(crate) async fn connection(
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
}

/// The three timeouts of an exchange with an endpoint, from its route's policy (nginx's
/// `proxy-connect-timeout`, `proxy-send-timeout`, `proxy-read-timeout`), for both engines.
#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    /// Connecting (and the TLS and HTTP handshakes).
    pub(crate) connect: Duration,
    /// Between two writes of the request body.
    pub(crate) send: Duration,
    /// Until the answer's head, and between two reads of its body.
    pub(crate) read: Duration,
}

impl Timeouts {
    /// The timeouts a route's policy sets.
    pub(crate) fn of(policy: &RoutePolicy) -> Self {
        let seconds = policy.timeouts;
        Timeouts {
            connect: Duration::from_secs(seconds.connect_seconds),
            send: Duration::from_secs(seconds.send_seconds),
            read: Duration::from_secs(seconds.read_seconds),
        }
    }
}

/// The endpoint a request is on, counted in its in-flight requests, and how it moved so far.
pub(crate) struct Attempt {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) in_flight: InFlight,
    /// It moved once already: to another endpoint after a connect failed, or (on the
    /// exchange's path) to a new connection after a pooled one was found closed.
    pub(crate) retried: bool,
    /// The next connection must be a new one: a pooled one was found closed.
    pub(crate) fresh: bool,
}

impl Attempt {
    /// A request's first try, on `endpoint`.
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        Attempt { in_flight: InFlight::new(&endpoint), endpoint, retried: false, fresh: false }
    }
}

impl Exchange {
    /// Connects to the attempt's endpoint with `connect` (given the endpoint and whether the
    /// connection must be new). When that fails nothing was sent, so any request may move: once,
    /// to another endpoint of `backend`, the failed one avoided, as nginx's
    /// `proxy_next_upstream error timeout` does. Both engines connect through here.
    pub(crate) async fn connect<C, Fut>(
        &self,
        attempt: &mut Attempt,
        backend: &BackendRef,
        protocol: BackendProtocol,
        mut connect: impl FnMut(Arc<Endpoint>, bool) -> Fut,
    ) -> Result<C, Failure>
    where
        Fut: Future<Output = std::io::Result<C>>,
    {
        loop {
            match connect(Arc::clone(&attempt.endpoint), attempt.fresh).await {
                Ok(connected) => return Ok(connected),
                Err(err) => {
                    self.connect_failed(attempt.endpoint.addr, &err);
                    let other = (!attempt.retried)
                        .then(|| self.choose(backend, protocol, Some(attempt.endpoint.addr), None))
                        .flatten();
                    let Some(next) = other else { return Err(Failure::Unreachable) };
                    attempt.retried = true;
                    attempt.in_flight = InFlight::new(&next);
                    attempt.endpoint = next;
                }
            }
        }
    }
}

/// The request target to send upstream, when it is not the client's as it came: a new path
/// (normalised or rewritten; the query is kept), or the absolute form HTTP/2 needs.
pub(crate) fn upstream_uri(
    original: &Uri,
    path: Option<&str>,
    h2: Option<(BackendProtocol, &str)>,
) -> Option<String> {
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

type Sent = (Response<AnswerBody>, Option<http1::SendRequest<UpstreamBody>>);

/// Sends on `sender` to `endpoint`, with the `added` header fields on a bare socket; an error
/// carries the request back when it can go on another connection.
pub(crate) async fn send(
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
pub(crate) fn head_size(parts: &http::request::Parts, added: &[u8]) -> usize {
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
pub(crate) fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    endpoint: SocketAddr,
) {
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

pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().lists("connection", "upgrade")
}

/// Headers of one hop that must not be forwarded (RFC 9110 §7.6.1), plus those the
/// `Connection` header names. An upgrade keeps `Connection: upgrade` and `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
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
pub(crate) fn prepare_request(headers: &mut HeaderMap, upgrade: bool, h2: bool, from_h2: bool) {
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
}

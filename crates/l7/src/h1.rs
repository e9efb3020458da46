//! The HTTP/1.x engine: every request head of an HTTP/1.x connection is parsed here, once
//! (httparse), and checked by the rules of `crate::request` before it is routed.
//!
//! Ordinary requests, the bulk of Ingress traffic, are relayed: the head is rewritten and
//! written to a pooled endpoint socket, and the answer's head is rewritten while its body bytes
//! pass through as they are, framing followed but not re-encoded. Requests that need more
//! (HTTP/1.0, upgrades, `Expect`, chunked bodies, endpoints spoken to over TLS or HTTP/2) are
//! served by the exchange hyper's server also uses (`crate::proxy`), with their body read off
//! the connection here (`exchange`). Only the HTTP/2 preface, at a connection's start, hands
//! the connection to hyper.

use std::borrow::Cow;
use std::future::Future;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portico_dataplane::drain::Watch;
use portico_plan::annotations::BackendProtocol;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::debug;

use crate::alarm::Alarm;
use crate::balance::{affinity_cookie, cookie};
use crate::chunked::BadChunk;
use crate::codec::{
    AnswerFields, Framing, Parsed, head_end, listed_fields, put_status_line, with_answer_head,
};
use crate::decision::{Decision, Exchange, Forward, Head};
use crate::exchange::{Attempt, Timeouts};
use crate::failure::Failure;
use crate::fields::{
    FORWARDING_FIELDS, MAX_FIELDS, MAX_HEAD, is_hop_by_hop, may_be_trailer, put_field, replaced_here,
    within_limits,
};
use crate::request::{self, BodyFraming, Checked, Target, Version};
use crate::shared::{Conn, Shared, Table};
use crate::spare::UPSTREAM_READ;
use crate::upstream::Endpoint;
use read::{CLIENT_READ, read_by, read_idle_by};

mod exchange;
mod read;

/// Output buffer kept between requests; a bigger one (a long head) is given back.
const OUTPUT_KEPT: usize = 2048;
/// How long a closing connection keeps reading (and dropping) a request body it did not serve.
const LINGER: Duration = Duration::from_secs(5);

/// How a client connection left this path.
pub(crate) enum Served<I> {
    /// It is over.
    Closed,
    /// It needs hyper: the connection, and the bytes read from it but not served.
    Handoff(I, BytesMut),
}

/// One client connection on this path.
pub(crate) struct Client<I> {
    io: I,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    header_timeout: Duration,
    drain: Watch,
    /// The deadlines of the connection's waits.
    alarm: Alarm,
    /// When the connection last became idle: its start, or the end of its last request.
    idle_since: std::time::Instant,
    /// Bytes from the client not yet served.
    input: BytesMut,
    /// Bytes from the endpoint not yet passed on.
    answer: BytesMut,
    /// The next write, to either side.
    output: Vec<u8>,
    /// The client may still be sending a request body that will not be read: the
    /// connection closes gently (see [`Client::linger`]).
    lingering: bool,
    /// A request head has come on this connection: the HTTP/2 preface no longer may.
    started: bool,
}

/// What to do after a request.
enum Step {
    Next,
    Close,
    Handoff,
}

/// What parsing the input as a request head found.
// Returned once per parse and matched at once, never stored: boxing the large variant would
// cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum HeadParse<'t> {
    /// Not all of the head is in yet.
    Partial,
    /// The HTTP/2 preface, at the start of the connection: hyper serves it.
    Handoff,
    /// A head that cannot be served: answered with this status, then the connection closes.
    Reject(StatusCode),
    /// A whole head of `head_len` bytes; `head`: a HEAD request.
    Complete { exchange: Exchange, head: bool, head_len: usize, action: Action<'t> },
}

/// What a request's head asks for.
enum Action<'t> {
    /// Answer here; `close` once answered; `unread_body`: the request's body may still be
    /// coming, and is not read.
    Answer {
        status: StatusCode,
        text: Cow<'static, str>,
        location: Option<String>,
        close: bool,
        unread_body: bool,
    },
    /// Relay: the head for the endpoint is in the output.
    Forward(Forward<'t>, Request),
    /// Serve through the shared exchange (see `exchange`).
    Exchange(Forward<'t>, Box<exchange::Pending>),
}

/// What forwarding a request needs to know about it, once its head is written for the endpoint.
struct Request {
    head_len: usize,
    content_length: u64,
    /// How much of the body had arrived with the head.
    buffered: u64,
    head: bool,
    idempotent: bool,
    close: bool,
    /// The affinity cookie's value, when the route uses one.
    sticky: Option<String>,
}

/// An endpoint's answer head, as parsed, with what its rewrite needs to know.
#[derive(Clone, Copy)]
struct AnswerHead<'p, 'h, 'b> {
    parsed: &'p httparse::Response<'h, 'b>,
    fields: &'p Parsed<'h, 'b>,
    /// Its `Connection` fields name fields to drop.
    names_fields: bool,
    /// Its body passes through chunked.
    chunked: bool,
    /// It has a `Transfer-Encoding`: its `Content-Length`, if any, is dropped.
    encoded: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Client<I> {
    pub(crate) fn new(
        io: I,
        conn: Arc<Conn>,
        shared: Arc<Shared>,
        header_timeout: Duration,
        drain: Watch,
    ) -> Self {
        Client {
            io,
            conn,
            shared,
            header_timeout,
            drain,
            alarm: Alarm::default(),
            idle_since: std::time::Instant::now(),
            input: BytesMut::new(),
            answer: BytesMut::new(),
            output: Vec::new(),
            lingering: false,
            started: false,
        }
    }

    /// Serves a request through the shared exchange (`exchange::serve`), then says what comes
    /// next on the connection.
    async fn exchange(
        &mut self,
        exchange: &mut Exchange,
        to: Forward<'_>,
        pending: exchange::Pending,
    ) -> Step {
        let outcome = exchange::serve(
            &mut self.io,
            &mut self.input,
            &mut self.alarm,
            &mut self.output,
            exchange,
            to,
            pending,
        )
        .await;
        self.idle_since = std::time::Instant::now();
        match outcome {
            exchange::Outcome::Next => Step::Next,
            exchange::Outcome::Close => {
                // What is left of a request body would be read as the next request.
                self.lingering = true;
                Step::Close
            }
            exchange::Outcome::Upgrade(upgrade) => {
                self.tunnel(upgrade).await;
                Step::Close
            }
        }
    }

    /// Joins the client's connection to the endpoint's after a `101`, the bytes already read
    /// from the client first.
    async fn tunnel(&mut self, upgrade: OnUpgrade) {
        let mut upstream = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(err) => {
                debug!(peer = %self.conn.peer, %err, "upgrade failed");
                return;
            }
        };
        if !self.input.is_empty() && upstream.write_all(&self.input).await.is_err() {
            return;
        }
        self.input.clear();
        if let Err(err) = tokio::io::copy_bidirectional(&mut self.io, &mut upstream).await {
            debug!(peer = %self.conn.peer, %err, "upgraded connection ended");
        }
    }

    /// Serves requests until the connection ends or needs hyper.
    pub(crate) async fn serve(mut self) -> Served<I> {
        // One wait for shutdown per connection, polled whenever the connection is idle.
        let shutdown = self.drain.signaled();
        tokio::pin!(shutdown);
        loop {
            match self.request(shutdown.as_mut()).await {
                Step::Next => self.release_buffers(),
                Step::Close => {
                    if self.lingering {
                        self.linger().await;
                    }
                    return Served::Closed;
                }
                Step::Handoff => return Served::Handoff(self.io, self.input),
            }
        }
    }

    async fn request(&mut self, mut shutdown: Pin<&mut impl Future>) -> Step {
        // The input is parsed as it is: no separate search for the head's end first. A head can
        // only be complete once a new line end has come, so the bytes already looked at for
        // one are not parsed again until then (a head sent a byte at a time stays cheap).
        let mut scanned: usize = 0;
        loop {
            // Empty lines before a request line are ignored (RFC 9112 §2.2); dropped here, so
            // a stream of them is never parsed again and again.
            let blank = empty_lines(&self.input);
            self.input.advance(blank);
            scanned = scanned.saturating_sub(blank);
            if memchr::memchr(b'\n', &self.input[scanned..]).is_some() {
                let Some(table) = self.shared.table.load_full() else {
                    return self.reject(StatusCode::SERVICE_UNAVAILABLE).await;
                };
                match self.parse_head(&table) {
                    HeadParse::Partial => {}
                    HeadParse::Handoff => return Step::Handoff,
                    HeadParse::Reject(status) => return self.reject(status).await,
                    HeadParse::Complete { mut exchange, head, head_len, action } => {
                        self.started = true;
                        return match action {
                            Action::Answer { status, text, location, close, unread_body } => {
                                self.idle_since = exchange.settle(status);
                                self.input.advance(head_len);
                                // Closing on body bytes not read would reset the connection,
                                // and the client could lose the answer.
                                self.lingering = unread_body;
                                let location = location.as_deref();
                                write_answer(&mut self.output, status, &text, location, head, close);
                                match self.write_output().await {
                                    Ok(()) if !close => Step::Next,
                                    _ => Step::Close,
                                }
                            }
                            Action::Forward(to, request) => self.forward(&mut exchange, to, request).await,
                            // Boxed: the exchange's state is kilobytes, and in line it would size every
                            // connection's task, relayed ones too, for as long as each stays open.
                            Action::Exchange(to, pending) => {
                                Box::pin(self.exchange(&mut exchange, to, *pending)).await
                            }
                        };
                    }
                }
            }
            if self.input.len() >= MAX_HEAD {
                return self.reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
            }
            scanned = self.input.len();
            if !self.read_more(shutdown.as_mut()).await {
                return Step::Close;
            }
        }
    }

    /// Parses the input as a request head and, once it is complete, decides what to do with
    /// it. Not async: the parser's room for 100 fields (3 KiB) then lives on the stack, not in
    /// every connection's task.
    fn parse_head<'t>(&mut self, table: &'t Arc<Table>) -> HeadParse<'t> {
        let mut storage = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut parsed = httparse::Request::new(&mut []);
        match parsed.parse_with_uninit_headers(&self.input, &mut storage) {
            // A head that came whole in a read that crossed the limit is still too large.
            Ok(httparse::Status::Complete(head_len)) if head_len > MAX_HEAD => {
                HeadParse::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            Ok(httparse::Status::Complete(head_len)) => {
                let (method, target) = (parsed.method.unwrap_or_default(), parsed.path.unwrap_or_default());
                let path = target.split_once('?').map_or(target, |(p, _)| p);
                let (shared, conn) = (Arc::clone(&self.shared), Arc::clone(&self.conn));
                let mut exchange = Exchange::new(shared, Arc::clone(table), conn, method, path);
                let head = method == "HEAD";
                let action = action(&mut self.output, &mut exchange, table, &parsed, head_len);
                HeadParse::Complete { exchange, head, head_len, action }
            }
            Ok(httparse::Status::Partial) => HeadParse::Partial,
            Err(httparse::Error::Version) => {
                if !self.started
                    && H2_PREFACE.starts_with(&self.input[..self.input.len().min(H2_PREFACE.len())])
                {
                    return HeadParse::Handoff;
                }
                // HTTP/1.2 and later minor versions are HTTP/1.1 to us (RFC 9112 §2.3).
                match later_minor_version(&self.input) {
                    Some(at) => {
                        self.input[at] = b'1';
                        self.parse_head(table)
                    }
                    None => HeadParse::Reject(StatusCode::BAD_REQUEST),
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                HeadParse::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            // Malformed.
            Err(_) => HeadParse::Reject(StatusCode::BAD_REQUEST),
        }
    }

    /// Answers a head that cannot be served, and closes (gently: see [`Client::linger`]).
    async fn reject(&mut self, status: StatusCode) -> Step {
        let text = format!("{}\n", status.canonical_reason().unwrap_or("bad request"));
        write_answer(&mut self.output, status, &text, None, false, true);
        self.lingering = self.write_output().await.is_ok();
        Step::Close
    }

    /// Reads more of a request head; false when the client left, went quiet too long, or the
    /// proxy is shutting down.
    async fn read_more(&mut self, shutdown: Pin<&mut impl Future>) -> bool {
        // From the end of the previous request: the clock was read then.
        let deadline = Instant::from_std(self.idle_since) + self.header_timeout;
        let idle = self.input.is_empty();
        if idle && self.drain.is_draining() {
            return false;
        }
        let read = if idle {
            // Idle between requests: shutdown ends the connection at once.
            tokio::select! {
                biased;
                read = read_idle_by(&mut self.io, &mut self.input, &mut self.alarm, deadline) => read,
                _ = shutdown => return false,
            }
        } else {
            read_by(&mut self.io, &mut self.input, CLIENT_READ, &mut self.alarm, deadline).await
        };
        match read {
            Some(Ok(0) | Err(_)) => false,
            Some(Ok(_)) => true,
            None => {
                debug!(peer = %self.conn.peer, "no complete request head in time");
                false
            }
        }
    }

    /// Sends the request written to the output, with its body, to an endpoint and passes the
    /// answer back.
    async fn forward(&mut self, exchange: &mut Exchange, to: Forward<'_>, mut request: Request) -> Step {
        self.input.advance(request.head_len);
        let buffered =
            usize::try_from(request.content_length).map_or(self.input.len(), |n| n.min(self.input.len()));
        self.output.extend_from_slice(&self.input[..buffered]);
        self.input.advance(buffered);
        request.buffered = buffered as u64;
        let unsent = request.content_length - request.buffered;
        // The whole request is in the output: it can be sent again if a connection fails.
        let replayable = unsent == 0;
        let timeouts = Timeouts::of(to.policy);
        let sticky = request.sticky.as_deref();
        let Some(endpoint) = exchange.choose(to.backend, BackendProtocol::Http, None, sticky) else {
            return self
                .answer_here(exchange, StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint\n", &request)
                .await;
        };
        let mut attempt = Attempt::new(endpoint);
        let mut bytes_in = buffered as u64;
        // The endpoint stopped taking the request body before its end.
        let mut body_cut = false;
        if self.answer.capacity() == 0 {
            self.answer = crate::spare::take();
        }
        let (mut upstream, head_len) = loop {
            self.answer.clear();
            let started = exchange.started();
            let connecting = |endpoint: Arc<Endpoint>, fresh| async move {
                endpoint.plain_stream(fresh, started, timeouts.connect).await
            };
            let connected =
                exchange.connect(&mut attempt, to.backend, BackendProtocol::Http, connecting).await;
            let (mut upstream, reused) = match connected {
                Ok(got) => got,
                Err(failure) => return self.failed(exchange, &failure, &request).await,
            };
            let endpoint = &attempt.endpoint;
            if let Err(err) = upstream.write_all(&self.output).await {
                debug!(endpoint = %endpoint.addr, %err, "writing to endpoint failed");
                if reused && replayable {
                    // The pooled connection had been closed: the request goes on a new one.
                    attempt.fresh = true;
                    continue;
                }
                return self.failed(exchange, &Failure::Unsent(err), &request).await;
            }
            if unsent > 0 {
                // The answer is read while the body goes out: an endpoint may answer early (a
                // 401 or a 413 before an upload is in) and stop reading, and that answer is
                // what the client gets.
                let (mut reader, mut writer) = upstream.split();
                let sending = send_rest(
                    Body { client: &mut self.io, input: &mut self.input, alarm: &mut self.alarm },
                    &mut writer,
                    unsent,
                    timeouts.send,
                    &mut bytes_in,
                );
                let sent = tokio::select! {
                    biased;
                    sent = sending => sent,
                    () = final_answer_begins(&mut reader, &mut self.answer) => BodySent::Cut,
                };
                match sent {
                    BodySent::All => {}
                    BodySent::Cut => {
                        debug!(endpoint = %endpoint.addr, "endpoint answered or stopped reading before the body's end");
                        body_cut = true;
                        self.lingering = true;
                    }
                    BodySent::ClientGone => {
                        debug!(peer = %self.conn.peer, "client stopped sending its request body");
                        // 499: nginx's code for a client that gave up.
                        exchange.complete(499, bytes_in, 0);
                        return Step::Close;
                    }
                }
            }
            let deadline = Instant::from_std(exchange.started()) + timeouts.read;
            match self.read_answer_head(&mut upstream, deadline).await {
                Ok(n) => break (upstream, n),
                Err(Failure::Closed) if reused && replayable && request.idempotent => {
                    debug!(endpoint = %endpoint.addr, "pooled connection was closed; retrying");
                    attempt.fresh = true;
                }
                Err(failure) => return self.failed(exchange, &failure, &request).await,
            }
        };
        let Attempt { endpoint, in_flight, .. } = attempt;
        exchange.served_by(endpoint.addr);
        let set_cookie =
            affinity_cookie(to.policy.affinity.as_ref(), request.sticky.as_deref(), endpoint.addr);
        // After a cut body, the rest of it from the client would read as the next request.
        let closing = request.close || body_cut;
        let answer = &self.answer[..head_len];
        let rewritten =
            rewrite_answer_head(&mut self.output, answer, request.head, closing, set_cookie.as_deref());
        let Some(Answered { status, mut framing, keep_alive, close }) = rewritten else {
            return self.failed(exchange, &Failure::Ambiguous, &request).await;
        };
        self.answer.advance(head_len);
        let (mut bytes_out, mut ended, mut leftover) = (0, false, false);
        let mut trailers = None;
        // The first body bytes go out with the head, in one write.
        loop {
            let mut broken = false;
            match pass(&mut framing, &mut trailers, &self.answer, &mut self.output) {
                Ok((used, done)) => {
                    bytes_out += used as u64;
                    leftover |= used < self.answer.len();
                    ended = done;
                }
                Err(err) => {
                    debug!(endpoint = %endpoint.addr, %err, "endpoint's answer body is malformed");
                    broken = true;
                }
            }
            self.answer.clear();
            if self.write_output().await.is_err() {
                debug!(peer = %self.conn.peer, "client went away during the answer");
                ended = false;
                break;
            }
            if ended || broken {
                break;
            }
            let deadline = Instant::now() + timeouts.read;
            match read_by(&mut upstream, &mut self.answer, UPSTREAM_READ, &mut self.alarm, deadline).await {
                Some(Ok(n)) if n > 0 => {}
                Some(Ok(_)) => {
                    // The end of a close-delimited body; any other ends too early.
                    ended = matches!(framing, Framing::Close);
                    break;
                }
                Some(Err(_)) | None => {
                    debug!(endpoint = %endpoint.addr, "endpoint's answer stopped before its end");
                    break;
                }
            }
        }
        self.idle_since = exchange.complete(status, bytes_in, bytes_out);
        drop(in_flight);
        if ended && keep_alive && !leftover && !body_cut && !matches!(framing, Framing::Close) {
            endpoint.keep_stream(upstream, self.idle_since);
        } else {
            let _ = upstream.shutdown().await;
        }
        if ended && !close { Step::Next } else { Step::Close }
    }

    /// Reads an endpoint's answer head into `self.answer` (after what it already holds), passing
    /// 1xx answers on to the client; returns the head's length.
    async fn read_answer_head(
        &mut self,
        upstream: &mut TcpStream,
        deadline: Instant,
    ) -> Result<usize, Failure> {
        let mut received = !self.answer.is_empty();
        loop {
            if let Some(n) = head_end(&self.answer) {
                match self.answer.get(9..12) {
                    // An upgrade nobody asked for.
                    Some(b"101") => return Err(Failure::Broken),
                    Some([b'1', ..]) => {
                        // Interim answers (103 Early Hints) go to the client as they are.
                        let interim = self.answer.split_to(n);
                        self.io.write_all(&interim).await.map_err(|_| Failure::Broken)?;
                        continue;
                    }
                    _ => return Ok(n),
                }
            }
            if self.answer.len() >= MAX_HEAD {
                return Err(Failure::Broken);
            }
            match read_by(upstream, &mut self.answer, UPSTREAM_READ, &mut self.alarm, deadline).await {
                Some(Ok(0) | Err(_)) if !received => return Err(Failure::Closed),
                Some(Ok(0) | Err(_)) => return Err(Failure::Broken),
                Some(Ok(_)) => received = true,
                None => return Err(Failure::TimedOut),
            }
        }
    }

    /// The answer to a request an endpoint did not serve (each engine's failures are answered
    /// alike: [`Failure::answer`]).
    async fn failed(&mut self, exchange: &mut Exchange, failure: &Failure, request: &Request) -> Step {
        match failure.answer() {
            Ok((status, text)) => self.answer_here(exchange, status, text, request).await,
            Err(refusal) => {
                self.answer_here(exchange, refusal.status, &format!("{refusal}\n"), request).await
            }
        }
    }

    /// Answers a forwarded request here after all (no endpoint, or it failed).
    async fn answer_here(
        &mut self,
        exchange: &mut Exchange,
        status: StatusCode,
        text: &str,
        request: &Request,
    ) -> Step {
        self.idle_since = exchange.settle(status);
        // A request body not read in full leaves the connection unusable.
        self.lingering = request.content_length > request.buffered;
        let close = request.close || self.lingering;
        write_answer(&mut self.output, status, text, None, request.head, close);
        match self.write_output().await {
            Ok(()) if !close => Step::Next,
            _ => Step::Close,
        }
    }

    /// Closes gently, as nginx's lingering close does: the answer goes out followed by a FIN,
    /// and what the client still sends is read and dropped for up to `LINGER`. Closing with
    /// unread bytes would send a reset, which can destroy the answer before the client reads it.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let deadline = Instant::now() + LINGER;
        loop {
            self.input.clear();
            match read_by(&mut self.io, &mut self.input, CLIENT_READ, &mut self.alarm, deadline).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Gives back the buffers a finished request leaves empty: a keep-alive connection may
    /// wait idle for minutes, and thousands of them would otherwise each hold a client read,
    /// an endpoint read and an output buffer. The endpoint read goes to the thread's spare list
    /// (`crate::spare`), where the next request on any connection finds it; the client read
    /// holds only the bytes a request brought (see `read_idle_by`) and is simply freed.
    fn release_buffers(&mut self) {
        if self.input.is_empty() {
            self.input = BytesMut::new();
        }
        if self.answer.is_empty() {
            crate::spare::give(std::mem::take(&mut self.answer));
        }
        if self.output.capacity() > OUTPUT_KEPT {
            self.output = Vec::new();
        }
    }

    async fn write_output(&mut self) -> std::io::Result<()> {
        self.io.write_all(&self.output).await?;
        self.output.clear();
        self.io.flush().await
    }
}

/// Decides what to do with the request whose head is `parsed`: the rules of `crate::request`
/// first, then routing. When it is relayed, its head for the endpoint is written to `out`.
fn action<'t>(
    out: &mut Vec<u8>,
    exchange: &mut Exchange,
    table: &'t Table,
    parsed: &httparse::Request<'_, '_>,
    head_len: usize,
) -> Action<'t> {
    let (method, target) = (parsed.method.unwrap_or_default(), parsed.path.unwrap_or_default());
    let version = if parsed.version == Some(0) { Version::Http10 } else { Version::Http11 };
    let head = request::Head { method, version, target: Target::Line(target), fields: parsed.headers };
    let checked = match request::check(&head) {
        Ok(checked) => checked,
        Err(refusal) => {
            let (status, text) = (refusal.status, format!("{refusal}\n").into());
            return Action::Answer { status, text, location: None, close: true, unread_body: true };
        }
    };
    let fields = Parsed(parsed.headers);
    let (length, unread_body) = (checked.length(), checked.has_body());
    let head = Head {
        method,
        host: checked.authority,
        path: checked.path,
        query: checked.query,
        length,
        fields: &fields,
    };
    // An answer made here leaves a request body unread: the connection closes after it.
    let close_here = checked.close || unread_body;
    let to = match exchange.decide(table, &head) {
        Decision::Answer(status, text) => {
            return Action::Answer { status, text, location: None, close: close_here, unread_body };
        }
        Decision::Redirect(status, location) => {
            let text = "".into();
            return Action::Answer { status, text, location: Some(location), close: close_here, unread_body };
        }
        Decision::Forward(to) => to,
    };
    let relayed = version == Version::Http11
        && checked.body != BodyFraming::Chunked
        && !checked.expect_continue
        && !checked.upgrade
        && to.policy.backend_protocol == BackendProtocol::Http;
    if !relayed {
        return match exchange::Pending::new(parsed, &checked, head_len) {
            Some(pending) => Action::Exchange(to, Box::new(pending)),
            None => {
                let (status, text) = (StatusCode::BAD_REQUEST, "bad request\n".into());
                Action::Answer { status, text, location: None, close: true, unread_body: true }
            }
        };
    }
    let sticky = to.policy.affinity.as_ref().and_then(|a| cookie(&fields, &a.name)).map(str::to_owned);
    let written = write_request_head(out, exchange, &to, parsed, &checked);
    if !within_limits(out.len(), written) {
        let (status, text) =
            (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large to send on\n".into());
        return Action::Answer { status, text, location: None, close: true, unread_body: true };
    }
    let request = Request {
        head_len,
        content_length: length.unwrap_or(0),
        buffered: 0,
        head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"),
        close: checked.close,
        sticky,
    };
    Action::Forward(to, request)
}

/// Writes the head of a relayed request as the endpoint gets it: the request line with the
/// path that was routed (in origin form), `Host` with the authority that was routed, the
/// client's end-to-end fields, and the forwarding fields. Returns how many fields it wrote.
fn write_request_head(
    out: &mut Vec<u8>,
    exchange: &mut Exchange,
    to: &Forward<'_>,
    parsed: &httparse::Request<'_, '_>,
    checked: &Checked<'_>,
) -> usize {
    let fields = Parsed(parsed.headers);
    let forwarding = exchange.forwarding(&fields, checked.authority);
    out.clear();
    out.extend_from_slice(parsed.method.unwrap_or_default().as_bytes());
    out.push(b' ');
    match &to.path {
        Some(path) => out.extend_from_slice(path.as_bytes()),
        None => out.extend_from_slice(checked.path.as_bytes()),
    }
    if let Some(query) = checked.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_field(out, "host", checked.authority.as_bytes());
    let listed = listed_fields(&fields, checked.names_fields);
    // Several `Content-Length` fields (alike, or the rules would have refused them) go on as one.
    let mut length_written = false;
    let mut written = 1 + FORWARDING_FIELDS.len() + usize::from(checked.te_trailers);
    for field in parsed.headers.iter() {
        let name = field.name;
        let dropped = match name.len() {
            4 => name.eq_ignore_ascii_case("host"),
            14 if name.eq_ignore_ascii_case("content-length") => std::mem::replace(&mut length_written, true),
            _ => is_hop_by_hop(name) || replaced_here(name),
        } || listed.iter().any(|l| l.eq_ignore_ascii_case(name));
        if !dropped {
            put_field(out, name, field.value);
            written += 1;
        }
    }
    // gRPC-style servers insist on `te: trailers`; it is the one TE value passed on.
    if checked.te_trailers {
        put_field(out, "te", b"trailers");
    }
    forwarding.put(out);
    out.extend_from_slice(b"\r\n");
    written
}

/// What forwarding an answer's body needs to know of its head.
struct Answered {
    status: u16,
    framing: Framing,
    /// The endpoint keeps the connection open after the answer.
    keep_alive: bool,
    /// The client connection closes after it.
    close: bool,
}

/// Writes to `out` the endpoint's answer head `head` as the client gets it; `None` when it is
/// malformed. `head_request`: the answer to a HEAD request; `closing`: the client connection
/// closes after it whatever the answer says. Not async: the parser's room for 100 fields then
/// lives on the stack, not in every connection's task.
fn rewrite_answer_head(
    out: &mut Vec<u8>,
    head: &[u8],
    head_request: bool,
    closing: bool,
    set_cookie: Option<&str>,
) -> Option<Answered> {
    with_answer_head(head, |parsed| rewrite_parsed(out, parsed, head_request, closing, set_cookie))
}

fn rewrite_parsed(
    out: &mut Vec<u8>,
    parsed: &httparse::Response<'_, '_>,
    head_request: bool,
    closing: bool,
    set_cookie: Option<&str>,
) -> Option<Answered> {
    let status = parsed.code.unwrap_or(502);
    let known = AnswerFields::of(parsed.headers);
    let chunked = known.chunked();
    let framing = known.framing(status, head_request)?;
    let keep_alive = known.keep_alive(parsed.version);
    let close = closing || matches!(framing, Framing::Close);
    let fields = Parsed(parsed.headers);
    let names_fields = known.connection.names_fields;
    let answer = AnswerHead { parsed, fields: &fields, names_fields, chunked, encoded: known.encoded() };
    write_answer_head(out, &answer, set_cookie, close);
    Some(Answered { status, framing, keep_alive, close })
}

/// The client side of a request body being sent on: the connection, the bytes read from it not
/// yet sent, and its timer.
struct Body<'c, I> {
    client: &'c mut I,
    input: &'c mut BytesMut,
    alarm: &'c mut Alarm,
}

/// How sending the rest of a request body to an endpoint ended.
enum BodySent {
    All,
    /// The endpoint answered, closed, or stopped taking the body for longer than the send
    /// timeout.
    Cut,
    /// The client closed or went quiet for longer than the send timeout.
    ClientGone,
}

/// Sends the `unsent` bytes of a request body from the client to the endpoint, counting them
/// in `bytes_in`; each read and each write has `send_timeout`.
async fn send_rest<I: AsyncRead + Unpin>(
    body: Body<'_, I>,
    endpoint: &mut WriteHalf<'_>,
    mut unsent: u64,
    send_timeout: Duration,
    bytes_in: &mut u64,
) -> BodySent {
    let Body { client, input, alarm } = body;
    while unsent > 0 {
        if input.is_empty() {
            let deadline = Instant::now() + send_timeout;
            match read_by(client, input, CLIENT_READ, alarm, deadline).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return BodySent::ClientGone,
            }
        }
        let n = usize::try_from(unsent).map_or(input.len(), |u| u.min(input.len()));
        let deadline = Instant::now() + send_timeout;
        if !matches!(tokio::time::timeout_at(deadline, endpoint.write_all(&input[..n])).await, Ok(Ok(()))) {
            return BodySent::Cut;
        }
        input.advance(n);
        unsent -= n as u64;
        *bytes_in += n as u64;
    }
    BodySent::All
}

/// Reads an endpoint's answer into `answer` until a final answer has begun or the endpoint
/// closes; interim answers before it stay in `answer`.
async fn final_answer_begins(reader: &mut ReadHalf<'_>, answer: &mut BytesMut) {
    while !final_answer_started(answer) && answer.len() < MAX_HEAD {
        answer.reserve(UPSTREAM_READ);
        match reader.read_buf(answer).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Whether `buf`, the start of an endpoint's answer, holds more than interim (`1xx`) heads.
fn final_answer_started(buf: &[u8]) -> bool {
    let mut rest = buf;
    loop {
        // The status code's first digit, after "HTTP/1.1 ".
        match rest.get(9) {
            None => return false,
            Some(b'1') => match head_end(rest) {
                Some(n) => rest = &rest[n..],
                None => return false,
            },
            Some(_) => return true,
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How many bytes at the start of `input` are empty lines (CRLF or a bare LF) that may precede
/// a request line; a CR not followed by LF is not one (httparse refuses it too).
fn empty_lines(input: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &input[at..] {
            [b'\n', ..] => at += 1,
            [b'\r', b'\n', ..] => at += 2,
            _ => return at,
        }
    }
}

/// Where the minor version digit of a request line in `HTTP/1.2` … `HTTP/1.9` is.
fn later_minor_version(input: &[u8]) -> Option<usize> {
    let line_end = memchr::memchr(b'\n', input)?;
    let line = input[..line_end].strip_suffix(b"\r").unwrap_or(&input[..line_end]);
    let version = line.len().checked_sub(9)?;
    let digit = line[version + 8];
    (line[version..].starts_with(b" HTTP/1.") && (b'2'..=b'9').contains(&digit)).then_some(version + 8)
}

/// Passes the next `bytes` of an answer body to `out` as they are, but for the trailer section
/// of a chunked body: that is held in `trailers` until it is whole, then passed without the
/// fields that may not be trailers. Returns how many of `bytes` belong to the body, and whether
/// it has ended with them.
fn pass(
    framing: &mut Framing,
    trailers: &mut Option<Vec<u8>>,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(usize, bool), BadChunk> {
    let (used, ended) = match framing {
        Framing::Empty => (0, true),
        Framing::Length(left) => {
            let used = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
            *left -= used as u64;
            (used, *left == 0)
        }
        Framing::Chunked(_) if let Some(section) = trailers => return pass_trailers(section, bytes, out),
        Framing::Chunked(chunks) => {
            let (used, at_trailers) = chunks.feed(bytes)?;
            out.extend_from_slice(&bytes[..used]);
            if !at_trailers {
                return Ok((used, false));
            }
            // Most chunked bodies have no trailers: just the section's empty line.
            let rest = &bytes[used..];
            if rest.starts_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
                return Ok((used + 2, true));
            }
            let (more, ended) = pass_trailers(trailers.insert(Vec::new()), rest, out)?;
            return Ok((used + more, ended));
        }
        Framing::Close => (bytes.len(), false),
    };
    out.extend_from_slice(&bytes[..used]);
    Ok((used, ended))
}

/// Adds `bytes` to a trailer section being read; once it is whole, writes its allowed fields
/// and its empty line to `out`. Returns how many of `bytes` were the section's, and whether it
/// is whole.
fn pass_trailers(section: &mut Vec<u8>, bytes: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), BadChunk> {
    let before = section.len();
    section.extend_from_slice(bytes);
    let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
    match httparse::parse_headers(section, &mut storage) {
        Ok(httparse::Status::Complete((n, fields))) => {
            for field in fields.iter().filter(|f| may_be_trailer(f.name)) {
                put_field(out, field.name, field.value);
            }
            out.extend_from_slice(b"\r\n");
            Ok((n - before, true))
        }
        Ok(httparse::Status::Partial) if section.len() < MAX_HEAD => Ok((bytes.len(), false)),
        _ => Err(BadChunk),
    }
}

/// The head of an endpoint's answer as the client gets it: hop-by-hop fields and `Server`
/// replaced, chunked coding kept when the body passes through chunked.
fn write_answer_head(
    out: &mut Vec<u8>,
    head: &AnswerHead<'_, '_, '_>,
    set_cookie: Option<&str>,
    close: bool,
) {
    let AnswerHead { parsed, fields, names_fields, chunked, encoded } = *head;
    out.clear();
    let status =
        parsed.code.and_then(|code| StatusCode::from_u16(code).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = parsed.reason.filter(|r| !r.is_empty()).or(status.canonical_reason()).unwrap_or("");
    put_status_line(out, status, reason);
    let listed = listed_fields(fields, names_fields);
    for field in parsed.headers.iter() {
        let name = field.name;
        let dropped = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("server")
            || (encoded && name.eq_ignore_ascii_case("content-length"))
            || listed.iter().any(|l| l.eq_ignore_ascii_case(name));
        if !dropped {
            put_field(out, name, field.value);
        }
    }
    if chunked {
        put_field(out, "transfer-encoding", b"chunked");
    }
    put_field(out, "server", b"portico");
    if let Some(cookie) = set_cookie {
        put_field(out, "set-cookie", cookie.as_bytes());
    }
    if close {
        put_field(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// An answer made here.
fn write_answer(
    out: &mut Vec<u8>,
    status: StatusCode,
    text: &str,
    location: Option<&str>,
    head: bool,
    close: bool,
) {
    out.clear();
    put_status_line(out, status, status.canonical_reason().unwrap_or(""));
    put_field(out, "server", b"portico");
    put_field(out, "content-type", b"text/plain; charset=utf-8");
    let _ = write!(out, "content-length: {}\r\n", text.len());
    if let Some(location) = location {
        put_field(out, "location", location.as_bytes());
    }
    if close {
        put_field(out, "connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_after_its_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        // A bare LF line, then a CRLF empty line; a body with empty lines of its own after.
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\r\nbody\n\n"), Some(25));
        // Bare LFs end the first head even with a CRLF head after it.
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\n\r\n"), Some(24));
        // Pipelined requests: the first head only.
        assert_eq!(head_end(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), Some(19));
        // An empty line before the request line is not the end of the head.
        assert_eq!(head_end(b"\r\nGET / HTTP/1.1\r\n\r\n"), Some(20));
        for partial in [
            &b""[..],
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r",
            b"GET / HTTP/1.1\r\nHost: a\n",
        ] {
            assert_eq!(head_end(partial), None, "{:?}", String::from_utf8_lossy(partial));
        }
    }

    #[test]
    fn empty_lines_before_a_request_are_crlf_or_lf_only() {
        assert_eq!(empty_lines(b"\r\n\nGET"), 3);
        assert_eq!(empty_lines(b"\r\n\rGET"), 2, "a CR alone is not an empty line");
        assert_eq!(empty_lines(b"\r"), 0, "not yet known");
        assert_eq!(empty_lines(b"GET"), 0);
    }

    #[test]
    fn later_minor_versions_are_found_on_the_request_line_only() {
        assert_eq!(later_minor_version(b"GET / HTTP/1.2\r\nHost: a\r\n"), Some(13));
        assert_eq!(later_minor_version(b"GET /x HTTP/1.9\n"), Some(14));
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.2",
            b"GET / HTTP/1.10\r\n",
            b"HTTP/1.2\r\n",
        ] {
            assert_eq!(later_minor_version(line), None, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_final_answer_starts_after_any_interim_heads() {
        for (buf, started) in [
            (&b""[..], false),
            (b"HTTP/1.1 ", false),
            (b"HTTP/1.1 4", true),
            (b"HTTP/1.1 413 Payload Too Large\r\n", true),
            (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n", false),
            (b"HTTP/1.1 103 Early Hints\r\n\r\n", false),
            (b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 2", true),
            (b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n", false),
        ] {
            assert_eq!(final_answer_started(buf), started, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn answer_heads_lose_hop_by_hop_fields_and_name_portico() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nX-Kept: yes\r\n\r\n";
        let mut storage = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut []);
        let done = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            raw,
            &mut storage,
        );
        assert!(matches!(done, Ok(httparse::Status::Complete(_))));
        let fields = Parsed(parsed.headers);
        let mut out = Vec::new();
        let head =
            AnswerHead { parsed: &parsed, fields: &fields, names_fields: true, chunked: true, encoded: true };
        write_answer_head(&mut out, &head, Some("route=abc"), false);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nX-Kept: yes\r\ntransfer-encoding: chunked\r\nserver: portico\r\nset-cookie: route=abc\r\n\r\n"
        );
    }
}

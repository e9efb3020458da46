//! HTTP/1.x requests the relay does not carry (HTTP/1.0, upgrades, `Expect: 100-continue`,
//! chunked bodies, endpoints spoken to over TLS or HTTP/2), served by the exchange hyper's
//! server also uses (`crate::proxy`). Their heads were read and checked by this engine like any
//! other; here the body is read off the connection and fed to the exchange as it comes, and the
//! answer is written back in HTTP/1.1: with its length when it is known, else chunked (HTTP/1.1
//! clients) or until the close (HTTP/1.0 clients).

use std::io::Write as _;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use http_body_util::channel::{Channel, Sender};
use hyper::upgrade::OnUpgrade;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::read::{CLIENT_READ, read_by};
use crate::alarm::Alarm;
use crate::body::{BoxError, ClientBody};
use crate::chunked::{BadChunk, Chunks, LAST_CHUNK, Piece, put_frame};
use crate::codec::put_status_line;
use crate::decision::{Exchange, Forward, ProxyBody};
use crate::fields::{MAX_FIELDS, MAX_HEAD, put_field};
use crate::request::{BodyFraming, Checked};

/// A request whose head was checked and routed, waiting for the exchange.
pub(crate) struct Pending {
    parts: http::request::Parts,
    /// The authority it was routed by.
    authority: String,
    body: BodyFraming,
    head_len: usize,
    expect_continue: bool,
    close: bool,
    http10: bool,
}

impl Pending {
    /// The request whose head (`head_len` bytes) is `parsed`, as the exchange takes it; `None`
    /// when its parts do not make an `http::Request` (never for a head the rules accepted).
    pub(crate) fn new(
        parsed: &httparse::Request<'_, '_>,
        checked: &Checked<'_>,
        head_len: usize,
    ) -> Option<Self> {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
        parts.uri = match checked.query {
            Some(query) => format!("{}?{query}", checked.path).parse::<Uri>().ok()?,
            None => checked.path.parse::<Uri>().ok()?,
        };
        let http10 = parsed.version == Some(0);
        parts.version = if http10 { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        for field in parsed.headers.iter() {
            // A length beside Transfer-Encoding is not the body's (the rules let chunked win).
            if checked.length_dropped && field.name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            headers.append(
                HeaderName::from_bytes(field.name.as_bytes()).ok()?,
                HeaderValue::from_bytes(field.value).ok()?,
            );
        }
        parts.headers = headers;
        Some(Pending {
            parts,
            authority: checked.authority.to_owned(),
            body: checked.body,
            head_len,
            expect_continue: checked.expect_continue,
            close: checked.close,
            http10,
        })
    }
}

/// Why a request body could not be fed to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The client closed or went quiet before its body's end.
    ClientGone,
    /// The chunked coding was broken.
    Malformed,
    /// The exchange stopped taking the body (the endpoint answered, or failed).
    Unread,
}

/// How an answer goes to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delimit {
    /// No body (HEAD, 1xx, 204, 304, 101).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes: an HTTP/1.0 client and a body of unknown length.
    Close,
}

/// How an exchange left the connection.
pub(super) enum Outcome {
    /// The answer went out; the connection may serve another request.
    Next,
    Close,
    /// The endpoint agreed to an upgrade: the two connections are joined.
    Upgrade(OnUpgrade),
}

/// Serves a request through the shared exchange: its body is fed from the connection (`io`,
/// with `input` read from it already) while the exchange runs, and its answer written as
/// HTTP/1.1 through `output`.
pub(super) async fn serve<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    input: &mut BytesMut,
    alarm: &mut Alarm,
    output: &mut Vec<u8>,
    exchange: &mut Exchange,
    to: Forward<'_>,
    pending: Pending,
) -> Outcome {
    let Pending { parts, authority, body: framing, head_len, expect_continue, close, http10 } = pending;
    input.advance(head_len);
    let head_request = parts.method == Method::HEAD;
    let send_timeout = Duration::from_secs(to.policy.timeouts.send_seconds);
    let length = match framing {
        BodyFraming::Empty | BodyFraming::Length(0) => None,
        BodyFraming::Length(n) => Some(Some(n)),
        BodyFraming::Chunked => Some(None),
    };
    let (wanted_tx, mut wanted) = oneshot::channel();
    let (feed, body) = match length {
        None => (None, ClientBody::Empty),
        Some(length) => {
            let (feed, channel) = Channel::new(1);
            (Some(feed), ClientBody::Fed { channel, length, wanted: Some(wanted_tx) })
        }
    };
    // The client waits for a `100 Continue` before it sends the body (RFC 9110 §10.1.1): it
    // goes out once an endpoint asks for the body, not before answers made without it.
    let mut continue_owed = expect_continue && feed.is_some();
    let request = http::Request::from_parts(parts, body);
    let (mut reader, mut writer) = tokio::io::split(io);
    let pump = async {
        match feed {
            Some(feed) => feed_body(&mut reader, input, alarm, framing, feed, send_timeout).await,
            None => Ok(()),
        }
    };
    let mut pump = std::pin::pin!(pump);
    let mut pumped = None;
    let mut respond = std::pin::pin!(exchange.forward(request, to, &authority));
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let response = loop {
        tokio::select! {
            response = &mut respond => break Some(response),
            fed = &mut pump, if pumped.is_none() => pumped = Some(fed),
            asked = &mut wanted, if continue_owed => {
                continue_owed = false;
                if asked.is_ok() && write_flushed(&mut writer, interim).await.is_err() {
                    break None;
                }
            }
        }
    };
    let Some(response) = response else { return Outcome::Close };
    // The body was asked for in the same step that brought the answer (a malformed body fails
    // the exchange at once): the client still gets its `100 Continue` first, as hyper's server
    // writes it whenever the body is read.
    if continue_owed && wanted.try_recv().is_ok() && write_flushed(&mut writer, interim).await.is_err() {
        return Outcome::Close;
    }
    let answer = Answer { head_request, http10, close, body_read: pumped == Some(Ok(())) };
    answer.write(response, &mut writer, output, pump, pumped).await
}

/// What writing an answer needs to know of its request.
struct Answer {
    head_request: bool,
    http10: bool,
    /// The client asked to close after this request.
    close: bool,
    /// The request's body had been read to its end when the answer came.
    body_read: bool,
}

impl Answer {
    /// Writes `response` to the client, feeding the rest of the request body (`pump`) the while.
    async fn write<W, P>(
        self,
        response: Response<ProxyBody>,
        writer: &mut W,
        out: &mut Vec<u8>,
        mut pump: std::pin::Pin<&mut P>,
        mut pumped: Option<Result<(), Fault>>,
    ) -> Outcome
    where
        W: AsyncWrite + Unpin,
        P: Future<Output = Result<(), Fault>>,
    {
        let (mut parts, mut body) = response.into_parts();
        let status = parts.status;
        let upgrade = if status == StatusCode::SWITCHING_PROTOCOLS {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        };
        let delimit = if upgrade.is_some()
            || self.head_request
            || status.is_informational()
            || status == 204
            || status == 304
        {
            Delimit::None
        } else if let Some(n) = body.size_hint().exact() {
            Delimit::Length(n)
        } else if self.http10 {
            Delimit::Close
        } else {
            Delimit::Chunked
        };
        // A body still coming after the answer's head closes the connection: what is left of it
        // would be read as the next request.
        let closing = self.close || delimit == Delimit::Close || !self.body_read;
        write_head(out, &mut parts, delimit, closing, self.http10, upgrade.is_some());
        if write_flushed(writer, out).await.is_err() {
            return Outcome::Close;
        }
        out.clear();
        if let Some(upgrade) = upgrade {
            return if pumped == Some(Ok(())) { Outcome::Upgrade(upgrade) } else { Outcome::Close };
        }
        let mut ended = delimit == Delimit::None;
        while !ended {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                fed = &mut pump, if pumped.is_none() => {
                    pumped = Some(fed);
                    continue;
                }
            };
            match frame {
                None => {
                    if delimit == Delimit::Chunked {
                        out.extend_from_slice(LAST_CHUNK);
                    }
                    ended = true;
                }
                Some(Ok(frame)) => ended = put_frame(out, frame, delimit == Delimit::Chunked),
                Some(Err(err)) => {
                    debug!(%err, "endpoint's answer ended early");
                    return Outcome::Close;
                }
            }
            // Each piece goes out as it comes: an answer may stream (server-sent events).
            if write_flushed(writer, out).await.is_err() {
                return Outcome::Close;
            }
            out.clear();
        }
        if closing { Outcome::Close } else { Outcome::Next }
    }
}

/// Writes `bytes` and flushes them (a TLS connection holds what is written until then).
async fn write_flushed<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Writes the head of an answer to an HTTP/1.x client: its fields but those of framing,
/// which `delimit` decides, and `Connection` as `closing` (and the client's version) says.
fn write_head(
    out: &mut Vec<u8>,
    parts: &mut http::response::Parts,
    delimit: Delimit,
    closing: bool,
    http10: bool,
    upgrade: bool,
) {
    out.clear();
    let reason = parts.status.canonical_reason().unwrap_or("");
    put_status_line(out, parts.status, reason);
    if delimit != Delimit::None {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.headers.remove(header::TRANSFER_ENCODING);
    if !upgrade {
        parts.headers.remove(header::CONNECTION);
    }
    for (name, value) in &parts.headers {
        put_field(out, name.as_str(), value.as_bytes());
    }
    match delimit {
        Delimit::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Delimit::Chunked => put_field(out, "transfer-encoding", b"chunked"),
        Delimit::None | Delimit::Close => {}
    }
    if closing && !upgrade {
        put_field(out, "connection", b"close");
    } else if http10 && !upgrade {
        put_field(out, "connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads a request body of `framing` off the client (`input` holds what was already read) and
/// feeds it to the exchange, each read within `timeout`. A chunked body is decoded, and its
/// trailers passed on as trailers.
async fn feed_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut BytesMut,
    alarm: &mut Alarm,
    framing: BodyFraming,
    mut feed: Sender<Bytes, BoxError>,
    timeout: Duration,
) -> Result<(), Fault> {
    let fault = |feed: Sender<Bytes, BoxError>, fault: Fault| {
        // The exchange learns that the body is broken, not that it ended.
        feed.abort(Box::new(BadChunk));
        Err(fault)
    };
    let mut left = match framing {
        BodyFraming::Length(n) => Some(n),
        BodyFraming::Chunked => None,
        BodyFraming::Empty => return Ok(()),
    };
    let mut chunks = Chunks::default();
    loop {
        if left == Some(0) {
            return Ok(());
        }
        if input.is_empty()
            && !read_by(reader, input, CLIENT_READ, alarm, Instant::now() + timeout)
                .await
                .is_some_and(|r| r.is_ok_and(|n| n > 0))
        {
            return fault(feed, Fault::ClientGone);
        }
        let data = match &mut left {
            Some(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                *left -= take as u64;
                input.split_to(take).freeze()
            }
            None => match chunks.next_piece(input) {
                Err(BadChunk) => return fault(feed, Fault::Malformed),
                Ok(Piece::Data { skip, len }) => {
                    input.advance(skip);
                    input.split_to(len).freeze()
                }
                Ok(Piece::More(n)) => {
                    input.advance(n);
                    continue;
                }
                Ok(Piece::Last(n)) => {
                    input.advance(n);
                    return match read_trailers(reader, input, alarm, timeout).await {
                        Ok(trailers) => {
                            if !trailers.is_empty() && feed.send_trailers(trailers).await.is_err() {
                                return Err(Fault::Unread);
                            }
                            Ok(())
                        }
                        Err(fault_found) => fault(feed, fault_found),
                    };
                }
            },
        };
        if feed.send_data(data).await.is_err() {
            return Err(Fault::Unread);
        }
    }
}

/// Reads the trailer section of a chunked body, up to its empty line.
async fn read_trailers<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut BytesMut,
    alarm: &mut Alarm,
    timeout: Duration,
) -> Result<HeaderMap, Fault> {
    loop {
        let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
        match httparse::parse_headers(input, &mut storage) {
            Ok(httparse::Status::Complete((n, parsed))) => {
                let mut trailers = HeaderMap::new();
                for field in parsed {
                    let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Fault::Malformed)?;
                    trailers
                        .append(name, HeaderValue::from_bytes(field.value).map_err(|_| Fault::Malformed)?);
                }
                input.advance(n);
                return Ok(trailers);
            }
            Ok(httparse::Status::Partial) if input.len() < MAX_HEAD => {}
            _ => return Err(Fault::Malformed),
        }
        match read_by(reader, input, CLIENT_READ, alarm, Instant::now() + timeout).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return Err(Fault::ClientGone),
        }
    }
}

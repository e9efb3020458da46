//! Requests the shared exchange serves (HTTP/2 clients through hyper, and the HTTP/1.x requests
//! `crate::h1` does not relay) sent to plain HTTP/1.1 endpoints on the same pooled sockets as
//! the relay.
//! A hyper client connection would cost each request in flight a task, a channel and its
//! buffers (about 25 KB); here it costs the socket and the bytes read.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::chunked::{BadChunk, LAST_CHUNK, Piece, put_frame};
use crate::codec::{AnswerFields, Framing, Parsed, head_end, listed_fields, with_answer_head};
use crate::failure::Failure;
use crate::fields::{MAX_FIELDS, MAX_HEAD, is_hop_by_hop, may_be_trailer, put_field, replaced_here};
use crate::upstream::{Endpoint, UpstreamBody};

/// Room made for reading an answer's head; its body is read in pieces of up to `BODY_READ`.
const HEAD_READ: usize = 4 * 1024;
const BODY_READ: usize = 16 * 1024;

/// The head of a request as an endpoint gets it over HTTP/1.1. The head's fields are
/// already the endpoint's (see `prepare_request`) but for the forwarding fields, which are
/// `added` (the client's own left out); `chunked` frames a body of unknown length.
fn request_head(parts: &Parts, added: &[u8], chunked: bool) -> Vec<u8> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Sized up front: growing it would copy the head as it is written.
    let fields: usize = parts.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    let mut out = Vec::with_capacity(parts.method.as_str().len() + target.len() + fields + added.len() + 44);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_fields(&mut out, &parts.headers, |name| {
        name == header::TRANSFER_ENCODING || replaced_here(name.as_str())
    });
    out.extend_from_slice(added);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn put_fields(out: &mut Vec<u8>, fields: &HeaderMap, skip: impl Fn(&HeaderName) -> bool) {
    for (name, value) in fields.iter().filter(|(name, _)| !skip(name)) {
        put_field(out, name.as_str(), value.as_bytes());
    }
}

/// Whether a request body must go chunked: it has data to come and no declared length.
fn needs_chunked(parts: &Parts, body: &UpstreamBody) -> bool {
    !body.is_end_stream() && !parts.headers.contains_key(header::CONTENT_LENGTH)
}

/// Sends `req`, with the `added` fields, on `stream` and reads the answer's head. An error carries the request back
/// when it can go on another connection: nothing of it was sent, or it went out whole on a
/// pooled (`reused`) connection that turned out closed and it is safe to repeat.
pub(crate) async fn send(
    stream: TcpStream,
    reused: bool,
    req: Request<UpstreamBody>,
    added: &[u8],
    endpoint: &Arc<Endpoint>,
) -> Result<Response<RawBody>, (Failure, Option<Request<UpstreamBody>>)> {
    let (parts, mut body) = req.into_parts();
    let chunked = needs_chunked(&parts, &body);
    let head = request_head(&parts, added, chunked);
    let bodiless = body.is_end_stream();
    let is_head = parts.method == Method::HEAD;
    let sent = exchange(stream, &head, (!bodiless).then_some((&mut body, chunked)), is_head, endpoint).await;
    match sent {
        Ok(response) => Ok(response),
        Err(failure @ Failure::Unsent(_)) => Err((failure, Some(Request::from_parts(parts, body)))),
        Err(Failure::Closed) if reused && bodiless && parts.method.is_idempotent() => {
            Err((Failure::Closed, Some(Request::from_parts(parts, body))))
        }
        Err(failure) => Err((failure, None)),
    }
}

/// Writes the request (`head`, then `body` as it comes) to `stream`, and reads the answer's
/// head. `body` is `None` when the request has none. The answer's body is read by the
/// returned [`RawBody`], which gives the connection back to `endpoint`'s pool once it has
/// read the body to its end.
///
/// The answer is read while the body is still being sent: an endpoint may answer early (a 401
/// or 413 before an upload is in) and stop reading, and the client then gets that answer, on
/// a connection that is not reused.
async fn exchange(
    mut stream: TcpStream,
    head: &[u8],
    body: Option<(&mut UpstreamBody, bool)>,
    head_request: bool,
    endpoint: &Arc<Endpoint>,
) -> Result<Response<RawBody>, Failure> {
    stream.write_all(head).await.map_err(Failure::Unsent)?;
    let mut buf = BytesMut::new();
    let (mut reader, mut writer) = stream.split();
    let mut body_sent = body.is_none();
    let head_len = {
        let reading = read_answer_head(&mut reader, &mut buf);
        let sending = async {
            match body {
                Some((body, chunked)) => send_body(&mut writer, body, chunked).await,
                None => Ok(()),
            }
        };
        tokio::pin!(reading, sending);
        loop {
            tokio::select! {
                read = &mut reading => break read?,
                sent = &mut sending, if !body_sent => match sent {
                    Ok(()) => body_sent = true,
                    // A client that stops sending, or a body over the size limit, ends it.
                    Err(Failure::ClientBody) => return Err(Failure::ClientBody),
                    // The endpoint stopped reading: its answer may be on its way.
                    Err(_) => body_sent = true,
                },
            }
        }
    };
    let answer = parse_answer(&buf[..head_len], head_request).ok_or(Failure::Broken)?;
    buf.advance(head_len);
    let Answer { status, fields, framing, keep_alive } = answer;
    let body = RawBody {
        stream: Some(stream),
        buf,
        framing,
        in_trailers: false,
        // The rest of an unsent body would be taken as the next request's start.
        keep_alive: keep_alive && body_sent,
        endpoint: Arc::clone(endpoint),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = fields;
    Ok(response)
}

/// Reads an answer's head into `buf`, past any interim (`1xx`) answers; returns its length.
async fn read_answer_head(reader: &mut ReadHalf<'_>, buf: &mut BytesMut) -> Result<usize, Failure> {
    loop {
        if let Some(n) = head_end(buf) {
            match buf.get(9..12) {
                // An upgrade nobody asked for.
                Some(b"101") => return Err(Failure::Broken),
                // Interim answers (100 Continue, 103 Early Hints) are not passed on here.
                Some([b'1', ..]) => buf.advance(n),
                _ => return Ok(n),
            }
            continue;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Failure::Broken);
        }
        buf.reserve(HEAD_READ);
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(Failure::Closed),
            Ok(0) | Err(_) => return Err(Failure::Broken),
            Ok(_) => {}
        }
    }
}

/// Writes a request body as it comes from the client, chunked or as it is.
async fn send_body(
    stream: &mut WriteHalf<'_>,
    body: &mut UpstreamBody,
    chunked: bool,
) -> Result<(), Failure> {
    let mut out = Vec::new();
    let mut ended = false;
    // The body is `Watched`: its trailers come without the fields that may not be trailers.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::ClientBody)?;
        out.clear();
        ended = put_frame(&mut out, frame, chunked);
        stream.write_all(&out).await.map_err(|_| Failure::Broken)?;
    }
    if chunked && !ended {
        stream.write_all(LAST_CHUNK).await.map_err(|_| Failure::Broken)?;
    }
    Ok(())
}

/// An answer's head, as the client will get it.
struct Answer {
    status: StatusCode,
    fields: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parses an answer head: its status, its end-to-end fields and its framing; `None` when it
/// is not a valid HTTP/1.x answer.
fn parse_answer(head: &[u8], head_request: bool) -> Option<Answer> {
    with_answer_head(head, |parsed| answer_of(parsed, head_request))
}

fn answer_of(parsed: &httparse::Response<'_, '_>, head_request: bool) -> Option<Answer> {
    let status = StatusCode::from_u16(parsed.code?).ok()?;
    let known = AnswerFields::of(parsed.headers);
    let framing = known.framing(status.as_u16(), head_request)?;
    // Fields of this hop only go: the hop-by-hop ones, those `Connection` lists, and the
    // length of a chunked body (the client's framing is not chunked).
    let parsed_fields = Parsed(parsed.headers);
    let listed = listed_fields(&parsed_fields, known.connection.names_fields);
    let mut fields = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field.name;
        let dropped = is_hop_by_hop(name)
            || (known.encoded() && name.eq_ignore_ascii_case("content-length"))
            || listed.iter().any(|l| l.eq_ignore_ascii_case(name));
        if !dropped {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            fields.append(name, HeaderValue::from_bytes(field.value).ok()?);
        }
    }
    let keep_alive = known.keep_alive(parsed.version);
    Some(Answer { status, fields, framing, keep_alive })
}

/// An answer body read straight off the endpoint's socket, decoded from its HTTP/1.1
/// framing; the socket goes back to the pool when the body was read to its end.
pub(crate) struct RawBody {
    stream: Option<TcpStream>,
    /// Bytes read and not yet passed on.
    buf: BytesMut,
    /// What is left of the body; `Empty` once it has all been read.
    framing: Framing,
    /// A chunked body's last chunk has been read: its trailer section comes next.
    in_trailers: bool,
    keep_alive: bool,
    endpoint: Arc<Endpoint>,
}

/// A malformed or cut-short answer body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("endpoint closed the connection before the answer's end")]
    Cut,
    #[error(transparent)]
    Chunk(#[from] BadChunk),
    #[error("malformed trailer section")]
    Trailers,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl RawBody {
    /// The next frame found in the bytes read so far; `None` when more must be read.
    fn next_frame(&mut self) -> Result<Option<Option<Frame<Bytes>>>, BodyError> {
        loop {
            match &mut self.framing {
                Framing::Empty => return Ok(Some(None)),
                Framing::Length(0) => self.framing = Framing::Empty,
                _ if self.buf.is_empty() => return Ok(None),
                Framing::Length(left) => {
                    let take = usize::try_from(*left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                    *left -= take as u64;
                    return Ok(Some(Some(Frame::data(self.buf.split_to(take).freeze()))));
                }
                Framing::Close => return Ok(Some(Some(Frame::data(self.buf.split().freeze())))),
                Framing::Chunked(_) if self.in_trailers => return self.trailers(),
                Framing::Chunked(chunks) => match chunks.next_piece(&self.buf)? {
                    Piece::Data { skip, len } => {
                        self.buf.advance(skip);
                        return Ok(Some(Some(Frame::data(self.buf.split_to(len).freeze()))));
                    }
                    Piece::More(n) => self.buf.advance(n),
                    Piece::Last(n) => {
                        self.buf.advance(n);
                        self.in_trailers = true;
                    }
                },
            }
        }
    }

    /// The trailer section after the last chunk, once all of it has been read.
    fn trailers(&mut self) -> Result<Option<Option<Frame<Bytes>>>, BodyError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_FIELDS];
        match httparse::parse_headers(&self.buf, &mut storage) {
            Ok(httparse::Status::Complete((n, parsed))) => {
                let mut trailers = HeaderMap::new();
                for field in parsed {
                    let name =
                        HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| BodyError::Trailers)?;
                    if may_be_trailer(name.as_str()) {
                        let value = HeaderValue::from_bytes(field.value).map_err(|_| BodyError::Trailers)?;
                        trailers.append(name, value);
                    }
                }
                self.buf.advance(n);
                self.framing = Framing::Empty;
                Ok(Some((!trailers.is_empty()).then(|| Frame::trailers(trailers))))
            }
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => Ok(None),
            _ => Err(BodyError::Trailers),
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            match this.next_frame() {
                Ok(Some(frame)) => return Poll::Ready(frame.map(Ok)),
                Ok(None) => {}
                Err(err) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            let Some(stream) = &mut this.stream else { return Poll::Ready(Some(Err(BodyError::Cut))) };
            let room = match this.framing {
                Framing::Length(left) => usize::try_from(left).map_or(BODY_READ, |l| l.clamp(1, BODY_READ)),
                _ => BODY_READ,
            };
            this.buf.reserve(room);
            let read = ready!(poll_read_buf(stream, cx, &mut this.buf));
            match read {
                Ok(0) if matches!(this.framing, Framing::Close) => {
                    this.framing = Framing::Empty;
                    this.keep_alive = false;
                }
                Ok(0) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(BodyError::Cut)));
                }
                Ok(_) => {}
                Err(err) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Empty | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// One read into `buf`'s spare room.
fn poll_read_buf(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut read = std::pin::pin!(stream.read_buf(buf));
    read.as_mut().poll(cx)
}

impl Drop for RawBody {
    fn drop(&mut self) {
        let ended = matches!(self.framing, Framing::Empty | Framing::Length(0));
        if ended
            && self.keep_alive
            && self.buf.is_empty()
            && let Some(stream) = self.stream.take()
        {
            self.endpoint.keep_stream(stream, Instant::now());
        }
    }
}

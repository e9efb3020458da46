//! Bodies streamed through the proxy, frame by frame (never buffered whole): bytes counted,
//! a size limit, a timeout between frames, trailers kept to the fields that may be trailers,
//! and the bookkeeping when a response ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::channel::Channel;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::fields::may_be_trailer;

/// Errors a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body from a client: read by hyper's server, or read off an HTTP/1.x connection by
/// its own task (`crate::h1`) and fed through a channel of a few frames, or none at all.
pub(crate) enum ClientBody {
    Hyper(Incoming),
    /// Fed by the connection's task; `length`: its `Content-Length`, if it has one; `wanted`
    /// tells that task when the body is first asked for (to answer `Expect: 100-continue` then,
    /// as hyper's server does, and not when no endpoint will read it).
    Fed {
        channel: Channel<Bytes, BoxError>,
        length: Option<u64>,
        wanted: Option<oneshot::Sender<()>>,
    },
    Empty,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(incoming) => {
                Pin::new(incoming).poll_frame(cx).map(|f| f.map(|f| f.map_err(Into::into)))
            }
            ClientBody::Fed { channel, wanted, .. } => {
                if let Some(wanted) = wanted.take() {
                    let _ = wanted.send(());
                }
                Pin::new(channel).poll_frame(cx)
            }
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(incoming) => incoming.is_end_stream(),
            ClientBody::Fed { length, .. } => *length == Some(0),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(incoming) => incoming.size_hint(),
            ClientBody::Fed { length: Some(n), .. } => SizeHint::with_exact(*n),
            ClientBody::Fed { length: None, .. } => SizeHint::default(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// What to do once a response body has been sent (or abandoned).
pub(crate) trait OnEnd: Send {
    /// `complete`: the body was read to its end.
    fn end(self: Box<Self>, complete: bool);
}

/// A body passed through with a byte count, an optional limit and an idle timeout.
pub(crate) struct Watched<B: Body> {
    inner: B,
    counted: Arc<Counted>,
    /// Counts request bytes (towards the endpoint) rather than response bytes.
    inbound: bool,
    limit: Option<u64>,
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    on_end: Option<Box<dyn OnEnd>>,
}

/// A body larger than `proxy-body-size`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub(crate) struct TooLarge(pub u64);

/// No frame within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub(crate) struct Stalled(pub Duration);

impl<B: Body> Watched<B> {
    pub(crate) fn new(
        inner: B,
        counted: Arc<Counted>,
        inbound: bool,
        limit: Option<u64>,
        idle: Duration,
    ) -> Self {
        Watched { inner, counted, inbound, limit, idle, sleep: None, on_end: None }
    }

    pub(crate) fn on_end(mut self, on_end: Box<dyn OnEnd>) -> Self {
        self.on_end = Some(on_end);
        self
    }

    fn end(&mut self, complete: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end.end(complete);
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(sleep) = &mut this.sleep {
                    sleep.as_mut().reset(Instant::now() + this.idle);
                }
                if let Some(data) = frame.data_ref() {
                    let counter = if this.inbound { &this.counted.bytes_in } else { &this.counted.bytes_out };
                    let total = counter.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if let Some(limit) = this.limit.filter(|l| total > *l) {
                        this.end(false);
                        return Poll::Ready(Some(Err(TooLarge(limit).into())));
                    }
                }
                let frame = match frame.into_trailers() {
                    Ok(trailers) => Frame::trailers(allowed_trailers(trailers)),
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                if this.inbound {
                    // The client's body could not be read (malformed, or cut short): its fault.
                    this.counted.client_fault.store(true, Ordering::Relaxed);
                }
                this.end(false);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                this.end(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.end(false);
                    return Poll::Ready(Some(Err(Stalled(idle).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `trailers` without the fields that may not be trailers (see [`may_be_trailer`]).
pub(crate) fn allowed_trailers(mut trailers: HeaderMap) -> HeaderMap {
    if trailers.keys().any(|name| !may_be_trailer(name.as_str())) {
        let refused: Vec<_> =
            trailers.keys().filter(|name| !may_be_trailer(name.as_str())).cloned().collect();
        for name in refused {
            trailers.remove(name);
        }
    }
    trailers
}

impl<B: Body> Drop for Watched<B> {
    fn drop(&mut self) {
        // A body whose length is known is dropped as soon as its last byte is out, without
        // being polled for its end (and empty ones are never polled): that is complete too.
        let complete = self.inner.is_end_stream();
        self.end(complete);
    }
}

/// Body bytes of one exchange, counted as they pass.
#[derive(Default)]
pub(crate) struct Counted {
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// The client's body could not be read to its end.
    pub(crate) client_fault: std::sync::atomic::AtomicBool,
}

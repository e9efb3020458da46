//! Reads from a client or an endpoint that give up at a deadline, sharing one timer per
//! connection.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Instant;

use crate::alarm::Alarm;

/// Room made for each read of a request from a client.
pub(super) const CLIENT_READ: usize = 8 * 1024;
/// Room made for each read from the client.
/// Bytes the first read of a request on an idle connection takes, on the stack: most heads fit
/// (nginx's `client_header_buffer_size`).
const IDLE_READ: usize = 1024;

/// Reads into `buf` (with room for `room` more bytes) unless `deadline` passes first: `None`.
pub(super) async fn read_by<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    room: usize,
    alarm: &mut Alarm,
    deadline: Instant,
) -> Option<std::io::Result<usize>> {
    buf.reserve(room);
    by(io.read_buf(buf), alarm, deadline).await
}

/// Like [`read_by`] for a connection waiting for its next request. The read goes to a buffer on
/// the stack, which exists only while the read is polled, and only the bytes that came are
/// kept: an idle keep-alive connection holds no read buffer.
pub(super) async fn read_idle_by<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    alarm: &mut Alarm,
    deadline: Instant,
) -> Option<std::io::Result<usize>> {
    let read = std::future::poll_fn(|cx| {
        let mut chunk = [MaybeUninit::uninit(); IDLE_READ];
        let mut read = ReadBuf::uninit(&mut chunk);
        std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    });
    by(read, alarm, deadline).await
}

/// `read`'s outcome, unless `deadline` passes first: `None`.
async fn by(
    read: impl Future<Output = std::io::Result<usize>>,
    alarm: &mut Alarm,
    deadline: Instant,
) -> Option<std::io::Result<usize>> {
    tokio::select! {
        biased;
        read = read => Some(read),
        () = alarm.at(deadline) => None,
    }
}

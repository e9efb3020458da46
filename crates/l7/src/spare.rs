//! Spare buffers for endpoints' answers, kept per thread. A keep-alive connection gives its
//! answer buffer back when a request is done, so thousands of idle connections hold none; the
//! next request on any connection takes one from here. The allocator alone would fetch and
//! return memory for each request (a buffer is bigger than what it keeps at hand), which costs
//! more than routing the request.

use std::cell::RefCell;

use bytes::BytesMut;

/// Room made for each read from an endpoint.
pub(crate) const UPSTREAM_READ: usize = 16 * 1024;
/// Most spare buffers a thread keeps.
const KEPT: usize = 64;
/// Largest buffer kept: the room of one read from an endpoint. One that grew past it (a long
/// answer head) is freed, so the list holds at most `KEPT` such reads.
const LARGEST: usize = UPSTREAM_READ;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A spare buffer, empty; a new one when none is left.
pub(crate) fn take() -> BytesMut {
    SPARE.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Keeps `buf` for a later [`take`], emptied, unless it is empty of room, bigger than
/// `LARGEST`, or enough are kept already.
pub(crate) fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > LARGEST {
        return;
    }
    buf.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty_with_its_room() {
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        give(buf);
        let again = take();
        assert!(again.is_empty());
        assert!(again.capacity() >= 4096, "the room is kept: {}", again.capacity());
        assert_eq!(take().capacity(), 0, "one buffer was given, one taken");
    }

    #[test]
    fn a_buffer_that_grew_past_one_read_is_freed() {
        give(BytesMut::with_capacity(LARGEST * 4));
        assert_eq!(take().capacity(), 0);
    }

    #[test]
    fn only_so_many_are_kept() {
        for _ in 0..KEPT + 10 {
            give(BytesMut::with_capacity(64));
        }
        let kept = std::iter::from_fn(|| Some(take())).take_while(|b| b.capacity() > 0).count();
        assert_eq!(kept, KEPT);
    }
}

//! The chunked coding (RFC 9112 §7.1): where a chunked body's chunks end, found while its bytes
//! pass through unchanged (the HTTP/1.1 path relays chunked answers as they are), and the
//! chunks' data, for bodies that go on in another framing. The trailer section after the last
//! chunk is a field section, read by whoever needs it (`httparse::parse_headers`).

use std::io::Write as _;

use bytes::Bytes;
use http_body::Frame;

use crate::fields::put_field;

/// The last chunk and an empty trailer section: the end of a chunked body without trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes a body frame to `out` as HTTP/1.1 carries it: data as it is, or as one chunk when
/// `chunked` (an empty chunk would end the body: none is written); trailers, only when
/// `chunked`, as the last chunk and the trailer section. Returns whether that ended the body.
pub(crate) fn put_frame(out: &mut Vec<u8>, frame: Frame<Bytes>, chunked: bool) -> bool {
    match frame.into_data() {
        Ok(data) if !chunked => out.extend_from_slice(&data),
        Ok(data) if data.is_empty() => {}
        Ok(data) => {
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
        Err(frame) => {
            if let Ok(trailers) = frame.into_trailers()
                && chunked
            {
                out.extend_from_slice(b"0\r\n");
                for (name, value) in &trailers {
                    put_field(out, name.as_str(), value.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                return true;
            }
        }
    }
    false
}

/// A body the chunked coding does not describe.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub(crate) struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line, before any digit.
    SizeStart,
    /// In a chunk-size line, after a digit.
    Size,
    /// Whitespace after the size: only more of it, an extension or the line's end may follow.
    SizeSpace,
    /// In chunk extensions (ignored), up to CR.
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// In chunk data.
    Data,
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data's CR.
    DataLf,
    /// After the last chunk: the trailer section comes next.
    TrailerStart,
}

/// What the next bytes of a chunked body hold, for [`Chunks::next_piece`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// After `skip` framing bytes, `len` bytes of chunk data.
    Data { skip: usize, len: usize },
    /// Framing only, this many bytes of it, all consumed; the rest is still to come.
    More(usize),
    /// The last chunk's size line ends after this many bytes; the trailer section follows.
    Last(usize),
}

/// Follows a chunked body's framing.
#[derive(Debug)]
pub(crate) struct Chunks {
    state: State,
    /// Bytes left in the current chunk, or the size being read.
    size: u64,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks { state: State::SizeStart, size: 0 }
    }
}

impl Chunks {
    /// Reads the next bytes of the body up to its trailer section. Returns how many of them
    /// are chunks (fewer than given only when the last chunk ended inside `bytes`) and whether
    /// the trailer section comes next.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < bytes.len() && self.state != State::TrailerStart {
            if self.state == State::Data {
                let left = bytes.len() - i;
                let take = usize::try_from(self.size).map_or(left, |s| s.min(left));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.state = self.step(bytes[i])?;
            i += 1;
        }
        Ok((i, self.state == State::TrailerStart))
    }

    /// Decodes: reads `bytes` up to the next chunk data, which it does not consume.
    pub(crate) fn next_piece(&mut self, bytes: &[u8]) -> Result<Piece, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Data => {
                    let left = bytes.len() - i;
                    let len = usize::try_from(self.size).map_or(left, |s| s.min(left));
                    self.size -= len as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Piece::Data { skip: i, len });
                }
                State::TrailerStart => return Ok(Piece::Last(i)),
                _ => {
                    self.state = self.step(bytes[i])?;
                    i += 1;
                }
            }
        }
        Ok(if self.state == State::TrailerStart { Piece::Last(i) } else { Piece::More(i) })
    }

    fn step(&mut self, byte: u8) -> Result<State, BadChunk> {
        Ok(match (self.state, byte) {
            (State::SizeStart | State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = u64::from(char::from(byte).to_digit(16).ok_or(BadChunk)?);
                self.size = self.size.checked_mul(16).and_then(|s| s.checked_add(digit)).ok_or(BadChunk)?;
                State::Size
            }
            (State::Size | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size | State::SizeSpace, b';') => State::Extension,
            (State::Size | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err(BadChunk),
            (State::Extension, _) => State::Extension,
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data,
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.size = 0;
                State::SizeStart
            }
            _ => return Err(BadChunk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces split at `cut`, returning where its trailer section starts, if
    /// it does.
    fn end_of(body: &[u8], cut: usize) -> Result<Option<usize>, BadChunk> {
        let mut chunks = Chunks::default();
        let mut at = 0;
        for piece in [&body[..cut], &body[cut..]] {
            let (used, trailers) = chunks.feed(piece)?;
            at += used;
            if trailers {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_last_chunk_wherever_the_bytes_are_split() {
        let body = b"5 \r\nhello\r\n1A ;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        let trailers = body.len() - b"x-sum: 1\r\n\r\nNEXT".len();
        for cut in 0..=body.len() {
            assert_eq!(end_of(body, cut), Ok(Some(trailers)), "split at {cut}");
        }
        assert_eq!(end_of(b"0\r\n\r\n", 2), Ok(Some(3)));
    }

    #[test]
    fn an_unfinished_body_has_not_ended() {
        for body in [&b"5\r\nhel"[..], b"5\r\nhello\r\n", b"0\r", b"5\r\nhello\r\n0"] {
            assert_eq!(end_of(body, body.len() / 2), Ok(None), "{:?}", String::from_utf8_lossy(body));
        }
    }

    /// Decodes `body` fed in pieces split at `cut`: the data, and where the trailers start.
    fn decode(body: &[u8], cut: usize) -> Result<(Vec<u8>, Option<usize>), BadChunk> {
        let mut chunks = Chunks::default();
        let (mut data, mut at) = (Vec::new(), 0);
        for end in [cut, body.len()] {
            while at < end {
                match chunks.next_piece(&body[at..end])? {
                    Piece::Data { skip, len } => {
                        data.extend_from_slice(&body[at + skip..at + skip + len]);
                        at += skip + len;
                    }
                    Piece::More(n) => at += n,
                    Piece::Last(n) => return Ok((data, Some(at + n))),
                }
            }
        }
        Ok((data, None))
    }

    #[test]
    fn decodes_the_data_wherever_the_bytes_are_split() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\n";
        let trailers = body.len() - b"x-sum: 1\r\n\r\n".len();
        for cut in 0..=body.len() {
            let (data, last) = decode(body, cut).expect("well formed");
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split at {cut}");
            assert_eq!(last, Some(trailers), "split at {cut}");
        }
        assert_eq!(decode(b"5\r\nhel", 3), Ok((b"hel".to_vec(), None)));
        assert_eq!(decode(b"5\r\nhelloXX", 0), Err(BadChunk));
    }

    #[test]
    fn frames_are_written_as_chunks_or_as_they_are() {
        let mut out = Vec::new();
        let data = |d: &'static [u8]| Frame::data(Bytes::from_static(d));
        assert!(!put_frame(&mut out, data(b"hello world, hello"), true));
        assert!(!put_frame(&mut out, data(b""), true), "an empty chunk would end the body");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("5"));
        assert!(put_frame(&mut out, Frame::trailers(trailers.clone()), true));
        assert_eq!(out, b"12\r\nhello world, hello\r\n0\r\nx-sum: 5\r\n\r\n");
        out.clear();
        assert!(!put_frame(&mut out, data(b"hello"), false));
        assert!(!put_frame(&mut out, Frame::trailers(trailers), false), "no trailers without chunks");
        assert_eq!(out, b"hello");
    }

    #[test]
    fn malformed_framing_is_an_error() {
        for body in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"fffffffffffffffff\r\n",
            b"0\n",
            b"5 6\r\nhello\r\n",
            b"5;a\nb\r\n",
        ] {
            assert_eq!(end_of(body, 0), Err(BadChunk), "{:?}", String::from_utf8_lossy(body));
        }
    }
}

//! Where a chunked body ends (RFC 9112 §7.1), found while its bytes pass through unchanged:
//! the proxy relays chunked answers as they are and only needs to know their end.

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
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer field line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    FinalLf,
    /// The body has ended.
    Done,
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
    /// Reads the next bytes of the body. Returns how many of them belong to it (fewer than
    /// given only when it ended inside `bytes`) and whether it has ended.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut i = 0;
        while i < bytes.len() && self.state != State::Done {
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
        Ok((i, self.state == State::Done))
    }

    fn step(&mut self, byte: u8) -> Result<State, BadChunk> {
        Ok(match (self.state, byte) {
            (State::SizeStart | State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = u64::from(char::from(byte).to_digit(16).ok_or(BadChunk)?);
                self.size = self.size.checked_mul(16).and_then(|s| s.checked_add(digit)).ok_or(BadChunk)?;
                State::Size
            }
            (State::Size, b';' | b' ' | b'\t') => State::Extension,
            (State::Size | State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b'\n') => return Err(BadChunk),
            (State::Extension, _) => State::Extension,
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data,
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.size = 0;
                State::SizeStart
            }
            (State::TrailerStart, b'\r') => State::FinalLf,
            (State::TrailerStart | State::Trailer, b'\n') => return Err(BadChunk),
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::FinalLf, b'\n') => State::Done,
            _ => return Err(BadChunk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces split at `cut`, returning the end position if the body ends.
    fn end_of(body: &[u8], cut: usize) -> Result<Option<usize>, BadChunk> {
        let mut chunks = Chunks::default();
        let mut at = 0;
        for piece in [&body[..cut], &body[cut..]] {
            let (used, done) = chunks.feed(piece)?;
            at += used;
            if done {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_wherever_the_bytes_are_split() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for cut in 0..=body.len() {
            assert_eq!(end_of(body, cut), Ok(Some(end)), "split at {cut}");
        }
        assert_eq!(end_of(b"0\r\n\r\n", 2), Ok(Some(5)));
    }

    #[test]
    fn an_unfinished_body_has_not_ended() {
        for body in [&b"5\r\nhel"[..], b"5\r\nhello\r\n", b"0\r\n", b"0\r\nx: 1\r\n"] {
            assert_eq!(end_of(body, body.len() / 2), Ok(None), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn malformed_framing_is_an_error() {
        for body in
            [&b"x\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"5\nhello", b"fffffffffffffffff\r\n", b"0\r\nbad\n"]
        {
            assert_eq!(end_of(body, 0), Err(BadChunk), "{:?}", String::from_utf8_lossy(body));
        }
    }
}

//! The nfnetlink framing that ctnetlink and nf_tables share: messages built byte by byte and
//! the kernel's replies read without ever panicking.
//!
//! The layout is the kernel's (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`): a
//! `nlmsghdr` in host byte order, a `nfgenmsg`, then `nlattr`s (length and type in host byte
//! order, padded to 4 bytes) whose values are in network byte order.

/// `sizeof(struct nlmsghdr)`: length, type, flags, sequence number, port id.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nfgenmsg)`: family, version, resource id.
pub const NFGENMSG_LEN: usize = 4;
/// `sizeof(struct nlattr)`: length, type.
pub const NLA_HDRLEN: usize = 4;

/// `NLMSG_ERROR`: an error, or with error 0 an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: answer even on success.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`): every entry.
pub const NLM_F_DUMP: u16 = 0x300;

/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;

/// `NLA_F_NESTED`: set on nested attributes, as libnetfilter_conntrack and libnftnl do.
const NLA_F_NESTED: u16 = 1 << 15;
/// `NLA_TYPE_MASK`: an attribute's type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

/// What was wrong with a message the kernel sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// A netlink message of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The sequence number of the request it answers.
    pub seq: u32,
    /// What it says.
    pub body: Body<'a>,
}

/// What a netlink message says, for a client that reads one type of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// `NLMSG_ERROR`: 0 acknowledges a request, a negative errno refuses it.
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump, with its error (0, or a negative errno).
    Done(i32),
    /// A message of the type the client reads (one entry of a dump): its `nfgenmsg` and
    /// attributes.
    Entry(&'a [u8]),
    /// Anything else (`NLMSG_NOOP`, other messages), which a client skips.
    Other,
}

/// The header of a message: its full type (subsystem in the high byte), flags, sequence
/// number, the `nfgenmsg` family and resource id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `NFNL_SUBSYS_* << 8 | message`.
    pub kind: u16,
    /// `NLM_F_*`.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// `AF_*` or `NFPROTO_*`.
    pub family: u8,
    /// Resource id (the subsystem of a batch), in host order; sent in network order.
    pub res_id: u16,
}

/// Starts a message at the end of `buf`; returns where it starts, for [`finish`].
pub fn begin(buf: &mut Vec<u8>, header: Header) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
    buf.extend_from_slice(&header.kind.to_ne_bytes());
    buf.extend_from_slice(&header.flags.to_ne_bytes());
    buf.extend_from_slice(&header.seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id 0: the kernel fills it in
    buf.extend_from_slice(&[header.family, NFNETLINK_V0]);
    buf.extend_from_slice(&header.res_id.to_be_bytes());
    at
}

/// Sets the length of the message started at `at`.
pub fn finish(buf: &mut [u8], at: usize) {
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Appends an attribute and its padding.
pub fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    put_attr_with(buf, kind, &[value]);
}

/// Appends an attribute whose value is `parts` one after the other, and its padding.
pub fn put_attr_with(buf: &mut Vec<u8>, kind: u16, parts: &[&[u8]]) {
    let value_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u16::try_from(NLA_HDRLEN + value_len).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    parts.iter().for_each(|p| buf.extend_from_slice(p));
    pad(buf);
}

/// Appends a nested attribute whose contents `fill` writes.
pub fn put_nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]); // length, set below
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    fill(buf);
    let len = u16::try_from(buf.len() - at).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Pads `buf` to a multiple of 4 bytes, as every attribute is.
fn pad(buf: &mut Vec<u8>) {
    buf.resize(align(buf.len()), 0);
}

/// `NLA_ALIGN` and `NLMSG_ALIGN`: rounded up to 4.
pub fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// The netlink messages of a received datagram, in order, those of type `entry` read as
/// [`Body::Entry`]; an error ends them.
pub fn messages(datagram: &[u8], entry: u16) -> Messages<'_> {
    Messages { rest: datagram, entry }
}

/// The iterator [`messages`] returns.
#[derive(Debug)]
pub struct Messages<'a> {
    /// What is left to read.
    rest: &'a [u8],
    /// The message type read as an entry.
    entry: u16,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match next_message(self.rest, self.entry) {
            Ok((message, rest)) => {
                self.rest = rest;
                Some(Ok(message))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

/// The first message of `buf` and what follows it.
fn next_message(buf: &[u8], entry: u16) -> Result<(Message<'_>, &[u8]), Malformed> {
    let header = buf.get(..NLMSG_HDRLEN).ok_or(Malformed("netlink header cut short"))?;
    let len = ne_u32(&header[0..4]) as usize;
    let kind = ne_u16(&header[4..6]);
    let seq = ne_u32(&header[8..12]);
    if len < NLMSG_HDRLEN {
        return Err(Malformed("netlink message shorter than its header"));
    }
    let payload = buf.get(NLMSG_HDRLEN..len).ok_or(Malformed("netlink message cut short"))?;
    let rest = buf.get(align(len)..).unwrap_or_default();
    let body = match kind {
        NLMSG_ERROR => Body::Error(error_code(payload).ok_or(Malformed("NLMSG_ERROR without its error"))?),
        // The kernel puts the dump's error after NLMSG_DONE; an empty one is read as success.
        NLMSG_DONE => Body::Done(if payload.is_empty() {
            0
        } else {
            error_code(payload).ok_or(Malformed("NLMSG_DONE cut short"))?
        }),
        k if k == entry => Body::Entry(payload),
        _ => Body::Other,
    };
    Ok((Message { seq, body }, rest))
}

/// The `int error` a `NLMSG_ERROR` or `NLMSG_DONE` starts with.
fn error_code(payload: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(i32::from_ne_bytes(bytes))
}

/// An attribute's value of exactly `N` bytes.
pub fn exact<const N: usize>(value: &[u8], what: &'static str) -> Result<[u8; N], Malformed> {
    value.try_into().map_err(|_| Malformed(what))
}

/// A `u32` in host byte order from 4 bytes.
fn ne_u32(bytes: &[u8]) -> u32 {
    u32::from_ne_bytes(bytes.try_into().unwrap_or_default())
}

/// A `u16` in host byte order from 2 bytes.
fn ne_u16(bytes: &[u8]) -> u16 {
    u16::from_ne_bytes(bytes.try_into().unwrap_or_default())
}

/// The attributes of a buffer, as (type without flags, value); an error ends them.
pub struct Attrs<'a>(pub &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        match next_attr(self.0) {
            Ok((kind, value, rest)) => {
                self.0 = rest;
                Some(Ok((kind, value)))
            }
            Err(error) => {
                self.0 = &[];
                Some(Err(error))
            }
        }
    }
}

/// The first attribute of `buf`: its type, its value and what follows it.
fn next_attr(buf: &[u8]) -> Result<(u16, &[u8], &[u8]), Malformed> {
    let header = buf.get(..NLA_HDRLEN).ok_or(Malformed("attribute header cut short"))?;
    let len = usize::from(ne_u16(&header[0..2]));
    let kind = ne_u16(&header[2..4]) & NLA_TYPE_MASK;
    if len < NLA_HDRLEN {
        return Err(Malformed("attribute shorter than its header"));
    }
    let value = buf.get(NLA_HDRLEN..len).ok_or(Malformed("attribute cut short"))?;
    let rest = buf.get(align(len)..).unwrap_or_default();
    Ok((kind, value, rest))
}

//! Encoded zone answers, kept for the life of one Plan: a plain query for a name and type
//! already answered gets a copy of that answer with its own id, RD bit and spelling of the
//! name, without parsing or encoding a message. A new Plan starts an empty cache, so answers
//! follow the Plan the moment it changes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Answers kept at most per Plan (about the names of a large cluster, times a few types).
const MAX_ENTRIES: usize = 100_000;

/// What makes two plain queries get the same answer bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Key {
    /// The question's name in wire form, lower-cased.
    name: Box<[u8]>,
    qtype: u16,
    /// The EDNS payload size offered (0: no EDNS).
    edns: u16,
    udp: bool,
}

/// A plain query: the key of its answer and where its question's name ends.
pub(crate) struct Plain {
    pub key: Key,
    name_end: usize,
}

/// Reads a query that a cached answer can serve: a standard query (opcode 0, not a response)
/// with one question of class IN, no compression, no answer or authority records, and at most
/// an OPT record without options. Anything else is `None` (the full path takes it).
pub(crate) fn plain(query: &[u8], udp: bool) -> Option<Plain> {
    let header = query.get(..12)?;
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    // QR and opcode are the top five bits of byte 2.
    if header[2] & 0xf8 != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut at = 12;
    let mut name = Vec::with_capacity(64);
    loop {
        let len = usize::from(*query.get(at)?);
        name.push(u8::try_from(len).ok()?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        name.extend(query.get(at + 1..at + 1 + len)?.iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
    }
    let name_end = at + 1;
    let fixed = query.get(name_end..name_end + 4)?;
    let (qtype, class) = (u16::from_be_bytes([fixed[0], fixed[1]]), u16::from_be_bytes([fixed[2], fixed[3]]));
    if class != 1 {
        return None;
    }
    let rest = &query[name_end + 4..];
    let edns = match (count(10), rest) {
        (0, []) => 0,
        // Root name, type OPT (41), class = payload size, TTL (version 0), no options.
        (1, [0, 0, 41, p1, p2, _, 0, _, _, 0, 0]) => u16::from_be_bytes([*p1, *p2]).max(1),
        _ => return None,
    };
    Some(Plain { key: Key { name: name.into_boxed_slice(), qtype, edns, udp }, name_end })
}

/// The answers of one Plan.
#[derive(Default)]
pub(crate) struct AnswerCache {
    answers: Mutex<HashMap<Key, Box<[u8]>>>,
}

impl AnswerCache {
    /// The kept answer for `plain`, made the answer to `query`.
    pub(crate) fn get(&self, plain: &Plain, query: &[u8]) -> Option<Vec<u8>> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut answer = answers.get(&plain.key)?.to_vec();
        drop(answers);
        answer.get_mut(..2)?.copy_from_slice(query.get(..2)?);
        // The RD bit is the query's.
        answer[2] = (answer[2] & !1) | (query[2] & 1);
        // The question (and the owners that point at it) in the query's spelling.
        answer.get_mut(12..plain.name_end)?.copy_from_slice(query.get(12..plain.name_end)?);
        Some(answer)
    }

    /// Keeps `answer` for queries like `plain`.
    pub(crate) fn put(&self, plain: Plain, answer: &[u8]) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() < MAX_ENTRIES {
            answers.insert(plain.key, answer.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query with id `id`, RD as given, for `labels`, type A, with an optional OPT record.
    fn query(id: u16, rd: bool, labels: &[&str], edns: Option<u16>) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend([u8::from(rd), 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for label in labels {
            q.push(u8::try_from(label.len()).unwrap_or(0));
            q.extend(label.as_bytes());
        }
        q.extend([0, 0, 1, 0, 1]);
        if let Some(size) = edns {
            q.extend([0, 0, 41]);
            q.extend(size.to_be_bytes());
            q.extend([0, 0, 0, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn plain_queries_share_a_key_whatever_their_case_id_and_rd() {
        let a = plain(&query(1, true, &["Web", "default"], None), true).map(|p| p.key);
        let b = plain(&query(2, false, &["web", "DEFAULT"], None), true).map(|p| p.key);
        assert!(a.is_some() && a == b);
        let with_edns = plain(&query(1, true, &["web", "default"], Some(1232)), true).map(|p| p.key);
        assert!(with_edns.is_some() && with_edns != a, "EDNS answers are kept apart");
        let over_tcp = plain(&query(1, true, &["web", "default"], None), false).map(|p| p.key);
        assert!(over_tcp != a, "TCP answers are kept apart");
        let mut opcode = query(1, true, &["web"], None);
        opcode[2] |= 0x10;
        assert!(plain(&opcode, true).is_none());
        let mut trailing = query(1, true, &["web"], None);
        trailing.push(0);
        assert!(plain(&trailing, true).is_none());
        assert!(plain(&[0; 11], true).is_none());
    }

    #[test]
    fn a_kept_answer_takes_the_id_rd_and_spelling_of_each_query() {
        let cache = AnswerCache::default();
        let first = query(7, true, &["web", "default"], None);
        let mut answer = first.clone();
        answer[2] |= 0x84; // QR and AA
        answer.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]);
        cache.put(plain(&first, true).unwrap_or_else(|| panic!("plain")), &answer);
        let second = query(9, false, &["WEB", "Default"], None);
        let plain_second = plain(&second, true).unwrap_or_else(|| panic!("plain"));
        let served = cache.get(&plain_second, &second).unwrap_or_default();
        assert_eq!(&served[..2], &[0, 9]);
        assert_eq!(served[2] & 1, 0, "RD as asked");
        assert_eq!(served[2] & 0x84, 0x84);
        assert_eq!(&served[12..plain_second.name_end], &second[12..plain_second.name_end]);
        assert_eq!(&served[plain_second.name_end..], &answer[plain_second.name_end..]);
    }
}

//! A response message in wire form, every name compressed against every name before it, and
//! cut at a record boundary when it does not fit.
//!
//! hickory-proto's encoder stops compressing after 64 names (a bound on its linear search), so
//! a large answer grew by 70 % from its 65th name on: the SRV answer of a 1,000-endpoint
//! headless Service went past 65,535 bytes at 710 records, and came cut inside a record. Here
//! suffixes are found in a hash map, so all of them are compressed at no more cost; records are
//! still written by hickory, one at a time, so their contents are the library's. A differential
//! test holds this to what hickory decodes from its own encoding.

use std::collections::HashMap;

use hickory_proto::op::{Header, HeaderCounts, Message};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// Offsets a compression pointer can reach: its 14 bits.
const POINTER_REACH: usize = 0x3FFF;

/// The wire form of `message` in at most `limit` bytes. Records that do not fit are left out
/// whole: additional records first (without TC: the answer is whole without them, RFC 2181
/// §9), then answer and authority records from the end, with TC set. `None` when even the
/// header, question and OPT record do not fit, or a record cannot be encoded.
pub(crate) fn encode(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let mut out = Writer { bytes: vec![0; 12], suffixes: HashMap::new() };
    for query in &message.queries {
        out.name(query.name())?;
        out.bytes.extend_from_slice(&u16::from(query.query_type()).to_be_bytes());
        out.bytes.extend_from_slice(&u16::from(query.query_class()).to_be_bytes());
    }
    let opt = match &message.edns {
        Some(edns) => {
            let mut edns = edns.clone();
            // The upper eight bits of an extended code (BADVERS) travel in the OPT record.
            edns.set_rcode_high(message.metadata.response_code.high());
            Some(standalone(&Record::from(&edns))?)
        }
        None => None,
    };
    let room = limit.checked_sub(opt.as_ref().map_or(0, Vec::len))?;
    if out.bytes.len() > room {
        return None;
    }
    let mut truncated = false;
    let answers = out.records(&message.answers, room, &mut truncated)?;
    let authorities = if truncated { 0 } else { out.records(&message.authorities, room, &mut truncated)? };
    let mut additionals = if truncated { 0 } else { out.records(&message.additionals, room, &mut false)? };
    if let Some(opt) = opt {
        out.bytes.extend_from_slice(&opt);
        additionals += 1;
    }
    let mut metadata = message.metadata;
    metadata.truncation |= truncated;
    let counts = HeaderCounts {
        queries: u16::try_from(message.queries.len()).ok()?,
        answers,
        authorities,
        additionals,
    };
    let mut header = Vec::with_capacity(12);
    Header { metadata, counts }.emit(&mut BinEncoder::new(&mut header)).ok()?;
    out.bytes[..12].copy_from_slice(header.get(..12)?);
    Some(out.bytes)
}

/// A message being written, with where each name suffix written so far starts.
struct Writer {
    bytes: Vec<u8>,
    /// A suffix's labels in wire form (uncompressed, as written) → its offset. Matched exactly,
    /// so a name keeps the spelling it was given.
    suffixes: HashMap<Vec<u8>, u16>,
}

impl Writer {
    /// Writes `name`: its labels up to the longest suffix already written, then a pointer.
    fn name(&mut self, name: &Name) -> Option<()> {
        self.write_name(name, true)
    }

    /// Writes `name` whole, as where it may not be compressed; later names may still point
    /// into it.
    fn name_uncompressed(&mut self, name: &Name) -> Option<()> {
        self.write_name(name, false)
    }

    fn write_name(&mut self, name: &Name, compress: bool) -> Option<()> {
        let labels: Vec<&[u8]> = name.iter().collect();
        // Labels are at most 63 bytes long (a Name checks it), so their length is one byte.
        let wire = |from: usize| -> Vec<u8> {
            let lengths = labels[from..].iter().map(|label| u8::try_from(label.len()).unwrap_or(u8::MAX));
            lengths
                .zip(&labels[from..])
                .flat_map(|(len, label)| std::iter::once(len).chain(label.iter().copied()))
                .collect()
        };
        for (i, label) in labels.iter().enumerate() {
            let suffix = wire(i);
            if compress && let Some(&at) = self.suffixes.get(&suffix) {
                self.bytes.extend_from_slice(&(0xC000 | at).to_be_bytes());
                return Some(());
            }
            let offset = self.bytes.len();
            if offset <= POINTER_REACH {
                self.suffixes.entry(suffix).or_insert(u16::try_from(offset).ok()?);
            }
            self.bytes.push(u8::try_from(label.len()).ok()?);
            self.bytes.extend_from_slice(label);
        }
        self.bytes.push(0);
        Some(())
    }

    /// Writes as many of `records` as fit in `room` bytes and returns how many; sets
    /// `truncated` when one did not fit.
    fn records(&mut self, records: &[Record], room: usize, truncated: &mut bool) -> Option<u16> {
        let mut written = 0u16;
        for record in records {
            let start = self.bytes.len();
            let known = self.suffixes.len();
            self.record(record)?;
            if self.bytes.len() > room {
                self.bytes.truncate(start);
                // Suffixes written by the record left out must not be pointed at.
                if self.suffixes.len() != known {
                    self.suffixes.retain(|_, at| usize::from(*at) < start);
                }
                *truncated = true;
                break;
            }
            written += 1;
        }
        Some(written)
    }

    fn record(&mut self, record: &Record) -> Option<()> {
        self.name(&record.name)?;
        self.bytes.extend_from_slice(&u16::from(record.data.record_type()).to_be_bytes());
        self.bytes.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
        self.bytes.extend_from_slice(&record.ttl.to_be_bytes());
        let length_at = self.bytes.len();
        self.bytes.extend_from_slice(&[0, 0]);
        // Names inside RDATA may be compressed only in the types of RFC 1035 (RFC 3597 §4);
        // SRV targets may not (RFC 2782).
        match &record.data {
            RData::CNAME(target) => self.name(&target.0)?,
            RData::NS(target) => self.name(&target.0)?,
            RData::PTR(target) => self.name(&target.0)?,
            RData::SRV(srv) => {
                for value in [srv.priority, srv.weight, srv.port] {
                    self.bytes.extend_from_slice(&value.to_be_bytes());
                }
                self.name_uncompressed(&srv.target)?;
            }
            RData::SOA(soa) => {
                self.name(&soa.mname)?;
                self.name(&soa.rname)?;
                self.bytes.extend_from_slice(&soa.serial.to_be_bytes());
                for value in [soa.refresh, soa.retry, soa.expire] {
                    self.bytes.extend_from_slice(&value.to_be_bytes());
                }
                self.bytes.extend_from_slice(&soa.minimum.to_be_bytes());
            }
            other => {
                let mut data = Vec::new();
                other.emit(&mut BinEncoder::new(&mut data)).ok()?;
                self.bytes.extend_from_slice(&data);
            }
        }
        let length = u16::try_from(self.bytes.len() - length_at - 2).ok()?;
        self.bytes[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
        Some(())
    }
}

/// One record encoded on its own (the OPT record: its name is the root, nothing to compress).
fn standalone(record: &Record) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    record.emit(&mut BinEncoder::new(&mut bytes)).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Edns, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
    use hickory_proto::rr::{DNSClass, RecordType};

    use super::*;

    /// A small deterministic generator: the same messages on every run.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(self.0 >> 33).unwrap_or(0) % n
        }
    }

    /// A name from few labels, so that names share suffixes, in mixed case now and then.
    fn name(rng: &mut Lcg) -> Name {
        const LABELS: [&str; 8] = ["web", "db-0", "default", "svc", "_http", "_tcp", "Cluster", "local"];
        let depth = 1 + rng.below(5);
        let mut text: Vec<&str> = (0..depth).map(|_| LABELS[rng.below(LABELS.len())]).collect();
        if rng.below(2) == 0 {
            text.extend(["svc", "cluster", "local"]);
        }
        Name::from_ascii(format!("{}.", text.join("."))).expect("name")
    }

    fn record(rng: &mut Lcg) -> Record {
        let owner = name(rng);
        let data = match rng.below(9) {
            0 => RData::A(A(Ipv4Addr::from(u32::try_from(rng.below(1 << 30)).unwrap_or(1)))),
            1 => RData::AAAA(AAAA(Ipv6Addr::from(u128::try_from(rng.below(1 << 30)).unwrap_or(1)))),
            2 => RData::SRV(SRV::new(0, 50, 8080, name(rng))),
            3 => RData::PTR(PTR(name(rng))),
            4 => RData::CNAME(CNAME(name(rng))),
            5 => RData::NS(NS(name(rng))),
            6 => RData::TXT(TXT::new(vec!["1.1.0".to_owned()])),
            _ => RData::SOA(SOA::new(name(rng), name(rng), 7, 5, 5, 5, 5)),
        };
        Record::from_rdata(owner, 5, data)
    }

    fn message(rng: &mut Lcg) -> Message {
        let mut message = Message::response(u16::try_from(rng.below(65_536)).unwrap_or(0), OpCode::Query);
        message.metadata.message_type = MessageType::Response;
        message.metadata.authoritative = rng.below(2) == 0;
        message.metadata.recursion_desired = rng.below(2) == 0;
        message.metadata.recursion_available = true;
        let codes =
            [ResponseCode::NoError, ResponseCode::NXDomain, ResponseCode::ServFail, ResponseCode::BADVERS];
        message.metadata.response_code = codes[rng.below(codes.len())];
        message.add_query(Query::query(name(rng), RecordType::SRV));
        for _ in 0..rng.below(12) {
            message.add_answer(record(rng));
        }
        for _ in 0..rng.below(3) {
            message.add_authority(record(rng));
        }
        for _ in 0..rng.below(6) {
            message.add_additional(record(rng));
        }
        // An extended code needs EDNS to travel.
        if rng.below(2) == 0 || message.metadata.response_code == ResponseCode::BADVERS {
            message.set_edns(Edns::new());
        }
        message
    }

    /// What a client reads from `bytes`, every name with the spelling it has on the wire.
    fn read(bytes: &[u8]) -> Vec<String> {
        let message = Message::from_vec(bytes).expect("decodes");
        let mut seen = vec![format!("{:?} {:?}", message.metadata, message.queries)];
        for (section, records) in
            [("an", &message.answers), ("ns", &message.authorities), ("ar", &message.additionals)]
        {
            seen.extend(records.iter().map(|r| format!("{section} {r} {:?}", r.dns_class)));
        }
        seen.push(format!("{:?}", message.edns));
        seen
    }

    #[test]
    fn every_message_reads_as_hickorys_own_encoding_reads_and_is_no_longer() {
        let mut rng = Lcg(7);
        for _ in 0..300 {
            let message = message(&mut rng);
            let theirs = message.to_vec().expect("hickory encodes");
            let ours = encode(&message, 65_535).expect("encodes");
            assert_eq!(read(&ours), read(&theirs), "{message:?}");
            assert!(ours.len() <= theirs.len(), "{} > {}\n{message}", ours.len(), theirs.len());
        }
    }

    #[test]
    fn a_message_too_large_ends_at_a_record_boundary() {
        let mut message = Message::response(1, OpCode::Query);
        let owner = Name::from_ascii("_http._tcp.db.default.svc.cluster.local.").expect("name");
        message.add_query(Query::query(owner.clone(), RecordType::SRV));
        message.set_edns(Edns::new());
        for i in 0..3_000u32 {
            let target = Name::from_ascii(format!("db-{i}.db.default.svc.cluster.local.")).expect("name");
            message.add_additional(Record::from_rdata(target.clone(), 5, RData::A(A(Ipv4Addr::from(i)))));
            message.add_answer(Record::from_rdata(owner.clone(), 5, RData::SRV(SRV::new(0, 1, 80, target))));
        }
        let bytes = encode(&message, 65_535).expect("encodes");
        assert!(bytes.len() <= 65_535);
        let read = Message::from_vec(&bytes).expect("decodes whole records only");
        assert!(read.metadata.truncation);
        assert!(read.answers.len() > 1_000 && read.answers.len() < 3_000, "{}", read.answers.len());
        assert!(read.additionals.is_empty(), "no room left for additional records");
        assert!(read.edns.is_some(), "the OPT record always has its room");
        // Additional records that do not fit are left out without TC.
        let mut small = message.clone();
        small.answers.truncate(10);
        let read = Message::from_vec(&encode(&small, 1_232).expect("encodes")).expect("decodes");
        assert!(!read.metadata.truncation && read.answers.len() == 10);
        assert!(!read.additionals.is_empty() && read.additionals.len() < 3_000);
        assert_eq!(read.queries[0].query_class(), DNSClass::IN);
    }
}

//! DNS messages in and out: a query's bytes become the response's bytes, using [`answer`]
//! for the decision. Answers keep the query's spelling of the name; UDP answers that do not
//! fit (512 bytes without EDNS, else the client's size up to 1232) are sent truncated (TC).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use portico_plan::dns::{DnsZone, RecordData};

use crate::answer::{Answer, QueryType, Rcode, Reply, Rr, answer};

/// UDP payload without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The largest UDP payload offered, whatever the client advertises (DNS flag day 2020).
const MAX_UDP: u16 = 1232;
/// The largest message: what TCP's two-byte length prefix can say.
const MAX_MESSAGE: usize = 65_535;

/// What the server serves besides the Plan's records.
#[derive(Clone, Debug)]
pub struct Settings {
    /// TTL of every answer, and of negative answers (the SOA minimum).
    pub ttl: u32,
    /// The server's own name, in the apex's SOA and NS records.
    pub server_name: String,
    /// The SOA serial: the Plan's generation.
    pub serial: u32,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// Send these bytes back.
    Bytes(Vec<u8>),
    /// Relay the query upstream.
    Forward,
    /// The answer ends in a CNAME out of the cluster: resolve its target upstream and append
    /// what comes back ([`Chase::finish`]).
    Chase(Box<Chase>),
    /// Not a DNS query worth answering.
    Drop,
}

/// The response to `query`; `udp` limits its size to what the client can take over UDP.
pub fn respond(zone: Option<&DnsZone>, query: &[u8], settings: &Settings, udp: bool) -> Response {
    let request = match Message::from_vec(query) {
        Ok(request) if request.metadata.message_type == MessageType::Query => request,
        Ok(_) => return Response::Drop,
        Err(_) => return format_error(query),
    };
    let (mut response, limit) = skeleton(&request);
    // An EDNS version this server does not speak (RFC 6891 §6.1.3): BADVERS, with the OPT
    // record saying version 0.
    if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        response.metadata.response_code = ResponseCode::BADVERS;
        return encode(&response, udp, limit);
    }
    let question = match request.queries.as_slice() {
        [question]
            if request.metadata.op_code == OpCode::Query
                && matches!(question.query_class, DNSClass::IN | DNSClass::ANY) =>
        {
            question
        }
        [_] if request.metadata.op_code != OpCode::Query => {
            response.metadata.response_code = ResponseCode::NotImp;
            return encode(&response, udp, limit);
        }
        // Another class (CHAOS, Hesiod): a well-formed query this server has no data for.
        [_] => {
            response.metadata.response_code = ResponseCode::Refused;
            return encode(&response, udp, limit);
        }
        _ => {
            response.metadata.response_code = ResponseCode::FormErr;
            return encode(&response, udp, limit);
        }
    };
    let asked = question.name.to_ascii();
    let (rcode, found) = match answer(zone, &asked, query_type(question.query_type)) {
        Reply::Forward => return Response::Forward,
        Reply::Zone(rcode, found) => (rcode, found),
    };
    response.metadata.authoritative = rcode != Rcode::ServFail;
    response.metadata.response_code = match rcode {
        Rcode::NoError => ResponseCode::NoError,
        Rcode::NxDomain => ResponseCode::NXDomain,
        Rcode::ServFail => ResponseCode::ServFail,
    };
    if let Some(zone) = zone {
        fill(&mut response, zone, &found, &question.name, question.query_type, settings);
    }
    match found.resolve_upstream {
        Some(target) => {
            Response::Chase(Box::new(Chase { response, target, qtype: question.query_type, udp, limit }))
        }
        None => encode(&response, udp, limit),
    }
}

/// A response to `request` with its question, flags and EDNS, and the UDP size it may take.
fn skeleton(request: &Message) -> (Message, usize) {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    let limit =
        request.edns.as_ref().map_or(CLASSIC_UDP, |e| usize::from(e.max_payload().clamp(512, MAX_UDP)));
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().clamp(512, MAX_UDP));
        response.set_edns(ours);
    }
    (response, limit)
}

/// A query for `name` (no trailing dot) and `qtype`, with the given id, recursion desired.
pub fn question(id: u16, name: &str, qtype: RecordType) -> Option<Vec<u8>> {
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(hickory_proto::op::Query::query(Name::from_ascii(format!("{name}.")).ok()?, qtype));
    query.to_vec().ok()
}

/// The zone's records as DNS records with `ttl`.
pub fn zone_records(records: &[Rr], ttl: u32) -> Vec<Record> {
    records
        .iter()
        .filter_map(|rr| {
            Some(Record::from_rdata(Name::from_ascii(format!("{}.", rr.name)).ok()?, ttl, rdata(&rr.data)?))
        })
        .collect()
}

/// The answer to `query` found by a server-side search: a CNAME from the name asked to
/// `found`, then `records` (the answer for `found`).
pub fn searched(query: &[u8], found: &str, records: Vec<Record>, ttl: u32, udp: bool) -> Response {
    let Ok(request) = Message::from_vec(query) else { return Response::Drop };
    let Some(asked) = request.queries.first().map(|q| q.name.clone()) else { return Response::Drop };
    let Ok(target) = Name::from_ascii(format!("{found}.")) else { return Response::Drop };
    let (mut response, limit) = skeleton(&request);
    response.metadata.authoritative = true;
    response.add_answer(Record::from_rdata(asked, ttl, RData::CNAME(CNAME(target))));
    response.add_answers(records);
    encode(&response, udp, limit)
}

/// An answer waiting for the upstream records of its CNAME's target.
#[derive(Debug, PartialEq, Eq)]
pub struct Chase {
    response: Message,
    target: String,
    qtype: RecordType,
    udp: bool,
    limit: usize,
}

impl Chase {
    /// The query to send upstream for the target (same id as the client's).
    pub fn query(&self) -> Option<Vec<u8>> {
        question(self.response.metadata.id, &self.target, self.qtype)
    }

    /// The answer with the upstream one's records appended after the CNAME, and its code when
    /// the target does not exist; without an upstream answer, the CNAME alone (clients follow
    /// it themselves). When the target has no records of the type (NXDOMAIN or NODATA), the
    /// upstream's authority (its SOA) comes along, so that resolvers can cache the negative
    /// answer for as long as the target's zone says.
    pub fn finish(mut self, upstream: Option<&[u8]>) -> Response {
        if let Some(answer) = upstream.and_then(|bytes| Message::from_vec(bytes).ok()) {
            if answer.metadata.response_code == ResponseCode::NXDomain {
                self.response.metadata.response_code = ResponseCode::NXDomain;
            }
            let negative = answer.answers.iter().all(|r| r.record_type() == RecordType::CNAME);
            self.response.add_answers(answer.answers);
            if negative {
                self.response.add_authorities(
                    answer.authorities.into_iter().filter(|r| r.record_type() == RecordType::SOA),
                );
            }
        }
        encode(&self.response, self.udp, self.limit)
    }
}

fn fill(
    response: &mut Message,
    zone: &DnsZone,
    found: &Answer,
    asked: &Name,
    qtype: RecordType,
    settings: &Settings,
) {
    let canonical_asked = asked.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    // The query's own spelling for its name, so that the answer keeps its case.
    let owner = |name: &str| {
        if name == canonical_asked { Some(asked.clone()) } else { Name::from_ascii(format!("{name}.")).ok() }
    };
    let record = |rr: &Rr| Some(Record::from_rdata(owner(&rr.name)?, settings.ttl, rdata(&rr.data)?));
    response.add_answers(found.answers.iter().filter_map(record));
    if found.server_records {
        let apex = owner(&zone.apex);
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            response.add_answers(apex.clone().and_then(|apex| soa(zone, apex, settings)));
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            let server = Name::from_ascii(format!("{}.", settings.server_name)).ok();
            response.add_answers(
                apex.zip(server).map(|(apex, ns)| Record::from_rdata(apex, settings.ttl, RData::NS(NS(ns)))),
            );
        }
    }
    if found.soa_in_authority {
        let apex = Name::from_ascii(format!("{}.", zone.apex)).ok();
        response.add_authorities(apex.and_then(|apex| soa(zone, apex, settings)));
    }
    response.add_additionals(found.additionals.iter().filter_map(record));
}

/// The apex's SOA record.
fn soa(zone: &DnsZone, apex: Name, settings: &Settings) -> Option<Record> {
    let mname = Name::from_ascii(format!("{}.", settings.server_name)).ok()?;
    let rname = Name::from_ascii(format!("hostmaster.{}.", zone.apex)).ok()?;
    let ttl = i32::try_from(settings.ttl).unwrap_or(i32::MAX);
    let data = SOA::new(mname, rname, settings.serial, ttl, ttl, ttl, settings.ttl);
    Some(Record::from_rdata(apex, settings.ttl, RData::SOA(data)))
}

fn rdata(data: &RecordData) -> Option<RData> {
    let name = |text: &str| Name::from_ascii(format!("{text}.")).ok();
    Some(match data {
        RecordData::Address(std::net::IpAddr::V4(v4)) => RData::A(A(*v4)),
        RecordData::Address(std::net::IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
        RecordData::Srv { priority, weight, port, target } => {
            RData::SRV(SRV::new(*priority, *weight, *port, name(target)?))
        }
        RecordData::Ptr(target) => RData::PTR(PTR(name(target)?)),
        RecordData::Cname(target) => RData::CNAME(CNAME(name(target)?)),
        RecordData::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
    })
}

pub(crate) fn query_type(record_type: RecordType) -> QueryType {
    match record_type {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::SRV => QueryType::Srv,
        RecordType::PTR => QueryType::Ptr,
        RecordType::CNAME => QueryType::Cname,
        RecordType::TXT => QueryType::Txt,
        RecordType::SOA => QueryType::Soa,
        RecordType::NS => QueryType::Ns,
        RecordType::ANY => QueryType::Any,
        other => QueryType::Other(u16::from(other)),
    }
}

/// Encodes `response` in `limit` bytes over UDP, 65,535 over TCP: one that does not fit goes
/// out cut at a record boundary with TC set (as CoreDNS does), for the client to ask again
/// over TCP, or to take what came over TCP.
fn encode(response: &Message, udp: bool, limit: usize) -> Response {
    let limit = if udp { limit } else { MAX_MESSAGE };
    crate::encode::encode(response, limit).map_or(Response::Drop, Response::Bytes)
}

/// A response with no records and `rcode` to a query that parses (else nothing to send).
pub fn error_response(query: &[u8], rcode: ResponseCode) -> Response {
    match Message::from_vec(query) {
        Ok(request) => {
            let mut response = Message::response(request.metadata.id, request.metadata.op_code);
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            response.metadata.recursion_available = rcode != ResponseCode::Refused;
            response.metadata.response_code = rcode;
            response.add_queries(request.queries);
            response.to_vec().map_or(Response::Drop, Response::Bytes)
        }
        Err(_) => Response::Drop,
    }
}

/// FORMERR for a message that does not parse, when at least its header is there.
fn format_error(query: &[u8]) -> Response {
    let Some(id) = query.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return Response::Drop };
    if query.len() < 12 {
        return Response::Drop;
    }
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .map_or(Response::Drop, Response::Bytes)
}

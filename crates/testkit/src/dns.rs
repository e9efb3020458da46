//! The pieces of a DNS client that tests share: a query, and the addresses in an answer.

use std::net::IpAddr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// A query with the id `id` for the records of type `qtype` at `name` (written in ASCII), to
/// add flags to or encode with `to_vec`.
pub fn query(name: &str, qtype: RecordType, id: u16) -> Message {
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(name, qtype));
    message
}

/// The addresses of the A records in the answer section of `answer`, in order.
pub fn a_records(answer: &Message) -> Vec<IpAddr> {
    answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

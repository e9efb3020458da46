//! Query bytes in, response bytes out: the sections, codes and flags a client sees.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use portico_dns::{Response, Settings, respond};
use portico_plan::dns::{DnsZone, RecordData};

fn settings() -> Settings {
    Settings { ttl: 5, server_name: "ns.dns.cluster.local".into(), serial: 42 }
}

/// A ClusterIP Service and a headless one with `wide` endpoints.
fn zone(wide: u32) -> DnsZone {
    let mut records = BTreeMap::new();
    records.insert(
        "web.default.svc.cluster.local".to_owned(),
        vec![RecordData::Address(IpAddr::from([10, 96, 0, 10]))],
    );
    let many = (0..wide).map(|i| RecordData::Address(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))).collect();
    records.insert("wide.default.svc.cluster.local".to_owned(), many);
    let empty_nonterminals =
        ["svc.cluster.local", "default.svc.cluster.local"].into_iter().map(str::to_owned).collect();
    DnsZone { apex: "cluster.local".into(), records, empty_nonterminals }
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = portico_testkit::dns::query(name, qtype, 7);
    message.metadata.recursion_desired = true;
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

fn ask(zone: Option<&DnsZone>, name: &str, qtype: RecordType, edns: Option<u16>, udp: bool) -> Message {
    match respond(zone, &query(name, qtype, edns), &settings(), udp) {
        Response::Bytes(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn answers_keep_the_query_case_and_are_authoritative() {
    let zone = zone(2);
    let answer = ask(Some(&zone), "Web.Default.SVC.cluster.local.", RecordType::A, None, true);
    assert_eq!(answer.metadata.id, 7);
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(
        answer.metadata.authoritative && answer.metadata.recursion_desired && !answer.metadata.truncation
    );
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].name.to_ascii(), "Web.Default.SVC.cluster.local.");
    assert_eq!(answer.answers[0].ttl, 5);
    assert_eq!(answer.answers[0].data, RData::A(hickory_proto::rr::rdata::A([10, 96, 0, 10].into())));
}

#[test]
fn negative_answers_carry_the_soa() {
    let zone = zone(2);
    for (name, qtype, rcode) in [
        ("web.default.svc.cluster.local.", RecordType::AAAA, ResponseCode::NoError),
        ("default.svc.cluster.local.", RecordType::A, ResponseCode::NoError),
        ("nope.default.svc.cluster.local.", RecordType::A, ResponseCode::NXDomain),
    ] {
        let answer = ask(Some(&zone), name, qtype, None, true);
        assert_eq!(answer.metadata.response_code, rcode, "{name}");
        assert!(answer.answers.is_empty(), "{name}");
        assert_eq!(answer.authorities.len(), 1, "{name}");
        let RData::SOA(soa) = &answer.authorities[0].data else { panic!("{name}: {:?}", answer.authorities) };
        assert_eq!(
            (soa.serial, soa.minimum, answer.authorities[0].name.to_ascii()),
            (42, 5, "cluster.local.".to_owned())
        );
    }
    let soa = ask(Some(&zone), "cluster.local.", RecordType::SOA, None, true);
    assert_eq!((soa.answers.len(), soa.authorities.len()), (1, 0));
    let ns = ask(Some(&zone), "cluster.local.", RecordType::NS, None, true);
    assert_eq!(
        ns.answers[0].data,
        RData::NS(hickory_proto::rr::rdata::NS(Name::from_ascii("ns.dns.cluster.local.").unwrap()))
    );
}

#[test]
fn servfail_before_the_first_plan_forward_outside_and_formerr_for_garbage() {
    let answer = ask(None, "web.default.svc.cluster.local.", RecordType::A, None, true);
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    let zone = zone(2);
    assert_eq!(
        respond(Some(&zone), &query("example.com.", RecordType::A, None), &settings(), true),
        Response::Forward
    );
    let mut garbage = query("web.default.svc.cluster.local.", RecordType::A, None);
    garbage.truncate(15);
    match respond(Some(&zone), &garbage, &settings(), true) {
        Response::Bytes(bytes) => {
            assert_eq!(Message::from_vec(&bytes).unwrap().metadata.response_code, ResponseCode::FormErr)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(respond(Some(&zone), &[1, 2, 3], &settings(), true), Response::Drop);
}

#[test]
fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let wide = zone(1000);
    let name = "wide.default.svc.cluster.local.";
    let classic = ask(Some(&wide), name, RecordType::A, None, true);
    // Cut at a record boundary, as CoreDNS does: as many whole records as fit in 512 bytes.
    assert!(classic.metadata.truncation && !classic.answers.is_empty() && classic.answers.len() < 1000);
    assert_eq!(classic.queries.len(), 1, "the question stays");
    // EDNS: up to the client's size, capped at 1232; still too small for 1,000 records.
    let edns = ask(Some(&wide), name, RecordType::A, Some(4096), true);
    assert!(edns.metadata.truncation);
    assert_eq!(edns.edns.as_ref().map(Edns::max_payload), Some(1232));
    let tcp = ask(Some(&wide), name, RecordType::A, None, false);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 1000);
    // A small answer fits in 512 bytes.
    let small = zone(20);
    let fits = ask(Some(&small), name, RecordType::A, None, true);
    assert!(!fits.metadata.truncation && fits.answers.len() == 20);
}

/// A headless Service with `n` endpoints: its SRV records and each target's address.
fn headless(n: u32) -> DnsZone {
    let mut zone = zone(1);
    let service = "db.default.svc.cluster.local";
    let mut srv = Vec::new();
    for i in 0..n {
        let address = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i));
        let target = format!("{}.{service}", address.to_string().replace('.', "-"));
        zone.records.insert(target.clone(), vec![RecordData::Address(address)]);
        srv.push(RecordData::Srv { priority: 0, weight: 1, port: 5432, target });
    }
    zone.records.insert(format!("_pg._tcp.{service}"), srv);
    zone
}

#[test]
fn a_thousand_endpoints_fit_one_tcp_answer_and_more_end_at_a_record_boundary() {
    let name = "_pg._tcp.db.default.svc.cluster.local.";
    let bytes =
        |zone: &DnsZone| match respond(Some(zone), &query(name, RecordType::SRV, None), &settings(), false) {
            Response::Bytes(bytes) => bytes,
            other => panic!("{other:?}"),
        };
    // Every owner name compressed: 1,000 SRV records in about 59 KB (hickory's own encoder
    // stopped compressing after 64 names and cut the answer at 710, inside a record).
    let mut zone = headless(1000);
    let thousand = bytes(&zone);
    let answer = Message::from_vec(&thousand).unwrap();
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 1000);
    assert!(thousand.len() <= 65_535, "{} bytes", thousand.len());
    // The targets' addresses fill what room is left, without TC (RFC 2181 §9).
    assert!(
        !answer.additionals.is_empty() && answer.additionals.len() < 1000,
        "{}",
        answer.additionals.len()
    );
    zone.records.retain(|name, _| name.starts_with("_pg."));
    let alone = bytes(&zone);
    assert!(alone.len() < 60_000, "1,000 SRV records in {} bytes", alone.len());
    // Past 65,535 bytes: whole records up to the limit, then TC.
    let more = bytes(&headless(2000));
    assert!(more.len() <= 65_535);
    let answer = Message::from_vec(&more).unwrap();
    assert!(answer.metadata.truncation);
    assert!(answer.answers.len() > 1000 && answer.answers.len() < 2000, "{}", answer.answers.len());
}

#[test]
fn an_unknown_edns_version_gets_badvers_and_other_classes_are_refused() {
    let zone = zone(2);
    let name = "web.default.svc.cluster.local.";
    // EDNS version 1 (RFC 6891 §6.1.3): BADVERS, whose upper bits travel in our OPT record
    // (version 0).
    let mut message = Message::from_vec(&query(name, RecordType::A, Some(1232))).unwrap();
    message.edns.as_mut().unwrap().set_version(1);
    let Response::Bytes(bytes) = respond(Some(&zone), &message.to_vec().unwrap(), &settings(), true) else {
        panic!("no answer")
    };
    let answer = Message::from_vec(&bytes).unwrap();
    // 16 is both BADVERS and BADSIG; hickory reads it as the latter.
    assert_eq!(u16::from(answer.metadata.response_code), 16);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.edns.as_ref().map(Edns::version), Some(0));
    // CHAOS and Hesiod: REFUSED, not FORMERR; class ANY is answered as IN.
    for (class, rcode, answers) in [
        (DNSClass::CH, ResponseCode::Refused, 0),
        (DNSClass::HS, ResponseCode::Refused, 0),
        (DNSClass::ANY, ResponseCode::NoError, 1),
    ] {
        let mut message = Message::from_vec(&query(name, RecordType::A, None)).unwrap();
        message.queries[0].set_query_class(class);
        let Response::Bytes(bytes) = respond(Some(&zone), &message.to_vec().unwrap(), &settings(), true)
        else {
            panic!("no answer for {class:?}")
        };
        let answer = Message::from_vec(&bytes).unwrap();
        assert_eq!((answer.metadata.response_code, answer.answers.len()), (rcode, answers), "{class:?}");
    }
}

#[test]
fn an_external_name_whose_target_does_not_exist_carries_the_upstreams_soa() {
    let mut zone = zone(1);
    zone.records.insert(
        "partner.default.svc.cluster.local".to_owned(),
        vec![RecordData::Cname("gone.example.test".to_owned())],
    );
    let asked = query("partner.default.svc.cluster.local.", RecordType::A, None);
    let Response::Chase(chase) = respond(Some(&zone), &asked, &settings(), false) else {
        panic!("an ExternalName is chased upstream")
    };
    let mut upstream = Message::response(7, hickory_proto::op::OpCode::Query);
    upstream.metadata.response_code = ResponseCode::NXDomain;
    let soa = hickory_proto::rr::rdata::SOA::new(
        Name::from_ascii("ns.example.test.").unwrap(),
        Name::from_ascii("hostmaster.example.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        300,
    );
    upstream.add_authority(hickory_proto::rr::Record::from_rdata(
        Name::from_ascii("example.test.").unwrap(),
        300,
        RData::SOA(soa),
    ));
    let Response::Bytes(bytes) = chase.finish(Some(&upstream.to_vec().unwrap())) else { panic!("no answer") };
    let answer = Message::from_vec(&bytes).unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(answer.answers.len(), 1, "the CNAME");
    assert_eq!(answer.authorities.len(), 1);
    assert_eq!(answer.authorities[0].name.to_ascii(), "example.test.");
    assert!(matches!(answer.authorities[0].data, RData::SOA(_)));
}

//! What the cluster zone answers to one question: the records of each section and the
//! response code, following the Kubernetes DNS specification and RFC 1034/2308 for the
//! negative cases. Wire encoding is the server's; this is the decision alone.

use std::net::IpAddr;

use portico_plan::dns::{DnsZone, Lookup, RecordData};

/// The record types the cluster zone knows (others get NODATA when the name exists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Service port.
    Srv,
    /// Name of an address.
    Ptr,
    /// Alias.
    Cname,
    /// Text.
    Txt,
    /// Start of authority.
    Soa,
    /// Name server.
    Ns,
    /// `ANY` (255): every record at the name.
    Any,
    /// Any other type, by number.
    Other(u16),
}

/// Response codes the zone gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    /// The name exists (with or without records of the type asked).
    NoError,
    /// No such name.
    NxDomain,
    /// No Plan yet, or a CNAME loop.
    ServFail,
}

/// One resource record: its owner name (lower-case, no trailing dot) and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    /// Owner name. The server writes the question's own spelling for the first owner, so
    /// that the answer keeps the query's case.
    pub name: String,
    /// Data.
    pub data: RecordData,
}

/// The zone's answer to one question.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The answer section.
    pub answers: Vec<Rr>,
    /// The question is for the apex's SOA or NS records (or ANY there): records of the
    /// server's own (its name and address), which it adds to the answer section.
    pub server_records: bool,
    /// Whether the authority section carries the zone's SOA (negative answers, RFC 2308).
    pub soa_in_authority: bool,
    /// The additional section: addresses of SRV targets inside the zone.
    pub additionals: Vec<Rr>,
    /// A CNAME chain that leaves the zone ends here: the server resolves this name upstream
    /// and appends what it gets after the CNAME records.
    pub resolve_upstream: Option<String>,
}

/// What the server does with a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Answer from the zone with this code.
    Zone(Rcode, Answer),
    /// Not the cluster's: relay the question to the upstream servers.
    Forward,
}

/// How long a CNAME chain inside the zone may be before it counts as a loop.
const MAX_CHAIN: usize = 8;

/// The reply to `name`/`qtype`; `zone` is `None` until the first Plan is served.
pub fn answer(zone: Option<&DnsZone>, name: &str, qtype: QueryType) -> Reply {
    let Some(zone) = zone else { return Reply::Zone(Rcode::ServFail, Answer::default()) };
    // Reverse names are the zone's only for addresses the cluster owns.
    if !zone.is_under_apex(name) && matches!(zone.lookup(name), Lookup::Missing) {
        return Reply::Forward;
    }
    let mut reply = Answer::default();
    let mut current = canonical(name);
    for _ in 0..MAX_CHAIN {
        match zone.lookup(&current) {
            Lookup::Missing => {
                reply.soa_in_authority = true;
                // A CNAME whose target is missing still answers NOERROR with the CNAME.
                let rcode = if reply.answers.is_empty() { Rcode::NxDomain } else { Rcode::NoError };
                return Reply::Zone(rcode, reply);
            }
            Lookup::Empty => {
                reply.server_records = is_apex_question(zone, &current, qtype);
                reply.soa_in_authority = !reply.server_records;
                return Reply::Zone(Rcode::NoError, reply);
            }
            Lookup::Records(records) => {
                let alias = records.iter().find_map(|r| match r {
                    RecordData::Cname(target) => Some(target.clone()),
                    _ => None,
                });
                match alias {
                    Some(target) if !matches!(qtype, QueryType::Cname | QueryType::Any) => {
                        reply
                            .answers
                            .push(Rr { name: current.clone(), data: RecordData::Cname(target.clone()) });
                        if !zone.is_under_apex(&target) {
                            reply.resolve_upstream = Some(target);
                            return Reply::Zone(Rcode::NoError, reply);
                        }
                        current = target;
                    }
                    _ => {
                        let matching: Vec<Rr> = records
                            .iter()
                            .filter(|r| matches_type(r, qtype))
                            .map(|r| Rr { name: current.clone(), data: r.clone() })
                            .collect();
                        reply.soa_in_authority = matching.is_empty();
                        reply.additionals = additionals(zone, &matching);
                        reply.answers.extend(matching);
                        return Reply::Zone(Rcode::NoError, reply);
                    }
                }
            }
        }
    }
    Reply::Zone(Rcode::ServFail, Answer::default())
}

/// SOA and NS at the apex are the server's own records: not a negative answer.
fn is_apex_question(zone: &DnsZone, name: &str, qtype: QueryType) -> bool {
    name == zone.apex && matches!(qtype, QueryType::Soa | QueryType::Ns | QueryType::Any)
}

fn matches_type(record: &RecordData, qtype: QueryType) -> bool {
    matches!(
        (record, qtype),
        (_, QueryType::Any)
            | (RecordData::Address(IpAddr::V4(_)), QueryType::A)
            | (RecordData::Address(IpAddr::V6(_)), QueryType::Aaaa)
            | (RecordData::Srv { .. }, QueryType::Srv)
            | (RecordData::Ptr(_), QueryType::Ptr)
            | (RecordData::Cname(_), QueryType::Cname)
            | (RecordData::Txt(_), QueryType::Txt)
    )
}

/// The addresses of SRV targets, for the additional section.
fn additionals(zone: &DnsZone, answers: &[Rr]) -> Vec<Rr> {
    let mut found: Vec<Rr> = Vec::new();
    for target in answers.iter().filter_map(|rr| match &rr.data {
        RecordData::Srv { target, .. } => Some(target),
        _ => None,
    }) {
        if let Lookup::Records(records) = zone.lookup(target) {
            for data in records.iter().filter(|d| matches!(d, RecordData::Address(_))) {
                let rr = Rr { name: target.clone(), data: data.clone() };
                if !found.contains(&rr) {
                    found.push(rr);
                }
            }
        }
    }
    found
}

fn canonical(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    /// A small zone: a ClusterIP Service with a named port, a headless one, an ExternalName
    /// out of the zone and an alias inside it.
    fn zone() -> DnsZone {
        let web = "web.default.svc.cluster.local";
        let records: BTreeMap<String, Vec<RecordData>> = [
            (web.to_owned(), vec![RecordData::Address(ip("10.96.0.10"))]),
            (
                format!("_http._tcp.{web}"),
                vec![RecordData::Srv { priority: 0, weight: 100, port: 80, target: web.to_owned() }],
            ),
            ("10.0.96.10.in-addr.arpa".to_owned(), vec![RecordData::Ptr(web.to_owned())]),
            ("ext.default.svc.cluster.local".to_owned(), vec![RecordData::Cname("example.com".to_owned())]),
            ("alias.default.svc.cluster.local".to_owned(), vec![RecordData::Cname(web.to_owned())]),
            (
                "loop.default.svc.cluster.local".to_owned(),
                vec![RecordData::Cname("loop.default.svc.cluster.local".to_owned())],
            ),
        ]
        .into_iter()
        .collect();
        let empty_nonterminals =
            ["svc.cluster.local", "default.svc.cluster.local", "_tcp.web.default.svc.cluster.local"]
                .into_iter()
                .map(str::to_owned)
                .collect();
        DnsZone { apex: "cluster.local".to_owned(), records, empty_nonterminals }
    }

    fn zone_reply(zone: &DnsZone, name: &str, qtype: QueryType) -> (Rcode, Answer) {
        match answer(Some(zone), name, qtype) {
            Reply::Zone(rcode, answer) => (rcode, answer),
            Reply::Forward => panic!("{name} forwarded"),
        }
    }

    #[test]
    fn servfail_before_the_first_plan_and_forward_outside_the_zone() {
        assert_eq!(
            answer(None, "web.default.svc.cluster.local", QueryType::A),
            Reply::Zone(Rcode::ServFail, Answer::default())
        );
        let zone = zone();
        assert_eq!(answer(Some(&zone), "example.com", QueryType::A), Reply::Forward);
        assert_eq!(answer(Some(&zone), "1.1.168.192.in-addr.arpa", QueryType::Ptr), Reply::Forward);
        assert_eq!(answer(Some(&zone), "notcluster.local", QueryType::A), Reply::Forward);
    }

    #[test]
    fn records_of_the_type_asked_else_nodata_else_nxdomain() {
        let zone = zone();
        let (rcode, a) = zone_reply(&zone, "Web.Default.SVC.cluster.local.", QueryType::A);
        assert_eq!((rcode, a.answers.len(), a.soa_in_authority), (Rcode::NoError, 1, false));
        assert_eq!(a.answers[0].data, RecordData::Address(ip("10.96.0.10")));
        // AAAA on a v4-only Service, and a name with nothing of its own: NODATA with the SOA.
        for (name, qtype) in [
            ("web.default.svc.cluster.local", QueryType::Aaaa),
            ("web.default.svc.cluster.local", QueryType::Other(99)),
            ("default.svc.cluster.local", QueryType::A),
            ("_tcp.web.default.svc.cluster.local", QueryType::Srv),
        ] {
            let (rcode, nodata) = zone_reply(&zone, name, qtype);
            assert_eq!(
                (rcode, nodata.answers.is_empty(), nodata.soa_in_authority),
                (Rcode::NoError, true, true),
                "{name}"
            );
        }
        let (rcode, missing) = zone_reply(&zone, "nope.default.svc.cluster.local", QueryType::A);
        assert_eq!((rcode, missing.soa_in_authority), (Rcode::NxDomain, true));
        let (rcode, ptr) = zone_reply(&zone, "10.0.96.10.in-addr.arpa", QueryType::Ptr);
        assert_eq!(
            (rcode, ptr.answers[0].data.clone()),
            (Rcode::NoError, RecordData::Ptr("web.default.svc.cluster.local".into()))
        );
    }

    #[test]
    fn srv_targets_come_with_their_addresses() {
        let (_, srv) = zone_reply(&zone(), "_http._tcp.web.default.svc.cluster.local", QueryType::Srv);
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(
            srv.additionals,
            [Rr {
                name: "web.default.svc.cluster.local".into(),
                data: RecordData::Address(ip("10.96.0.10"))
            }]
        );
    }

    #[test]
    fn aliases_are_followed_inside_the_zone_and_handed_upstream_outside_it() {
        let zone = zone();
        let (rcode, chained) = zone_reply(&zone, "alias.default.svc.cluster.local", QueryType::A);
        assert_eq!(rcode, Rcode::NoError);
        assert_eq!(
            chained.answers,
            [
                Rr {
                    name: "alias.default.svc.cluster.local".into(),
                    data: RecordData::Cname("web.default.svc.cluster.local".into())
                },
                Rr {
                    name: "web.default.svc.cluster.local".into(),
                    data: RecordData::Address(ip("10.96.0.10"))
                },
            ]
        );
        let (rcode, external) = zone_reply(&zone, "ext.default.svc.cluster.local", QueryType::A);
        assert_eq!((rcode, external.answers.len()), (Rcode::NoError, 1), "the CNAME comes first");
        assert_eq!(external.resolve_upstream.as_deref(), Some("example.com"));
        // Asked for the CNAME itself: no chasing.
        let (_, cname) = zone_reply(&zone, "ext.default.svc.cluster.local", QueryType::Cname);
        assert_eq!(cname.resolve_upstream, None);
        assert_eq!(zone_reply(&zone, "loop.default.svc.cluster.local", QueryType::A).0, Rcode::ServFail);
    }

    #[test]
    fn the_apex_soa_and_ns_are_the_servers() {
        let zone = zone();
        let (rcode, soa) = zone_reply(&zone, "cluster.local", QueryType::Soa);
        assert_eq!((rcode, soa.server_records, soa.soa_in_authority), (Rcode::NoError, true, false));
        let (_, a) = zone_reply(&zone, "cluster.local.", QueryType::A);
        assert_eq!((a.server_records, a.soa_in_authority), (false, true));
    }
}

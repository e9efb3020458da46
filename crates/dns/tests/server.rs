//! The DNS server over real sockets on loopback, answering from Plans built from manifests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use portico_dataplane::{DataPlane, drain};
use portico_dns::{DnsServer, Options, bind};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::dns;
use portico_testkit::manifests::{Pod, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn planned(yaml: &str, generation: u64) -> Arc<Plan> {
    planned_with(yaml, generation, &PlanConfig::default())
}

/// The Plan of `yaml` as `generation`, its manifests loaded without a word.
fn planned_with(yaml: &str, generation: u64, config: &PlanConfig) -> Arc<Plan> {
    Arc::new(
        portico_testkit::plan::planned_with(yaml, config, &Allocations::default(), generation).loaded().plan,
    )
}

/// A headless Service `db` over Pods at the given addresses.
fn cluster(addresses: &[&str]) -> String {
    let mut yaml: String = addresses
        .iter()
        .enumerate()
        .map(|(i, ip)| Pod::new(&format!("db-{i}")).app("db").port("pg", 5432).ip(ip).to_string())
        .collect();
    yaml += &Service::new("db").headless().app("db").port("{name: pg, port: 5432}").to_string();
    yaml
}

fn query(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    dns::query(name, qtype, id).to_vec().unwrap()
}

async fn over_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    over_udp_from(server, "127.0.0.1", name, qtype).await
}

/// `over_udp` from a given loopback address (a Pod's, for server-side search).
async fn over_udp_from(server: SocketAddr, from: &str, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    socket.send_to(&query(name, qtype, 11), server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let answer = Message::from_vec(&buf[..len]).unwrap();
    assert_eq!(answer.metadata.id, 11);
    answer
}

async fn over_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    ask_on(&mut stream, name, qtype).await
}

/// One query on an open TCP connection (RFC 1035 §4.2.2 framing), and its answer.
async fn ask_on(stream: &mut TcpStream, name: &str, qtype: RecordType) -> Message {
    let bytes = query(name, qtype, 12);
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await.unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap()
}

/// The addresses of the A records in `answer`, as text, sorted.
fn addresses(answer: &Message) -> Vec<String> {
    let mut found: Vec<String> = dns::a_records(answer).iter().map(ToString::to_string).collect();
    found.sort();
    found
}

#[tokio::test]
async fn answers_over_udp_and_tcp_follow_the_plan_at_once() {
    let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 2).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(portico_dns::metrics::Metrics::register(&mut registry));
    let server = DnsServer::new(Options::default(), metrics, drain::channel().1);
    for socket in udp {
        tokio::spawn(Arc::clone(&server).serve_udp(socket));
    }
    tokio::spawn(Arc::clone(&server).serve_tcp(tcp));
    let name = "db.default.svc.cluster.local.";

    let before = over_udp(addr, name, RecordType::A).await;
    assert_eq!(before.metadata.response_code, ResponseCode::ServFail, "no Plan yet");

    assert!(server.apply(&planned(&cluster(&["127.98.3.1", "127.98.3.2"]), 1)).await.is_empty());
    let udp_answer = over_udp(addr, name, RecordType::A).await;
    assert_eq!(udp_answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&udp_answer), ["127.98.3.1", "127.98.3.2"]);
    let tcp_answer = over_tcp(addr, name, RecordType::A).await;
    assert_eq!(addresses(&tcp_answer), ["127.98.3.1", "127.98.3.2"]);
    let srv = over_udp(addr, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!((srv.answers.len(), srv.additionals.len()), (2, 2), "SRV targets come with their addresses");

    // Kept answers still take each query's spelling of the name.
    for spelling in ["DB.default.svc.cluster.local.", "db.DEFAULT.Svc.cluster.local."] {
        let answer = over_udp(addr, spelling, RecordType::A).await;
        assert!(answer.answers.iter().all(|r| r.name.to_ascii() == spelling), "{answer:?}");
        assert_eq!(answer.queries[0].name.to_ascii(), spelling);
    }
    // An endpoint goes away: the very next answer follows.
    assert!(server.apply(&planned(&cluster(&["127.98.3.2"]), 2)).await.is_empty());
    assert_eq!(addresses(&over_udp(addr, name, RecordType::A).await), ["127.98.3.2"]);
    let soa = over_udp(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(soa.metadata.response_code, ResponseCode::NXDomain);
    let RData::SOA(record) = &soa.authorities[0].data else { panic!("{soa:?}") };
    assert_eq!(record.serial, 2, "the serial is the Plan's generation");

    // Names outside the cluster, with no upstream server: refused.
    let outside = over_udp(addr, "example.com.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for series in [
        "portico_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\",source=\"zone\"} 5",
        "portico_dns_queries_total{qtype=\"SRV\",rcode=\"NOERROR\",source=\"zone\"} 1",
        "portico_dns_queries_total{qtype=\"A\",rcode=\"SERVFAIL\",source=\"zone\"} 1",
        "portico_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\",source=\"zone\"} 1",
        "portico_dns_queries_total{qtype=\"A\",rcode=\"REFUSED\",source=\"upstream\"} 1",
        "portico_dns_request_duration_seconds_count 9",
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
}

fn unregistered_metrics() -> Arc<portico_dns::metrics::Metrics> {
    Arc::new(portico_dns::metrics::Metrics::register(&mut prometheus_client::registry::Registry::default()))
}

/// A fake upstream on loopback (UDP and TCP): answers every query with A 192.0.2.1 (data only;
/// nothing is sent there).
async fn fake_upstream() -> SocketAddr {
    let (mut udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 1).await.unwrap();
    let udp = udp.remove(0);
    let addr = tcp.local_addr().unwrap();
    let answer_to = |query: &[u8]| {
        let request = Message::from_vec(query).unwrap();
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.add_queries(request.queries.clone());
        let name = request.queries[0].name.clone();
        response.add_answer(hickory_proto::rr::Record::from_rdata(
            name,
            60,
            RData::A(hickory_proto::rr::rdata::A([192, 0, 2, 1].into())),
        ));
        response.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&answer_to(&buf[..n]), from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let mut prefix = [0u8; 2];
            stream.read_exact(&mut prefix).await.unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            stream.read_exact(&mut query).await.unwrap();
            let answer = answer_to(&query);
            let mut framed = u16::try_from(answer.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            stream.write_all(&framed).await.unwrap();
        }
    });
    addr
}

/// An address where nothing listens, UDP or TCP.
fn dead_upstream() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_next_upstream_that_answers() {
    let live = fake_upstream().await;
    let options = Options { upstreams: vec![dead_upstream(), live], ..Options::default() };
    let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 2).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = DnsServer::new(options, unregistered_metrics(), drain::channel().1);
    for socket in udp {
        tokio::spawn(Arc::clone(&server).serve_udp(socket));
    }
    tokio::spawn(Arc::clone(&server).serve_tcp(tcp));
    let partner = "---\napiVersion: v1\nkind: Service\nmetadata: {name: partner}\nspec: {type: ExternalName, externalName: api.example.test}\n";
    assert!(server.apply(&planned(&(cluster(&["127.98.4.1"]) + partner), 1)).await.is_empty());
    for _ in 0..2 {
        // Both upstreams get a first turn in round-robin; the dead one fails over to the live one.
        let forwarded = over_udp(addr, "www.example.test.", RecordType::A).await;
        assert_eq!(forwarded.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&forwarded), ["192.0.2.1"]);
    }
    assert_eq!(addresses(&over_tcp(addr, "www.example.test.", RecordType::A).await), ["192.0.2.1"]);
    // The cluster's own names are still answered here.
    assert_eq!(
        addresses(&over_udp(addr, "db.default.svc.cluster.local.", RecordType::A).await),
        ["127.98.4.1"]
    );
    // An ExternalName: the CNAME first, then the target's records from upstream.
    for chased in [
        over_udp(addr, "partner.default.svc.cluster.local.", RecordType::A).await,
        over_tcp(addr, "partner.default.svc.cluster.local.", RecordType::A).await,
    ] {
        assert_eq!(chased.metadata.response_code, ResponseCode::NoError);
        assert!(chased.metadata.authoritative);
        let kinds: Vec<String> =
            chased.answers.iter().map(|r| format!("{} {}", r.name, r.record_type())).collect();
        assert_eq!(kinds, ["partner.default.svc.cluster.local. CNAME", "api.example.test. A"]);
        assert_eq!(addresses(&chased), ["192.0.2.1"]);
    }

    let options = Options { upstreams: vec![dead_upstream()], ..Options::default() };
    let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 2).await.unwrap();
    let lonely = tcp.local_addr().unwrap();
    let server = DnsServer::new(options, unregistered_metrics(), drain::channel().1);
    for socket in udp {
        tokio::spawn(Arc::clone(&server).serve_udp(socket));
    }
    assert!(server.apply(&planned(&cluster(&["127.98.4.1"]), 1)).await.is_empty());
    let failed = over_udp(lonely, "www.example.test.", RecordType::A).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    // No upstream answers for an ExternalName's target: the CNAME alone.
    assert!(server.apply(&planned(&(cluster(&["127.98.4.1"]) + partner), 2)).await.is_empty());
    let alone = over_udp(lonely, "partner.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!((alone.metadata.response_code, alone.answers.len()), (ResponseCode::NoError, 1));
}

#[tokio::test]
async fn pods_get_the_rest_of_their_search_path_searched_by_the_server() {
    let live = fake_upstream().await;
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: default}\nspec:\n  containers: [{name: c}]\nstatus: {podIP: 127.98.6.6}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: other}\nspec:\n  ports: [{name: http, port: 80}]\n";
    let plan = planned(yaml, 1);
    let web_ip = plan.services.iter().find(|s| s.key.name == "web").unwrap().cluster_ips[0].to_string();
    let start = |search: Option<Vec<String>>| {
        let plan = Arc::clone(&plan);
        async move {
            let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 1).await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let server = DnsServer::new(
                Options { upstreams: vec![live], search, ..Options::default() },
                unregistered_metrics(),
                drain::channel().1,
            );
            for socket in udp {
                tokio::spawn(Arc::clone(&server).serve_udp(socket));
            }
            assert!(server.apply(&plan).await.is_empty());
            addr
        }
    };
    let addr = start(Some(vec!["corp.example".to_owned()])).await;
    let asked = "web.other.default.svc.cluster.local.";
    let found = over_udp_from(addr, "127.98.6.6", asked, RecordType::A).await;
    assert_eq!(found.metadata.response_code, ResponseCode::NoError);
    let RData::CNAME(target) = &found.answers[0].data else { panic!("{found:?}") };
    assert_eq!(
        (found.answers[0].name.to_ascii(), target.0.to_ascii()),
        (asked.to_owned(), "web.other.svc.cluster.local.".to_owned())
    );
    assert_eq!(addresses(&found), [web_ip]);
    // Outside the cluster: the host's search domain comes before the bare name.
    let outside =
        over_udp_from(addr, "127.98.6.6", "www.example.test.default.svc.cluster.local.", RecordType::A).await;
    let RData::CNAME(target) = &outside.answers[0].data else { panic!("{outside:?}") };
    assert_eq!(target.0.to_ascii(), "www.example.test.corp.example.");
    assert_eq!(addresses(&outside), ["192.0.2.1"]);
    // Not a Pod, or search off: the name asked does not exist.
    assert_eq!(over_udp(addr, asked, RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    let off = start(None).await;
    assert_eq!(
        over_udp_from(off, "127.98.6.6", asked, RecordType::A).await.metadata.response_code,
        ResponseCode::NXDomain
    );
}

/// A question (name, type) and the code and sections (answer, authority, additional) expected.
type Case = (String, RecordType, ResponseCode, Vec<String>, Vec<String>, Vec<String>);

/// One question's answer as text: code, then each section's records as `name TYPE data`.
fn sections(answer: &Message) -> (ResponseCode, Vec<String>, Vec<String>, Vec<String>) {
    let text = |records: &[hickory_proto::rr::Record]| -> Vec<String> {
        let mut lines: Vec<String> =
            records.iter().map(|r| format!("{} {} {}", r.name, r.record_type(), r.data)).collect();
        lines.sort();
        lines
    };
    (
        answer.metadata.response_code,
        text(&answer.answers),
        text(&answer.authorities),
        text(&answer.additionals),
    )
}

#[tokio::test]
async fn every_record_kind_over_udp_and_tcp() {
    let yaml = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{name: http, port: 80}]\n---\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, labels: {app: db}}\nspec:\n  hostname: db-0\n  subdomain: db\n  containers: [{name: c, ports: [{name: pg, containerPort: 5432}]}]\nstatus: {podIP: 127.98.7.1}\n---\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports: [{name: pg, port: 5432}]\n---\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: partner}\nspec: {type: ExternalName, externalName: api.example.test}\n",
    ]
    .concat();
    let config = PlanConfig {
        service_cidrs: vec!["127.96.0.0/16".parse().unwrap(), "fd00:96::/112".parse().unwrap()],
        ..PlanConfig::default()
    };
    let plan = planned_with(&yaml, 3, &config);
    let web = &plan.services.iter().find(|s| s.key.name == "web").unwrap().cluster_ips;
    let (v4, v6) = (web[0], web[1]);
    let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 1).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = DnsServer::new(Options::default(), unregistered_metrics(), drain::channel().1);
    for socket in udp {
        tokio::spawn(Arc::clone(&server).serve_udp(socket));
    }
    tokio::spawn(Arc::clone(&server).serve_tcp(tcp));
    assert!(server.apply(&plan).await.is_empty());

    let soa = "cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. 3 5 5 5 5".to_owned();
    let web_name = "web.default.svc.cluster.local.";
    let db0 = "db-0.db.default.svc.cluster.local.";
    let none: Vec<String> = Vec::new();
    let cases: Vec<Case> = vec![
        (
            web_name.into(),
            RecordType::A,
            ResponseCode::NoError,
            vec![format!("{web_name} A {v4}")],
            none.clone(),
            none.clone(),
        ),
        (
            web_name.into(),
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![format!("{web_name} AAAA {v6}")],
            none.clone(),
            none.clone(),
        ),
        (
            format!("_http._tcp.{web_name}"),
            RecordType::SRV,
            ResponseCode::NoError,
            vec![format!("_http._tcp.{web_name} SRV 0 100 80 {web_name}")],
            none.clone(),
            vec![format!("{web_name} A {v4}"), format!("{web_name} AAAA {v6}")],
        ),
        (
            portico_plan::dns::reverse_name(v4) + ".",
            RecordType::PTR,
            ResponseCode::NoError,
            vec![format!("{}. PTR {web_name}", portico_plan::dns::reverse_name(v4))],
            none.clone(),
            none.clone(),
        ),
        (
            portico_plan::dns::reverse_name(v6) + ".",
            RecordType::PTR,
            ResponseCode::NoError,
            vec![format!("{}. PTR {web_name}", portico_plan::dns::reverse_name(v6))],
            none.clone(),
            none.clone(),
        ),
        (
            "db.default.svc.cluster.local.".into(),
            RecordType::A,
            ResponseCode::NoError,
            vec!["db.default.svc.cluster.local. A 127.98.7.1".into()],
            none.clone(),
            none.clone(),
        ),
        (
            db0.into(),
            RecordType::A,
            ResponseCode::NoError,
            vec![format!("{db0} A 127.98.7.1")],
            none.clone(),
            none.clone(),
        ),
        (
            "_pg._tcp.db.default.svc.cluster.local.".into(),
            RecordType::SRV,
            ResponseCode::NoError,
            vec![format!("_pg._tcp.db.default.svc.cluster.local. SRV 0 100 5432 {db0}")],
            none.clone(),
            vec![format!("{db0} A 127.98.7.1")],
        ),
        (
            "1.7.98.127.in-addr.arpa.".into(),
            RecordType::PTR,
            ResponseCode::NoError,
            vec![format!("1.7.98.127.in-addr.arpa. PTR {db0}")],
            none.clone(),
            none.clone(),
        ),
        (
            "db.default.svc.cluster.local.".into(),
            RecordType::AAAA,
            ResponseCode::NoError,
            none.clone(),
            vec![soa.clone()],
            none.clone(),
        ),
        (
            "partner.default.svc.cluster.local.".into(),
            RecordType::A,
            ResponseCode::NoError,
            vec!["partner.default.svc.cluster.local. CNAME api.example.test.".into()],
            none.clone(),
            none.clone(),
        ),
        (
            "dns-version.cluster.local.".into(),
            RecordType::TXT,
            ResponseCode::NoError,
            vec!["dns-version.cluster.local. TXT 1.1.0".into()],
            none.clone(),
            none.clone(),
        ),
        (
            "127-98-7-1.default.pod.cluster.local.".into(),
            RecordType::A,
            ResponseCode::NoError,
            vec!["127-98-7-1.default.pod.cluster.local. A 127.98.7.1".into()],
            none.clone(),
            none.clone(),
        ),
        (
            "cluster.local.".into(),
            RecordType::SOA,
            ResponseCode::NoError,
            vec![soa.clone()],
            none.clone(),
            none.clone(),
        ),
        (
            "cluster.local.".into(),
            RecordType::NS,
            ResponseCode::NoError,
            vec!["cluster.local. NS ns.dns.cluster.local.".into()],
            none.clone(),
            none.clone(),
        ),
        (
            "nope.default.svc.cluster.local.".into(),
            RecordType::A,
            ResponseCode::NXDomain,
            none.clone(),
            vec![soa.clone()],
            none.clone(),
        ),
    ];
    for (name, qtype, rcode, answers, authorities, additionals) in cases {
        for answer in [over_udp(addr, &name, qtype).await, over_tcp(addr, &name, qtype).await] {
            assert!(answer.metadata.authoritative && !answer.metadata.truncation, "{name} {qtype}");
            assert_eq!(
                sections(&answer),
                (rcode, answers.clone(), authorities.clone(), additionals.clone()),
                "{name} {qtype}"
            );
        }
    }
}

#[tokio::test]
async fn the_zone_and_the_ttl_are_settings() {
    let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 1).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server =
        DnsServer::new(Options { ttl: 30, ..Options::default() }, unregistered_metrics(), drain::channel().1);
    for socket in udp {
        tokio::spawn(Arc::clone(&server).serve_udp(socket));
    }
    let config = PlanConfig { cluster_domain: "corp.example".into(), ..PlanConfig::default() };
    assert!(server.apply(&planned_with(&cluster(&["127.98.4.1"]), 1, &config)).await.is_empty());

    let answer = over_udp(addr, "db.default.svc.corp.example.", RecordType::A).await;
    assert_eq!(addresses(&answer), ["127.98.4.1"]);
    assert!(answer.answers.iter().all(|r| r.ttl == 30), "{answer:?}");
    let missing = over_udp(addr, "nope.default.svc.corp.example.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let RData::SOA(soa) = &missing.authorities[0].data else { panic!("{missing:?}") };
    assert_eq!((missing.authorities[0].ttl, soa.minimum), (30, 30), "negative answers live as long");
    let old_zone = over_udp(addr, "db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(old_zone.metadata.response_code, ResponseCode::Refused, "cluster.local is not ours any more");
}

#[tokio::test]
async fn the_drain_stops_the_listeners_and_lets_idle_tcp_clients_go() {
    let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap(), 1).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (trigger, watch) = drain::channel();
    let server = DnsServer::new(Options::default(), unregistered_metrics(), watch);
    let udp_task = tokio::spawn(Arc::clone(&server).serve_udp(udp.into_iter().next().unwrap()));
    let tcp_task = tokio::spawn(Arc::clone(&server).serve_tcp(tcp));
    assert!(!server.readiness().is_ready(), "no Plan yet");
    assert!(server.apply(&planned(&cluster(&["127.98.3.1"]), 1)).await.is_empty());
    assert!(server.readiness().is_ready());
    let name = "db.default.svc.cluster.local.";
    assert_eq!(addresses(&over_udp(addr, name, RecordType::A).await), ["127.98.3.1"]);
    // A TCP client that asked once and stays.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(addresses(&ask_on(&mut idle, name, RecordType::A).await), ["127.98.3.1"]);

    assert_eq!(trigger.drain(Duration::from_secs(5)).await, 0, "the idle client was let go");
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0, "closed by the server");
    let udp_served = tokio::time::timeout(Duration::from_secs(1), udp_task).await.expect("UDP stopped");
    assert!(udp_served.unwrap().is_ok());
    tokio::time::timeout(Duration::from_secs(1), tcp_task).await.expect("TCP stopped").unwrap();
}

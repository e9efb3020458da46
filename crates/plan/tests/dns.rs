//! The cluster DNS zone the planner builds from manifests: every record kind of the
//! Kubernetes DNS specification, names that exist without records, and names that do not.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use portico_plan::dns::{Lookup, RecordData, reverse_name};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::manifests::{Pod, Service};

fn planned(yaml: &str) -> Plan {
    planned_with(&PlanConfig::default(), yaml)
}

/// The Plan of `yaml`, loaded without a word and planned without errors (the warning that
/// Service `empty` selects no Pod is the only one).
fn planned_with(config: &PlanConfig, yaml: &str) -> Plan {
    portico_testkit::plan::planned_with(yaml, config, &Allocations::default(), 1)
        .loaded()
        .without_errors()
        .plan
}

/// A Pod at `ip` with labels `app: <app>`, ready or not, and `extra` spec fields.
fn pod(name: &str, app: &str, ip: &str, ready: bool, extra: &str) -> String {
    Pod::new(name).app(app).spec(extra).port("main", 8080).ip(ip).ready(ready).to_string()
}

fn fixture() -> String {
    [
        pod("web-a", "web", "127.98.0.1", true, ""),
        pod("web-b", "web", "127.98.0.2", true, ""),
        Service::new("web").app("web").port("{name: http, port: 80, targetPort: main}").to_string(),
        pod("db-0", "db", "127.98.1.1", true, "  hostname: db-0\n  subdomain: db\n"),
        pod("db-1", "db", "127.98.1.2", true, ""),
        pod("db-2", "db", "127.98.1.3", false, ""),
        Service::new("db").headless().app("db").port("{name: pg, port: 5432, targetPort: main}").to_string(),
        Service::new("empty").headless().app("nobody").port("{name: pg, port: 5432}").to_string(),
        Service::new("ext").kind("ExternalName").spec("  externalName: example.com\n").to_string(),
    ]
    .concat()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn records<'p>(plan: &'p Plan, name: &str) -> &'p [RecordData] {
    match plan.dns.lookup(name) {
        Lookup::Records(records) => records,
        other => panic!("{name}: {other:?}"),
    }
}

/// The fixture's headless `db`: an address per ready endpoint (127.98.1.1 named `db-0` by its
/// hostname, 127.98.1.2 by its dashed address), none for the endpoint that is not ready.
fn assert_db_addresses(plan: &Plan) {
    let mut addresses = records(plan, "db.default.svc.cluster.local").to_vec();
    addresses.sort();
    assert_eq!(addresses, [RecordData::Address(ip("127.98.1.1")), RecordData::Address(ip("127.98.1.2"))]);
    assert_eq!(records(plan, "db-0.db.default.svc.cluster.local"), [RecordData::Address(ip("127.98.1.1"))]);
    assert_eq!(
        records(plan, "127-98-1-2.db.default.svc.cluster.local"),
        [RecordData::Address(ip("127.98.1.2"))]
    );
    assert_eq!(plan.dns.lookup("127-98-1-3.db.default.svc.cluster.local"), Lookup::Missing, "not ready");
}

#[test]
fn every_record_kind_of_the_specification() {
    let plan = planned(&fixture());
    let web_ip = plan.services.iter().find(|s| s.key.name == "web").unwrap().cluster_ips[0];
    let web = "web.default.svc.cluster.local";
    // ClusterIP: A to the virtual IP, in any case and with the trailing dot; SRV per named port; PTR.
    assert_eq!(records(&plan, web), [RecordData::Address(web_ip)]);
    assert_eq!(records(&plan, "WEB.Default.svc.Cluster.Local."), [RecordData::Address(web_ip)]);
    assert_eq!(
        records(&plan, "_http._tcp.web.default.svc.cluster.local"),
        [RecordData::Srv { priority: 0, weight: 100, port: 80, target: web.to_owned() }]
    );
    assert_eq!(records(&plan, &reverse_name(web_ip)), [RecordData::Ptr(web.to_owned())]);
    // Its ready endpoints answer reverse lookups as CoreDNS does, with their (dashed) names
    // under the Service, which only a headless Service answers forwards.
    assert_eq!(
        records(&plan, "1.0.98.127.in-addr.arpa"),
        [RecordData::Ptr("127-98-0-1.web.default.svc.cluster.local".into())]
    );
    assert_eq!(plan.dns.lookup("127-98-0-1.web.default.svc.cluster.local"), Lookup::Missing);

    // Headless: one A per ready endpoint; a name per endpoint (its hostname, else its dashed
    // address); SRV per endpoint to those names, at the endpoint's port; PTR to them.
    assert_db_addresses(&plan);
    let mut srv = records(&plan, "_pg._tcp.db.default.svc.cluster.local").to_vec();
    srv.sort();
    assert_eq!(
        srv,
        [
            RecordData::Srv {
                priority: 0,
                weight: 50,
                port: 8080,
                target: "127-98-1-2.db.default.svc.cluster.local".into()
            },
            RecordData::Srv {
                priority: 0,
                weight: 50,
                port: 8080,
                target: "db-0.db.default.svc.cluster.local".into()
            },
        ]
    );
    assert_eq!(
        records(&plan, "1.1.98.127.in-addr.arpa"),
        [RecordData::Ptr("db-0.db.default.svc.cluster.local".into())]
    );
    // A headless Service without a ready endpoint does not exist.
    assert_eq!(plan.dns.lookup("empty.default.svc.cluster.local"), Lookup::Missing);

    // ExternalName: a CNAME to its target.
    assert_eq!(records(&plan, "ext.default.svc.cluster.local"), [RecordData::Cname("example.com".into())]);
    // The specification's version and the Pod records.
    assert_eq!(records(&plan, "dns-version.cluster.local"), [RecordData::Txt("1.1.0".into())]);
    assert_eq!(
        records(&plan, "127-98-0-1.default.pod.cluster.local"),
        [RecordData::Address(ip("127.98.0.1"))]
    );
}

#[test]
fn names_above_records_exist_and_others_do_not() {
    let plan = planned(&fixture());
    for existing in [
        "cluster.local",
        "svc.cluster.local",
        "default.svc.cluster.local",
        "_tcp.web.default.svc.cluster.local",
        "pod.cluster.local",
        "default.pod.cluster.local",
    ] {
        assert_eq!(plan.dns.lookup(existing), Lookup::Empty, "{existing}");
    }
    for missing in [
        "nope.default.svc.cluster.local",
        "web.other.svc.cluster.local",
        "_udp.web.default.svc.cluster.local",
    ] {
        assert_eq!(plan.dns.lookup(missing), Lookup::Missing, "{missing}");
    }
    assert!(plan.dns.is_under_apex("anything.cluster.local."));
    assert!(plan.dns.is_under_apex("Cluster.Local"));
    assert!(!plan.dns.is_under_apex("notcluster.local"));
    assert!(!plan.dns.is_under_apex("example.com"));
}

#[test]
fn an_endpoint_change_changes_the_zone() {
    let before = planned(&fixture());
    let after = planned(
        &fixture()
            .replace(&pod("db-1", "db", "127.98.1.2", true, ""), &pod("db-1", "db", "127.98.1.2", false, "")),
    );
    assert!(matches!(before.dns.lookup("127-98-1-2.db.default.svc.cluster.local"), Lookup::Records(_)));
    assert_eq!(after.dns.lookup("127-98-1-2.db.default.svc.cluster.local"), Lookup::Missing);
    assert_eq!(records(&after, "db.default.svc.cluster.local"), [RecordData::Address(ip("127.98.1.1"))]);
}

#[test]
fn dual_stack_services_answer_a_and_aaaa_and_both_reverse_names() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: dual}\nspec:\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{name: http, port: 80}]\n";
    let config = PlanConfig {
        service_cidrs: vec!["127.96.0.0/16".parse().unwrap(), "fd00:96::/112".parse().unwrap()],
        ..PlanConfig::default()
    };
    let plan = portico_testkit::plan::planned_with(yaml, &config, &Allocations::default(), 1).loaded().plan;
    let ips = &plan.services[0].cluster_ips;
    assert_eq!(ips.len(), 2, "{ips:?}");
    let mut expected: Vec<RecordData> = ips.iter().map(|ip| RecordData::Address(*ip)).collect();
    expected.sort();
    let mut found = records(&plan, "dual.default.svc.cluster.local").to_vec();
    found.sort();
    assert_eq!(found, expected);
    for ip in ips {
        assert_eq!(
            records(&plan, &reverse_name(*ip)),
            [RecordData::Ptr("dual.default.svc.cluster.local".into())]
        );
    }
    assert!(reverse_name(ips[1]).ends_with(".ip6.arpa") || reverse_name(ips[0]).ends_with(".ip6.arpa"));
}

#[test]
fn no_records_when_nothing_serves_them() {
    let config = PlanConfig { dns_records: false, ..PlanConfig::default() };
    let plan = portico_testkit::plan::planned_with(&fixture(), &config, &Allocations::default(), 1).plan;
    assert!(plan.dns.records.is_empty() && plan.dns.empty_nonterminals.is_empty(), "{:?}", plan.dns);
    assert_eq!(plan.dns.apex, "cluster.local");
    assert_eq!(plan.services.len(), 4, "the rest of the Plan is whole");
    assert!(!planned(&fixture()).dns.records.is_empty(), "records by default");
}

#[test]
fn headless_services_without_ports_publish_their_endpoints() {
    let yaml = [
        pod("db-0", "db", "127.98.1.1", true, "  hostname: db-0\n  subdomain: db\n"),
        pod("db-1", "db", "127.98.1.2", true, ""),
        pod("db-2", "db", "127.98.1.3", false, ""),
        Service::new("db").headless().app("db").to_string(),
        // Without a selector the EndpointSlices given are the endpoints, with no ports either.
        Service::new("ext").headless().to_string(),
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ext-1\n  labels: {kubernetes.io/service-name: ext}\naddressType: IPv4\nendpoints:\n- addresses: [127.0.20.1]\n  hostname: one\n- addresses: [127.0.20.2]\n  conditions: {ready: false}\n".to_owned(),
    ]
    .concat();
    let plan = planned(&yaml);
    let db = "db.default.svc.cluster.local";
    // The Service's name holds an address per ready endpoint, each endpoint its own name and
    // PTR; there is no port, so no SRV record.
    assert_db_addresses(&plan);
    assert_eq!(
        records(&plan, "1.1.98.127.in-addr.arpa"),
        [RecordData::Ptr("db-0.db.default.svc.cluster.local".into())]
    );
    assert_eq!(plan.dns.lookup("_tcp.db.default.svc.cluster.local"), Lookup::Missing, "no SRV");
    assert!(plan.dns.records.iter().all(|(_, r)| r.iter().all(|r| !matches!(r, RecordData::Srv { .. }))));

    let ext = "ext.default.svc.cluster.local";
    assert_eq!(records(&plan, ext), [RecordData::Address(ip("127.0.20.1"))]);
    assert_eq!(records(&plan, "one.ext.default.svc.cluster.local"), [RecordData::Address(ip("127.0.20.1"))]);

    // No port means no listener, and explain counts the endpoints.
    let service = |name: &str| plan.services.iter().find(|s| s.key.name == name).unwrap();
    assert!(service("db").ports.is_empty() && !service("db").proxied);
    assert_eq!(service("db").backend_counts(), (2, 3));
    assert_eq!(service("ext").backend_counts(), (1, 2));
    let rows = portico_plan::exposure::exposures(&plan);
    let row = rows.iter().find(|r| r.object.key.name == "db").unwrap();
    assert_eq!((row.ports.len(), row.ready, row.total), (0, 2, 3));
    assert_eq!(row.addresses, [db]);
}

/// A ready Pod with an IPv4 and an IPv6 address.
fn dual_pod(name: &str, app: &str, v4: &str, v6: &str, extra: &str) -> String {
    Pod::new(name).app(app).spec(extra).port("main", 8080).ip(v4).ip(v6).ready(true).to_string()
}

#[test]
fn headless_records_follow_the_services_families() {
    let config = PlanConfig {
        service_cidrs: vec!["127.96.0.0/16".parse().unwrap(), "fd00:96::/108".parse().unwrap()],
        ..PlanConfig::default()
    };
    let headless = |name: &str, policy: &str| {
        Service::new(name)
            .headless()
            .app("db")
            .spec(policy)
            .port("{name: pg, port: 5432, targetPort: main}")
            .to_string()
    };
    let yaml = [
        dual_pod("db-0", "db", "127.98.2.1", "fd00:98::21", "  hostname: db-0\n  subdomain: both\n"),
        dual_pod("db-1", "db", "127.98.2.2", "fd00:98::22", ""),
        headless("single", ""),
        headless("both", "  ipFamilyPolicy: PreferDualStack\n"),
    ]
    .concat();
    let plan = planned_with(&config, &yaml);
    let sorted = |name: &str| {
        let mut found = records(&plan, name).to_vec();
        found.sort();
        found
    };
    // SingleStack (IPv4): A records only, though the Pods have IPv6 addresses too.
    assert_eq!(
        sorted("single.default.svc.cluster.local"),
        [RecordData::Address(ip("127.98.2.1")), RecordData::Address(ip("127.98.2.2"))]
    );
    assert_eq!(plan.dns.lookup("fd00-98--22.single.default.svc.cluster.local"), Lookup::Missing);
    // PreferDualStack on a dual-stack cluster: A and AAAA, for the Service and each endpoint.
    assert_eq!(
        sorted("both.default.svc.cluster.local"),
        [
            RecordData::Address(ip("127.98.2.1")),
            RecordData::Address(ip("127.98.2.2")),
            RecordData::Address(ip("fd00:98::21")),
            RecordData::Address(ip("fd00:98::22")),
        ]
    );
    assert_eq!(
        sorted("db-0.both.default.svc.cluster.local"),
        [RecordData::Address(ip("127.98.2.1")), RecordData::Address(ip("fd00:98::21"))]
    );
    assert_eq!(
        records(&plan, "fd00-98--22.both.default.svc.cluster.local"),
        [RecordData::Address(ip("fd00:98::22"))]
    );
    assert!(
        records(&plan, &reverse_name(ip("fd00:98::21")))
            .contains(&RecordData::Ptr("db-0.both.default.svc.cluster.local".into()))
    );
    // One SRV per endpoint name, weighted over the names, not over the addresses.
    let srv = sorted("_pg._tcp.both.default.svc.cluster.local");
    let targets: Vec<(&str, u16)> = srv
        .iter()
        .map(|r| match r {
            RecordData::Srv { target, weight, .. } => (target.as_str(), *weight),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("127-98-2-2.both.default.svc.cluster.local", 33),
            ("db-0.both.default.svc.cluster.local", 33),
            ("fd00-98--22.both.default.svc.cluster.local", 33),
        ]
    );
}

#[test]
fn an_address_behind_many_services_has_one_ptr_per_service_and_no_repeats() {
    // Three Services over one Pod, one of them with two ports: the Pod's address answers a
    // reverse lookup with one name under each Service, each once, in the Services' order.
    let services = ["a", "b", "c"].map(|name| {
        let second = if name == "b" { ", {name: alt, port: 81, targetPort: 8080}" } else { "" };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: shared}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}{second}]\n---\n"
        )
    });
    let yaml = format!("{}{}", pod("p", "shared", "127.98.0.7", true, ""), services.concat());
    let plan = planned(&yaml);
    let ptr = records(&plan, &reverse_name(ip("127.98.0.7")));
    let names: Vec<&str> = ptr
        .iter()
        .map(|r| match r {
            RecordData::Ptr(name) => name.as_str(),
            other => panic!("not a PTR: {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "127-98-0-7.a.default.svc.cluster.local",
            "127-98-0-7.b.default.svc.cluster.local",
            "127-98-0-7.c.default.svc.cluster.local"
        ]
    );
}

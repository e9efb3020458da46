//! Dual stack as the API server does it: `ipFamilyPolicy` and `ipFamilies` resolved against the
//! families of the service CIDRs, ClusterIPs per family in the Service's family order, errors
//! named by field, allocations kept per family, and endpoints only of the Service's families.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use portico_model::Severity;
use portico_plan::{Allocations, Plan, PlanConfig, ServicePlan};
use portico_testkit::manifests::{EndpointSlice, Pod, Service};
use portico_testkit::plan::Planned;

/// A cluster with an IPv4 (primary) and an IPv6 service CIDR.
fn dual_stack() -> PlanConfig {
    PlanConfig {
        service_cidrs: vec!["127.96.0.0/16".parse().unwrap(), "fd00:96::/108".parse().unwrap()],
        ..PlanConfig::default()
    }
}

/// The same cluster with IPv6 as its primary family.
fn ipv6_first() -> PlanConfig {
    let mut config = dual_stack();
    config.service_cidrs.reverse();
    config
}

/// Plans `yaml` on `config`, keeping what `previous` allocated.
fn planned_with(config: &PlanConfig, previous: &Allocations, yaml: &str) -> Planned {
    portico_testkit::plan::planned_with(yaml, config, previous, 1)
}

/// Plans `yaml` and requires it to be free of errors.
fn clean(config: &PlanConfig, yaml: &str) -> Plan {
    planned_with(config, &Allocations::default(), yaml).without_errors().plan
}

/// The errors of `yaml` as (Service name, field, message).
fn errors(config: &PlanConfig, yaml: &str) -> Vec<(String, String, String)> {
    planned_with(config, &Allocations::default(), yaml)
        .diagnostics()
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| {
            let name = d.object.map(|o| o.key.name).unwrap_or_default();
            (name, d.field.unwrap_or_default(), d.message)
        })
        .collect()
}

fn service<'p>(plan: &'p Plan, name: &str) -> &'p ServicePlan {
    plan.services.iter().find(|s| s.key.name == name).unwrap_or_else(|| panic!("no Service {name}"))
}

/// A Service named `name` with these `spec` lines (indented by two) and one port.
fn svc(name: &str, spec: &str) -> String {
    Service::new(name).spec(spec).port("{name: http, port: 80}").to_string()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn families_of(ips: &[IpAddr]) -> Vec<&'static str> {
    ips.iter().map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" }).collect()
}

/// `ipFamilies` and `ipFamilyPolicy` as the serialized Plan shows them.
fn resolved(service: &ServicePlan) -> (serde_json::Value, serde_json::Value) {
    let json = serde_json::to_value(service).unwrap();
    (json["ipFamilies"].clone(), json["ipFamilyPolicy"].clone())
}

#[test]
fn an_ipv6_service_on_a_dual_stack_cluster_gets_an_ipv6_cluster_ip() {
    let plan = clean(
        &dual_stack(),
        &[
            svc("v6", "  ipFamilies: [IPv6]\n"),
            svc("v6-fixed", "  ipFamilies: [IPv6]\n  clusterIP: fd00:96::10\n"),
        ]
        .concat(),
    );
    let v6 = service(&plan, "v6");
    assert_eq!(families_of(&v6.cluster_ips), ["IPv6"], "{:?}", v6.cluster_ips);
    assert!(dual_stack().service_cidrs[1].contains(&v6.cluster_ips[0]));
    assert_eq!(resolved(v6), (serde_json::json!(["IPv6"]), serde_json::json!("SingleStack")));
    assert_eq!(service(&plan, "v6-fixed").cluster_ips, [ip("fd00:96::10")]);
}

#[test]
fn single_stack_in_the_secondary_family_follows_the_requested_address() {
    let plan = clean(
        &dual_stack(),
        &[svc("by-ip", "  clusterIP: fd00:96::20\n"), svc("by-ips", "  clusterIPs: ['fd00:96::21']\n")]
            .concat(),
    );
    assert_eq!(service(&plan, "by-ip").cluster_ips, [ip("fd00:96::20")]);
    assert_eq!(service(&plan, "by-ips").cluster_ips, [ip("fd00:96::21")]);
    assert_eq!(resolved(service(&plan, "by-ip")).0, serde_json::json!(["IPv6"]));
}

#[test]
fn a_single_stack_service_on_an_ipv6_first_cluster_is_ipv6() {
    let plan = clean(&ipv6_first(), &[svc("plain", ""), svc("v4", "  ipFamilies: [IPv4]\n")].concat());
    assert_eq!(families_of(&service(&plan, "plain").cluster_ips), ["IPv6"]);
    assert_eq!(families_of(&service(&plan, "v4").cluster_ips), ["IPv4"]);
}

#[test]
fn prefer_dual_stack_takes_the_families_the_cluster_has() {
    let yaml = [
        svc("prefer", "  ipFamilyPolicy: PreferDualStack\n"),
        svc("prefer-v6", "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6]\n"),
    ]
    .concat();
    let single = clean(&PlanConfig::default(), &yaml.replace("  ipFamilies: [IPv6]\n", ""));
    assert_eq!(families_of(&service(&single, "prefer").cluster_ips), ["IPv4"]);
    assert_eq!(resolved(service(&single, "prefer")), (serde_json::json!(["IPv4"]), "PreferDualStack".into()));
    let dual = clean(&dual_stack(), &yaml);
    let prefer = service(&dual, "prefer");
    assert_eq!(families_of(&prefer.cluster_ips), ["IPv4", "IPv6"]);
    assert_eq!(resolved(prefer), (serde_json::json!(["IPv4", "IPv6"]), "PreferDualStack".into()));
    // The family asked for first is the primary one: its ClusterIP comes first.
    let prefer_v6 = service(&dual, "prefer-v6");
    assert_eq!(families_of(&prefer_v6.cluster_ips), ["IPv6", "IPv4"]);
    assert_eq!(resolved(prefer_v6).0, serde_json::json!(["IPv6", "IPv4"]));
}

#[test]
fn require_dual_stack_appends_the_other_family_and_needs_a_dual_stack_cluster() {
    let yaml = svc("both", "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6]\n");
    let both = clean(&dual_stack(), &yaml);
    assert_eq!(families_of(&service(&both, "both").cluster_ips), ["IPv6", "IPv4"]);
    let found = errors(&PlanConfig::default(), &svc("both", "  ipFamilyPolicy: RequireDualStack\n"));
    assert_eq!(
        found,
        [(
            "both".into(),
            "spec.ipFamilyPolicy".into(),
            "RequireDualStack needs a dual-stack cluster (a --service-cidr per family); the API server would reject this Service".into()
        )]
    );
    let planned = planned_with(&PlanConfig::default(), &Allocations::default(), &yaml);
    assert!(planned.plan.services.is_empty(), "a rejected Service is not planned");
}

#[test]
fn a_family_the_cluster_lacks_is_named() {
    let found = errors(
        &PlanConfig::default(),
        &[
            svc("asks-v6", "  ipFamilies: [IPv6]\n"),
            svc("asks-v4-v6", "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4, IPv6]\n"),
            svc("given-v6", "  clusterIP: 'fd00:96::1'\n"),
        ]
        .concat(),
    );
    let lacks = "IPv6 is not configured on this cluster: add an IPv6 --service-cidr; the API server would reject this Service";
    assert_eq!(
        found,
        [
            ("asks-v6".into(), "spec.ipFamilies[0]".into(), lacks.into()),
            ("asks-v4-v6".into(), "spec.ipFamilies[1]".into(), lacks.into()),
            ("given-v6".into(), "spec.clusterIP".into(), lacks.into()),
        ]
    );
}

#[test]
fn explicit_cluster_ips_keep_their_order() {
    let plan = clean(
        &dual_stack(),
        &[
            svc(
                "v4-first",
                "  ipFamilyPolicy: RequireDualStack\n  clusterIPs: [127.96.0.30, 'fd00:96::30']\n",
            ),
            svc(
                "v6-first",
                "  ipFamilyPolicy: PreferDualStack\n  clusterIPs: ['fd00:96::31', 127.96.0.31]\n",
            ),
            // Two addresses without a policy ask for both families, as on the API server.
            svc("inferred", "  clusterIP: 'fd00:96::32'\n  clusterIPs: ['fd00:96::32', 127.96.0.32]\n"),
            svc("one-given", "  ipFamilyPolicy: RequireDualStack\n  clusterIP: 'fd00:96::33'\n"),
        ]
        .concat(),
    );
    assert_eq!(service(&plan, "v4-first").cluster_ips, [ip("127.96.0.30"), ip("fd00:96::30")]);
    assert_eq!(service(&plan, "v6-first").cluster_ips, [ip("fd00:96::31"), ip("127.96.0.31")]);
    let inferred = service(&plan, "inferred");
    assert_eq!(inferred.cluster_ips, [ip("fd00:96::32"), ip("127.96.0.32")]);
    assert_eq!(resolved(inferred), (serde_json::json!(["IPv6", "IPv4"]), "RequireDualStack".into()));
    let one = service(&plan, "one-given");
    assert_eq!(one.cluster_ips[0], ip("fd00:96::33"));
    assert_eq!(families_of(&one.cluster_ips), ["IPv6", "IPv4"]);
}

#[test]
fn mismatches_name_their_field() {
    let found = errors(
        &dual_stack(),
        &[
            svc("differ", "  clusterIP: 127.96.0.40\n  clusterIPs: [127.96.0.41]\n"),
            svc("wrong-order", "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  clusterIPs: ['fd00:96::42', 127.96.0.42]\n"),
            svc("wrong-family", "  ipFamilies: [IPv4]\n  clusterIP: 'fd00:96::43'\n"),
            svc("single-two", "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n"),
            svc("same-twice", "  ipFamilyPolicy: RequireDualStack\n  clusterIPs: [127.96.0.44, 127.96.0.45]\n"),
            svc("family-twice", "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv6]\n"),
            svc("three", "  ipFamilies: [IPv4, IPv6, IPv4]\n"),
            svc("unknown-family", "  ipFamilies: [IPv5]\n"),
            svc("unknown-policy", "  ipFamilyPolicy: DualStack\n"),
            svc("outside", "  ipFamilies: [IPv6]\n  clusterIP: 'fd00:97::1'\n"),
            svc("outside-v4", "  ipFamilyPolicy: PreferDualStack\n  clusterIPs: [127.96.0.46, 'fd00:97::2']\n"),
        ]
        .concat(),
    );
    let fields: Vec<(&str, &str)> = found.iter().map(|(n, f, _)| (n.as_str(), f.as_str())).collect();
    assert_eq!(
        fields,
        [
            ("differ", "spec.clusterIPs[0]"),
            ("wrong-order", "spec.clusterIPs[0]"),
            ("wrong-order", "spec.clusterIPs[1]"),
            ("wrong-family", "spec.clusterIP"),
            ("single-two", "spec.ipFamilyPolicy"),
            ("same-twice", "spec.clusterIPs[1]"),
            ("family-twice", "spec.ipFamilies[1]"),
            ("three", "spec.ipFamilies"),
            ("unknown-family", "spec.ipFamilies[0]"),
            ("unknown-policy", "spec.ipFamilyPolicy"),
            ("outside", "spec.clusterIP"),
            ("outside-v4", "spec.clusterIPs[1]"),
        ],
        "{found:#?}"
    );
    let message = |name: &str| &found.iter().find(|(n, _, _)| n == name).unwrap().2;
    assert!(message("outside").contains("fd00:97::1 is not in the service CIDR fd00:96::/108"), "{found:#?}");
    assert!(message("outside-v4").contains("is not in the service CIDR fd00:96::/108"), "{found:#?}");
    assert!(message("wrong-family").contains("spec.ipFamilies[0]"), "{found:#?}");
    assert!(message("differ").contains("spec.clusterIP"), "{found:#?}");
}

#[test]
fn allocations_stay_per_family_across_replans() {
    let config = dual_stack();
    let first =
        planned_with(&config, &Allocations::default(), &svc("a", "  ipFamilyPolicy: PreferDualStack\n"));
    let held = service(&first.plan, "a").cluster_ips.clone();
    assert_eq!(families_of(&held), ["IPv4", "IPv6"]);
    assert_eq!(first.allocations.cluster_ips["default/a"], held);

    // A Service created earlier that now asks for a's IPv6 address does not get it: a keeps
    // what it held in each family.
    let taker = "apiVersion: v1\nkind: Service\nmetadata: {name: taker, creationTimestamp: '2020-01-01T00:00:00Z'}\nspec:\n  clusterIP: HELD\n  ports: [{port: 80}]\n---\n"
        .replace("HELD", &format!("'{}'", held[1]));
    let again = planned_with(
        &config,
        &first.allocations,
        &(taker + &svc("a", "  ipFamilyPolicy: PreferDualStack\n")),
    );
    assert_eq!(service(&again.plan, "a").cluster_ips, held);
    assert!(
        again.diagnostics().iter().any(|d| d.object.as_ref().is_some_and(|o| o.key.name == "taker")
            && d.field.as_deref() == Some("spec.clusterIP")
            && d.message.contains("already allocated to default/a")),
        "{:#?}",
        again.diagnostics()
    );

    // Turning the families around keeps both addresses, in the new order.
    let flipped = planned_with(
        &config,
        &first.allocations,
        &svc("a", "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv4]\n"),
    );
    assert_eq!(service(&flipped.plan, "a").cluster_ips, [held[1], held[0]]);

    // Dropping to one family and coming back: the family kept keeps its address.
    let single = planned_with(&config, &first.allocations, &svc("a", ""));
    assert_eq!(service(&single.plan, "a").cluster_ips, [held[0]]);
    let back = planned_with(&config, &single.allocations, &svc("a", "  ipFamilyPolicy: PreferDualStack\n"));
    assert_eq!(service(&back.plan, "a").cluster_ips[0], held[0]);
}

/// A ready Pod `name` labelled `app: <app>`, with an IPv4 and (when given) an IPv6 address.
fn pod(name: &str, app: &str, v4: &str, v6: Option<&str>) -> String {
    let pod = Pod::new(name).app(app).port("http", 8080).ip(v4).ready(true);
    match v6 {
        Some(v6) => pod.ip(v6).to_string(),
        None => pod.to_string(),
    }
}

fn endpoint_addresses(service: &ServicePlan) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = service.ports.iter().flat_map(|p| &p.endpoints).map(|e| e.address).collect();
    found.sort();
    found
}

#[test]
fn endpoints_are_only_of_the_services_families() {
    let yaml = [
        pod("a", "web", "127.98.0.1", Some("fd00:98::1")),
        pod("b", "web", "127.98.0.2", None),
        svc("v4", "  selector: {app: web}\n"),
        svc("v6", "  ipFamilies: [IPv6]\n  selector: {app: web}\n"),
        svc("both", "  ipFamilyPolicy: PreferDualStack\n  selector: {app: web}\n"),
    ]
    .concat();
    let plan = clean(&dual_stack(), &yaml);
    assert_eq!(endpoint_addresses(service(&plan, "v4")), [ip("127.98.0.1"), ip("127.98.0.2")]);
    assert_eq!(endpoint_addresses(service(&plan, "v6")), [ip("fd00:98::1")]);
    let both = service(&plan, "both");
    assert_eq!(endpoint_addresses(both), [ip("127.98.0.1"), ip("127.98.0.2"), ip("fd00:98::1")]);
    assert_eq!(both.backend_counts(), (2, 2), "one backend per Pod, whatever its families");
    assert_eq!(service(&plan, "v6").backend_counts(), (1, 1));
}

#[test]
fn endpoint_slices_count_only_in_the_services_families() {
    let slice = |name: &str, family: &str, address: &str| {
        EndpointSlice::new(name, "ext")
            .family(family)
            .port("{name: http, port: 8080}")
            .address(address)
            .to_string()
    };
    let yaml = [slice("ext-v4", "IPv4", "127.0.10.1"), slice("ext-v6", "IPv6", "fd00:10::1")].concat();
    let v4 = clean(&dual_stack(), &(svc("ext", "") + &yaml));
    assert_eq!(endpoint_addresses(service(&v4, "ext")), [ip("127.0.10.1")]);
    let v6 = clean(&dual_stack(), &(svc("ext", "  ipFamilies: [IPv6]\n") + &yaml));
    assert_eq!(endpoint_addresses(service(&v6, "ext")), [ip("fd00:10::1")]);
    let both = clean(&dual_stack(), &(svc("ext", "  ipFamilyPolicy: RequireDualStack\n") + &yaml));
    assert_eq!(endpoint_addresses(service(&both, "ext")), [ip("127.0.10.1"), ip("fd00:10::1")]);
}

#[test]
fn headless_services_resolve_their_families_too() {
    let headless = |name: &str, spec: &str| {
        Service::new(name).headless().spec(spec).port("{name: http, port: 80}").to_string()
    };
    let yaml = [
        pod("a", "db", "127.98.1.1", Some("fd00:98::11")),
        headless("plain", "  selector: {app: db}\n"),
        headless("prefer", "  ipFamilyPolicy: PreferDualStack\n  selector: {app: db}\n"),
        headless("v6", "  ipFamilies: [IPv6]\n  selector: {app: db}\n"),
        headless("no-selector", ""),
    ]
    .concat();
    let plan = clean(&dual_stack(), &yaml);
    assert_eq!(resolved(service(&plan, "plain")), (serde_json::json!(["IPv4"]), "SingleStack".into()));
    assert_eq!(endpoint_addresses(service(&plan, "plain")), [ip("127.98.1.1")]);
    assert_eq!(resolved(service(&plan, "prefer")).0, serde_json::json!(["IPv4", "IPv6"]));
    assert_eq!(endpoint_addresses(service(&plan, "prefer")), [ip("127.98.1.1"), ip("fd00:98::11")]);
    assert_eq!(endpoint_addresses(service(&plan, "v6")), [ip("fd00:98::11")]);
    assert_eq!(
        resolved(service(&plan, "no-selector")),
        (serde_json::json!(["IPv4", "IPv6"]), "RequireDualStack".into())
    );
    assert!(plan.services.iter().all(|s| s.cluster_ips.is_empty()));

    // A headless Service with a selector is held to the cluster's families; one without a
    // selector never fails, whatever the cluster has.
    let single = PlanConfig::default();
    let found =
        errors(&single, &headless("require", "  ipFamilyPolicy: RequireDualStack\n  selector: {app: db}\n"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].1, "spec.ipFamilyPolicy");
    let lenient = clean(
        &single,
        &[headless("bare", ""), headless("bare-v6", "  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n")]
            .concat(),
    );
    assert_eq!(
        resolved(service(&lenient, "bare")),
        (serde_json::json!(["IPv4", "IPv6"]), "RequireDualStack".into())
    );
    assert_eq!(resolved(service(&lenient, "bare-v6")), (serde_json::json!(["IPv6"]), "SingleStack".into()));
}

#[test]
fn external_name_services_have_no_families() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: example.com}\n";
    let plan = clean(&dual_stack(), yaml);
    let (families, policy) = resolved(service(&plan, "ext"));
    assert_eq!((families, policy), (serde_json::json!([]), serde_json::Value::Null));
    let found = errors(
        &dual_stack(),
        &yaml.replace("externalName: example.com", "externalName: example.com, ipFamilies: [IPv4]"),
    );
    assert_eq!(found.iter().map(|(_, f, _)| f.as_str()).collect::<Vec<_>>(), ["spec.ipFamilies"]);
}

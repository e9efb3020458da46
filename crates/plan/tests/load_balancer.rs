//! LoadBalancer addresses from MetalLB-shaped `IPAddressPool`s: requested addresses, pool
//! order and selectors, `autoAssign`, `avoidBuggyIPs`, sharing, exhaustion, overlapping pools,
//! dual stack, other classes, and addresses that stay put across Plans.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::plan::{Planned, planned_with};

/// A pool named `name` with `spec` lines (indented by two).
fn pool(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec:\n{spec}---\n"
    )
}

/// A LoadBalancer Service `name` in `namespace` with `metadata` lines and `spec` lines (both
/// indented by two), port 80 unless `spec` names ports.
fn lb(namespace: &str, name: &str, metadata: &str, spec: &str) -> String {
    let ports = if spec.contains("ports:") { "" } else { "  ports: [{port: 80}]\n" };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{metadata}spec:\n  type: LoadBalancer\n{ports}{spec}---\n"
    )
}

fn plan(yaml: &str) -> Planned {
    plan_after(yaml, &Allocations::default())
}

fn plan_after(yaml: &str, previous: &Allocations) -> Planned {
    let config = PlanConfig {
        service_cidrs: vec!["198.19.96.0/20".parse().unwrap(), "2001:db8:96::/112".parse().unwrap()],
        ..PlanConfig::default()
    };
    planned_with(yaml, &config, previous, 1)
}

/// The addresses of `namespace/name`, as text.
fn addresses(plan: &Plan, namespace: &str, name: &str) -> Vec<String> {
    let service = plan.services.iter().find(|s| s.key.namespace == namespace && s.key.name == name).unwrap();
    service.load_balancer_ips.iter().map(IpAddr::to_string).collect()
}

/// Every diagnostic as `field: message`.
fn said(planned: &Planned) -> Vec<String> {
    planned
        .diagnostics()
        .iter()
        .map(|d| format!("{}: {}", d.field.as_deref().unwrap_or(""), d.message))
        .collect()
}

#[test]
fn addresses_come_lowest_first_from_pools_in_priority_order() {
    let yaml = pool("second", "  addresses: [198.18.2.0/24]\n  serviceAllocation: {priority: 20}\n")
        + &pool("first", "  addresses: [198.18.1.10-198.18.1.11]\n  serviceAllocation: {priority: 10}\n")
        + &pool("unranked", "  addresses: [198.18.3.0/24]\n")
        + &lb("default", "a", "", "")
        + &lb("default", "b", "", "")
        + &lb("default", "c", "", "");
    let planned = plan(&yaml);
    let p = &planned.plan;
    // a and b fill the first pool; c moves on to the next by priority, from its .0 (MetalLB
    // hands out a CIDR's every address unless avoidBuggyIPs).
    assert_eq!(addresses(p, "default", "a"), ["198.18.1.10"]);
    assert_eq!(addresses(p, "default", "b"), ["198.18.1.11"]);
    assert_eq!(addresses(p, "default", "c"), ["198.18.2.0"]);
    assert!(said(&planned).is_empty(), "{:?}", said(&planned));
}

#[test]
fn requested_addresses_are_honoured_or_refused_by_name() {
    let yaml = pool("manual", "  addresses: [198.18.1.0/24]\n  autoAssign: false\n")
        + &lb("default", "by-annotation", "  annotations: {metallb.io/loadBalancerIPs: 198.18.1.7}\n", "")
        + &lb("default", "by-spec", "", "  loadBalancerIP: 198.18.1.8\n")
        + &lb("default", "taken", "", "  loadBalancerIP: 198.18.1.8\n")
        + &lb("default", "outside", "", "  loadBalancerIP: 192.0.2.1\n")
        + &lb("default", "by-pool", "  annotations: {metallb.io/address-pool: manual}\n", "")
        + &lb("default", "nothing-asked", "", "");
    let planned = plan(&yaml);
    let p = &planned.plan;
    assert_eq!(addresses(p, "default", "by-annotation"), ["198.18.1.7"]);
    assert_eq!(addresses(p, "default", "by-spec"), ["198.18.1.8"]);
    assert!(addresses(p, "default", "taken").is_empty());
    assert!(addresses(p, "default", "outside").is_empty());
    // Named, the autoAssign: false pool serves; unnamed, it does not.
    assert_eq!(addresses(p, "default", "by-pool"), ["198.18.1.0"]);
    assert!(addresses(p, "default", "nothing-asked").is_empty());
    let said = said(&planned);
    let has = |prefix: &str| said.iter().any(|s| s.starts_with(prefix));
    assert!(has("spec.loadBalancerIP: 198.18.1.8 is already given to Service default/by-spec"), "{said:?}");
    assert!(has("spec.loadBalancerIP: 192.0.2.1 is in no pool serving this Service (manual)"), "{said:?}");
    assert!(has("spec.type: no address pool serves this Service; it stays pending"), "{said:?}");
}

#[test]
fn selectors_and_namespaces_choose_the_pool() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: web}}\n---\n"
        .to_owned()
        + &pool(
            "web-team",
            "  addresses: [198.18.1.0/30]\n  serviceAllocation: {priority: 1, namespaceSelectors: [{matchLabels: {team: web}}]}\n",
        )
        + &pool(
            "exposed",
            "  addresses: [198.18.2.0/30]\n  serviceAllocation: {priority: 2, serviceSelectors: [{matchExpressions: [{key: exposed, operator: Exists}]}]}\n",
        )
        + &pool(
            "ops-only",
            "  addresses: [198.18.3.0/30]\n  serviceAllocation: {priority: 3, namespaces: [ops]}\n",
        )
        + &pool("rest", "  addresses: [198.18.4.0/30]\n")
        + &lb("shop", "store", "", "")
        + &lb("default", "api", "  labels: {exposed: 'yes'}\n", "")
        + &lb("ops", "grafana", "", "")
        + &lb("default", "other", "", "");
    let p = plan(&yaml).plan;
    assert_eq!(addresses(&p, "shop", "store"), ["198.18.1.0"]);
    assert_eq!(addresses(&p, "default", "api"), ["198.18.2.0"]);
    assert_eq!(addresses(&p, "ops", "grafana"), ["198.18.3.0"]);
    assert_eq!(addresses(&p, "default", "other"), ["198.18.4.0"]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255_and_exhaustion_is_said() {
    let yaml = pool("careful", "  addresses: [198.18.1.255-198.18.2.1]\n  avoidBuggyIPs: true\n")
        + &lb("default", "a", "", "")
        + &lb("default", "b", "", "");
    let planned = plan(&yaml);
    assert_eq!(addresses(&planned.plan, "default", "a"), ["198.18.2.1"]);
    assert!(addresses(&planned.plan, "default", "b").is_empty());
    assert!(
        said(&planned)
            .iter()
            .any(|s| s == "spec.type: no free IPv4 address in careful; the Service stays pending"),
        "{:?}",
        said(&planned)
    );
}

#[test]
fn services_with_the_same_sharing_key_share_an_address_when_their_ports_differ() {
    let share = "  annotations: {metallb.io/allow-shared-ip: dns}\n";
    let yaml = pool("one", "  addresses: [198.18.1.5/32, 198.18.1.6/32]\n")
        + &lb("default", "dns-udp", share, "  ports: [{port: 53, protocol: UDP}]\n")
        + &lb("default", "dns-tcp", share, "  ports: [{port: 53, protocol: TCP}]\n")
        + &lb("default", "dns-clash", share, "  ports: [{port: 53, protocol: TCP}]\n")
        + &lb("default", "no-key", "", "  ports: [{port: 8053, protocol: TCP}]\n");
    let planned = plan(&yaml);
    let p = &planned.plan;
    assert_eq!(addresses(p, "default", "dns-udp"), ["198.18.1.5"]);
    assert_eq!(addresses(p, "default", "dns-tcp"), ["198.18.1.5"], "same key, other protocol: shared");
    assert_eq!(addresses(p, "default", "dns-clash"), ["198.18.1.6"], "same port and protocol: its own");
    assert!(addresses(p, "default", "no-key").is_empty(), "nothing left, and no sharing without a key");
}

#[test]
fn addresses_stay_put_across_plans_and_go_with_their_service() {
    let yaml = pool("p", "  addresses: [198.18.1.0/29]\n")
        + &lb("default", "a", "", "")
        + &lb("default", "b", "", "");
    let first = plan(&yaml);
    assert_eq!(addresses(&first.plan, "default", "b"), ["198.18.1.1"]);
    // a goes; b keeps its address, and a newcomer takes a's.
    let without_a = pool("p", "  addresses: [198.18.1.0/29]\n")
        + &lb("default", "b", "", "")
        + &lb("default", "c", "", "");
    let second = plan_after(&without_a, &first.allocations);
    assert_eq!(addresses(&second.plan, "default", "b"), ["198.18.1.1"]);
    assert_eq!(addresses(&second.plan, "default", "c"), ["198.18.1.0"]);
    assert!(!second.allocations.load_balancer_ips.contains_key("default/a"), "released");
    // b turned into a ClusterIP Service gives its address back.
    let cluster_ip = without_a.replace(
        "metadata:\n  name: b\n  namespace: default\nspec:\n  type: LoadBalancer\n",
        "metadata:\n  name: b\n  namespace: default\nspec:\n  type: ClusterIP\n",
    );
    let third = plan_after(&cluster_ip, &second.allocations);
    assert!(!third.allocations.load_balancer_ips.contains_key("default/b"));
    // A pool edited so that the old address falls outside moves the Service.
    let moved = without_a.replace("198.18.1.0/29", "198.18.9.0/29");
    let fourth = plan_after(&moved, &second.allocations);
    assert_eq!(addresses(&fourth.plan, "default", "b"), ["198.18.9.0"]);
}

#[test]
fn dual_stack_services_get_one_address_per_family() {
    let yaml = pool("both", "  addresses: [198.18.1.0/24, '2001:db8:1b::/120']\n")
        + &lb("default", "dual", "", "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]\n")
        + &lb("default", "v4", "  annotations: {metallb.io/loadBalancerIPs: '198.18.1.9'}\n", "");
    let p = plan(&yaml).plan;
    assert_eq!(addresses(&p, "default", "dual"), ["2001:db8:1b::", "198.18.1.0"]);
    assert_eq!(addresses(&p, "default", "v4"), ["198.18.1.9"]);
}

#[test]
fn overlapping_pools_and_other_classes() {
    let yaml = pool("a", "  addresses: [198.18.1.0/24]\n")
        + &pool("b", "  addresses: [198.18.1.128/25]\n")
        + &lb("default", "ours", "", "  loadBalancerClass: portico.dev/loadbalancer\n")
        + &lb("default", "theirs", "", "  loadBalancerClass: example.com/cloud\n");
    let planned = plan(&yaml);
    let said = said(&planned);
    assert!(
        said.iter().any(|s| s.starts_with("spec.addresses[0]: 198.18.1.128-198.18.1.255 overlaps 198.18.1.0-198.18.1.255 of IPAddressPool metallb-system/a")),
        "{said:?}"
    );
    assert_eq!(addresses(&planned.plan, "default", "ours"), ["198.18.1.0"]);
    assert!(addresses(&planned.plan, "default", "theirs").is_empty(), "another controller's Service");
}

#[test]
fn without_pools_the_flag_pool_serves_as_before() {
    let yaml = lb("default", "a", "", "");
    let planned = planned_with(&yaml, &PlanConfig::default(), &Allocations::default(), 1);
    assert_eq!(addresses(&planned.plan, "default", "a"), ["127.97.0.1"]);
}

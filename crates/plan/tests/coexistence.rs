//! Portico in a cluster, and beside the tools it replaces: the API server's ClusterIPs and
//! families are taken as it stored them; with a proxy name of its own Portico proxies only the
//! Services labelled with it (kube-proxy leaves labelled Services alone and serves the rest),
//! and with `load_balancer_class_only` it gives addresses only to Services of its own
//! `loadBalancerClass` (MetalLB or a cloud keeps those without one).
#![allow(clippy::unwrap_used)]

use portico_plan::{Allocations, PlanConfig};
use portico_testkit::plan::planned_with;

const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ours, namespace: default, labels: {service.kubernetes.io/service-proxy-name: portico}}
spec: {type: LoadBalancer, loadBalancerClass: portico.dev/loadbalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: theirs, namespace: default, labels: {service.kubernetes.io/service-proxy-name: cilium}}
spec: {type: LoadBalancer, ports: [{port: 80}]}
";

/// (name, proxied, has LoadBalancer addresses) of each Service planned with `config`.
fn planned(config: &PlanConfig) -> Vec<(String, bool, bool)> {
    let planned = planned_with(SERVICES, config, &Allocations::default(), 1).clean();
    planned
        .plan
        .services
        .iter()
        .map(|s| (s.key.name.clone(), s.proxied, !s.load_balancer_ips.is_empty()))
        .collect()
}

fn row(name: &str, proxied: bool, addressed: bool) -> (String, bool, bool) {
    (name.to_owned(), proxied, addressed)
}

#[test]
fn alone_portico_serves_every_unlabelled_service_and_every_unset_class() {
    let rows = planned(&PlanConfig::default());
    assert_eq!(rows, [row("ours", false, true), row("plain", true, true), row("theirs", false, true)]);
}

#[test]
fn with_a_proxy_name_only_services_labelled_with_it_are_proxied() {
    let config = PlanConfig { service_proxy_name: Some("portico".into()), ..PlanConfig::default() };
    let rows = planned(&config);
    assert_eq!(rows, [row("ours", true, true), row("plain", false, true), row("theirs", false, true)]);
}

#[test]
fn with_class_only_services_without_a_class_get_no_address_from_portico() {
    let config = PlanConfig { load_balancer_class_only: true, ..PlanConfig::default() };
    let rows = planned(&config);
    assert_eq!(rows, [row("ours", false, true), row("plain", true, false), row("theirs", false, false)]);
}

/// Services as an API server stored them: ClusterIPs from its own range, both families of a
/// dual-stack cluster filled in.
const ADMITTED: &str = "
apiVersion: v1
kind: Service
metadata: {name: v4, namespace: default}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ipFamilies: [IPv4], ipFamilyPolicy: SingleStack, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: both, namespace: default}
spec:
  clusterIP: 10.96.0.11
  clusterIPs: [10.96.0.11, 'fd00:10:96::11']
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: prefers, namespace: default}
spec: {clusterIP: 10.96.0.12, clusterIPs: [10.96.0.12], ipFamilies: [IPv4], ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}
";

#[test]
fn in_a_cluster_the_api_servers_cluster_ips_and_families_are_taken_as_they_are() {
    // Standalone, Portico admits as an API server of its own ranges would: all refused.
    let standalone = planned_with(ADMITTED, &PlanConfig::default(), &Allocations::default(), 1);
    assert!(standalone.plan.services.is_empty(), "outside 127.96.0.0/16");
    assert_eq!(standalone.errors().len(), 3, "{:?}", standalone.errors());
    let admitted = PlanConfig { admitted: true, ..PlanConfig::default() };
    let planned = planned_with(ADMITTED, &admitted, &Allocations::default(), 1).clean();
    let ips: Vec<(String, Vec<String>)> = planned
        .plan
        .services
        .iter()
        .map(|s| (s.key.name.clone(), s.cluster_ips.iter().map(ToString::to_string).collect()))
        .collect();
    let row = |name: &str, ips: &[&str]| (name.to_owned(), ips.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        ips,
        [
            row("both", &["10.96.0.11", "fd00:10:96::11"]),
            // PreferDualStack in a cluster that gave it one family keeps one: no address made up.
            row("prefers", &["10.96.0.12"]),
            row("v4", &["10.96.0.10"]),
        ]
    );
}

//! Portico beside the tools it replaces: with a proxy name of its own it proxies only the
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

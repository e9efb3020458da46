//! Which UDP flows a new Plan leaves without their endpoint: kube-proxy's two cases, and
//! nothing for TCP or for what did not change.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use portico_kernel::Filter;
use portico_kernel::stale::stale_udp_flows;
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::plan::planned_with;

/// A LoadBalancer Service with a UDP and a TCP port over the endpoints `addresses`.
fn plan(addresses: &[&str]) -> Plan {
    let endpoints: String =
        addresses.iter().map(|a| format!("- {{addresses: [{a}], nodeName: localhost}}\n")).collect();
    let endpoints = if endpoints.is_empty() { "[]\n".to_owned() } else { format!("\n{endpoints}") };
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: dns}}
spec:
  type: LoadBalancer
  clusterIP: 127.96.0.10
  externalIPs: [127.99.0.1]
  ports: [{{name: dns, port: 53, protocol: UDP, nodePort: 30053}}, {{name: tcp, port: 80, nodePort: 30080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: dns-1, labels: {{kubernetes.io/service-name: dns}}}}
addressType: IPv4
ports: [{{name: dns, port: 5353, protocol: UDP}}, {{name: tcp, port: 8080}}]
endpoints: {endpoints}"
    );
    planned_with(&yaml, &PlanConfig::default(), &Allocations::default(), 1).clean().plan
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// The filters as (orig_dst, orig_dst_port, reply_src), sorted.
fn seen(filters: &[Filter]) -> Vec<(Option<IpAddr>, Option<u16>, Option<IpAddr>)> {
    assert!(
        filters
            .iter()
            .all(|f| f.protocol == portico_kernel::conntrack::Protocol::Udp && f.reply_src_port.is_none())
    );
    let mut out: Vec<_> = filters.iter().map(|f| (f.orig_dst, f.orig_dst_port, f.reply_src)).collect();
    out.sort();
    out
}

#[test]
fn a_removed_endpoint_takes_its_flows_to_every_address_and_the_node_port_along() {
    let before = plan(&["127.98.0.1", "127.98.0.2"]);
    let after = plan(&["127.98.0.2"]);
    let lb = before.services[0].load_balancer_ips[0];
    let gone = ip("127.98.0.1");
    let mut expected = vec![
        (ip("127.96.0.10"), Some(53), gone),
        (Some(lb), Some(53), gone),
        (ip("127.99.0.1"), Some(53), gone),
        (None, Some(30053), gone),
    ];
    expected.sort();
    assert_eq!(seen(&stale_udp_flows(Some(&before), &after, "localhost")), expected);
}

#[test]
fn first_endpoints_clear_the_flows_made_while_there_were_none() {
    let before = plan(&[]);
    let after = plan(&["127.98.0.1"]);
    let found = seen(&stale_udp_flows(Some(&before), &after, "localhost"));
    assert!(found.contains(&(ip("127.96.0.10"), Some(53), None)), "{found:?}");
    assert!(found.contains(&(None, Some(30053), None)), "{found:?}");
    assert_eq!(found.len(), 4, "ClusterIP, LoadBalancer IP, external IP and NodePort: {found:?}");
    assert_eq!(seen(&stale_udp_flows(None, &after, "localhost")).len(), 4, "nothing served before: the same");
}

#[test]
fn nothing_is_stale_when_the_udp_endpoints_stay_or_only_tcp_changes() {
    let plan_a = plan(&["127.98.0.1"]);
    assert!(stale_udp_flows(Some(&plan_a), &plan_a, "localhost").is_empty());
    assert!(
        stale_udp_flows(Some(&plan(&[])), &plan(&[]), "localhost").is_empty(),
        "still none: nothing to clear"
    );
    // A Service that goes away takes its endpoints' flows with it.
    let empty = planned_with("", &PlanConfig::default(), &Allocations::default(), 1).clean().plan;
    assert_eq!(stale_udp_flows(Some(&plan_a), &empty, "localhost").len(), 4);
}

//! From a Plan to listeners: every method, traffic policies, HostPorts, conflicts.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use portico_l4::{ListenKey, frontends};
use portico_plan::{Allocations, PlanConfig, Protocol};
use portico_testkit::plan::{planned, planned_with};

const MANIFESTS: &str = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  clusterIP: 127.96.0.10
  loadBalancerIP: 127.97.0.5
  externalIPs: [127.99.0.10]
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  ports:
  - {name: http, port: 80, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [127.98.0.1], nodeName: localhost}
- {addresses: [127.98.0.2], nodeName: elsewhere}
---
apiVersion: v1
kind: Service
metadata:
  name: theirs
  labels: {service.kubernetes.io/service-proxy-name: other}
spec:
  clusterIP: 127.96.0.11
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: clash}
spec:
  externalIPs: [127.97.0.5]
  clusterIP: 127.96.0.12
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: edge}
spec:
  containers: [{name: c, ports: [{containerPort: 8080, hostPort: 18080}]}]
status: {podIP: 127.98.0.9}
";

#[test]
fn every_method_becomes_listeners_with_the_right_endpoints() {
    let planned = planned(MANIFESTS).clean();
    let table = frontends(&planned.plan, "localhost");
    let get = |addr: &str, protocol| {
        let key = ListenKey { addr: addr.parse().unwrap(), protocol };
        table.frontends.get(&key).unwrap_or_else(|| panic!("no listener {key}: {:?}", table.frontends.keys()))
    };
    let both: Vec<SocketAddr> = vec!["127.98.0.1:8080".parse().unwrap(), "127.98.0.2:8080".parse().unwrap()];
    let local: Vec<SocketAddr> = vec!["127.98.0.1:8080".parse().unwrap()];
    let cluster_ip = get("127.96.0.10:80", Protocol::Tcp);
    assert_eq!(
        (cluster_ip.method, &cluster_ip.endpoints),
        ("ClusterIP", &both),
        "internal policy is Cluster"
    );
    assert!(cluster_ip.affinity.is_some());
    assert_eq!(
        get("127.0.0.1:30080", Protocol::Tcp).endpoints,
        local,
        "NodePort follows externalTrafficPolicy Local"
    );
    assert_eq!(get("127.97.0.5:80", Protocol::Tcp).method, "LoadBalancer");
    assert_eq!(get("127.99.0.10:80", Protocol::Tcp).method, "ExternalIP");
    assert_eq!(get("127.96.0.10:53", Protocol::Udp).endpoints.len(), 2);
    assert_eq!(
        get("127.0.0.1:30053", Protocol::Udp).endpoints,
        vec!["127.98.0.1:5353".parse::<SocketAddr>().unwrap()]
    );
    let host_port = get("127.0.0.1:18080", Protocol::Tcp);
    assert_eq!(
        (host_port.method, host_port.endpoints.clone()),
        ("HostPort", vec!["127.98.0.9:8080".parse().unwrap()])
    );
    assert!(
        !table.frontends.keys().any(|k| k.addr.ip().to_string() == "127.96.0.11"),
        "another proxy's Service"
    );
    assert_eq!(table.conflicts.len(), 1, "{:?}", table.conflicts);
    assert!(table.conflicts[0].1.contains("default/clash"));
    assert_eq!(table.frontends.len(), 10, "{:?}", table.frontends.keys().collect::<Vec<_>>());
}

/// A dual-stack Service and an IPv4-only one, on a node with an IPv4 and an IPv6 address.
const DUAL_STACK: &str = "
apiVersion: v1
kind: Service
metadata: {name: dual}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ports: [{name: http, port: 80, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-4, labels: {kubernetes.io/service-name: dual}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [127.98.0.1]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-6, labels: {kubernetes.io/service-name: dual}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ['fd00:98::1']}]
---
apiVersion: v1
kind: Service
metadata: {name: four}
spec:
  type: NodePort
  ports: [{name: http, port: 80, nodePort: 30081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: four-4, labels: {kubernetes.io/service-name: four}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [127.98.0.2]}]
";

#[test]
fn each_ip_family_is_proxied_on_its_own_as_kube_proxy_does() {
    let config = PlanConfig {
        service_cidrs: vec!["127.96.0.0/16".parse().unwrap(), "fd00:96::/108".parse().unwrap()],
        local_node_addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        ..PlanConfig::default()
    };
    let planned = planned_with(DUAL_STACK, &config, &Allocations::default(), 1).clean();
    let table = frontends(&planned.plan, "localhost");
    let endpoints = |addr: &str| -> Option<Vec<SocketAddr>> {
        let key = ListenKey { addr: addr.parse().unwrap(), protocol: Protocol::Tcp };
        table.frontends.get(&key).map(|f| f.endpoints.clone())
    };
    let dual = planned.plan.services.iter().find(|s| s.key.name == "dual").unwrap();
    assert_eq!(dual.cluster_ips.len(), 2);
    for ip in &dual.cluster_ips {
        let wanted = if ip.is_ipv4() { "127.98.0.1:8080" } else { "[fd00:98::1]:8080" };
        let listener = SocketAddr::new(*ip, 80).to_string();
        assert_eq!(endpoints(&listener), Some(vec![wanted.parse().unwrap()]), "{listener}");
    }
    assert_eq!(endpoints("127.0.0.1:30080"), Some(vec!["127.98.0.1:8080".parse().unwrap()]));
    assert_eq!(endpoints("[::1]:30080"), Some(vec!["[fd00:98::1]:8080".parse().unwrap()]));
    // An IPv4-only Service has no listener on the node's IPv6 address.
    assert_eq!(endpoints("127.0.0.1:30081"), Some(vec!["127.98.0.2:8080".parse().unwrap()]));
    assert_eq!(endpoints("[::1]:30081"), None);
}

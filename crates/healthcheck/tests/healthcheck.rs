//! healthCheckNodePort over real loopback sockets: 200 with local endpoints, 503 without,
//! listeners following the Plan and the drain.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portico_dataplane::{DataPlane, drain};
use portico_healthcheck::{HealthChecks, checks};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_testkit::http::send;
use portico_testkit::net::{LOCALHOST, free_port_on};
use portico_testkit::plan::planned_with;
use prometheus_client::registry::Registry;

/// A LoadBalancer Service with `externalTrafficPolicy: Local`, its health checks on `port`,
/// and one endpoint on this node whose conditions are `local`, one on another node.
fn plan(port: u16, local: &str, policy: &str) -> Arc<Plan> {
    // The API server allows a health-check port only with the Local policy.
    let health = if policy == "Local" { format!("  healthCheckNodePort: {port}") } else { String::new() };
    let yaml = format!(
        "
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
{health}
  ports: [{{name: http, port: 80}}, {{name: alt, port: 81}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: alt, port: 8081}}]
endpoints:
- {{addresses: [127.98.0.1], nodeName: localhost, conditions: {local}}}
- {{addresses: [127.98.0.2], nodeName: elsewhere}}
"
    );
    let config = PlanConfig { node_port_range: 1024..=65535, ..PlanConfig::default() };
    Arc::new(planned_with(&yaml, &config, &Allocations::default(), 1).clean().plan)
}

const READY: &str = "{ready: true}";
const TERMINATING: &str = "{ready: false, serving: true, terminating: true}";

#[test]
fn only_local_ready_endpoints_count_and_only_local_policy_services_are_checked() {
    let port = 31000;
    let table = checks(&plan(port, READY, "Local"), "localhost");
    let check = &table[&port];
    assert_eq!(check.service.to_string(), "shop/web");
    assert_eq!(check.local_endpoints, 2, "one Pod behind two Service ports counts twice, as kube-proxy");
    assert_eq!(checks(&plan(port, READY, "Local"), "elsewhere")[&port].local_endpoints, 2);
    assert_eq!(checks(&plan(port, TERMINATING, "Local"), "localhost")[&port].local_endpoints, 0);
    assert!(checks(&plan(port, READY, "Cluster"), "localhost").is_empty(), "Cluster policy has none");
}

async fn ask(addr: SocketAddr) -> portico_testkit::http::Answer {
    send(addr, b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n").await
}

#[tokio::test]
async fn answers_follow_the_plan_and_listeners_close_with_their_service_and_the_drain() {
    let port = free_port_on(LOCALHOST);
    let addr = SocketAddr::new(LOCALHOST, port);
    let (trigger, watch) = drain::channel();
    let checks = HealthChecks::new("localhost", watch, &mut Registry::default());
    assert!(!checks.readiness().is_ready());

    let diagnostics = checks.apply(&plan(port, READY, "Local")).await;
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert!(checks.readiness().is_ready());
    let answer = ask(addr).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let json = answer.json();
    assert_eq!(json["service"]["namespace"], "shop");
    assert_eq!(json["service"]["name"], "web");
    assert_eq!(json["localEndpoints"], 2);
    assert_eq!(json["serviceProxyHealthy"], true);

    // The local Pod is terminating: the load balancer must stop sending here.
    checks.apply(&plan(port, TERMINATING, "Local")).await;
    let answer = ask(addr).await;
    assert_eq!((answer.status, answer.json()["localEndpoints"].as_u64()), (503, Some(0)));

    // Cluster policy: no health check, the port closes.
    checks.apply(&plan(port, READY, "Cluster")).await;
    assert!(refused_soon(addr).await, "the listener of a Service without a health check stays open");

    // Back, then the drain closes it.
    checks.apply(&plan(port, READY, "Local")).await;
    assert_eq!(ask(addr).await.status, 200);
    let waited = tokio::spawn(trigger.drain(Duration::from_secs(1)));
    assert!(refused_soon(addr).await, "the drain leaves a health check open");
    waited.await.unwrap();
}

#[tokio::test]
async fn a_port_already_taken_is_reported_on_the_service_and_retried_with_the_next_plan() {
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let (_trigger, watch) = drain::channel();
    let checks = HealthChecks::new("localhost", watch, &mut Registry::default());
    let diagnostics = checks.apply(&plan(port, READY, "Local")).await;
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].field.as_deref(), Some("spec.healthCheckNodePort"));
    assert_eq!(diagnostics[0].object.as_ref().unwrap().to_string(), "Service shop/web");
    drop(taken);
    assert!(checks.apply(&plan(port, READY, "Local")).await.is_empty());
    assert_eq!(ask(SocketAddr::new(LOCALHOST, port)).await.status, 200);
}

/// Whether connecting to `addr` is refused within a second.
async fn refused_soon(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

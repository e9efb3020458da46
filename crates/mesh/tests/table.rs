//! The mesh's table of a Plan, for one node: Service addresses lead to their ready endpoints of
//! the same family in turn, meshed addresses name their Pod and identity, and only this node's
//! meshed Pods are served here, each with its policies.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use portico_mesh::table::table;
use portico_testkit::plan::planned;

const MANIFESTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {portico.dev/mesh: enabled}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, serviceAccountName: web, containers: [{name: c, image: portico, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec: {nodeName: n2, serviceAccountName: web, containers: [{name: c, image: portico, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: default, labels: {app: plain}}
spec: {nodeName: n1, containers: [{name: c, image: portico}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
---
";

#[test]
fn a_node_serves_its_own_meshed_pods_and_knows_every_peer() {
    let planned = planned(MANIFESTS).without_errors();
    let (n1, diagnostics) = table(&planned.plan, "n1");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let local: Vec<String> = n1.local.keys().map(ToString::to_string).collect();
    assert_eq!(local, ["shop/web-a"]);
    let web_a = &n1.local.values().next().unwrap();
    assert_eq!(web_a.identity.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(web_a.policy.allow.len(), 1, "the policy selecting app=web applies");
    assert_eq!(n1.peers.len(), 2, "both web Pods are peers; the plain Pod is not");
    let (n2, _) = table(&planned.plan, "n2");
    assert_eq!(n2.local.keys().map(ToString::to_string).collect::<Vec<_>>(), ["shop/web-b"]);
}

#[test]
fn service_addresses_lead_to_their_endpoints_in_turn() {
    let planned = planned(MANIFESTS).without_errors();
    let (n1, _) = table(&planned.plan, "n1");
    let web = planned.plan.services.iter().find(|s| s.key.name == "web").unwrap();
    let vip = SocketAddr::new(web.cluster_ips[0], 80);
    let picks: Vec<SocketAddr> = (0..4).map(|_| n1.resolve(vip).unwrap().0).collect();
    assert_eq!(picks[0], picks[2]);
    assert_ne!(picks[0], picks[1], "round robin over both endpoints");
    assert!(picks.iter().all(|p| p.port() == 8080 && n1.peers.contains_key(&p.ip())));
    assert_eq!(n1.resolve(vip).unwrap().1.map(ToString::to_string).as_deref(), Some("shop/web"));
    // UDP ports are not the mesh's; an address that is no Service is reached as it is.
    assert!(!n1.services.contains_key(&SocketAddr::new(web.cluster_ips[0], 53)));
    let elsewhere: SocketAddr = "198.18.9.9:443".parse().unwrap();
    assert_eq!(n1.resolve(elsewhere), Some((elsewhere, None)));
    // A Service without endpoints leads nowhere.
    let empty = planned.plan.services.iter().find(|s| s.key.name == "empty").unwrap();
    assert_eq!(n1.resolve(SocketAddr::new(empty.cluster_ips[0], 80)), None);
}

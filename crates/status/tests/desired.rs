//! What the status writer wants written, from manifests planned as the binary plans them:
//! Portico's LoadBalancer Services get their addresses and lose them when they stop being
//! LoadBalancers, another `loadBalancerClass` is never touched, a status already right is not
//! written again, Ingresses of Portico's class get the published Service's addresses and
//! others get nothing, and Events go only to Portico's objects.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;

use portico_model::{ObjectKey, Store, parse_text};
use portico_plan::{Allocations, Plan, PlanConfig};
use portico_status::desired::Status;
use portico_status::{Scope, notes, statuses};

fn planned(yaml: &str) -> (Store, Plan, Vec<portico_model::Diagnostic>) {
    let (objects, mut diagnostics) = parse_text(Path::new("test.yaml"), yaml);
    let (store, stored) = Store::from_objects(objects);
    diagnostics.extend(stored);
    let config =
        PlanConfig { load_balancer_pools: vec!["127.0.80.0/24".parse().unwrap()], ..PlanConfig::default() };
    // As in a cluster: the addresses the API server holds are the allocations planned from.
    let observed = Allocations {
        load_balancer_ips: portico_plan::lb::observed(&store, false),
        ..Allocations::default()
    };
    let planned = portico_plan::plan(&store, &config, &observed, 1);
    diagnostics.extend(planned.diagnostics);
    (store, planned.plan, diagnostics)
}

fn lb(name: &str, extra_spec: &str, status: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  type: LoadBalancer\n  clusterIP: 127.96.0.{n}\n  ports: [{{port: 80}}]\n{extra_spec}{status}",
        n = name.len()
    )
}

fn services_only() -> Scope {
    Scope { services: true, ..Scope::default() }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn portico_load_balancers_get_their_addresses_and_other_classes_are_left_alone() {
    let yaml = [
        lb("web", "", ""),
        lb(
            "elsewhere",
            "  loadBalancerClass: example.com/cloud\n",
            "status: {loadBalancer: {ingress: [{ip: 192.0.2.7}]}}\n",
        ),
        lb("ours", "  loadBalancerClass: portico.dev/loadbalancer\n", ""),
    ]
    .concat();
    let (store, plan, _) = planned(&yaml);
    let wanted = statuses(&store, &plan, &services_only());
    assert_eq!(
        wanted,
        vec![
            Status::Service { service: ObjectKey::new("shop", "ours"), addresses: vec![ip("127.0.80.2")] },
            Status::Service { service: ObjectKey::new("shop", "web"), addresses: vec![ip("127.0.80.1")] },
        ],
    );
    assert!(statuses(&store, &plan, &Scope::default()).is_empty(), "nothing outside the scope");
    // Beside MetalLB: only Portico's class is Portico's to write.
    let class_only = Scope { load_balancer_class_only: true, ..services_only() };
    let written: Vec<String> =
        statuses(&store, &plan, &class_only).iter().map(|s| s.object().1.name.clone()).collect();
    assert_eq!(written, ["ours"]);
}

#[test]
fn a_status_already_right_is_not_written_and_one_no_longer_wanted_is_taken_back() {
    let right = lb("web", "", "status: {loadBalancer: {ingress: [{ip: 127.0.80.5, ipMode: VIP}]}}\n");
    let (store, plan, _) = planned(&right);
    assert_eq!(
        statuses(&store, &plan, &services_only()),
        vec![],
        "already as planned (kept from its status)"
    );
    let was_lb = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 127.96.0.3, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 127.0.80.1}]}}\n";
    let (store, plan, _) = planned(was_lb);
    assert_eq!(
        statuses(&store, &plan, &services_only()),
        vec![Status::Service { service: ObjectKey::new("shop", "web"), addresses: vec![] }],
    );
}

const INGRESSES: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ours, namespace: shop, uid: i-1}
spec:
  ingressClassName: portico
  tls: [{hosts: [shop.example], secretName: missing}]
  rules: [{host: shop.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs, namespace: shop}
spec:
  ingressClassName: nginx
  tls: [{hosts: [other.example], secretName: missing}]
  rules: [{host: other.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: v1
kind: Service
metadata: {name: portico-ingress, namespace: portico-system}
spec: {type: LoadBalancer, clusterIP: 127.96.0.99, ports: [{port: 80}]}
"#;

#[test]
fn ingresses_of_portico_get_the_published_services_addresses_and_others_nothing() {
    let yaml = format!("{INGRESSES}{}", lb("web", "", ""));
    let (store, plan, diagnostics) = planned(&yaml);
    let published = Scope {
        ingresses: true,
        publish_service: Some(ObjectKey::new("portico-system", "portico-ingress")),
        ..Scope::default()
    };
    let lb_ip =
        plan.services.iter().find(|s| s.key.name == "portico-ingress").unwrap().load_balancer_ips.clone();
    assert_eq!(lb_ip.len(), 1);
    assert_eq!(
        statuses(&store, &plan, &published),
        vec![Status::Ingress { ingress: ObjectKey::new("shop", "ours"), addresses: lb_ip }],
    );
    // A LoadBalancer still waiting for an address publishes nothing (not its ClusterIP).
    let waiting = format!("{INGRESSES}{}", lb("web", "", "")).replace(
        "spec: {type: LoadBalancer, clusterIP: 127.96.0.99",
        "spec: {type: LoadBalancer, loadBalancerClass: example.com/cloud, clusterIP: 127.96.0.99",
    );
    let (pending_store, pending_plan, _) = planned(&waiting);
    assert_eq!(statuses(&pending_store, &pending_plan, &published), vec![], "nothing to publish yet");
    // Without a published Service: the listeners' addresses (loopback by default).
    let listeners = Scope { ingresses: true, ..Scope::default() };
    assert_eq!(
        statuses(&store, &plan, &listeners),
        vec![Status::Ingress { ingress: ObjectKey::new("shop", "ours"), addresses: vec![ip("127.0.0.1")] }],
    );

    // The missing Secret is reported on Portico's Ingress only, with its uid.
    let events = notes(&store, &plan, &diagnostics, &published);
    assert!(!events.is_empty());
    assert!(events.iter().all(|n| n.object.key.name == "ours"), "{events:?}");
    assert!(events.iter().any(|n| n.note.contains("missing")), "{events:?}");
    assert_eq!(events[0].object.uid.as_deref(), Some("i-1"));
    assert_eq!(events[0].object.api_version, "networking.k8s.io/v1");
    assert!(notes(&store, &plan, &diagnostics, &services_only()).iter().all(|n| n.object.kind != "Ingress"));
}

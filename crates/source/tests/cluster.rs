//! The API source against an in-process API server that speaks list and watch as the real one
//! does (lists with a `resourceVersion`, watch streams of `ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK` and `ERROR` events, one JSON object a line): the first snapshot comes once every
//! kind is listed (custom resources too); changes, bookmarks, a `410 Gone` relist and a dropped
//! watch all end in the store the server holds; an object the API server would refuse is reported, not served; and
//! one fixture set gives the same Plan through the file source and through the API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portico_model::{Origin, Store, parse_text};
use portico_source::cluster::{Cluster, Snapshot};
use portico_testkit::api::{FakeApi, PATHS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn service(name: &str, cluster_ip: &str, port: i64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "selector": {"app": name}, "ports": [{"port": port, "protocol": "TCP"}]},
    })
}

async fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// The next snapshot for which `wanted` holds, within 10 s.
async fn until(snapshots: &mut mpsc::Receiver<Snapshot>, wanted: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = tokio::time::timeout_at(deadline, snapshots.recv())
            .await
            .expect("no such snapshot in 10 s")
            .unwrap();
        if wanted(&snapshot) {
            return snapshot;
        }
    }
}

fn names(store: &Store) -> Vec<String> {
    store.services.keys().map(|k| k.name.clone()).collect()
}

#[tokio::test]
async fn the_store_follows_lists_watches_relists_and_dropped_watches() {
    let (fake, addr) = FakeApi::start().await;
    let services = "/api/v1/services";
    fake.replace(services, vec![service("web", "10.96.0.10", 80)], 10);
    let (_cluster, mut snapshots) = Cluster::start(client(addr).await);

    let first = until(&mut snapshots, |_| true).await;
    assert_eq!(names(&first.store), ["web"]);
    let web = first.store.services.values().next().unwrap();
    assert_eq!(web.origin, Origin::Api { resource_version: "1".into() }, "the object's own version");
    for (path, _) in PATHS {
        assert_eq!(fake.lists_of(path), 1, "{path} listed once");
    }

    fake.event(services, "ADDED", service("db", "10.96.0.11", 5432));
    until(&mut snapshots, |s| names(&s.store) == ["db", "web"]).await;
    fake.event(services, "MODIFIED", service("web", "10.96.0.10", 8080));
    let modified = until(&mut snapshots, |s| {
        s.store
            .services
            .values()
            .any(|v| v.object.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port == 8080)
    })
    .await;
    assert_eq!(names(&modified.store), ["db", "web"]);
    fake.event(services, "DELETED", service("db", "10.96.0.11", 5432));
    until(&mut snapshots, |s| names(&s.store) == ["web"]).await;

    // A bookmark moves the watch's version on and changes nothing.
    let bookmark = json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": "Service", "metadata": {"resourceVersion": "50"}}});
    fake.send(services, Some(bookmark));
    fake.event(services, "ADDED", service("cache", "10.96.0.12", 6379));
    until(&mut snapshots, |s| names(&s.store) == ["cache", "web"]).await;

    // 410 Gone: the history moved on; the relist replaces the kind in place.
    fake.replace(services, vec![service("api", "10.96.0.20", 443)], 100);
    let gone = json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}});
    fake.send(services, Some(gone));
    let relisted = until(&mut snapshots, |s| names(&s.store) == ["api"]).await;
    assert!(fake.lists_of(services) >= 2, "relisted");
    assert_eq!(relisted.store.namespaces.len() + relisted.store.pods.len(), 0, "other kinds untouched");

    // A dropped watch is watched again from where it was, without a relist.
    let lists = fake.lists_of(services);
    fake.send(services, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.event(services, "ADDED", service("late", "10.96.0.21", 80));
    until(&mut snapshots, |s| names(&s.store) == ["api", "late"]).await;
    assert_eq!(fake.lists_of(services), lists, "no relist for a dropped watch");
}

#[tokio::test]
async fn objects_that_cannot_be_served_are_reported_not_served() {
    let (fake, addr) = FakeApi::start().await;
    let (_cluster, mut snapshots) = Cluster::start(client(addr).await);
    until(&mut snapshots, |_| true).await;
    fake.event("/api/v1/services", "ADDED", service("bad", "10.96.0.30", 70_000));
    fake.event("/api/v1/services", "ADDED", service("good", "10.96.0.31", 80));
    let pool = json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "odd", "namespace": "metallb-system"},
        "spec": {"addresses": "198.18.0.240/28"},
    });
    fake.event("/apis/metallb.io/v1beta1/ipaddresspools", "ADDED", pool);
    let snapshot = until(&mut snapshots, |s| names(&s.store) == ["good"] && s.diagnostics.len() >= 2).await;
    let said: Vec<String> = snapshot.diagnostics.iter().map(ToString::to_string).collect();
    assert!(said.iter().any(|d| d.contains("default/bad") && d.contains("spec.ports[0].port")), "{said:?}");
    assert!(
        said.iter().any(|d| d.contains("metallb-system/odd") && d.contains("cannot be read")),
        "{said:?}"
    );
    assert!(snapshot.store.ip_address_pools.is_empty());
}

#[tokio::test]
async fn a_custom_resource_without_its_crd_is_empty_until_the_crd_comes() {
    let pools = "/apis/metallb.io/v1beta1/ipaddresspools";
    let policies = "/apis/security.istio.io/v1/authorizationpolicies";
    let (fake, addr) = FakeApi::start_without(&[pools, policies]).await;
    fake.replace("/api/v1/services", vec![service("web", "10.96.0.10", 80)], 10);
    let (_cluster, mut snapshots) = Cluster::start(client(addr).await);
    let first = until(&mut snapshots, |_| true).await;
    assert_eq!(names(&first.store), ["web"], "served without the CRDs");
    fake.install(pools);
    let pool = json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "lan", "namespace": "metallb-system"},
        "spec": {"addresses": ["198.18.0.240/28"]},
    });
    fake.replace(pools, vec![pool], 5);
    let later = until(&mut snapshots, |s| !s.store.ip_address_pools.is_empty()).await;
    assert_eq!(names(&later.store), ["web"]);
}

#[tokio::test]
async fn only_tls_secrets_are_watched() {
    let (fake, addr) = FakeApi::start().await;
    let secret = |name: &str, kind: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": "default"},
            "data": {"tls.crt": "", "tls.key": "", "password": "aHVudGVyMg=="},
        })
    };
    fake.event("/api/v1/secrets", "ADDED", secret("listed-opaque", "Opaque"));
    let (_cluster, mut snapshots) = Cluster::start(client(addr).await);
    until(&mut snapshots, |_| true).await;
    fake.event("/api/v1/secrets", "ADDED", secret("watched-opaque", "Opaque"));
    fake.event("/api/v1/secrets", "ADDED", secret("site", "kubernetes.io/tls"));
    let snapshot = until(&mut snapshots, |s| !s.store.secrets.is_empty()).await;
    let names: Vec<&str> = snapshot.store.secrets.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["site"], "a password never reaches Portico's memory");
}

#[tokio::test]
async fn a_node_agent_without_the_mesh_watches_only_its_nodes_pods() {
    let (fake, addr) = FakeApi::start().await;
    let pod = |name: &str, node: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        })
    };
    fake.event("/api/v1/pods", "ADDED", pod("here-0", "n1"));
    fake.event("/api/v1/pods", "ADDED", pod("there-0", "n2"));
    let (_cluster, mut snapshots) = Cluster::start_with(client(addr).await, Some("n1"));
    until(&mut snapshots, |_| true).await;
    fake.event("/api/v1/pods", "ADDED", pod("there-1", "n2"));
    fake.event("/api/v1/pods", "ADDED", pod("here-1", "n1"));
    let snapshot = until(&mut snapshots, |s| s.store.pods.len() >= 2).await;
    let names: Vec<&str> = snapshot.store.pods.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["here-0", "here-1"]);
}

const FIXTURE: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 198.18.0.11}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
  nodeName: n1
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: portico
  rules: [{host: web.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec: {addresses: [198.18.0.240/28]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {namespaces: [default]}}]}]
";

#[tokio::test]
async fn one_fixture_set_gives_the_same_plan_through_files_and_through_the_api() {
    let (objects, diagnostics) = parse_text(Path::new("fixture.yaml"), FIXTURE);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let (from_files, _) = Store::from_objects(objects.clone());
    let (fake, addr) = FakeApi::start().await;
    for (_, object) in &objects {
        let json = object_json(object);
        let kind = json["kind"].as_str().unwrap().to_owned();
        let path = PATHS.iter().find(|(_, k)| k.trim_end_matches("List") == kind).unwrap().0;
        fake.event(path, "ADDED", json);
    }
    let (_cluster, mut snapshots) = Cluster::start(client(addr).await);
    let snapshot = until(&mut snapshots, |s| s.store.len() == objects.len()).await;
    // The cluster's own range: the API server allocated the ClusterIP from it.
    let config = portico_plan::PlanConfig {
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        ..portico_plan::PlanConfig::default()
    };
    let plan = |store: &Store| {
        let planned = portico_plan::plan(store, &config, &Default::default(), 1);
        serde_json::to_value(&planned.plan).unwrap()
    };
    let (by_files, by_api) = (plan(&from_files), plan(&snapshot.store));
    assert_eq!(by_api, by_files);
    let services = by_api["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{by_api}");
    assert_eq!(services[0]["clusterIps"][0], "10.96.0.10", "the API server's ClusterIP is kept");
    assert_eq!(services[0]["ports"][0]["endpoints"][0]["address"], "10.244.1.5", "from the EndpointSlice");
    assert_eq!(snapshot.store.ip_address_pools.len(), 1, "a custom resource, read with its status left out");
    assert_eq!(snapshot.store.authorization_policies.len(), 1);
}

/// An object as the API server would send it.
fn object_json(object: &portico_model::object::Object) -> Value {
    use portico_model::object::Object;
    match object {
        Object::Node(o) => serde_json::to_value(o.as_ref()),
        Object::Service(o) => serde_json::to_value(o.as_ref()),
        Object::EndpointSlice(o) => serde_json::to_value(o.as_ref()),
        Object::Ingress(o) => serde_json::to_value(o.as_ref()),
        // As the API server sends them, with a status the model does not read.
        Object::IpAddressPool(o) => serde_json::to_value(o.as_ref()).map(|mut v| {
            v["status"] = json!({"assignedIPv4": 0, "availableIPv4": 16});
            v
        }),
        Object::AuthorizationPolicy(o) => serde_json::to_value(o.as_ref()),
        other => panic!("not in the fixture: {:?}", other.kind()),
    }
    .unwrap()
}

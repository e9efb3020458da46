//! The Lease and the writer against the in-process API server: one replica holds the Lease at
//! a time, a released or abandoned Lease passes to another, and only the holder writes —
//! statuses as server-side apply patches of its field manager, Events through the Events API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use portico_model::ObjectKey;
use portico_status::desired::{Note, Reference, Status};
use portico_status::{Batch, Election, FIELD_MANAGER, LeaseOptions, StatusWriter};
use portico_testkit::api::{FakeApi, Write};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

async fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn options(identity: &str) -> LeaseOptions {
    LeaseOptions {
        duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(700),
        retry: Duration::from_millis(100),
        ..LeaseOptions::new("portico-system", "portico", identity)
    }
}

/// Waits up to 10 s for `wanted`.
async fn eventually(what: &str, wanted: impl Fn() -> bool) {
    for _ in 0..200 {
        if wanted() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/leases";

#[tokio::test]
async fn one_replica_holds_the_lease_and_another_takes_it_when_it_goes() {
    let (fake, addr) = FakeApi::start().await;
    let a = Election::start(client(addr).await, options("a"));
    let b = Election::start(client(addr).await, options("b"));
    let (la, lb) = (a.leader(), b.leader());
    eventually("a leader", || *la.borrow() || *lb.borrow()).await;
    // Both run for several rounds: never two holders.
    for _ in 0..10 {
        assert!(!(*la.borrow() && *lb.borrow()), "two holders");
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (holder, other, other_sees) = if *la.borrow() { (a, b, lb) } else { (b, a, la) };
    let held = fake.object(LEASES, Some("portico-system"), "portico").unwrap();
    assert_eq!(held["spec"]["leaseDurationSeconds"], 1);
    // A released Lease passes at once, well before its duration.
    holder.release().await;
    let released = fake.object(LEASES, Some("portico-system"), "portico").unwrap();
    assert!(released["spec"]["holderIdentity"].is_null(), "{released}");
    eventually("the other takes over", || *other_sees.borrow()).await;
    let taken = fake.object(LEASES, Some("portico-system"), "portico").unwrap();
    assert_eq!(taken["spec"]["leaseTransitions"], 1, "{taken}");
    // An abandoned one (its holder stopped without a word) passes after its duration.
    drop(other);
    let c = Election::start(client(addr).await, options("c"));
    let lc = c.leader();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*lc.borrow(), "not before the lease duration is over");
    eventually("c takes over", || *lc.borrow()).await;
    let conflicts = fake.writes().iter().filter(|w| w.method == "PUT" && w.status == 409).count();
    println!("refused replaces (lost races): {conflicts}");
}

fn service_status(name: &str, ip: &str) -> Status {
    Status::Service { service: ObjectKey::new("shop", name), addresses: vec![ip.parse().unwrap()] }
}

fn status_writes(fake: &FakeApi) -> Vec<Write> {
    fake.writes().into_iter().filter(|w| w.path.ends_with("/status")).collect()
}

#[tokio::test]
async fn only_the_holder_writes_statuses_as_its_field_manager_and_events() {
    let (fake, addr) = FakeApi::start().await;
    fake.event(
        "/api/v1/services",
        "ADDED",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        }),
    );
    let (leader, elected) = watch::channel(false);
    let mut registry = Registry::default();
    let writer = StatusWriter::start(client(addr).await, elected, "node-a", &mut registry);
    let note = Note {
        object: Reference {
            api_version: "v1".into(),
            kind: "Service".into(),
            key: ObjectKey::new("shop", "web"),
            uid: Some("u-1".into()),
        },
        reason: "Problem",
        note: "spec.ports[0]: a clash".into(),
    };
    let batch = Batch { statuses: vec![service_status("web", "127.0.80.1")], notes: vec![note] };
    writer.update(batch.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.writes().is_empty(), "nothing from a replica without the Lease: {:?}", fake.writes());

    leader.send(true).unwrap();
    eventually("the status is written", || status_writes(&fake).len() == 1).await;
    let write = &status_writes(&fake)[0];
    assert_eq!(write.method, "PATCH");
    assert_eq!(write.path, "/api/v1/namespaces/shop/services/web/status");
    assert_eq!(write.content_type, "application/apply-patch+yaml", "server-side apply");
    assert!(write.query.contains(&format!("fieldManager={FIELD_MANAGER}")), "{}", write.query);
    assert!(write.query.contains("force=true"), "{}", write.query);
    assert_eq!(
        write.body["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "127.0.80.1", "ipMode": "VIP"}])
    );
    assert_eq!(write.body["kind"], "Service");
    let stored = fake.object("/api/v1/services", Some("shop"), "web").unwrap();
    assert_eq!(stored["status"]["loadBalancer"]["ingress"][0]["ip"], "127.0.80.1");
    eventually("the event is published", || fake.writes().iter().any(|w| w.path.contains("/events"))).await;
    let event = fake.writes().into_iter().find(|w| w.path.contains("/events")).unwrap();
    assert_eq!(event.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event.body["reason"], "Problem");
    assert_eq!(event.body["note"], "spec.ports[0]: a clash");
    assert_eq!(event.body["regarding"]["uid"], "u-1");
    assert_eq!(event.body["reportingController"], FIELD_MANAGER);
    assert_eq!(event.body["reportingInstance"], "node-a");

    // The same batch again writes nothing more; a changed one writes the change.
    writer.update(batch);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_writes(&fake).len(), 1);
    let events = |fake: &FakeApi| fake.writes().iter().filter(|w| w.path.contains("/events")).count();
    assert_eq!(events(&fake), 1, "an Event once per problem");
    writer.update(Batch { statuses: vec![service_status("web", "127.0.80.2")], notes: vec![] });
    eventually("the change is written", || status_writes(&fake).len() == 2).await;

    // A replica that loses the Lease stops writing.
    leader.send(false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.update(Batch { statuses: vec![service_status("web", "127.0.80.3")], notes: vec![] });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_writes(&fake).len(), 2, "no write without the Lease");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("writes_total{kind=\"Service\",result=\"ok\"} 2"), "{text}");
}

#[tokio::test]
async fn a_shared_secret_is_made_once_and_read_by_everyone_after() {
    use portico_status::secret::shared_secret;
    let (fake, addr) = FakeApi::start().await;
    let made = |value: &'static str| move || Ok(vec![("ca-cert.pem".to_owned(), value.as_bytes().to_vec())]);
    // Two agents at once: one creation wins, both end with its data.
    let (a, b) = tokio::join!(
        shared_secret(client(addr).await, "portico-system", "portico-mesh-ca", made("from a")),
        shared_secret(client(addr).await, "portico-system", "portico-mesh-ca", made("from b")),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b, "the same CA for both");
    let creations =
        fake.writes().iter().filter(|w| w.method == "POST" && w.path.ends_with("/secrets")).count();
    assert!((1..=2).contains(&creations));
    // Later agents read it and make nothing.
    let later = shared_secret(client(addr).await, "portico-system", "portico-mesh-ca", || {
        Err("nothing should be made".to_owned())
    })
    .await
    .unwrap();
    assert_eq!(later, a);
    let stored = fake.object("/api/v1/secrets", Some("portico-system"), "portico-mesh-ca").unwrap();
    assert_eq!(stored["type"], "Opaque");
    assert_eq!(stored["metadata"]["labels"]["app.kubernetes.io/managed-by"], "portico");
    // One that cannot be made is an error naming the Secret.
    let failed =
        shared_secret(client(addr).await, "other", "portico-mesh-ca", || Err("no entropy".to_owned()))
            .await
            .unwrap_err()
            .to_string();
    assert!(failed.contains("other/portico-mesh-ca") && failed.contains("no entropy"), "{failed}");
}

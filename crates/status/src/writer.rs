//! Writes the statuses and Events the replicas compute, from the Lease holder only: statuses
//! by server-side apply with one field manager (forced, since a status of Portico's object is
//! Portico's to say), Events through kube-runtime's recorder (repeats become a series).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use portico_model::ObjectKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::desired::{Note, Status};

/// The field manager of every status Portico applies.
pub const FIELD_MANAGER: &str = "portico";

/// What the replicas last computed: the statuses to write and the Events to publish.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Statuses that differ from the API server's.
    pub statuses: Vec<Status>,
    /// Problems on Portico's objects.
    pub notes: Vec<Note>,
}

/// Labels of the writes counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: String,
    result: String,
}

/// The writer's metrics.
#[derive(Clone, Default)]
struct Metrics {
    leader: Gauge,
    writes: Family<WriteLabels, Counter>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and writes status",
            m.leader.clone(),
        );
        registry.register("writes", "Statuses and Events written, by kind and result", m.writes.clone());
        m
    }

    fn count(&self, kind: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.writes.get_or_create(&WriteLabels { kind: kind.into(), result: result.into() }).inc();
    }
}

/// The status writer; it stops when dropped.
pub struct StatusWriter {
    batches: watch::Sender<Arc<Batch>>,
    task: JoinHandle<()>,
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusWriter {
    /// Writes each batch while `leader` says this replica holds the Lease; `identity` names
    /// it in the Events it reports.
    pub fn start(
        client: Client,
        leader: watch::Receiver<bool>,
        identity: &str,
        registry: &mut Registry,
    ) -> StatusWriter {
        let (batches, batch) = watch::channel(Arc::new(Batch::default()));
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.to_owned()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let metrics = Metrics::register(registry);
        let task = tokio::spawn(write(client, recorder, leader, batch, metrics));
        StatusWriter { batches, task }
    }

    /// The statuses and Events of the latest Plan (any earlier batch not yet written is moot).
    pub fn update(&self, batch: Batch) {
        self.batches.send_if_modified(|current| {
            let changed = **current != batch;
            if changed {
                *current = Arc::new(batch);
            }
            changed
        });
    }
}

/// The writer's loop: on each new batch, or on becoming the holder, writes what is new.
async fn write(
    client: Client,
    recorder: Recorder,
    mut leader: watch::Receiver<bool>,
    mut batches: watch::Receiver<Arc<Batch>>,
    metrics: Metrics,
) {
    // What this replica wrote and the API server has not shown back yet: not written twice.
    let mut written: BTreeMap<(&'static str, ObjectKey), Status> = BTreeMap::new();
    let mut published: BTreeSet<Note> = BTreeSet::new();
    loop {
        let leading = *leader.borrow_and_update();
        metrics.leader.set(i64::from(leading));
        if !leading {
            written.clear();
            published.clear();
        } else {
            let batch = Arc::clone(&batches.borrow_and_update());
            written.retain(|_, status| batch.statuses.contains(status));
            for status in &batch.statuses {
                let (kind, key) = status.object();
                if written.get(&(kind, key.clone())) == Some(status) {
                    continue;
                }
                let done = apply(&client, status).await;
                metrics.count(kind, done.is_ok());
                match done {
                    Ok(()) => {
                        tracing::info!(kind, object = %key, ?status, "status written");
                        written.insert((kind, key.clone()), status.clone());
                    }
                    Err(error) => tracing::warn!(kind, object = %key, %error, "status not written"),
                }
            }
            // A problem that goes and comes back is reported again.
            published.retain(|note| batch.notes.contains(note));
            for note in &batch.notes {
                if published.contains(note) {
                    continue;
                }
                let event = Event {
                    type_: EventType::Warning,
                    reason: note.reason.into(),
                    note: Some(note.note.clone()),
                    action: "Serve".into(),
                    secondary: None,
                };
                let done = recorder.publish(&event, &note.object.to_object_reference()).await;
                metrics.count("Event", done.is_ok());
                match done {
                    Ok(()) => {
                        published.insert(note.clone());
                    }
                    Err(error) => tracing::warn!(object = %note.object.key, %error, "event not published"),
                }
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            changed = batches.changed() => if changed.is_err() { return },
            // A write that failed is tried again.
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

/// The load balancer ingress list of `addresses`: VIPs, traffic to them handled in the node.
fn ingress_list(addresses: &[IpAddr], vip: bool) -> Value {
    let entries: Vec<Value> =
        addresses
            .iter()
            .map(|ip| {
                if vip {
                    json!({"ip": ip.to_string(), "ipMode": "VIP"})
                } else {
                    json!({"ip": ip.to_string()})
                }
            })
            .collect();
    json!({"loadBalancer": {"ingress": entries}})
}

/// One status, applied to the object's `status` subresource.
async fn apply(client: &Client, status: &Status) -> Result<(), kube::Error> {
    let (resource, key, addresses, vip) = match status {
        Status::Service { service, addresses } => {
            (ApiResource::erase::<Service>(&()), service, addresses, true)
        }
        Status::Ingress { ingress, addresses } => {
            (ApiResource::erase::<Ingress>(&()), ingress, addresses, false)
        }
    };
    let patch = json!({
        "apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": ingress_list(addresses, vip),
    });
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &key.namespace, &resource);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&key.name, &params, &Patch::Apply(patch)).await.map(drop)
}

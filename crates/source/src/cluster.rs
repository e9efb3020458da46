//! Objects from the Kubernetes API server, for Portico running inside a cluster: a kube-runtime
//! watcher per kind lists then watches, and every object is checked and stored as the file
//! source stores its objects (one store, one planner, no second path for semantics), its origin
//! the API object at its `resourceVersion`. MetalLB's pools and Istio's AuthorizationPolicies are
//! custom resources, watched as dynamic objects and read as the model's types.
//!
//! A relist (a first list, a `410 Gone`, a dropped watch) is applied in place: the objects
//! listed replace their stored copies as they come, and when the list is done the kind's
//! objects it did not name are deleted, so a relist never holds two copies of a kind. Nothing
//! is handed on until every kind's first list is in; after that, each quiet moment after
//! changes hands on the whole store. A custom resource whose CRD is not installed (a cluster
//! without MetalLB's or Istio's CRDs) counts as listed and empty, and is listed again with the
//! watcher's backoff until its CRD comes.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
pub use kube::Client;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use portico_model::object::{Object, ObjectKind};
use portico_model::validate::validate;
use portico_model::{Diagnostic, ObjectKey, ObjectRef, Origin, Store};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the store waits for changes to pause before it hands them on.
const QUIET: Duration = Duration::from_millis(100);

/// The store as the API server has it, once every kind was listed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every object accepted.
    pub store: Store,
    /// What checking the objects found.
    pub diagnostics: Vec<Diagnostic>,
}

/// What a watcher tells the store.
#[derive(Debug)]
enum Change {
    /// A (re)list of the kind begins.
    Listing(ObjectKind),
    /// An object, listed or changed.
    Apply(Origin, Object),
    /// An object gone.
    Delete(ObjectRef),
    /// The list is done: objects of the kind it did not name are gone.
    Listed(ObjectKind),
    /// An object that cannot be read as the model's type.
    Unreadable(Origin, ObjectRef, String),
    /// The watch failed (it is retried with backoff).
    Failed(ObjectKind, String),
}

/// Why the API server cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No configuration found, or one that does not read.
    #[error("the Kubernetes configuration: {0}")]
    Config(String),
    /// A client could not be made from it.
    #[error("a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client of the API server: from `kubeconfig` if given, else as kubectl finds one (the
/// `KUBECONFIG` variable, `~/.kube/config`), else the Pod's own service account.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let read = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(read, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| ClusterError::Config(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

/// The watchers of one cluster; they stop when it is dropped.
pub struct Cluster {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Cluster {
    /// Watches every kind Portico reads in a cluster through `client`, every Pod included;
    /// snapshots arrive on the receiver, the first once every kind was listed.
    pub fn start(client: Client) -> (Cluster, mpsc::Receiver<Snapshot>) {
        Cluster::start_with(client, None)
    }

    /// As [`Cluster::start`], but with `node` only that node's Pods: all a node agent needs
    /// (HostPorts, local Pods) but for the mesh, which needs every peer's identity.
    pub fn start_with(client: Client, node: Option<&str>) -> (Cluster, mpsc::Receiver<Snapshot>) {
        let (changes, incoming) = mpsc::channel(1024);
        let all = watcher::Config::default();
        let pods = match node {
            Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            None => all.clone(),
        };
        // Only the Secrets an Ingress can serve: TLS ones.
        let tls = watcher::Config::default().fields("type=kubernetes.io/tls");
        let mut tasks = vec![
            watch(
                Api::<Namespace>::all(client.clone()),
                all.clone(),
                ObjectKind::Namespace,
                |o| Ok(Object::Namespace(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<Service>::all(client.clone()),
                all.clone(),
                ObjectKind::Service,
                |o| Ok(Object::Service(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<EndpointSlice>::all(client.clone()),
                all.clone(),
                ObjectKind::EndpointSlice,
                |o| Ok(Object::EndpointSlice(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<Pod>::all(client.clone()),
                pods,
                ObjectKind::Pod,
                |o| Ok(Object::Pod(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<Node>::all(client.clone()),
                all.clone(),
                ObjectKind::Node,
                |o| Ok(Object::Node(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<Ingress>::all(client.clone()),
                all.clone(),
                ObjectKind::Ingress,
                |o| Ok(Object::Ingress(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<IngressClass>::all(client.clone()),
                all.clone(),
                ObjectKind::IngressClass,
                |o| Ok(Object::IngressClass(Box::new(o))),
                &changes,
            ),
            watch(
                Api::<Secret>::all(client.clone()),
                tls,
                ObjectKind::Secret,
                |o| Ok(Object::Secret(Box::new(o))),
                &changes,
            ),
        ];
        for kind in [ObjectKind::IpAddressPool, ObjectKind::L2Advertisement, ObjectKind::AuthorizationPolicy]
        {
            let api = Api::<DynamicObject>::all_with(client.clone(), &resource(kind));
            tasks.push(watch(api, all.clone(), kind, move |o| custom(kind, o), &changes));
        }
        let kinds = RESOURCES.len();
        let (snapshots, receiver) = mpsc::channel(4);
        tasks.push(tokio::spawn(keep(incoming, kinds, snapshots)));
        (Cluster { tasks }, receiver)
    }
}

/// A watcher of every `K` of `api`, each turned into an [`Object`] by `into` (what cannot be
/// read is reported, not served).
fn watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    kind: ObjectKind,
    into: F,
    changes: &mpsc::Sender<Change>,
) -> JoinHandle<()>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    F: Fn(K) -> Result<Object, (ObjectRef, String)> + Send + 'static,
{
    let changes = changes.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config));
        // A custom resource whose CRD is not installed: none of its objects, listed again with
        // the backoff until it is.
        let mut uninstalled = false;
        while let Some(event) = events.next().await {
            let change = match event {
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) if status.code == 404 => {
                    if uninstalled {
                        continue;
                    }
                    uninstalled = true;
                    tracing::warn!(
                        kind = kind.name(),
                        "cluster: its CRD is not installed; none of its objects until it is"
                    );
                    if changes.send(Change::Listing(kind)).await.is_err() {
                        return;
                    }
                    Change::Listed(kind)
                }
                Ok(Event::Init) => {
                    uninstalled = false;
                    Change::Listing(kind)
                }
                Ok(Event::InitDone) => Change::Listed(kind),
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    let origin =
                        Origin::Api { resource_version: object.resource_version().unwrap_or_default() };
                    match into(object) {
                        Ok(object) => Change::Apply(origin, object),
                        Err((reference, why)) => Change::Unreadable(origin, reference, why),
                    }
                }
                Ok(Event::Delete(object)) => match into(object) {
                    Ok(object) => Change::Delete(object.reference()),
                    Err((reference, _)) => Change::Delete(reference),
                },
                Err(e) => Change::Failed(kind, e.to_string()),
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    })
}

/// A custom resource read as the model's type of `kind`: fields the model does not know (a
/// `status`, say) are left out, since the API server checked the object against its CRD.
fn custom(kind: ObjectKind, object: DynamicObject) -> Result<Object, (ObjectRef, String)> {
    let key = match object.metadata.namespace.as_deref() {
        Some(namespace) => ObjectKey::new(namespace, object.name_any()),
        None => ObjectKey::cluster(object.name_any()),
    };
    let reference = ObjectRef::new(kind.name(), key);
    let value = serde_json::to_value(&object).map_err(|e| (reference.clone(), e.to_string()))?;
    let read = match kind {
        ObjectKind::IpAddressPool => {
            serde_json::from_value(value).map(|o| Object::IpAddressPool(Box::new(o)))
        }
        ObjectKind::L2Advertisement => {
            serde_json::from_value(value).map(|o| Object::L2Advertisement(Box::new(o)))
        }
        ObjectKind::AuthorizationPolicy => {
            serde_json::from_value(value).map(|o| Object::AuthorizationPolicy(Box::new(o)))
        }
        other => return Err((reference, format!("{} is not a custom resource", other.name()))),
    };
    read.map_err(|e| (reference, e.to_string()))
}

/// Every collection the source lists and watches: its kind, API group ("" for the core group),
/// version and resource name, as RBAC rules and API paths name them.
pub const RESOURCES: [(ObjectKind, &str, &str, &str); 11] = [
    (ObjectKind::Namespace, "", "v1", "namespaces"),
    (ObjectKind::Service, "", "v1", "services"),
    (ObjectKind::EndpointSlice, "discovery.k8s.io", "v1", "endpointslices"),
    (ObjectKind::Pod, "", "v1", "pods"),
    (ObjectKind::Node, "", "v1", "nodes"),
    (ObjectKind::Ingress, "networking.k8s.io", "v1", "ingresses"),
    (ObjectKind::IngressClass, "networking.k8s.io", "v1", "ingressclasses"),
    (ObjectKind::Secret, "", "v1", "secrets"),
    (ObjectKind::IpAddressPool, "metallb.io", "v1beta1", "ipaddresspools"),
    (ObjectKind::L2Advertisement, "metallb.io", "v1beta1", "l2advertisements"),
    (ObjectKind::AuthorizationPolicy, "security.istio.io", "v1", "authorizationpolicies"),
];

/// A custom resource of [`RESOURCES`], as kube-rs addresses it.
fn resource(kind: ObjectKind) -> ApiResource {
    let (_, group, version, plural) =
        RESOURCES.iter().find(|(k, ..)| *k == kind).copied().unwrap_or(RESOURCES[10]);
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.name()), plural)
}

/// kube-runtime's watcher, retried with its default backoff after any error.
fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    watcher::watcher(api, config).default_backoff()
}

/// Keeps the store from the watchers' changes, and hands it on.
async fn keep(mut incoming: mpsc::Receiver<Change>, kinds: usize, snapshots: mpsc::Sender<Snapshot>) {
    let mut store = Store::default();
    let mut findings: BTreeMap<ObjectRef, Vec<Diagnostic>> = BTreeMap::new();
    let mut listing: BTreeMap<ObjectKind, HashSet<ObjectRef>> = BTreeMap::new();
    let mut listed: HashSet<ObjectKind> = HashSet::new();
    let mut changed = false;
    loop {
        let change = match tokio::time::timeout(QUIET, incoming.recv()).await {
            Ok(Some(change)) => change,
            Ok(None) => return,
            Err(_) => {
                if changed && listed.len() == kinds {
                    let diagnostics = findings.values().flatten().cloned().collect();
                    if snapshots.send(Snapshot { store: store.clone(), diagnostics }).await.is_err() {
                        return;
                    }
                    changed = false;
                }
                continue;
            }
        };
        // A failed watch changes nothing, but must not forget the changes before it.
        changed |= !matches!(change, Change::Failed(..));
        match change {
            Change::Listing(kind) => {
                listing.insert(kind, HashSet::new());
            }
            Change::Apply(origin, object) => {
                let reference = object.reference();
                if let Some(seen) = listing.get_mut(&object.kind()) {
                    seen.insert(reference.clone());
                }
                let found: Vec<Diagnostic> =
                    validate(&object).into_iter().map(|d| d.at(&origin).on(reference.clone())).collect();
                if found.iter().any(Diagnostic::is_error) {
                    // As the file source: an object with errors is not served.
                    store.remove(&reference);
                } else {
                    store.insert(origin, object);
                }
                findings.insert(reference, found);
            }
            Change::Unreadable(origin, reference, why) => {
                store.remove(&reference);
                let diagnostic =
                    Diagnostic::error(format!("cannot be read: {why}")).at(&origin).on(reference.clone());
                findings.insert(reference, vec![diagnostic]);
            }
            Change::Delete(reference) => {
                store.remove(&reference);
                findings.remove(&reference);
            }
            Change::Listed(kind) => {
                let seen = listing.remove(&kind).unwrap_or_default();
                for reference in references(&store, kind) {
                    if !seen.contains(&reference) {
                        store.remove(&reference);
                        findings.remove(&reference);
                    }
                }
                if listed.insert(kind) {
                    tracing::info!(kind = kind.name(), "cluster: listed");
                }
            }
            Change::Failed(kind, error) => {
                tracing::warn!(kind = kind.name(), %error, "cluster: watching failed; retrying");
            }
        }
    }
}

/// Every stored object of `kind`.
fn references(store: &Store, kind: ObjectKind) -> Vec<ObjectRef> {
    let keys: Vec<&portico_model::ObjectKey> = match kind {
        ObjectKind::Namespace => store.namespaces.keys().collect(),
        ObjectKind::Service => store.services.keys().collect(),
        ObjectKind::EndpointSlice => store.endpoint_slices.keys().collect(),
        ObjectKind::Pod => store.pods.keys().collect(),
        ObjectKind::Node => store.nodes.keys().collect(),
        ObjectKind::Ingress => store.ingresses.keys().collect(),
        ObjectKind::IngressClass => store.ingress_classes.keys().collect(),
        ObjectKind::Secret => store.secrets.keys().collect(),
        ObjectKind::IpAddressPool => store.ip_address_pools.keys().collect(),
        ObjectKind::L2Advertisement => store.l2_advertisements.keys().collect(),
        ObjectKind::AuthorizationPolicy => store.authorization_policies.keys().collect(),
        _ => return store.workloads.keys().filter(|r| r.kind == kind.name()).cloned().collect(),
    };
    keys.into_iter().map(|key| ObjectRef::new(kind.name(), key.clone())).collect()
}

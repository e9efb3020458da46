//! An API server in process, for the tests of the API source and of `run` in a cluster: it
//! speaks list and watch as the real one does (a list with a `resourceVersion`; a watch stream
//! of `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` and `ERROR` events, one JSON object a line),
//! over plain HTTP on loopback, for every collection Portico reads, a one-field selector
//! (`type=…`, `spec.nodeName=…`) honoured as the API server honours it. It also takes writes as the
//! status writer and the Lease make them: a GET of one object, a POST that creates (409 when the
//! name is taken), a PUT that replaces only at the stored `resourceVersion` (409 otherwise), and
//! a PATCH (apply or merge) of an object or its `status`, each change sent to the watches and
//! every write recorded for the test to read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The collections the API source lists and watches, by path, with their list kinds.
pub const PATHS: [(&str, &str); 11] = [
    ("/api/v1/namespaces", "NamespaceList"),
    ("/api/v1/services", "ServiceList"),
    ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSliceList"),
    ("/api/v1/pods", "PodList"),
    ("/api/v1/nodes", "NodeList"),
    ("/apis/networking.k8s.io/v1/ingresses", "IngressList"),
    ("/apis/networking.k8s.io/v1/ingressclasses", "IngressClassList"),
    ("/api/v1/secrets", "SecretList"),
    ("/apis/metallb.io/v1beta1/ipaddresspools", "IPAddressPoolList"),
    ("/apis/metallb.io/v1beta1/l2advertisements", "L2AdvertisementList"),
    ("/apis/security.istio.io/v1/authorizationpolicies", "AuthorizationPolicyList"),
];

/// Collections only written to (created at their first write): Leases and Events.
const WRITTEN: [&str; 2] = ["/apis/coordination.k8s.io/v1/leases", "/apis/events.k8s.io/v1/events"];

/// One collection: what a list answers, and the events its open watches are sent.
struct Collection {
    version: u64,
    items: Vec<Value>,
    events: broadcast::Sender<Option<String>>,
}

impl Collection {
    fn new() -> Collection {
        Collection { version: 1, items: Vec::new(), events: broadcast::channel(64).0 }
    }

    fn find(&self, namespace: Option<&str>, name: &str) -> Option<usize> {
        self.items.iter().position(|item| {
            item["metadata"]["name"] == name && item["metadata"]["namespace"].as_str() == namespace
        })
    }

    /// Stores `object` (in place of one of the same name) at a new version, and tells the watches.
    fn put(&mut self, kind: &str, mut object: Value) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let (namespace, name) = (object["metadata"]["namespace"].clone(), object["metadata"]["name"].clone());
        self.items
            .retain(|item| item["metadata"]["name"] != name || item["metadata"]["namespace"] != namespace);
        if kind != "DELETED" {
            self.items.push(object.clone());
        }
        let _ = self.events.send(Some(json!({"type": kind, "object": object}).to_string()));
        object
    }
}

/// A write the fake API server took (or refused).
#[derive(Clone, Debug)]
pub struct Write {
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    /// The path written to, `…/status` included.
    pub path: String,
    /// The query (`fieldManager=portico&force=true`, say).
    pub query: String,
    /// The request's content type (`application/apply-patch+yaml` for server-side apply).
    pub content_type: String,
    /// The body sent.
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

/// A request's path, read as the API server reads it.
struct Target {
    /// The cluster-wide collection (`/api/v1/services`).
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let (prefix, rest) = if let Some(rest) = path.strip_prefix("/api/v1") {
            ("/api/v1".to_owned(), rest)
        } else {
            let rest = path.strip_prefix("/apis/")?;
            let mut parts = rest.splitn(3, '/');
            let (group, version) = (parts.next()?, parts.next()?);
            (format!("/apis/{group}/{version}"), parts.next().map_or("", |r| r))
        };
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (namespace, segments) = match segments.as_slice() {
            ["namespaces", namespace, resource, more @ ..] => {
                (Some(namespace.to_string()), [&[*resource], more].concat())
            }
            ["namespaces", name] => return Some(Target::cluster(&prefix, "namespaces", Some(name), None)),
            other => (None, other.to_vec()),
        };
        let target = match segments.as_slice() {
            [resource] => Target::cluster(&prefix, resource, None, None),
            [resource, name] => Target::cluster(&prefix, resource, Some(name), None),
            [resource, name, sub] => Target::cluster(&prefix, resource, Some(name), Some(sub)),
            _ => return None,
        };
        Some(Target { namespace, ..target })
    }

    fn cluster(prefix: &str, resource: &str, name: Option<&str>, subresource: Option<&str>) -> Target {
        Target {
            collection: format!("{prefix}/{resource}"),
            namespace: None,
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        }
    }
}

/// The fake API server's state.
#[derive(Clone)]
pub struct FakeApi {
    collections: Arc<Mutex<HashMap<String, Collection>>>,
    lists: Arc<Mutex<Vec<String>>>,
    writes: Arc<Mutex<Vec<Write>>>,
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

fn answer(status: StatusCode, body: &Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response
}

/// A `Status` object, as the API server answers a failure.
fn failure(status: StatusCode, reason: &str, message: &str) -> Answer {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": status.as_u16(),
    });
    answer(status, &body)
}

/// The field and value a list or watch's `fieldSelector` asks for (`type=kubernetes.io/tls`,
/// `spec.nodeName=n1`), if any: the selectors Portico uses, one field each.
fn field_selector(query: &str) -> Option<(Vec<String>, String)> {
    let selector = query.split('&').find_map(|p| p.strip_prefix("fieldSelector="))?;
    let decoded = selector.replace("%3D", "=").replace("%3d", "=").replace("%2F", "/").replace("%2f", "/");
    let (field, value) = decoded.split_once('=')?;
    Some((field.split('.').map(str::to_owned).collect(), value.to_owned()))
}

/// Whether `object` has the field value `wanted` asks for (everything, without one).
fn has_field(object: &Value, wanted: Option<&(Vec<String>, String)>) -> bool {
    let Some((path, value)) = wanted else { return true };
    path.iter().fold(object, |at, key| &at[key.as_str()]) == value.as_str()
}

/// `patch` merged into `target` as a JSON merge patch does (`null` deletes); server-side apply
/// of fields one manager owns comes to the same for the tests' objects.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

impl FakeApi {
    /// Serves on a free loopback port; every collection empty at version 1.
    pub async fn start() -> (FakeApi, SocketAddr) {
        FakeApi::start_without(&[]).await
    }

    /// Serves as [`FakeApi::start`], but without the collections of `missing` (a custom
    /// resource whose CRD is not installed): they answer 404.
    pub async fn start_without(missing: &[&str]) -> (FakeApi, SocketAddr) {
        let collections = PATHS
            .iter()
            .map(|(path, _)| *path)
            .filter(|path| !missing.contains(path))
            .map(|path| (path.to_string(), Collection::new()))
            .collect();
        let fake = FakeApi {
            collections: Arc::new(Mutex::new(collections)),
            lists: Arc::default(),
            writes: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("its address: {e}"));
        let serving = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let fake = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| fake.clone().answer(request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (fake, addr)
    }

    async fn answer(self, request: Request<Incoming>) -> Result<Answer, Infallible> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let method = request.method().clone();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let Some(target) = Target::parse(&path) else {
            return Ok(failure(StatusCode::NOT_FOUND, "NotFound", "no such path"));
        };
        if method == Method::GET {
            return Ok(self.read(&target, &path, &query));
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let response = self.write(&method, &target, body.clone());
        self.writes.lock().unwrap_or_else(PoisonError::into_inner).push(Write {
            method: method.to_string(),
            path,
            query,
            content_type,
            body,
            status: response.status().as_u16(),
        });
        Ok(response)
    }

    /// A GET: one object, a list, or a watch.
    fn read(&self, target: &Target, path: &str, query: &str) -> Answer {
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(collection) = collections.get_mut(&target.collection) else {
            return failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        if let Some(name) = &target.name {
            return match collection.find(target.namespace.as_deref(), name) {
                Some(i) => answer(StatusCode::OK, &collection.items[i]),
                None => failure(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
            };
        }
        let wanted = field_selector(query);
        let selected = move |object: &Value| has_field(object, wanted.as_ref());
        if query.split('&').any(|p| p == "watch=true" || p == "watch=1") {
            let events = collection.events.subscribe();
            let stream = futures::stream::unfold((events, selected), |(mut events, selected)| async move {
                loop {
                    match events.recv().await {
                        Ok(Some(line)) => {
                            let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                            if event["object"]["kind"].is_string() && !selected(&event["object"]) {
                                continue;
                            }
                            let frame = Frame::data(Bytes::from(line + "\n"));
                            return Some((Ok::<_, Infallible>(frame), (events, selected)));
                        }
                        // `None` ends the watch, as a dropped connection does.
                        _ => return None,
                    }
                }
            });
            return Response::new(StreamBody::new(stream).boxed());
        }
        self.lists.lock().unwrap_or_else(PoisonError::into_inner).push(path.to_owned());
        let kind = PATHS.iter().find(|(p, _)| *p == path).map(|(_, k)| *k).unwrap_or_default();
        let api_version = match path.strip_prefix("/apis/") {
            Some(rest) => rest.rsplit_once('/').map_or("", |(group, _)| group).to_owned(),
            None => "v1".to_owned(),
        };
        let list = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": collection.version.to_string()},
            "items": collection.items.iter().filter(|item| selected(item)).collect::<Vec<_>>(),
        });
        answer(StatusCode::OK, &list)
    }

    /// A POST, PUT or PATCH.
    fn write(&self, method: &Method, target: &Target, body: Value) -> Answer {
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        if !collections.contains_key(&target.collection) && WRITTEN.contains(&target.collection.as_str()) {
            collections.insert(target.collection.clone(), Collection::new());
        }
        let Some(collection) = collections.get_mut(&target.collection) else {
            return failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        let namespace = target.namespace.as_deref();
        match (method, &target.name) {
            (&Method::POST, None) => {
                let mut object = body;
                let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
                    return failure(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "metadata.name: Required value",
                    );
                };
                if collection.find(namespace, &name).is_some() {
                    return failure(StatusCode::CONFLICT, "AlreadyExists", &format!("{name} already exists"));
                }
                if let Some(namespace) = namespace {
                    object["metadata"]["namespace"] = json!(namespace);
                }
                answer(StatusCode::CREATED, &collection.put("ADDED", object))
            }
            (&Method::PUT, Some(name)) => {
                let Some(i) = collection.find(namespace, name) else {
                    return failure(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found"));
                };
                if body["metadata"]["resourceVersion"] != collection.items[i]["metadata"]["resourceVersion"] {
                    return failure(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let mut object = body;
                if let Some(namespace) = namespace {
                    object["metadata"]["namespace"] = json!(namespace);
                }
                answer(StatusCode::OK, &collection.put("MODIFIED", object))
            }
            (&Method::PATCH, Some(name)) => {
                let mut object = match collection.find(namespace, name) {
                    Some(i) => collection.items[i].clone(),
                    None if target.subresource.is_none() => {
                        json!({"metadata": {"name": name, "namespace": namespace}})
                    }
                    None => return failure(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
                };
                let mut patch = body;
                if target.subresource.as_deref() == Some("status") {
                    // Only the status of a status patch counts, as the API server has it.
                    patch = json!({"status": patch["status"].clone()});
                } else if let Some(metadata) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.remove("resourceVersion");
                }
                merge(&mut object, &patch);
                answer(StatusCode::OK, &collection.put("MODIFIED", object))
            }
            _ => failure(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported by the fake"),
        }
    }

    /// Changes `path`'s collection as an event of `kind` on `object` says, and sends the event.
    pub fn event(&self, path: &str, kind: &str, object: Value) {
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let collection = collections.get_mut(path).unwrap_or_else(|| panic!("no collection {path}"));
        collection.put(kind, object);
    }

    /// Sends a raw event line to `path`'s watches (bookmarks, errors), or ends them (`None`).
    pub fn send(&self, path: &str, line: Option<Value>) {
        let collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = collections[path].events.send(line.map(|l| l.to_string()));
    }

    /// Replaces what `path` lists, as if the history had moved on past the watches.
    pub fn replace(&self, path: &str, items: Vec<Value>, version: u64) {
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let collection = collections.get_mut(path).unwrap_or_else(|| panic!("no collection {path}"));
        collection.items = items;
        collection.version = version;
    }

    /// Installs the collection `path` (a CRD applied after the start), empty.
    pub fn install(&self, path: &str) {
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        collections.entry(path.to_owned()).or_insert_with(Collection::new);
    }

    /// How many times `path` was listed.
    pub fn lists_of(&self, path: &str) -> usize {
        self.lists.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|p| *p == path).count()
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The stored object `name` (in `namespace`, if namespaced) of the collection `path`.
    pub fn object(&self, path: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let collection = collections.get(path)?;
        collection.find(namespace, name).map(|i| collection.items[i].clone())
    }
}

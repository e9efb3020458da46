//! An API server in process, for the tests of the API source and of `run` in a cluster: it
//! speaks list and watch as the real one does (a list with a `resourceVersion`; a watch stream
//! of `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` and `ERROR` events, one JSON object a line),
//! over plain HTTP on loopback, for every collection Portico reads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response};
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

/// One collection: what a list answers, and the events its open watches are sent.
struct Collection {
    version: u64,
    items: Vec<Value>,
    events: broadcast::Sender<Option<String>>,
}

/// The fake API server's state.
#[derive(Clone)]
pub struct FakeApi {
    collections: Arc<Mutex<HashMap<String, Collection>>>,
    lists: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    /// Serves on a free loopback port; every collection empty at version 1.
    pub async fn start() -> (FakeApi, SocketAddr) {
        let collections = PATHS
            .iter()
            .map(|(path, _)| {
                (
                    path.to_string(),
                    Collection { version: 1, items: Vec::new(), events: broadcast::channel(64).0 },
                )
            })
            .collect();
        let fake = FakeApi { collections: Arc::new(Mutex::new(collections)), lists: Arc::default() };
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

    async fn answer(
        self,
        request: Request<Incoming>,
    ) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(collection) = collections.get_mut(&path) else {
            let body = Full::new(Bytes::from_static(b"{}")).boxed();
            let mut missing = Response::new(body);
            *missing.status_mut() = http::StatusCode::NOT_FOUND;
            return Ok(missing);
        };
        if query.split('&').any(|p| p == "watch=true" || p == "watch=1") {
            let events = collection.events.subscribe();
            let stream = futures::stream::unfold(events, |mut events| async move {
                match events.recv().await {
                    Ok(Some(line)) => {
                        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line + "\n"))), events))
                    }
                    // `None` ends the watch, as a dropped connection does.
                    _ => None,
                }
            });
            return Ok(Response::new(StreamBody::new(stream).boxed()));
        }
        self.lists.lock().unwrap_or_else(PoisonError::into_inner).push(path.clone());
        let kind = PATHS.iter().find(|(p, _)| *p == path).map(|(_, k)| *k).unwrap_or_default();
        let list = json!({
            "apiVersion": if path.starts_with("/api/v1") { "v1".to_owned() } else { path.trim_start_matches("/apis/").rsplit_once('/').map_or("", |(group, _)| group).to_owned() },
            "kind": kind,
            "metadata": {"resourceVersion": collection.version.to_string()},
            "items": collection.items,
        });
        Ok(Response::new(Full::new(Bytes::from(list.to_string())).boxed()))
    }

    /// Changes `path`'s collection as an event of `kind` on `object` says, and sends the event.
    pub fn event(&self, path: &str, kind: &str, mut object: Value) {
        let mut collections = self.collections.lock().unwrap_or_else(PoisonError::into_inner);
        let collection = collections.get_mut(path).unwrap_or_else(|| panic!("no collection {path}"));
        collection.version += 1;
        object["metadata"]["resourceVersion"] = json!(collection.version.to_string());
        let name = object["metadata"]["name"].clone();
        collection.items.retain(|item| item["metadata"]["name"] != name);
        if kind != "DELETED" {
            collection.items.push(object.clone());
        }
        let _ = collection.events.send(Some(json!({"type": kind, "object": object}).to_string()));
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

    /// How many times `path` was listed.
    pub fn lists_of(&self, path: &str) -> usize {
        self.lists.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|p| *p == path).count()
    }
}

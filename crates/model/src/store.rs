//! The typed store: the accepted objects, one map per kind, keyed by namespace and name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::diagnostic::{Diagnostic, ObjectKey, Origin};
use crate::object::Object;
use crate::validate::validate;

/// An accepted object with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored<T> {
    /// File and document it was read from.
    pub origin: Origin,
    /// The object itself.
    pub object: T,
}

/// Every accepted object, by kind. Objects with errors never get in.
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(missing_docs)]
pub struct Store {
    pub namespaces: BTreeMap<ObjectKey, Stored<Namespace>>,
    pub services: BTreeMap<ObjectKey, Stored<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Stored<EndpointSlice>>,
    pub pods: BTreeMap<ObjectKey, Stored<Pod>>,
    pub nodes: BTreeMap<ObjectKey, Stored<Node>>,
    pub ingresses: BTreeMap<ObjectKey, Stored<Ingress>>,
    pub ingress_classes: BTreeMap<ObjectKey, Stored<IngressClass>>,
    pub secrets: BTreeMap<ObjectKey, Stored<Secret>>,
}

impl Store {
    /// Validates each object and keeps those without errors; the first of two objects with
    /// the same kind, namespace and name wins.
    pub fn from_objects(objects: impl IntoIterator<Item = (Origin, Object)>) -> (Store, Vec<Diagnostic>) {
        let mut store = Store::default();
        let mut diagnostics = Vec::new();
        for (origin, object) in objects {
            let reference = object.reference();
            let findings = validate(&object);
            let rejected = findings.iter().any(Diagnostic::is_error);
            diagnostics.extend(findings.into_iter().map(|d| d.at(&origin).on(reference.clone())));
            if rejected {
                continue;
            }
            if let Some(first) = store.origin_of(&object) {
                diagnostics.push(
                    Diagnostic::error(format!(
                        "defined twice; the copy at {first} is used, this one ignored"
                    ))
                    .at(&origin)
                    .on(reference),
                );
                continue;
            }
            store.insert(origin, object);
        }
        (store, diagnostics)
    }

    /// Where an object with the same kind and key is already stored from, if any.
    fn origin_of(&self, object: &Object) -> Option<&Origin> {
        let key = object.key();
        match object {
            Object::Namespace(_) => self.namespaces.get(&key).map(|s| &s.origin),
            Object::Service(_) => self.services.get(&key).map(|s| &s.origin),
            Object::EndpointSlice(_) => self.endpoint_slices.get(&key).map(|s| &s.origin),
            Object::Pod(_) => self.pods.get(&key).map(|s| &s.origin),
            Object::Node(_) => self.nodes.get(&key).map(|s| &s.origin),
            Object::Ingress(_) => self.ingresses.get(&key).map(|s| &s.origin),
            Object::IngressClass(_) => self.ingress_classes.get(&key).map(|s| &s.origin),
            Object::Secret(_) => self.secrets.get(&key).map(|s| &s.origin),
        }
    }

    /// Stores an object without validating it, replacing any object with the same key.
    pub fn insert(&mut self, origin: Origin, object: Object) {
        let key = object.key();
        match object {
            Object::Namespace(object) => drop(self.namespaces.insert(key, Stored { origin, object })),
            Object::Service(object) => drop(self.services.insert(key, Stored { origin, object })),
            Object::EndpointSlice(object) => {
                drop(self.endpoint_slices.insert(key, Stored { origin, object }))
            }
            Object::Pod(object) => drop(self.pods.insert(key, Stored { origin, object })),
            Object::Node(object) => drop(self.nodes.insert(key, Stored { origin, object })),
            Object::Ingress(object) => drop(self.ingresses.insert(key, Stored { origin, object })),
            Object::IngressClass(object) => drop(self.ingress_classes.insert(key, Stored { origin, object })),
            Object::Secret(object) => drop(self.secrets.insert(key, Stored { origin, object })),
        }
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.pods.len()
            + self.nodes.len()
            + self.ingresses.len()
            + self.ingress_classes.len()
            + self.secrets.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Objects of one namespace from a map keyed by [`ObjectKey`].
pub fn in_namespace<'a, T>(
    map: &'a BTreeMap<ObjectKey, Stored<T>>,
    namespace: &'a str,
) -> impl Iterator<Item = (&'a ObjectKey, &'a Stored<T>)> + 'a {
    map.range(ObjectKey::new(namespace, "")..).take_while(move |(k, _)| k.namespace == namespace)
}

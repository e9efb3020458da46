//! The typed store: the accepted objects, one map per kind, keyed by namespace and name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::authz::AuthorizationPolicy;
use crate::diagnostic::{Diagnostic, ObjectKey, ObjectRef, Origin};
use crate::metallb::{IpAddressPool, L2Advertisement};
use crate::object::{Object, ObjectKind, Workload};
use crate::pod::PodRecord;
use crate::slice::EndpointSliceRecord;
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
    pub endpoint_slices: BTreeMap<ObjectKey, Stored<EndpointSliceRecord>>,
    /// Pods, kept as [`PodRecord`]s once checked.
    pub pods: BTreeMap<ObjectKey, Stored<PodRecord>>,
    pub nodes: BTreeMap<ObjectKey, Stored<Node>>,
    pub ingresses: BTreeMap<ObjectKey, Stored<Ingress>>,
    pub ingress_classes: BTreeMap<ObjectKey, Stored<IngressClass>>,
    pub secrets: BTreeMap<ObjectKey, Stored<Secret>>,
    /// Deployments, StatefulSets, DaemonSets and ReplicaSets, by kind and key.
    pub workloads: BTreeMap<ObjectRef, Stored<Workload>>,
    pub ip_address_pools: BTreeMap<ObjectKey, Stored<IpAddressPool>>,
    pub l2_advertisements: BTreeMap<ObjectKey, Stored<L2Advertisement>>,
    pub authorization_policies: BTreeMap<ObjectKey, Stored<AuthorizationPolicy>>,
}

/// How the diagnostic for a second, different copy of an object begins.
pub const DEFINED_TWICE: &str = "defined twice";

impl Store {
    /// Moves out every object that came from one of `files`, into a store of its own; the
    /// file loader's way of taking out a changed file's worth.
    pub fn take_files(&mut self, files: &BTreeSet<PathBuf>) -> Store {
        fn take<K: Ord + Clone, T>(
            map: &mut BTreeMap<K, Stored<T>>,
            files: &BTreeSet<PathBuf>,
        ) -> BTreeMap<K, Stored<T>> {
            let keys: Vec<K> = map
                .iter()
                .filter(|(_, s)| s.origin.file().is_some_and(|f| files.contains(f)))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k).map(|s| (k, s))).collect()
        }
        Store {
            namespaces: take(&mut self.namespaces, files),
            services: take(&mut self.services, files),
            endpoint_slices: take(&mut self.endpoint_slices, files),
            pods: take(&mut self.pods, files),
            nodes: take(&mut self.nodes, files),
            ingresses: take(&mut self.ingresses, files),
            ingress_classes: take(&mut self.ingress_classes, files),
            secrets: take(&mut self.secrets, files),
            workloads: take(&mut self.workloads, files),
            ip_address_pools: take(&mut self.ip_address_pools, files),
            l2_advertisements: take(&mut self.l2_advertisements, files),
            authorization_policies: take(&mut self.authorization_policies, files),
        }
    }

    /// Removes one object; returns whether it was there. Removing an object that is not
    /// stored, or of a kind Portico does not store, changes nothing.
    pub fn remove(&mut self, object: &ObjectRef) -> bool {
        let key = &object.key;
        let Some(kind) = ObjectKind::from_name(&object.kind) else { return false };
        match kind {
            ObjectKind::Namespace => self.namespaces.remove(key).is_some(),
            ObjectKind::Service => self.services.remove(key).is_some(),
            ObjectKind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            ObjectKind::Pod => self.pods.remove(key).is_some(),
            ObjectKind::Node => self.nodes.remove(key).is_some(),
            ObjectKind::Ingress => self.ingresses.remove(key).is_some(),
            ObjectKind::IngressClass => self.ingress_classes.remove(key).is_some(),
            ObjectKind::Secret => self.secrets.remove(key).is_some(),
            ObjectKind::Deployment
            | ObjectKind::StatefulSet
            | ObjectKind::DaemonSet
            | ObjectKind::ReplicaSet => self.workloads.remove(object).is_some(),
            ObjectKind::IpAddressPool => self.ip_address_pools.remove(key).is_some(),
            ObjectKind::L2Advertisement => self.l2_advertisements.remove(key).is_some(),
            ObjectKind::AuthorizationPolicy => self.authorization_policies.remove(key).is_some(),
        }
    }

    /// Validates each object and keeps those without errors; the first of two objects with
    /// the same kind, namespace and name wins.
    pub fn from_objects(objects: impl IntoIterator<Item = (Origin, Object)>) -> (Store, Vec<Diagnostic>) {
        let mut store = Store::default();
        let mut diagnostics = Vec::new();
        store.admit(objects, &mut diagnostics);
        (store, diagnostics)
    }

    /// Validates each object and keeps those without errors, as [`Store::from_objects`]
    /// does, adding to what is stored already.
    pub fn admit(
        &mut self,
        objects: impl IntoIterator<Item = (Origin, Object)>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        for (origin, object) in objects {
            let reference = object.reference();
            let findings = validate(&object);
            let rejected = findings.iter().any(Diagnostic::is_error);
            diagnostics.extend(findings.into_iter().map(|d| d.at(&origin).on(reference.clone())));
            if rejected {
                continue;
            }
            if let Some((first, same)) = self.existing(&object) {
                // Applying the same object twice is harmless, as with `kubectl apply`.
                if same {
                    continue;
                }
                diagnostics.push(
                    Diagnostic::error(format!(
                        "{DEFINED_TWICE}, differently; the copy at {first} is used, this one ignored"
                    ))
                    .at(&origin)
                    .on(reference),
                );
                continue;
            }
            self.insert(origin, object);
        }
    }

    /// Where an object with the same kind and key is already stored from, and whether it is
    /// the same object.
    fn existing(&self, object: &Object) -> Option<(&Origin, bool)> {
        /// `same` compares lazily: Pods and slices are converted to their records only when
        /// the key is already taken, which is rare.
        fn check<'a, K: Ord, T>(
            map: &'a BTreeMap<K, Stored<T>>,
            key: &K,
            same: impl FnOnce(&T) -> bool,
        ) -> Option<(&'a Origin, bool)> {
            map.get(key).map(|s| (&s.origin, same(&s.object)))
        }
        let key = object.key();
        match object {
            Object::Namespace(o) => check(&self.namespaces, &key, |s| s == o.as_ref()),
            Object::Service(o) => check(&self.services, &key, |s| s == o.as_ref()),
            Object::EndpointSlice(o) => {
                check(&self.endpoint_slices, &key, |s| *s == EndpointSliceRecord::from(o.as_ref().clone()))
            }
            Object::Pod(o) => check(&self.pods, &key, |s| *s == PodRecord::from(o.as_ref().clone())),
            Object::Node(o) => check(&self.nodes, &key, |s| s == o.as_ref()),
            Object::Ingress(o) => check(&self.ingresses, &key, |s| s == o.as_ref()),
            Object::IngressClass(o) => check(&self.ingress_classes, &key, |s| s == o.as_ref()),
            Object::Secret(o) => check(&self.secrets, &key, |s| s == o.as_ref()),
            Object::Workload(o) => check(&self.workloads, &object.reference(), |s| s == o.as_ref()),
            Object::IpAddressPool(o) => check(&self.ip_address_pools, &key, |s| s == o.as_ref()),
            Object::L2Advertisement(o) => check(&self.l2_advertisements, &key, |s| s == o.as_ref()),
            Object::AuthorizationPolicy(o) => check(&self.authorization_policies, &key, |s| s == o.as_ref()),
        }
    }

    /// Stores an object without validating it, replacing any object with the same key.
    pub fn insert(&mut self, origin: Origin, object: Object) {
        let key = object.key();
        let reference = object.reference();
        match object {
            Object::Namespace(object) => {
                drop(self.namespaces.insert(key, Stored { origin, object: *object }))
            }
            Object::Service(object) => drop(self.services.insert(key, Stored { origin, object: *object })),
            Object::EndpointSlice(object) => drop(
                self.endpoint_slices
                    .insert(key, Stored { origin, object: EndpointSliceRecord::from(*object) }),
            ),
            Object::Pod(object) => {
                drop(self.pods.insert(key, Stored { origin, object: PodRecord::from(*object) }))
            }
            Object::Node(object) => drop(self.nodes.insert(key, Stored { origin, object: *object })),
            Object::Ingress(object) => drop(self.ingresses.insert(key, Stored { origin, object: *object })),
            Object::IngressClass(object) => {
                drop(self.ingress_classes.insert(key, Stored { origin, object: *object }))
            }
            Object::Secret(object) => drop(self.secrets.insert(key, Stored { origin, object: *object })),
            Object::Workload(object) => {
                drop(self.workloads.insert(reference, Stored { origin, object: *object }))
            }
            Object::IpAddressPool(object) => {
                drop(self.ip_address_pools.insert(key, Stored { origin, object: *object }))
            }
            Object::L2Advertisement(object) => {
                drop(self.l2_advertisements.insert(key, Stored { origin, object: *object }))
            }
            Object::AuthorizationPolicy(object) => {
                drop(self.authorization_policies.insert(key, Stored { origin, object: *object }))
            }
        }
    }

    /// After a reload, gives back the last good version of every object that is missing now
    /// because it is broken: an error diagnostic names it, or names a document of its file
    /// that no longer parses. A bad edit never takes down what was served; an object
    /// deleted on purpose (no error) stays deleted.
    pub fn keep_last_good(&mut self, last: &Store, diagnostics: &[Diagnostic]) {
        let errors = || diagnostics.iter().filter(|d| d.is_error());
        let objects: BTreeSet<&ObjectRef> = errors().filter_map(|d| d.object.as_ref()).collect();
        let files: BTreeSet<&Path> =
            errors().filter(|d| d.object.is_none()).filter_map(|d| d.origin.as_ref()?.file()).collect();
        let broken = |kind: &str, key: &ObjectKey, origin: &Origin| {
            origin.file().is_some_and(|f| files.contains(f))
                || objects.contains(&ObjectRef::new(kind, key.clone()))
        };
        fn keep<T: Clone>(
            now: &mut BTreeMap<ObjectKey, Stored<T>>,
            last: &BTreeMap<ObjectKey, Stored<T>>,
            kind: &str,
            broken: &impl Fn(&str, &ObjectKey, &Origin) -> bool,
        ) {
            for (key, stored) in last {
                if !now.contains_key(key) && broken(kind, key, &stored.origin) {
                    now.insert(key.clone(), stored.clone());
                }
            }
        }
        keep(&mut self.namespaces, &last.namespaces, "Namespace", &broken);
        keep(&mut self.services, &last.services, "Service", &broken);
        keep(&mut self.endpoint_slices, &last.endpoint_slices, "EndpointSlice", &broken);
        keep(&mut self.pods, &last.pods, "Pod", &broken);
        keep(&mut self.nodes, &last.nodes, "Node", &broken);
        keep(&mut self.ingresses, &last.ingresses, "Ingress", &broken);
        keep(&mut self.ingress_classes, &last.ingress_classes, "IngressClass", &broken);
        keep(&mut self.secrets, &last.secrets, "Secret", &broken);
        keep(&mut self.ip_address_pools, &last.ip_address_pools, "IPAddressPool", &broken);
        keep(&mut self.l2_advertisements, &last.l2_advertisements, "L2Advertisement", &broken);
        keep(&mut self.authorization_policies, &last.authorization_policies, "AuthorizationPolicy", &broken);
        for (reference, stored) in &last.workloads {
            if !self.workloads.contains_key(reference)
                && broken(&reference.kind, &reference.key, &stored.origin)
            {
                self.workloads.insert(reference.clone(), stored.clone());
            }
        }
    }

    /// Rebuilds every map from its sorted entries, so that its nodes are full: maps filled
    /// in key order leave each node about half empty, and the nodes hold the objects inline.
    pub fn compact(&mut self) {
        fn pack<K: Ord, V>(map: &mut BTreeMap<K, V>) {
            *map = std::mem::take(map).into_iter().collect();
        }
        pack(&mut self.namespaces);
        pack(&mut self.services);
        pack(&mut self.endpoint_slices);
        pack(&mut self.pods);
        pack(&mut self.nodes);
        pack(&mut self.ingresses);
        pack(&mut self.ingress_classes);
        pack(&mut self.secrets);
        pack(&mut self.workloads);
        pack(&mut self.ip_address_pools);
        pack(&mut self.l2_advertisements);
        pack(&mut self.authorization_policies);
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
            + self.workloads.len()
            + self.ip_address_pools.len()
            + self.l2_advertisements.len()
            + self.authorization_policies.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_text;
    use std::path::Path;

    #[test]
    fn identical_duplicates_are_fine_different_ones_are_errors() {
        let ns = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: PORT}]}\n";
        let text = format!(
            "{}---\n{}---\n{}",
            ns.replace("PORT", "80"),
            ns.replace("PORT", "80"),
            ns.replace("PORT", "81")
        );
        let (objects, _) = parse_text(Path::new("dup.yaml"), &text);
        let (store, diags) = Store::from_objects(objects);
        assert_eq!(store.services.len(), 1);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].origin.as_ref().and_then(Origin::document), Some(3));
        assert!(diags[0].message.contains("defined twice, differently"));
        let kept = &store.services[&ObjectKey::new("default", "web")];
        assert_eq!(kept.origin.document(), Some(1));
    }

    #[test]
    fn broken_edits_keep_the_last_good_version() {
        let v1 = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 80}]}\n";
        let (objects, _) = parse_text(Path::new("f.yaml"), v1);
        let (last, _) = Store::from_objects(objects);
        // a gets an invalid port, b is deleted on purpose.
        let v2 = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 0}]}\n";
        let (objects, mut diags) = parse_text(Path::new("f.yaml"), v2);
        let (mut now, more) = Store::from_objects(objects);
        diags.extend(more);
        now.keep_last_good(&last, &diags);
        let names: Vec<&str> = now.services.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, vec!["a"]);
        assert_eq!(
            now.services[&ObjectKey::new("default", "a")],
            last.services[&ObjectKey::new("default", "a")]
        );
        // A file that no longer parses keeps all of its objects.
        let (objects, diags) = parse_text(Path::new("f.yaml"), "apiVersion: v1\nkind: [\n");
        let (mut now, _) = Store::from_objects(objects);
        now.keep_last_good(&last, &diags);
        assert_eq!(now.services.len(), 2);
    }

    #[test]
    fn one_object_is_removed_and_the_rest_of_its_file_stays() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 80}]}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: a}}, spec: {containers: [{name: c, image: i}]}}}\n";
        let (objects, _) = parse_text(Path::new("f.yaml"), text);
        let (mut store, diags) = Store::from_objects(objects);
        assert!(diags.is_empty(), "{diags:?}");
        let service = |name: &str| ObjectRef::new("Service", ObjectKey::new("default", name));
        assert!(store.remove(&service("a")));
        let names: Vec<&str> = store.services.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(store.workloads.len(), 1, "a Deployment of the same name is another object");
        // Absent, or of a kind never stored: nothing changes.
        let before = store.clone();
        assert!(!store.remove(&service("a")));
        assert!(!store.remove(&service("nowhere")));
        assert!(!store.remove(&ObjectRef::new("CronJob", ObjectKey::new("default", "b"))));
        assert_eq!(store, before);
        assert!(store.remove(&ObjectRef::new("Deployment", ObjectKey::new("default", "a"))));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn objects_with_errors_stay_out() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 0}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}\n";
        let (objects, _) = parse_text(Path::new("s.yaml"), text);
        let (store, diags) = Store::from_objects(objects);
        assert_eq!(store.services.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(), vec!["good"]);
        assert!(diags.iter().all(|d| d.object.as_ref().is_some_and(|o| o.key.name == "bad")));
    }
}

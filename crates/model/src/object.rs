//! The typed Kubernetes objects Portico reads, one enum over the kinds it knows.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodTemplateSpec, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::authz::{self, AuthorizationPolicy};
use crate::diagnostic::{ObjectKey, ObjectRef};
use crate::metallb::{self, IpAddressPool, L2Advertisement};

/// The kinds Portico understands, with their API group/version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Node.
    Node,
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// networking.k8s.io/v1 IngressClass.
    IngressClass,
    /// core/v1 Secret.
    Secret,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// metallb.io/v1beta1 IPAddressPool.
    IpAddressPool,
    /// metallb.io/v1beta1 L2Advertisement.
    L2Advertisement,
    /// security.istio.io/v1 (or v1beta1) AuthorizationPolicy.
    AuthorizationPolicy,
}

impl ObjectKind {
    /// Every kind, in the order objects are reported.
    pub const ALL: [ObjectKind; 15] = [
        ObjectKind::Namespace,
        ObjectKind::Node,
        ObjectKind::Secret,
        ObjectKind::Deployment,
        ObjectKind::StatefulSet,
        ObjectKind::DaemonSet,
        ObjectKind::ReplicaSet,
        ObjectKind::Pod,
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
        ObjectKind::IngressClass,
        ObjectKind::Ingress,
        ObjectKind::IpAddressPool,
        ObjectKind::L2Advertisement,
        ObjectKind::AuthorizationPolicy,
    ];

    /// The `kind` field value.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "Namespace",
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Pod => "Pod",
            ObjectKind::Node => "Node",
            ObjectKind::Ingress => "Ingress",
            ObjectKind::IngressClass => "IngressClass",
            ObjectKind::Secret => "Secret",
            ObjectKind::Deployment => "Deployment",
            ObjectKind::StatefulSet => "StatefulSet",
            ObjectKind::DaemonSet => "DaemonSet",
            ObjectKind::ReplicaSet => "ReplicaSet",
            ObjectKind::IpAddressPool => "IPAddressPool",
            ObjectKind::L2Advertisement => "L2Advertisement",
            ObjectKind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    /// The `apiVersion` this kind is read at (the preferred one, when there are several).
    pub fn api_version(self) -> &'static str {
        match self {
            ObjectKind::EndpointSlice => "discovery.k8s.io/v1",
            ObjectKind::Ingress | ObjectKind::IngressClass => "networking.k8s.io/v1",
            ObjectKind::Deployment
            | ObjectKind::StatefulSet
            | ObjectKind::DaemonSet
            | ObjectKind::ReplicaSet => "apps/v1",
            ObjectKind::IpAddressPool | ObjectKind::L2Advertisement => metallb::API_VERSION,
            ObjectKind::AuthorizationPolicy => authz::API_VERSION,
            _ => "v1",
        }
    }

    /// Whether objects of this kind are read at `api_version`: the preferred version, or an
    /// older one with the same schema.
    pub fn reads(self, api_version: &str) -> bool {
        match self {
            ObjectKind::AuthorizationPolicy => authz::API_VERSIONS.contains(&api_version),
            _ => api_version == self.api_version(),
        }
    }

    /// Looks a kind up by its `kind` field.
    pub fn from_name(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == kind)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, ObjectKind::Namespace | ObjectKind::Node | ObjectKind::IngressClass)
    }
}

/// One typed object read from a manifest. Boxed, so that a list of freshly parsed objects
/// costs a pointer each rather than the size of the largest kind.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Object {
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Node(Box<Node>),
    Ingress(Box<Ingress>),
    IngressClass(Box<IngressClass>),
    Secret(Box<Secret>),
    Workload(Box<Workload>),
    IpAddressPool(Box<IpAddressPool>),
    L2Advertisement(Box<L2Advertisement>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
}

/// A controller that runs Pods from a template (Deployment, StatefulSet, DaemonSet,
/// ReplicaSet), reduced to what running its Pods needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Which controller kind.
    pub kind: ObjectKind,
    /// The workload's own metadata.
    pub metadata: ObjectMeta,
    /// `spec.replicas` (DaemonSets have none: one Pod per node).
    pub replicas: Option<i32>,
    /// `spec.selector`.
    pub selector: LabelSelector,
    /// `spec.template`.
    pub template: PodTemplateSpec,
    /// `spec.serviceName` of a StatefulSet: the headless Service giving its Pods DNS names.
    pub service_name: Option<String>,
}

impl From<Deployment> for Workload {
    fn from(d: Deployment) -> Self {
        let spec = d.spec.unwrap_or_default();
        Workload {
            kind: ObjectKind::Deployment,
            metadata: d.metadata,
            replicas: spec.replicas,
            selector: spec.selector,
            template: spec.template,
            service_name: None,
        }
    }
}

impl From<StatefulSet> for Workload {
    fn from(s: StatefulSet) -> Self {
        let spec = s.spec.unwrap_or_default();
        Workload {
            kind: ObjectKind::StatefulSet,
            metadata: s.metadata,
            replicas: spec.replicas,
            selector: spec.selector,
            template: spec.template,
            service_name: spec.service_name,
        }
    }
}

impl From<DaemonSet> for Workload {
    fn from(d: DaemonSet) -> Self {
        let spec = d.spec.unwrap_or_default();
        Workload {
            kind: ObjectKind::DaemonSet,
            metadata: d.metadata,
            replicas: None,
            selector: spec.selector,
            template: spec.template,
            service_name: None,
        }
    }
}

impl From<ReplicaSet> for Workload {
    fn from(r: ReplicaSet) -> Self {
        let spec = r.spec.unwrap_or_default();
        Workload {
            kind: ObjectKind::ReplicaSet,
            metadata: r.metadata,
            replicas: spec.replicas,
            selector: spec.selector,
            template: spec.template.unwrap_or_default(),
            service_name: None,
        }
    }
}

impl Object {
    /// This object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Namespace(_) => ObjectKind::Namespace,
            Object::Service(_) => ObjectKind::Service,
            Object::EndpointSlice(_) => ObjectKind::EndpointSlice,
            Object::Pod(_) => ObjectKind::Pod,
            Object::Node(_) => ObjectKind::Node,
            Object::Ingress(_) => ObjectKind::Ingress,
            Object::IngressClass(_) => ObjectKind::IngressClass,
            Object::Secret(_) => ObjectKind::Secret,
            Object::Workload(w) => w.kind,
            Object::IpAddressPool(_) => ObjectKind::IpAddressPool,
            Object::L2Advertisement(_) => ObjectKind::L2Advertisement,
            Object::AuthorizationPolicy(_) => ObjectKind::AuthorizationPolicy,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Workload(o) => &o.metadata,
            Object::IpAddressPool(o) => &o.metadata,
            Object::L2Advertisement(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
        }
    }

    /// Mutable metadata, for defaulting at load time.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::Ingress(o) => &mut o.metadata,
            Object::IngressClass(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::Workload(o) => &mut o.metadata,
            Object::IpAddressPool(o) => &mut o.metadata,
            Object::L2Advertisement(o) => &mut o.metadata,
            Object::AuthorizationPolicy(o) => &mut o.metadata,
        }
    }

    /// Namespace (empty for cluster-scoped kinds) and name.
    pub fn key(&self) -> ObjectKey {
        key_of(self.kind(), self.metadata())
    }

    /// Kind, namespace and name, for messages.
    pub fn reference(&self) -> ObjectRef {
        ObjectRef::new(self.kind().name(), self.key())
    }
}

/// The key of an object of `kind` with `meta`.
pub fn key_of(kind: ObjectKind, meta: &ObjectMeta) -> ObjectKey {
    let name = meta.name.clone().unwrap_or_default();
    if kind.namespaced() {
        ObjectKey::new(meta.namespace.clone().unwrap_or_else(|| "default".into()), name)
    } else {
        ObjectKey::cluster(name)
    }
}

//! What Portico keeps of a Pod once it is accepted: the fields exposure depends on.
//!
//! A k8s-openapi `Pod` costs about 5 KB before any of its data (its `PodSpec` and each
//! `Container` are large structs); a standalone host may hold tens of thousands of Pods, so
//! the store keeps this record instead, after the full object has been checked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ContainerPort, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::diagnostic::{ObjectKey, ObjectRef};
use crate::object::{ObjectKind, key_of};

/// The prefix of the annotations a [`PodRecord`] keeps.
pub const PORTICO_ANNOTATIONS: &str = "portico.dev/";

/// A Pod, reduced to what the planner reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRecord {
    /// Namespace and name.
    pub key: ObjectKey,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations` of Portico's own (`portico.dev/…`): the rest is never read.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Time>,
    /// `metadata.deletionTimestamp` is set: the Pod is terminating.
    pub deleting: bool,
    /// The controller that owns it (`ownerReferences` with `controller: true`).
    pub owner: Option<ObjectRef>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.nodeSelector`: labels a node must carry for the Pod to be placed there.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.hostname`.
    pub hostname: Option<String>,
    /// `spec.subdomain`.
    pub subdomain: Option<String>,
    /// `spec.serviceAccountName`, or the deprecated `spec.serviceAccount` when it is empty, as
    /// the API server reads a v1 Pod; `None` when neither names one.
    pub service_account: Option<String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `spec.containers`.
    pub containers: Vec<ContainerRecord>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// The `Ready` condition, when the status has one.
    pub ready: Option<bool>,
}

/// One container of a [`PodRecord`].
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRecord {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: Option<String>,
    /// `command` then `args`, in order.
    pub argv: Vec<String>,
    /// Declared ports.
    pub ports: Vec<ContainerPort>,
}

impl From<Pod> for PodRecord {
    fn from(pod: Pod) -> Self {
        let key = key_of(ObjectKind::Pod, &pod.metadata);
        let owner =
            pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| {
                ObjectRef::new(o.kind.clone(), ObjectKey::new(key.namespace.clone(), o.name.clone()))
            });
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let mut ips: Vec<IpAddr> =
            status.pod_ips.iter().flatten().filter_map(|p| p.ip.parse().ok()).collect();
        if ips.is_empty() {
            ips.extend(status.pod_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()));
        }
        let ready =
            status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| c.status == "True");
        PodRecord {
            key,
            labels: pod.metadata.labels.unwrap_or_default(),
            annotations: pod
                .metadata
                .annotations
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, _)| name.starts_with(PORTICO_ANNOTATIONS))
                .collect(),
            created: pod.metadata.creation_timestamp,
            deleting: pod.metadata.deletion_timestamp.is_some(),
            owner,
            node_name: spec.node_name,
            node_selector: spec.node_selector.unwrap_or_default(),
            hostname: spec.hostname,
            subdomain: spec.subdomain,
            service_account: [spec.service_account_name, spec.service_account]
                .into_iter()
                .flatten()
                .find(|name| !name.is_empty()),
            host_network: spec.host_network.unwrap_or(false),
            containers: spec
                .containers
                .into_iter()
                .map(|c| ContainerRecord {
                    name: c.name,
                    image: c.image,
                    argv: c.command.into_iter().flatten().chain(c.args.into_iter().flatten()).collect(),
                    ports: c.ports.unwrap_or_default(),
                })
                .collect(),
            phase: status.phase,
            ips,
            ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_text;
    use crate::object::Object;
    use std::path::Path;

    #[test]
    fn keeps_what_exposure_needs() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ns\n  labels: {app: a}\n  deletionTimestamp: '2026-01-01T00:00:00Z'\n  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u, controller: true}]\nspec:\n  nodeName: n1\n  nodeSelector: {disk: ssd}\n  hostname: db-0\n  subdomain: db\n  serviceAccountName: db\n  serviceAccount: legacy\n  containers:\n  - name: c\n    image: portico\n    command: [portico]\n    args: [echo]\n    ports: [{name: http, containerPort: 8080}]\nstatus:\n  phase: Running\n  podIPs: [{ip: 127.98.0.7}, {ip: '::1'}]\n  conditions: [{type: Ready, status: 'False'}]\n";
        let (mut objects, diags) = parse_text(Path::new("p.yaml"), yaml);
        assert!(diags.is_empty(), "{diags:?}");
        let Some((_, Object::Pod(pod))) = objects.pop() else { panic!("no Pod") };
        let record = PodRecord::from(*pod);
        assert_eq!(record.key, ObjectKey::new("ns", "p"));
        assert_eq!(record.labels.get("app").map(String::as_str), Some("a"));
        assert!(record.deleting);
        assert_eq!(record.owner.map(|o| o.to_string()).as_deref(), Some("StatefulSet ns/db"));
        assert_eq!(record.node_name.as_deref(), Some("n1"));
        assert_eq!(record.node_selector.get("disk").map(String::as_str), Some("ssd"));
        assert_eq!(record.service_account.as_deref(), Some("db"));
        assert_eq!(record.containers[0].argv, vec!["portico", "echo"]);
        assert_eq!(record.containers[0].ports[0].container_port, 8080);
        assert_eq!(record.ips.len(), 2);
        assert_eq!(record.ready, Some(false));
    }
}

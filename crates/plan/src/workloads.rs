//! The controllers' part of the API server: Pods from Deployments, ReplicaSets,
//! StatefulSets and DaemonSets, so that ordinary application manifests run as they are.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use portico_model::{Diagnostic, ObjectKey, ObjectKind, PodRecord, Store, Stored, Workload};

use crate::NodePlan;

/// Most Pods one workload runs here: a standalone host is not a cluster.
pub const MAX_REPLICAS: i32 = 1000;

/// The Pods the workloads in `store` would have, named as their controllers name them
/// (StatefulSet `web-0`; Deployment and ReplicaSet `web-0`, `web-1`, ... in place of random
/// suffixes; DaemonSet `agent-<node>`). A Pod given in the manifests under the same name wins.
pub fn expand(
    store: &Store,
    nodes: &[NodePlan],
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<ObjectKey, Stored<PodRecord>> {
    let mut out = BTreeMap::new();
    for (reference, workload) in &store.workloads {
        let name = &reference.key.name;
        let namespace = &reference.key.namespace;
        let members: Vec<(String, Option<&str>)> = if workload.object.kind == ObjectKind::DaemonSet {
            // The DaemonSet controller honours the template's nodeSelector; a folder without
            // Node objects has one node, which stands for the cluster and runs it.
            let selector = workload.object.template.spec.as_ref().and_then(|s| s.node_selector.as_ref());
            let selects = |node: &NodePlan| {
                store.nodes.is_empty()
                    || selector.into_iter().flatten().all(|(k, v)| node.labels.get(k) == Some(v))
            };
            nodes
                .iter()
                .filter(|n| selects(n))
                .map(|n| (format!("{name}-{}", n.name), Some(n.name.as_str())))
                .collect()
        } else {
            let wanted = workload.object.replicas.unwrap_or(1);
            if wanted > MAX_REPLICAS {
                diagnostics.push(
                    Diagnostic::warning(format!("{wanted} replicas; only the first {MAX_REPLICAS} run here"))
                        .at(&workload.origin)
                        .on(reference.clone())
                        .field("spec.replicas"),
                );
            }
            (0..wanted.clamp(0, MAX_REPLICAS)).map(|i| (format!("{name}-{i}"), None)).collect()
        };
        for (pod_name, node) in members {
            let key = ObjectKey::new(namespace.clone(), pod_name.clone());
            if store.pods.contains_key(&key) {
                diagnostics.push(
                    Diagnostic::warning(format!(
                        "a Pod named {key} is given in the manifests; that one is used"
                    ))
                    .at(&workload.origin)
                    .on(reference.clone()),
                );
                continue;
            }
            let pod = member(&workload.object, namespace, &pod_name, node);
            out.insert(key, Stored { origin: workload.origin.clone(), object: PodRecord::from(pod) });
        }
    }
    out
}

/// One Pod of a workload, from its template.
fn member(workload: &Workload, namespace: &str, name: &str, node: Option<&str>) -> Pod {
    let template = workload.template.metadata.clone().unwrap_or_default();
    let mut spec = workload.template.spec.clone().unwrap_or_default();
    if workload.kind == ObjectKind::StatefulSet {
        spec.hostname = Some(name.to_string());
        spec.subdomain.clone_from(&workload.service_name);
    }
    if let Some(node) = node {
        spec.node_name = Some(node.to_string());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: template.labels,
            annotations: template.annotations,
            creation_timestamp: workload.metadata.creation_timestamp.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: workload.kind.api_version().to_string(),
                kind: workload.kind.name().to_string(),
                name: workload.metadata.name.clone().unwrap_or_default(),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

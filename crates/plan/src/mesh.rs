//! Which Pods are in the mesh and the identity each runs as: a Pod is meshed when it or its
//! namespace carries `portico.dev/mesh: enabled` (or Istio ambient's
//! `istio.io/dataplane-mode: ambient`), and not when the Pod says `disabled` (`none`). Its
//! identity is its ServiceAccount's SPIFFE ID, `spiffe://<trust domain>/ns/<ns>/sa/<sa>`, as
//! Istio and Linkerd name workloads. The AuthorizationPolicies that apply to each are compiled
//! with it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use portico_model::pod::PodRecord;
use portico_model::{Diagnostic, ObjectKey, ObjectRef, Store, Stored};
use serde::Serialize;

use crate::authz::{EffectivePolicy, effective};
use crate::config::PlanConfig;
use crate::pods::PodPlan;

/// The label that puts a Pod, or every Pod of a namespace, in the mesh.
pub const MESH_LABEL: &str = "portico.dev/mesh";
/// Istio ambient's label of the same meaning (`ambient` in, `none` out).
pub const ISTIO_DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// A Pod annotation: inbound ports (`8080,9000-9010`) that are not captured.
pub const EXCLUDE_INBOUND: &str = "portico.dev/mesh-exclude-inbound-ports";
/// A Pod annotation: outbound destination ports that are not captured.
pub const EXCLUDE_OUTBOUND: &str = "portico.dev/mesh-exclude-outbound-ports";

/// The mesh: its trust domain and its workloads.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPlan {
    /// The trust domain every identity is in.
    pub trust_domain: String,
    /// Policies in this namespace apply to every workload.
    pub root_namespace: String,
    /// The meshed Pods, by namespace and name.
    pub workloads: Vec<MeshWorkload>,
}

/// One meshed Pod.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshWorkload {
    /// The Pod.
    pub pod: ObjectKey,
    /// The node it runs on, whose proxy serves it.
    pub node: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its ServiceAccount.
    pub service_account: String,
    /// Its SPIFFE ID.
    pub identity: String,
    /// What put it in the mesh.
    pub meshed_by: MeshedBy,
    /// Inbound ports left alone.
    pub exclude_inbound: Vec<PortRange>,
    /// Outbound destination ports left alone.
    pub exclude_outbound: Vec<PortRange>,
    /// The AuthorizationPolicies that apply to it.
    pub policy: EffectivePolicy,
}

/// What put a Pod in the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MeshedBy {
    /// Its own label.
    Pod,
    /// Its namespace's label.
    Namespace,
}

/// Ports from `first` to `last`, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// The SPIFFE ID of ServiceAccount `name` in `namespace`.
pub fn identity(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A label's say on membership: in, out, or nothing.
fn says(labels: &BTreeMap<String, String>) -> Result<Option<bool>, (String, String)> {
    let ours = labels.get(MESH_LABEL).map(|v| match v.as_str() {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        other => Err((MESH_LABEL.to_owned(), format!("{other:?} is neither \"enabled\" nor \"disabled\""))),
    });
    let istio = labels.get(ISTIO_DATAPLANE_MODE).map(|v| match v.as_str() {
        "ambient" => Ok(true),
        "none" => Ok(false),
        other => {
            Err((ISTIO_DATAPLANE_MODE.to_owned(), format!("{other:?} is neither \"ambient\" nor \"none\"")))
        }
    });
    ours.or(istio).transpose()
}

/// The meshed Pods of `pods`; warnings for labels and annotations that cannot be read, and for
/// Pods a label asks for that cannot be meshed. `stored` are the records the Pods came from.
pub fn plan_mesh(
    store: &Store,
    pods: &[PodPlan],
    stored: &[&BTreeMap<ObjectKey, Stored<PodRecord>>],
    config: &PlanConfig,
    diagnostics: &mut Vec<Diagnostic>,
) -> MeshPlan {
    let mut namespaces: BTreeMap<&str, bool> = BTreeMap::new();
    for (key, namespace) in &store.namespaces {
        let labels = namespace.object.metadata.labels.clone().unwrap_or_default();
        match says(&labels) {
            Ok(Some(meshed)) => {
                namespaces.insert(key.name.as_str(), meshed);
            }
            Ok(None) => {}
            Err((label, why)) => diagnostics.push(
                Diagnostic::warning(format!("label {label}: {why}; the namespace is not meshed by it"))
                    .at(&namespace.origin)
                    .on(ObjectRef::new("Namespace", key.clone()))
                    .field(format!("metadata.labels[\"{label}\"]")),
            ),
        }
    }
    let mut workloads = Vec::new();
    for pod in pods {
        let Some(record) = stored.iter().find_map(|m| m.get(&pod.key)) else { continue };
        let warn = |message: String, field: String| {
            Diagnostic::warning(message)
                .at(&record.origin)
                .on(ObjectRef::new("Pod", pod.key.clone()))
                .field(field)
        };
        let own = match says(&pod.labels) {
            Ok(own) => own,
            Err((label, why)) => {
                let field = format!("metadata.labels[\"{label}\"]");
                diagnostics.push(warn(format!("label {label}: {why}; its namespace decides"), field));
                None
            }
        };
        let meshed_by = match (own, namespaces.get(pod.key.namespace.as_str())) {
            (Some(true), _) => MeshedBy::Pod,
            (None, Some(true)) => MeshedBy::Namespace,
            _ => continue,
        };
        if pod.host_network {
            let message = "runs in its node's network namespace (hostNetwork), which the mesh does not capture; \
                           it stays outside the mesh";
            if meshed_by == MeshedBy::Pod {
                diagnostics.push(warn(message.to_owned(), "spec.hostNetwork".to_owned()));
            }
            continue;
        }
        if pod.ips.is_empty() {
            continue;
        }
        let mut ports = |annotation: &str| match parse_ports(
            record.object.annotations.get(annotation).map_or("", String::as_str),
        ) {
            Ok(ranges) => ranges,
            Err(why) => {
                let field = format!("metadata.annotations[\"{annotation}\"]");
                diagnostics.push(warn(format!("{why}; no port is left alone"), field));
                Vec::new()
            }
        };
        let exclude_inbound = ports(EXCLUDE_INBOUND);
        let exclude_outbound = ports(EXCLUDE_OUTBOUND);
        let policies = store.authorization_policies.iter().map(|(key, stored)| (key, &stored.object));
        let policy = effective(policies, &config.mesh_root_namespace, &pod.key.namespace, &pod.labels);
        workloads.push(MeshWorkload {
            pod: pod.key.clone(),
            node: pod.node.clone(),
            ips: pod.ips.clone(),
            service_account: pod.service_account.clone(),
            identity: identity(&config.trust_domain, &pod.key.namespace, &pod.service_account),
            meshed_by,
            exclude_inbound,
            exclude_outbound,
            policy,
        });
    }
    MeshPlan {
        trust_domain: config.trust_domain.clone(),
        root_namespace: config.mesh_root_namespace.clone(),
        workloads,
    }
}

/// Ports written as `8080,9000-9010` (spaces allowed); empty is none.
pub fn parse_ports(text: &str) -> Result<Vec<PortRange>, String> {
    let port = |p: &str| match p.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
        Ok(n) => Ok(n),
    };
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (port(first)?, port(last)?),
                None => (port(part)?, port(part)?),
            };
            if first > last {
                return Err(format!("{part:?} ends before it starts"));
            }
            Ok(PortRange { first, last })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_read_as_numbers_and_ranges() {
        let ranges = parse_ports(" 8080, 9000-9010 ,").unwrap();
        assert_eq!(
            ranges,
            vec![PortRange { first: 8080, last: 8080 }, PortRange { first: 9000, last: 9010 }]
        );
        assert!(ranges[1].contains(9005) && !ranges[1].contains(9011));
        assert_eq!(parse_ports("").unwrap(), vec![]);
        for bad in ["0", "http", "9010-9000", "70000", "1-"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_say_in_out_or_nothing() {
        let labels = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert_eq!(says(&labels(MESH_LABEL, "enabled")), Ok(Some(true)));
        assert_eq!(says(&labels(MESH_LABEL, "disabled")), Ok(Some(false)));
        assert_eq!(says(&labels(ISTIO_DATAPLANE_MODE, "ambient")), Ok(Some(true)));
        assert_eq!(says(&labels(ISTIO_DATAPLANE_MODE, "none")), Ok(Some(false)));
        assert_eq!(says(&labels("app", "enabled")), Ok(None));
        assert!(says(&labels(MESH_LABEL, "yes")).is_err());
    }
}

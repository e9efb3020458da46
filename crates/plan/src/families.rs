//! Dual stack as the API server defaults it: a Service's IP family policy and IP families,
//! resolved against the families the cluster's service CIDRs give.
//!
//! What one Service's spec gets wrong on its own (an unknown policy, a family twice,
//! `clusterIPs` not matching `ipFamilies`) is `portico_model::validate`'s to reject; this
//! module decides what needs the cluster: which families it has.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ServiceSpec;
use serde::Serialize;

/// An IP family, as `spec.ipFamilies` and an EndpointSlice's `addressType` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    /// IPv4.
    #[serde(rename = "IPv4")]
    Ipv4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    Ipv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { IpFamily::Ipv4 } else { IpFamily::Ipv6 }
    }

    /// Reads `IPv4` or `IPv6`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::Ipv4),
            "IPv6" => Some(IpFamily::Ipv6),
            _ => None,
        }
    }

    /// The family that is not this one.
    pub fn other(self) -> Self {
        match self {
            IpFamily::Ipv4 => IpFamily::Ipv6,
            IpFamily::Ipv6 => IpFamily::Ipv4,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        })
    }
}

/// `spec.ipFamilyPolicy`: how many families a Service wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum IpFamilyPolicy {
    /// One family.
    #[default]
    SingleStack,
    /// Both families when the cluster has them, else one.
    PreferDualStack,
    /// Both families, or the Service is rejected.
    RequireDualStack,
}

impl IpFamilyPolicy {
    /// Reads a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SingleStack" => Some(IpFamilyPolicy::SingleStack),
            "PreferDualStack" => Some(IpFamilyPolicy::PreferDualStack),
            "RequireDualStack" => Some(IpFamilyPolicy::RequireDualStack),
            _ => None,
        }
    }
}

/// The cluster's service CIDRs by family, the first one's family primary. A second CIDR of a
/// family already seen is ignored, as the API server takes one per family.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceCidrs(Vec<(IpFamily, IpNet)>);

impl ServiceCidrs {
    /// The families of `cidrs`, in order, one CIDR each.
    pub fn new(cidrs: &[IpNet]) -> Self {
        let mut by_family: Vec<(IpFamily, IpNet)> = Vec::new();
        for cidr in cidrs {
            let family = IpFamily::of(&cidr.addr());
            if !by_family.iter().any(|(f, _)| *f == family) {
                by_family.push((family, *cidr));
            }
        }
        ServiceCidrs(by_family)
    }

    /// Each family with its CIDR, primary first.
    pub fn iter(&self) -> impl Iterator<Item = &(IpFamily, IpNet)> {
        self.0.iter()
    }

    /// The CIDR of `family`, if the cluster has it.
    pub fn cidr(&self, family: IpFamily) -> Option<&IpNet> {
        self.0.iter().find(|(f, _)| *f == family).map(|(_, cidr)| cidr)
    }

    /// The family Services get by default. IPv4 when no CIDR is configured, as Kubernetes
    /// defaults to.
    pub fn primary(&self) -> IpFamily {
        self.0.first().map_or(IpFamily::Ipv4, |(family, _)| *family)
    }

    fn has(&self, family: IpFamily) -> bool {
        self.cidr(family).is_some()
    }

    fn is_dual_stack(&self) -> bool {
        self.0.len() == 2
    }
}

/// A Service's families and policy, as the API server would have stored them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFamilies {
    /// The policy, given or defaulted.
    pub policy: IpFamilyPolicy,
    /// The families, primary first.
    pub families: Vec<IpFamily>,
}

/// Why the API server would reject a Service's families, and at which field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyProblem {
    /// The field path, e.g. `spec.ipFamilies[0]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// One address the manifest asks for and the field it is written in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedIp {
    /// The address.
    pub ip: IpAddr,
    /// `spec.clusterIPs[i]`, or `spec.clusterIP` when only that is given.
    pub field: String,
}

/// The ClusterIPs a Service's manifest asks for, in order: `spec.clusterIPs`, or else
/// `spec.clusterIP` (the API server fills either from the other). `None` and "" ask for none.
pub fn requested_ips(spec: &ServiceSpec) -> Vec<RequestedIp> {
    match spec.cluster_ips.as_deref().filter(|ips| !ips.is_empty()) {
        Some(ips) => ips
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                Some(RequestedIp { ip: s.parse().ok()?, field: format!("spec.clusterIPs[{i}]") })
            })
            .collect(),
        None => spec
            .cluster_ip
            .as_deref()
            .and_then(|s| s.parse().ok())
            .map(|ip| RequestedIp { ip, field: "spec.clusterIP".into() })
            .into_iter()
            .collect(),
    }
}

/// A Service's families and policy as an API server stored them (`spec.ipFamilies` filled
/// in), taken as they are; `None` when it gives no family.
pub fn as_stored(spec: &ServiceSpec) -> Option<ServiceFamilies> {
    let families: Vec<IpFamily> =
        spec.ip_families.iter().flatten().filter_map(|f| IpFamily::parse(f)).collect();
    if families.is_empty() {
        return None;
    }
    let policy = spec.ip_family_policy.as_deref().and_then(IpFamilyPolicy::parse).unwrap_or_default();
    Some(ServiceFamilies { policy, families })
}

/// The families and policy of a Service that is not an ExternalName, as the API server's
/// allocator defaults and checks them against the cluster's families; the addresses asked
/// for must lie in their family's CIDR.
pub fn resolve(spec: &ServiceSpec, cluster: &ServiceCidrs) -> Result<ServiceFamilies, FamilyProblem> {
    let requested = requested_ips(spec);
    let mut families: Vec<IpFamily> =
        spec.ip_families.iter().flatten().filter_map(|f| IpFamily::parse(f)).collect();
    let given_families = families.len();
    // Two addresses or two families without a policy can only mean both families.
    let policy = spec
        .ip_family_policy
        .as_deref()
        .and_then(IpFamilyPolicy::parse)
        .or((requested.len() == 2 || families.len() == 2).then_some(IpFamilyPolicy::RequireDualStack));
    // Addresses past the families given name the families that follow.
    for wanted in requested.iter().skip(families.len()) {
        let family = IpFamily::of(&wanted.ip);
        if !cluster.has(family) {
            return Err(not_configured(&wanted.field, family));
        }
        families.push(family);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if headless && spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        return Ok(selectorless_headless(policy, families, cluster));
    }
    let policy = policy.unwrap_or_default();
    if policy == IpFamilyPolicy::RequireDualStack && !cluster.is_dual_stack() {
        return Err(FamilyProblem {
            field: "spec.ipFamilyPolicy".into(),
            message: "RequireDualStack needs a dual-stack cluster (a --service-cidr per family)".into(),
        });
    }
    if let Some((i, family)) =
        families.iter().enumerate().take(given_families).find(|(_, f)| !cluster.has(**f))
    {
        return Err(not_configured(&format!("spec.ipFamilies[{i}]"), *family));
    }
    if families.is_empty() {
        families.push(cluster.primary());
    }
    if policy != IpFamilyPolicy::SingleStack && families.len() == 1 && cluster.is_dual_stack() {
        families.push(families[0].other());
    }
    match requested.iter().find_map(|wanted| outside_its_cidr(wanted, cluster)) {
        Some(problem) => Err(problem),
        None => Ok(ServiceFamilies { policy, families }),
    }
}

/// Why an address asked for cannot be had from its family's CIDR, if it cannot.
fn outside_its_cidr(wanted: &RequestedIp, cluster: &ServiceCidrs) -> Option<FamilyProblem> {
    let family = IpFamily::of(&wanted.ip);
    match cluster.cidr(family) {
        None => Some(not_configured(&wanted.field, family)),
        Some(cidr) if !cidr.contains(&wanted.ip) => Some(FamilyProblem {
            field: wanted.field.clone(),
            message: format!("{} is not in the service CIDR {cidr}", wanted.ip),
        }),
        Some(_) => None,
    }
}

/// A headless Service without a selector allocates nothing and its endpoints are whatever
/// slices are written for it, so the API server checks nothing against the cluster: it asks
/// for both families unless told otherwise.
fn selectorless_headless(
    policy: Option<IpFamilyPolicy>,
    mut families: Vec<IpFamily>,
    cluster: &ServiceCidrs,
) -> ServiceFamilies {
    let policy = policy.unwrap_or(IpFamilyPolicy::RequireDualStack);
    if families.is_empty() {
        families.push(cluster.primary());
    }
    if policy != IpFamilyPolicy::SingleStack && families.len() == 1 {
        families.push(families[0].other());
    }
    ServiceFamilies { policy, families }
}

fn not_configured(field: &str, family: IpFamily) -> FamilyProblem {
    FamilyProblem {
        field: field.to_owned(),
        message: format!("{family} is not configured on this cluster: add an {family} --service-cidr"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ServiceSpec {
        serde_json::from_str(yaml).unwrap_or_default()
    }

    fn cidrs(list: &[&str]) -> ServiceCidrs {
        ServiceCidrs::new(&list.iter().filter_map(|s| s.parse().ok()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_follow_the_policy_and_the_cluster() {
        use IpFamily::{Ipv4, Ipv6};
        let single = cidrs(&["10.96.0.0/16"]);
        let dual = cidrs(&["10.96.0.0/16", "fd00::/108"]);
        let v6_first = cidrs(&["fd00::/108", "10.96.0.0/16"]);
        let families = |s: &str, c: &ServiceCidrs| resolve(&spec(s), c).map(|r| r.families);
        assert_eq!(families("{}", &dual), Ok(vec![Ipv4]));
        assert_eq!(families("{}", &v6_first), Ok(vec![Ipv6]));
        assert_eq!(families(r#"{"ipFamilyPolicy":"PreferDualStack"}"#, &single), Ok(vec![Ipv4]));
        assert_eq!(families(r#"{"ipFamilyPolicy":"PreferDualStack"}"#, &v6_first), Ok(vec![Ipv6, Ipv4]));
        assert_eq!(families(r#"{"clusterIPs":["fd00::1","10.96.0.1"]}"#, &dual), Ok(vec![Ipv6, Ipv4]));
        assert!(families(r#"{"ipFamilyPolicy":"RequireDualStack"}"#, &single).is_err());
        // No CIDR at all: IPv4, nothing to check against.
        assert_eq!(families("{}", &cidrs(&[])), Ok(vec![Ipv4]));
        // One CIDR per family: a second IPv4 CIDR does not make a dual-stack cluster.
        assert_eq!(cidrs(&["10.96.0.0/16", "10.97.0.0/16"]).iter().count(), 1);
    }
}

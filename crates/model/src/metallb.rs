//! MetalLB's address configuration (`metallb.io/v1beta1` `IPAddressPool` and
//! `L2Advertisement`), read as MetalLB reads it, so that a bare-metal cluster's existing files
//! configure Portico's LoadBalancer addresses unchanged.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API group and version of both kinds.
pub const API_VERSION: &str = "metallb.io/v1beta1";

/// `IPAddressPool`: addresses a LoadBalancer Service may be given.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPool {
    /// `metallb.io/v1beta1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `IPAddressPool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name, namespace (MetalLB's own, usually `metallb-system`), labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the pool holds and whom it serves.
    #[serde(default)]
    pub spec: IpAddressPoolSpec,
    /// What MetalLB's controller reported (assigned and available counts); read and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IpAddressPoolStatus>,
}

/// `IPAddressPool.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    /// CIDRs (`198.18.1.0/24`) and ranges (`198.18.1.10-198.18.1.20`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Whether addresses are given to Services that ask for none in particular (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Whether the `.0` and `.255` addresses of IPv4 CIDRs are left out (default false).
    #[serde(default, rename = "avoidBuggyIPs", skip_serializing_if = "Option::is_none")]
    pub avoid_buggy_ips: Option<bool>,
    /// Which Services it serves first, or only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// `IPAddressPool.spec.serviceAllocation`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Pools are tried by priority, lowest number first; pools without come last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Only Services of these namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only Services of namespaces with these labels.
    #[serde(default)]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Only Services with these labels.
    #[serde(default)]
    pub service_selectors: Vec<LabelSelector>,
}

/// `IPAddressPool.status`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct IpAddressPoolStatus {
    #[serde(default, rename = "assignedIPv4", skip_serializing_if = "Option::is_none")]
    pub assigned_ipv4: Option<i64>,
    #[serde(default, rename = "assignedIPv6", skip_serializing_if = "Option::is_none")]
    pub assigned_ipv6: Option<i64>,
    #[serde(default, rename = "availableIPv4", skip_serializing_if = "Option::is_none")]
    pub available_ipv4: Option<i64>,
    #[serde(default, rename = "availableIPv6", skip_serializing_if = "Option::is_none")]
    pub available_ipv6: Option<i64>,
}

/// `L2Advertisement`: which pools are announced by ARP and NDP, from which nodes and
/// interfaces.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L2Advertisement {
    /// `metallb.io/v1beta1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `L2Advertisement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name, namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What is announced, where.
    #[serde(default)]
    pub spec: L2AdvertisementSpec,
}

/// `L2Advertisement.spec`. Empty lists mean every pool, every node, every interface.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools by name.
    #[serde(default, rename = "ipAddressPools")]
    pub ip_address_pools: Vec<String>,
    /// Pools by label.
    #[serde(default, rename = "ipAddressPoolSelectors")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce.
    #[serde(default)]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces announced on.
    #[serde(default)]
    pub interfaces: Vec<String>,
}

/// One entry of `spec.addresses`: a CIDR or an inclusive range of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    /// The first address.
    pub first: IpAddr,
    /// The last address, of the same family.
    pub last: IpAddr,
}

impl AddressRange {
    /// Reads `198.18.1.0/24`, `198.18.1.10-198.18.1.20` (spaces allowed around the dash) or a
    /// single address.
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let text = text.trim();
        if let Some((first, last)) = text.split_once('-') {
            let parse =
                |s: &str| s.trim().parse::<IpAddr>().map_err(|_| format!("{:?} is not an address", s.trim()));
            let (first, last) = (parse(first)?, parse(last)?);
            if first.is_ipv4() != last.is_ipv4() {
                return Err(format!("{text}: a range is of one family"));
            }
            if first > last {
                return Err(format!("{text}: the first address comes after the last"));
            }
            return Ok(AddressRange { first, last });
        }
        if let Ok(net) = text.parse::<IpNet>() {
            if net.network() != net.addr() {
                return Err(format!("{text} has host bits set: write {}", net.trunc()));
            }
            return Ok(AddressRange { first: net.network(), last: net.broadcast() });
        }
        match text.parse::<IpAddr>() {
            Ok(address) => Ok(AddressRange { first: address, last: address }),
            Err(_) => Err(format!("{text:?} is neither a CIDR nor a range (first-last)")),
        }
    }

    /// Whether `address` is in it.
    pub fn contains(&self, address: &IpAddr) -> bool {
        self.first <= *address && *address <= self.last && self.first.is_ipv4() == address.is_ipv4()
    }

    /// Whether it shares an address with `other`.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.first.is_ipv4() == other.first.is_ipv4() && self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_read_as_metallb_reads_them() {
        let cidr = AddressRange::parse("198.18.1.0/24").unwrap();
        assert_eq!((cidr.first, cidr.last), (ip("198.18.1.0"), ip("198.18.1.255")));
        let range = AddressRange::parse("198.18.1.10 - 198.18.1.20").unwrap();
        assert_eq!((range.first, range.last), (ip("198.18.1.10"), ip("198.18.1.20")));
        let v6 = AddressRange::parse("2001:db8:1b::/120").unwrap();
        assert_eq!(v6.last, ip("2001:db8:1b::ff"));
        assert_eq!(AddressRange::parse("198.18.1.7").unwrap().to_string(), "198.18.1.7");
        assert!(cidr.overlaps(&range) && !range.overlaps(&v6));
        assert!(range.contains(&ip("198.18.1.15")) && !range.contains(&ip("198.18.1.21")));
        for bad in ["198.18.1.1/24", "198.18.1.20-198.18.1.10", "198.18.1.1-2001:db8::1", "pool", "1.2.3.4-x"]
        {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Subject alternative names: the node's settings turned into the concrete
//! names and addresses that the symbolic rules of the declaration stand for.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::spec::SanRule;

/// Names that make one kubeconfig work from the desktop host, from the VM and
/// from containers.
const DESKTOP_NAMES: [&str; 2] = ["kubernetes.docker.internal", "host.docker.internal"];

/// One subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectAltName {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(name) => f.write_str(name),
            SubjectAltName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A name or address that cannot go into a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is neither an IP address nor a DNS name (RFC 1123: lowercase letters, digits, '-', '.'; '*.' allowed in front)"
)]
pub struct InvalidSan {
    pub value: String,
}

impl FromStr for SubjectAltName {
    type Err = InvalidSan;

    /// Like kubeadm's `--apiserver-cert-extra-sans`: an IP when it parses as
    /// one, else a DNS name, which must be valid (wildcards allowed).
    fn from_str(value: &str) -> Result<Self, InvalidSan> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(SubjectAltName::Ip(ip));
        }
        let name = value.strip_prefix("*.").unwrap_or(value);
        if is_dns_subdomain(name) {
            Ok(SubjectAltName::Dns(value.to_string()))
        } else {
            Err(InvalidSan {
                value: value.to_string(),
            })
        }
    }
}

/// RFC 1123 subdomain, as Kubernetes validates node and DNS names.
pub fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// The service network, e.g. `10.96.0.0/12`: its first address is the
/// in-cluster IP of the `kubernetes` Service, which the API server's
/// certificate must cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a service CIDR with room for a first address (like 10.96.0.0/12 or fd00:10:96::/112)"
)]
pub struct InvalidServiceCidr {
    pub value: String,
}

impl FromStr for ServiceCidr {
    type Err = InvalidServiceCidr;

    /// A dual-stack list (`10.96.0.0/12,fd00::/108`) is accepted: as in
    /// kubeadm, the first family's network gives the Service IP.
    fn from_str(value: &str) -> Result<Self, InvalidServiceCidr> {
        let invalid = || InvalidServiceCidr {
            value: value.to_string(),
        };
        let first = value.split(',').next().unwrap_or_default().trim();
        let (address, prefix) = first.split_once('/').ok_or_else(invalid)?;
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let prefix_len: u8 = prefix.parse().map_err(|_| invalid())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        // A /32 (or /128) has no address after the network one.
        if prefix_len >= bits {
            return Err(invalid());
        }
        let network = match address {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_u32(prefix_len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_u128(prefix_len))),
        };
        Ok(ServiceCidr {
            network,
            prefix_len,
        })
    }
}

/// The cluster's service network, typed once by the settings (which refuse
/// one longer than a /30, with no room for a first address).
impl From<ipnet::Ipv4Net> for ServiceCidr {
    fn from(net: ipnet::Ipv4Net) -> Self {
        ServiceCidr {
            network: IpAddr::V4(net.network()),
            prefix_len: net.prefix_len(),
        }
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl ServiceCidr {
    /// kubeadm's default service network, 10.96.0.0/12.
    pub fn kubeadm_default() -> Self {
        ServiceCidr {
            network: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 0)),
            prefix_len: 12,
        }
    }

    /// The network address plus one: 10.96.0.1 for 10.96.0.0/12.
    pub fn first_ip(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) + 1)),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) + 1)),
        }
    }
}

fn mask_u32(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

fn mask_u128(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// What the SAN rules are resolved against.
#[derive(Debug, Clone)]
pub struct SanInputs<'a> {
    pub common_name: &'a str,
    pub node_name: &'a str,
    pub advertise_address: IpAddr,
    pub service_cidr: ServiceCidr,
    pub dns_domain: &'a str,
    pub extra: &'a [SubjectAltName],
}

/// The names the rules stand for, in rule order, each once.
pub fn resolve(rules: &[SanRule], inputs: &SanInputs<'_>) -> Vec<SubjectAltName> {
    let dns = |name: &str| SubjectAltName::Dns(name.to_string());
    let mut names = Vec::new();
    for rule in rules {
        match rule {
            SanRule::CommonName => names.push(dns(inputs.common_name)),
            SanRule::NodeName => names.push(dns(inputs.node_name)),
            SanRule::AdvertiseAddress => names.push(SubjectAltName::Ip(inputs.advertise_address)),
            SanRule::ServiceIp => names.push(SubjectAltName::Ip(inputs.service_cidr.first_ip())),
            SanRule::Localhost => names.push(dns("localhost")),
            SanRule::LoopbackV4 => names.push(SubjectAltName::Ip(Ipv4Addr::LOCALHOST.into())),
            SanRule::LoopbackV6 => names.push(SubjectAltName::Ip(Ipv6Addr::LOCALHOST.into())),
            SanRule::KubernetesNames => {
                names.extend(
                    ["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(dns),
                );
                names.push(SubjectAltName::Dns(format!(
                    "kubernetes.default.svc.{}",
                    inputs.dns_domain
                )));
            }
            SanRule::DesktopNames => names.extend(DESKTOP_NAMES.map(dns)),
            SanRule::Extra => names.extend(inputs.extra.iter().cloned()),
        }
    }
    dedup_in_order(names)
}

fn dedup_in_order(names: Vec<SubjectAltName>) -> Vec<SubjectAltName> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .filter(|name| seen.insert(name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> SubjectAltName {
        SubjectAltName::Ip(s.parse().unwrap())
    }

    fn dns(s: &str) -> SubjectAltName {
        SubjectAltName::Dns(s.to_string())
    }

    #[test]
    fn service_ip_is_first_address_of_the_network() {
        let first = |cidr: &str| cidr.parse::<ServiceCidr>().unwrap().first_ip().to_string();
        assert_eq!(first("10.96.0.0/12"), "10.96.0.1");
        // A host address inside the network still gives the network's first IP.
        assert_eq!(first("10.100.7.9/12"), "10.96.0.1");
        assert_eq!(first("192.168.0.0/31"), "192.168.0.1");
        assert_eq!(first("fd00:10:96::/112"), "fd00:10:96::1");
        assert_eq!(first("fd00:10:96::abcd/108"), "fd00:10:96::1");
        assert_eq!(first("0.0.0.0/0"), "0.0.0.1");
        assert_eq!(first("10.96.0.0/12,fd00::/108"), "10.96.0.1");
        assert_eq!(first("fd00::/108, 10.96.0.0/12"), "fd00::1");
    }

    #[test]
    fn a_typed_network_gives_the_same_service_ip() {
        for cidr in ["10.96.0.0/12", "10.100.7.9/12", "192.168.4.0/30"] {
            let typed = ServiceCidr::from(cidr.parse::<ipnet::Ipv4Net>().unwrap());
            assert_eq!(typed, cidr.parse::<ServiceCidr>().unwrap(), "{cidr}");
        }
        assert_eq!(
            ServiceCidr::from("10.96.0.0/12".parse::<ipnet::Ipv4Net>().unwrap()),
            ServiceCidr::kubeadm_default()
        );
    }

    #[test]
    fn bad_service_cidrs_are_rejected() {
        for bad in [
            "10.96.0.0",
            "10.96.0.0/33",
            "10.96.0.1/32",
            "::/128",
            "nope/12",
            "10.96.0.0/x",
            "",
        ] {
            assert!(bad.parse::<ServiceCidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn extra_sans_are_classified() {
        assert_eq!(
            "192.168.65.3".parse::<SubjectAltName>().unwrap(),
            ip("192.168.65.3")
        );
        assert_eq!("fe80::1".parse::<SubjectAltName>().unwrap(), ip("fe80::1"));
        assert_eq!(
            "my.host.example".parse::<SubjectAltName>().unwrap(),
            dns("my.host.example")
        );
        assert_eq!(
            "*.apps.example".parse::<SubjectAltName>().unwrap(),
            dns("*.apps.example")
        );
        for bad in [
            "Upper.example",
            "under_score",
            "-lead",
            "a..b",
            "",
            "*.",
            "has space",
            "x.*.y",
        ] {
            assert!(bad.parse::<SubjectAltName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules_resolve_in_order_without_duplicates() {
        let extra = vec![
            dns("desktop"),
            ip("10.0.0.5"),
            dns("kubernetes"),
            dns("extra.example"),
        ];
        let inputs = SanInputs {
            common_name: "kube-apiserver",
            node_name: "desktop",
            advertise_address: "192.168.65.3".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            dns_domain: "cluster.local",
            extra: &extra,
        };
        let rules = [
            SanRule::NodeName,
            SanRule::KubernetesNames,
            SanRule::ServiceIp,
            SanRule::AdvertiseAddress,
            SanRule::LoopbackV4,
            SanRule::Localhost,
            SanRule::DesktopNames,
            SanRule::Extra,
        ];
        assert_eq!(
            resolve(&rules, &inputs),
            vec![
                dns("desktop"),
                dns("kubernetes"),
                dns("kubernetes.default"),
                dns("kubernetes.default.svc"),
                dns("kubernetes.default.svc.cluster.local"),
                ip("10.96.0.1"),
                ip("192.168.65.3"),
                ip("127.0.0.1"),
                dns("localhost"),
                dns("kubernetes.docker.internal"),
                dns("host.docker.internal"),
                ip("10.0.0.5"),
                dns("extra.example"),
            ]
        );
        let etcd = [
            SanRule::NodeName,
            SanRule::Localhost,
            SanRule::AdvertiseAddress,
            SanRule::LoopbackV4,
            SanRule::LoopbackV6,
        ];
        assert_eq!(
            resolve(&etcd, &inputs),
            vec![
                dns("desktop"),
                dns("localhost"),
                ip("192.168.65.3"),
                ip("127.0.0.1"),
                ip("::1")
            ]
        );
        assert_eq!(
            resolve(&[SanRule::CommonName], &inputs),
            vec![dns("kube-apiserver")]
        );
    }
}

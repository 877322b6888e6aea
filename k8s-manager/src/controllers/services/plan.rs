//! What the localhost listeners should be, decided from the Services alone:
//! no socket, no API call, so every rule here is a unit test.
//!
//! Each port a Service wants on localhost is a claim on a [`PortKey`]
//! (protocol and port number on the one address): the `port` of each port of
//! a LoadBalancer Service of ours, and the `nodePort` of each port of a
//! NodePort or LoadBalancer Service. Two Services can claim the same key;
//! the older one (creation time, then namespace/name) gets it, every time
//! and whatever order the watch delivered them in, so a restart of the
//! manager serves the same Service as before.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};

/// The protocols served. SCTP is not: a Warning Event says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One listener: a protocol and a port on the load-balancer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// A Service by namespace and name, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl ServiceId {
    pub fn of(service: &Service) -> ServiceId {
        ServiceId {
            namespace: service.metadata.namespace.clone().unwrap_or_default(),
            name: service.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// A Service's wish for one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: PortKey,
    pub service: ServiceId,
    /// The Service's uid: a Service deleted and made again under the same
    /// name is another owner (its listener is made again).
    pub uid: String,
    /// Where the listener forwards: the Service's cluster IP and port,
    /// which kube-proxy's OUTPUT rules carry to a ready endpoint (its
    /// session affinity and traffic policies included).
    pub target: SocketAddr,
}

/// A port of a Service that is not served, and why (said once in an Event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub service: ServiceId,
    pub uid: String,
    pub what: String,
}

/// What the Services want.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The owner of each key.
    pub listeners: BTreeMap<PortKey, Claim>,
    /// The claims that lost their key to an older Service, with that Service.
    pub conflicts: Vec<(Claim, ServiceId)>,
    pub unsupported: Vec<Unsupported>,
    /// The LoadBalancer Services of ours, each with the keys of its
    /// `port`s: its ingress is written once all of them are its own.
    pub balanced: BTreeMap<ServiceId, Balanced>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Balanced {
    pub uid: String,
    pub keys: Vec<PortKey>,
    /// What its status says now.
    pub ingress: Vec<LoadBalancerIngress>,
}

/// Whether a LoadBalancer Service is ours to serve: one that names another
/// implementation (`spec.loadBalancerClass`) is left to it.
fn balanced_here(service: &Service) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
}

/// The listeners the `services` want, each key to its oldest claimant.
pub fn plan(services: &[&Service]) -> Plan {
    let mut ordered: Vec<&Service> = services
        .iter()
        .copied()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    ordered.sort_by(|a, b| {
        let created = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| ServiceId::of(a).cmp(&ServiceId::of(b)))
    });
    let mut plan = Plan::default();
    for service in ordered {
        let Some(spec) = &service.spec else { continue };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind != "LoadBalancer" && kind != "NodePort" {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let id = ServiceId::of(service);
        let uid = service.metadata.uid.clone().unwrap_or_default();
        let balanced = balanced_here(service);
        let mut own_keys = Vec::new();
        for port in spec.ports.iter().flatten() {
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                other => {
                    plan.unsupported.push(Unsupported {
                        service: id.clone(),
                        uid: uid.clone(),
                        what: format!(
                            "port {}/{other} is not served on localhost: only TCP and UDP are",
                            port.port
                        ),
                    });
                    continue;
                }
            };
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            let target = SocketAddr::new(cluster_ip, service_port);
            let mut wanted = Vec::new();
            if balanced {
                wanted.push(service_port);
            }
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                wanted.push(node_port);
            }
            for (i, number) in wanted.into_iter().enumerate() {
                let key = PortKey {
                    protocol,
                    port: number,
                };
                if balanced && i == 0 {
                    own_keys.push(key);
                }
                let claim = Claim {
                    key,
                    service: id.clone(),
                    uid: uid.clone(),
                    target,
                };
                match plan.listeners.get(&key) {
                    None => {
                        plan.listeners.insert(key, claim);
                    }
                    // A Service whose port is also its node port: one listener.
                    Some(owner) if owner.uid == uid => {}
                    Some(owner) => {
                        let winner = owner.service.clone();
                        plan.conflicts.push((claim, winner));
                    }
                }
            }
        }
        if balanced {
            let ingress = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default();
            plan.balanced.insert(
                id,
                Balanced {
                    uid,
                    keys: own_keys,
                    ingress,
                },
            );
        }
    }
    plan
}

/// What `status.loadBalancer.ingress` says for a Service served on
/// `address`.
///
/// On loopback (the default) or every address: `hostname: localhost`, as
/// Docker Desktop writes it, so that scripts and tools written for it read
/// the same field; and kube-proxy ignores a hostname, whereas an `ip` of
/// 127.0.0.1 it would capture inside the node (its rules would send the
/// node's own connections to 127.0.0.1:<port> to the pods, around our
/// listener), unless `ipMode: Proxy` is set. On any other address: that
/// `ip`, with `ipMode: Proxy` for that reason.
pub fn ingress_for(address: IpAddr) -> LoadBalancerIngress {
    if address.is_loopback() || address.is_unspecified() {
        LoadBalancerIngress {
            hostname: Some("localhost".into()),
            ..LoadBalancerIngress::default()
        }
    } else {
        LoadBalancerIngress {
            ip: Some(address.to_string()),
            ip_mode: Some("Proxy".into()),
            ..LoadBalancerIngress::default()
        }
    }
}

/// The ingress a LoadBalancer Service should show: the address once every
/// one of its ports listens for it, else none (pending).
pub fn wanted_ingress(
    balanced: &Balanced,
    serving: impl Fn(&PortKey) -> bool,
    address: IpAddr,
) -> Vec<LoadBalancerIngress> {
    let all_up = !balanced.keys.is_empty() && balanced.keys.iter().all(serving);
    if all_up {
        vec![ingress_for(address)]
    } else {
        Vec::new()
    }
}

/// Why a claim is not served now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// An older Service has the key.
    Service(ServiceId),
    /// Something else on the machine holds the port: who, when it can be
    /// told.
    Process(Option<Holder>),
    /// The bind failed otherwise.
    Error(String),
}

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pid {}", self.comm, self.pid)
    }
}

impl Waiting {
    /// The end of "8080/TCP ...": who holds it, or why it failed.
    pub fn said(&self) -> String {
        match self {
            Waiting::Service(id) => format!("held by Service {id}"),
            Waiting::Process(Some(holder)) => format!("held by {holder}"),
            Waiting::Process(None) => "held by another process".into(),
            Waiting::Error(e) => format!("cannot be bound: {e}"),
        }
    }
}

/// The Warning Event's note for a claim that waits.
pub fn waiting_note(key: &PortKey, address: IpAddr, why: &Waiting) -> String {
    format!(
        "port {key} on {address} is {}: this port is not served until it is free (tried again every second)",
        why.said()
    )
}

/// One waiting claim: which Service, which key.
pub type EpisodeId = (String, PortKey);

/// The episodes that begin now: claims waiting now that were not waiting at
/// the last pass. One Event per episode, not one per retry.
pub fn new_episodes<'a, V>(
    before: &BTreeSet<EpisodeId>,
    now: &'a BTreeMap<EpisodeId, V>,
) -> Vec<(&'a EpisodeId, &'a V)> {
    now.iter().filter(|(id, _)| !before.contains(id)).collect()
}

/// The unit's line in `status`.
pub fn detail(serving: usize, waiting: &[(PortKey, String)]) -> String {
    let ports = |n: usize| if n == 1 { "port" } else { "ports" };
    let mut line = format!("serving {serving} {}", ports(serving));
    if !waiting.is_empty() {
        let shown: Vec<String> = waiting
            .iter()
            .take(3)
            .map(|(key, why)| format!("{} {why}", key.port))
            .collect();
        let more = if waiting.len() > 3 { ", ..." } else { "" };
        line.push_str(&format!(
            "; {} waiting ({}{more})",
            waiting.len(),
            shown.join(", ")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn service(
        name: &str,
        kind: &str,
        created: i64,
        ports: &[(&str, i32, Option<i32>)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
                )),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(kind.into()),
                cluster_ip: Some("10.96.0.10".into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(protocol, port, node_port)| ServicePort {
                            protocol: Some(protocol.to_string()),
                            port: *port,
                            node_port: *node_port,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn tcp(port: u16) -> PortKey {
        PortKey {
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn each_port_and_node_port_of_a_load_balancer_is_a_listener_to_its_cluster_ip() {
        let lb = service(
            "web",
            "LoadBalancer",
            1,
            &[("TCP", 80, Some(30080)), ("UDP", 53, Some(30053))],
        );
        let plan = plan(&[&lb]);
        let keys: Vec<String> = plan.listeners.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["80/TCP", "30080/TCP", "53/UDP", "30053/UDP"]);
        assert_eq!(
            plan.listeners[&tcp(30080)].target,
            "10.96.0.10:80".parse().unwrap()
        );
        assert_eq!(
            plan.balanced[&ServiceId::of(&lb)].keys,
            [
                tcp(80),
                PortKey {
                    protocol: Protocol::Udp,
                    port: 53
                }
            ]
        );
        assert!(plan.conflicts.is_empty());
    }

    #[test]
    fn node_ports_only_for_a_node_port_service_and_nothing_for_cluster_ip() {
        let np = service("np", "NodePort", 1, &[("TCP", 80, Some(30081))]);
        let cip = service("cip", "ClusterIP", 1, &[("TCP", 81, None)]);
        let plan = plan(&[&np, &cip]);
        assert_eq!(
            plan.listeners.keys().copied().collect::<Vec<_>>(),
            [tcp(30081)]
        );
        assert!(plan.balanced.is_empty());
    }

    #[test]
    fn another_load_balancer_class_keeps_only_its_node_ports() {
        let mut other = service("other", "LoadBalancer", 1, &[("TCP", 80, Some(30082))]);
        other.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        let plan = plan(&[&other]);
        assert_eq!(
            plan.listeners.keys().copied().collect::<Vec<_>>(),
            [tcp(30082)]
        );
        assert!(plan.balanced.is_empty());
    }

    #[test]
    fn the_older_service_gets_a_port_whatever_the_order_seen() {
        let old = service("b-old", "LoadBalancer", 10, &[("TCP", 8080, None)]);
        let new = service("a-new", "LoadBalancer", 20, &[("TCP", 8080, None)]);
        for services in [[&old, &new], [&new, &old]] {
            let plan = plan(&services);
            assert_eq!(plan.listeners[&tcp(8080)].service.name, "b-old");
            assert_eq!(plan.conflicts.len(), 1);
            assert_eq!(plan.conflicts[0].0.service.name, "a-new");
            assert_eq!(plan.conflicts[0].1.name, "b-old");
        }
        // Same creation time: by name.
        let twin = service("a-twin", "LoadBalancer", 10, &[("TCP", 8080, None)]);
        assert_eq!(
            plan(&[&old, &twin]).listeners[&tcp(8080)].service.name,
            "a-twin"
        );
    }

    #[test]
    fn same_port_number_on_two_protocols_is_two_listeners() {
        let dns = service(
            "dns",
            "LoadBalancer",
            1,
            &[("TCP", 53, None), ("UDP", 53, None)],
        );
        let plan = plan(&[&dns]);
        assert_eq!(plan.listeners.len(), 2);
        assert!(plan.conflicts.is_empty());
    }

    #[test]
    fn sctp_is_said_not_served_and_others_are_served() {
        let s = service(
            "s",
            "LoadBalancer",
            1,
            &[("SCTP", 9, None), ("TCP", 90, None)],
        );
        let plan = plan(&[&s]);
        assert_eq!(plan.unsupported.len(), 1);
        assert!(
            plan.unsupported[0].what.contains("9/SCTP"),
            "{:?}",
            plan.unsupported
        );
        assert_eq!(
            plan.listeners.keys().copied().collect::<Vec<_>>(),
            [tcp(90)]
        );
    }

    #[test]
    fn a_service_being_deleted_or_without_cluster_ip_wants_nothing() {
        let mut gone = service("gone", "LoadBalancer", 1, &[("TCP", 80, None)]);
        gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
        let mut headless = service("h", "NodePort", 1, &[("TCP", 80, Some(30000))]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert!(plan(&[&gone, &headless]).listeners.is_empty());
    }

    #[test]
    fn ingress_only_when_every_port_is_served_and_localhost_on_loopback() {
        let mut lb = service(
            "lb",
            "LoadBalancer",
            1,
            &[("TCP", 80, None), ("TCP", 81, None)],
        );
        lb.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![ingress_for("127.0.0.1".parse().unwrap())]),
            }),
            ..ServiceStatus::default()
        });
        let plan = plan(&[&lb]);
        let balanced = &plan.balanced[&ServiceId::of(&lb)];
        assert_eq!(balanced.ingress[0].hostname.as_deref(), Some("localhost"));
        let loopback = "127.0.0.1".parse().unwrap();
        assert!(wanted_ingress(balanced, |k| k.port == 80, loopback).is_empty());
        let all = wanted_ingress(balanced, |_| true, loopback);
        assert_eq!(all, [ingress_for(loopback)]);
        let other = wanted_ingress(balanced, |_| true, "192.168.1.5".parse().unwrap());
        assert_eq!(other[0].ip.as_deref(), Some("192.168.1.5"));
        assert_eq!(other[0].ip_mode.as_deref(), Some("Proxy"));
        assert_eq!(other[0].hostname, None);
    }

    #[test]
    fn an_episode_is_said_once() {
        let a = ("uid-a".to_string(), tcp(8080));
        let b = ("uid-b".to_string(), tcp(8081));
        let now: BTreeMap<_, _> = [(a.clone(), 1), (b.clone(), 2)].into();
        let before: BTreeSet<_> = [a.clone()].into();
        let new: Vec<_> = new_episodes(&before, &now)
            .into_iter()
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(new, [b]);
    }

    #[test]
    fn notes_and_detail_name_port_and_holder() {
        let holder = Waiting::Process(Some(Holder {
            pid: 123,
            comm: "nginx".into(),
        }));
        let note = waiting_note(&tcp(8080), "127.0.0.1".parse().unwrap(), &holder);
        assert!(
            note.starts_with("port 8080/TCP on 127.0.0.1 is held by nginx pid 123"),
            "{note}"
        );
        let by_service = Waiting::Service(ServiceId {
            namespace: "ns".into(),
            name: "a".into(),
        });
        assert_eq!(by_service.said(), "held by Service ns/a");
        assert_eq!(detail(0, &[]), "serving 0 ports");
        assert_eq!(
            detail(3, &[(tcp(8080), holder.said())]),
            "serving 3 ports; 1 waiting (8080 held by nginx pid 123)"
        );
    }
}

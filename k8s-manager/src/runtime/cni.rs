//! The manager's CNI network: a Linux bridge of our own name, host-local IP
//! addresses from the node's pod subnet, masquerading for traffic leaving it,
//! and portmap for `hostPort`s.
//!
//! The loopback interface of each pod is not in this list: containerd's CRI
//! (1.6 and later, Linux) loads its own loopback network before the
//! configured one (`cni.WithLoNetwork` in its `cniLoadOptions`) and runs the
//! `loopback` plugin from its CNI `bin_dir` for every sandbox.
//!
//! containerd loads the first configuration file of its CNI `conf_dir` in
//! name order, and reloads when the folder changes; the file is written whole
//! (rename into place) so that it never reads half a file.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::json;

use super::RuntimeError;
use crate::fsutil;

/// The CNI network name: IPAM state under `/var/lib/cni/networks/<name>`, and
/// the comment (`name: "k8s-manager" id: ...`) on the iptables rules the
/// plugins add, by which reset recognises them.
pub const NETWORK_NAME: &str = "k8s-manager";
/// Our bridge; not `cni0` (another CNI user's default) nor `docker0`.
pub const BRIDGE_NAME: &str = "k8smgr0";
/// Where host-local keeps its IP allocations, one folder per network.
pub const DEFAULT_CNI_STATE_DIR: &str = "/var/lib/cni";
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;
/// The CNI spec version of the configuration; the plugins of CNI 1.x and
/// containerd 1.6's libcni both speak it.
const CNI_VERSION: &str = "1.0.0";

/// One CNI network: its name, its bridge, the subnet its pods get addresses
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniNetwork {
    pub name: String,
    pub bridge: String,
    /// The node's pod subnet, e.g. `10.244.0.0/24`.
    pub pod_subnet: IpNet,
}

impl CniNetwork {
    /// The manager's network on `pod_subnet`.
    pub fn new(pod_subnet: impl Into<IpNet>) -> CniNetwork {
        CniNetwork {
            name: NETWORK_NAME.into(),
            bridge: BRIDGE_NAME.into(),
            pod_subnet: pod_subnet.into(),
        }
    }

    /// The configuration file in `conf_dir`. The `10-` prefix sorts it before
    /// files other tools drop there (nerdctl's `nerdctl-bridge.conflist`), as
    /// containerd uses only the first.
    pub fn conf_file(&self, conf_dir: &Path) -> PathBuf {
        conf_dir.join(format!("10-{}.conflist", self.name))
    }

    /// host-local's allocations for this network.
    pub fn ipam_dir(&self, cni_state_dir: &Path) -> PathBuf {
        cni_state_dir.join("networks").join(&self.name)
    }
}

/// The network's configuration list, as JSON text.
pub fn cni_config(network: &CniNetwork) -> Result<String, RuntimeError> {
    validate_name(&network.name)?;
    validate_bridge(&network.bridge)?;
    check_subnet(&network.pod_subnet)?;
    let default_route = match network.pod_subnet {
        IpNet::V4(_) => "0.0.0.0/0",
        IpNet::V6(_) => "::/0",
    };
    let config = json!({
        "cniVersion": CNI_VERSION,
        "name": network.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                // The bridge holds the subnet's gateway address, the pods'
                // default route; ipMasq makes their traffic to the outside
                // leave with the node's address.
                "isGateway": true,
                "ipMasq": true,
                // A pod reaching itself through its Service comes back in on
                // its own port: without hairpin mode the bridge drops it.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": network.pod_subnet.to_string() }]],
                    "routes": [{ "dst": default_route }]
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true }
            },
            // Accepts each pod's forwarded traffic (from it, and the replies
            // to it) in the FORWARD chain: dockerd sets that chain's policy to
            // DROP when it starts with IP forwarding off, and kube-proxy's own
            // FORWARD rules accept only Service traffic it marked, so without
            // these a pod's packets to another pod or a Service are dropped.
            {
                "type": "firewall",
                "backend": "iptables"
            }
        ]
    });
    Ok(serde_json::to_string_pretty(&config).expect("a JSON value serialises") + "\n")
}

/// Writes the network's configuration into `conf_dir` (created if missing)
/// and returns its path. An identical file is left alone, so that containerd
/// does not reload its CNI configuration for nothing.
pub fn write_cni_config(conf_dir: &Path, network: &CniNetwork) -> Result<PathBuf, RuntimeError> {
    let text = cni_config(network)?;
    let path = network.conf_file(conf_dir);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == text) {
        return Ok(path);
    }
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Io { path, source }
    };
    std::fs::create_dir_all(conf_dir).map_err(io_error(conf_dir))?;
    fsutil::write_atomic(&path, text.as_bytes(), 0o644).map_err(io_error(&path))?;
    Ok(path)
}

/// The CNI spec's rule for network names.
fn validate_name(name: &str) -> Result<(), RuntimeError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::BadNetwork(format!(
            "network name {name:?}: letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

fn validate_bridge(bridge: &str) -> Result<(), RuntimeError> {
    let valid = !bridge.is_empty()
        && bridge.len() <= MAX_IFNAME
        && bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::BadNetwork(format!(
            "bridge name {bridge:?}: 1 to {MAX_IFNAME} letters, digits, '_', '.' or '-'"
        )))
    }
}

/// A network address with no host bits set: host-local hands out addresses
/// of exactly that range.
fn check_subnet(subnet: &IpNet) -> Result<(), RuntimeError> {
    let bad = |why: &str| RuntimeError::BadNetwork(format!("pod subnet {subnet}: {why}"));
    // At least 4 addresses: network, gateway, one pod, broadcast.
    if subnet.prefix_len() > subnet.max_prefix_len() - 2 {
        return Err(bad(&format!(
            "prefix /{} leaves no address for a pod",
            subnet.prefix_len()
        )));
    }
    if subnet.addr() != subnet.network() {
        return Err(bad("host bits are set (give the network address)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn net(subnet: &str) -> IpNet {
        subnet.parse().unwrap()
    }

    fn parsed(network: &CniNetwork) -> Value {
        serde_json::from_str(&cni_config(network).unwrap()).unwrap()
    }

    #[test]
    fn config_is_bridge_with_host_local_then_portmap_then_firewall() {
        let config = parsed(&CniNetwork::new(net("10.244.0.0/24")));
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["name"], "k8s-manager");
        let plugins = config["plugins"].as_array().unwrap();
        assert_eq!(
            plugins.len(),
            3,
            "loopback is containerd's own: {plugins:?}"
        );

        let bridge = &plugins[0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "k8smgr0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], true);
        assert_eq!(bridge["hairpinMode"], true);
        let ipam = &bridge["ipam"];
        assert_eq!(ipam["type"], "host-local");
        assert_eq!(
            ipam["ranges"],
            serde_json::json!([[{"subnet": "10.244.0.0/24"}]])
        );
        assert_eq!(ipam["routes"], serde_json::json!([{"dst": "0.0.0.0/0"}]));

        let portmap = &plugins[1];
        assert_eq!(portmap["type"], "portmap");
        assert_eq!(portmap["capabilities"]["portMappings"], true);
        assert_eq!(plugins[2]["type"], "firewall");
    }

    #[test]
    fn ipv6_subnet_gets_an_ipv6_default_route() {
        let config = parsed(&CniNetwork::new(net("fd00:10:244::/64")));
        assert_eq!(config["plugins"][0]["ipam"]["routes"][0]["dst"], "::/0");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let cases = [
            (CniNetwork::new(net("10.244.0.1/24")), "host bits"),
            (
                CniNetwork::new(net("10.244.0.0/31")),
                "no address for a pod",
            ),
            (CniNetwork::new(net("fd00::1/64")), "host bits"),
            (
                CniNetwork {
                    bridge: "k8s-manager-bridge".into(),
                    ..CniNetwork::new(net("10.244.0.0/24"))
                },
                "1 to 15",
            ),
            (
                CniNetwork {
                    bridge: "br 0".into(),
                    ..CniNetwork::new(net("10.244.0.0/24"))
                },
                "bridge name",
            ),
            (
                CniNetwork {
                    name: "-net".into(),
                    ..CniNetwork::new(net("10.244.0.0/24"))
                },
                "network name",
            ),
        ];
        for (network, expected) in cases {
            let err = cni_config(&network).unwrap_err().to_string();
            assert!(err.contains(expected), "{network:?}: {err}");
        }
    }

    #[test]
    fn write_creates_the_folder_and_leaves_an_identical_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let conf_dir = dir.path().join("net.d");
        let network = CniNetwork::new(net("10.244.0.0/24"));
        let path = write_cni_config(&conf_dir, &network).unwrap();
        assert_eq!(path, conf_dir.join("10-k8s-manager.conflist"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            cni_config(&network).unwrap()
        );
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();

        std::thread::sleep(std::time::Duration::from_millis(20));
        write_cni_config(&conf_dir, &network).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before,
            "rewritten for nothing"
        );

        let other = CniNetwork::new(net("10.245.0.0/24"));
        write_cni_config(&conf_dir, &other).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("10.245.0.0/24")
        );
        assert_eq!(
            std::fs::read_dir(&conf_dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn paths_derive_from_the_network_name() {
        let network = CniNetwork::new(net("10.244.0.0/24"));
        assert_eq!(
            network.ipam_dir(Path::new("/var/lib/cni")),
            Path::new("/var/lib/cni/networks/k8s-manager")
        );
    }
}

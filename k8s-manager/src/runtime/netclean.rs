//! What `reset` removes from the host network once the cluster is stopped.
//!
//! Order matters, and the caller owns the first steps: stop kubelet (or it
//! recreates pods) and kube-proxy (or it recreates its chains); then
//! [`Cri::remove_all_pods`](super::Cri::remove_all_pods), which runs each
//! pod's CNI DEL and so needs our CNI configuration still in place; then
//! [`Ctr::remove_k8s_namespace_leftovers`](super::Ctr::remove_k8s_namespace_leftovers);
//! and only then [`clean_host_network`]: iptables, bridge, CNI files.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cni::CniNetwork;
use super::iptables::{self, Cleaned, Family};
use super::{RuntimeError, exec};

const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`clean_host_network`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCleanReport {
    /// One entry per family whose tools are installed.
    pub iptables: Vec<Cleaned>,
    pub bridge_deleted: bool,
    pub cni_files: Vec<PathBuf>,
}

/// Removes our iptables chains (and kube-proxy's) for IPv4 and IPv6, our
/// bridge, and our CNI files. Safe to run again: what is gone is skipped.
pub async fn clean_host_network(
    network: &CniNetwork,
    conf_dir: &Path,
    cni_state_dir: &Path,
) -> Result<NetCleanReport, RuntimeError> {
    let mut report = NetCleanReport::default();
    for family in [Family::Ipv4, Family::Ipv6] {
        if let Some(cleaned) = iptables::clean(family, &network.name).await? {
            report.iptables.push(cleaned);
        }
    }
    report.bridge_deleted = delete_bridge(&network.bridge).await?;
    report.cni_files = remove_cni_files(network, conf_dir, cni_state_dir)?;
    Ok(report)
}

/// Deletes the network interface `bridge`; `false` if there was none.
pub async fn delete_bridge(bridge: &str) -> Result<bool, RuntimeError> {
    let finished = exec::run("ip", ["link", "delete", "dev", bridge], None, IP_TIMEOUT).await?;
    if finished.status.success() {
        return Ok(true);
    }
    // iproute2 says `Cannot find device "k8smgr0"` when it is not there.
    if finished.stderr.contains("Cannot find device") {
        return Ok(false);
    }
    Err(RuntimeError::Command {
        output: finished.output_summary(),
        command: finished.command,
    })
}

/// Removes our CNI configuration file, host-local's IP allocations of our
/// network, and libcni's cached results of our network's attachments; returns
/// what was there. Other networks' files are not touched.
pub fn remove_cni_files(
    network: &CniNetwork,
    conf_dir: &Path,
    cni_state_dir: &Path,
) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut removed = Vec::new();
    let conf_file = network.conf_file(conf_dir);
    if remove(&conf_file, |p| std::fs::remove_file(p))? {
        removed.push(conf_file);
    }
    let ipam_dir = network.ipam_dir(cni_state_dir);
    if remove(&ipam_dir, |p| std::fs::remove_dir_all(p))? {
        removed.push(ipam_dir);
    }
    let results_dir = cni_state_dir.join("results");
    let entries = match std::fs::read_dir(&results_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(source) => {
            return Err(RuntimeError::Io {
                path: results_dir,
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| RuntimeError::Io {
            path: results_dir.clone(),
            source,
        })?;
        if is_cached_result_of(&entry.file_name().to_string_lossy(), &network.name) {
            let path = entry.path();
            if remove(&path, |p| std::fs::remove_file(p))? {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// Runs a removal; `false` if the thing was already gone.
fn remove(
    path: &Path,
    removal: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<bool, RuntimeError> {
    match removal(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// libcni caches each attachment's result as `<network>-<container id>-<interface>`
/// (container IDs are 64 hex digits), so the network is recognised exactly:
/// `k8s-manager-2-<id>-eth0` is not `k8s-manager`'s.
fn is_cached_result_of(file_name: &str, network: &str) -> bool {
    let Some(rest) = file_name
        .strip_prefix(network)
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    let (id, interface) = rest.split_at(rest.len().min(64));
    id.len() == 64
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && interface.strip_prefix('-').is_some_and(|i| !i.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9f3c1d2e4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

    #[test]
    fn cached_results_are_recognised_by_exact_network_name() {
        assert!(is_cached_result_of(
            &format!("k8s-manager-{ID}-eth0"),
            "k8s-manager"
        ));
        assert!(!is_cached_result_of(
            &format!("k8s-manager-2-{ID}-eth0"),
            "k8s-manager"
        ));
        assert!(is_cached_result_of(
            &format!("k8s-manager-2-{ID}-eth0"),
            "k8s-manager-2"
        ));
        assert!(!is_cached_result_of(
            &format!("cni-loopback-{ID}-lo"),
            "k8s-manager"
        ));
        assert!(!is_cached_result_of(
            &format!("k8s-manager-{ID}"),
            "k8s-manager"
        ));
        assert!(!is_cached_result_of("k8s-manager-abc-eth0", "k8s-manager"));
    }

    #[test]
    fn cni_files_of_our_network_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (conf_dir, state_dir) = (dir.path().join("net.d"), dir.path().join("cni"));
        let network = CniNetwork::new("10.244.0.0/24".parse::<ipnet::IpNet>().unwrap());
        crate::runtime::cni::write_cni_config(&conf_dir, &network).unwrap();
        std::fs::write(conf_dir.join("nerdctl-bridge.conflist"), "{}").unwrap();
        let ipam = network.ipam_dir(&state_dir);
        std::fs::create_dir_all(&ipam).unwrap();
        std::fs::write(ipam.join("10.244.0.2"), ID).unwrap();
        let other_ipam = state_dir.join("networks/bridge");
        std::fs::create_dir_all(&other_ipam).unwrap();
        let results = state_dir.join("results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join(format!("k8s-manager-{ID}-eth0")), "{}").unwrap();
        std::fs::write(results.join(format!("bridge-{ID}-eth0")), "{}").unwrap();

        let removed = remove_cni_files(&network, &conf_dir, &state_dir).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(!network.conf_file(&conf_dir).exists() && !ipam.exists());
        assert!(conf_dir.join("nerdctl-bridge.conflist").exists() && other_ipam.exists());
        assert!(results.join(format!("bridge-{ID}-eth0")).exists());

        assert!(
            remove_cni_files(&network, &conf_dir, &state_dir)
                .unwrap()
                .is_empty(),
            "second run finds nothing"
        );
    }

    #[test]
    fn missing_state_folder_is_nothing_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let network = CniNetwork::new("10.244.0.0/24".parse::<ipnet::IpNet>().unwrap());
        assert!(
            remove_cni_files(&network, &dir.path().join("a"), &dir.path().join("b"))
                .unwrap()
                .is_empty()
        );
    }
}

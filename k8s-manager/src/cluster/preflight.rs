//! Preflight: everything that can be known to be wrong before anything
//! starts. Each problem is one line saying what and how to fix it; all are
//! reported together.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use crate::components::{
    CONTROLLER_MANAGER_PORT, ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT,
    KUBE_PROXY_HEALTHZ_PORT, KUBE_PROXY_METRICS_PORT, KUBELET_HEALTHZ_PORT, KUBELET_PORT,
    SCHEDULER_PORT,
};
use crate::model::config::ClusterConfig;

/// CAP_SYS_RESOURCE, the capability needed to lower oom_score_adj.
const CAP_SYS_RESOURCE: u32 = 24;

#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Findings {
    fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }
    fn warning(&mut self, text: impl Into<String>) {
        self.warnings.push(text.into());
    }
}

/// The host checks that need no containerd: root, cgroups, kernel, swap,
/// ports (unless `ports_are_ours`: the cluster already runs). Sets the two
/// sysctls a cluster needs when they are off.
pub fn check_host(config: &ClusterConfig, ports_are_ours: bool) -> Findings {
    let mut f = Findings::default();
    if !crate::sys::is_root() {
        f.problem("not running as root: the kubelet and the pod network need root; run k8s-manager with sudo");
    }
    check_cgroups(Path::new("/sys/fs/cgroup"), &mut f);
    if !read_trim("/proc/filesystems").contains("overlay") {
        f.problem("the kernel has no overlay file system: run `modprobe overlay` (containerd's snapshotter needs it)");
    }
    ensure_sysctl(
        "net/ipv4/ip_forward",
        "1",
        "pods cannot reach anything outside their node",
        &mut f,
    );
    if Path::new("/proc/sys/net/bridge").exists() {
        ensure_sysctl(
            "net/bridge/bridge-nf-call-iptables",
            "1",
            "Services will not reach pods on the same bridge",
            &mut f,
        );
    } else {
        f.problem("bridge netfilter is missing: run `modprobe br_netfilter` (Services need it)");
    }
    // A connection the API server had not accepted when a handover stops
    // it goes to its successor instead of being reset (Linux 5.14+; without
    // it a handover may reset the rare connection made at that instant).
    let migrate = Path::new("/proc/sys/net/ipv4/tcp_migrate_req");
    if migrate.exists() && read_trim(&migrate.display().to_string()) != "1" {
        let _ = std::fs::write(migrate, "1");
    }
    if read_trim("/proc/swaps").lines().count() > 1 {
        f.warning("swap is on: kubelet runs with failSwapOn=false and gives pods no swap");
    }
    if let Some(missing) = missing_capability(CAP_SYS_RESOURCE) {
        f.warning(missing);
    }
    let to_check = if ports_are_ours {
        Vec::new()
    } else {
        ports(config)
    };
    for port in to_check {
        if !port_free(port) {
            f.problem(format!(
                "port {port} is in use by another program: free it (`ss -ltnp 'sport = :{port}'` shows which), or choose another API port with --api-port"
            ));
        }
    }
    f
}

/// Every TCP port the cluster listens on.
pub fn ports(config: &ClusterConfig) -> Vec<u16> {
    vec![
        config.api_port,
        ETCD_CLIENT_PORT,
        ETCD_PEER_PORT,
        ETCD_METRICS_PORT,
        KUBELET_PORT,
        KUBELET_HEALTHZ_PORT,
        CONTROLLER_MANAGER_PORT,
        SCHEDULER_PORT,
        KUBE_PROXY_HEALTHZ_PORT,
        KUBE_PROXY_METRICS_PORT,
    ]
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).is_ok()
}

fn check_cgroups(root: &Path, f: &mut Findings) {
    let v2 = root.join("cgroup.controllers");
    if v2.exists() {
        let controllers = std::fs::read_to_string(&v2).unwrap_or_default();
        for needed in ["cpu", "memory", "pids"] {
            if !controllers.split_whitespace().any(|c| c == needed) {
                f.problem(format!(
                    "cgroup v2 controller {needed} is not enabled: enable it in {}",
                    v2.display()
                ));
            }
        }
    } else {
        for needed in ["cpu", "memory", "pids", "cpuset"] {
            if !root.join(needed).exists() {
                f.problem(format!(
                    "cgroup v1 controller {needed} is not mounted under {}",
                    root.display()
                ));
            }
        }
    }
}

/// Sets a sysctl the cluster needs; a problem only when it is off and cannot be set.
fn ensure_sysctl(key: &str, want: &str, why: &str, f: &mut Findings) {
    let path = Path::new("/proc/sys").join(key);
    if read_trim(&path.display().to_string()) == want {
        return;
    }
    if std::fs::write(&path, want).is_err() {
        f.problem(format!(
            "{} is not {want} and cannot be set ({why}): run `sysctl -w {}={want}`",
            key.replace('/', "."),
            key.replace('/', ".")
        ));
    }
}

/// A warning when a capability is missing from the bounding set.
fn missing_capability(cap: u32) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))?
        .trim();
    let bits = u64::from_str_radix(bounding, 16).ok()?;
    (bits >> cap & 1 == 0).then(|| {
        "CAP_SYS_RESOURCE is not available: containerd's CRI needs `restrict_oom_score_adj = true` (vm/prepare-vm.sh sets it), or every pod sandbox fails to start".to_string()
    })
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_layout_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir(dir.path().join(c)).unwrap();
        }
        let mut f = Findings::default();
        check_cgroups(dir.path(), &mut f);
        assert_eq!(f.problems.len(), 1);
        assert!(f.problems[0].contains("cpuset"));
    }

    #[test]
    fn cgroup_v2_controllers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory",
        )
        .unwrap();
        let mut f = Findings::default();
        check_cgroups(dir.path(), &mut f);
        assert_eq!(
            f.problems,
            vec![format!(
                "cgroup v2 controller pids is not enabled: enable it in {}",
                dir.path().join("cgroup.controllers").display()
            )]
        );
    }

    #[test]
    fn a_port_in_use_is_a_problem_naming_it() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut config = ClusterConfig::new("/s".into(), "/b".into());
        config.api_port = port;
        assert!(!port_free(port));
        assert!(ports(&config).contains(&port));
    }
}

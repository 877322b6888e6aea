//! What a cluster is made of: the settings a user chooses and the paths and
//! addresses derived from them. Everything else reads this, nothing else
//! decides a path.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/k8s-manager";
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_CONTEXT: &str = "docker-desktop";
pub const DEFAULT_NODE_NAME: &str = "docker-desktop";
pub const DEFAULT_API_PORT: u16 = 6443;
/// 10.244.0.0/16, flannel's and kind's.
pub const DEFAULT_POD_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16);
/// 10.96.0.0/12, kubeadm's.
pub const DEFAULT_SERVICE_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 12);
/// The tenth address of the default service CIDR, as in kubeadm.
pub const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The node's share of the pod CIDR: the controller-manager's
/// `--node-cidr-mask-size`, and the subnet the CNI network hands out.
pub const NODE_POD_PREFIX: u8 = 24;
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Where LoadBalancer Services (and node ports) listen on the VM: loopback,
/// which WSL 2 forwards to Windows' localhost.
pub const DEFAULT_LOAD_BALANCER_ADDRESS: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The user's choices for a cluster; persisted so that a daemon restart and a
/// later `enable` without flags bring back the same cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub state_dir: PathBuf,
    /// The Kubernetes bundle folder (holds bundle.json).
    pub bundle: PathBuf,
    pub node_name: String,
    pub api_port: u16,
    /// The URL written into kubeconfigs; default `https://127.0.0.1:<api_port>`.
    pub server_url: Option<url::Url>,
    /// The address the API server advertises to the cluster (Service
    /// `kubernetes` endpoints); default: the address of the default route.
    pub advertise_address: Option<IpAddr>,
    pub containerd_socket: PathBuf,
    /// The Docker engine whose images the cluster sees (`docker.socket`).
    #[serde(default = "default_docker_socket")]
    pub docker_socket: PathBuf,
    /// The user's kubeconfig: a path or a KUBECONFIG-style list; None = only the VM user's.
    pub host_kubeconfig: Option<String>,
    /// Also merge into the VM user's `~/.kube/config`.
    pub merge_vm_kubeconfig: bool,
    pub context_name: String,
    pub pod_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    pub cni_conf_dir: PathBuf,
    /// Extra names and addresses for the API server certificate.
    pub extra_sans: Vec<String>,
    /// The proxy of the user's network, for everything the manager starts.
    #[serde(default)]
    pub proxy: super::proxy::ProxySettings,
    /// A certificate that expires within this many days is renewed at the
    /// next enable (`certs.renewWithinDays`).
    #[serde(default = "default_renew_within_days")]
    pub renew_within_days: u32,
    /// Where LoadBalancer Services and node ports listen
    /// (`network.loadBalancerAddress`).
    #[serde(default = "default_load_balancer_address")]
    pub load_balancer_address: IpAddr,
    /// What the user adds to each component's command line and environment
    /// (`components.*`).
    #[serde(default)]
    pub components: super::overrides::ComponentOverrides,
}

fn default_load_balancer_address() -> IpAddr {
    DEFAULT_LOAD_BALANCER_ADDRESS.into()
}

fn default_docker_socket() -> PathBuf {
    DEFAULT_DOCKER_SOCKET.into()
}

fn default_renew_within_days() -> u32 {
    crate::pki::DEFAULT_RENEW_WITHIN.whole_days() as u32
}

/// Saved settings are a few hundred bytes: anything past this is not them.
pub const MAX_SETTINGS_BYTES: u64 = 1 << 20;

impl ClusterConfig {
    /// The names and ranges of this cluster, whose node has `node_address`:
    /// what its proxy settings never send through a proxy.
    pub fn network(&self, node_address: IpAddr) -> super::proxy::ClusterNetwork {
        super::proxy::ClusterNetwork {
            node_name: self.node_name.clone(),
            node_address,
            service_cidr: self.service_cidr.into(),
            pod_cidr: self.pod_cidr.into(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    /// The settings saved by the last enable (`<state>/cluster.json`): none
    /// before the first enable, an error naming the file when it holds
    /// something else than settings.
    pub fn load_saved(paths: &Paths) -> Result<Option<ClusterConfig>, String> {
        let path = &paths.config_file;
        let fix = "move it aside, and enable again with the settings you want (flags or the API)";
        let raw = match crate::fsutil::read_bounded(path, MAX_SETTINGS_BYTES)
            .map_err(std::io::Error::from)
        {
            Ok(raw) => raw,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(format!(
                    "{}: the saved cluster settings cannot be read: {err}; {fix}",
                    path.display()
                ));
            }
        };
        serde_json::from_slice(&raw).map(Some).map_err(|err| {
            format!(
                "{}: the saved cluster settings are damaged: the file {}; {fix}",
                path.display(),
                crate::input::json_problem(&err)
            )
        })
    }

    pub fn new(state_dir: PathBuf, bundle: PathBuf) -> ClusterConfig {
        ClusterConfig {
            state_dir,
            bundle,
            node_name: DEFAULT_NODE_NAME.into(),
            api_port: DEFAULT_API_PORT,
            server_url: None,
            advertise_address: None,
            containerd_socket: DEFAULT_CONTAINERD_SOCKET.into(),
            docker_socket: default_docker_socket(),
            host_kubeconfig: None,
            merge_vm_kubeconfig: true,
            context_name: DEFAULT_CONTEXT.into(),
            pod_cidr: DEFAULT_POD_CIDR,
            service_cidr: DEFAULT_SERVICE_CIDR,
            cluster_dns: DEFAULT_CLUSTER_DNS,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            cni_conf_dir: DEFAULT_CNI_CONF_DIR.into(),
            extra_sans: Vec::new(),
            proxy: Default::default(),
            renew_within_days: default_renew_within_days(),
            load_balancer_address: default_load_balancer_address(),
            components: Default::default(),
        }
    }

    /// The URL written into kubeconfigs, as text.
    pub fn server_url(&self) -> String {
        match &self.server_url {
            Some(url) => url.as_str().to_string(),
            None => format!("https://127.0.0.1:{}", self.api_port),
        }
    }

    /// The host of the server URL, which the API server's certificate must
    /// cover: whatever name or address the exported kubeconfig uses.
    /// How long before expiry a certificate is renewed.
    pub fn renew_within(&self) -> time::Duration {
        time::Duration::days(self.renew_within_days.into())
    }

    pub fn server_host(&self) -> url::Host<String> {
        self.server_url
            .as_ref()
            .and_then(|url| url.host())
            .map_or(url::Host::Ipv4(Ipv4Addr::LOCALHOST), |host| host.to_owned())
    }

    /// The node's pod subnet: see [`node_pod_subnet`].
    pub fn node_pod_subnet(&self) -> Ipv4Net {
        node_pod_subnet(self.pod_cidr)
    }

    pub fn paths(&self) -> Paths {
        Paths::new(&self.state_dir)
    }

    /// Checks what can be wrong before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if !super::names::is_dns_label_chain(&self.node_name) {
            return Err(format!(
                "node name {:?} is not a lowercase DNS name",
                self.node_name
            ));
        }
        if self.api_port == 0 {
            return Err("API port 0 is not a port".into());
        }
        if self.context_name.is_empty() {
            return Err("context name is empty".into());
        }
        self.proxy.validate()
    }
}

/// Every path under the state folder, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub pki: PathBuf,
    pub kubeconfigs: PathBuf,
    pub etcd_data: PathBuf,
    /// Present while etcd's data folder has never served: its first start.
    pub etcd_first_start: PathBuf,
    /// The Kubernetes version whose API server last came up fully ready on
    /// this etcd data: its bootstrap objects (default RBAC roles, system
    /// priority classes) are stored, so a later start of that version need
    /// not wait for their reconcile to call itself ready.
    pub api_bootstrapped: PathBuf,
    /// The digests of the bundle's files checked so far, kept so that a
    /// later enable checks only what changed.
    pub bundle_verified: PathBuf,
    pub logs: PathBuf,
    pub kubelet_root: PathBuf,
    pub component_config: PathBuf,
    pub state_file: PathBuf,
    /// The configuration the cluster was last enabled with: what a stop and
    /// a reset clean up after.
    pub config_file: PathBuf,
    /// The settings document, the source of truth.
    pub settings_file: PathBuf,
    pub socket: PathBuf,
    /// containerd's proxy variables, from the proxy settings (read by vm/prepare-vm.sh).
    pub proxy_env: PathBuf,
    /// The volumes of the `hostpath` StorageClasses, one folder each.
    pub volumes: PathBuf,
    /// The settings page's token (mode 0600), made anew at each daemon start.
    pub ui_token: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Paths {
        Paths {
            state_dir: state_dir.to_path_buf(),
            pki: state_dir.join("pki"),
            kubeconfigs: state_dir.join("kubeconfig"),
            etcd_data: state_dir.join("etcd"),
            etcd_first_start: state_dir.join("etcd.first-start"),
            api_bootstrapped: state_dir.join("apiserver.bootstrapped"),
            bundle_verified: state_dir.join("bundle-verified"),
            logs: state_dir.join("logs"),
            kubelet_root: state_dir.join("kubelet"),
            component_config: state_dir.join("config"),
            state_file: state_dir.join("state.json"),
            config_file: state_dir.join("cluster.json"),
            settings_file: state_dir.join("settings.json"),
            socket: state_dir.join("manager.sock"),
            proxy_env: state_dir.join("proxy.env"),
            volumes: state_dir.join("volumes"),
            ui_token: state_dir.join("ui.token"),
        }
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kubeconfigs.join("admin.conf")
    }

    pub fn log(&self, component: &str) -> PathBuf {
        self.logs.join(format!("{component}.log"))
    }

    /// Narrows what an older manager left open in the state folder (it made
    /// it 0755, its logs and its state 0644), as kubeadm keeps its keys: the
    /// folder to `folder_mode` (0700, or 0710 when a group reaches the
    /// control socket), the folders the manager makes in it to 0700, its
    /// files and the components' logs to 0600. Certificates and keys keep
    /// the modes their store gives them (in a 0700 folder); the volumes'
    /// own folders stay open to the pods' users. Returns the paths changed.
    pub fn restrict_modes(&self, folder_mode: u32) -> std::io::Result<Vec<PathBuf>> {
        use crate::fsutil::restrict_mode;
        let mut changed = Vec::new();
        let mut narrow = |path: &Path, mode: u32| -> std::io::Result<()> {
            if restrict_mode(path, mode)? {
                changed.push(path.to_path_buf());
            }
            Ok(())
        };
        narrow(&self.state_dir, folder_mode)?;
        for dir in [
            &self.pki,
            &self.kubeconfigs,
            &self.etcd_data,
            &self.logs,
            &self.kubelet_root,
            &self.component_config,
            &self.volumes,
        ] {
            narrow(dir, 0o700)?;
        }
        for file in [
            &self.state_file,
            &self.config_file,
            &self.settings_file,
            &self.proxy_env,
            &self.ui_token,
            &self.bundle_verified,
            &self.etcd_first_start,
            &self.api_bootstrapped,
        ] {
            narrow(file, 0o600)?;
        }
        match std::fs::read_dir(&self.logs) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        narrow(&entry.path(), 0o600)?;
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(changed)
    }
}

/// The node's pod subnet: the first /24 of the cluster's pod CIDR, the one
/// the controller-manager allocates to the first (and only) node. The
/// settings refuse a pod CIDR smaller than a /24; one that got here all the
/// same is taken whole rather than overflowing it.
pub fn node_pod_subnet(pod_cidr: Ipv4Net) -> Ipv4Net {
    let prefix = pod_cidr.prefix_len().max(NODE_POD_PREFIX);
    Ipv4Net::new(pod_cidr.network(), prefix).expect("a prefix length of at most 32")
}

/// The address of the interface that holds the default route: what the API
/// server advertises, and what pods use to reach it through the `kubernetes`
/// Service. Read from /proc, no tools needed.
pub fn default_route_address() -> Option<IpAddr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 2 && fields[1] == "00000000").then(|| fields[0].to_string())
    })?;
    crate::sys::interface_ipv4(&iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_paths_derive_from_state_dir() {
        let config = ClusterConfig::new("/s".into(), "/b".into());
        config.validate().unwrap();
        assert_eq!(config.server_url(), "https://127.0.0.1:6443");
        let paths = config.paths();
        assert_eq!(paths.pki, PathBuf::from("/s/pki"));
        assert_eq!(paths.log("etcd"), PathBuf::from("/s/logs/etcd.log"));
        assert_eq!(paths.bundle_verified, PathBuf::from("/s/bundle-verified"));
        assert_eq!(
            paths.admin_kubeconfig(),
            PathBuf::from("/s/kubeconfig/admin.conf")
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = ClusterConfig::new("/s".into(), "/b".into());
        config.node_name = "My_Node".into();
        assert!(config.validate().unwrap_err().contains("My_Node"));
    }

    #[test]
    fn node_subnet_is_the_first_24() {
        let subnet = |cidr: &str| node_pod_subnet(cidr.parse().unwrap()).to_string();
        assert_eq!(subnet("10.244.0.0/16"), "10.244.0.0/24");
        assert_eq!(subnet("172.20.8.0/24"), "172.20.8.0/24");
        assert_eq!(subnet("10.0.0.0/8"), "10.0.0.0/24");
        // Host bits do not move the subnet off the network's start.
        assert_eq!(subnet("10.244.7.9/16"), "10.244.0.0/24");
        // Refused by the settings; never wider than the CIDR itself.
        assert_eq!(subnet("10.244.0.128/25"), "10.244.0.128/25");
        let config = ClusterConfig::new("/s".into(), "/b".into());
        assert_eq!(config.node_pod_subnet().to_string(), "10.244.0.0/24");
    }

    #[test]
    fn server_host_is_the_urls() {
        type Host = url::Host<String>;
        let mut config = ClusterConfig::new("/s".into(), "/b".into());
        assert_eq!(config.server_host(), Host::Ipv4(Ipv4Addr::LOCALHOST));
        let host = |config: &mut ClusterConfig, url: &str| {
            config.server_url = Some(url.parse().unwrap());
            config.server_host()
        };
        assert_eq!(
            host(&mut config, "https://kubernetes.docker.internal:6443/"),
            Host::Domain("kubernetes.docker.internal".to_string())
        );
        assert_eq!(
            host(&mut config, "https://[::1]:6443"),
            Host::Ipv6(std::net::Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            host(&mut config, "https://192.0.2.7"),
            Host::Ipv4(Ipv4Addr::new(192, 0, 2, 7))
        );
    }

    #[test]
    fn config_round_trips_as_json() {
        let mut config = ClusterConfig::new("/s".into(), "/b".into());
        config.host_kubeconfig = Some("/mnt/c/Users/dev/.kube/config".into());
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<ClusterConfig>(&json).unwrap(),
            config
        );
    }

    /// `cluster.json` as the manager wrote it when these fields were text:
    /// it still loads, and is written back in the same shape.
    #[test]
    fn saved_config_keeps_its_json_shape() {
        let saved = serde_json::json!({
            "stateDir": "/s",
            "bundle": "/b",
            "nodeName": "docker-desktop",
            "apiPort": 6443,
            "serverUrl": "https://kubernetes.docker.internal:6443/",
            "advertiseAddress": null,
            "containerdSocket": "/run/containerd/containerd.sock",
            "hostKubeconfig": null,
            "mergeVmKubeconfig": true,
            "contextName": "docker-desktop",
            "podCidr": "10.244.0.0/16",
            "serviceCidr": "10.96.0.0/12",
            "clusterDns": "10.96.0.10",
            "clusterDomain": "cluster.local",
            "cniConfDir": "/etc/cni/net.d",
            "extraSans": []
        });
        let config: ClusterConfig = serde_json::from_value(saved.clone()).unwrap();
        let mut expected = ClusterConfig::new("/s".into(), "/b".into());
        expected.server_url = Some("https://kubernetes.docker.internal:6443".parse().unwrap());
        assert_eq!(config, expected);
        // Fields added since come with their defaults.
        assert_eq!(config.renew_within_days, 90);
        assert_eq!(config.docker_socket, Path::new("/var/run/docker.sock"));
        assert_eq!(config.load_balancer_address.to_string(), "127.0.0.1");
        let mut written = serde_json::to_value(&config).unwrap();
        let written_fields = written.as_object_mut().unwrap();
        for added in [
            "proxy",
            "renewWithinDays",
            "dockerSocket",
            "loadBalancerAddress",
            "components",
        ] {
            written_fields.remove(added);
        }
        assert_eq!(written, saved);
    }

    #[test]
    fn damaged_saved_settings_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(ClusterConfig::load_saved(&paths), Ok(None));
        let config = ClusterConfig::new(dir.path().into(), "/b".into());
        std::fs::write(&paths.config_file, serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(ClusterConfig::load_saved(&paths), Ok(Some(config)));

        std::fs::write(&paths.config_file, b"{\"stateDir\": \"/s\", ").unwrap();
        let err = ClusterConfig::load_saved(&paths).unwrap_err();
        assert!(
            err.starts_with(&paths.config_file.display().to_string()),
            "{err}"
        );
        assert!(err.contains("damaged: the file is cut short"), "{err}");
        assert!(err.contains("move it aside"), "{err}");

        std::fs::File::create(&paths.config_file)
            .unwrap()
            .set_len(MAX_SETTINGS_BYTES + 1)
            .unwrap();
        let err = ClusterConfig::load_saved(&paths).unwrap_err();
        assert!(err.contains("cannot be read: larger than"), "{err}");

        std::fs::remove_file(&paths.config_file).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &paths.config_file).unwrap();
        let err = ClusterConfig::load_saved(&paths).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}

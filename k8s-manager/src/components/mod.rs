//! The cluster's processes. One contract for each (k0s's model): write its
//! configuration (`prepare`), say how to run it (`spec`), and say how to tell
//! it is ready (`probe`). The supervisor runs them; the phases order them.
//!
//! Flags follow what kubeadm v1.34 gives each component, with the differences
//! a single-node desktop cluster wants (no leader election, a kubelet serving
//! certificate from our CA, relaxed eviction thresholds), each said where it
//! is made.

mod apiserver;
mod controller_manager;
mod etcd;
mod kube_proxy;
mod kubelet;
pub mod overrides;
pub mod probe;
mod scheduler;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use apiserver::ApiServer;
pub use controller_manager::ControllerManager;
pub use etcd::Etcd;
pub use kube_proxy::KubeProxy;
pub use kubelet::Kubelet;
pub use probe::Probe;
pub use scheduler::Scheduler;

use crate::bundle::manifest::cluster_executable;

/// Every component. Each says what it needs ([`Component::needs`]), from
/// which the order is derived (`cluster::order`); listed here in that order.
pub const ALL: [&dyn Component; 6] = [
    &Etcd,
    &ApiServer,
    &ControllerManager,
    &Scheduler,
    &Kubelet,
    &KubeProxy,
];
use crate::exec::FileIdentity;
use crate::model::config::{ClusterConfig, Paths};
use crate::supervisor::ProcessSpec;

/// Ports of the components (kubeadm's defaults).
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const ETCD_METRICS_PORT: u16 = 2381;
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;
pub const KUBELET_PORT: u16 = 10250;
pub const KUBELET_HEALTHZ_PORT: u16 = 10248;
pub const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;
pub const KUBE_PROXY_METRICS_PORT: u16 = 10249;

/// Everything a component needs to know to configure itself.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: ClusterConfig,
    pub paths: Paths,
    /// The bundle's `bin` folder.
    pub bin: PathBuf,
    /// The identity of each bundle executable whose digest preflight checked,
    /// by manifest path (`bin/kubelet`): the supervisor runs only those files.
    pub checked: BTreeMap<String, FileIdentity>,
    pub kubernetes_version: String,
    pub advertise_address: IpAddr,
    pub cgroup: Cgroups,
    /// The resolv.conf pods inherit (through kubelet).
    pub resolv_conf: PathBuf,
    /// The proxy variables every component but etcd gets (empty without a
    /// proxy); see [`crate::model::proxy`]. A change restarts them.
    pub proxy_env: Vec<(String, String)>,
    /// This Kubernetes version's API server came up fully ready on this
    /// etcd data before ([`crate::model::config::Paths::api_bootstrapped`]).
    pub api_bootstrapped: bool,
}

impl Context {
    pub fn pki(&self, name: &str) -> String {
        self.paths.pki.join(name).display().to_string()
    }

    /// The trust bundle of the CA `name`: what a flag that verifies a peer
    /// reads (see [`crate::pki::rotation`]).
    pub fn trust(&self, name: &str) -> String {
        crate::pki::rotation::trust_path(&self.paths.pki, name)
            .display()
            .to_string()
    }

    pub fn kubeconfig(&self, name: &str) -> String {
        self.paths
            .kubeconfigs
            .join(format!("{name}.conf"))
            .display()
            .to_string()
    }

    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The spec of a component that may reach beyond this machine (a
    /// webhook, an OIDC issuer, a registry's credential helper): it carries
    /// the proxy variables.
    fn spec(&self, name: &str, args: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            env: self.proxy_env.clone(),
            ..self.local_spec(name, args)
        }
    }

    /// The spec of a component that talks only to its peers on loopback
    /// (etcd): no proxy variables, so that a proxy change, whose effect is a
    /// restart, leaves it running. Restarting etcd stalls every API call
    /// while it drains its clients' watch streams (up to its 7 s request
    /// timeout), for a setting it never reads.
    fn local_spec(&self, name: &str, args: Vec<String>) -> ProcessSpec {
        // The files of ours a flag names (kubeconfigs, configuration, trust
        // bundles): read at start only (or, for some trust flags, reloaded;
        // a restart is then merely redundant), so new contents mean a restart.
        let trust = crate::pki::rotation::trust_path(&self.paths.pki, "ca");
        let trust_dir = trust.parent().unwrap_or(&self.paths.pki).to_path_buf();
        let ours = [
            &self.paths.kubeconfigs,
            &self.paths.component_config,
            &trust_dir,
        ];
        let inputs = args
            .iter()
            .filter_map(|arg| arg.split_once('=').map(|(_, value)| PathBuf::from(value)))
            .filter(|path| ours.iter().any(|dir| path.starts_with(dir)))
            // And the certificates it reads only at start (see pki::usage):
            // renewed, they restart it.
            .chain(
                crate::pki::usage::restart_inputs(name)
                    .into_iter()
                    .map(|file| self.paths.pki.join(file)),
            )
            .fold(Vec::new(), |mut inputs: Vec<PathBuf>, path| {
                if !inputs.contains(&path) {
                    inputs.push(path);
                }
                inputs
            });
        ProcessSpec {
            inputs,
            name: name.to_string(),
            program: self.binary(name),
            checked: self.checked.get(&cluster_executable(name)).copied(),
            args,
            env: Vec::new(),
            log_file: self.paths.log(name),
        }
    }
}

/// The cgroup setup of the machine, which decides kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cgroups {
    pub v2: bool,
    /// systemd is the init system; only then can the systemd driver work.
    pub systemd: bool,
}

impl Cgroups {
    pub fn detect() -> Cgroups {
        Cgroups {
            v2: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            systemd: Path::new("/run/systemd/system").is_dir(),
        }
    }

    /// kubelet's driver must match containerd's (`SystemdCgroup`), which
    /// `vm/prepare-vm.sh` sets by the same rule: systemd only where systemd is
    /// init and the hierarchy is unified.
    pub fn driver(self) -> &'static str {
        if self.systemd && self.v2 {
            "systemd"
        } else {
            "cgroupfs"
        }
    }
}

/// The resolv.conf to hand to pods: systemd-resolved's stub (127.0.0.53)
/// cannot be reached from a pod, so use the file of real upstreams instead.
pub fn pod_resolv_conf() -> PathBuf {
    let etc = Path::new("/etc/resolv.conf");
    let upstream = Path::new("/run/systemd/resolve/resolv.conf");
    let stub = std::fs::read_to_string(etc)
        .map(|s| s.contains("127.0.0.53"))
        .unwrap_or(false);
    if stub && upstream.exists() {
        upstream.to_path_buf()
    } else {
        etc.to_path_buf()
    }
}

/// The grace of the components that keep nothing of their own (the API
/// server's clients: controller-manager, scheduler, kubelet, kube-proxy):
/// some take seconds over a SIGTERM in the middle of their start, which a
/// disable during an enable would wait out, and a SIGKILL loses nothing.
pub(crate) const STATELESS_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// One supervised process of the cluster.
pub trait Component: Send + Sync {
    fn name(&self) -> &'static str;
    /// The components it needs running: it starts after them and stops
    /// before them (see [`crate::supervisor::order`]).
    fn needs(&self) -> &'static [&'static dyn Component];
    /// Writes the component's configuration files; idempotent.
    fn prepare(&self, _ctx: &Context) -> std::io::Result<()> {
        Ok(())
    }
    /// How the manager runs it: its own flags and variables, without the
    /// user's (see [`overrides::with_overrides`]). Every flag here is the
    /// manager's, refused as a user's override, but for its [`Component::defaults`].
    fn spec(&self, ctx: &Context) -> ProcessSpec;
    /// The flags of its spec that are defaults, not wiring (a log level, a
    /// rate): a user's own value comes after ours, and wins.
    fn defaults(&self) -> &'static [&'static str] {
        &[]
    }
    /// The flags that would override what its configuration file sets (a
    /// flag wins over the file): the manager's, as its spec's are.
    fn config_flags(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn probe(&self, ctx: &Context) -> Probe;
    /// Markers of the lines it logs about our own probes while it is not
    /// ready yet: left out of the log lines an error shows, where they would
    /// hide the reason.
    fn log_noise(&self) -> &'static [&'static str] {
        &[]
    }
    /// How long it gets between SIGTERM and SIGKILL.
    fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }
    /// For a component replaced without a gap ([`crate::supervisor::handover`]):
    /// its shared port, and the probe of a newcomer started beside the
    /// running instance.
    fn handover(&self, _ctx: &Context) -> Option<Handover> {
        None
    }
}

/// How a component is handed over to a new instance of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The TCP port both instances listen on (`SO_REUSEPORT`).
    pub port: u16,
    /// Ready when the newcomer answers it.
    pub probe: Probe,
}

/// `--flag=value` pairs, in the order given.
fn flags<const N: usize>(pairs: [(&str, String); N]) -> Vec<String> {
    pairs
        .into_iter()
        .map(|(k, v)| format!("--{k}={v}"))
        .collect()
}

/// Writes a component's YAML configuration file atomically (0600: some hold paths to keys).
fn write_config(ctx: &Context, file: &str, yaml: &str) -> std::io::Result<PathBuf> {
    let path = ctx.paths.component_config.join(file);
    crate::fsutil::create_dir_all_mode(&ctx.paths.component_config, 0o700)?;
    if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml) {
        crate::fsutil::write_atomic(&path, yaml.as_bytes(), 0o600)?;
    }
    Ok(path)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn context(state: &Path) -> Context {
        let config = ClusterConfig::new(state.to_path_buf(), "/bundle".into());
        Context {
            paths: config.paths(),
            config,
            bin: "/bundle/bin".into(),
            checked: BTreeMap::new(),
            kubernetes_version: "v1.34.4".into(),
            advertise_address: "192.0.2.10".parse().unwrap(),
            cgroup: Cgroups {
                v2: false,
                systemd: false,
            },
            resolv_conf: "/etc/resolv.conf".into(),
            proxy_env: Vec::new(),
            api_bootstrapped: false,
        }
    }

    pub fn has_flag(spec: &ProcessSpec, flag: &str) -> bool {
        spec.args.iter().any(|a| a == flag)
    }

    /// Every field of a configuration file (a dotted path; an object is
    /// followed unless it has a row of its own) has its row in `rows`, and
    /// every row is a field.
    pub fn assert_every_field_has_its_row(
        config: &serde_json::Value,
        rows: &[(&str, Option<&str>)],
    ) {
        fn walk(
            path: &str,
            value: &serde_json::Value,
            rows: &[(&str, Option<&str>)],
            seen: &mut Vec<String>,
        ) {
            if rows.iter().any(|(p, _)| *p == path) {
                seen.push(path.to_string());
                return;
            }
            match value.as_object() {
                Some(fields) if !fields.is_empty() => {
                    for (key, value) in fields {
                        let path = match path.is_empty() {
                            true => key.clone(),
                            false => format!("{path}.{key}"),
                        };
                        walk(&path, value, rows, seen);
                    }
                }
                _ => panic!("{path}: no row says whether a flag of it is the manager's"),
            }
        }
        let mut seen = Vec::new();
        walk("", config, rows, &mut seen);
        for (path, _) in rows {
            assert!(seen.iter().any(|s| s == path), "{path}: a row of no field");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_runs_the_bundle_file_preflight_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = test_support::context(dir.path());
        let components = ALL;
        for (i, name) in crate::bundle::manifest::CLUSTER_EXECUTABLES
            .iter()
            .enumerate()
        {
            let identity = FileIdentity {
                dev: 1,
                ino: i as u64,
                size: 1,
                mtime_ns: 0,
                ctime_ns: 0,
            };
            ctx.checked.insert(cluster_executable(name), identity);
        }
        for component in components {
            let spec = component.spec(&ctx);
            let name = spec
                .program
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert_eq!(
                spec.checked,
                ctx.checked.get(&cluster_executable(&name)).copied(),
                "{}",
                component.name()
            );
            assert!(
                spec.checked.is_some(),
                "{} runs unchecked",
                component.name()
            );
        }
    }

    /// A context whose settings name a proxy.
    fn proxied_context(state: &Path) -> Context {
        let mut ctx = test_support::context(state);
        ctx.config.proxy.http = Some("http://proxy.test:3128".parse().unwrap());
        ctx.config.proxy.https = Some("http://proxy.test:3129".parse().unwrap());
        ctx.proxy_env = ctx
            .config
            .proxy
            .environment(&ctx.config.network(ctx.advertise_address));
        ctx
    }

    #[test]
    fn every_component_but_etcd_gets_the_proxy_environment() {
        let dir = tempfile::tempdir().unwrap();
        // Beside the proxy, only the API server's GODEBUG (see its spec).
        let proxy_only = |spec: ProcessSpec| -> Vec<(String, String)> {
            spec.env
                .into_iter()
                .filter(|(k, _)| k != "GODEBUG")
                .collect()
        };
        for component in ALL {
            let spec = component.spec(&test_support::context(dir.path()));
            assert_eq!(proxy_only(spec), Vec::new(), "{}", component.name());
        }
        let ctx = proxied_context(dir.path());
        assert_eq!(ctx.proxy_env.len(), 6);
        for component in ALL {
            let want = match component.name() {
                "etcd" => Vec::new(),
                _ => ctx.proxy_env.clone(),
            };
            assert_eq!(
                proxy_only(component.spec(&ctx)),
                want,
                "{}",
                component.name()
            );
        }
    }

    /// What a component started by the manager really carries: its spec run
    /// by the supervisor (a harmless program in place of the component's).
    #[tokio::test]
    async fn a_supervised_component_carries_the_proxy_variables() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = proxied_context(dir.path());
        let mut spec = KubeProxy.spec(&ctx);
        spec.program = "/bin/sleep".into();
        spec.args = vec!["30".into()];
        spec.checked = None;
        let supervisor = crate::supervisor::Supervisor::new(dir.path().display().to_string());
        let pid = supervisor
            .start(spec, std::time::Duration::from_secs(1))
            .await
            .unwrap();
        let mut want = ctx.proxy_env.clone();
        want.sort();
        let mut seen = Vec::new();
        for _ in 0..50 {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            seen = crate::model::proxy::proxy_variables(&environ);
            if seen == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        supervisor.stop_all(std::time::Duration::from_secs(1)).await;
        assert_eq!(seen, want);
        let no_proxy = &seen.iter().find(|(k, _)| k == "NO_PROXY").unwrap().1;
        assert!(
            no_proxy.contains(",10.96.0.0/12,10.244.0.0/16,"),
            "{no_proxy}"
        );
    }

    #[test]
    fn cgroup_driver_follows_init_and_hierarchy() {
        assert_eq!(
            Cgroups {
                v2: false,
                systemd: false
            }
            .driver(),
            "cgroupfs"
        );
        assert_eq!(
            Cgroups {
                v2: false,
                systemd: true
            }
            .driver(),
            "cgroupfs"
        );
        assert_eq!(
            Cgroups {
                v2: true,
                systemd: false
            }
            .driver(),
            "cgroupfs"
        );
        assert_eq!(
            Cgroups {
                v2: true,
                systemd: true
            }
            .driver(),
            "systemd"
        );
    }
}

//! The settings document: what the user wants, the one source of truth that
//! the daemon converges the cluster to. Persisted in the state folder
//! (`settings.json`), changed only as a whole: a partial document (a JSON
//! merge patch, RFC 7396) is applied to a copy, the copy is checked, and it
//! replaces the saved one only when every field is right.
//!
//! Pure logic: the document, its check, the patch, and what a change does to
//! a cluster (`none`, `restart-component`, `restart`, `reset`): each
//! setting's effect is declared in [`EFFECTS`], beside the fields. Reading
//! bundles and the state folder is left to [`crate::bundle::cache`] and the
//! manager.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::{self, ClusterConfig};
pub use super::field::{HIDDEN, SettingsError};
use super::overrides::ComponentOverrides;
use super::proxy::ProxySettings;
pub use crate::bundle::cache::Version;

/// The layout of the document; a later one is migrated on load.
pub const SCHEMA_VERSION: u32 = 1;
pub const DEFAULT_RENEW_WITHIN_DAYS: u32 = 90;
/// A certificate lives a year: renewing earlier than this renews at every start.
pub const MAX_RENEW_WITHIN_DAYS: u32 = 180;
/// The settings page's port on 127.0.0.1: one no well-known service uses,
/// above the ranges Kubernetes takes (the API server's, NodePorts').
pub const DEFAULT_UI_PORT: u16 = 47020;
/// How often the running cluster's certificates are checked: twice a day
/// leaves months of margin inside the 90-day window, and costs nothing.
pub const DEFAULT_CHECK_INTERVAL_SECONDS: u64 = 12 * 3600;
/// The bounds of `certs.checkInterval`: a short one is for tests; more than
/// a week apart could miss a window of `renewWithinDays: 1`.
pub const CHECK_INTERVAL_SECONDS: std::ops::RangeInclusive<u64> = 5..=7 * 24 * 3600;
/// An idle cluster freezes after five minutes unused.
pub const DEFAULT_FREEZE_AFTER_SECONDS: u64 = 300;
/// The bounds of a non-zero `idle.freezeAfter`: a few seconds is for tests
/// and demos; a week is as good as never.
pub const FREEZE_AFTER_SECONDS: std::ops::RangeInclusive<u64> = 5..=7 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    pub schema_version: u32,
    /// Counts the saves. A client that sends the revision it read has a
    /// change made since refused instead of silently overwritten.
    pub revision: u64,
    pub kubernetes: Kubernetes,
    pub network: Network,
    pub containerd: Containerd,
    pub proxy: ProxySettings,
    pub docker: Docker,
    pub certs: Certs,
    pub ui: Ui,
    pub idle: Idle,
    /// Flags and variables added to each component's (see [`super::overrides`]).
    pub components: ComponentOverrides,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Kubernetes {
    /// The toggle: true, the daemon keeps a cluster running; false, nothing of it runs.
    pub enabled: bool,
    /// The Kubernetes version (`v1.34.4`): the bundle of that version in the
    /// cache. Unset before the first enable, which pins the newest one found.
    pub version: Option<String>,
    /// A bundle folder to use instead of the cache's (its version must match).
    pub bundle: Option<PathBuf>,
    pub api_port: u16,
    pub node_name: String,
    pub context_name: String,
    /// The URL written into kubeconfigs; unset: `https://127.0.0.1:<apiPort>`.
    pub server_url: Option<url::Url>,
    /// Extra names and addresses for the API server's certificate.
    pub extra_sans: Vec<String>,
    /// The Windows user's kubeconfig: a path or a list of paths.
    pub host_kubeconfig: Option<PathList>,
    /// Also merge into the VM user's `~/.kube/config`.
    pub merge_vm_kubeconfig: bool,
    /// The address the API server advertises; unset: the default route's.
    pub advertise_address: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Network {
    /// Where LoadBalancer Services are published on the VM (and so on localhost).
    pub load_balancer_address: IpAddr,
    pub pod_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Containerd {
    pub socket: PathBuf,
    pub cni_conf_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Docker {
    /// The Docker engine whose images the cluster sees.
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Certs {
    /// A certificate that expires within this many days is renewed.
    pub renew_within_days: u32,
    /// Seconds between two checks of a running cluster's certificates by the
    /// daemon's renewal unit (`certs-renewal`); read at each check, so a
    /// change takes effect after the current wait.
    pub check_interval: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Ui {
    /// The settings page is served on `127.0.0.1:<port>` (never another
    /// address); a change moves it there at once, the cluster untouched.
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Idle {
    /// Seconds unused after which the cluster is frozen (its processes use
    /// no CPU; the first call wakes it); 0: never.
    pub freeze_after: u64,
    /// Whether running pods outside `kube-system` freeze with it (traffic to
    /// their LoadBalancer or NodePort wakes them); false: they keep the
    /// cluster awake.
    pub freeze_workloads: bool,
}

impl Default for Idle {
    fn default() -> Idle {
        Idle {
            freeze_after: DEFAULT_FREEZE_AFTER_SECONDS,
            freeze_workloads: false,
        }
    }
}

/// What changing a setting asks of the cluster; the facts of the cluster
/// then decide the change's [`Effect`] (nothing runs: nothing restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redo {
    /// Nothing of the cluster: the daemon reads it as it goes.
    Nothing,
    /// The cluster's components restart with it (those whose command line
    /// or files change); data is kept.
    Restart,
    /// The one component the key names (`components.<name>.…`) restarts.
    RestartComponent,
    /// The cluster is made again: its data is lost.
    Rebuild,
    /// Another bundle: a restart within the same minor version, a rebuild
    /// across minor versions.
    Bundle,
}

/// Each setting's effect, by its dotted key; `*` is any one part of a key (a
/// component's name, a variable's). Every setting has its row: a key with
/// none is a test failure, and a change of it is refused rather than
/// guessed (nothing restarts by default).
pub const EFFECTS: &[(&str, Redo)] = &[
    // The manager's own counters.
    ("schemaVersion", Redo::Nothing),
    ("revision", Redo::Nothing),
    // The toggle is acted on by the plan (start, stop), not by an effect.
    ("kubernetes.enabled", Redo::Nothing),
    ("kubernetes.version", Redo::Bundle),
    ("kubernetes.bundle", Redo::Bundle),
    ("kubernetes.apiPort", Redo::Restart),
    // The node's identity, and (below) the address plan its objects are made of.
    ("kubernetes.nodeName", Redo::Rebuild),
    ("kubernetes.contextName", Redo::Restart),
    ("kubernetes.serverUrl", Redo::Restart),
    ("kubernetes.extraSans", Redo::Restart),
    ("kubernetes.hostKubeconfig", Redo::Restart),
    ("kubernetes.mergeVmKubeconfig", Redo::Restart),
    ("kubernetes.advertiseAddress", Redo::Restart),
    ("network.loadBalancerAddress", Redo::Restart),
    ("network.podCidr", Redo::Rebuild),
    ("network.serviceCidr", Redo::Rebuild),
    ("network.clusterDns", Redo::Rebuild),
    ("network.clusterDomain", Redo::Rebuild),
    ("containerd.socket", Redo::Restart),
    ("containerd.cniConfDir", Redo::Restart),
    ("proxy.http", Redo::Restart),
    ("proxy.https", Redo::Restart),
    ("proxy.noProxy", Redo::Restart),
    ("docker.socket", Redo::Restart),
    // Read by the certificates unit at each check.
    ("certs.renewWithinDays", Redo::Nothing),
    ("certs.checkInterval", Redo::Nothing),
    // The page is the daemon's, not the cluster's: it moves by itself.
    ("ui.port", Redo::Nothing),
    // Read by the idle unit at each look.
    ("idle.freezeAfter", Redo::Nothing),
    ("idle.freezeWorkloads", Redo::Nothing),
    // On the one command line and environment they are added to.
    ("components.*.extraArgs", Redo::RestartComponent),
    // `{}` while it holds no variable; then one key per variable.
    ("components.*.env", Redo::RestartComponent),
    ("components.*.env.*", Redo::RestartComponent),
];

/// The row of [`EFFECTS`] that `key` falls under, if any.
pub fn declared_redo(key: &str) -> Option<Redo> {
    EFFECTS
        .iter()
        .find(|(pattern, _)| key_matches(pattern, key))
        .map(|&(_, redo)| redo)
}

/// Whether the dotted `key` is one of `pattern`'s, whose `*` parts stand
/// for any one part.
fn key_matches(pattern: &str, key: &str) -> bool {
    let (mut want, mut have) = (pattern.split('.'), key.split('.'));
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w == "*" || w == h => {}
            _ => return false,
        }
    }
}

/// A path, or a list of paths (`hostKubeconfig`): KUBECONFIG's two shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathList {
    One(String),
    Many(Vec<String>),
}

impl PathList {
    /// The KUBECONFIG-style value: `;` joins a list (the separator that
    /// Windows paths, with their drive colons, need and that
    /// [`crate::kubeconfig::HostKubeconfig::parse`] reads).
    pub fn to_spec(&self) -> String {
        match self {
            PathList::One(path) => path.clone(),
            PathList::Many(paths) => paths.join(";"),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            schema_version: SCHEMA_VERSION,
            revision: 0,
            kubernetes: Kubernetes::default(),
            network: Network::default(),
            containerd: Containerd::default(),
            proxy: ProxySettings::default(),
            docker: Docker::default(),
            certs: Certs::default(),
            ui: Ui::default(),
            idle: Idle::default(),
            components: ComponentOverrides::default(),
        }
    }
}

impl Default for Kubernetes {
    fn default() -> Kubernetes {
        Kubernetes {
            enabled: false,
            version: None,
            bundle: None,
            api_port: config::DEFAULT_API_PORT,
            node_name: config::DEFAULT_NODE_NAME.into(),
            context_name: config::DEFAULT_CONTEXT.into(),
            server_url: None,
            extra_sans: Vec::new(),
            host_kubeconfig: None,
            merge_vm_kubeconfig: true,
            advertise_address: None,
        }
    }
}

impl Default for Network {
    fn default() -> Network {
        Network {
            load_balancer_address: config::DEFAULT_LOAD_BALANCER_ADDRESS.into(),
            pod_cidr: config::DEFAULT_POD_CIDR,
            service_cidr: config::DEFAULT_SERVICE_CIDR,
            cluster_dns: config::DEFAULT_CLUSTER_DNS,
            cluster_domain: config::DEFAULT_CLUSTER_DOMAIN.into(),
        }
    }
}

impl Default for Containerd {
    fn default() -> Containerd {
        Containerd {
            socket: config::DEFAULT_CONTAINERD_SOCKET.into(),
            cni_conf_dir: config::DEFAULT_CNI_CONF_DIR.into(),
        }
    }
}

impl Default for Docker {
    fn default() -> Docker {
        Docker {
            socket: config::DEFAULT_DOCKER_SOCKET.into(),
        }
    }
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            port: DEFAULT_UI_PORT,
        }
    }
}

impl Default for Certs {
    fn default() -> Certs {
        Certs {
            renew_within_days: DEFAULT_RENEW_WITHIN_DAYS,
            check_interval: DEFAULT_CHECK_INTERVAL_SECONDS,
        }
    }
}

/// What applying a change does to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Nothing to redo (or nothing runs to redo it on).
    None,
    /// One component of the running cluster is restarted with it (the
    /// change's `component`); the others, and data, are kept.
    RestartComponent,
    /// The running cluster's components are restarted with it; data is kept.
    Restart,
    /// The existing cluster is thrown away and made again: its data is lost.
    Reset,
}

/// One changed setting, as `propose` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub current: Value,
    pub desired: Value,
    pub effect: Effect,
    /// The component an effect `restart-component` restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

/// What the effect of a change depends on, besides the two documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// A cluster's data exists (an etcd data folder): a reset would lose it.
    pub cluster_exists: bool,
    /// The cluster's components run (or start): a restart would touch them.
    pub running: bool,
    /// The Kubernetes version each document resolves to (its bundle's).
    pub current_version: Option<String>,
    pub desired_version: Option<String>,
}

impl Settings {
    /// Reads a settings document: unknown keys and values of the wrong type
    /// are refused with the field's path. The values themselves are not
    /// repeated (a proxy URL may hold a password).
    pub fn from_value(value: Value) -> Result<Settings, SettingsError> {
        let settings: Settings = serde_path_to_error::deserialize(value).map_err(|err| {
            let field = err.path().to_string();
            let field = if field == "." { String::new() } else { field };
            SettingsError::new(field, crate::input::value_problem(&err.inner().to_string()))
        })?;
        if settings.schema_version != SCHEMA_VERSION {
            return Err(SettingsError::new(
                "schemaVersion",
                format!(
                    "this manager reads settings of schema {SCHEMA_VERSION}; the document is of schema {}",
                    settings.schema_version
                ),
            ));
        }
        Ok(settings)
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("settings serialise")
    }

    /// This document with `patch` applied (a JSON merge patch: an object
    /// changes the keys it names, `null` puts a key back to its default),
    /// checked as a whole. `schemaVersion` and `revision` are the manager's.
    pub fn patched(&self, patch: &Value) -> Result<Settings, SettingsError> {
        let Value::Object(fields) = patch else {
            return Err(SettingsError::new(
                "",
                "a settings change is a JSON object of the keys to change",
            ));
        };
        for key in ["schemaVersion", "revision"] {
            if fields.contains_key(key) {
                return Err(SettingsError::new(key, "is kept by the manager, not set"));
            }
        }
        let mut value = self.to_value();
        merge_patch(&mut value, patch);
        let mut settings = Settings::from_value(value)?;
        settings.keep_secrets(self)?;
        settings.validate()?;
        // One spelling of a version (`v1.34.4`), so that equal ones compare equal.
        if let Some(version) = &mut settings.kubernetes.version {
            *version = Version::parse(version)
                .expect("validated above")
                .to_string();
        }
        Ok(settings)
    }

    /// The document as it is shown outside the daemon (the control API, so
    /// the page and the CLI): its write-only values, the proxy URLs'
    /// passwords and the components' variables, are [`HIDDEN`]. The saved
    /// file (mode 0600) keeps them.
    pub fn redacted(&self) -> Settings {
        Settings {
            proxy: self.proxy.redacted(),
            components: self.components.redacted(),
            ..self.clone()
        }
    }

    /// The write-only values of `self` (a document asked for) that are
    /// [`HIDDEN`], or a proxy password left out, taken from `current` (see
    /// [`ProxySettings::keep_passwords`] and
    /// [`ComponentOverrides::keep_values`]).
    fn keep_secrets(&mut self, current: &Settings) -> Result<(), SettingsError> {
        self.components.keep_values(&current.components)?;
        self.proxy
            .keep_passwords(&current.proxy)
            .map_err(|err| match err.split_once(": ") {
                Some((field, why)) => SettingsError::new(field, why),
                None => SettingsError::new("proxy", err),
            })
    }

    /// Checks what can be wrong in a document, each problem with its field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let k = &self.kubernetes;
        let n = &self.network;
        if let Some(version) = &k.version {
            Version::parse(version).map_err(|e| SettingsError::new("kubernetes.version", e))?;
        }
        if k.api_port == 0 {
            return Err(SettingsError::new(
                "kubernetes.apiPort",
                "0 is not a port: take one from 1 to 65535",
            ));
        }
        if self.ui.port == 0 {
            return Err(SettingsError::new(
                "ui.port",
                "0 is not a port: take one from 1 to 65535",
            ));
        }
        if self.ui.port == k.api_port {
            return Err(SettingsError::new(
                "ui.port",
                "is kubernetes.apiPort: the page and the API server need a port each",
            ));
        }
        if !super::names::is_dns_label_chain(&k.node_name) {
            return Err(SettingsError::new(
                "kubernetes.nodeName",
                "must be a lowercase DNS name (letters, digits, '-' and '.')",
            ));
        }
        if k.context_name.is_empty() || k.context_name.chars().any(char::is_control) {
            return Err(SettingsError::new(
                "kubernetes.contextName",
                "must be a name of printable characters",
            ));
        }
        if let Some(url) = &k.server_url
            && (url.scheme() != "https" || url.host().is_none())
        {
            return Err(SettingsError::new(
                "kubernetes.serverUrl",
                "must be an https:// URL with a host (the API server serves TLS only)",
            ));
        }
        // The API server's certificate is made to cover this host.
        if let Some(url::Host::Domain(name)) = k.server_url.as_ref().and_then(url::Url::host)
            && !super::names::is_dns_label_chain(name)
        {
            return Err(SettingsError::new(
                "kubernetes.serverUrl",
                "the host must be a lowercase DNS name or an IP address",
            ));
        }
        for (i, san) in k.extra_sans.iter().enumerate() {
            if san.parse::<IpAddr>().is_err() && !super::names::is_dns_label_chain(san) {
                return Err(SettingsError::new(
                    format!("kubernetes.extraSans[{i}]"),
                    "must be a lowercase DNS name or an IP address",
                ));
            }
        }
        if let Some(list) = &k.host_kubeconfig {
            let empty = match list {
                PathList::One(p) => p.trim().is_empty(),
                PathList::Many(ps) => ps.is_empty() || ps.iter().any(|p| p.trim().is_empty()),
            };
            if empty {
                return Err(SettingsError::new(
                    "kubernetes.hostKubeconfig",
                    "an empty path: leave the setting out (null) for none",
                ));
            }
            crate::kubeconfig::HostKubeconfig::parse(
                &list.to_spec(),
                Path::new(crate::kubeconfig::HostEnvironment::DEFAULT_MOUNT_ROOT),
            )
            .map_err(|e| {
                SettingsError::new("kubernetes.hostKubeconfig", crate::error::chain(&e))
            })?;
        }
        if n.pod_cidr.prefix_len() > config::NODE_POD_PREFIX {
            return Err(SettingsError::new(
                "network.podCidr",
                format!(
                    "must be a /{0} or larger: the node takes its first /{0}",
                    config::NODE_POD_PREFIX
                ),
            ));
        }
        for (field, net) in [
            ("network.podCidr", n.pod_cidr),
            ("network.serviceCidr", n.service_cidr),
        ] {
            if net.network() != net.addr() {
                return Err(SettingsError::new(
                    field,
                    format!(
                        "must start at its network's first address ({})",
                        net.trunc()
                    ),
                ));
            }
        }
        if n.service_cidr.prefix_len() < 12 || n.service_cidr.prefix_len() > 30 {
            return Err(SettingsError::new(
                "network.serviceCidr",
                "must be from a /12 (the API server's largest) to a /30",
            ));
        }
        if n.pod_cidr.contains(&n.service_cidr) || n.service_cidr.contains(&n.pod_cidr) {
            return Err(SettingsError::new(
                "network.serviceCidr",
                "overlaps network.podCidr",
            ));
        }
        if !n.service_cidr.contains(&n.cluster_dns)
            || n.cluster_dns == n.service_cidr.network()
            || n.cluster_dns == n.service_cidr.broadcast()
        {
            return Err(SettingsError::new(
                "network.clusterDns",
                "must be an address inside network.serviceCidr",
            ));
        }
        if !super::names::is_dns_label_chain(&n.cluster_domain) {
            return Err(SettingsError::new(
                "network.clusterDomain",
                "must be a lowercase DNS name",
            ));
        }
        for (field, path) in [
            ("containerd.socket", &self.containerd.socket),
            ("containerd.cniConfDir", &self.containerd.cni_conf_dir),
            ("docker.socket", &self.docker.socket),
        ] {
            if !path.is_absolute() {
                return Err(SettingsError::new(field, "must be an absolute path"));
            }
        }
        if let Some(bundle) = &k.bundle
            && !bundle.is_absolute()
        {
            return Err(SettingsError::new(
                "kubernetes.bundle",
                "must be an absolute path",
            ));
        }
        if !(1..=MAX_RENEW_WITHIN_DAYS).contains(&self.certs.renew_within_days) {
            return Err(SettingsError::new(
                "certs.renewWithinDays",
                format!("must be from 1 to {MAX_RENEW_WITHIN_DAYS} days"),
            ));
        }
        if !CHECK_INTERVAL_SECONDS.contains(&self.certs.check_interval) {
            return Err(SettingsError::new(
                "certs.checkInterval",
                format!(
                    "must be from {} to {} seconds",
                    CHECK_INTERVAL_SECONDS.start(),
                    CHECK_INTERVAL_SECONDS.end()
                ),
            ));
        }
        if self.idle.freeze_after != 0 && !FREEZE_AFTER_SECONDS.contains(&self.idle.freeze_after) {
            return Err(SettingsError::new(
                "idle.freezeAfter",
                format!(
                    "must be 0 (never) or from {} to {} seconds",
                    FREEZE_AFTER_SECONDS.start(),
                    FREEZE_AFTER_SECONDS.end()
                ),
            ));
        }
        self.components.validate()?;
        // Its messages lead with the field (`proxy.noProxy[2]: ...`).
        self.proxy
            .validate()
            .map_err(|err| match err.split_once(": ") {
                Some((field, why)) if field.starts_with("proxy.") => SettingsError::new(field, why),
                _ => SettingsError::new("proxy", err),
            })?;
        Ok(())
    }

    /// The cluster's configuration for an enable, with the bundle resolved.
    pub fn to_config(&self, state_dir: &Path, bundle: PathBuf) -> ClusterConfig {
        let k = &self.kubernetes;
        let n = &self.network;
        let mut config = ClusterConfig::new(state_dir.to_path_buf(), bundle);
        config.node_name = k.node_name.clone();
        config.api_port = k.api_port;
        config.server_url = k.server_url.clone();
        config.advertise_address = k.advertise_address;
        config.containerd_socket = self.containerd.socket.clone();
        config.docker_socket = self.docker.socket.clone();
        config.host_kubeconfig = k.host_kubeconfig.as_ref().map(PathList::to_spec);
        config.merge_vm_kubeconfig = k.merge_vm_kubeconfig;
        config.context_name = k.context_name.clone();
        config.pod_cidr = n.pod_cidr;
        config.service_cidr = n.service_cidr;
        config.cluster_dns = n.cluster_dns;
        config.cluster_domain = n.cluster_domain.clone();
        config.cni_conf_dir = self.containerd.cni_conf_dir.clone();
        config.extra_sans = k.extra_sans.clone();
        config.proxy = self.proxy.clone();
        config.renew_within_days = self.certs.renew_within_days;
        config.load_balancer_address = n.load_balancer_address;
        config.components = self.components.clone();
        config
    }

    /// The settings that an earlier manager's saved configuration
    /// (`cluster.json`) stood for: how a state folder made before the
    /// settings document carries over.
    pub fn from_config(config: &ClusterConfig, enabled: bool) -> Settings {
        let mut s = Settings::default();
        let k = &mut s.kubernetes;
        k.enabled = enabled;
        k.bundle = Some(config.bundle.clone());
        k.api_port = config.api_port;
        k.node_name = config.node_name.clone();
        k.context_name = config.context_name.clone();
        k.server_url = config.server_url.clone();
        k.extra_sans = config.extra_sans.clone();
        k.host_kubeconfig = config.host_kubeconfig.clone().map(PathList::One);
        k.merge_vm_kubeconfig = config.merge_vm_kubeconfig;
        k.advertise_address = config.advertise_address;
        let n = &mut s.network;
        n.pod_cidr = config.pod_cidr;
        n.service_cidr = config.service_cidr;
        n.cluster_dns = config.cluster_dns;
        n.cluster_domain = config.cluster_domain.clone();
        n.load_balancer_address = config.load_balancer_address;
        s.containerd.socket = config.containerd_socket.clone();
        s.containerd.cni_conf_dir = config.cni_conf_dir.clone();
        s.proxy = config.proxy.clone();
        s.certs.renew_within_days = config.renew_within_days;
        s.components = config.components.clone();
        s
    }
}

/// RFC 7396: objects merge key by key, `null` removes a key, anything else
/// replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// `KEY=VALUE` (a dotted path, `kubernetes.apiPort=6444`) as a merge patch.
/// The value is JSON when it reads as JSON (`true`, `6444`, `["a","b"]`,
/// `null`), a string otherwise (`docker-desktop`, `C:\Users\dev\.kube\config`).
pub fn patch_from_assignments<S: AsRef<str>>(assignments: &[S]) -> Result<Value, SettingsError> {
    let mut patch = Value::Object(Map::new());
    for assignment in assignments {
        let assignment = assignment.as_ref();
        let Some((key, raw)) = assignment.split_once('=') else {
            return Err(SettingsError::new(
                assignment,
                "write KEY=VALUE, e.g. kubernetes.apiPort=6444",
            ));
        };
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(SettingsError::new(
                key,
                "a key is a dotted path like kubernetes.apiPort",
            ));
        }
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::from(raw));
        let mut node = &mut patch;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let map = match node {
                Value::Object(map) => map,
                _ => {
                    return Err(SettingsError::new(
                        key,
                        "is set twice, once as a value and once as an object",
                    ));
                }
            };
            if i + 1 == parts.len() {
                map.insert(part.to_string(), value.clone());
                break;
            }
            node = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(patch)
}

/// Every leaf of a document by its dotted path (lists and empty objects
/// are leaves).
pub fn leaves(value: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let path = match prefix.is_empty() {
                        true => key.clone(),
                        false => format!("{prefix}.{key}"),
                    };
                    walk(&path, value, out);
                }
            }
            _ => out.push((prefix.to_string(), value.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// The effect of changing `key` on a cluster as `facts` describe it, and
/// the component it restarts, as [`EFFECTS`] declares it.
fn effect_of(key: &str, facts: &Facts) -> Result<(Effect, Option<String>), SettingsError> {
    let redo = declared_redo(key).ok_or_else(|| {
        SettingsError::new(
            key,
            "this manager declares no effect for the setting (a bug of the manager's: report it)",
        )
    })?;
    let redo = match redo {
        // A version unset in one of the documents and pinned in the other is
        // the same cluster when both resolve to the same bundle.
        Redo::Bundle => match (&facts.current_version, &facts.desired_version) {
            (Some(a), Some(b)) if a == b => Redo::Restart,
            (Some(a), Some(b)) => match (Version::parse(a), Version::parse(b)) {
                (Ok(a), Ok(b)) if a.major == b.major && a.minor == b.minor => Redo::Restart,
                _ => Redo::Rebuild,
            },
            _ => Redo::Restart,
        },
        other => other,
    };
    let effect = match redo {
        Redo::Rebuild if facts.cluster_exists => Effect::Reset,
        Redo::Rebuild | Redo::Restart if facts.running => Effect::Restart,
        Redo::RestartComponent if facts.running => Effect::RestartComponent,
        _ => Effect::None,
    };
    let component = match effect {
        // `components.<name>.…`
        Effect::RestartComponent => key.split('.').nth(1).map(str::to_string),
        _ => None,
    };
    Ok((effect, component))
}

/// Each setting that differs between the two documents, with its effect;
/// an error names a setting whose effect is not declared. The documents are
/// compared as saved (a new password is a change), and the values are told
/// as shown ([`Settings::redacted`]): a change never carries a secret.
pub fn changes(
    current: &Settings,
    desired: &Settings,
    facts: &Facts,
) -> Result<Vec<Change>, SettingsError> {
    let before = leaves(&current.to_value());
    let after = leaves(&desired.to_value());
    let shown_before = leaves(&current.redacted().to_value());
    let shown_after = leaves(&desired.redacted().to_value());
    let find = |leaves: &[(String, Value)], key: &str| {
        leaves
            .iter()
            .find(|(k, _)| k == key)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    // The keys of the desired document, then those it no longer has (a
    // variable taken out of a component's environment).
    let gone = before
        .iter()
        .filter(|(key, _)| !after.iter().any(|(k, _)| k == key))
        .map(|(key, _)| (key.clone(), Value::Null));
    let after: Vec<(String, Value)> = after.iter().cloned().chain(gone).collect();
    // An empty object is a leaf only to show that it can hold keys (`env={}`).
    let blank = |v: &Value| v.is_null() || v.as_object().is_some_and(Map::is_empty);
    let mut changes = Vec::new();
    for (key, desired_value) in after {
        if key == "revision" {
            continue;
        }
        let current_value = find(&before, &key);
        if current_value == desired_value || (blank(&current_value) && blank(&desired_value)) {
            continue;
        }
        let (effect, component) = effect_of(&key, facts)?;
        changes.push(Change {
            effect,
            component,
            current: find(&shown_before, &key),
            desired: find(&shown_after, &key),
            key,
        });
    }
    Ok(changes)
}

impl Kubernetes {
    /// The bundle these settings choose, and its version (see
    /// [`crate::bundle::cache::resolve`]); the error names the setting at fault.
    pub fn find_bundle(&self, cache: &Path) -> Result<(PathBuf, Version), SettingsError> {
        crate::bundle::cache::resolve(self.version.as_deref(), self.bundle.as_deref(), cache)
            .map_err(|e| {
                let field = match e.about_folder {
                    true => "kubernetes.bundle",
                    false => "kubernetes.version",
                };
                SettingsError::new(field, e.message)
            })
    }
}

use super::config::MAX_SETTINGS_BYTES;

/// The saved document; `None` when there is none yet. A damaged file is an
/// error naming it, never replaced behind the user's back.
pub fn load(path: &Path) -> Result<Option<Settings>, String> {
    let fix = "fix it or move it aside (the manager then starts from the defaults)";
    let raw =
        match crate::fsutil::read_bounded(path, MAX_SETTINGS_BYTES).map_err(std::io::Error::from) {
            Ok(raw) => raw,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(format!(
                    "{}: the settings cannot be read: {err}; {fix}",
                    path.display()
                ));
            }
        };
    let value: Value = serde_json::from_slice(&raw).map_err(|err| {
        format!(
            "{}: the settings are damaged: the file {}; {fix}",
            path.display(),
            crate::input::json_problem(&err)
        )
    })?;
    let settings = Settings::from_value(value)
        .and_then(|s| s.validate().map(|()| s))
        .map_err(|err| format!("{}: {err}; {fix}", path.display()))?;
    Ok(Some(settings))
}

/// Saves the document atomically: a crash leaves the old one or the new one.
pub fn save(path: &Path, settings: &Settings) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(settings).expect("settings serialise");
    json.push(b'\n');
    crate::fsutil::write_atomic(path, &json, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let settings = Settings::default();
        settings.validate().unwrap();
        let back = Settings::from_value(settings.to_value()).unwrap();
        assert_eq!(back, settings);
        assert_eq!(
            settings.to_value()["network"]["loadBalancerAddress"],
            json!("127.0.0.1")
        );
        // An empty document is the defaults.
        assert_eq!(Settings::from_value(json!({})).unwrap(), settings);
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let settings = Settings::default();
        let patched = settings
            .patched(&json!({"kubernetes": {"apiPort": 6444, "enabled": true}}))
            .unwrap();
        assert_eq!(patched.kubernetes.api_port, 6444);
        assert!(patched.kubernetes.enabled);
        assert_eq!(patched.kubernetes.node_name, settings.kubernetes.node_name);
        // null puts the default back.
        let back = patched
            .patched(&json!({"kubernetes": {"apiPort": null}}))
            .unwrap();
        assert_eq!(back.kubernetes.api_port, config::DEFAULT_API_PORT);
    }

    #[test]
    fn refusals_name_the_field_and_not_the_value() {
        let settings = Settings::default();
        let refuse = |patch: Value| settings.patched(&patch).unwrap_err();
        let err = refuse(json!({"kubernetes": {"apiPort": 70000}}));
        assert_eq!(err.field, "kubernetes.apiPort");
        assert!(!err.message.contains("70000"), "{err}");
        let err = refuse(json!({"kubernetes": {"apiPort": 0}}));
        assert_eq!(err.field, "kubernetes.apiPort");
        let err = refuse(json!({"kubernetes": {"colour": "blue"}}));
        assert_eq!(err.field, "kubernetes.colour", "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
        let err = refuse(json!({"flavour": 1}));
        assert_eq!(err.field, "flavour", "{err}");
        let err = refuse(json!({"kubernetes": {"nodeName": "My_Node"}}));
        assert_eq!(err.field, "kubernetes.nodeName");
        let err = refuse(json!({"kubernetes": {"version": "latest"}}));
        assert_eq!(err.field, "kubernetes.version");
        let err = refuse(json!({"kubernetes": {"serverUrl": "http://127.0.0.1:6443"}}));
        assert_eq!(err.field, "kubernetes.serverUrl");
        let err = refuse(json!({"kubernetes": {"serverUrl": "https://my_host:6443"}}));
        assert_eq!(err.field, "kubernetes.serverUrl");
        assert!(err.message.contains("DNS name"), "{err}");
        let err = refuse(json!({"kubernetes": {"extraSans": ["ok.test", "not ok"]}}));
        assert_eq!(err.field, "kubernetes.extraSans[1]");
        let err = refuse(json!({"network": {"podCidr": "10.244.0.0/25"}}));
        assert_eq!(err.field, "network.podCidr");
        let err = refuse(json!({"network": {"podCidr": "10.244.3.0/16"}}));
        assert_eq!(err.field, "network.podCidr");
        assert!(err.message.contains("10.244.0.0/16"), "{err}");
        let err = refuse(json!({"network": {"serviceCidr": "10.0.0.0/8"}}));
        assert_eq!(err.field, "network.serviceCidr");
        let err = refuse(json!({"network": {"serviceCidr": "10.244.0.0/20"}}));
        assert!(err.message.contains("overlaps"), "{err}");
        let err = refuse(json!({"network": {"clusterDns": "10.200.0.10"}}));
        assert_eq!(err.field, "network.clusterDns");
        let err = refuse(json!({"network": {"loadBalancerAddress": "localhost"}}));
        assert_eq!(err.field, "network.loadBalancerAddress");
        let err = refuse(json!({"docker": {"socket": "docker.sock"}}));
        assert_eq!(err.field, "docker.socket");
        let err = refuse(json!({"certs": {"renewWithinDays": 0}}));
        assert_eq!(err.field, "certs.renewWithinDays");
        let err = refuse(json!({"certs": {"checkInterval": 1}}));
        assert_eq!(err.field, "certs.checkInterval");
        let err = refuse(json!({"certs": {"checkInterval": 30 * 24 * 3600}}));
        assert_eq!(err.field, "certs.checkInterval");
        let err = refuse(json!({"idle": {"freezeAfter": 2}}));
        assert_eq!(err.field, "idle.freezeAfter");
        assert!(err.message.contains("0 (never)"), "{}", err.message);
        let err = refuse(json!({"proxy": {"http": "ftp://user:s3cret@proxy.test:21"}}));
        assert_eq!(err.field, "proxy.http");
        assert!(!err.message.contains("s3cret"), "{err}");
        let err = refuse(json!({"proxy": {"noProxy": ["ok.test", "a b"]}}));
        assert_eq!(err.field, "proxy.noProxy[1]", "{err}");
        let err = refuse(json!({"kubernetes": {"hostKubeconfig": ""}}));
        assert_eq!(err.field, "kubernetes.hostKubeconfig");
        let err = refuse(json!({"ui": {"port": 0}}));
        assert_eq!(err.field, "ui.port");
        let err = refuse(json!({"ui": {"port": 6443}}));
        assert_eq!(err.field, "ui.port");
        let err = refuse(json!({"revision": 9}));
        assert_eq!(err.field, "revision");
        let err = refuse(json!(["kubernetes"]));
        assert_eq!(err.field, "");
    }

    #[test]
    fn host_kubeconfig_is_a_path_or_a_list() {
        let settings = Settings::default();
        let one = settings
            .patched(&json!({"kubernetes": {"hostKubeconfig": "/mnt/c/Users/dev/.kube/config"}}))
            .unwrap();
        assert_eq!(
            one.kubernetes.host_kubeconfig.unwrap().to_spec(),
            "/mnt/c/Users/dev/.kube/config"
        );
        let many = settings
            .patched(&json!({"kubernetes": {"hostKubeconfig": ["C:\\Users\\dev\\.kube\\config", "C:\\Users\\dev\\.kube\\work"]}}))
            .unwrap();
        assert_eq!(
            many.kubernetes.host_kubeconfig.unwrap().to_spec(),
            "C:\\Users\\dev\\.kube\\config;C:\\Users\\dev\\.kube\\work"
        );
    }

    #[test]
    fn assignments_make_a_patch() {
        let patch = patch_from_assignments(&[
            "kubernetes.apiPort=6444",
            "kubernetes.enabled=true",
            "kubernetes.nodeName=dev-node",
            "kubernetes.extraSans=[\"a.test\"]",
            "proxy.http=null",
        ])
        .unwrap();
        assert_eq!(
            patch,
            json!({"kubernetes": {"apiPort": 6444, "enabled": true, "nodeName": "dev-node", "extraSans": ["a.test"]}, "proxy": {"http": null}})
        );
        assert_eq!(
            patch_from_assignments(&["kubernetes"]).unwrap_err().field,
            "kubernetes"
        );
        assert!(patch_from_assignments(&["a..b=1"]).is_err());
        assert!(patch_from_assignments(&["a=1", "a.b=2"]).is_err());
    }

    fn facts(exists: bool, running: bool) -> Facts {
        Facts {
            cluster_exists: exists,
            running,
            current_version: Some("v1.34.4".into()),
            desired_version: Some("v1.34.4".into()),
        }
    }

    #[test]
    fn effects_follow_what_the_change_touches() {
        let current = Settings::default();
        let effect = |patch: Value, facts: &Facts| {
            let desired = current.patched(&patch).unwrap();
            let changes = changes(&current, &desired, facts).unwrap();
            assert_eq!(changes.len(), 1, "{changes:?}");
            changes[0].effect
        };
        let live = facts(true, true);
        let stopped = facts(true, false);
        let none = facts(false, false);
        let port = json!({"kubernetes": {"apiPort": 6444}});
        assert_eq!(effect(port.clone(), &live), Effect::Restart);
        assert_eq!(effect(port.clone(), &stopped), Effect::None);
        let node = json!({"kubernetes": {"nodeName": "other"}});
        assert_eq!(effect(node.clone(), &live), Effect::Reset);
        assert_eq!(effect(node.clone(), &stopped), Effect::Reset);
        assert_eq!(effect(node, &none), Effect::None);
        let toggle = json!({"kubernetes": {"enabled": true}});
        assert_eq!(effect(toggle, &stopped), Effect::None);
        let renew = json!({"certs": {"renewWithinDays": 60}});
        assert_eq!(effect(renew, &live), Effect::None);
        let page = json!({"ui": {"port": 47021}});
        assert_eq!(effect(page, &live), Effect::None);
        let interval = json!({"certs": {"checkInterval": 60}});
        assert_eq!(effect(interval, &live), Effect::None);
        let proxy = json!({"proxy": {"noProxy": ["corp.example"]}});
        assert_eq!(effect(proxy, &live), Effect::Restart);
        let version = json!({"kubernetes": {"version": "v1.35.0"}});
        let minor = Facts {
            desired_version: Some("v1.35.0".into()),
            ..live.clone()
        };
        assert_eq!(effect(version, &minor), Effect::Reset);
        let version = json!({"kubernetes": {"version": "v1.34.5"}});
        let patch = Facts {
            desired_version: Some("v1.34.5".into()),
            ..live.clone()
        };
        assert_eq!(effect(version, &patch), Effect::Restart);
    }

    /// A document with every optional field set, and an override of every
    /// component: each of its leaves is a value (none is null).
    fn every_field_set() -> Settings {
        let mut s = Settings::default()
            .patched(&json!({
                "kubernetes": {
                    "version": "v1.34.4",
                    "bundle": "/bundles/v1.34.4",
                    "serverUrl": "https://kubernetes.docker.internal:6443",
                    "extraSans": ["k8s.test"],
                    "hostKubeconfig": ["/mnt/c/Users/dev/.kube/config"],
                    "advertiseAddress": "192.0.2.10",
                },
                "proxy": {
                    "http": "http://proxy.test:3128",
                    "https": "http://proxy.test:3128",
                    "noProxy": ["corp.test"],
                },
            }))
            .unwrap();
        let names: Vec<&str> = s.components.iter().map(|(name, _)| name).collect();
        let mut components = Map::new();
        for name in names {
            components.insert(
                name.into(),
                json!({"extraArgs": ["--v=2"], "env": {"GOGC": "50"}}),
            );
        }
        s = s.patched(&json!({ "components": components })).unwrap();
        let nulls: Vec<String> = leaves(&s.to_value())
            .into_iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k)
            .collect();
        assert!(nulls.is_empty(), "set these too: {nulls:?}");
        s
    }

    #[test]
    fn every_setting_has_its_declared_effect() {
        let full = every_field_set();
        let mut keys: Vec<String> = Vec::new();
        for document in [Settings::default(), full] {
            keys.extend(leaves(&document.to_value()).into_iter().map(|(k, _)| k));
        }
        for key in &keys {
            assert!(
                declared_redo(key).is_some(),
                "{key}: declare its effect in EFFECTS"
            );
            let rows = EFFECTS
                .iter()
                .filter(|(pattern, _)| key_matches(pattern, key))
                .count();
            assert_eq!(rows, 1, "{key}: one row of EFFECTS, not {rows}");
        }
        // And every row is a setting's.
        for (pattern, _) in EFFECTS {
            assert!(
                keys.iter().any(|key| key_matches(pattern, key)),
                "{pattern}: a row of no setting"
            );
        }
        // A key with no row is refused, not restarted.
        assert_eq!(declared_redo("kubernetes.colour"), None);
        let err = effect_of("kubernetes.colour", &facts(true, true)).unwrap_err();
        assert_eq!(err.field, "kubernetes.colour");
    }

    #[test]
    fn a_components_override_restarts_that_component_only() {
        let current = Settings::default();
        let live = facts(true, true);
        let change = |patch: Value, facts: &Facts| {
            let desired = current.patched(&patch).unwrap();
            changes(&current, &desired, facts).unwrap()
        };
        let args = json!({"components": {"kube-apiserver": {"extraArgs": ["--v=3"]}}});
        let found = change(args.clone(), &live);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "components.kube-apiserver.extraArgs");
        assert_eq!(found[0].effect, Effect::RestartComponent);
        assert_eq!(found[0].component.as_deref(), Some("kube-apiserver"));
        assert_eq!(found[0].desired, json!(["--v=3"]));
        let shown = serde_json::to_value(&found[0]).unwrap();
        assert_eq!(shown["effect"], "restart-component");
        assert_eq!(shown["component"], "kube-apiserver");
        // Nothing runs: nothing restarts.
        assert_eq!(change(args, &facts(true, false))[0].effect, Effect::None);
        // A variable added, and taken out again: each is a change.
        let env = json!({"components": {"kubelet": {"env": {"GOGC": "50"}}}});
        let found = change(env, &live);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "components.kubelet.env.GOGC");
        assert_eq!(found[0].component.as_deref(), Some("kubelet"));
        let with = current
            .patched(&json!({"components": {"kubelet": {"env": {"GOGC": "50"}}}}))
            .unwrap();
        let without = with
            .patched(&json!({"components": {"kubelet": {"env": {"GOGC": null}}}}))
            .unwrap();
        assert_eq!(without, current);
        let found = changes(&with, &without, &live).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "components.kubelet.env.GOGC");
        assert_eq!(
            (&found[0].current, &found[0].desired),
            (&json!(HIDDEN), &Value::Null),
            "told as shown: a variable's value is write-only"
        );
        assert_eq!(found[0].effect, Effect::RestartComponent);
        // Another restart with it: the whole cluster's is the plan.
        let desired = current
            .patched(&json!({"kubernetes": {"apiPort": 6444}, "components": {"etcd": {"extraArgs": ["--log-level=debug"]}}}))
            .unwrap();
        let effects: Vec<Effect> = changes(&current, &desired, &live)
            .unwrap()
            .into_iter()
            .map(|c| c.effect)
            .collect();
        assert_eq!(effects, [Effect::Restart, Effect::RestartComponent]);
        assert!(Effect::RestartComponent < Effect::Restart);
    }

    #[test]
    fn component_overrides_are_checked_and_shown() {
        let settings = Settings::default();
        let refuse = |patch: Value| settings.patched(&patch).unwrap_err();
        let err = refuse(json!({"components": {"kube-dns": {"extraArgs": ["--v=2"]}}}));
        assert_eq!(err.field, "components.kube-dns", "{err}");
        assert!(
            err.message.contains("kube-apiserver"),
            "the known names: {err}"
        );
        let err = refuse(json!({"components": {"kubelet": {"extraArgs": ["v=2"]}}}));
        assert_eq!(err.field, "components.kubelet.extraArgs[0]");
        let err = refuse(json!({"components": {"kubelet": {"extraArgs": "--v=2"}}}));
        assert_eq!(err.field, "components.kubelet.extraArgs");
        let err = refuse(json!({"components": {"kubelet": {"env": {"1X": "a"}}}}));
        assert_eq!(err.field, "components.kubelet.env.1X");
        let err = refuse(json!({"components": {"kubelet": {"env": {"X": ["a"]}}}}));
        assert_eq!(err.field, "components.kubelet.env.X");
        let err = refuse(json!({"components": {"kubelet": {"flags": []}}}));
        assert_eq!(err.field, "components.kubelet.flags");
        // As `settings set` writes them.
        let patch = patch_from_assignments(&[
            r#"components.kube-apiserver.extraArgs=["--v=4"]"#,
            "components.kubelet.env.GOGC=50",
        ])
        .unwrap();
        let set = settings.patched(&patch).unwrap();
        assert_eq!(set.components.kube_apiserver.extra_args, ["--v=4"]);
        assert_eq!(set.components.kubelet.env["GOGC"], "50");
        // Shown as every other setting, and carried into the configuration.
        let shown: Vec<(String, Value)> = leaves(&set.to_value())
            .into_iter()
            .filter(|(k, _)| k.starts_with("components.kube"))
            .collect();
        assert!(shown.contains(&(
            "components.kube-apiserver.extraArgs".into(),
            json!(["--v=4"])
        )));
        assert!(shown.contains(&("components.kubelet.env.GOGC".into(), json!("50"))));
        assert!(shown.contains(&("components.kube-proxy.env".into(), json!({}))));
        let config = set.to_config(Path::new("/s"), "/b".into());
        assert_eq!(config.components, set.components);
        assert_eq!(
            Settings::from_config(&config, false).components,
            set.components
        );
    }

    /// Saved with a proxy password and a variable, as the daemon holds them.
    fn with_secrets() -> Settings {
        Settings::default()
            .patched(&json!({
                "proxy": {"http": "http://me:s3cret@proxy.test:3128", "https": null},
                "components": {"kubelet": {"env": {"TOKEN": "t0ken", "GOGC": "50"}}},
            }))
            .unwrap()
    }

    fn password(url: &Option<url::Url>) -> Option<&str> {
        url.as_ref().and_then(url::Url::password)
    }

    #[test]
    fn secrets_are_shown_hidden_and_saved_whole() {
        let saved = with_secrets();
        assert_eq!(password(&saved.proxy.http), Some("s3cret"));
        let shown = saved.redacted().to_value();
        assert_eq!(
            shown["proxy"]["http"],
            json!("http://me:********@proxy.test:3128/")
        );
        assert_eq!(
            shown["components"]["kubelet"]["env"],
            json!({"GOGC": HIDDEN, "TOKEN": HIDDEN})
        );
        let text = shown.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{text}"
        );
        // A URL without a password shows as it is; the flags are shown.
        let plain = Settings::default()
            .patched(&json!({"proxy": {"https": "http://me@proxy.test:3129"},
                "components": {"etcd": {"extraArgs": ["--v=2"]}}}))
            .unwrap();
        assert_eq!(plain.redacted(), plain);
        // The file keeps them, mode 0600.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        save(&path, &saved).unwrap();
        assert_eq!(load(&path), Ok(Some(saved)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_document_read_and_sent_back_keeps_its_secrets() {
        let saved = with_secrets();
        let shown = saved.redacted().to_value();
        let back = saved
            .patched(&json!({"proxy": shown["proxy"], "components": shown["components"]}))
            .unwrap();
        assert_eq!(back, saved);
        let found = changes(&saved, &back, &facts(true, true)).unwrap();
        assert!(found.is_empty(), "{found:?}");
        // As `settings set` sends it, and the page (only what was edited).
        let patch = patch_from_assignments(&[
            "proxy.http=http://me:********@proxy.test:3128",
            "components.kubelet.env.TOKEN=********",
        ])
        .unwrap();
        assert_eq!(saved.patched(&patch).unwrap(), saved);
        // The same user at the same host with no password keeps it, on
        // another port or scheme too (the machine and account are the same).
        for url in [
            "http://me@proxy.test:3128",
            "http://me@proxy.test:8080",
            "socks5://me:********@proxy.test:1080",
        ] {
            let kept = saved.patched(&json!({"proxy": {"http": url}})).unwrap();
            assert_eq!(password(&kept.proxy.http), Some("s3cret"), "{url}");
        }
        // One proxy for both: the HTTPS field takes the HTTP one's password.
        let both = saved
            .patched(&json!({"proxy": {"https": shown["proxy"]["http"]}}))
            .unwrap();
        assert_eq!(password(&both.proxy.https), Some("s3cret"));
    }

    #[test]
    fn a_typed_secret_replaces_and_null_removes() {
        let saved = with_secrets();
        let new = saved
            .patched(&json!({"proxy": {"http": "http://me:n3w@proxy.test:3128"},
                "components": {"kubelet": {"env": {"TOKEN": "n3wt0ken"}}}}))
            .unwrap();
        assert_eq!(password(&new.proxy.http), Some("n3w"));
        assert_eq!(new.components.kubelet.env["TOKEN"], "n3wt0ken");
        // A change of password is a change, told without either password.
        let found = changes(&saved, &new, &facts(true, true)).unwrap();
        let keys: Vec<&str> = found.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["proxy.http", "components.kubelet.env.TOKEN"]);
        assert_eq!(found[0].effect, Effect::Restart);
        assert_eq!(
            found[0].desired,
            json!("http://me:********@proxy.test:3128/")
        );
        assert_eq!(found[1].desired, json!(HIDDEN));
        let told = serde_json::to_string(&found).unwrap();
        for secret in ["s3cret", "n3w", "t0ken"] {
            assert!(!told.contains(secret), "{told}");
        }
        // Another user, or none: the credentials are the URL's.
        let other = saved
            .patched(&json!({"proxy": {"http": "http://you@proxy.test:3128"}}))
            .unwrap();
        assert_eq!(password(&other.proxy.http), None);
        let anonymous = saved
            .patched(&json!({"proxy": {"http": "http://proxy.test:3128"}}))
            .unwrap();
        assert_eq!(
            anonymous.proxy.http.unwrap().as_str(),
            "http://proxy.test:3128/"
        );
        // null removes the URL and its password, the variable and its value.
        let removed = saved
            .patched(&json!({"proxy": {"http": null},
                "components": {"kubelet": {"env": {"TOKEN": null}}}}))
            .unwrap();
        assert_eq!(removed.proxy.http, None);
        assert!(!removed.components.kubelet.env.contains_key("TOKEN"));
        // ... and nothing of them is left to keep.
        let err = removed
            .patched(&json!({"proxy": {"http": "http://me:********@proxy.test:3128"}}))
            .unwrap_err();
        assert_eq!(err.field, "proxy.http");
    }

    #[test]
    fn the_marker_is_never_saved_nor_a_password_carried_elsewhere() {
        let saved = with_secrets();
        for (url, field) in [
            // Another host, another user: refused, not carried there.
            ("http://me:********@evil.test:3128", "proxy.http"),
            ("http://you:********@proxy.test:3128", "proxy.http"),
            ("http://:********@proxy.test:3128", "proxy.http"),
        ] {
            let err = saved.patched(&json!({"proxy": {"http": url}})).unwrap_err();
            assert_eq!(err.field, field, "{url}: {err}");
            assert!(err.message.contains("type the password"), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let err = saved
            .patched(&json!({"proxy": {"https": "http://me:********@evil.test:3128"}}))
            .unwrap_err();
        assert_eq!(err.field, "proxy.https");
        // Nothing saved at all.
        let err = Settings::default()
            .patched(&json!({"proxy": {"https": "https://me:********@proxy.test"}}))
            .unwrap_err();
        assert_eq!(err.field, "proxy.https");
        // A variable: only the one that has a value, in the same component.
        let err = saved
            .patched(&json!({"components": {"kubelet": {"env": {"OTHER": HIDDEN}}}}))
            .unwrap_err();
        assert_eq!(err.field, "components.kubelet.env.OTHER");
        assert!(err.message.contains("type its value"), "{err}");
        let err = saved
            .patched(&json!({"components": {"etcd": {"env": {"TOKEN": HIDDEN}}}}))
            .unwrap_err();
        assert_eq!(err.field, "components.etcd.env.TOKEN");
    }

    #[test]
    fn saved_settings_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        assert_eq!(load(&path), Ok(None));
        let settings = Settings::default()
            .patched(&json!({"kubernetes": {"enabled": true}}))
            .unwrap();
        save(&path, &settings).unwrap();
        assert_eq!(load(&path), Ok(Some(settings)));
        std::fs::write(&path, br#"{"kubernetes": {"apiPort": "x"}}"#).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.contains("kubernetes.apiPort"), "{err}");
        std::fs::write(&path, b"{").unwrap();
        assert!(load(&path).unwrap_err().contains("cut short"));
    }

    #[test]
    fn an_earlier_managers_config_carries_over() {
        let mut config = ClusterConfig::new("/s".into(), "/b/v1.34.4".into());
        config.api_port = 6555;
        config.host_kubeconfig = Some("/mnt/c/Users/dev/.kube/config".into());
        config.server_url = Some("https://kubernetes.docker.internal:6555".parse().unwrap());
        config.pod_cidr = "10.200.0.0/16".parse().unwrap();
        let settings = Settings::from_config(&config, true);
        assert!(settings.kubernetes.enabled);
        assert_eq!(settings.kubernetes.api_port, 6555);
        let back = settings.to_config(Path::new("/s"), "/b/v1.34.4".into());
        assert_eq!(back, config);
    }
}

//! What the phases of enable do, over a narrow context ([`PhaseContext`]):
//! where to report, the supervisor, the container runtime, the machine, the
//! cluster's endpoints, the phase's deadline and the cancel signal; never
//! the engine. The order, the overlaps and the deadlines are the table in
//! [`super::pipeline`]. Each phase is idempotent; a failure names the phase,
//! what was expected, and the last log lines of the component at fault.
//! Time is tokio's (paused in the unit tests).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::cancel::CancelSignal;
use super::config::ClusterConfig;
use super::event::{Event, Progress};
use super::host::{self, ClusterApi, ContainerRuntime, Host, ImageImport, Machine, Processes};
use super::proxy;
use super::state::Phase;
use crate::bundle::Manifest;
use crate::components::{self, ApiServer, Cgroups, Component, Context, Etcd, Kubelet};
use crate::error::chain;
use crate::pki::SubjectAltName;
use crate::supervisor;

/// Processes of a dead manager get little time to stop: nothing waits on
/// them, and the new manager needs their ports.
pub const STALE_GRACE: Duration = Duration::from_secs(2);
/// The processes left by a manager that died which are asked to stop, not
/// killed: etcd, the one that owns the cluster's data.
pub const GRACEFUL: &[&str] = &["etcd"];
/// Log lines of the component at fault shown with an error.
const LOG_LINES: usize = 15;

/// Why an operation failed: what the API's `done` event carries and what a
/// GUI shows. `code` is a stable reason to act on; `problems` lists what
/// preflight found (one entry each); `logs` are the last lines of the
/// component at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseError {
    pub phase: Phase,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The last lines of the log of the component at fault, if one is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

/// The codes of [`PhaseError`].
pub mod code {
    /// A phase failed; the message says how.
    pub const PHASE_FAILED: &str = "PhaseFailed";
    /// A phase did not finish within its deadline.
    pub const PHASE_TIMEOUT: &str = "PhaseTimeout";
    /// The machine or the bundle is not ready for a cluster: see `problems`.
    pub const PREFLIGHT_FAILED: &str = "PreflightFailed";
    /// The settings themselves are wrong.
    pub const INVALID_SETTINGS: &str = "InvalidSettings";
    /// The operation was cancelled (by a disable, a reset, the daemon's
    /// shutdown): not a failure; the message says what cancelled it.
    pub const CANCELLED: &str = "Cancelled";
}

impl PhaseError {
    pub fn new(phase: Phase, message: impl Into<String>) -> PhaseError {
        PhaseError::with_code(phase, code::PHASE_FAILED, message)
    }

    pub fn with_code(phase: Phase, code: &str, message: impl Into<String>) -> PhaseError {
        PhaseError {
            phase,
            code: code.to_string(),
            message: message.into(),
            problems: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn with_logs(mut self, ctx: &Context, component: &dyn Component) -> PhaseError {
        let log = ctx.paths.log(component.name());
        self.logs = supervisor::tail_log(&log, LOG_LINES, component.log_noise());
        if !self.logs.is_empty() {
            self.message
                .push_str(&format!(" (last lines of {}:)", log.display()));
        }
        self
    }
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error execution phase {}: {}", self.phase, self.message)?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        for line in &self.logs {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PhaseError {}

/// What the phases of one enable see.
pub struct PhaseContext<'a> {
    pub progress: &'a dyn Progress,
    pub processes: &'a dyn Processes,
    pub runtime: &'a dyn ContainerRuntime,
    pub machine: &'a dyn Machine,
    pub units: &'a crate::controllers::Handles,
    /// The cluster's endpoints; its clients are made on first use.
    pub api: &'a dyn ClusterApi,
    pub cancel: CancelSignal,
    /// The running phase's deadline (set by the runner).
    pub deadline: Duration,
    pub config: &'a ClusterConfig,
    /// What the components are configured from.
    pub components: Context,
    pub bundle: Manifest,
    /// The image import, running in the background from preflight on.
    images: Option<BackgroundTask>,
}

/// A background task that ends when its owner drops it: a failed or
/// cancelled enable leaves no import running (nor its `ctr`).
struct BackgroundTask(tokio::task::JoinHandle<Result<(), String>>);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<'a> PhaseContext<'a> {
    /// The context of an enable with `config`, once the settings are valid
    /// and the bundle's manifest is read (a failure here is preflight's).
    pub fn new(
        host: Host<'a>,
        api: &'a dyn ClusterApi,
        cancel: CancelSignal,
        config: &'a ClusterConfig,
    ) -> Result<PhaseContext<'a>, PhaseError> {
        config
            .validate()
            .map_err(|e| PhaseError::with_code(Phase::Preflight, code::INVALID_SETTINGS, e))?;
        let bundle = Manifest::load(&config.bundle)
            .map_err(|e| PhaseError::new(Phase::Preflight, chain(&e)))?;
        let advertise_address = config
            .advertise_address
            .or_else(super::config::default_route_address)
            .ok_or_else(|| {
                PhaseError::new(
                    Phase::Preflight,
                    "cannot tell the VM's address (no default route): pass --advertise-address",
                )
            })?;
        let proxy_env = config
            .proxy
            .environment(&proxy::ClusterNetwork::of(config, advertise_address));
        let components = Context {
            paths: config.paths(),
            config: config.clone(),
            bin: config.bundle.join("bin"),
            checked: BTreeMap::new(),
            kubernetes_version: bundle.kubernetes.clone(),
            advertise_address,
            cgroup: Cgroups::detect(),
            resolv_conf: components::pod_resolv_conf(),
            proxy_env,
        };
        Ok(PhaseContext {
            progress: host.progress,
            processes: host.processes,
            runtime: host.runtime,
            machine: host.machine,
            units: host.units,
            api,
            cancel,
            deadline: Duration::ZERO,
            config,
            components,
            bundle,
            images: None,
        })
    }

    fn notice(&self, message: String) {
        self.progress.emit(Event::Notice { message });
    }

    /// Begins background work.
    pub fn begin(&mut self, background: Background) {
        match background {
            Background::ImageImport => {
                let import = ImageImport {
                    bundle: self.config.bundle.clone(),
                    images: self.bundle.images.clone(),
                    pause: self
                        .bundle
                        .image("registry.k8s.io/pause")
                        .map(|i| i.reference.clone()),
                };
                let task = tokio::spawn(self.runtime.import_images(import));
                self.images = Some(BackgroundTask(task));
            }
        }
    }
}

/// containerd's proxy file, rewritten in preflight: the first phase of every
/// enable, before any image is imported or pulled, next to the check that
/// containerd answers. containerd reads it when vm/prepare-vm.sh next runs;
/// until then, a containerd that runs with other proxy settings is told.
fn write_proxy_file(cx: &PhaseContext<'_>) -> Vec<String> {
    let (path, env) = (&cx.components.paths.proxy_env, &cx.components.proxy_env);
    let changed = match proxy::write_env_file(path, env) {
        Ok(changed) => changed,
        Err(err) => return vec![format!("{}: {err}", path.display())],
    };
    if (changed || !env.is_empty()) && proxy::containerd_differs(env) == Some(true) {
        cx.notice(format!(
            "containerd runs with other proxy settings than {}: image pulls use the old ones \
             until vm/prepare-vm.sh runs again (it restarts containerd with them)",
            path.display()
        ));
    }
    Vec::new()
}

/// The work of a phase, besides starting components and waiting on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Ends what a dead manager left, checks the machine, the bundle and containerd.
    Preflight,
    /// The PKI.
    Certs,
    /// The components' kubeconfigs.
    Kubeconfigs,
    /// The pod network's CNI configuration.
    Cni,
    /// The first start of an empty etcd data folder is marked (see [`etcd_first_start`]).
    EtcdFirstStart,
    /// etcd served: its first start is done.
    EtcdServed,
    /// The `kubernetes` Service's endpoint, applied once the API answers.
    ApiEndpoint,
    /// CoreDNS, RBAC and the StorageClass, applied.
    Bootstrap,
    /// The in-process units ([`crate::controllers`]): started once the API
    /// answers and what they rely on (RBAC, StorageClasses) is applied.
    Controllers,
    /// The admin context into the user's kubeconfig.
    Export,
}

/// Work that runs in the background across phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// The bundle's images into containerd (a cold import overlaps the
    /// control plane's start).
    ImageImport,
}

/// What a phase waits on before it ends.
#[derive(Clone, Copy)]
pub enum Wait {
    /// The component answers its probe.
    Ready(&'static dyn Component),
    /// The background image import is done (begun now if it was not).
    ImageImport,
    /// The node reports Ready, with a status from the kubelet running now.
    NodeReady,
    /// A CoreDNS pod is Ready and answers.
    CoreDnsAnswers,
}

pub(super) async fn work(work: Work, cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    match work {
        Work::Preflight => preflight(cx).await,
        Work::Certs => certs(cx).await,
        Work::Kubeconfigs => kubeconfigs(cx).await,
        Work::Cni => cni(cx),
        Work::EtcdFirstStart => etcd_first_start(cx).await,
        Work::EtcdServed => etcd_served(cx),
        Work::ApiEndpoint => api_endpoint(cx).await,
        Work::Bootstrap => bootstrap(cx).await,
        Work::Controllers => controllers(cx).await,
        Work::Export => export(cx).await,
    }
}

async fn preflight(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    // Children of a manager that died are ended first: they hold the ports
    // that the checks below want free.
    let ours: Vec<u32> = cx
        .processes
        .status()
        .await
        .iter()
        .filter_map(|c| c.pid)
        .collect();
    let ended = cx.processes.end_stale(ours, STALE_GRACE, GRACEFUL).await;
    if !ended.is_empty() {
        let names: Vec<String> = ended
            .iter()
            .map(|p| format!("{} ({})", p.component, p.pid))
            .collect();
        cx.notice(format!(
            "ended processes left by an earlier manager: {}",
            names.join(", ")
        ));
    }
    // On a re-enable of a running cluster, its own components hold its ports.
    let ports_are_ours = !cx.processes.status().await.is_empty();
    let mut findings = cx.machine.check_host(cx.config, ports_are_ours);
    let marker = cx.components.paths.bundle_verified.clone();
    match cx
        .machine
        .check_bundle(cx.config.bundle.clone(), marker)
        .await
    {
        Ok(checked) => cx.components.checked = checked,
        Err(problems) => findings.problems.extend(problems),
    }
    findings.problems.extend(cx.runtime.check().await);
    findings.problems.extend(write_proxy_file(cx));
    for warning in &findings.warnings {
        cx.notice(format!("warning: {warning}"));
    }
    if findings.problems.is_empty() {
        Ok(())
    } else {
        let mut err = PhaseError::with_code(
            Phase::Preflight,
            code::PREFLIGHT_FAILED,
            format!("{} problem(s):", findings.problems.len()),
        );
        err.problems = findings.problems;
        Err(err)
    }
}

/// The first start of etcd, made safe to interrupt.
///
/// A member stopped during its very first start, after it created its
/// write-ahead log and before it wrote the first entries there (the new
/// cluster's membership), comes back with no members: it never elects
/// itself, and answers "RAFT NO LEADER" for ever. So the first start of an
/// empty data folder is marked (`etcd.first-start`) until etcd serves. A
/// mark still there at the next start means the folder never served, so it
/// holds nothing of the cluster's (the API server stores nothing before
/// etcd serves, and the enable that made it never got past this phase):
/// it is made again from empty.
async fn etcd_first_start(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let paths = &cx.components.paths;
    let running = host::child_status(cx.processes, Etcd.name())
        .await
        .is_some_and(|c| c.state == supervisor::RunState::Running);
    if !running && paths.etcd_first_start.exists() {
        match std::fs::remove_dir_all(&paths.etcd_data) {
            Ok(()) => cx.notice(
                "etcd's first start was cut short before it served; its data folder, \
                 empty of cluster data, is made again"
                    .into(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(Phase::Etcd, &paths.etcd_data, e)),
        }
    }
    if !paths.etcd_data.join("member").exists() {
        crate::fsutil::write_atomic(&paths.etcd_first_start, b"", 0o600)
            .map_err(|e| io_error(Phase::Etcd, &paths.etcd_first_start, e))?;
    }
    Ok(())
}

fn etcd_served(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let mark = &cx.components.paths.etcd_first_start;
    crate::fsutil::remove_file_durably(mark).map_err(|e| io_error(Phase::Etcd, mark, e))
}

fn io_error(phase: Phase, path: &std::path::Path, err: std::io::Error) -> PhaseError {
    PhaseError::new(phase, format!("{}: {err}", path.display()))
}

/// Starts the components (a no-op for those already running as asked).
pub(super) async fn start(
    cx: &PhaseContext<'_>,
    phase: Phase,
    components: &[&dyn Component],
) -> Result<(), PhaseError> {
    for component in components {
        component.prepare(&cx.components).map_err(|e| {
            PhaseError::new(
                phase,
                format!("writing {}'s configuration: {e}", component.name()),
            )
        })?;
        cx.processes
            .start(component.spec(&cx.components), component.stop_grace())
            .await
            .map_err(|e| PhaseError::new(phase, chain(&e)).with_logs(&cx.components, *component))?;
    }
    Ok(())
}

/// Waits on each of `waits`, all at once.
pub(super) async fn wait_all(
    cx: &mut PhaseContext<'_>,
    phase: Phase,
    waits: &[Wait],
) -> Result<(), PhaseError> {
    // The import is the one wait that needs the context mutably: taken first.
    let import = if waits.iter().any(|w| matches!(w, Wait::ImageImport)) {
        if cx.images.is_none() {
            cx.begin(Background::ImageImport);
        }
        cx.images.take()
    } else {
        None
    };
    let cx = &*cx;
    let waits = waits.iter().map(|wait| async move {
        match *wait {
            Wait::Ready(component) => wait_ready(cx, phase, component).await,
            Wait::ImageImport => Ok(()),
            Wait::NodeReady => wait_node(cx).await,
            Wait::CoreDnsAnswers => wait_dns(cx).await,
        }
    });
    let import = async {
        let Some(mut task) = import else {
            return Ok(());
        };
        match (&mut task.0).await {
            Ok(result) => result.map_err(|e| PhaseError::new(phase, e)),
            Err(err) => Err(PhaseError::new(
                phase,
                format!("the image import stopped: {err}"),
            )),
        }
    };
    futures::future::try_join(futures::future::try_join_all(waits), import)
        .await
        .map(|_| ())
}

/// Polls a component's probe until it answers, within the phase's deadline
/// (minus a margin, so that this error, with its logs, wins over the bare timeout).
pub(super) async fn wait_ready(
    cx: &PhaseContext<'_>,
    phase: Phase,
    component: &dyn Component,
) -> Result<(), PhaseError> {
    let probe = component.probe(&cx.components);
    let limit = cx.deadline.saturating_sub(Duration::from_secs(2));
    let start = Instant::now();
    loop {
        let last = match cx.api.probe(component.name(), &probe).await {
            Ok(()) => return Ok(()),
            Err(seen) => seen,
        };
        if let Some(status) = host::child_status(cx.processes, component.name()).await
            && status.restarts >= 3
        {
            let message = format!(
                "{} keeps exiting ({} restarts, last: {})",
                component.name(),
                status.restarts,
                status.last_exit.unwrap_or_default()
            );
            return Err(PhaseError::new(phase, message).with_logs(&cx.components, component));
        }
        if start.elapsed() >= limit {
            return Err(PhaseError::new(
                phase,
                format!(
                    "{} not ready within {}s; last probe: {last}",
                    component.name(),
                    limit.as_secs()
                ),
            )
            .with_logs(&cx.components, component));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The PKI: made once, then kept; leaves within the renewal window, or that
/// no longer cover the names asked for, are re-issued under the same CA.
pub(super) async fn certs(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let phase = Phase::Certs;
    let config = cx.config;
    let mut pki = crate::pki::PkiConfig::new(
        &cx.components.paths.pki,
        &config.node_name,
        cx.components.advertise_address,
    );
    pki.service_cidr = config.service_cidr.into();
    pki.dns_domain = config.cluster_domain.clone();
    pki.renew_within = config.renew_within();
    let server_host = match config.server_host() {
        url::Host::Domain(name) => SubjectAltName::Dns(name),
        url::Host::Ipv4(ip) => SubjectAltName::Ip(ip.into()),
        url::Host::Ipv6(ip) => SubjectAltName::Ip(ip.into()),
    };
    for san in config.extra_sans.iter() {
        let san = san
            .parse()
            .map_err(|e: crate::pki::InvalidSan| PhaseError::new(phase, chain(&e)))?;
        if !pki.extra_sans.contains(&san) {
            pki.extra_sans.push(san);
        }
    }
    if !pki.extra_sans.contains(&server_host) {
        pki.extra_sans.push(server_host);
    }
    // Making keys blocks: off the runtime's threads, where a cancel is still seen.
    let outcomes = host::blocking(move || crate::pki::ensure(&pki))
        .await
        .map_err(|e| PhaseError::new(phase, chain(&e)))?;
    report_outcomes(cx.progress, &outcomes);
    Ok(())
}

fn report_outcomes(progress: &dyn Progress, outcomes: &[crate::pki::Outcome]) {
    for outcome in outcomes {
        if let crate::pki::Action::Reissued(_) = outcome.action {
            progress.emit(Event::Notice {
                message: format!("certificate {} {}", outcome.name, outcome.action),
            });
        }
    }
}

/// The components' kubeconfigs, all pointing at the API server on loopback.
async fn kubeconfigs(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let server = format!("https://127.0.0.1:{}", cx.config.api_port);
    let mut files = crate::pki::kubeconfigs::KubeconfigsConfig::new(
        &cx.components.paths.pki,
        &cx.components.paths.kubeconfigs,
        server,
        &cx.config.node_name,
    );
    files.renew_within = cx.config.renew_within();
    let outcomes = host::blocking(move || crate::pki::kubeconfigs::write_all(&files))
        .await
        .map_err(|e| PhaseError::new(Phase::Kubeconfigs, chain(&e)))?;
    report_outcomes(cx.progress, &outcomes);
    Ok(())
}

/// The `kubernetes` Service's endpoint (the API server's own reconciler is
/// off: `manifests/apiserver-endpoints.yaml` says why), at the node's address
/// of the day.
async fn api_endpoint(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let values = BTreeMap::from([
        (
            "ADVERTISE_ADDRESS",
            cx.components.advertise_address.to_string(),
        ),
        ("API_PORT", cx.config.api_port.to_string()),
    ]);
    apply(
        cx,
        Phase::KubeApiserver,
        crate::bootstrap::API_ENDPOINT,
        values,
    )
    .await
}

async fn bootstrap(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let phase = Phase::Bootstrap;
    let coredns = cx
        .bundle
        .image("registry.k8s.io/coredns/coredns")
        .map(|i| i.reference.clone())
        .ok_or_else(|| PhaseError::new(phase, "the bundle carries no CoreDNS image"))?;
    let values = BTreeMap::from([
        ("CLUSTER_DNS", cx.config.cluster_dns.to_string()),
        ("CLUSTER_DOMAIN", cx.config.cluster_domain.clone()),
        ("COREDNS_IMAGE", coredns),
    ]);
    apply(cx, phase, crate::bootstrap::MANIFESTS, values).await
}

/// Applies `manifests` within the phase's deadline; a failure shows the
/// API server's log.
async fn apply(
    cx: &PhaseContext<'_>,
    phase: Phase,
    manifests: crate::bootstrap::Manifests,
    values: BTreeMap<&'static str, String>,
) -> Result<(), PhaseError> {
    cx.api
        .apply_manifests(
            manifests,
            values,
            cx.deadline.saturating_sub(Duration::from_secs(5)),
        )
        .await
        .map_err(|e| PhaseError::new(phase, e).with_logs(&cx.components, &ApiServer))
}

/// Starts the in-process units afresh: each reads the admin kubeconfig when
/// it starts, and an enable may have changed it (another API port), so one
/// still running from before is stopped first. They are idempotent: a
/// restart costs a list of what they watch.
async fn controllers(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    for unit in crate::controllers::units(cx.config, cx.units) {
        cx.processes
            .stop(&unit.name, crate::controllers::STOP_GRACE)
            .await;
        cx.processes
            .start_task(unit, crate::controllers::STOP_GRACE)
            .await;
    }
    Ok(())
}

async fn wait_node(cx: &PhaseContext<'_>) -> Result<(), PhaseError> {
    let node = &cx.config.node_name;
    crate::bootstrap::wait::until(
        "node Ready",
        cx.deadline.saturating_sub(Duration::from_secs(2)),
        || async {
            // Only a status from the kubelet running now counts; when this
            // enable left an earlier kubelet running, that is still the one.
            let since = host::child_status(cx.processes, Kubelet.name())
                .await
                .and_then(|k| k.up_since)
                .and_then(|t| {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .ok_or("the kubelet is not running (it is being restarted)")?;
            cx.api.node_ready(node, since.unix_timestamp()).await
        },
    )
    .await
    .map_err(|e| PhaseError::new(Phase::WaitNode, chain(&e)).with_logs(&cx.components, &Kubelet))
}

/// A CoreDNS pod is Ready and answers, for the API's own Service name, what
/// the Service's address is: what every pod's first DNS lookup needs.
async fn wait_dns(cx: &PhaseContext<'_>) -> Result<(), PhaseError> {
    let name = format!("kubernetes.default.svc.{}.", cx.config.cluster_domain);
    let api_service = crate::pki::ServiceCidr::from(cx.config.service_cidr).first_ip();
    crate::bootstrap::wait::until(
        "CoreDNS",
        cx.deadline.saturating_sub(Duration::from_secs(2)),
        || cx.api.coredns_answers(&name, api_service),
    )
    .await
    .map_err(|e| PhaseError::new(Phase::WaitDns, chain(&e)).with_logs(&cx.components, &Kubelet))
}

/// The pod network's CNI configuration, in containerd's CNI folder.
fn cni(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let network = crate::runtime::CniNetwork::new(cx.config.node_pod_subnet());
    crate::runtime::cni::write_cni_config(&cx.config.cni_conf_dir, &network)
        .map_err(|e| PhaseError::new(Phase::Cni, chain(&e)))?;
    Ok(())
}

/// The admin context into the user's kubeconfig and the VM user's. The
/// merge may wait for another writer's lock: off the runtime's threads, where
/// a cancel is still seen.
async fn export(cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let config = cx.config.clone();
    let admin = cx.components.paths.admin_kubeconfig();
    let files = host::blocking(move || super::export::merge(&config, &admin))
        .await
        .map_err(|e| PhaseError::new(Phase::Export, e))?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    tracing::info!(
        "context {} merged into {}",
        cx.config.context_name,
        names.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_phase_and_show_logs() {
        let mut err = PhaseError::new(
            Phase::Etcd,
            "etcd not ready within 43s; last probe: connection refused",
        );
        err.logs = vec!["line one".into(), "line two".into()];
        assert_eq!(
            err.to_string(),
            "error execution phase etcd: etcd not ready within 43s; last probe: connection refused\n    line one\n    line two"
        );
    }
}

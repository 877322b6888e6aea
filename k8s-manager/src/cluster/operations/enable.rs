//! `enable`: brings the cluster up (or back), idempotently: on a running
//! cluster it re-checks every step and changes only what differs.
//!
//! The schedule is [`schedule`], one step per row, each with its own work
//! below, in the order they run. Two overlaps keep it fast, and read in the
//! steps' work: the image import runs in the background from preflight to
//! the images step, and the processes that only wait for the API server are
//! started while it comes up (their own steps then find them running and
//! wait for their probes). Each step is idempotent; a failure names the
//! step, what was expected, and the last log lines of the component at
//! fault.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::cluster::context::{Background, PhaseContext, Wait, WithLogs};
use crate::cluster::host;
use crate::cluster::operation::{Needs, Operation, Shown, Step, Turn, World, run_steps};
use crate::cluster::progress::Progress;
use crate::components::{
    ApiServer, Component, ControllerManager, Etcd, KubeProxy, Kubelet, Scheduler,
};
use crate::error::chain;
use crate::model::config::ClusterConfig;
use crate::model::error::{OperationError, code};
use crate::model::event::Event;
use crate::model::proxy;
use crate::model::state::{ClusterState, Phase};
use crate::pki::SubjectAltName;
use crate::supervisor;

/// Processes of a dead manager get little time to stop: nothing waits on
/// them, and the new manager needs their ports.
pub const STALE_GRACE: Duration = Duration::from_secs(2);
/// The processes left by a manager that died which are asked to stop, not
/// killed: etcd, the one that owns the cluster's data.
pub const GRACEFUL: &[&str] = &["etcd"];

/// The operation: the cluster of `config`, up.
pub struct Enable {
    pub config: ClusterConfig,
}

impl Operation for Enable {
    fn name(&self) -> &'static str {
        "enable"
    }

    fn needs(&self) -> Needs {
        Needs::Nothing
    }

    fn turn(&self) -> Turn {
        Turn::CancelledByStops
    }

    fn done(&self, seconds: f64) -> String {
        format!("cluster ready in {seconds:.1}s")
    }

    fn target(&self) -> Option<&ClusterConfig> {
        Some(&self.config)
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        enable(world, &self.config, world.cancel.clone()).boxed()
    }
}

/// The cluster of `config` brought up under `cancel`: the record keeps the
/// configuration, then the schedule runs; the cluster runs once it is done.
pub(crate) async fn enable(
    world: &World<'_>,
    config: &ClusterConfig,
    cancel: crate::cluster::cancel::CancelSignal,
) -> Result<(), OperationError> {
    forget_old_context(world, config);
    world.host.progress.made(Some(config));
    let mut cx = PhaseContext::new(world.host, world.api, cancel, config)?;
    run_steps(&schedule(), &mut cx, Shown::AsStarting).await?;
    world.host.progress.set_state(ClusterState::Running);
    Ok(())
}

/// When the settings name another context or other kubeconfigs than the
/// ones the cluster was last exported into, our entries leave those (the
/// export then writes the new ones): a renamed context does not leave the
/// old one behind, pointing at nothing.
fn forget_old_context(world: &World<'_>, config: &ClusterConfig) {
    let Some(old) = &world.last_made else {
        return;
    };
    let moved = old.context_name != config.context_name
        || old.host_kubeconfig != config.host_kubeconfig
        || old.merge_vm_kubeconfig != config.merge_vm_kubeconfig;
    if !moved {
        return;
    }
    for error in crate::cluster::export::remove(old) {
        world.host.progress.notice(format!(
            "warning: the old context {:?}: {error}",
            old.context_name
        ));
    }
}

type Cx<'b> = PhaseContext<'b>;
type Done<'a> = BoxFuture<'a, Result<(), OperationError>>;

/// The enable schedule. Deadlines are generous for a slow machine, never endless.
pub fn schedule<'b>() -> [Step<Cx<'b>>; 14] {
    [
        Step::new("preflight", "checking the machine", 20, preflight_step),
        Step::new("certs", "certificates", 20, certs_step),
        Step::new("kubeconfigs", "component kubeconfigs", 20, kubeconfigs_step),
        Step::new("cni", "pod network configuration", 20, cni_step),
        Step::new("etcd", "starting etcd", 45, etcd_step),
        Step::new(
            "kube-apiserver",
            "starting kube-apiserver",
            90,
            apiserver_step,
        ),
        Step::new(
            "control-plane",
            "starting controller-manager and scheduler",
            45,
            control_plane_step,
        ),
        Step::new(
            "images",
            "importing pause and CoreDNS images",
            90,
            images_step,
        ),
        Step::new("kubelet", "starting kubelet", 45, kubelet_step),
        Step::new("kube-proxy", "starting kube-proxy", 45, kube_proxy_step),
        Step::new("bootstrap", "applying CoreDNS and RBAC", 90, bootstrap_step),
        Step::new(
            "wait-node",
            "waiting for the node to be Ready",
            90,
            wait_node_step,
        ),
        Step::new(
            "wait-dns",
            "waiting for CoreDNS to answer",
            120,
            wait_dns_step,
        ),
        Step::new("export", "merging the kubeconfig", 30, export_step),
    ]
}

/// Ends what a dead manager left, checks the machine, the bundle and
/// containerd; the image import begins in the background.
fn preflight_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move {
        preflight(cx).await?;
        cx.begin(Background::ImageImport)
    }
    .boxed()
}

fn certs_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    certs(cx).boxed()
}

fn kubeconfigs_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    kubeconfigs(cx).boxed()
}

fn cni_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move { cni(cx) }.boxed()
}

/// etcd, its first start marked until it serves. The API server retries
/// its etcd connection: its start-up overlaps etcd's (started after etcd,
/// so that the stop, in reverse, ends it first).
fn etcd_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move {
        etcd_first_start(cx).await?;
        cx.start(&[&Etcd]).await?;
        cx.start_early(&[&ApiServer]).await;
        cx.wait(&[Wait::Ready(&Etcd)]).await?;
        etcd_served(cx)
    }
    .boxed()
}

/// The API server (one running with other settings is handed over to a new
/// instance: no call fails). What only waits for the API to answer starts
/// now: each connects the moment it does. The `kubernetes` Service's
/// endpoint is applied as soon as the API answers, before kube-proxy's
/// first sync.
fn apiserver_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move {
        crate::cluster::rollout::start_handing_over(cx, &ApiServer).await?;
        cx.start_early(&crate::cluster::order::clients_of(&ApiServer))
            .await;
        cx.wait(&[Wait::Ready(&ApiServer)]).await?;
        api_bootstrapped(cx)?;
        api_endpoint(cx).await
    }
    .boxed()
}

/// Records that this version's API server came up fully ready on this etcd
/// data (every check passed, the bootstrap hooks' included): its next start
/// need not wait for them (`components::apiserver`).
fn api_bootstrapped(cx: &mut PhaseContext<'_>) -> Result<(), OperationError> {
    if cx.components.api_bootstrapped {
        return Ok(());
    }
    let mark = &cx.components.paths.api_bootstrapped;
    let version = cx.components.kubernetes_version.clone();
    crate::fsutil::write_atomic(mark, version.as_bytes(), 0o600)
        .map_err(|e| io_error(&cx.phase, mark, e))?;
    cx.components.api_bootstrapped = true;
    Ok(())
}

fn control_plane_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    started_and_ready(cx, &[&ControllerManager, &Scheduler])
}

/// The background import, begun in preflight, is done.
fn images_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move { cx.wait(&[Wait::ImageImport]).await }.boxed()
}

fn kubelet_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    started_and_ready(cx, &[&Kubelet])
}

fn kube_proxy_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    started_and_ready(cx, &[&KubeProxy])
}

/// CoreDNS, RBAC and the StorageClass applied; then the in-process units
/// (the volume provisioner, ...): the API answers, and what they rely on is
/// applied.
fn bootstrap_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move {
        bootstrap(cx).await?;
        crate::cluster::rollout::restart_units(cx.processes, cx.config, cx.units, None).await;
        Ok(())
    }
    .boxed()
}

fn wait_node_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move { cx.wait(&[Wait::NodeReady]).await }.boxed()
}

fn wait_dns_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    async move { cx.wait(&[Wait::CoreDnsAnswers]).await }.boxed()
}

fn export_step<'a>(cx: &'a mut Cx<'_>) -> Done<'a> {
    export(cx).boxed()
}

/// Starts `components` and waits until each answers its probe.
fn started_and_ready<'a>(
    cx: &'a mut Cx<'_>,
    components: &'static [&'static dyn Component],
) -> Done<'a> {
    async move {
        cx.start(components).await?;
        let waits: Vec<Wait> = components.iter().map(|&c| Wait::Ready(c)).collect();
        cx.wait(&waits).await
    }
    .boxed()
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

async fn preflight(cx: &mut PhaseContext<'_>) -> Result<(), OperationError> {
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
    // What an earlier manager left open in the state folder (0755 folders,
    // logs and state readable by all) is narrowed at each enable too.
    match cx.components.paths.restrict_modes(0o710) {
        Ok(changed) => {
            for path in changed {
                tracing::info!(
                    "made private what an earlier manager left open: {}",
                    path.display()
                );
            }
        }
        Err(err) => findings
            .warnings
            .push(format!("cannot make the state folder private: {err}")),
    }
    // Saved by a manager that owned fewer flags: left out, and said.
    for refused in crate::components::overrides::refused(&cx.config.components) {
        findings
            .warnings
            .push(format!("{refused}; it is left out of the command line"));
    }
    for warning in &findings.warnings {
        cx.notice(format!("warning: {warning}"));
    }
    if findings.problems.is_empty() {
        Ok(())
    } else {
        let mut err = OperationError::with_code(
            cx.phase.clone(),
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
async fn etcd_first_start(cx: &mut PhaseContext<'_>) -> Result<(), OperationError> {
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
            Err(e) => return Err(io_error(&cx.phase, &paths.etcd_data, e)),
        }
    }
    if !paths.etcd_data.join("member").exists() {
        // New data: nothing is bootstrapped in it yet.
        crate::fsutil::remove_file_durably(&paths.api_bootstrapped)
            .map_err(|e| io_error(&cx.phase, &paths.api_bootstrapped, e))?;
        cx.components.api_bootstrapped = false;
        crate::fsutil::write_atomic(&paths.etcd_first_start, b"", 0o600)
            .map_err(|e| io_error(&cx.phase, &paths.etcd_first_start, e))?;
    }
    Ok(())
}

fn etcd_served(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let mark = &cx.components.paths.etcd_first_start;
    crate::fsutil::remove_file_durably(mark).map_err(|e| io_error(&cx.phase, mark, e))
}

fn io_error(phase: &Phase, path: &std::path::Path, err: std::io::Error) -> OperationError {
    OperationError::new(phase.clone(), format!("{}: {err}", path.display()))
}

/// The PKI: made once, then kept; leaves within the renewal window, or that
/// no longer cover the names asked for, are re-issued under the same CA.
pub(crate) async fn certs(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
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
            .map_err(|e: crate::pki::InvalidSan| cx.fail(chain(&e)))?;
        if !pki.extra_sans.contains(&san) {
            pki.extra_sans.push(san);
        }
    }
    if !pki.extra_sans.contains(&server_host) {
        pki.extra_sans.push(server_host);
    }
    // Making keys blocks: off the runtime's threads, where a cancel is still seen.
    let outcomes = crate::offload::blocking(move || crate::pki::ensure(&pki))
        .await
        .map_err(|e| cx.fail(chain(&e)))?;
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
async fn kubeconfigs(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let files = kubeconfigs_config(&cx.components.paths, cx.config);
    let outcomes = crate::offload::blocking(move || crate::pki::kubeconfigs::write_all(&files))
        .await
        .map_err(|e| cx.fail(chain(&e)))?;
    report_outcomes(cx.progress, &outcomes);
    Ok(())
}

/// The components' kubeconfigs of the cluster of `config`, all pointing at
/// the API server on loopback: what the kubeconfigs step writes, and what a
/// renewal and a CA rotation write again.
pub(crate) fn kubeconfigs_config(
    paths: &crate::model::config::Paths,
    config: &ClusterConfig,
) -> crate::pki::kubeconfigs::KubeconfigsConfig {
    let mut files = crate::pki::kubeconfigs::KubeconfigsConfig::new(
        &paths.pki,
        &paths.kubeconfigs,
        format!("https://127.0.0.1:{}", config.api_port),
        &config.node_name,
    );
    files.renew_within = config.renew_within();
    files
}

/// The `kubernetes` Service's endpoint (the API server's own reconciler is
/// off: `manifests/apiserver-endpoints.yaml` says why), at the node's address
/// of the day.
async fn api_endpoint(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let values = BTreeMap::from([
        (
            "ADVERTISE_ADDRESS",
            cx.components.advertise_address.to_string(),
        ),
        ("API_PORT", cx.config.api_port.to_string()),
    ]);
    apply(cx, crate::bootstrap::API_ENDPOINT, values).await
}

async fn bootstrap(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let coredns = cx
        .bundle()?
        .image("registry.k8s.io/coredns/coredns")
        .map(|i| i.reference.clone())
        .ok_or_else(|| cx.fail("the bundle carries no CoreDNS image"))?;
    let values = BTreeMap::from([
        ("CLUSTER_DNS", cx.config.cluster_dns.to_string()),
        ("CLUSTER_DOMAIN", cx.config.cluster_domain.clone()),
        ("COREDNS_IMAGE", coredns),
    ]);
    apply(cx, crate::bootstrap::MANIFESTS, values).await
}

/// Applies `manifests` within the phase's deadline; a failure shows the
/// API server's log.
async fn apply(
    cx: &PhaseContext<'_>,
    manifests: crate::bootstrap::Manifests,
    values: BTreeMap<&'static str, String>,
) -> Result<(), OperationError> {
    cx.api
        .apply_manifests(
            manifests,
            values,
            cx.deadline.saturating_sub(Duration::from_secs(5)),
        )
        .await
        .map_err(|e| cx.fail(e).with_logs(&cx.components, &ApiServer))
}

/// The pod network's CNI configuration, in containerd's CNI folder.
fn cni(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let network = crate::runtime::CniNetwork::new(cx.config.node_pod_subnet());
    crate::runtime::cni::write_cni_config(&cx.config.cni_conf_dir, &network)
        .map_err(|e| cx.fail(chain(&e)))?;
    Ok(())
}

/// The admin context into the user's kubeconfig and the VM user's. The
/// merge may wait for another writer's lock: off the runtime's threads, where
/// a cancel is still seen.
async fn export(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let config = cx.config.clone();
    let admin = cx.components.paths.admin_kubeconfig();
    let files = crate::offload::blocking(move || crate::cluster::export::merge(&config, &admin))
        .await
        .map_err(|e| cx.fail(e))?;
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
    use std::sync::Arc;

    use super::*;
    use crate::cluster::cancel::CancelSignal;
    use crate::cluster::fakes::{self, Behaviour, World};
    use crate::model::config::ClusterConfig;
    use crate::supervisor::stale::StaleProcess;

    /// The fake API's journal line of the bootstrap phase's apply.
    const MANIFESTS_APPLIED: &str = "apply rbac.yaml,coredns.yaml,storage.yaml,thaw-guard.yaml";

    const COMPONENTS: [&str; 6] = crate::bundle::manifest::CLUSTER_EXECUTABLES;

    /// Runs an enable in the background, cancels it once `seen` happened,
    /// and returns its error and how long it took to end after the cancel.
    async fn cancel_once(
        world: Arc<World>,
        config: ClusterConfig,
        seen: &str,
    ) -> (OperationError, Duration) {
        let cancel = CancelSignal::new();
        let running = tokio::spawn({
            let (world, cancel) = (world.clone(), cancel.clone());
            async move { world.enable(&config, cancel).await }
        });
        let waiting = async {
            while !world.journal.has(seen) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap_or_else(|_| panic!("{seen:?} never happened: {:#?}", world.journal.entries()));
        // Stuck there, not passing by.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = std::time::Instant::now();
        cancel.cancel("a disable");
        let ended = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the cancelled enable ends")
            .unwrap();
        (ended.unwrap_err(), asked.elapsed())
    }

    #[tokio::test]
    async fn the_pipeline_starts_early_what_the_schedule_says_and_waits_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        let j = &world.journal;
        let phases: Vec<String> = j
            .entries()
            .into_iter()
            .filter(|e| e.starts_with("phase "))
            .collect();
        let expected: Vec<String> = schedule()
            .iter()
            .map(|s| format!("phase {}", s.phase))
            .collect();
        assert_eq!(phases, expected);
        // The import runs in the background from preflight on; the images
        // phase waits for it.
        j.before("import begins", "phase certs");
        j.before("import done", "phase kubelet");
        // The API server starts while etcd comes up.
        j.before("start etcd", "start kube-apiserver");
        j.before("start kube-apiserver", "ready etcd");
        j.before("ready etcd", "phase kube-apiserver");
        // What only needs the API starts while the API server comes up.
        for early in [
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        ] {
            j.before(&format!("start {early}"), "ready kube-apiserver");
        }
        j.before("ready kube-apiserver", "phase control-plane");
        // The `kubernetes` Service's endpoint as soon as the API answers,
        // before kube-proxy's first sync.
        j.before("ready kube-apiserver", "apply apiserver-endpoints.yaml");
        j.before("apply apiserver-endpoints.yaml", "phase control-plane");
        j.before(MANIFESTS_APPLIED, "node docker-desktop ready");
        j.before("node docker-desktop ready", "coredns answers");
        // The in-process units start once the API answers and the
        // manifests (RBAC, StorageClasses) are applied.
        for unit in crate::controllers::UNITS.map(|u| u.name) {
            let started = format!("start task {unit}");
            j.before("ready kube-apiserver", &started);
            j.before(MANIFESTS_APPLIED, &started);
            j.before(&started, "phase wait-node");
        }
        // Each started once, in the order the stop reverses.
        for name in COMPONENTS {
            let starts = j
                .entries()
                .iter()
                .filter(|e| **e == format!("start {name}"))
                .count();
            assert_eq!(starts, 1, "{name}: {:#?}", j.entries());
        }
        let units: Vec<&str> = COMPONENTS
            .into_iter()
            .chain(crate::controllers::UNITS.map(|u| u.name))
            .collect();
        assert_eq!(world.running(), units);
        assert!(!config.paths().etcd_first_start.exists());
        let exported = std::fs::read_to_string(dir.path().join("user.kubeconfig")).unwrap();
        assert!(exported.contains("docker-desktop"), "{exported}");
    }

    /// `components.<name>.*` on a running cluster: the enable that follows
    /// restarts that component, with the user's flag after ours, and leaves
    /// every other process running as it was.
    #[tokio::test]
    async fn an_override_restarts_its_component_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = fakes::config(dir.path());
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        let starts = |name: &str| {
            let entry = format!("start {name}");
            world
                .journal
                .entries()
                .iter()
                .filter(|e| **e == entry)
                .count()
        };
        config.components.kube_apiserver.extra_args = vec!["--v=3".into()];
        config
            .components
            .kube_apiserver
            .env
            .insert("GOGC".into(), "50".into());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        // The API server is handed over to an instance with the override;
        // nothing else starts again.
        for name in COMPONENTS {
            assert_eq!(starts(name), 1, "{name}: {:#?}", world.journal.entries());
        }
        assert!(world.journal.has("handed over kube-apiserver"));
        let spec = world.spec("kube-apiserver").unwrap();
        assert_eq!(spec.args.last().unwrap(), "--v=3");
        assert!(spec.args.contains(&"--anonymous-auth=false".to_string()));
        assert_eq!(spec.env.last().unwrap(), &("GOGC".into(), "50".into()));
        // The same again: nothing restarts, nothing is handed over.
        let handovers = |world: &World| {
            world
                .journal
                .entries()
                .iter()
                .filter(|e| *e == "handed over kube-apiserver")
                .count()
        };
        world.enable(&config, CancelSignal::new()).await.unwrap();
        assert_eq!(starts("kube-apiserver"), 1);
        assert_eq!(handovers(&world), 1);
    }

    #[tokio::test]
    async fn a_failure_names_its_phase_with_the_components_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let log = config.paths().log("kube-apiserver");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(
            &log,
            "I0101 starting\nE0101 open /pki/sa.key: no such file\n",
        )
        .unwrap();
        let world = World::new(Behaviour {
            crashing: ["kube-apiserver"].into(),
            ..Behaviour::default()
        });
        let err = world
            .enable(&config, CancelSignal::new())
            .await
            .unwrap_err();
        assert_eq!(err.phase, "kube-apiserver");
        assert_eq!(err.code, code::PHASE_FAILED);
        assert!(
            err.message.contains("kube-apiserver keeps exiting"),
            "{err}"
        );
        assert_eq!(
            err.logs.last().unwrap(),
            "E0101 open /pki/sa.key: no such file"
        );
        assert!(!world.journal.has("phase control-plane"));
    }

    #[tokio::test]
    async fn a_cancel_ends_a_phase_stuck_in_blocking_work_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::new(Behaviour {
            bundle_check_stuck: true,
            ..Behaviour::default()
        });
        let config = fakes::config(dir.path());
        let (err, took) = cancel_once(world.clone(), config, "check bundle").await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(
            (err.phase.name(), err.code.as_str()),
            ("preflight", code::CANCELLED)
        );
        assert_eq!(err.message, "cancelled by a disable");
        assert!(world.journal.has("bundle check ended"));
        assert!(!world.journal.has("phase certs"));
    }

    #[tokio::test]
    async fn a_cancel_aborts_the_background_import_and_keeps_etcds_first_start_mark() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::new(Behaviour {
            import_stuck: true,
            never_ready: ["etcd"].into(),
            ..Behaviour::default()
        });
        let config = fakes::config(dir.path());
        let paths = config.paths();
        let (err, took) = cancel_once(world.clone(), config, "start kube-apiserver").await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(
            (err.phase.name(), err.code.as_str()),
            ("etcd", code::CANCELLED)
        );
        // The import's task is aborted: its future is dropped (with its `ctr`).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            world.journal.has("import ended"),
            "{:#?}",
            world.journal.entries()
        );
        assert!(!world.journal.has("import done"));
        // etcd never served: the mark says so to the next start.
        assert!(paths.etcd_first_start.exists());
    }

    #[tokio::test]
    async fn an_etcd_first_start_cut_short_is_made_again_and_a_served_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let paths = config.paths();
        // Cut short: the mark is there, and a member folder with no cluster in it.
        std::fs::create_dir_all(paths.etcd_data.join("member/wal")).unwrap();
        std::fs::write(&paths.etcd_first_start, "").unwrap();
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        assert!(!paths.etcd_data.join("member").exists(), "not made again");
        assert!(!paths.etcd_first_start.exists());
        assert!(
            world
                .notices()
                .iter()
                .any(|n| n.contains("etcd's first start was cut short")),
            "{:?}",
            world.notices()
        );
        // Served (no mark): its data is the cluster's, and stays.
        std::fs::create_dir_all(paths.etcd_data.join("member/snap")).unwrap();
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        assert!(paths.etcd_data.join("member/snap").exists());
        assert!(
            !paths.etcd_first_start.exists(),
            "a served folder is not marked"
        );
        assert!(world.notices().iter().all(|n| !n.contains("cut short")));
    }

    #[tokio::test]
    async fn after_a_manager_died_mid_start_the_next_enable_ends_its_processes_and_converges() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        // The first manager gets as far as the API server, then dies.
        let first = World::new(Behaviour {
            never_ready: ["kube-apiserver"].into(),
            ..Behaviour::default()
        });
        let (err, _) = cancel_once(first.clone(), config.clone(), "start kube-proxy").await;
        assert_eq!(err.phase, "kube-apiserver");
        let left: Vec<StaleProcess> = first
            .running()
            .into_iter()
            .enumerate()
            .map(|(i, component)| StaleProcess {
                pid: 4000 + i as u32,
                component,
            })
            .collect();
        assert_eq!(left.len(), COMPONENTS.len());
        // The next one ends what it left before its checks, and converges.
        let next = World::new(Behaviour {
            stale: left,
            ..Behaviour::default()
        });
        next.enable(&config, CancelSignal::new()).await.unwrap();
        next.journal.before("end stale", "check host");
        let notice = next
            .notices()
            .into_iter()
            .find(|n| n.starts_with("ended processes left by an earlier manager"))
            .expect("a notice of what was ended");
        assert!(notice.contains("etcd (4000)"), "{notice}");
        assert_eq!(next.running()[..COMPONENTS.len()], COMPONENTS);
    }

    #[tokio::test]
    async fn an_api_server_with_new_settings_is_handed_over_not_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let starts = |world: &World| {
            world
                .journal
                .entries()
                .iter()
                .filter(|e| *e == "start kube-apiserver")
                .count()
        };
        let mut moved = config.clone();
        moved.advertise_address = Some("192.0.2.11".parse().unwrap());
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        world.enable(&moved, CancelSignal::new()).await.unwrap();
        assert!(world.journal.has("handed over kube-apiserver"));
        assert_eq!(starts(&world), 1, "{:#?}", world.journal.entries());
        // Where it cannot be handed over, it is restarted, and said so.
        let world = World::new(Behaviour {
            handover_fails: Some("another port".into()),
            ..Behaviour::default()
        });
        world.enable(&config, CancelSignal::new()).await.unwrap();
        world.enable(&moved, CancelSignal::new()).await.unwrap();
        assert_eq!(starts(&world), 2);
        assert!(
            world
                .notices()
                .iter()
                .any(|n| n == "kube-apiserver cannot be handed over (another port): restarting it"),
            "{:?}",
            world.notices()
        );
    }

    #[test]
    fn every_step_has_a_name_a_deadline_and_a_description_once() {
        let steps = schedule();
        let names = crate::cluster::operation::names(&steps);
        assert_eq!(names.first(), Some(&"preflight"));
        assert_eq!(names.last(), Some(&"export"));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for step in &steps {
            assert!(step.deadline >= Duration::from_secs(20), "{}", step.phase);
            assert!(!step.description.is_empty(), "{}", step.phase);
        }
    }
}

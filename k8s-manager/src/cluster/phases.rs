//! The enable pipeline, top to bottom, and the stop and reset procedures.
//! Each phase is idempotent and runs under its own deadline; a failure names
//! the phase, what was expected, and the last log lines of the component at
//! fault.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::ClusterConfig;
use super::engine::{Engine, Event, STOP_GRACE};
use super::preflight;
use super::proxy;
use super::state::{ClusterState, Phase};
use crate::bundle::{self, Manifest};
use crate::components::{
    self, ApiServer, Cgroups, Component, Context, ControllerManager, Etcd, KubeProxy, Kubelet,
    Scheduler,
};
use crate::error::chain;
use crate::exec::FileIdentity;
use crate::supervisor::{self, stale};

/// Processes of a dead manager get little time to stop: nothing waits on
/// them, and the new manager needs their ports.
const STALE_GRACE: Duration = Duration::from_secs(2);
/// The processes left by a manager that died which are asked to stop, not
/// killed: etcd, the one that owns the cluster's data.
const GRACEFUL: &[&str] = &["etcd"];

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

/// Each phase's deadline: generous for a slow machine, never endless.
pub fn deadline(phase: Phase) -> Duration {
    Duration::from_secs(match phase {
        Phase::Preflight | Phase::Certs | Phase::Kubeconfigs | Phase::Cni => 20,
        Phase::Etcd | Phase::ControlPlane | Phase::Kubelet | Phase::KubeProxy => 45,
        Phase::KubeApiserver | Phase::Images | Phase::Bootstrap | Phase::WaitNode => 90,
        Phase::WaitDns => 120,
        Phase::Export => 30,
        Phase::Stop | Phase::Reset => 120,
    })
}

/// What the phases of one enable share.
struct Run<'a> {
    engine: &'a Engine,
    config: &'a ClusterConfig,
    ctx: Context,
    bundle: Manifest,
    admin: Option<kube::Client>,
    /// The image import, running in the background from preflight on.
    images: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

pub async fn enable(engine: &Engine, config: &ClusterConfig) -> Result<(), PhaseError> {
    config
        .validate()
        .map_err(|e| PhaseError::with_code(Phase::Preflight, code::INVALID_SETTINGS, e))?;
    let bundle =
        Manifest::load(&config.bundle).map_err(|e| PhaseError::new(Phase::Preflight, chain(&e)))?;
    let advertise_address = config
        .advertise_address
        .or_else(super::config::default_route_address)
        .ok_or_else(|| {
            PhaseError::new(
                Phase::Preflight,
                "cannot tell the VM's address (no default route): pass --advertise-address",
            )
        })?;
    let proxy_env = proxy_environment(config, advertise_address)
        .map_err(|e| PhaseError::with_code(Phase::Preflight, code::INVALID_SETTINGS, e))?;
    let ctx = Context {
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
    let mut run = Run {
        engine,
        config,
        ctx,
        bundle,
        admin: None,
        images: None,
    };
    for phase in Phase::ENABLE {
        engine.set_state(ClusterState::Starting { phase }, Some(true));
        engine.emit(Event::Phase {
            phase,
            description: phase.description().into(),
        });
        let start = Instant::now();
        match tokio::time::timeout(deadline(phase), run_phase(&mut run, phase)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => {
                return Err(PhaseError::with_code(
                    phase,
                    code::PHASE_TIMEOUT,
                    format!("did not finish within {}s", deadline(phase).as_secs()),
                ));
            }
        }
        engine.emit(Event::PhaseDone {
            phase,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(())
}

async fn run_phase(run: &mut Run<'_>, phase: Phase) -> Result<(), PhaseError> {
    match phase {
        Phase::Preflight => preflight_phase(run).await,
        Phase::Certs => certs_phase(run),
        Phase::Kubeconfigs => kubeconfigs_phase(run),
        Phase::Etcd => etcd_phase(run).await,
        Phase::KubeApiserver => {
            // Everything else only waits for the API to answer: started now,
            // each connects the moment it does. Their own phases then find
            // them running and wait for their probes.
            prestart(
                run,
                phase,
                &[&ControllerManager, &Scheduler, &Kubelet, &KubeProxy],
            )
            .await;
            start_and_wait(run, phase, &[&ApiServer]).await
        }
        Phase::ControlPlane => start_and_wait(run, phase, &[&ControllerManager, &Scheduler]).await,
        Phase::Images => images_phase(run).await,
        Phase::Cni => cni_phase(run),
        Phase::Kubelet => start_and_wait(run, phase, &[&Kubelet]).await,
        Phase::KubeProxy => start_and_wait(run, phase, &[&KubeProxy]).await,
        Phase::Bootstrap => bootstrap_phase(run).await,
        Phase::WaitNode => wait_node_phase(run).await,
        Phase::WaitDns => wait_dns_phase(run).await,
        Phase::Export => export_phase(run),
        Phase::Stop | Phase::Reset => unreachable!("not an enable phase"),
    }
}

/// The proxy variables of the components and containerd, from the settings
/// and the cluster's own names and ranges.
fn proxy_environment(
    config: &ClusterConfig,
    node_address: std::net::IpAddr,
) -> Result<proxy::Environment, String> {
    let cidr = |what: &str, text: &str| {
        text.parse::<ipnet::IpNet>()
            .map_err(|e| format!("{what} {text:?}: {e}"))
    };
    let cluster = proxy::ClusterNetwork {
        node_name: config.node_name.clone(),
        node_address,
        service_cidr: cidr("service CIDR", &config.service_cidr)?,
        pod_cidr: cidr("pod CIDR", &config.pod_cidr)?,
        cluster_domain: config.cluster_domain.clone(),
    };
    Ok(config.proxy.environment(&cluster))
}

/// containerd's proxy file, rewritten in preflight: the first phase of every
/// enable, before any image is imported or pulled, next to the check that
/// containerd answers. containerd reads it when vm/prepare-vm.sh next runs;
/// until then, a containerd that runs with other proxy settings is told.
fn write_proxy_file(run: &Run<'_>) -> Vec<String> {
    let (path, env) = (&run.ctx.paths.proxy_env, &run.ctx.proxy_env);
    let changed = match proxy::write_env_file(path, env) {
        Ok(changed) => changed,
        Err(err) => return vec![format!("{}: {err}", path.display())],
    };
    if (changed || !env.is_empty()) && proxy::containerd_differs(env) == Some(true) {
        run.engine.emit(Event::Notice {
            message: format!(
                "containerd runs with other proxy settings than {}: image pulls use the old ones \
                 until vm/prepare-vm.sh runs again (it restarts containerd with them)",
                path.display()
            ),
        });
    }
    Vec::new()
}

async fn preflight_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    // Children of a manager that died are ended first: they hold the ports
    // that the checks below want free.
    let ours = running_pids(run.engine).await;
    // Blocking work (signals and waits, reading 330 MB of bundle, making
    // keys) runs with block_in_place: the runtime's other tasks (the
    // control API, event streams) keep going meanwhile.
    let ended = tokio::task::block_in_place(|| {
        stale::end(
            run.engine.supervisor.instance(),
            &ours,
            STALE_GRACE,
            GRACEFUL,
        )
    });
    if !ended.is_empty() {
        let names: Vec<String> = ended
            .iter()
            .map(|p| format!("{} ({})", p.component, p.pid))
            .collect();
        run.engine.emit(Event::Notice {
            message: format!(
                "ended processes left by an earlier manager: {}",
                names.join(", ")
            ),
        });
    }
    // On a re-enable of a running cluster, its own components hold its ports.
    let ports_are_ours = !run.engine.supervisor.status().await.is_empty();
    let mut findings = preflight::check_host(run.config, ports_are_ours);
    match tokio::task::block_in_place(|| check_bundle(run)) {
        Ok(checked) => run.ctx.checked = checked,
        Err(problems) => findings.problems.extend(problems),
    }
    findings.problems.extend(runtime_preflight(run).await);
    findings.problems.extend(write_proxy_file(run));
    if findings.problems.is_empty() {
        run.images = Some(start_image_import(run));
    }
    for warning in &findings.warnings {
        run.engine.emit(Event::Notice {
            message: format!("warning: {warning}"),
        });
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

/// The bundle is checked on every start: each file inside the bundle with
/// its digest, each executable the very file whose digest was checked. The
/// digests (300 MB to read) are remembered in the state folder with each
/// file's identity, so that a start hashes only what changed since. The
/// identities of the executables go to the components: the supervisor runs
/// only those files.
fn check_bundle(run: &Run<'_>) -> Result<BTreeMap<String, FileIdentity>, Vec<String>> {
    let marker = run.ctx.paths.state_dir.join("bundle-verified");
    // Written by an earlier start; anything unreadable only costs a full check.
    let earlier: Option<bundle::verify::Checked> =
        crate::fsutil::read_bounded(&marker, bundle::manifest::MAX_MANIFEST_BYTES)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
    match bundle::verify::verify_since(&run.config.bundle, bundle::Depth::Digests, earlier.as_ref())
    {
        Ok(report) if report.is_ok() => {
            if earlier.as_ref() != Some(&report.checked)
                && let Ok(json) = serde_json::to_vec(&report.checked)
            {
                let _ = crate::fsutil::write_atomic(&marker, &json, 0o644);
            }
            Ok(report.executables)
        }
        Ok(report) => {
            let mut problems: Vec<String> = report
                .problems
                .iter()
                .map(|p| format!("bundle: {p}"))
                .collect();
            problems.push(format!(
                "the bundle {} is not usable as it is: `k8s-manager bundle verify {0}` tells more; rebuild it with vm/bundle/build.sh or fetch it again with `k8s-manager bundle fetch`",
                run.config.bundle.display()
            ));
            Err(problems)
        }
        Err(err) => Err(vec![format!("bundle: {}", chain(&err))]),
    }
}

async fn running_pids(engine: &Engine) -> Vec<u32> {
    engine
        .supervisor
        .status()
        .await
        .iter()
        .filter_map(|c| c.pid)
        .collect()
}

/// Starts etcd, its first start made safe to interrupt.
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
async fn etcd_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let phase = Phase::Etcd;
    let paths = &run.ctx.paths;
    let io = |what: &str, e: std::io::Error| PhaseError::new(phase, format!("{what}: {e}"));
    let running = run
        .engine
        .supervisor
        .child_status(Etcd.name())
        .await
        .is_some_and(|c| c.state == supervisor::RunState::Running);
    if !running && paths.etcd_first_start.exists() {
        match std::fs::remove_dir_all(&paths.etcd_data) {
            Ok(()) => run.engine.emit(Event::Notice {
                message: "etcd's first start was cut short before it served; its data folder, \
                          empty of cluster data, is made again"
                    .into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&paths.etcd_data.display().to_string(), e)),
        }
    }
    if !paths.etcd_data.join("member").exists() {
        crate::fsutil::write_atomic(&paths.etcd_first_start, b"", 0o600)
            .map_err(|e| io(&paths.etcd_first_start.display().to_string(), e))?;
    }
    start(run, phase, &[&Etcd]).await?;
    // The API server retries its etcd connection: starting it now overlaps
    // its own start-up with etcd's. (Started after etcd, so that the stop,
    // in reverse order, ends it before etcd.)
    prestart(run, phase, &[&ApiServer]).await;
    wait_all(run, phase, &[&Etcd]).await?;
    crate::fsutil::remove_file_durably(&paths.etcd_first_start)
        .map_err(|e| io(&paths.etcd_first_start.display().to_string(), e))
}

/// Starts components ahead of their own phases. A failure here is left for
/// their phase to report, with its name and logs.
async fn prestart(run: &Run<'_>, phase: Phase, components: &[&dyn Component]) {
    for &component in components {
        if let Err(err) = start(run, phase, &[component]).await {
            tracing::debug!("early start of {}: {err}", component.name());
        }
    }
}

/// Starts the components (a no-op for those already running as asked) and
/// waits until each answers its probe.
async fn start_and_wait(
    run: &mut Run<'_>,
    phase: Phase,
    components: &[&dyn Component],
) -> Result<(), PhaseError> {
    start(run, phase, components).await?;
    wait_all(run, phase, components).await
}

async fn start(
    run: &Run<'_>,
    phase: Phase,
    components: &[&dyn Component],
) -> Result<(), PhaseError> {
    for component in components {
        component.prepare(&run.ctx).map_err(|e| {
            PhaseError::new(
                phase,
                format!("writing {}'s configuration: {e}", component.name()),
            )
        })?;
        run.engine
            .supervisor
            .start(component.spec(&run.ctx), component.stop_grace())
            .await
            .map_err(|e| PhaseError::new(phase, chain(&e)).with_logs(&run.ctx, *component))?;
    }
    Ok(())
}

async fn wait_all(
    run: &Run<'_>,
    phase: Phase,
    components: &[&dyn Component],
) -> Result<(), PhaseError> {
    let waits = components
        .iter()
        .map(|component| wait_ready(run, phase, *component));
    futures::future::try_join_all(waits).await.map(|_| ())
}

/// Polls a component's probe until it answers, within the phase's deadline
/// (minus a margin, so that this error, with its logs, wins over the bare timeout).
async fn wait_ready(
    run: &Run<'_>,
    phase: Phase,
    component: &dyn Component,
) -> Result<(), PhaseError> {
    let probe = component.probe(&run.ctx);
    let client = probe
        .client()
        .map_err(|e| PhaseError::new(phase, format!("{} probe: {e}", component.name())))?;
    let limit = deadline(phase).saturating_sub(Duration::from_secs(2));
    let start = Instant::now();
    loop {
        let last = match probe.check(&client).await {
            Ok(()) => return Ok(()),
            Err(seen) => seen,
        };
        if let Some(status) = run.engine.supervisor.child_status(component.name()).await
            && status.restarts >= 3
        {
            let message = format!(
                "{} keeps exiting ({} restarts, last: {})",
                component.name(),
                status.restarts,
                status.last_exit.unwrap_or_default()
            );
            return Err(PhaseError::new(phase, message).with_logs(&run.ctx, component));
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
            .with_logs(&run.ctx, component));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The PKI: made once, then kept; leaves within the renewal window, or that
/// no longer cover the names asked for, are re-issued under the same CA.
fn certs_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let phase = Phase::Certs;
    let config = run.config;
    let mut pki = crate::pki::PkiConfig::new(
        &run.ctx.paths.pki,
        &config.node_name,
        run.ctx.advertise_address,
    );
    pki.service_cidr = config
        .service_cidr
        .parse()
        .map_err(|e: crate::pki::InvalidServiceCidr| PhaseError::new(phase, chain(&e)))?;
    pki.dns_domain = config.cluster_domain.clone();
    for san in config
        .extra_sans
        .iter()
        .chain(server_host(&config.server_url()).as_ref())
    {
        let san = san
            .parse()
            .map_err(|e: crate::pki::InvalidSan| PhaseError::new(phase, chain(&e)))?;
        if !pki.extra_sans.contains(&san) {
            pki.extra_sans.push(san);
        }
    }
    let outcomes = tokio::task::block_in_place(|| crate::pki::ensure(&pki))
        .map_err(|e| PhaseError::new(phase, chain(&e)))?;
    report_outcomes(run.engine, &outcomes);
    Ok(())
}

/// The host of the server URL, so that the API server's certificate covers
/// whatever name or address the exported kubeconfig uses.
fn server_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority),
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn report_outcomes(engine: &Engine, outcomes: &[crate::pki::Outcome]) {
    for outcome in outcomes {
        if let crate::pki::Action::Reissued(_) = outcome.action {
            engine.emit(Event::Notice {
                message: format!("certificate {} {}", outcome.name, outcome.action),
            });
        }
    }
}

/// The components' kubeconfigs, all pointing at the API server on loopback.
fn kubeconfigs_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let server = format!("https://127.0.0.1:{}", run.config.api_port);
    let files = crate::pki::kubeconfigs::KubeconfigsConfig::new(
        &run.ctx.paths.pki,
        &run.ctx.paths.kubeconfigs,
        server,
        &run.config.node_name,
    );
    let outcomes = tokio::task::block_in_place(|| crate::pki::kubeconfigs::write_all(&files))
        .map_err(|e| PhaseError::new(Phase::Kubeconfigs, chain(&e)))?;
    report_outcomes(run.engine, &outcomes);
    Ok(())
}

async fn bootstrap_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let phase = Phase::Bootstrap;
    let client = crate::bootstrap::client(&run.ctx.paths.kubeconfigs.join("super-admin.conf"))
        .await
        .map_err(|e| PhaseError::new(phase, chain(&e)))?;
    let coredns = run
        .bundle
        .image("registry.k8s.io/coredns/coredns")
        .map(|i| i.reference.clone())
        .ok_or_else(|| PhaseError::new(phase, "the bundle carries no CoreDNS image"))?;
    let values = BTreeMap::from([
        ("CLUSTER_DNS", run.config.cluster_dns.to_string()),
        ("CLUSTER_DOMAIN", run.config.cluster_domain.clone()),
        ("COREDNS_IMAGE", coredns),
    ]);
    crate::bootstrap::apply_all(&client, &values, deadline(phase) - Duration::from_secs(5))
        .await
        .map_err(|e| PhaseError::new(phase, chain(&e)).with_logs(&run.ctx, &ApiServer))?;
    let admin = crate::bootstrap::client(&run.ctx.paths.admin_kubeconfig())
        .await
        .map_err(|e| PhaseError::new(phase, chain(&e)))?;
    run.admin = Some(admin);
    Ok(())
}

async fn wait_node_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let client = run.admin.clone().expect("bootstrap made the client");
    let node = run.config.node_name.clone();
    let supervisor = &run.engine.supervisor;
    crate::bootstrap::wait::until(
        "node Ready",
        deadline(Phase::WaitNode) - Duration::from_secs(2),
        || async {
            // Only a status from the kubelet running now counts; when this
            // enable left an earlier kubelet running, that is still the one.
            let since = supervisor
                .child_status(Kubelet.name())
                .await
                .and_then(|k| k.up_since)
                .and_then(|t| {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .ok_or("the kubelet is not running (it is being restarted)")?;
            crate::bootstrap::wait::node_ready(&client, &node, since.unix_timestamp()).await
        },
    )
    .await
    .map_err(|e| PhaseError::new(Phase::WaitNode, chain(&e)).with_logs(&run.ctx, &Kubelet))
}

/// A CoreDNS pod is Ready and answers, for the API's own Service name, what
/// the Service's address is: what every pod's first DNS lookup needs.
async fn wait_dns_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let client = run.admin.clone().expect("bootstrap made the client");
    let name = format!("kubernetes.default.svc.{}.", run.config.cluster_domain);
    let api_service = run
        .config
        .service_cidr
        .parse::<crate::pki::ServiceCidr>()
        .map_err(|e| PhaseError::new(Phase::WaitDns, chain(&e)))?
        .first_ip();
    crate::bootstrap::wait::until(
        "CoreDNS",
        deadline(Phase::WaitDns) - Duration::from_secs(2),
        || crate::bootstrap::wait::coredns_answers(&client, &name, api_service),
    )
    .await
    .map_err(|e| PhaseError::new(Phase::WaitDns, chain(&e)).with_logs(&run.ctx, &Kubelet))
}

/// Stops every component (reverse order), then removes the pods' sandboxes,
/// containers and network, and the mounts kubelet left.
pub async fn stop(engine: &Engine) -> Result<(), PhaseError> {
    engine.emit(Event::Phase {
        phase: Phase::Stop,
        description: Phase::Stop.description().into(),
    });
    let start = Instant::now();
    engine.supervisor.stop_all(STOP_GRACE).await;
    tokio::task::block_in_place(|| {
        stale::end(engine.supervisor.instance(), &[], STALE_GRACE, GRACEFUL)
    });
    // A stop works on a broken cluster: damaged settings are told, not fatal.
    let config = engine.saved_config().unwrap_or_else(|err| {
        engine.emit(Event::Notice {
            message: format!("warning: {err}"),
        });
        None
    });
    remove_pods(engine, config.as_ref()).await?;
    super::mounts::unmount_below(&engine.paths().kubelet_root)
        .map_err(|e| PhaseError::new(Phase::Stop, e))?;
    engine.emit(Event::PhaseDone {
        phase: Phase::Stop,
        seconds: start.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// Stops everything, then deletes the cluster's data: etcd, PKI,
/// kubeconfigs, kubelet and CNI state, our iptables chains and bridge, and
/// our entries in the user's kubeconfigs. Works on a broken cluster: every
/// step runs, and the first error is reported at the end.
pub async fn reset(engine: &Engine, config: Option<&ClusterConfig>) -> Result<(), PhaseError> {
    let mut errors = Vec::new();
    if let Err(err) = stop(engine).await {
        errors.push(err.message);
    }
    engine.emit(Event::Phase {
        phase: Phase::Reset,
        description: Phase::Reset.description().into(),
    });
    let start = Instant::now();
    let paths = engine.paths().clone();
    for dir in [
        &paths.etcd_data,
        &paths.pki,
        &paths.kubeconfigs,
        &paths.kubelet_root,
        &paths.component_config,
    ] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => errors.push(format!("{}: {err}", dir.display())),
        }
    }
    let _ = std::fs::remove_file(paths.state_dir.join("bundle-verified"));
    let _ = std::fs::remove_file(&paths.etcd_first_start);
    errors.extend(network_cleanup(config).await);
    errors.extend(remove_exported_kubeconfig(config));
    engine.emit(Event::PhaseDone {
        phase: Phase::Reset,
        seconds: start.elapsed().as_secs_f64(),
    });
    match errors.is_empty() {
        true => Ok(()),
        false => Err(PhaseError::new(Phase::Reset, errors.join("; "))),
    }
}

/// The node's pod subnet: the first /24 of the cluster's pod CIDR, the one
/// the controller-manager allocates to the first (and only) node.
pub fn node_pod_subnet(pod_cidr: &str) -> Result<String, String> {
    let (addr, len) = super::config::parse_cidr(pod_cidr)?;
    match addr {
        std::net::IpAddr::V4(v4) if len <= 24 => {
            let o = v4.octets();
            Ok(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        _ => Err(format!(
            "pod CIDR {pod_cidr}: an IPv4 range of /24 or larger is needed"
        )),
    }
}

/// containerd answers on its socket and has its CRI plugin.
async fn runtime_preflight(run: &Run<'_>) -> Vec<String> {
    match crate::runtime::Cri::connect(&run.config.containerd_socket).await {
        Ok(cri) => match cri.version().await {
            Ok(version) => {
                tracing::debug!(
                    "container runtime {} {}",
                    version.runtime_name,
                    version.runtime_version
                );
                Vec::new()
            }
            Err(err) => vec![chain(&err)],
        },
        Err(err) => vec![chain(&err)],
    }
}

/// Imports pause and CoreDNS into containerd's `k8s.io` namespace from the
/// bundle (nothing is pulled), pause also under the name containerd uses for
/// sandboxes. Started in the background when preflight passes, so that a cold
/// import overlaps the control plane's start; the images phase waits for it.
fn start_image_import(run: &Run<'_>) -> tokio::task::JoinHandle<Result<(), String>> {
    let socket = run.config.containerd_socket.clone();
    let bundle_dir = run.config.bundle.clone();
    let images = run.bundle.images.clone();
    let pause = run
        .bundle
        .image("registry.k8s.io/pause")
        .map(|i| i.reference.clone());
    tokio::spawn(async move {
        let pause = pause.ok_or("the bundle carries no pause image")?;
        let cri = crate::runtime::Cri::connect(&socket)
            .await
            .map_err(|e| chain(&e))?;
        let ctr = crate::runtime::Ctr::new(&socket);
        for image in &images {
            let archive = Manifest::resolve(&bundle_dir, &image.path)?;
            let report = crate::runtime::images::import_archive(&ctr, &cri, &archive)
                .await
                .map_err(|e| chain(&e))?;
            tracing::debug!("{}: {:?}", archive.display(), report.outcome);
        }
        crate::runtime::images::ensure_sandbox_image(&ctr, &cri, &pause)
            .await
            .map_err(|e| chain(&e))?;
        Ok(())
    })
}

async fn images_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let import = match run.images.take() {
        Some(import) => import,
        None => start_image_import(run),
    };
    match import.await {
        Ok(result) => result.map_err(|e| PhaseError::new(Phase::Images, e)),
        Err(err) => Err(PhaseError::new(
            Phase::Images,
            format!("the image import stopped: {err}"),
        )),
    }
}

/// The pod network's CNI configuration, in containerd's CNI folder.
fn cni_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let subnet =
        node_pod_subnet(&run.config.pod_cidr).map_err(|e| PhaseError::new(Phase::Cni, e))?;
    let network = crate::runtime::CniNetwork::new(&subnet);
    crate::runtime::cni::write_cni_config(&run.config.cni_conf_dir, &network)
        .map_err(|e| PhaseError::new(Phase::Cni, chain(&e)))?;
    Ok(())
}

/// Every pod sandbox (with its containers and network) through CRI, then
/// anything CRI no longer tracks in the `k8s.io` namespace.
async fn remove_pods(engine: &Engine, config: Option<&ClusterConfig>) -> Result<(), PhaseError> {
    let socket = config
        .map(|c| c.containerd_socket.clone())
        .unwrap_or_else(|| super::config::DEFAULT_CONTAINERD_SOCKET.into());
    // Tearing a pod's network down goes through CNI: if our configuration
    // went missing (a half-made or half-removed cluster), put it back first.
    if let Some(config) = config
        && let Ok(subnet) = node_pod_subnet(&config.pod_cidr)
    {
        let network = crate::runtime::CniNetwork::new(&subnet);
        if let Err(err) = crate::runtime::cni::write_cni_config(&config.cni_conf_dir, &network) {
            tracing::warn!("cannot restore the CNI configuration for pod removal: {err}");
        }
    }
    let cri = crate::runtime::Cri::connect(&socket)
        .await
        .map_err(|e| PhaseError::new(Phase::Stop, chain(&e)))?;
    let removed = cri
        .remove_all_pods()
        .await
        .map_err(|e| PhaseError::new(Phase::Stop, chain(&e)))?;
    let leftovers = crate::runtime::Ctr::new(&socket)
        .remove_k8s_namespace_leftovers()
        .await
        .map_err(|e| PhaseError::new(Phase::Stop, chain(&e)))?;
    if removed > 0 || !leftovers.containers.is_empty() {
        engine.emit(Event::Notice {
            message: format!(
                "removed {removed} pod sandbox(es) and {} leftover container(s)",
                leftovers.containers.len()
            ),
        });
    }
    Ok(())
}

/// Our CNI files and IP allocations, our bridge, and the iptables chains of
/// kube-proxy and of our CNI network.
async fn network_cleanup(config: Option<&ClusterConfig>) -> Vec<String> {
    let pod_cidr = config
        .map(|c| c.pod_cidr.clone())
        .unwrap_or_else(|| super::config::DEFAULT_POD_CIDR.into());
    let conf_dir = config
        .map(|c| c.cni_conf_dir.clone())
        .unwrap_or_else(|| super::config::DEFAULT_CNI_CONF_DIR.into());
    let subnet = node_pod_subnet(&pod_cidr).unwrap_or_default();
    let network = crate::runtime::CniNetwork::new(&subnet);
    match crate::runtime::netclean::clean_host_network(
        &network,
        &conf_dir,
        std::path::Path::new(crate::runtime::cni::DEFAULT_CNI_STATE_DIR),
    )
    .await
    {
        Ok(_) => Vec::new(),
        Err(err) => vec![chain(&err)],
    }
}

fn remove_exported_kubeconfig(config: Option<&ClusterConfig>) -> Vec<String> {
    config.map(super::export::remove).unwrap_or_default()
}

/// The admin context into the user's kubeconfig and the VM user's.
fn export_phase(run: &mut Run<'_>) -> Result<(), PhaseError> {
    let files = super::export::merge(run.config, &run.ctx.paths.admin_kubeconfig())
        .map_err(|e| PhaseError::new(Phase::Export, e))?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    tracing::info!(
        "context {} merged into {}",
        run.config.context_name,
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

    #[test]
    fn node_subnet_is_the_first_24() {
        assert_eq!(node_pod_subnet("10.244.0.0/16").unwrap(), "10.244.0.0/24");
        assert_eq!(node_pod_subnet("172.20.8.0/24").unwrap(), "172.20.8.0/24");
        assert!(node_pod_subnet("10.244.0.0/25").is_err());
        assert!(node_pod_subnet("fd00::/48").is_err());
    }

    #[test]
    fn server_host_is_taken_from_the_url() {
        assert_eq!(
            server_host("https://127.0.0.1:6443").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            server_host("https://kubernetes.docker.internal:6443/").as_deref(),
            Some("kubernetes.docker.internal")
        );
        assert_eq!(server_host("https://[::1]:6443").as_deref(), Some("::1"));
        assert_eq!(
            server_host("https://example.test").as_deref(),
            Some("example.test")
        );
    }

    #[test]
    fn every_phase_has_a_deadline() {
        for phase in Phase::ENABLE {
            assert!(deadline(phase) >= Duration::from_secs(20), "{phase}");
        }
    }
}

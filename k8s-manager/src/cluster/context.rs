//! What the steps of an operation see ([`PhaseContext`]): where to report,
//! the supervisor, the container runtime, the machine, the cluster's
//! endpoints, the running step's name and deadline, and the cancel signal;
//! never the engine. With it, the moves every step makes: start components
//! (and start them early, so that their start-up overlaps a wait), wait on
//! what must be true, and fail naming the step with the last log lines of
//! the component at fault. Time is tokio's (paused in the unit tests).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::cancel::CancelSignal;
use super::host::{self, ClusterApi, ContainerRuntime, Host, ImageImport, Machine, Processes};
use super::operation::StepContext;
use super::progress::Progress;
use crate::bundle::Manifest;
use crate::components::{self, Cgroups, Component, Context, Kubelet};
use crate::error::chain;
use crate::model::config::ClusterConfig;
use crate::model::error::{OperationError, code};
use crate::model::event::Event;
use crate::model::state::Phase;
use crate::supervisor;

/// Log lines of the component at fault shown with an error.
const LOG_LINES: usize = 15;

/// Adds the last lines of a component's log to an error of the step that
/// waited on it.
pub(crate) trait WithLogs {
    fn with_logs(self, ctx: &Context, component: &dyn Component) -> OperationError;
}

impl WithLogs for OperationError {
    fn with_logs(mut self, ctx: &Context, component: &dyn Component) -> OperationError {
        let log = ctx.paths.log(component.name());
        self.logs = supervisor::tail_log(&log, LOG_LINES, component.log_noise());
        if !self.logs.is_empty() {
            self.message
                .push_str(&format!(" (last lines of {}:)", log.display()));
        }
        self
    }
}

/// What the steps of one operation see.
pub struct PhaseContext<'a> {
    pub progress: &'a dyn Progress,
    pub processes: &'a dyn Processes,
    pub runtime: &'a dyn ContainerRuntime,
    pub machine: &'a dyn Machine,
    pub units: &'a crate::controllers::Handles,
    /// The cluster's endpoints; its clients are made on first use.
    pub api: &'a dyn ClusterApi,
    pub cancel: CancelSignal,
    /// The running step (set by the step runner).
    pub phase: Phase,
    /// The running step's deadline (set by the step runner).
    pub deadline: Duration,
    pub config: &'a ClusterConfig,
    /// What the components are configured from.
    pub components: Context,
    /// The bundle's manifest: read by an enable; an operation on the running
    /// cluster works without it (its processes run already).
    pub bundle: Option<Manifest>,
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

/// Work that runs in the background across steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// The bundle's images into containerd (a cold import overlaps the
    /// control plane's start).
    ImageImport,
}

/// What a step waits on before it ends.
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

impl<'a> PhaseContext<'a> {
    /// The context of an enable with `config`, once the settings are valid
    /// and the bundle's manifest is read (a failure here is preflight's).
    pub fn new(
        host: Host<'a>,
        api: &'a dyn ClusterApi,
        cancel: CancelSignal,
        config: &'a ClusterConfig,
    ) -> Result<PhaseContext<'a>, OperationError> {
        let phase = Phase::named("preflight");
        config
            .validate()
            .map_err(|e| OperationError::with_code(phase.clone(), code::INVALID_SETTINGS, e))?;
        let bundle = Manifest::load(&config.bundle)
            .map_err(|e| OperationError::new(phase.clone(), chain(&e)))?;
        let version = bundle.kubernetes.clone();
        let mut cx = PhaseContext::on_running(host, api, cancel, config, phase)?;
        cx.components.api_bootstrapped =
            std::fs::read_to_string(&cx.components.paths.api_bootstrapped)
                .is_ok_and(|recorded| recorded.trim() == version);
        cx.components.kubernetes_version = version;
        cx.bundle = Some(bundle);
        Ok(cx)
    }

    /// The context of an operation on the running cluster of `config`: its
    /// failures before a step are `phase`'s. It reads no bundle: the
    /// processes that run need none, and a bundle folder removed since the
    /// start fails only what restarts one.
    pub fn on_running(
        host: Host<'a>,
        api: &'a dyn ClusterApi,
        cancel: CancelSignal,
        config: &'a ClusterConfig,
        phase: Phase,
    ) -> Result<PhaseContext<'a>, OperationError> {
        let advertise_address = config
            .advertise_address
            .or_else(crate::model::config::default_route_address)
            .ok_or_else(|| {
                OperationError::new(
                    phase.clone(),
                    "cannot tell the VM's address (no default route): pass --advertise-address",
                )
            })?;
        let proxy_env = config.proxy.environment(&config.network(advertise_address));
        let components = Context {
            paths: config.paths(),
            config: config.clone(),
            bin: config.bundle.join("bin"),
            checked: BTreeMap::new(),
            kubernetes_version: String::new(),
            advertise_address,
            cgroup: Cgroups::detect(),
            resolv_conf: components::pod_resolv_conf(),
            proxy_env,
            api_bootstrapped: false,
        };
        Ok(PhaseContext {
            progress: host.progress,
            processes: host.processes,
            runtime: host.runtime,
            machine: host.machine,
            units: host.units,
            api,
            cancel,
            phase,
            deadline: Duration::ZERO,
            config,
            components,
            bundle: None,
            images: None,
        })
    }

    pub fn notice(&self, message: String) {
        self.progress.emit(Event::Notice { message });
    }

    /// An error of the running step.
    pub fn fail(&self, message: impl Into<String>) -> OperationError {
        OperationError::new(self.phase.clone(), message)
    }

    /// The bundle's manifest, which an enable read.
    pub fn bundle(&self) -> Result<&Manifest, OperationError> {
        self.bundle
            .as_ref()
            .ok_or_else(|| self.fail("the bundle's manifest was not read"))
    }

    /// Begins background work.
    pub fn begin(&mut self, background: Background) -> Result<(), OperationError> {
        match background {
            Background::ImageImport => {
                let bundle = self.bundle()?;
                let import = ImageImport {
                    bundle: self.config.bundle.clone(),
                    images: bundle.images.clone(),
                    pause: bundle
                        .image("registry.k8s.io/pause")
                        .map(|i| i.reference.clone()),
                };
                let task = tokio::spawn(self.runtime.import_images(import));
                self.images = Some(BackgroundTask(task));
            }
        }
        Ok(())
    }

    /// Writes the files `component` reads (its configuration).
    pub fn prepare(&self, component: &dyn Component) -> Result<(), OperationError> {
        component
            .prepare(&self.components)
            .map_err(|e| self.fail(format!("writing {}'s configuration: {e}", component.name())))
    }

    /// The process `component` runs as now: its spec, with the user's
    /// overrides after the manager's flags and variables. The one way to
    /// build it, so that every start, early start and handover runs the same.
    pub fn spec_of(&self, component: &dyn Component) -> crate::supervisor::ProcessSpec {
        components::overrides::with_overrides(component, &self.components)
    }

    /// Starts the components (a no-op for those already running as asked).
    pub async fn start(&self, components: &[&dyn Component]) -> Result<(), OperationError> {
        for component in components {
            self.prepare(*component)?;
            self.processes
                .start(self.spec_of(*component), component.stop_grace())
                .await
                .map_err(|e| self.fail(chain(&e)).with_logs(&self.components, *component))?;
        }
        Ok(())
    }

    /// Starts components ahead of their own steps, so that their start-up
    /// overlaps this step's wait; a failure is left for their own step to
    /// report, and so is one that runs already (with other settings, its
    /// own step hands it over or restarts it).
    pub async fn start_early(&self, components: &[&dyn Component]) {
        for &component in components {
            let spec = self.spec_of(component);
            if self.processes.runs_as(&spec).await.is_some() {
                continue;
            }
            if let Err(err) = self.start(&[component]).await {
                tracing::debug!("early start of {}: {err}", component.name());
            }
        }
    }

    /// Waits on each of `waits`, all at once.
    pub async fn wait(&mut self, waits: &[Wait]) -> Result<(), OperationError> {
        // The import is the one wait that needs the context mutably: taken first.
        let import = if waits.iter().any(|w| matches!(w, Wait::ImageImport)) {
            if self.images.is_none() {
                self.begin(Background::ImageImport)?;
            }
            self.images.take()
        } else {
            None
        };
        let cx = &*self;
        let waits = waits.iter().map(|wait| async move {
            match *wait {
                Wait::Ready(component) => cx.wait_ready(component).await,
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
                Ok(result) => result.map_err(|e| cx.fail(e)),
                Err(err) => Err(cx.fail(format!("the image import stopped: {err}"))),
            }
        };
        futures::future::try_join(futures::future::try_join_all(waits), import)
            .await
            .map(|_| ())
    }

    /// Polls a component's probe until it answers, within the step's
    /// deadline (minus a margin, so that this error, with its logs, wins
    /// over the bare timeout).
    pub async fn wait_ready(&self, component: &dyn Component) -> Result<(), OperationError> {
        let probe = component.probe(&self.components);
        let limit = self.deadline.saturating_sub(Duration::from_secs(2));
        let start = Instant::now();
        loop {
            let last = match self.api.probe(component.name(), &probe).await {
                Ok(()) => return Ok(()),
                Err(seen) => seen,
            };
            if let Some(status) = host::child_status(self.processes, component.name()).await
                && status.restarts >= 3
            {
                let message = format!(
                    "{} keeps exiting ({} restarts, last: {})",
                    component.name(),
                    status.restarts,
                    status.last_exit.unwrap_or_default()
                );
                return Err(self.fail(message).with_logs(&self.components, component));
            }
            if start.elapsed() >= limit {
                return Err(self
                    .fail(format!(
                        "{} not ready within {}s; last probe: {last}",
                        component.name(),
                        limit.as_secs()
                    ))
                    .with_logs(&self.components, component));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The node reports Ready, with a status written by the kubelet running now.
async fn wait_node(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
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
    .map_err(|e| cx.fail(chain(&e)).with_logs(&cx.components, &Kubelet))
}

/// A CoreDNS pod is Ready and answers, for the API's own Service name, what
/// the Service's address is: what every pod's first DNS lookup needs.
async fn wait_dns(cx: &PhaseContext<'_>) -> Result<(), OperationError> {
    let name = format!("kubernetes.default.svc.{}.", cx.config.cluster_domain);
    let api_service = crate::pki::ServiceCidr::from(cx.config.service_cidr).first_ip();
    crate::bootstrap::wait::until(
        "CoreDNS",
        cx.deadline.saturating_sub(Duration::from_secs(2)),
        || cx.api.coredns_answers(&name, api_service),
    )
    .await
    .map_err(|e| cx.fail(chain(&e)).with_logs(&cx.components, &Kubelet))
}

impl StepContext for PhaseContext<'_> {
    fn progress(&self) -> &dyn Progress {
        self.progress
    }

    fn cancel(&self) -> &CancelSignal {
        &self.cancel
    }

    fn enter(&mut self, phase: &Phase, deadline: Duration) {
        self.phase = phase.clone();
        self.deadline = deadline;
    }
}

/// The steps' context of an operation on the running cluster: its narrow
/// context, and what the operation carries from one step to the next (a
/// renewal's selection, a rotation's step found on disk).
pub struct Carrying<'b, S> {
    pub cx: PhaseContext<'b>,
    pub state: S,
}

impl<S: Send> StepContext for Carrying<'_, S> {
    fn progress(&self) -> &dyn Progress {
        self.cx.progress
    }

    fn cancel(&self) -> &CancelSignal {
        &self.cx.cancel
    }

    fn enter(&mut self, phase: &Phase, deadline: Duration) {
        self.cx.enter(phase, deadline);
    }
}

/// Walks `steps` on the running cluster of `config`, carrying `state` from
/// one step to the next; a failure before the first step is the operation
/// `name`'s. What `certs renew` and `certs rotate-ca` run.
pub async fn run_on_running<'b, S: Send>(
    world: &super::operation::World<'b>,
    config: &'b ClusterConfig,
    name: &'static str,
    state: S,
    steps: &[super::operation::Step<Carrying<'b, S>>],
) -> Result<(), OperationError> {
    let cx = PhaseContext::on_running(
        world.host,
        world.api,
        world.cancel.clone(),
        config,
        Phase::named(name),
    )?;
    let mut run = Carrying { cx, state };
    super::operation::run_steps(steps, &mut run, super::operation::Shown::AsProgress).await
}

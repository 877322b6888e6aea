//! The engine: one per state folder, owned by the daemon. It holds the
//! supervisor and the persisted state, runs one operation at a time
//! (enable, disable, reset), and publishes progress events that the CLI and a
//! GUI follow.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::broadcast;

use super::cancel::CancelSignal;
use super::config::{ClusterConfig, Paths};
pub use super::event::Event;
use super::event::Progress;
use super::host::{Containerd, Host, LiveApi, ThisMachine};
use super::phases::{PhaseContext, PhaseError};
use super::pipeline;
use super::state::{ClusterState, Phase, StateRecord};
use super::teardown;
pub use super::teardown::STOP_GRACE;
use crate::supervisor::Supervisor;

pub struct Engine {
    paths: Paths,
    pub(crate) supervisor: Supervisor,
    record: Mutex<StateRecord>,
    events: broadcast::Sender<Event>,
    busy: tokio::sync::Mutex<()>,
    next_id: std::sync::atomic::AtomicU64,
    /// Whether a `rotate-ca` operation runs now (`status` tells a rotation
    /// running from one cut short).
    rotating: std::sync::atomic::AtomicBool,
    /// The cancel signal of the enables asked for since the last cancel:
    /// the running one and those queued behind it hold it.
    enables: Mutex<CancelSignal>,
    /// What the in-process units share with the API (the image sync's
    /// request channel): made here once, given to every start of them.
    units: crate::controllers::Handles,
}

/// Marks a CA rotation as running while it lives: dropped at its end, and
/// with its future when the operation is cancelled.
struct Rotating<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Rotating<'a> {
    fn start(flag: &'a std::sync::atomic::AtomicBool) -> Rotating<'a> {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        Rotating(flag)
    }
}

impl Drop for Rotating<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The engine as a procedure's [`Progress`]: events go to the subscribers,
/// states to the state file, with `enabled` set as the operation says.
struct Reporter<'a> {
    engine: &'a Engine,
    enabled: Option<bool>,
}

impl Progress for Reporter<'_> {
    fn emit(&self, event: Event) {
        self.engine.emit(event);
    }

    fn set_state(&self, state: ClusterState) {
        self.engine.set_state(state, self.enabled);
    }
}

impl Engine {
    pub fn new(paths: Paths) -> std::io::Result<Engine> {
        crate::fsutil::create_dir_all_mode(&paths.state_dir, 0o755)?;
        let mut record = StateRecord::load(&paths.state_file)?;
        // A new manager owns the record from now on: whatever the last one
        // was doing did not finish.
        if !matches!(
            record.state,
            ClusterState::Stopped | ClusterState::Error { .. }
        ) {
            record.state = record.effective();
        }
        record.manager_pid = std::process::id();
        let (events, _) = broadcast::channel(256);
        let instance = paths.state_dir.display().to_string();
        Ok(Engine {
            supervisor: Supervisor::new(instance),
            paths,
            record: Mutex::new(record),
            events,
            busy: tokio::sync::Mutex::new(()),
            rotating: std::sync::atomic::AtomicBool::new(false),
            next_id: std::sync::atomic::AtomicU64::new(1),
            enables: Mutex::new(CancelSignal::new()),
            units: crate::controllers::Handles::default(),
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The image sync of this engine's cluster, for the API.
    pub fn image_sync(&self) -> &crate::images::ImageSync {
        &self.units.images
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn record(&self) -> StateRecord {
        self.record.lock().expect("state lock").clone()
    }

    /// A fresh operation id, for [`Engine::enable`] and the others.
    pub fn operation_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(crate) fn set_state(&self, state: ClusterState, enabled: Option<bool>) {
        let mut record = self.record.lock().expect("state lock");
        record.state = state.clone();
        if let Some(enabled) = enabled {
            record.enabled = enabled;
        }
        record.manager_pid = std::process::id();
        record.since = crate::sys::now_rfc3339();
        if let Err(err) = record.save(&self.paths.state_file) {
            tracing::error!("cannot save {}: {err}", self.paths.state_file.display());
        }
        drop(record);
        self.emit(Event::State { state });
    }

    /// The settings of the last enable, if any; an error when the file is damaged.
    pub fn saved_config(&self) -> Result<Option<ClusterConfig>, String> {
        ClusterConfig::load_saved(&self.paths)
    }

    /// Brings the cluster up (or back) with `config`; idempotent: on a running
    /// cluster it re-checks every phase and changes only what differs.
    ///
    /// A disable, a reset or a shutdown cancels it, running or still queued
    /// behind another operation: it then ends with a `Cancelled` error. An
    /// enable never cancels another: the second finds the cluster the first
    /// made.
    pub async fn enable(&self, config: ClusterConfig, id: u64) -> Result<(), PhaseError> {
        self.enable_with(config, id, self.enable_ticket()).await
    }

    /// The cancel signal of enables asked for now: an enable run with it is
    /// cancelled by the next disable, reset or shutdown, even one that comes
    /// before the enable's turn (see [`Engine::enable_with`]).
    pub fn enable_ticket(&self) -> CancelSignal {
        self.enables.lock().expect("cancel lock").clone()
    }

    /// [`Engine::enable`] under a ticket taken earlier (when the settings
    /// that asked for it were saved).
    pub async fn enable_with(
        &self,
        config: ClusterConfig,
        id: u64,
        cancel: CancelSignal,
    ) -> Result<(), PhaseError> {
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: "enable".into(),
            id,
        });
        let start = Instant::now();
        let result = if cancel.is_cancelled() {
            // Cancelled while it waited for its turn: nothing of it ran.
            Err(cancel.error(Phase::Preflight))
        } else {
            self.run_enable(&config, cancel).await
        };
        let ok_message = |s: f64| format!("cluster ready in {s:.1}s");
        self.finish("enable", id, start, &result, ok_message);
        result
    }

    /// Cancels the running enable and every enable queued behind the
    /// operation running now; `reason` says what asked (a disable, a
    /// settings change), and the cancelled enables say it in their error.
    /// Enables asked for afterwards are not affected.
    pub fn cancel_enables(&self, reason: &str) {
        let mut enables = self.enables.lock().expect("cancel lock");
        enables.cancel(reason);
        *enables = CancelSignal::new();
    }

    /// The parts of the world a procedure works with, the real ones.
    fn host<'a>(&'a self, progress: &'a Reporter<'a>, runtime: &'a Containerd) -> Host<'a> {
        Host {
            progress,
            processes: &self.supervisor,
            runtime,
            machine: &ThisMachine,
            units: &self.units,
        }
    }

    async fn run_enable(
        &self,
        config: &ClusterConfig,
        cancel: CancelSignal,
    ) -> Result<(), PhaseError> {
        self.forget_old_context(config);
        let json = serde_json::to_vec_pretty(config).expect("config serialises");
        crate::fsutil::write_atomic(&self.paths.config_file, &json, 0o600).map_err(|err| {
            PhaseError::new(
                Phase::Preflight,
                format!("cannot save {}: {err}", self.paths.config_file.display()),
            )
        })?;
        let reporter = Reporter {
            engine: self,
            enabled: Some(true),
        };
        let runtime = Containerd {
            socket: config.containerd_socket.clone(),
        };
        let api = LiveApi::new(self.paths.clone());
        let result = match PhaseContext::new(self.host(&reporter, &runtime), &api, cancel, config) {
            Ok(mut cx) => pipeline::run(&pipeline::ENABLE, &mut cx).await,
            Err(err) => Err(err),
        };
        self.settle(&result, ClusterState::Running, Some(true));
        result
    }

    /// Renews certificates of the running cluster and moves its components
    /// over to them (see [`super::renewal`]): an operation like the others,
    /// one at a time with them; a disable or a reset cancels it (files
    /// already written are kept: the next enable loads them). On a cluster
    /// that does not run, it fails with [`super::renewal::NOT_RUNNING`].
    pub async fn renew_certs(
        &self,
        request: super::renewal::RenewRequest,
        id: u64,
    ) -> Result<(), PhaseError> {
        let cancel = self.enable_ticket();
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: super::renewal::OPERATION.into(),
            id,
        });
        let start = Instant::now();
        let result = self.run_renewal(&request, cancel).await;
        self.finish(super::renewal::OPERATION, id, start, &result, |s| {
            format!("certificates checked in {s:.1}s")
        });
        result
    }

    /// Replaces the cluster CAs of the running cluster (see
    /// [`super::rotation`]): an operation like the renewal. Cancelled by a
    /// disable or a reset, it is resumed by the next `rotate-ca`.
    pub async fn rotate_ca(&self, id: u64) -> Result<(), PhaseError> {
        let cancel = self.enable_ticket();
        let _busy = self.busy.lock().await;
        let _rotating = Rotating::start(&self.rotating);
        self.emit(Event::Started {
            operation: super::rotation::OPERATION.into(),
            id,
        });
        let start = Instant::now();
        let result = self.run_on_running(None, cancel).await;
        self.finish(super::rotation::OPERATION, id, start, &result, |s| {
            format!("cluster CAs rotated in {s:.1}s")
        });
        result
    }

    /// Whether a CA rotation runs now.
    pub fn rotating(&self) -> bool {
        self.rotating.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn run_renewal(
        &self,
        request: &super::renewal::RenewRequest,
        cancel: CancelSignal,
    ) -> Result<(), PhaseError> {
        self.run_on_running(Some(request), cancel).await
    }

    /// The renewal (`Some`) or the CA rotation (`None`) on the running cluster.
    async fn run_on_running(
        &self,
        request: Option<&super::renewal::RenewRequest>,
        cancel: CancelSignal,
    ) -> Result<(), PhaseError> {
        let not_running = || {
            PhaseError::with_code(
                Phase::Certs,
                super::renewal::NOT_RUNNING,
                "no cluster runs: its certificates are renewed by the next enable",
            )
        };
        if self.record().state != ClusterState::Running {
            return Err(not_running());
        }
        let config = self
            .saved_config()
            .map_err(|e| PhaseError::new(Phase::Certs, e))?
            .ok_or_else(not_running)?;
        let reporter = Reporter {
            engine: self,
            enabled: None,
        };
        let runtime = Containerd {
            socket: config.containerd_socket.clone(),
        };
        let api = LiveApi::new(self.paths.clone());
        let mut cx = PhaseContext::new(
            self.host(&reporter, &runtime),
            &api,
            cancel.clone(),
            &config,
        )?;
        tokio::select! {
            result = async {
                match request {
                    Some(request) => super::renewal::run(&mut cx, &self.supervisor, request).await,
                    None => super::rotation::run(&mut cx, &self.supervisor).await,
                }
            } => result,
            _ = cancel.cancelled() => Err(cancel.error(Phase::Certs)),
        }
    }

    /// When the settings name another context or other kubeconfigs than the
    /// ones the cluster was last exported into, our entries leave those (the
    /// export then writes the new ones): a renamed context does not leave the
    /// old one behind, pointing at nothing.
    fn forget_old_context(&self, config: &ClusterConfig) {
        let Ok(Some(old)) = self.saved_config() else {
            return;
        };
        let moved = old.context_name != config.context_name
            || old.host_kubeconfig != config.host_kubeconfig
            || old.merge_vm_kubeconfig != config.merge_vm_kubeconfig;
        if !moved {
            return;
        }
        for error in super::export::remove(&old) {
            self.emit(Event::Notice {
                message: format!("warning: the old context {:?}: {error}", old.context_name),
            });
        }
    }

    /// The state an operation leaves: `done` on success, the error otherwise.
    fn settle(&self, result: &Result<(), PhaseError>, done: ClusterState, enabled: Option<bool>) {
        let state = match result {
            Ok(()) => done,
            Err(err) => ClusterState::Error {
                phase: err.phase,
                message: err.to_string(),
            },
        };
        self.set_state(state, enabled);
    }

    /// The operation's last event, with its total time.
    fn finish(
        &self,
        operation: &str,
        id: u64,
        start: Instant,
        result: &Result<(), PhaseError>,
        ok_message: impl Fn(f64) -> String,
    ) {
        let seconds = start.elapsed().as_secs_f64();
        let (ok, message, error) = match result {
            Ok(()) => (true, ok_message(seconds), None),
            Err(err) => (false, err.to_string(), Some(err.clone())),
        };
        self.emit(Event::Done {
            operation: operation.into(),
            id,
            ok,
            message,
            seconds,
            error,
        });
    }

    /// Stops every component and removes the pods' containers and network;
    /// keeps etcd data and the PKI so the next enable is warm.
    /// Cancels the enables running or queued first.
    pub async fn disable(&self, id: u64) -> Result<(), PhaseError> {
        self.cancel_enables("a disable");
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: "disable".into(),
            id,
        });
        let start = Instant::now();
        self.set_state(ClusterState::Stopping, Some(false));
        let config = self.saved_config_or_notice();
        let result = self
            .stop_procedure(config.as_ref(), Some(false), false)
            .await;
        self.settle(&result, ClusterState::Stopped, Some(false));
        self.finish("disable", id, start, &result, |s| {
            format!("cluster stopped in {s:.1}s")
        });
        result
    }

    /// Throws the cluster away: stop, delete its data and our kubeconfig
    /// entries (those of the configuration it was made with), then build a
    /// fresh one with `restart`'s configuration if given. Works on a broken
    /// or half-started cluster. Cancels the enables running or queued first.
    pub async fn reset(&self, restart: Option<ClusterConfig>, id: u64) -> Result<(), PhaseError> {
        self.cancel_enables("a reset");
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: "reset".into(),
            id,
        });
        let start = Instant::now();
        let config = self.saved_config_or_notice();
        self.set_state(ClusterState::Stopping, None);
        let mut result = self.stop_procedure(config.as_ref(), None, true).await;
        let enabled = restart.is_some() && result.is_ok();
        self.settle(&result, ClusterState::Stopped, Some(enabled));
        let restarted = result.is_ok() && restart.is_some();
        if let (true, Some(config)) = (restarted, &restart) {
            // A disable or another reset asked for from now on cancels it.
            let cancel = self.enables.lock().expect("cancel lock").clone();
            result = self.run_enable(config, cancel).await;
        }
        let ok_message = |s: f64| {
            if restarted {
                format!("fresh cluster ready in {s:.1}s")
            } else {
                format!("cluster removed in {s:.1}s")
            }
        };
        self.finish("reset", id, start, &result, ok_message);
        result
    }

    /// The saved settings; damaged ones are told, not fatal (a stop and a
    /// reset work on a broken cluster).
    fn saved_config_or_notice(&self) -> Option<ClusterConfig> {
        self.saved_config().unwrap_or_else(|err| {
            self.emit(Event::Notice {
                message: format!("warning: {err}"),
            });
            None
        })
    }

    /// The stop procedure, or the reset one (a stop, then the data).
    async fn stop_procedure(
        &self,
        config: Option<&ClusterConfig>,
        enabled: Option<bool>,
        reset: bool,
    ) -> Result<(), PhaseError> {
        let reporter = Reporter {
            engine: self,
            enabled,
        };
        let runtime = Containerd {
            socket: config.map_or_else(
                || super::config::DEFAULT_CONTAINERD_SOCKET.into(),
                |c| c.containerd_socket.clone(),
            ),
        };
        let host = self.host(&reporter, &runtime);
        if reset {
            teardown::reset(host, &self.paths, config).await
        } else {
            teardown::stop(host, &self.paths, config).await
        }
    }

    /// Whether the engine has nothing to do: no operation runs or waits, and
    /// the cluster is not enabled (nothing of it runs). A client that only
    /// follows `/v1/events` does not count: a stream with no events cannot
    /// tell whether its client is still there.
    pub fn is_idle(&self) -> bool {
        self.busy.try_lock().is_ok() && !self.record().enabled
    }

    /// Stops the components for a daemon shutdown, keeping `enabled` so the
    /// next daemon brings the cluster back. Cancels the enables running or
    /// queued first.
    pub async fn shutdown(&self) {
        self.cancel_enables("the manager's shutdown");
        let _busy = self.busy.lock().await;
        self.supervisor.stop_all(STOP_GRACE).await;
        let enabled = self.record().enabled;
        self.set_state(ClusterState::Stopped, Some(enabled));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cluster::phases::code;

    /// Settings whose enable fails at once (no bundle there): what an
    /// enable that ran, rather than one cancelled, ends with.
    fn engine_and_config(dir: &std::path::Path) -> (Arc<Engine>, ClusterConfig) {
        let engine = Arc::new(Engine::new(Paths::new(&dir.join("state"))).unwrap());
        let config = ClusterConfig::new(dir.join("state"), dir.join("no-bundle"));
        (engine, config)
    }

    #[tokio::test]
    async fn a_cancel_ends_the_enables_queued_then_not_those_asked_for_after() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, config) = engine_and_config(dir.path());
        let mut events = engine.subscribe();
        // Another operation runs: the enables queue behind it.
        let running = engine.busy.lock().await;
        let enable = |id| {
            let (engine, config) = (engine.clone(), config.clone());
            tokio::spawn(async move { engine.enable(config, id).await })
        };
        let (first, second) = (enable(1), enable(2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        engine.cancel_enables("a disable");
        let after = enable(3);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(running);
        for queued in [first, second] {
            let err = queued.await.unwrap().unwrap_err();
            assert_eq!(err.code, code::CANCELLED, "{err}");
            assert_eq!(err.message, "cancelled by a disable");
        }
        // Asked for after the cancel: it runs (and fails, having no bundle).
        let err = after.await.unwrap().unwrap_err();
        assert_eq!(err.code, code::PHASE_FAILED, "{err}");
        // Each cancelled enable still tells its caller: started, then done.
        let mut done = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let Event::Done { id, error, .. } = event {
                done.push((id, error.unwrap().code));
            }
        }
        done.sort();
        assert_eq!(
            done,
            [
                (1, code::CANCELLED.to_string()),
                (2, code::CANCELLED.to_string()),
                (3, code::PHASE_FAILED.to_string())
            ]
        );
    }

    #[tokio::test]
    async fn an_enable_does_not_cancel_another() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, config) = engine_and_config(dir.path());
        let running = engine.busy.lock().await;
        let first = tokio::spawn({
            let (engine, config) = (engine.clone(), config.clone());
            async move { engine.enable(config, 1).await }
        });
        let second = tokio::spawn({
            let engine = engine.clone();
            async move { engine.enable(config, 2).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(running);
        for enable in [first, second] {
            let err = enable.await.unwrap().unwrap_err();
            assert_eq!(err.code, code::PHASE_FAILED, "{err}");
        }
    }
}

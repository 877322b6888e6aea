//! The engine: one per state folder, owned by the manager. It holds the
//! supervisor and the record of what runs, and runs operations one at a
//! time through one runner ([`Engine::run`]): the operation's turn, its
//! cancel signal, its `started` and `done` events, its failure recorded.
//! Progress events go to every subscriber (the CLI, the page, any client).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::broadcast;

use super::cancel::CancelSignal;
use super::host::{Containerd, Host, LiveApi, ThisMachine};
use super::operation::{Needs, Operation, Turn, World};
pub use super::operations::disable::STOP_GRACE;
use super::operations::pause;
use super::progress::Progress;
use crate::model::config::{ClusterConfig, DEFAULT_CONTAINERD_SOCKET, Paths};
use crate::model::error::{OperationError, code};
use crate::model::event::Event;
use crate::model::state::{ClusterState, Phase, StateRecord};
use crate::supervisor::Supervisor;

pub struct Engine {
    paths: Paths,
    pub(crate) supervisor: Supervisor,
    record: Mutex<StateRecord>,
    events: broadcast::Sender<Event>,
    busy: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// The operation running now, by name: `status` tells a CA rotation
    /// running from one cut short.
    running: Mutex<Option<&'static str>>,
    /// The cancel signal of the enables asked for since the last cancel:
    /// the running one and those queued behind it hold it.
    enables: Mutex<CancelSignal>,
    /// What the in-process units share with the API (the image sync's
    /// request channel): made here once, given to every start of them.
    units: crate::controllers::Handles,
}

/// The engine as an operation's [`Progress`]: events go to the
/// subscribers, states and the cluster made to the record. It remembers
/// the step last told, for a cancel that comes between two steps.
struct Reporter<'a> {
    engine: &'a Engine,
    phase: Mutex<Option<Phase>>,
}

impl Progress for Reporter<'_> {
    fn emit(&self, event: Event) {
        if let Event::Phase { phase, .. } = &event {
            *self.phase.lock().expect("phase lock") = Some(phase.clone());
        }
        self.engine.emit(event);
    }

    fn set_state(&self, state: ClusterState) {
        self.engine.set_state(state);
    }

    fn made(&self, config: Option<&ClusterConfig>) {
        self.engine
            .update_record(|record| record.cluster = config.cloned());
    }
}

/// Names the operation running while it lives.
struct Running<'a>(&'a Mutex<Option<&'static str>>);

impl<'a> Running<'a> {
    fn start(slot: &'a Mutex<Option<&'static str>>, name: &'static str) -> Running<'a> {
        *slot.lock().expect("running lock") = Some(name);
        Running(slot)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.lock().expect("running lock") = None;
    }
}

impl Engine {
    /// The engine of a state folder; its in-process units follow `settings`.
    pub fn new(
        paths: Paths,
        settings: tokio::sync::watch::Receiver<crate::model::settings::Settings>,
    ) -> std::io::Result<Engine> {
        // The daemon made it private first (0700, 0710 for a socket's group):
        // kept as it is, or made 0700 when missing.
        if paths.state_dir.is_dir() {
            crate::fsutil::restrict_mode(&paths.state_dir, 0o710)?;
        } else {
            crate::fsutil::create_dir_all_mode(&paths.state_dir, 0o700)?;
        }
        let mut record = StateRecord::load(&paths.state_file)?;
        // A new manager owns the record from now on: whatever the last one
        // was doing did not finish.
        if !matches!(
            record.state,
            ClusterState::Stopped | ClusterState::Error { .. }
        ) {
            record.state = record.effective();
        }
        adopt_saved_config(&paths, &mut record)?;
        record.manager_pid = std::process::id();
        let (events, _) = broadcast::channel(256);
        let instance = paths.state_dir.display().to_string();
        Ok(Engine {
            supervisor: Supervisor::new(instance),
            paths,
            record: Mutex::new(record),
            events,
            busy: tokio::sync::Mutex::new(()),
            running: Mutex::new(None),
            next_id: AtomicU64::new(1),
            enables: Mutex::new(CancelSignal::new()),
            units: crate::controllers::Handles::new(settings),
        })
    }

    /// What the in-process units share with the daemon.
    pub fn units(&self) -> &crate::controllers::Handles {
        &self.units
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

    /// The configuration of the cluster last made, as the record keeps it.
    pub fn last_made(&self) -> Option<ClusterConfig> {
        self.record().cluster
    }

    /// The name of the operation running now.
    pub fn running_operation(&self) -> Option<&'static str> {
        *self.running.lock().expect("running lock")
    }

    /// A fresh operation id, for [`Engine::run`].
    pub fn operation_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn update_record(&self, change: impl FnOnce(&mut StateRecord)) {
        let mut record = self.record.lock().expect("state lock");
        change(&mut record);
        record.manager_pid = std::process::id();
        if let Err(err) = record.save(&self.paths.state_file) {
            tracing::error!("cannot save {}: {err}", self.paths.state_file.display());
        }
    }

    pub(crate) fn set_state(&self, state: ClusterState) {
        self.update_record(|record| {
            record.state = state.clone();
            record.since = crate::sys::now_rfc3339();
        });
        self.emit(Event::State { state });
    }

    /// The cancel signal of enables asked for now: an operation run with it
    /// is cancelled by the next disable, reset or shutdown, even one that
    /// comes before its turn (see [`Engine::run`]).
    pub fn enable_ticket(&self) -> CancelSignal {
        self.enables.lock().expect("cancel lock").clone()
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

    /// Runs `operation` as operation `id`, after the one running now: the
    /// one runner of every operation. `ticket` is the cancel signal taken
    /// when it was asked for (see [`Engine::enable_ticket`]); an operation
    /// that cancels enables first takes none.
    pub async fn run(
        &self,
        operation: &dyn Operation,
        id: u64,
        ticket: Option<CancelSignal>,
    ) -> Result<(), OperationError> {
        let name = operation.name();
        let (cancel, next_enables) = match operation.turn() {
            Turn::CancelsEnables(reason) => {
                self.cancel_enables(reason);
                (CancelSignal::new(), self.enable_ticket())
            }
            Turn::CancelledByStops => {
                let ticket = ticket.unwrap_or_else(|| self.enable_ticket());
                (ticket.clone(), ticket)
            }
        };
        let _busy = self.busy.lock().await;
        let _running = Running::start(&self.running, name);
        // An operation is use of the cluster (a freeze is not).
        let used = || {
            if name != pause::PAUSE {
                self.units.idle.used();
            }
        };
        used();
        self.emit(Event::Started {
            operation: name.into(),
            id,
        });
        let start = Instant::now();
        let last_made = self.last_made();
        let result = if cancel.is_cancelled() {
            // Cancelled while it waited for its turn: nothing of it ran.
            Err(cancel.error(Phase::named(name)))
        } else if operation.needs() == Needs::RunningCluster
            && self.record().state != ClusterState::Running
        {
            Err(OperationError::with_code(
                Phase::named(name),
                code::NOT_RUNNING,
                format!("no cluster runs: {name} works on a running cluster; enable it first"),
            ))
        } else {
            let reporter = Reporter {
                engine: self,
                phase: Mutex::new(None),
            };
            let socket = operation.target().or(last_made.as_ref()).map_or_else(
                || DEFAULT_CONTAINERD_SOCKET.into(),
                |c| c.containerd_socket.clone(),
            );
            let runtime = Containerd { socket };
            let api = LiveApi::new(self.paths.clone());
            let world = World {
                host: Host {
                    progress: &reporter,
                    processes: &self.supervisor,
                    runtime: &runtime,
                    machine: &ThisMachine,
                    units: &self.units,
                },
                api: &api,
                cancel: cancel.clone(),
                paths: &self.paths,
                last_made,
                next_enables,
            };
            // A frozen cluster is thawed before anything else is done with
            // it (a disable could not even stop a frozen process); a freeze
            // a dead manager left is thawed by the next operation.
            let paused = matches!(name, pause::PAUSE | pause::RESUME);
            if !paused && world.host.processes.frozen() {
                world.host.progress.emit(Event::Notice {
                    message: "the cluster is paused: thawing it first".into(),
                });
                // One that stops the cluster has no use for a Ready node.
                let thawed = match operation.turn() {
                    Turn::CancelsEnables(_) => pause::thaw_at_once(&world, name).await,
                    Turn::CancelledByStops => pause::thaw(&world, name).await,
                };
                if let Err(err) = thawed {
                    tracing::warn!("{err}");
                }
            }
            let result = tokio::select! {
                biased;
                result = operation.run(&world) => result,
                _ = cancel.cancelled() => {
                    let phase = reporter.phase.lock().expect("phase lock").clone();
                    Err(cancel.error(phase.unwrap_or_else(|| Phase::named(name))))
                }
            };
            if let (Err(err), Needs::Nothing) = (&result, operation.needs()) {
                self.set_state(ClusterState::Error {
                    phase: err.phase.clone(),
                    message: err.to_string(),
                });
            }
            result
        };
        used();
        let seconds = start.elapsed().as_secs_f64();
        let (ok, message, error) = match &result {
            Ok(()) => (true, operation.done(seconds), None),
            Err(err) => (false, err.to_string(), Some(err.clone())),
        };
        self.emit(Event::Done {
            operation: name.into(),
            id,
            ok,
            message,
            seconds,
            error,
        });
        result
    }

    /// Whether no operation runs or waits. A client that only follows
    /// `/v1/events` does not count: a stream with no events cannot tell
    /// whether its client is still there.
    pub fn is_idle(&self) -> bool {
        self.busy.try_lock().is_ok()
    }

    /// Stops the components for a daemon shutdown, the settings kept so
    /// that the next daemon brings the cluster back: in the stop's waves, as
    /// a disable does, then whatever else runs. Cancels the enables running
    /// or queued first.
    pub async fn shutdown(&self) {
        self.cancel_enables("the manager's shutdown");
        let _busy = self.busy.lock().await;
        // A frozen process does not end, not even on SIGKILL (cgroup v1):
        // all of it thawed at once first.
        let cgroups = self.supervisor.cgroups();
        if cgroups.any_frozen()
            && let Err(err) = cgroups
                .set_units_frozen(&pause::FREEZE_ORDER, false, super::host::FREEZE_LIMIT)
                .await
        {
            tracing::warn!("cannot thaw the cluster for the shutdown: {err}");
        }
        super::order::stop(&self.supervisor, super::order::Ending::Graceful).await;
        self.supervisor.stop_all(STOP_GRACE).await;
        self.set_state(ClusterState::Stopped);
    }
}

/// A state folder of a manager from before the record kept the cluster's
/// configuration has it in `cluster.json`: taken into the record once, and
/// the file removed. A damaged file is an error naming it.
fn adopt_saved_config(paths: &Paths, record: &mut StateRecord) -> std::io::Result<()> {
    if record.cluster.is_some() || !paths.config_file.exists() {
        return Ok(());
    }
    let config = ClusterConfig::load_saved(paths)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    record.cluster = config;
    record.save(&paths.state_file)?;
    crate::fsutil::remove_file_durably(&paths.config_file)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cluster::operations::Enable;

    fn settings() -> tokio::sync::watch::Receiver<crate::model::settings::Settings> {
        tokio::sync::watch::channel(Default::default()).1
    }

    /// Settings whose enable fails at once (no bundle there): what an
    /// enable that ran, rather than one cancelled, ends with.
    fn engine_and_config(dir: &std::path::Path) -> (Arc<Engine>, ClusterConfig) {
        let engine = Arc::new(Engine::new(Paths::new(&dir.join("state")), settings()).unwrap());
        let config = ClusterConfig::new(dir.join("state"), dir.join("no-bundle"));
        (engine, config)
    }

    fn enable(
        engine: &Arc<Engine>,
        config: &ClusterConfig,
        id: u64,
    ) -> tokio::task::JoinHandle<Result<(), OperationError>> {
        let (engine, config) = (engine.clone(), config.clone());
        let ticket = engine.enable_ticket();
        tokio::spawn(async move { engine.run(&Enable { config }, id, Some(ticket)).await })
    }

    #[tokio::test]
    async fn a_cancel_ends_the_enables_queued_then_not_those_asked_for_after() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, config) = engine_and_config(dir.path());
        let mut events = engine.subscribe();
        // Another operation runs: the enables queue behind it.
        let running = engine.busy.lock().await;
        let (first, second) = (enable(&engine, &config, 1), enable(&engine, &config, 2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        engine.cancel_enables("a disable");
        let after = enable(&engine, &config, 3);
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
        let (first, second) = (enable(&engine, &config, 1), enable(&engine, &config, 2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(running);
        for enable in [first, second] {
            let err = enable.await.unwrap().unwrap_err();
            assert_eq!(err.code, code::PHASE_FAILED, "{err}");
        }
    }

    #[tokio::test]
    async fn an_operation_on_the_running_cluster_is_refused_on_a_stopped_one() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, config) = engine_and_config(dir.path());
        let renew = crate::cluster::operations::RenewCerts {
            request: Default::default(),
            config,
        };
        let err = engine.run(&renew, 1, None).await.unwrap_err();
        assert_eq!(err.code, code::NOT_RUNNING, "{err}");
        assert_eq!(err.phase, "renew-certs");
        // The cluster's state is not the refused operation's error.
        assert_eq!(engine.record().state, ClusterState::Stopped);
    }

    #[tokio::test]
    async fn a_saved_configuration_of_an_older_manager_moves_into_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let mut config = ClusterConfig::new(dir.path().into(), "/b/v1.34.4".into());
        config.api_port = 6555;
        std::fs::write(&paths.config_file, serde_json::to_vec(&config).unwrap()).unwrap();
        let engine = Engine::new(paths.clone(), settings()).unwrap();
        assert_eq!(engine.last_made(), Some(config.clone()));
        assert!(!paths.config_file.exists());
        let saved = StateRecord::load(&paths.state_file).unwrap();
        assert_eq!(saved.cluster, Some(config));
    }
}

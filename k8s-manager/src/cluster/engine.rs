//! The engine: one per state folder, owned by the daemon. It holds the
//! supervisor and the persisted state, runs one operation at a time
//! (enable, disable, reset), and publishes progress events that the CLI and a
//! GUI follow.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::config::{ClusterConfig, Paths};
use super::phases::{self, PhaseError};
use super::state::{ClusterState, Phase, StateRecord};
use crate::supervisor::Supervisor;

/// How long a component has to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Progress of an operation, as the control API streams it: written by the
/// daemon, read by the CLI (and any client) with the same type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// An operation got its turn (operations run one at a time); the events
    /// up to the `done` with the same id are its own.
    Started { operation: String, id: u64 },
    /// A phase started.
    Phase { phase: Phase, description: String },
    /// A phase finished, with its duration.
    PhaseDone { phase: Phase, seconds: f64 },
    /// Something worth telling the user that is not an error (preflight warnings).
    Notice { message: String },
    /// The state changed.
    State { state: ClusterState },
    /// The operation ended: `ok`, or failed with `error`; `message` says
    /// which in a sentence.
    Done {
        operation: String,
        id: u64,
        ok: bool,
        message: String,
        seconds: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<PhaseError>,
    },
}

pub struct Engine {
    paths: Paths,
    pub(crate) supervisor: Supervisor,
    record: Mutex<StateRecord>,
    events: broadcast::Sender<Event>,
    busy: tokio::sync::Mutex<()>,
    next_id: std::sync::atomic::AtomicU64,
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
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
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
    pub async fn enable(&self, config: ClusterConfig, id: u64) -> Result<(), PhaseError> {
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: "enable".into(),
            id,
        });
        let start = Instant::now();
        let result = self.run_enable(&config).await;
        let ok_message = |s: f64| format!("cluster ready in {s:.1}s");
        self.finish("enable", id, start, &result, ok_message);
        result
    }

    async fn run_enable(&self, config: &ClusterConfig) -> Result<(), PhaseError> {
        let json = serde_json::to_vec_pretty(config).expect("config serialises");
        crate::fsutil::write_atomic(&self.paths.config_file, &json, 0o600).map_err(|err| {
            PhaseError::new(
                Phase::Preflight,
                format!("cannot save {}: {err}", self.paths.config_file.display()),
            )
        })?;
        let result = phases::enable(self, config).await;
        self.settle(&result, ClusterState::Running, Some(true));
        result
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
    pub async fn disable(&self, id: u64) -> Result<(), PhaseError> {
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: "disable".into(),
            id,
        });
        let start = Instant::now();
        self.set_state(ClusterState::Stopping, Some(false));
        let result = phases::stop(self).await;
        self.settle(&result, ClusterState::Stopped, Some(false));
        self.finish("disable", id, start, &result, |s| {
            format!("cluster stopped in {s:.1}s")
        });
        result
    }

    /// Throws the cluster away: stop, delete its data and our kubeconfig
    /// entries (those of the configuration it was made with), then build a
    /// fresh one with `restart`'s configuration if given. Works on a broken
    /// or half-started cluster.
    pub async fn reset(&self, restart: Option<ClusterConfig>, id: u64) -> Result<(), PhaseError> {
        let _busy = self.busy.lock().await;
        self.emit(Event::Started {
            operation: "reset".into(),
            id,
        });
        let start = Instant::now();
        // A reset works on a broken cluster: damaged settings are told, not fatal.
        let config = self.saved_config().unwrap_or_else(|err| {
            self.emit(Event::Notice {
                message: format!("warning: {err}"),
            });
            None
        });
        self.set_state(ClusterState::Stopping, None);
        let mut result = phases::reset(self, config.as_ref()).await;
        let enabled = restart.is_some() && result.is_ok();
        self.settle(&result, ClusterState::Stopped, Some(enabled));
        let restarted = result.is_ok() && restart.is_some();
        if let (true, Some(config)) = (restarted, &restart) {
            result = self.run_enable(config).await;
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

    /// Whether the engine has nothing to do: no operation runs or waits, and
    /// the cluster is not enabled (nothing of it runs). A client that only
    /// follows `/v1/events` does not count: a stream with no events cannot
    /// tell whether its client is still there.
    pub fn is_idle(&self) -> bool {
        self.busy.try_lock().is_ok() && !self.record().enabled
    }

    /// Stops the components for a daemon shutdown, keeping `enabled` so the
    /// next daemon brings the cluster back.
    pub async fn shutdown(&self) {
        let _busy = self.busy.lock().await;
        self.supervisor.stop_all(STOP_GRACE).await;
        let enabled = self.record().enabled;
        self.set_state(ClusterState::Stopped, Some(enabled));
    }
}

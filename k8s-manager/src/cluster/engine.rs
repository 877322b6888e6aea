//! The engine: one per state folder, owned by the daemon. It holds the
//! supervisor and the persisted state, runs one operation at a time
//! (enable, disable, reset), and publishes progress events that the CLI and a
//! GUI follow.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use super::config::{ClusterConfig, Paths};
use super::phases::{self, PhaseError};
use super::state::{ClusterState, Phase, StateRecord};
use crate::supervisor::Supervisor;

/// How long a component has to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Progress of an operation, as the control API streams it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A phase started.
    Phase { phase: Phase, description: String },
    /// A phase finished, with its duration.
    PhaseDone { phase: Phase, seconds: f64 },
    /// Something worth telling the user that is not an error (preflight warnings).
    Notice { message: String },
    /// The state changed.
    State { state: ClusterState },
    /// The operation ended.
    Done { operation: String, ok: bool, message: String, seconds: f64 },
}

pub struct Engine {
    paths: Paths,
    pub(crate) supervisor: Supervisor,
    record: Mutex<StateRecord>,
    events: broadcast::Sender<Event>,
    busy: tokio::sync::Mutex<()>,
}

impl Engine {
    pub fn new(paths: Paths) -> std::io::Result<Engine> {
        crate::fsutil::create_dir_all_mode(&paths.state_dir, 0o755)?;
        let mut record = StateRecord::load(&paths.state_file)?;
        // A new manager owns the record from now on: whatever the last one
        // was doing did not finish.
        if !matches!(record.state, ClusterState::Stopped | ClusterState::Error { .. }) {
            record.state = record.effective();
        }
        record.manager_pid = std::process::id();
        let (events, _) = broadcast::channel(256);
        let instance = paths.state_dir.display().to_string();
        Ok(Engine { supervisor: Supervisor::new(instance), paths, record: Mutex::new(record), events, busy: tokio::sync::Mutex::new(()) })
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
        record.since = super::state::now_rfc3339();
        if let Err(err) = record.save(&self.paths.state_file) {
            tracing::error!("cannot save {}: {err}", self.paths.state_file.display());
        }
        drop(record);
        self.emit(Event::State { state });
    }

    /// The settings of the last enable, if any.
    pub fn saved_config(&self) -> Option<ClusterConfig> {
        let raw = std::fs::read(&self.paths.config_file).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Brings the cluster up (or back) with `config`; idempotent: on a running
    /// cluster it re-checks every phase and changes only what differs.
    pub async fn enable(&self, config: ClusterConfig) -> Result<(), PhaseError> {
        let _busy = self.busy.lock().await;
        let start = Instant::now();
        let json = serde_json::to_vec_pretty(&config).expect("config serialises");
        if let Err(err) = crate::fsutil::write_atomic(&self.paths.config_file, &json, 0o644) {
            return Err(PhaseError::new(Phase::Preflight, format!("cannot save {}: {err}", self.paths.config_file.display())));
        }
        let result = phases::enable(self, &config).await;
        let seconds = start.elapsed().as_secs_f64();
        match &result {
            Ok(()) => {
                self.set_state(ClusterState::Running, Some(true));
                self.emit(Event::Done { operation: "enable".into(), ok: true, message: format!("cluster ready in {seconds:.1}s"), seconds });
            }
            Err(err) => {
                self.set_state(ClusterState::Error { phase: err.phase, message: err.to_string() }, Some(true));
                self.emit(Event::Done { operation: "enable".into(), ok: false, message: err.to_string(), seconds });
            }
        }
        result
    }

    /// Stops every component and removes the pods' containers and network;
    /// keeps etcd data and the PKI so the next enable is warm.
    pub async fn disable(&self) -> Result<(), PhaseError> {
        let _busy = self.busy.lock().await;
        let start = Instant::now();
        self.set_state(ClusterState::Stopping, Some(false));
        let result = phases::stop(self).await;
        let seconds = start.elapsed().as_secs_f64();
        match &result {
            Ok(()) => self.set_state(ClusterState::Stopped, Some(false)),
            Err(err) => self.set_state(ClusterState::Error { phase: err.phase, message: err.to_string() }, Some(false)),
        }
        let message = match &result {
            Ok(()) => format!("cluster stopped in {seconds:.1}s"),
            Err(err) => err.to_string(),
        };
        self.emit(Event::Done { operation: "disable".into(), ok: result.is_ok(), message, seconds });
        result
    }

    /// Throws the cluster away: stop, delete its data and our kubeconfig
    /// entries, then enable again when it was enabled and `restart` is true.
    pub async fn reset(&self, restart: bool) -> Result<(), PhaseError> {
        let was_enabled = self.record().enabled;
        {
            let _busy = self.busy.lock().await;
            let start = Instant::now();
            self.set_state(ClusterState::Stopping, None);
            let result = phases::reset(self, self.saved_config().as_ref()).await;
            let seconds = start.elapsed().as_secs_f64();
            match &result {
                Ok(()) => self.set_state(ClusterState::Stopped, None),
                Err(err) => self.set_state(ClusterState::Error { phase: err.phase, message: err.to_string() }, None),
            }
            let message = match &result {
                Ok(()) => format!("cluster data removed in {seconds:.1}s"),
                Err(err) => err.to_string(),
            };
            self.emit(Event::Done { operation: "reset".into(), ok: result.is_ok(), message, seconds });
            result?;
        }
        if restart && was_enabled {
            if let Some(config) = self.saved_config() {
                return self.enable(config).await;
            }
        }
        Ok(())
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

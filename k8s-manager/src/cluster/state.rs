//! The cluster's state machine, persisted so that the daemon, the CLI and a
//! GUI read the same truth, and so that a manager killed mid-start is seen as
//! such by the next one:
//!
//! `stopped → starting(phase) → running → stopping → stopped`, and
//! `error(phase, message)` from any phase.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::sys::{now_rfc3339, process_alive};

/// The named phases of `enable`, in the order they run. Each is idempotent and
/// has its own deadline (see `phases.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Preflight,
    Certs,
    Kubeconfigs,
    Etcd,
    KubeApiserver,
    ControlPlane,
    Images,
    Cni,
    Kubelet,
    KubeProxy,
    Bootstrap,
    WaitNode,
    WaitDns,
    Export,
    /// Not a phase of `enable`: the stop of every component.
    Stop,
    /// Not a phase of `enable`: the removal of a cluster's data.
    Reset,
}

impl Phase {
    pub const ENABLE: [Phase; 14] = [
        Phase::Preflight,
        Phase::Certs,
        Phase::Kubeconfigs,
        Phase::Cni,
        Phase::Etcd,
        Phase::KubeApiserver,
        Phase::ControlPlane,
        Phase::Images,
        Phase::Kubelet,
        Phase::KubeProxy,
        Phase::Bootstrap,
        Phase::WaitNode,
        Phase::WaitDns,
        Phase::Export,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Certs => "certs",
            Phase::Kubeconfigs => "kubeconfigs",
            Phase::Etcd => "etcd",
            Phase::KubeApiserver => "kube-apiserver",
            Phase::ControlPlane => "control-plane",
            Phase::Images => "images",
            Phase::Cni => "cni",
            Phase::Kubelet => "kubelet",
            Phase::KubeProxy => "kube-proxy",
            Phase::Bootstrap => "bootstrap",
            Phase::WaitNode => "wait-node",
            Phase::WaitDns => "wait-dns",
            Phase::Export => "export",
            Phase::Stop => "stop",
            Phase::Reset => "reset",
        }
    }

    /// What the phase does, in a few words: for an enable phase, its row of
    /// the schedule says it.
    pub fn description(self) -> &'static str {
        match self {
            Phase::Stop => "stopping",
            Phase::Reset => "removing the cluster's data",
            phase => super::pipeline::step(phase).map_or("", |s| s.description),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ClusterState {
    Stopped,
    Starting { phase: Phase },
    Running,
    Stopping,
    Error { phase: Phase, message: String },
}

impl ClusterState {
    pub fn label(&self) -> String {
        match self {
            ClusterState::Stopped => "stopped".into(),
            ClusterState::Starting { phase } => format!("starting ({phase})"),
            ClusterState::Running => "running".into(),
            ClusterState::Stopping => "stopping".into(),
            ClusterState::Error { phase, message } => format!("error in phase {phase}: {message}"),
        }
    }
}

/// A state record is a few hundred bytes: anything past this is not one.
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// What is written to `<state>/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateRecord {
    pub state: ClusterState,
    /// Whether the user wants the cluster on: a daemon started at boot brings
    /// an enabled cluster back, and `reset` restarts only an enabled cluster.
    pub enabled: bool,
    /// The manager process that wrote this; a dead pid with a `starting` or
    /// `running` state means the manager was killed.
    pub manager_pid: u32,
    /// RFC 3339 time of the last change.
    pub since: String,
}

impl StateRecord {
    pub fn new(state: ClusterState, enabled: bool) -> StateRecord {
        StateRecord {
            state,
            enabled,
            manager_pid: std::process::id(),
            since: now_rfc3339(),
        }
    }

    /// Reads the record; a missing file is a cluster never started. A file
    /// that is not a record is an error naming it.
    pub fn load(path: &Path) -> std::io::Result<StateRecord> {
        let fix = "remove it, and the manager starts from a stopped cluster";
        match crate::fsutil::read_bounded(path, MAX_STATE_BYTES).map_err(std::io::Error::from) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: the cluster state is damaged: the file {}; {fix}",
                        path.display(),
                        crate::input::json_problem(&e)
                    ),
                )
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(StateRecord {
                state: ClusterState::Stopped,
                enabled: false,
                manager_pid: 0,
                since: String::new(),
            }),
            Err(err) => Err(std::io::Error::new(
                err.kind(),
                format!(
                    "{}: the cluster state cannot be read: {err}; {fix}",
                    path.display()
                ),
            )),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("state serialises");
        fsutil::write_atomic(path, &json, 0o644)
    }

    /// The state as the user should see it: a `starting`, `running` or
    /// `stopping` left by a manager that no longer runs is reported as such.
    pub fn effective(&self) -> ClusterState {
        let busy = !matches!(
            self.state,
            ClusterState::Stopped | ClusterState::Error { .. }
        );
        if busy && !process_alive(self.manager_pid) {
            let phase = match self.state {
                ClusterState::Starting { phase } => phase,
                _ => Phase::Stop,
            };
            return ClusterState::Error {
                phase,
                message: format!(
                    "the manager (pid {}) is no longer running; run `k8s-manager enable` to start the cluster again",
                    self.manager_pid
                ),
            };
        }
        self.state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_missing_file_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(
            StateRecord::load(&path).unwrap().state,
            ClusterState::Stopped
        );
        let record = StateRecord::new(
            ClusterState::Error {
                phase: Phase::Etcd,
                message: "boom".into(),
            },
            true,
        );
        record.save(&path).unwrap();
        assert_eq!(StateRecord::load(&path).unwrap(), record);
        let json = std::fs::read_to_string(&path).unwrap();
        assert!(
            json.contains("\"state\": \"error\"") && json.contains("\"phase\": \"etcd\""),
            "{json}"
        );
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"state\": {\"state\": \"flying\"}}").unwrap();
        let err = StateRecord::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("unknown variant, expected one of"), "{err}");
        assert!(!err.contains("flying"), "the value is not repeated: {err}");
        assert!(err.contains("remove it"), "{err}");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_STATE_BYTES + 1)
            .unwrap();
        let err = StateRecord::load(&path).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        std::fs::remove_file(&path).unwrap();
        crate::fsutil::mkfifo(&path);
        let err = StateRecord::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_dead_managers_start_is_reported_as_error() {
        let mut record = StateRecord::new(
            ClusterState::Starting {
                phase: Phase::Kubelet,
            },
            true,
        );
        assert_eq!(record.effective(), record.state, "our own pid is alive");
        record.manager_pid = u32::MAX - 1;
        match record.effective() {
            ClusterState::Error { phase, message } => {
                assert_eq!(phase, Phase::Kubelet);
                assert!(message.contains("no longer running"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn enable_phases_are_listed_once_in_order() {
        let names: Vec<&str> = Phase::ENABLE.iter().map(|p| p.name()).collect();
        assert_eq!(names.first(), Some(&"preflight"));
        assert_eq!(names.last(), Some(&"export"));
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}

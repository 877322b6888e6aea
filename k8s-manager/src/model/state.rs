//! The cluster's state machine, persisted so that the daemon, the CLI and a
//! GUI read the same truth, and so that a manager killed mid-start is seen as
//! such by the next one:
//!
//! `stopped → starting(phase) → running → stopping → stopped`, and
//! `error(phase, message)` from any phase.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::ClusterConfig;
use crate::fsutil;
use crate::sys::{now_rfc3339, process_alive};

/// Where an operation is, or where it failed: the name of one of its steps
/// (`etcd`, `kube-apiserver`, `stop`, `move-components`). Each step declares
/// its own name with its description, deadline and work (see
/// `cluster::operation::Step`): the model knows no list of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phase(Cow<'static, str>);

impl Phase {
    pub const fn named(name: &'static str) -> Phase {
        Phase(Cow::Borrowed(name))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Phase {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Phase {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    /// The configuration the cluster was last made with, from the settings
    /// of the enable that made it: what runs while it runs, and what a stop
    /// and a reset take down (the old network, the old context) after the
    /// settings moved on. What the user wants is the settings' alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// Written by managers before the settings document owned the toggle:
    /// read once, to make the settings of such a state folder.
    #[serde(rename = "enabled", default, skip_serializing)]
    pub legacy_enabled: bool,
    /// The manager process that wrote this; a dead pid with a `starting` or
    /// `running` state means the manager was killed.
    pub manager_pid: u32,
    /// RFC 3339 time of the last change.
    pub since: String,
}

impl StateRecord {
    pub fn new(state: ClusterState) -> StateRecord {
        StateRecord {
            state,
            cluster: None,
            legacy_enabled: false,
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
                cluster: None,
                legacy_enabled: false,
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
        // 0600: the cluster's configuration holds the proxy settings (a password).
        fsutil::write_atomic(path, &json, 0o600)
    }

    /// The state as the user should see it: a `starting`, `running` or
    /// `stopping` left by a manager that no longer runs is reported as such.
    pub fn effective(&self) -> ClusterState {
        let busy = !matches!(
            self.state,
            ClusterState::Stopped | ClusterState::Error { .. }
        );
        if busy && !process_alive(self.manager_pid) {
            let phase = match &self.state {
                ClusterState::Starting { phase } => phase.clone(),
                _ => Phase::named("stop"),
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
        let record = StateRecord::new(ClusterState::Error {
            phase: Phase::named("etcd"),
            message: "boom".into(),
        });
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
        let mut record = StateRecord::new(ClusterState::Starting {
            phase: Phase::named("kubelet"),
        });
        assert_eq!(record.effective(), record.state, "our own pid is alive");
        record.manager_pid = u32::MAX - 1;
        match record.effective() {
            ClusterState::Error { phase, message } => {
                assert_eq!(phase, "kubelet");
                assert!(message.contains("no longer running"));
            }
            other => panic!("{other:?}"),
        }
    }
}

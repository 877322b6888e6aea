//! What an operation tells while it runs: the events the control API streams,
//! and the sink the enable pipeline and the stop and reset procedures report
//! to (the engine's, in the daemon; a recorder, in the unit tests).

use serde::{Deserialize, Serialize};

use super::phases::PhaseError;
use super::state::{ClusterState, Phase};

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
    /// A certificate was renewed (by `certs renew` or the renewal unit):
    /// its name (`apiserver`, `admin.conf`) and its new expiry (RFC 3339).
    #[serde(rename_all = "camelCase")]
    CertRenewed { name: String, not_after: String },
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

/// Where a procedure reports: its events, and the state it moves the
/// cluster to (persisted by the engine, so that a GUI and the next manager
/// read it).
pub trait Progress: Send + Sync {
    fn emit(&self, event: Event);
    fn set_state(&self, state: ClusterState);

    fn notice(&self, message: String) {
        self.emit(Event::Notice { message });
    }
}

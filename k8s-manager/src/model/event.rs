//! What an operation tells while it runs: the events the control API streams,
//! written by the daemon and read by the CLI, the page and any client.

use serde::{Deserialize, Serialize};

use super::error::OperationError;
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
    /// The cluster was frozen (`pause`, or the idle unit: `cause` says).
    #[serde(rename_all = "camelCase")]
    Frozen {
        cause: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_since: Option<String>,
    },
    /// The cluster was thawed: what woke it, and how long after the wake
    /// was asked for the API server ran again.
    #[serde(rename_all = "camelCase")]
    Thawed { cause: String, latency_ms: u64 },
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
        error: Option<OperationError>,
    },
}

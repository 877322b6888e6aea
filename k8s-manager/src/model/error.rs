//! Why an operation failed: the typed error every operation ends with, as
//! the control API's `done` event carries it and a GUI shows it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::state::Phase;

/// Why an operation failed. `code` is a stable reason to act on; `problems` lists what
/// preflight found (one entry each); `logs` are the last lines of the
/// component at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationError {
    pub phase: Phase,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The last lines of the log of the component at fault, if one is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
}

/// The codes of [`OperationError`].
pub mod code {
    /// A phase failed; the message says how.
    pub const PHASE_FAILED: &str = "PhaseFailed";
    /// A phase did not finish within its deadline.
    pub const PHASE_TIMEOUT: &str = "PhaseTimeout";
    /// The machine or the bundle is not ready for a cluster: see `problems`.
    pub const PREFLIGHT_FAILED: &str = "PreflightFailed";
    /// The settings themselves are wrong.
    pub const INVALID_SETTINGS: &str = "InvalidSettings";
    /// The operation was cancelled (by a disable, a reset, the daemon's
    /// shutdown): not a failure; the message says what cancelled it.
    pub const CANCELLED: &str = "Cancelled";
    /// The operation needs a running cluster and none runs (the CLI then
    /// renews the certificate files alone, which the next enable loads).
    pub const NOT_RUNNING: &str = "NotRunning";
}

impl OperationError {
    pub fn new(phase: Phase, message: impl Into<String>) -> OperationError {
        OperationError::with_code(phase, code::PHASE_FAILED, message)
    }

    pub fn with_code(phase: Phase, code: &str, message: impl Into<String>) -> OperationError {
        OperationError {
            phase,
            code: code.to_string(),
            message: message.into(),
            problems: Vec::new(),
            logs: Vec::new(),
        }
    }
}

impl fmt::Display for OperationError {
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

impl std::error::Error for OperationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_phase_and_show_logs() {
        let mut err = OperationError::new(
            Phase::named("etcd"),
            "etcd not ready within 43s; last probe: connection refused",
        );
        err.logs = vec!["line one".into(), "line two".into()];
        assert_eq!(
            err.to_string(),
            "error execution phase etcd: etcd not ready within 43s; last probe: connection refused\n    line one\n    line two"
        );
    }
}

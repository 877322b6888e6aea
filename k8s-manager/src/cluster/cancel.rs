//! The cancel of enables: a token every enable holds from the moment it is
//! asked for (queued or running), with the reason told to its caller.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::model::error::{OperationError, code};
use crate::model::state::Phase;

/// A cancel token with the reason it was cancelled for.
#[derive(Debug, Clone, Default)]
pub struct CancelSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl CancelSignal {
    pub fn new() -> CancelSignal {
        CancelSignal::default()
    }

    /// Cancels, for `reason` (what asked: "a disable"); the first reason stays.
    pub fn cancel(&self, reason: &str) {
        let _ = self.reason.set(reason.to_string());
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The error an operation cancelled during `phase` ends with.
    pub fn error(&self, phase: Phase) -> OperationError {
        let reason = self.reason.get().map(String::as_str).unwrap_or("a request");
        OperationError::with_code(phase, code::CANCELLED, format!("cancelled by {reason}"))
    }
}

//! The model: what the daemon, its API client, the CLI and the settings page
//! share. The settings document and its parts, a setting's effect, the
//! cluster's state and phases, the events of an operation and its typed
//! error, the status report, and the bodies of the control API's requests
//! and answers. Plain data and pure checks: it imports nothing from the
//! cluster, the API, the manager or the daemon above it.

pub mod api;
pub mod config;
pub mod error;
pub mod event;
pub mod field;
pub mod images;
pub mod names;
pub mod overrides;
pub mod proxy;
pub mod settings;
pub mod state;
pub mod status;

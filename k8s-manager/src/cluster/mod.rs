//! The cluster: its settings, its state machine, the enable pipeline (a
//! table of phases over a narrow context), the stop and reset procedures,
//! and the engine that runs them for the daemon.

pub mod cancel;
pub mod config;
pub mod engine;
pub mod event;
pub mod export;
#[cfg(test)]
mod fakes;
pub mod host;
mod mounts;
pub mod phases;
pub mod pipeline;
pub mod preflight;
pub mod proxy;
pub mod renewal;
pub mod rotation;
pub mod settings;
pub mod state;
pub mod status;
pub mod teardown;

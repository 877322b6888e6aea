//! The cluster: its settings, its state machine, the enable pipeline and the
//! engine that runs it for the daemon.

pub mod config;
pub mod engine;
pub mod export;
mod mounts;
pub mod phases;
pub mod preflight;
pub mod proxy;
pub mod state;
pub mod status;

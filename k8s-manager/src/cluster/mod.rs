//! The cluster: the engine that runs operations one at a time for the
//! manager, the operations themselves (one file each under [`operations`],
//! each a list of steps over a narrow context), the rollout they share, the
//! order of what runs ([`order`]), and the parts of the world they work
//! with ([`host`]).

pub mod cancel;
pub mod context;
pub mod engine;
pub mod export;
#[cfg(test)]
mod fakes;
pub mod host;
mod mounts;
pub mod operation;
pub mod operations;
pub mod order;
pub mod preflight;
pub mod progress;
pub mod rollout;
pub mod status;

//! The hostile-input suite: every input the manager reads (the user's
//! kubeconfig and KUBECONFIG lists, Windows paths, the PKI folder, the bundle
//! and its manifest, the command line, the control API), given as an attacker
//! or a careless user would give it, against the built binary. The rules each
//! module pins:
//! - nothing of the user's is dropped, re-owned or left half-written;
//! - paths never leave the folder they belong to;
//! - only executables whose digest was just checked are run;
//! - every read is bounded in size and time; no panic on any input;
//! - no secret and no parser internals in any message.

#[path = "../support/mod.rs"]
mod support;

mod bundle;
mod cli;
mod kubeconfig;
mod pki;

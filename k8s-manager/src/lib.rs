//! k8s-manager: provisions and owns a single-node Kubernetes cluster on
//! containerd, behind a desktop product's "Enable Kubernetes" toggle.
//!
//! The library holds every piece of logic; the `k8s-manager` binary is a thin
//! CLI over it. Modules are per concept: [`pki`] makes and checks the
//! certificates, [`kubeconfig`] writes cluster kubeconfigs and merges into the
//! user's, [`fsutil`] does the crash-safe file writes they all rely on.

pub mod api;
pub mod bootstrap;
pub mod bundle;
pub mod cgroups;
pub mod client;
pub mod cluster;
pub mod components;
pub mod controllers;
pub mod daemon;
pub mod error;
pub mod exec;
pub mod fsutil;
pub mod images;
pub mod input;
pub mod kubeconfig;
pub mod manager;
pub mod model;
pub mod mountinfo;
pub mod offload;
pub mod pki;
pub mod procnet;
pub mod runtime;
pub mod supervisor;
pub mod sys;
pub mod ui;

/// Installs the one rustls crypto provider of the process (aws-lc-rs). Every
/// TLS user (kube, reqwest) shares it. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

//! The Kubernetes bundle: the binaries and images a cluster runs from, with a
//! manifest of versions and digests. Built from Go modules by `vm/bundle`
//! (tests, air-gapped VMs) or fetched from the official releases ([`fetch`]).

pub mod cache;
pub mod fetch;
pub mod manifest;
pub mod verify;

use std::path::PathBuf;

pub use manifest::Manifest;
pub use verify::{Depth, VerifyReport, verify};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a usable bundle manifest: {reason}. Rebuild the bundle with vm/bundle/build.sh, or fetch it again with `k8s-manager bundle fetch`"
    )]
    BadManifest { path: PathBuf, reason: String },
    #[error("{0:?} is not a release version like v1.34.4")]
    BadVersion(String),
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("no published checksum at {url}: refusing to use a binary that cannot be verified")]
    MissingChecksum { url: String },
    #[error(
        "{url}: checksum mismatch (expected {expected}, got {actual}) even after downloading it again; the mirror serves a corrupt or different file"
    )]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
}

impl BundleError {
    /// A stable reason a GUI can act on, in Kubernetes' CamelCase.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Io { .. } => "IoError",
            BundleError::BadManifest { .. } => "BundleInvalid",
            BundleError::BadVersion(_) => "InvalidArgument",
            BundleError::Download { .. } => "DownloadFailed",
            BundleError::MissingChecksum { .. } => "ChecksumMissing",
            BundleError::ChecksumMismatch { .. } => "ChecksumMismatch",
        }
    }
}

/// Where bundles live: `$K8S_MANAGER_CACHE`, else `$XDG_CACHE_HOME/k8s-manager`,
/// else `~/.cache/k8s-manager` (`/var/cache/k8s-manager` without HOME); the
/// builder script follows the same rule.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("K8S_MANAGER_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("k8s-manager");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("k8s-manager"),
        // A service started without HOME: the system's cache folder.
        None => PathBuf::from("/var/cache/k8s-manager"),
    }
}

/// The folder of the bundle for a Kubernetes version in the cache.
pub fn cached_bundle(version: &str) -> PathBuf {
    cache_dir().join("bundles").join(version)
}

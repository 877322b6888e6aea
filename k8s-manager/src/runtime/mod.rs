//! Everything the manager does to containerd and to the host network.
//!
//! - [`cri`]: containerd's CRI v1 API over its unix socket (preflight, status,
//!   images, removing every pod sandbox on `disable` and `reset`).
//! - [`images`]: imports the bundle's OCI archives into containerd's `k8s.io`
//!   namespace, skipped when the same manifest is already there, and tags the
//!   pause image with the name containerd uses for sandboxes.
//! - [`cni`]: the manager's CNI network (bridge + host-local + portmap).
//! - [`ctr`]: containerd's own `ctr` client, for what CRI does not offer
//!   (importing archives, tagging, and the leftovers CRI no longer tracks).
//! - [`iptables`] and [`netclean`]: what `reset` removes from the host: our CNI
//!   files, our bridge, kube-proxy's and our CNI's iptables chains, and never
//!   anything else (Docker's chains and the user's rules stay).
//!
//! Host effects go through the programs a containerd host already has (`ctr`,
//! `ip`, `iptables-save`/`iptables-restore`); every decision about what to
//! change is a pure function over their output, unit-tested without root.

pub mod cni;
pub mod cri;
pub mod ctr;
mod exec;
pub mod images;
pub mod iptables;
pub mod netclean;

use std::path::PathBuf;
use std::time::Duration;

pub use cni::CniNetwork;
pub use cri::Cri;
pub use ctr::Ctr;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot connect to containerd at {socket}: {reason}; is containerd running with its CRI plugin? \
         (vm/prepare-vm.sh configures and starts it)"
    )]
    Connect { socket: PathBuf, reason: String },
    #[error("containerd CRI {call} failed ({code:?}): {message}")]
    Rpc {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error(
        "containerd does not serve CRI v1 ({call}: {message}): its CRI plugin is disabled \
         (`disabled_plugins = [\"cri\"]`, as Docker's containerd.io package ships it) or too old; \
         vm/prepare-vm.sh writes a configuration that enables it"
    )]
    NoCri { call: &'static str, message: String },
    #[error("containerd CRI {call} did not answer within {after:?}")]
    Timeout { call: &'static str, after: Duration },
    #[error("containerd CRI status: {0}")]
    BadStatus(String),
    #[error("pod sandbox {pod}")]
    Pod {
        pod: String,
        source: Box<RuntimeError>,
    },
    #[error("cannot run `{program}` (is it installed and on PATH? vm/prepare-vm.sh installs it)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("`{command}` did not finish within {after:?}")]
    CommandTimeout { command: String, after: Duration },
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an OCI image archive: {reason}")]
    BadArchive { path: PathBuf, reason: String },
    #[error("importing {path} into containerd failed: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error("image {reference}: {reason}")]
    Image { reference: String, reason: String },
    #[error("invalid CNI network: {0}")]
    BadNetwork(String),
}

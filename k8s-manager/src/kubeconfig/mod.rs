//! Kubeconfigs on the user's side: merging the cluster's admin context into
//! the Windows user's kubeconfig (reached through the host mount) and taking
//! it out again, without ever corrupting or losing the user's other entries.
//!
//! - [`document`]: a kubeconfig read into an order-preserving value that
//!   writes back everything kubectl sees (unknown fields, extensions, exec
//!   and auth-provider users), in the file's own form (YAML/JSON, CRLF, BOM).
//! - `edit`: a change written as an edit of the file's own text, never as a
//!   new rendering of it; what cannot be is refused, the file untouched.
//! - `layout`: the fast reader of plain block-style YAML, and where its
//!   entries sit; `outline`: where they sit in any other shape.
//! - [`merge`]: the upsert/remove rules, pure functions on documents.
//! - `schema`: what kubectl would load; anything else is refused, untouched.
//! - [`lock`]: kubectl's `<file>.lock`, waited for with backoff.
//! - [`host`]: which file of a `KUBECONFIG` list to write, and the locked,
//!   atomic, backed-up rewrite ([`merge_into_host`], [`remove_from_host`]).
//! - [`discovery`]: where the Windows user's kubeconfig is, seen from the VM.

pub mod discovery;
pub mod document;
mod edit;
mod error;
pub mod host;
mod layout;
pub mod lock;
pub mod merge;
mod outline;
#[cfg(test)]
mod samples;
mod schema;
mod section;

pub use discovery::{Discovery, DiscoverySource, HostEnvironment, discover};
pub use document::{FileFormat, Kubeconfig, Section, Syntax, TextEncoding};
pub use error::{KubeconfigError, TextPosition};
pub use host::{
    FileRemoval, HostKubeconfig, MergeOptions, MergeReport, RemoveOptions, RemoveReport,
    backup_path, merge_into_host, remove_from_host,
};
pub use lock::{DEFAULT_LOCK_TIMEOUT, KubeconfigLock};
pub use merge::{CurrentContextMode, EntryRef, MergeChanges, RemoveChanges};

/// The name of the cluster, user and context we write into a user's
/// kubeconfig: the one every desktop product's kubectl users already know.
pub const DEFAULT_CONTEXT_NAME: &str = "docker-desktop";

//! The one error type of the kubeconfig module. Every variant names the file
//! it is about and, where the user can act, says what to do next.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A position in a text file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextPosition {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for TextPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The file is not YAML/JSON, or not shaped like a kubeconfig. It is never
    /// rewritten: the user's file stays byte for byte as it was.
    #[error("cannot read kubeconfig {}{}: {message}; the file was left untouched, fix it (or move it away) and retry",
        path.display(), at.map(|p| format!(" at {p}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        at: Option<TextPosition>,
        message: String,
    },

    /// Another writer (kubectl, or a second manager) holds the lock for longer
    /// than we wait. kubectl leaves a stale lock behind when it is killed while
    /// writing, so the message says how to clear it.
    #[error("timed out after {} waiting for the lock file {} of {}: another kubectl or k8s-manager is writing it; \
             if none is running, the lock is stale: delete {} and retry",
        humane(*waited), lock.display(), file.display(), lock.display())]
    LockTimeout {
        lock: PathBuf,
        file: PathBuf,
        waited: Duration,
    },

    /// The folder above the kubeconfig's own folder is missing.
    #[error("cannot create {}: the folder above it does not exist; is the host's drive mounted, \
             and is this the right user profile?", folder.display())]
    MissingFolder { folder: PathBuf },

    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A FIFO, a device or a folder where a kubeconfig should be: reading
    /// it could block or never end.
    #[error("{} is not a regular file (a {kind} is in its place), so it cannot be a kubeconfig; give the path of a file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },

    #[error("{} is larger than {} MiB, far more than any kubeconfig; give the path of a kubeconfig", path.display(), limit / (1024 * 1024))]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("the kubeconfig path {path:?} cannot be used: {reason}")]
    InvalidHostPath { path: String, reason: &'static str },

    /// A valid kubeconfig whose text cannot take the change as an edit
    /// (see `edit::Unsupported`): it is never rewritten whole, so it stays
    /// byte for byte as it was. `reason` says what is in the way and what to
    /// change.
    #[error("cannot change kubeconfig {} without rewriting more than our entries: {reason}; the file was left untouched",
        path.display())]
    Unsupported { path: PathBuf, reason: String },

    #[error("cannot write kubeconfig {}: {message}", path.display())]
    Serialize { path: PathBuf, message: String },

    #[error("the kubeconfig list {spec:?} names no file")]
    EmptyList { spec: String },

    #[error(
        "the kubeconfig path {path:?} cannot be reached from the VM: only drive paths (C:\\...) of the host are mounted"
    )]
    UnreachableHostPath { path: String },

    #[error("no Windows user profile found under {}: set the kubeconfig path explicitly, or hand over the host's USERPROFILE",
        users_dir.display())]
    NoHostProfile { users_dir: PathBuf },

    #[error("several Windows user profiles under {} ({}) and none is marked as the host user's: \
             hand over the host's USERNAME or USERPROFILE, or set the kubeconfig path explicitly",
        users_dir.display(), candidates.join(", "))]
    AmbiguousHostProfile {
        users_dir: PathBuf,
        candidates: Vec<String>,
    },
}

impl KubeconfigError {
    /// A stable reason a GUI can act on, in Kubernetes' CamelCase.
    pub fn code(&self) -> &'static str {
        match self {
            KubeconfigError::Parse { .. }
            | KubeconfigError::NotRegularFile { .. }
            | KubeconfigError::TooLarge { .. } => "InvalidKubeconfig",
            KubeconfigError::Unsupported { .. } => "UnsupportedKubeconfig",
            KubeconfigError::LockTimeout { .. } => "LockTimeout",
            KubeconfigError::MissingFolder { .. } => "FolderMissing",
            KubeconfigError::Io { .. } => "IoError",
            KubeconfigError::Serialize { .. } => "Internal",
            KubeconfigError::EmptyList { .. } | KubeconfigError::InvalidHostPath { .. } => {
                "InvalidArgument"
            }
            KubeconfigError::UnreachableHostPath { .. } => "HostPathUnreachable",
            KubeconfigError::NoHostProfile { .. } => "HostProfileNotFound",
            KubeconfigError::AmbiguousHostProfile { .. } => "HostProfileAmbiguous",
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        KubeconfigError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Formats a wait as a person would say it: "10s", "250ms".
fn humane(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_file_line_and_column() {
        let err = KubeconfigError::Parse {
            path: PathBuf::from("/home/u/.kube/config"),
            at: Some(TextPosition { line: 7, column: 3 }),
            message: "mapping values are not allowed in this context".into(),
        };
        let text = err.to_string();
        assert!(
            text.contains("/home/u/.kube/config at line 7, column 3"),
            "{text}"
        );
        assert!(text.contains("left untouched"), "{text}");
    }

    #[test]
    fn lock_timeout_says_how_to_clear_a_stale_lock() {
        let err = KubeconfigError::LockTimeout {
            lock: PathBuf::from("/k/config.lock"),
            file: PathBuf::from("/k/config"),
            waited: Duration::from_millis(250),
        };
        let text = err.to_string();
        assert!(text.starts_with("timed out after 250ms"), "{text}");
        assert!(text.contains("delete /k/config.lock"), "{text}");
    }
}

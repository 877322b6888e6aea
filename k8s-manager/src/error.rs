//! How the crate's errors are told. An error that wraps another keeps it as
//! its `source()` and leaves it out of its own message, so that each cause is
//! printed once: by anyhow's `{:#}` in the CLI, or by [`chain`] where an error
//! becomes a string (a phase's message, a log line).

use std::error::Error;

/// The error and each of its causes, joined by ": ", as anyhow's `{:#}` prints them.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
    use crate::bootstrap::BootstrapError;
    use crate::bundle::BundleError;
    use crate::kubeconfig::KubeconfigError;
    use crate::pki::PkiError;
    use crate::runtime::RuntimeError;

    fn not_found() -> io::Error {
        io::Error::from(io::ErrorKind::NotFound)
    }

    /// The first clause (text between ": ") said twice, if any.
    fn repeated_clause(text: &str) -> Option<&str> {
        let clauses: Vec<&str> = text.split(": ").collect();
        clauses
            .iter()
            .enumerate()
            .find(|(i, clause)| clauses[i + 1..].contains(clause))
            .map(|(_, clause)| *clause)
    }

    /// Every variant of the crate's errors that wraps another error, as the
    /// CLI and a phase message tell it: the cause once, and no clause twice.
    #[test]
    fn no_error_chain_repeats_itself() {
        let errors: Vec<anyhow::Error> = vec![
            KubeconfigError::Io {
                action: "read",
                path: PathBuf::from("/k/config"),
                source: not_found(),
            }
            .into(),
            PkiError::Io {
                action: "read",
                path: PathBuf::from("/p/ca.crt"),
                source: not_found(),
            }
            .into(),
            BundleError::Io {
                path: PathBuf::from("/b/bundle.json"),
                source: not_found(),
            }
            .into(),
            RuntimeError::Io {
                path: PathBuf::from("/etc/cni/net.d"),
                source: not_found(),
            }
            .into(),
            RuntimeError::Spawn {
                program: "iptables".into(),
                source: not_found(),
            }
            .into(),
            RuntimeError::Pod {
                pod: "coredns".into(),
                source: Box::new(RuntimeError::Io {
                    path: PathBuf::from("/x"),
                    source: not_found(),
                }),
            }
            .into(),
        ];
        let cause = not_found().to_string();
        for err in &errors {
            for text in [chain(err.as_ref()), format!("{err:#}")] {
                assert_eq!(text.matches(&cause).count(), 1, "{text}");
                assert_eq!(repeated_clause(&text), None, "{text}");
            }
        }
    }

    #[test]
    fn bootstrap_apply_keeps_its_cause_out_of_its_message() {
        // kube::Error is not built by hand; its Display is checked through a
        // variant that wraps one the way the apply does.
        let err = BootstrapError::Apply {
            what: "Deployment coredns".into(),
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        };
        let text = chain(&err);
        assert_eq!(repeated_clause(&text), None, "{text}");
        assert!(text.starts_with("applying Deployment coredns: "), "{text}");
    }

    #[test]
    fn chain_joins_every_cause() {
        let err = PkiError::Io {
            action: "write",
            path: PathBuf::from("/p/ca.key"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            chain(&err),
            format!(
                "cannot write /p/ca.key: {}",
                io::Error::from(io::ErrorKind::PermissionDenied)
            )
        );
    }
}

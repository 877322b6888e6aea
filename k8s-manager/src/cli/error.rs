//! Errors as the CLI reports them: `error: <message>` on standard error, or,
//! with `--output json`, one object on standard output:
//! `{"error": {"code": "LockTimeout", "message": "...", "problems": [...]}}`.
//! The code is a stable reason in Kubernetes' CamelCase that a GUI can act
//! on. The exit code is 1 for a failure and 2 for a request refused as it
//! stands (a usage error, an invalid argument), as clap's own is.

use std::error::Error;
use std::ffi::OsString;
use std::process::ExitCode;

use k8s_manager::bundle::BundleError;
use k8s_manager::client::ClientError;
use k8s_manager::kubeconfig::KubeconfigError;
use k8s_manager::model::error::OperationError;
use k8s_manager::model::state::Phase;
use k8s_manager::pki::PkiError;
use serde::Serialize;

use super::Output;

/// The code of a request that cannot be done as it stands; exit code 2.
pub const INVALID_ARGUMENT: &str = "InvalidArgument";
/// The codes of a request refused as it stands (exit code 2): the CLI's own,
/// and a settings change the daemon refused.
const REFUSALS: &[&str] = &[
    INVALID_ARGUMENT,
    "InvalidSettings",
    "ResetRequired",
    "Conflict",
];
/// An operation ended by another (a disable during an enable): exit code 3.
const CANCELLED: &str = k8s_manager::model::error::code::CANCELLED;
/// A phase of enable, disable or reset failed, or the cluster is in error.
pub const PHASE_FAILED: &str = "PhaseFailed";
/// An error of no known type: a bug, or a failure with no better name.
const INTERNAL: &str = "Internal";

/// The errors the CLI raises itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    InvalidArgument(String),
    /// The daemon reported the operation failed (or was cancelled); its
    /// progress was shown.
    #[error("{operation} {}: {message}", if error.as_ref().is_some_and(|e| e.code == CANCELLED) { "cancelled" } else { "failed" })]
    OperationFailed {
        operation: String,
        message: String,
        /// The daemon's typed error, when it sent one.
        error: Option<OperationError>,
    },
}

impl CliError {
    pub fn code(&self) -> &str {
        match self {
            CliError::InvalidArgument(_) => INVALID_ARGUMENT,
            CliError::OperationFailed {
                error: Some(error), ..
            } => &error.code,
            CliError::OperationFailed { error: None, .. } => PHASE_FAILED,
        }
    }
}

/// An error as printed: what `{"error": ...}` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorReport {
    pub code: String,
    pub message: String,
    /// Each thing found wrong, when the error is a list of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The phase of a failed operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The last log lines of the component at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// The setting at fault (`kubernetes.apiPort`) of a refused change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorReport {
    pub fn new(code: &str, message: impl Into<String>) -> ErrorReport {
        ErrorReport {
            code: code.into(),
            message: message.into(),
            problems: Vec::new(),
            phase: None,
            logs: Vec::new(),
            field: None,
        }
    }

    pub fn with_problems(mut self, problems: Vec<String>) -> ErrorReport {
        self.problems = problems;
        self
    }

    /// The code of the outermost error of the chain that has one (context
    /// added by the CLI has none); the whole chain as the message.
    pub fn from_error(err: &anyhow::Error) -> ErrorReport {
        let code = err.chain().find_map(code_of).unwrap_or(INTERNAL);
        let mut report = ErrorReport::new(code, format!("{err:#}"));
        // A failed operation's own error: its phase, problems and logs.
        let failed = err
            .chain()
            .find_map(|e| match e.downcast_ref::<CliError>() {
                Some(CliError::OperationFailed {
                    error: Some(error), ..
                }) => Some(error),
                _ => None,
            });
        if let Some(error) = failed {
            report.phase = Some(error.phase.clone());
            report.problems = error.problems.clone();
            report.logs = error.logs.clone();
        }
        report.field = err
            .chain()
            .find_map(|e| match e.downcast_ref::<ClientError>() {
                Some(ClientError::Status { field, .. }) => field.clone(),
                _ => None,
            });
        report
    }

    /// A usage error found by clap: its first paragraph, without clap's
    /// "error: " and usage lines.
    pub fn from_clap(err: &clap::Error) -> ErrorReport {
        let text = err.render().to_string();
        let first: Vec<&str> = text
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .map(str::trim)
            .collect();
        let message = first.join(" ");
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        ErrorReport::new(INVALID_ARGUMENT, message)
    }

    /// `{"error": {...}}`, the member a JSON result carries when the command failed.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }

    /// Sets the `error` member of a JSON result printed anyway: a report of
    /// what the command found wrong.
    pub fn attach_to(&self, result: &mut serde_json::Value) {
        result["error"] = serde_json::json!(self);
    }

    pub fn exit_code(&self) -> ExitCode {
        if REFUSALS.contains(&self.code.as_str()) {
            ExitCode::from(2)
        } else if self.code == CANCELLED {
            ExitCode::from(3)
        } else {
            ExitCode::FAILURE
        }
    }

    /// Prints the error as `output` asks; returns the exit code.
    pub fn print(&self, output: Output) -> ExitCode {
        match output {
            Output::Json => println!("{}", self.to_json()),
            Output::Text => eprintln!("error: {}", self.message),
        }
        self.exit_code()
    }
}

fn code_of<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a str> {
    if let Some(err) = err.downcast_ref::<CliError>() {
        return Some(err.code());
    }
    if let Some(err) = err.downcast_ref::<KubeconfigError>() {
        return Some(err.code());
    }
    if let Some(err) = err.downcast_ref::<PkiError>() {
        return Some(err.code());
    }
    if let Some(err) = err.downcast_ref::<BundleError>() {
        return Some(err.code());
    }
    if let Some(err) = err.downcast_ref::<ClientError>() {
        return Some(err.code());
    }
    if err.is::<std::io::Error>() {
        return Some("IoError");
    }
    None
}

/// Whether the command line asks for `--output json`, read before (or
/// without) clap's parse, so that a usage error can be told in JSON too.
pub fn wants_json(args: &[OsString]) -> bool {
    let mut args = args.iter().skip(1).map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        match arg {
            // What follows is positional values, not options.
            Some("--") => return false,
            Some("--output=json") => return true,
            // Takes the value along, as clap does.
            Some("--output") if args.next() == Some(Some("json")) => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use anyhow::Context as _;
    use clap::Parser as _;

    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn json_is_wanted_only_when_asked_for() {
        assert!(wants_json(&args("k8s-manager status --output json")));
        assert!(wants_json(&args("k8s-manager status --output=json --bad")));
        assert!(wants_json(&args("k8s-manager --output json")));
        assert!(!wants_json(&args("k8s-manager status --output text")));
        assert!(!wants_json(&args("k8s-manager status")));
        assert!(!wants_json(&args("k8s-manager status --output")));
        assert!(!wants_json(&args(
            "k8s-manager certs renew -- --output json"
        )));
        assert!(!wants_json(&args("json --output")));
    }

    #[test]
    fn refusal_failure_and_cancellation_exit_apart() {
        use k8s_manager::model::error::{OperationError, code};
        use k8s_manager::model::state::Phase;
        let ended = |error: OperationError| {
            anyhow::Error::from(CliError::OperationFailed {
                operation: "enable".into(),
                message: error.to_string(),
                error: Some(error),
            })
        };
        let cancelled = ended(OperationError::with_code(
            Phase::named("etcd"),
            code::CANCELLED,
            "cancelled by a disable",
        ));
        assert!(
            cancelled.to_string().starts_with("enable cancelled: "),
            "{cancelled}"
        );
        let report = ErrorReport::from_error(&cancelled);
        assert_eq!(report.exit_code(), ExitCode::from(3));
        let failed = ended(OperationError::new(Phase::named("etcd"), "etcd not ready"));
        assert!(
            failed.to_string().starts_with("enable failed: "),
            "{failed}"
        );
        assert_eq!(
            ErrorReport::from_error(&failed).exit_code(),
            ExitCode::FAILURE
        );
        let refused = ErrorReport::new("InvalidSettings", "kubernetes.apiPort: ...");
        assert_eq!(refused.exit_code(), ExitCode::from(2));
    }

    #[test]
    fn the_code_is_the_outermost_typed_errors() {
        let err = anyhow::Error::from(KubeconfigError::LockTimeout {
            lock: PathBuf::from("/k/config.lock"),
            file: PathBuf::from("/k/config"),
            waited: Duration::from_secs(1),
        })
        .context("cannot merge");
        let report = ErrorReport::from_error(&err);
        assert_eq!(report.code, "LockTimeout");
        assert!(report.message.starts_with("cannot merge: timed out"));
        assert_eq!(report.exit_code(), ExitCode::FAILURE);

        let err = anyhow::Error::from(CliError::InvalidArgument("port 0".into()));
        assert_eq!(ErrorReport::from_error(&err).exit_code(), ExitCode::from(2));

        let err = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading the state")
            .unwrap_err();
        assert_eq!(ErrorReport::from_error(&err).code, "IoError");
        assert_eq!(
            ErrorReport::from_error(&anyhow::anyhow!("?")).code,
            INTERNAL
        );
    }

    #[test]
    fn problems_are_left_out_when_there_are_none() {
        let report = ErrorReport::new("PkiInvalid", "broken");
        assert_eq!(
            report.to_json(),
            serde_json::json!({"error": {"code": "PkiInvalid", "message": "broken"}})
        );
        let report = report.with_problems(vec!["apiserver: expired".into()]);
        assert_eq!(
            report.to_json()["error"]["problems"][0],
            "apiserver: expired"
        );
    }

    #[test]
    fn a_usage_error_is_one_line_without_usage() {
        let err = super::super::Cli::try_parse_from(["k8s-manager", "status", "--output", "yaml"])
            .unwrap_err();
        let report = ErrorReport::from_clap(&err);
        assert_eq!(report.code, INVALID_ARGUMENT);
        assert!(
            report.message.starts_with("invalid value 'yaml'"),
            "{}",
            report.message
        );
        assert!(
            report.message.contains("[possible values: text, json]"),
            "{}",
            report.message
        );
        assert!(!report.message.contains("Usage"), "{}", report.message);
    }
}

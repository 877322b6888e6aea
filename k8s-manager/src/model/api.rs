//! What is asked of the daemon and what it answers, besides the settings
//! document, the events and the status report: the request and answer
//! bodies of the control API, shared by its server, its client, the CLI
//! and the page.

use serde::{Deserialize, Serialize};

use super::images::ImageEntry;
use super::settings::{Change, Settings};

/// The control API's paths.
pub const STATUS: &str = "/v1/status";
pub const ENABLE: &str = "/v1/enable";
pub const DISABLE: &str = "/v1/disable";
pub const RESET: &str = "/v1/reset";
pub const EVENTS: &str = "/v1/events";
pub const SETTINGS: &str = "/v1/settings";
pub const SETTINGS_PROPOSE: &str = "/v1/settings/propose";
pub const CERTS_RENEW: &str = "/v1/certs/renew";
pub const CERTS_ROTATE_CA: &str = "/v1/certs/rotate-ca";
pub const PAUSE: &str = "/v1/pause";
pub const RESUME: &str = "/v1/resume";
pub const IMAGES: &str = "/v1/images";
pub const IMAGES_SYNC: &str = "/v1/images/sync";

/// What a renewal is asked to do (the body of `POST /v1/certs/renew`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RenewRequest {
    /// Leaves (`apiserver`) and kubeconfigs (`admin.conf`) to renew; none
    /// is every one of them, unless `due_only`.
    pub names: Vec<String>,
    /// Only what expires within the window, or has expired.
    pub due_only: bool,
    /// Validity of the new certificates [default: the declaration's year].
    pub validity_days: Option<u32>,
}

/// Why a freeze or a thaw is asked for (the optional body of `POST
/// /v1/pause` and `POST /v1/resume`): the idle unit says `idle` and what
/// woke the cluster; a person's request says nothing (`pause`, `resume`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FreezeRequest {
    pub cause: Option<String>,
    /// An idle freeze: since when nothing had used the cluster (RFC 3339).
    /// The freeze is not made if anything used it after the request.
    pub idle_since: Option<String>,
}

/// How a change is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangeOptions {
    /// A change whose effect is `reset` goes ahead.
    pub confirm_reset: bool,
    /// The revision the client read: refused if the settings changed since.
    pub revision: Option<u64>,
}

/// A change made: the new document, what changed, and the operation that
/// converges the cluster (its events carry this id), if one runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub settings: Settings,
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<u64>,
}

/// The body of `POST /v1/images/sync`: the Docker references to sync
/// (`myapp:dev`); none means every tagged image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default)]
    pub refs: Vec<String>,
}

/// The answer of `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageList {
    pub images: Vec<ImageEntry>,
}

/// The body of an error answer, written by the server and read by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable reason in Kubernetes' CamelCase: `InvalidArgument`,
    /// `InvalidSettings`, `NotFound`.
    pub code: String,
    pub message: String,
    /// The setting at fault (`kubernetes.apiPort`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_with_defaults() {
        let request: RenewRequest = serde_json::from_str(r#"{"dueOnly": true}"#).unwrap();
        assert_eq!(
            request,
            RenewRequest {
                due_only: true,
                ..RenewRequest::default()
            }
        );
    }
}

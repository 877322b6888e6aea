//! The daemon's control API, for the GUI toggle and the CLI: HTTP/1.1 with
//! JSON over a unix socket (mode 0660) in the state folder.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/status` | the status report (JSON) |
//! | `GET /v1/settings` | the settings document |
//! | `PUT /v1/settings` (body: the keys to change) | the new document, the changes and their effects |
//! | `PUT /v1/settings/propose` | what a change would do, changing nothing |
//! | `POST /v1/enable` (body: settings to change with it, or empty) | progress events, one JSON object per line, until `done` |
//! | `POST /v1/disable` | the same |
//! | `POST /v1/reset?restart=false` | the same |
//! | `POST /v1/certs/renew` (body: `{"names": [...], "dueOnly": false, "validityDays": 365}`) | progress events of the renewal on the running cluster, until `done` |
//! | `POST /v1/certs/rotate-ca` | progress events of the CA rotation on the running cluster, until `done` |
//! | `GET /v1/events` | every event, as it happens, until the client leaves |
//! | `GET /v1/images` | Docker's tagged images and whether the cluster has each ([`ImageList`]) |
//! | `POST /v1/images/sync` (body: [`SyncRequest`], or empty for all) | a sync pass, once done ([`crate::images::handle::SyncReport`]) |
//!
//! A request the daemon refuses is answered with a 4xx status and
//! `{"error": {"code": "InvalidArgument", "message": "..."}}` ([`ErrorBody`]).
//!
//! An operation runs to its end even when the client that asked goes away;
//! one runs at a time, later ones wait their turn.

pub mod client;
pub mod server;

pub const STATUS: &str = "/v1/status";
pub const ENABLE: &str = "/v1/enable";
pub const DISABLE: &str = "/v1/disable";
pub const RESET: &str = "/v1/reset";
pub const EVENTS: &str = "/v1/events";
pub const SETTINGS: &str = "/v1/settings";
pub const SETTINGS_PROPOSE: &str = "/v1/settings/propose";
pub const CERTS_RENEW: &str = "/v1/certs/renew";
pub const CERTS_ROTATE_CA: &str = "/v1/certs/rotate-ca";
pub const IMAGES: &str = "/v1/images";
pub const IMAGES_SYNC: &str = "/v1/images/sync";

/// The body of `POST /v1/images/sync`: the Docker references to sync
/// (`myapp:dev`); none means every tagged image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default)]
    pub refs: Vec<String>,
}

/// The answer of `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageList {
    pub images: Vec<crate::images::plan::ImageEntry>,
}

/// The body of an error answer, written by the server and read by the client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// A stable reason in Kubernetes' CamelCase: `InvalidArgument`,
    /// `InvalidSettings`, `NotFound`.
    pub code: String,
    pub message: String,
    /// The setting at fault (`kubernetes.apiPort`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

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
//! | `GET /v1/images` | Docker's tagged images and whether the cluster has each ([`crate::model::api::ImageList`]) |
//! | `POST /v1/images/sync` (body: [`crate::model::api::SyncRequest`], or empty for all) | a sync pass, once done ([`crate::model::images::SyncReport`]) |
//!
//! A request the daemon refuses is answered with a 4xx status and
//! `{"error": {"code": "InvalidArgument", "message": "..."}}`
//! ([`crate::model::api::ErrorBody`]).
//!
//! An operation runs to its end even when the client that asked goes away;
//! one runs at a time, later ones wait their turn.

pub mod server;

pub use crate::model::api::{
    CERTS_RENEW, CERTS_ROTATE_CA, DISABLE, ENABLE, EVENTS, IMAGES, IMAGES_SYNC, PAUSE, RESET,
    RESUME, SETTINGS, SETTINGS_PROPOSE, STATUS,
};

//! Images built with Docker as the cluster sees them: what `images list`
//! shows and what a sync pass did.

use serde::{Deserialize, Serialize};

/// The state of one Docker tag in the cluster, for `images list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// As Docker names it (`myapp:dev`).
    pub docker_ref: String,
    /// As Kubernetes resolves it; absent for a tag Kubernetes cannot name.
    pub k8s_name: Option<String>,
    pub image_id: String,
    pub size: u64,
    pub synced: bool,
    /// Why it is not synced, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// Names imported from Docker into `k8s.io`.
    pub imported: Vec<String>,
    /// Names made for an image already there.
    pub tagged: Vec<String>,
    /// Names already right.
    pub present: Vec<String>,
    /// Names of ours removed: Docker no longer has them.
    pub removed: Vec<String>,
    /// Names of ours Docker no longer has, kept, and why.
    pub kept: Vec<Problem>,
    /// What failed, and why.
    pub failed: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub name: String,
    pub reason: String,
}

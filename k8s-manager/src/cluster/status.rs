//! `status`: one report of everything a user asks when something seems off —
//! state, each component, whether the API answers and the node is Ready,
//! versions, the earliest certificate expiry, and a CA rotation left
//! half-done.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::components::{ApiServer, Cgroups, Component, Context};
use crate::model::config::{ClusterConfig, Paths};
use crate::model::state::StateRecord;
use crate::model::status::{CaRotation, CertExpiry, StatusReport};
use crate::pki::rotation;
use crate::supervisor::ChildStatus;

/// The CA rotation in progress in `pki_dir`, if any (`running`: the
/// manager's `rotate-ca` operation runs now). A step file that does not read
/// is said as a CA warning, since the rotation cannot resume.
fn ca_rotation(pki_dir: &std::path::Path, running: bool) -> Result<Option<CaRotation>, String> {
    match rotation::current(pki_dir) {
        Ok(step) => Ok(step.map(|step| CaRotation::at(step, running))),
        Err(err) => Err(format!(
            "a CA rotation is in progress but its step cannot be read: {}",
            crate::error::chain(&err)
        )),
    }
}

/// Builds the report; `components` comes from the running manager (empty
/// when none runs).
/// Builds the report of the cluster the record says was made; `enabled`
/// is the settings' toggle; `components` comes from the running manager
/// (empty when none runs).
pub async fn report(
    paths: &Paths,
    record: &StateRecord,
    enabled: bool,
    components: Vec<ChildStatus>,
    manager_running: bool,
    rotating: bool,
) -> StatusReport {
    let config = record.cluster.as_ref();
    let state = record.effective();
    let mut report = StatusReport {
        summary: state.label(),
        state,
        enabled,
        since: record.since.clone(),
        manager_running,
        components,
        api_reachable: false,
        node_ready: None,
        server_url: config.map(ClusterConfig::server_url),
        versions: BTreeMap::new(),
        earliest_certificate: None,
        ca_warnings: Vec::new(),
        ca_rotation: None,
        cgroups: String::new(),
        paused: false,
        idle: None,
    };
    // One read of the mount table: the hierarchy said, and the cluster's
    // cgroups in it (the engine's instance is its state folder).
    let hierarchy = crate::cgroups::Hierarchy::detect();
    report.cgroups = hierarchy.describe();
    let tree = crate::cgroups::Tree::new(hierarchy, &paths.state_dir.display().to_string());
    // Paused while the API server is: a wake's last step (the scheduler
    // and the controller-manager) is not.
    if tree.is_frozen("kube-apiserver") {
        report.paused = true;
        if report.state == crate::model::state::ClusterState::Running {
            report.summary = crate::model::status::PAUSED.into();
        }
    }
    if let Ok(statuses) = crate::pki::due::Statuses::read(
        &paths.pki,
        &paths.kubeconfigs,
        crate::pki::DEFAULT_RENEW_WITHIN,
    ) {
        report.earliest_certificate = earliest_certificate(&statuses);
        report.ca_warnings = statuses.ca_warnings();
    }
    match ca_rotation(&paths.pki, rotating) {
        Ok(found) => report.ca_rotation = found,
        Err(warning) => report.ca_warnings.push(warning),
    }
    let Some(config) = config else { return report };
    if let Ok(bundle) = crate::bundle::Manifest::load(&config.bundle) {
        report.versions = bundle.components.clone();
    }
    let ctx = Context {
        config: config.clone(),
        paths: paths.clone(),
        bin: config.bundle.join("bin"),
        checked: BTreeMap::new(),
        kubernetes_version: report
            .versions
            .get("kubernetes")
            .cloned()
            .unwrap_or_default(),
        advertise_address: config.advertise_address.unwrap_or([127, 0, 0, 1].into()),
        cgroup: Cgroups::detect(),
        resolv_conf: "/etc/resolv.conf".into(),
        // Only a probe is made from this context: no process, no proxy.
        proxy_env: Vec::new(),
        api_bootstrapped: false,
    };
    // A frozen API server would not answer; and a probe of it would wake it.
    if report.paused {
        return report;
    }
    let probe = ApiServer.probe(&ctx);
    if let Ok(client) = probe.client() {
        report.api_reachable = probe.check(&client).await.is_ok();
    }
    if report.api_reachable {
        let node = config.node_name.clone();
        let ready = async {
            let client = crate::bootstrap::client(&paths.admin_kubeconfig())
                .await
                .ok()?;
            // Alive: the later of the kubelet's two heartbeats (its full
            // status, written on a change and every 5 minutes, and its
            // lease, renewed every 10 s) within the last minute.
            Some(
                crate::bootstrap::wait::node_alive(
                    &client,
                    &node,
                    time::OffsetDateTime::now_utc().unix_timestamp() - 60,
                )
                .await
                .is_ok(),
            )
        };
        report.node_ready = tokio::time::timeout(Duration::from_secs(3), ready)
            .await
            .ok()
            .flatten();
    }
    report
}

/// The certificate that expires first: a leaf, a CA, or a kubeconfig's.
fn earliest_certificate(statuses: &crate::pki::due::Statuses) -> Option<CertExpiry> {
    statuses
        .leaves
        .iter()
        .chain(&statuses.kubeconfigs)
        .filter(|s| s.not_after.is_some())
        .min_by_key(|s| s.not_after)
        .map(|s| CertExpiry {
            name: s.name.clone(),
            not_after: s
                .not_after
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default(),
            days_left: s.days_left.unwrap_or_default(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::status::render_text;
    use crate::pki::rotation::Step;

    async fn report_of(state_dir: &std::path::Path, rotating: bool) -> StatusReport {
        let paths = Paths::new(state_dir);
        let record = StateRecord::load(&paths.state_file).unwrap();
        report(&paths, &record, false, Vec::new(), false, rotating).await
    }

    #[tokio::test]
    async fn a_rotation_in_progress_is_reported_with_its_step_and_what_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = report_of(dir.path(), false).await;
        assert_eq!(quiet.ca_rotation, None);
        let json = serde_json::to_value(&quiet).unwrap();
        assert!(json.get("caRotation").is_none(), "{json}");
        assert!(!render_text(&quiet).contains("CA rotation"));

        let step_file = dir.path().join("pki/rotate-ca/step");
        std::fs::create_dir_all(step_file.parent().unwrap()).unwrap();
        std::fs::write(&step_file, "trust-both\n").unwrap();
        let report = report_of(dir.path(), false).await;
        assert_eq!(
            report.ca_rotation,
            Some(CaRotation::at(Step::TrustBoth, false))
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["caRotation"]["step"], "trust-both", "{json}");
        assert_eq!(json["caRotation"]["running"], false, "{json}");
        let text = render_text(&report);
        assert!(
            text.contains("CA rotation: a CA rotation was cut short at step trust-both")
                && text.contains("`k8s-manager certs rotate-ca` resumes it"),
            "{text}"
        );
        // While the operation runs, it says so and asks nothing of the user.
        let running = report_of(dir.path(), true).await;
        let rotation = running.ca_rotation.clone().unwrap();
        assert!(rotation.running, "{rotation:?}");
        assert_eq!(
            rotation.message,
            "a CA rotation is running, at step trust-both"
        );
        // The client reads what the daemon sends.
        let back: StatusReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.ca_rotation, report.ca_rotation);

        // A step file that does not read: no step, a warning saying so.
        std::fs::write(&step_file, "halfway\n").unwrap();
        let report = report_of(dir.path(), false).await;
        assert_eq!(report.ca_rotation, None);
        assert!(
            report
                .ca_warnings
                .iter()
                .any(|w| w.contains("CA rotation") && w.contains("rotate-ca/step")),
            "{:?}",
            report.ca_warnings
        );
    }
}

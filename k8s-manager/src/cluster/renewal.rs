//! Certificates renewed on a running cluster: the `renew-certs` operation,
//! asked for by `k8s-manager certs renew` and by the daemon's renewal unit
//! ([`crate::controllers::certs`]) when something is due.
//!
//! It runs as every operation does, one at a time with enable, disable and
//! reset (the engine's turn), and only on a running cluster:
//!
//! 1. what to renew: the leaves and kubeconfig client certificates named, or
//!    (`dueOnly`) those within `certs.renewWithinDays` of expiry or expired
//!    ([`crate::pki::due`]); a CA within a year of expiry is told about,
//!    with what to do ([`CA_ADVICE`]);
//! 2. re-issued under the same CA with the same subject and names
//!    ([`crate::pki::renew`], [`crate::pki::kubeconfigs::write_all`]): one
//!    `cert-renewed` event each;
//! 3. each component moved over, in [`crate::pki::usage::ORDER`], one at a
//!    time: the supervisor restarts a process whose start-only inputs changed
//!    (the renewed certificates it does not reload by itself are among them,
//!    see [`crate::pki::usage`]), and the next one waits until it answers its
//!    probe again. Pods and containers are not touched: a kubelet restart
//!    leaves them running;
//! 4. with a new admin client certificate, the manager's own units are
//!    restarted (they read `admin.conf` at start) and the user's and the VM's
//!    kubeconfigs merged again, by the `export` phase's code.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::event::Event;
use super::host;
use super::phases::{self, PhaseContext, PhaseError};
use super::state::Phase;
use crate::error::chain;
use crate::pki::{self, CertStatus, due, kubeconfigs, usage};
use crate::supervisor::Supervisor;

/// The operation's name in its events.
pub const OPERATION: &str = "renew-certs";
/// The code of the error when no cluster runs (the CLI then renews the
/// files alone, which the next enable loads).
pub const NOT_RUNNING: &str = "NotRunning";
/// From this long before a CA expires, its rotation is asked for.
pub const CA_WARNING: time::Duration = time::Duration::days(365);
/// What to do about a CA that expires within [`CA_WARNING`]: rotate it in
/// place (see [`super::rotation`]), workloads and data kept.
pub const CA_ADVICE: &str = "run `k8s-manager certs rotate-ca` before that date (the cluster keeps running, its workloads and data are kept)";
/// How long a restarted component has to answer again.
const READY_WITHIN: Duration = Duration::from_secs(90);

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

/// What the PKI and the kubeconfigs hold now.
pub struct Statuses {
    pub leaves: Vec<CertStatus>,
    pub kubeconfigs: Vec<CertStatus>,
}

impl Statuses {
    pub fn read(
        paths: &super::config::Paths,
        renew_within: time::Duration,
    ) -> Result<Statuses, String> {
        let now = OffsetDateTime::now_utc();
        Ok(Statuses {
            leaves: pki::check(&paths.pki, now, renew_within).map_err(|e| chain(&e))?,
            kubeconfigs: kubeconfigs::check(&paths.pki, &paths.kubeconfigs, now, renew_within)
                .map_err(|e| chain(&e))?,
        })
    }

    /// The CAs that expire within [`CA_WARNING`], with what to do.
    pub fn ca_warnings(&self) -> Vec<String> {
        self.leaves
            .iter()
            .filter(|s| s.ca.is_none())
            .filter_map(|s| {
                let days = s.days_left?;
                (days < CA_WARNING.whole_days()).then(|| {
                    let not_after = s.not_after.and_then(|t| t.format(&Rfc3339).ok());
                    format!(
                        "CA {} expires on {} ({days} days): {CA_ADVICE}",
                        s.name,
                        not_after.unwrap_or_default()
                    )
                })
            })
            .collect()
    }
}

/// Renews what `request` asks on the running cluster of `cx`.
pub(super) async fn run(
    cx: &mut PhaseContext<'_>,
    supervisor: &Supervisor,
    request: &RenewRequest,
) -> Result<(), PhaseError> {
    let phase = Phase::Certs;
    let fail = |e: String| PhaseError::new(phase, e);
    let paths = cx.components.paths.clone();
    let config = cx.config.clone();
    let renew_within = config.renew_within();
    let statuses = {
        let paths = paths.clone();
        host::blocking(move || Statuses::read(&paths, renew_within))
            .await
            .map_err(fail)?
    };
    for warning in statuses.ca_warnings() {
        cx.progress.notice(format!("warning: {warning}"));
    }
    let selection = if request.due_only {
        due::due(&statuses.leaves, &statuses.kubeconfigs)
    } else {
        let leaves: Vec<String> = statuses
            .leaves
            .iter()
            .filter(|s| s.ca.is_some())
            .map(|s| s.name.clone())
            .collect();
        let names = kubeconfigs::names().map_err(|e| fail(chain(&e)))?;
        due::named(&request.names, &leaves, &names)
            .map_err(|e| PhaseError::with_code(phase, "InvalidArgument", e))?
    };
    if selection.is_empty() {
        cx.progress
            .notice("no certificate is due for renewal".into());
        return Ok(());
    }

    let validity = request
        .validity_days
        .map(|days| time::Duration::days(days.into()));
    let renewed = {
        let (paths, config, selection) = (paths.clone(), config.clone(), selection.clone());
        host::blocking(move || renew_files(&paths, &config, &selection, validity))
            .await
            .map_err(fail)?
    };
    for (name, not_after) in &renewed {
        cx.progress.emit(Event::CertRenewed {
            name: name.clone(),
            not_after: not_after.clone(),
        });
    }

    move_components(cx, supervisor, "its renewed certificate").await?;

    let files: Vec<String> = renewed.iter().map(|(name, _)| name.clone()).collect();
    if usage::moves(&files).manager {
        move_manager(cx, supervisor, "the new admin client certificate").await?;
    }
    Ok(())
}

/// Restarts, in [`usage::ORDER`], each component whose start-only inputs
/// changed, and waits until it answers before the next one is looked at.
pub(super) async fn move_components(
    cx: &mut PhaseContext<'_>,
    supervisor: &Supervisor,
    what: &str,
) -> Result<(), PhaseError> {
    let phase = Phase::Certs;
    for component in crate::components::ALL {
        if let Some(handover) = component.handover(&cx.components)
            && supervisor.inputs_changed(component.name()).await == Some(true)
        {
            match hand_over(cx, supervisor, component, &handover).await {
                Ok(()) => {
                    cx.progress.notice(format!(
                        "{} handed over to a new instance to load {what}",
                        component.name()
                    ));
                    continue;
                }
                // It still runs, with its old files: a restart, as for the others.
                Err(why) => cx.progress.notice(format!(
                    "{} cannot be handed over ({why}): restarting it",
                    component.name()
                )),
            }
        }
        let restarted = supervisor
            .refresh(component.name(), component.stop_grace())
            .await
            .map_err(|e| {
                PhaseError::new(
                    phase,
                    format!("restarting {}: {}", component.name(), chain(&e)),
                )
            })?;
        if restarted == Some(true) {
            cx.progress
                .notice(format!("{} restarted to load {what}", component.name()));
            cx.deadline = READY_WITHIN;
            phases::wait_ready(cx, phase, component).await?;
        }
    }
    Ok(())
}

/// Replaces the running `component` by a new instance beside it
/// ([`crate::supervisor::handover`]): the new instance's clients are moved
/// to it once it answers ready, then the old one stops. On an error the old
/// one runs on, untouched, with every client.
async fn hand_over(
    cx: &PhaseContext<'_>,
    supervisor: &Supervisor,
    component: &dyn crate::components::Component,
    handover: &crate::components::Handover,
) -> Result<(), String> {
    use crate::supervisor::handover::{Route, Steering};
    let name = component.name();
    let pid = supervisor
        .child_status(name)
        .await
        .and_then(|s| s.pid)
        .ok_or_else(|| format!("{name} does not run"))?;
    let port = handover.port;
    let steering = host::blocking(move || Steering::of(pid, port)).await?;
    steering
        .route(Route::Ipv6ToNewcomer)
        .map_err(|e| format!("steering port {port}: {e}"))?;
    let probe_name = format!("{name} (newcomer)");
    let take_over = |newcomer: u32| async move {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        // Until the newcomer listens, the group's second socket is not
        // its: a probe would reach the old instance.
        while host::blocking(move || {
            crate::procnet::listener_fd(std::path::Path::new("/proc"), newcomer, port)
        })
        .await
        .is_none()
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the new {name} did not listen on {port}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            match cx.api.probe(&probe_name, &handover.probe).await {
                Ok(()) => break,
                Err(last) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the new {name} was not ready within {}s: {last}",
                        READY_WITHIN.as_secs()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        steering
            .route(Route::AllToNewcomer)
            .map_err(|e| format!("steering port {port}: {e}"))?;
        drop(steering);
        Ok(())
    };
    supervisor
        .replace(name, component.stop_grace(), take_over)
        .await
        .map(|_| ())
}

/// After `admin.conf` changed: the manager's own units restarted (they read
/// it at start), and the user's and the VM's kubeconfigs merged again by the
/// export phase's code (their other entries kept).
pub(super) async fn move_manager(
    cx: &mut PhaseContext<'_>,
    supervisor: &Supervisor,
    what: &str,
) -> Result<(), PhaseError> {
    let config = cx.config.clone();
    let paths = cx.components.paths.clone();
    {
        for unit in crate::controllers::units(&config, cx.units) {
            if unit.name == crate::controllers::certs::NAME {
                continue; // this renewal's own caller; it reads no kubeconfig
            }
            supervisor
                .stop(&unit.name, crate::controllers::STOP_GRACE)
                .await;
            supervisor
                .start_task(unit, crate::controllers::STOP_GRACE)
                .await;
        }
        let admin = paths.admin_kubeconfig();
        let written = host::blocking(move || super::export::merge(&config, &admin))
            .await
            .map_err(|e| PhaseError::new(Phase::Export, e))?;
        let names: Vec<String> = written.iter().map(|f| f.display().to_string()).collect();
        cx.progress
            .notice(format!("{what} is merged into {}", names.join(", ")));
    }
    Ok(())
}

/// The components' kubeconfigs of the running cluster, as the
/// `kubeconfigs` phase writes them.
pub(super) fn kubeconfigs_config(
    paths: &super::config::Paths,
    config: &super::config::ClusterConfig,
) -> kubeconfigs::KubeconfigsConfig {
    let mut files = kubeconfigs::KubeconfigsConfig::new(
        &paths.pki,
        &paths.kubeconfigs,
        format!("https://127.0.0.1:{}", config.api_port),
        &config.node_name,
    );
    files.renew_within = config.renew_within();
    files
}

/// Re-issues the selection's files; returns each renewed certificate (by
/// name, kubeconfigs by file) and its new expiry.
fn renew_files(
    paths: &super::config::Paths,
    config: &super::config::ClusterConfig,
    selection: &due::Selection,
    validity: Option<time::Duration>,
) -> Result<Vec<(String, String)>, String> {
    let mut renewed = Vec::new();
    if !selection.leaves.is_empty() {
        for cert in pki::renew(&paths.pki, &selection.leaves, validity).map_err(|e| chain(&e))? {
            renewed.push((
                cert.name,
                cert.not_after.format(&Rfc3339).unwrap_or_default(),
            ));
        }
    }
    if !selection.kubeconfigs.is_empty() {
        let mut files = kubeconfigs_config(paths, config);
        files.client_validity = validity;
        files.renew = selection.kubeconfigs.clone();
        let outcomes = kubeconfigs::write_all(&files).map_err(|e| chain(&e))?;
        let now = OffsetDateTime::now_utc();
        let after = kubeconfigs::check(&paths.pki, &paths.kubeconfigs, now, config.renew_within())
            .map_err(|e| chain(&e))?;
        for outcome in outcomes {
            if outcome.action == pki::Action::Kept {
                continue;
            }
            let not_after = after
                .iter()
                .find(|s| s.name == outcome.name)
                .and_then(|s| s.not_after)
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default();
            renewed.push((outcome.name, not_after));
        }
    }
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_components_are_moved_in_the_usage_order() {
        let names: Vec<&str> = crate::components::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, usage::ORDER);
    }

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

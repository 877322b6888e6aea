//! The certificate renewal unit (`certs-renewal`): it checks the running
//! cluster's certificates when it starts (each enable, so also when the
//! daemon brings the cluster back) and then every `certs.checkInterval`
//! (12 hours by default), and when a leaf or a kubeconfig client
//! certificate is within `certs.renewWithinDays` of expiry, or a CA within a
//! year, asks the daemon for the `renew-certs` operation through the control
//! API, as `certs renew` does ([`crate::cluster::renewal`]).
//!
//! Going through the API, it takes its turn with enable, disable and reset,
//! and never touches a process itself: the supervisor stays the one owner of
//! the processes. It follows the settings the daemon holds (it reads no
//! file of the daemon's): both are taken again at each check, and a new
//! interval ends the wait at once, so a change (effect none) applies at once. The decision is pure
//! ([`needs_operation`]), and the files are read off the runtime's threads.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use tokio::sync::watch;

use super::Unit;
use crate::client::{Client, OperationFailed};
use crate::components::ApiServer;
use crate::model::api::RenewRequest;
use crate::model::config::{ClusterConfig, Paths};
use crate::model::error::code;
use crate::model::settings::Settings;
use crate::pki::due::{self, Statuses};
use crate::supervisor::{TaskContext, TaskSpec};

/// The unit's name, as `status` shows it.
pub const NAME: &str = "certs-renewal";

/// The unit as declared: started once the API answers, with the API
/// server's clients, and stopped with them.
pub const UNIT: Unit = Unit {
    name: NAME,
    needs: &[&ApiServer],
    make: |config, handles| unit(config, handles.settings.clone()),
};

/// The supervised unit of a cluster with `config`, following the
/// daemon's settings as it saves them.
pub fn unit(config: &ClusterConfig, settings: watch::Receiver<Settings>) -> TaskSpec {
    let paths = config.paths();
    TaskSpec::new(NAME, move |ctx| {
        let (paths, settings) = (paths.clone(), settings.clone());
        async move { run(ctx, paths, settings).await }
    })
}

/// Whether the statuses call for the operation: something due, or a CA to
/// rotate (the operation tells it as an event).
pub fn needs_operation(statuses: &Statuses) -> bool {
    !due::due(&statuses.leaves, &statuses.kubeconfigs).is_empty()
        || !statuses.ca_warnings().is_empty()
}

/// The earliest expiry among the leaves and kubeconfigs, for `status`.
fn earliest(statuses: &Statuses) -> Option<(String, OffsetDateTime)> {
    statuses
        .leaves
        .iter()
        .chain(&statuses.kubeconfigs)
        .filter_map(|s| s.not_after.map(|t| (s.name.clone(), t)))
        .min_by_key(|(_, t)| *t)
}

async fn read_statuses(paths: &Paths, renew_within: time::Duration) -> Result<Statuses, String> {
    let paths = paths.clone();
    tokio::task::spawn_blocking(move || {
        Statuses::read(&paths.pki, &paths.kubeconfigs, renew_within)
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn run(
    mut ctx: TaskContext,
    paths: Paths,
    mut settings: watch::Receiver<Settings>,
) -> Result<(), String> {
    ctx.ready();
    loop {
        let current = settings.borrow_and_update().clone();
        let renew_within = time::Duration::days(current.certs.renew_within_days.into());
        let statuses = read_statuses(&paths, renew_within).await?;
        if needs_operation(&statuses) {
            ctx.detail(Some("renewing certificates".into()));
            let ask = ask_daemon(&paths);
            tokio::select! {
                result = ask => result?,
                _ = ctx.stopping() => return Ok(()),
            }
        }
        let checked = std::time::Instant::now();
        let after = read_statuses(&paths, renew_within).await?;
        let mut interval = Duration::from_secs(current.certs.check_interval);
        // Whole seconds: a status line, not a timestamp to parse.
        let next = (OffsetDateTime::now_utc() + interval)
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let mut detail = format!("next check {}", next.format(&Rfc3339).unwrap_or_default());
        if let Some((name, at)) = earliest(&after) {
            detail.push_str(&format!(
                "; earliest expiry {name} on {}",
                at.format(&Rfc3339).unwrap_or_default()
            ));
        }
        ctx.detail(Some(detail));
        // The wait ends at the interval the settings say now: a change is
        // told by the daemon the moment it is saved.
        while checked.elapsed() < interval {
            let left = interval - checked.elapsed();
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                changed = settings.changed() => match changed {
                    Ok(()) => {
                        let check_interval = settings.borrow_and_update().certs.check_interval;
                        interval = Duration::from_secs(check_interval);
                    }
                    // The daemon is going: nothing will change the interval.
                    Err(_) => tokio::time::sleep(left).await,
                },
                _ = ctx.stopping() => return Ok(()),
            }
        }
    }
}

/// Asks the daemon for the renewal of what is due, and waits for its end.
/// A failure is this run's error: the unit is restarted with backoff, and
/// checks again.
async fn ask_daemon(paths: &Paths) -> Result<(), String> {
    let request = RenewRequest {
        due_only: true,
        ..RenewRequest::default()
    };
    let body = serde_json::to_vec(&request).expect("serialises");
    let done = Client::new(&paths.socket)
        .run_operation(crate::model::api::CERTS_RENEW, body)
        .await;
    match done {
        Ok(()) => Ok(()),
        Err(OperationFailed::Failed {
            error: Some(error), ..
        }) if error.code == code::NOT_RUNNING => Ok(()),
        Err(OperationFailed::Failed { message, .. }) => {
            Err(format!("the renewal failed: {message}"))
        }
        Err(OperationFailed::Client(err)) => {
            Err(format!("asking the manager for the renewal: {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertState, CertStatus};

    fn status(name: &str, ca: Option<&str>, state: CertState, days: i64) -> CertStatus {
        let now = OffsetDateTime::now_utc();
        CertStatus {
            name: name.into(),
            ca: ca.map(str::to_string),
            not_after: Some(now + time::Duration::days(days)),
            days_left: Some(days),
            state,
            problem: None,
        }
    }

    #[test]
    fn the_operation_is_asked_for_what_is_due_or_a_ca_to_rotate() {
        let fine = Statuses {
            leaves: vec![
                status("ca", None, CertState::Ok, 3000),
                status("apiserver", Some("ca"), CertState::Ok, 300),
            ],
            kubeconfigs: vec![status("admin.conf", Some("ca"), CertState::Ok, 200)],
        };
        assert!(!needs_operation(&fine));
        assert_eq!(earliest(&fine).unwrap().0, "admin.conf");
        let mut leaf_due = Statuses {
            leaves: fine.leaves.clone(),
            kubeconfigs: vec![status("admin.conf", Some("ca"), CertState::RenewSoon, 10)],
        };
        assert!(needs_operation(&leaf_due));
        leaf_due.kubeconfigs.clear();
        leaf_due.leaves[0] = status("ca", None, CertState::Ok, 300);
        assert!(needs_operation(&leaf_due), "a CA within a year");
    }
}

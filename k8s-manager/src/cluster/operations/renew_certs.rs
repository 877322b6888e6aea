//! `certs renew`: certificates renewed on the running cluster, asked for by
//! `k8s-manager certs renew` and by the daemon's renewal unit
//! ([`crate::controllers::certs`]) when something is due. Its steps:
//!
//! 1. `select`: what to renew: the leaves and kubeconfig client
//!    certificates named, or (`dueOnly`) those within
//!    `certs.renewWithinDays` of expiry or expired ([`crate::pki::due`]); a
//!    CA within a year of expiry is told about, with what to do;
//! 2. `reissue`: re-issued under the same CA with the same subject and
//!    names ([`crate::pki::renew`], [`crate::pki::kubeconfigs::write_all`]):
//!    one `cert-renewed` event each;
//! 3. `move-components`: each component moved over ([`rollout`]);
//! 4. `move-manager`: with a new admin client certificate, the manager's
//!    own units restarted and the user's and the VM's kubeconfigs merged
//!    again.

use futures::FutureExt;
use futures::future::BoxFuture;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cluster::context::{Carrying, run_on_running};
use crate::cluster::operation::{Needs, Operation, Step, Turn, World};
use crate::cluster::rollout;
use crate::error::chain;
use crate::model::api::RenewRequest;
use crate::model::config::ClusterConfig;
use crate::model::error::OperationError;
use crate::model::event::Event;
use crate::pki::{self, due, kubeconfigs, usage};

/// The operation's name in its events.
pub const NAME: &str = "renew-certs";

/// The operation: `request` on the running cluster of `config`.
pub struct RenewCerts {
    pub request: RenewRequest,
    pub config: ClusterConfig,
}

impl Operation for RenewCerts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs(&self) -> Needs {
        Needs::RunningCluster
    }

    fn turn(&self) -> Turn {
        Turn::CancelledByStops
    }

    fn done(&self, seconds: f64) -> String {
        format!("certificates checked in {seconds:.1}s")
    }

    fn target(&self) -> Option<&ClusterConfig> {
        Some(&self.config)
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        let renewal = Renewal {
            request: &self.request,
            selection: due::Selection::default(),
            renewed: Vec::new(),
        };
        async move {
            let steps = steps();
            run_on_running(world, &self.config, NAME, renewal, &steps).await
        }
        .boxed()
    }
}

/// A renewal as it goes: what was asked, what was selected, then what was
/// renewed.
struct Renewal<'a> {
    request: &'a RenewRequest,
    selection: due::Selection,
    /// Each renewed certificate (by name, kubeconfigs by file) and its new expiry.
    renewed: Vec<(String, String)>,
}

type Run<'a, 'b> = Carrying<'b, Renewal<'a>>;
type Done<'a> = BoxFuture<'a, Result<(), OperationError>>;

fn steps<'a, 'b>() -> [Step<Run<'a, 'b>>; 4] {
    [
        Step::new("select", "choosing the certificates to renew", 30, select),
        Step::new("reissue", "re-issuing them under the same CA", 60, reissue),
        Step::new(
            "move-components",
            "moving each component over, one at a time",
            600,
            move_components,
        ),
        Step::new(
            "move-manager",
            "moving the manager's units and kubeconfigs over",
            60,
            move_manager,
        ),
    ]
}

fn select<'a>(run: &'a mut Run<'_, '_>) -> Done<'a> {
    async move {
        let cx = &run.cx;
        let paths = cx.components.paths.clone();
        let renew_within = cx.config.renew_within();
        let statuses = crate::offload::blocking(move || {
            due::Statuses::read(&paths.pki, &paths.kubeconfigs, renew_within)
        })
        .await
        .map_err(|e| cx.fail(e))?;
        for warning in statuses.ca_warnings() {
            cx.notice(format!("warning: {warning}"));
        }
        run.state.selection = if run.state.request.due_only {
            due::due(&statuses.leaves, &statuses.kubeconfigs)
        } else {
            let leaves: Vec<String> = statuses
                .leaves
                .iter()
                .filter(|s| s.ca.is_some())
                .map(|s| s.name.clone())
                .collect();
            let names = kubeconfigs::names().map_err(|e| cx.fail(chain(&e)))?;
            due::named(&run.state.request.names, &leaves, &names)
                .map_err(|e| OperationError::with_code(cx.phase.clone(), "InvalidArgument", e))?
        };
        if run.state.selection.is_empty() {
            cx.notice("no certificate is due for renewal".into());
        }
        Ok(())
    }
    .boxed()
}

fn reissue<'a>(run: &'a mut Run<'_, '_>) -> Done<'a> {
    async move {
        if run.state.selection.is_empty() {
            return Ok(());
        }
        let cx = &run.cx;
        let validity = run
            .state
            .request
            .validity_days
            .map(|days| time::Duration::days(days.into()));
        let (paths, config, selection) = (
            cx.components.paths.clone(),
            cx.config.clone(),
            run.state.selection.clone(),
        );
        run.state.renewed =
            crate::offload::blocking(move || renew_files(&paths, &config, &selection, validity))
                .await
                .map_err(|e| cx.fail(e))?;
        for (name, not_after) in &run.state.renewed {
            cx.progress.emit(Event::CertRenewed {
                name: name.clone(),
                not_after: not_after.clone(),
            });
        }
        Ok(())
    }
    .boxed()
}

fn move_components<'a>(run: &'a mut Run<'_, '_>) -> Done<'a> {
    async move {
        if run.state.renewed.is_empty() {
            return Ok(());
        }
        rollout::move_components(&mut run.cx, "its renewed certificate").await
    }
    .boxed()
}

fn move_manager<'a>(run: &'a mut Run<'_, '_>) -> Done<'a> {
    async move {
        let files: Vec<String> = run
            .state
            .renewed
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        if !usage::moves(&files).manager {
            return Ok(());
        }
        rollout::move_manager(&mut run.cx, "the new admin client certificate").await
    }
    .boxed()
}

/// Re-issues the selection's files; returns each renewed certificate (by
/// name, kubeconfigs by file) and its new expiry.
fn renew_files(
    paths: &crate::model::config::Paths,
    config: &ClusterConfig,
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
        let mut files = super::enable::kubeconfigs_config(paths, config);
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
    use crate::cluster::cancel::CancelSignal;
    use crate::cluster::fakes::{self, Behaviour, World};

    #[test]
    fn the_components_are_moved_in_the_usage_order() {
        let names: Vec<&str> = crate::cluster::order::components()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, usage::ORDER);
    }

    fn renewed(world: &World) -> Vec<String> {
        let events = world.events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::CertRenewed { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// A cluster of `behaviour` brought up in the fakes, and a renewal of
    /// `names` on it.
    async fn renew(
        dir: &std::path::Path,
        behaviour: Behaviour,
        names: &[&str],
    ) -> (std::sync::Arc<World>, Result<(), OperationError>) {
        let config = fakes::config(dir);
        let world = World::new(behaviour);
        world.enable(&config, CancelSignal::new()).await.unwrap();
        let renew = RenewCerts {
            request: RenewRequest {
                names: names.iter().map(|n| n.to_string()).collect(),
                ..RenewRequest::default()
            },
            config: config.clone(),
        };
        let result = world.run(&renew, &config.paths(), Some(config)).await;
        (world, result)
    }

    #[tokio::test]
    async fn a_renewal_hands_the_api_server_over_and_restarts_what_reads_its_files_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let behaviour = Behaviour {
            inputs_changed: ["kube-apiserver", "kube-controller-manager"].into(),
            ..Behaviour::default()
        };
        let (world, result) = renew(dir.path(), behaviour, &["apiserver", "admin"]).await;
        result.unwrap();
        let j = &world.journal;
        for (first, then) in [
            ("phase select", "phase reissue"),
            ("phase reissue", "phase move-components"),
            ("phase move-components", "hand over kube-apiserver"),
            (
                "hand over kube-apiserver",
                "ready kube-apiserver (newcomer)",
            ),
            (
                "ready kube-apiserver (newcomer)",
                "handed over kube-apiserver",
            ),
            (
                "handed over kube-apiserver",
                "restart kube-controller-manager",
            ),
            ("restart kube-controller-manager", "phase move-manager"),
        ] {
            j.before(first, then);
        }
        assert!(!j.has("restart kubelet"), "{:#?}", j.entries());
        let mut names = renewed(&world);
        names.sort();
        assert_eq!(names, ["admin.conf", "apiserver"]);
        // A new admin certificate: the manager's units start again (but the
        // renewal's own caller) after the components moved.
        let moved = j.position("phase move-manager");
        for unit in crate::controllers::UNITS.map(|u| u.name) {
            let stopped = j.entries()[moved..].contains(&format!("stop {unit}"));
            assert_eq!(stopped, unit != crate::controllers::certs::NAME, "{unit}");
        }
    }

    #[tokio::test]
    async fn a_component_that_cannot_be_handed_over_is_restarted_and_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let behaviour = Behaviour {
            inputs_changed: ["kube-apiserver"].into(),
            handover_fails: Some("no shared port".into()),
            ..Behaviour::default()
        };
        let (world, result) = renew(dir.path(), behaviour, &["apiserver"]).await;
        result.unwrap();
        assert!(world.journal.has("restart kube-apiserver"));
        assert!(
            world.notices().contains(
                &"kube-apiserver cannot be handed over (no shared port): restarting it".into()
            ),
            "{:?}",
            world.notices()
        );
        // Only the API server's files changed: no manager move.
        assert!(
            !world.journal.has("stop volumes"),
            "{:#?}",
            world.journal.entries()
        );
    }

    #[tokio::test]
    async fn an_unknown_name_is_refused_under_its_step_and_nothing_is_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let (world, result) = renew(dir.path(), Behaviour::default(), &["nonsense"]).await;
        let err = result.unwrap_err();
        assert_eq!(
            (err.phase.name(), err.code.as_str()),
            ("select", "InvalidArgument")
        );
        assert!(renewed(&world).is_empty());
        assert!(!world.journal.has("phase reissue"));
    }
}

//! The manager: it owns the settings document and converges the cluster to
//! it. A change of settings is checked, saved, and then acted on (start,
//! restart, stop, or reset and start again); `enable`, `disable` and `reset`
//! are settings changes too, followed to their end. It sits below the
//! control API, which hands it every request, and above the cluster's
//! engine, which runs the operations it plans.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::cancel::CancelSignal;
use crate::cluster::engine::Engine;
use crate::cluster::operations::{Disable, Enable, Pause, RenewCerts, Reset, Resume, RotateCa};
use crate::model::api::FreezeRequest;
use crate::model::api::{Applied, ChangeOptions, RenewRequest};
use crate::model::config::{ClusterConfig, Paths};
use crate::model::error::{OperationError, code};
use crate::model::settings::{self, Change, Effect, Facts, Settings, SettingsError};
use crate::model::state::ClusterState;

/// Why a settings change was not made. Nothing was saved, nothing changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A field is wrong: its path and why.
    Invalid(SettingsError),
    /// The change throws the existing cluster away; the request did not
    /// confirm that (`confirm=reset`).
    ResetRequired(Vec<Change>),
    /// The settings changed since the revision the client read.
    Stale { revision: u64 },
    /// The settings could not be saved.
    Save(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(err) => write!(f, "{err}"),
            Refusal::ResetRequired(changes) => {
                let keys: Vec<&str> = changes
                    .iter()
                    .filter(|c| c.effect == Effect::Reset)
                    .map(|c| c.key.as_str())
                    .collect();
                write!(
                    f,
                    "changing {} throws the existing cluster away (a reset: its workloads and data are lost); confirm the reset to go ahead",
                    keys.join(", ")
                )
            }
            Refusal::Stale { revision } => write!(
                f,
                "the settings changed since they were read (now revision {revision}): read them again"
            ),
            Refusal::Save(err) => write!(f, "{err}"),
        }
    }
}

impl Refusal {
    /// The error's stable code in the control API.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "InvalidSettings",
            Refusal::ResetRequired(_) => "ResetRequired",
            Refusal::Stale { .. } => "Conflict",
            Refusal::Save(_) => "SettingsNotSaved",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Refusal::Invalid(err) if !err.field.is_empty() => Some(&err.field),
            _ => None,
        }
    }
}

/// A document asked for, and the bundle it runs (found when the cluster is
/// to run, or the change names a bundle).
struct Desired {
    settings: Settings,
    bundle: Bundle,
}

/// A bundle folder and its Kubernetes version, when one was looked for.
type Bundle = Option<(PathBuf, settings::Version)>;

/// What brings the cluster to the settings: a settings change's plan.
/// Commands on the running cluster (`certs renew`, `certs rotate-ca`) are
/// no plans: they are operations run as asked ([`Manager::renew_certs`]).
#[derive(Debug, Clone)]
pub enum Plan {
    /// Nothing to do.
    Keep,
    /// Start (or re-check) the cluster with this configuration. The ticket
    /// was taken with the settings held: a toggle off saved after it cancels
    /// this enable, even one that has not begun yet.
    Enable(ClusterConfig, CancelSignal),
    /// Stop everything of the cluster, keeping its data.
    Disable,
    /// Throw the cluster away, then start a fresh one with this configuration.
    Rebuild(ClusterConfig),
    /// Throw the cluster away, and leave it off.
    Remove,
}

pub struct Manager {
    engine: Arc<Engine>,
    paths: Paths,
    /// Where bundles are found (`<cache>/bundles/<version>`).
    cache: PathBuf,
    /// Held across a whole change (check, save, plan): changes take turns.
    settings: tokio::sync::Mutex<Settings>,
    /// The saved document, for those who follow its changes (the settings
    /// page moves to a new `ui.port`).
    saved: tokio::sync::watch::Sender<Settings>,
}

impl Manager {
    /// The manager of a state folder: its engine, and its settings (made
    /// from an earlier manager's saved configuration the first time). A
    /// damaged settings file is an error: it is never replaced unasked.
    pub fn new(paths: Paths, cache: PathBuf) -> Result<Manager, String> {
        let (saved, following) = tokio::sync::watch::channel(Settings::default());
        let engine = Engine::new(paths.clone(), following).map_err(|e| e.to_string())?;
        let settings = match settings::load(&paths.settings_file)? {
            Some(settings) => settings,
            None => {
                let record = engine.record();
                let settings = match &record.cluster {
                    Some(config) => Settings::from_config(config, record.legacy_enabled),
                    None => Settings::default(),
                };
                settings::save(&paths.settings_file, &settings)
                    .map_err(|e| format!("cannot save {}: {e}", paths.settings_file.display()))?;
                settings
            }
        };
        saved.send_replace(settings.clone());
        Ok(Manager {
            engine: Arc::new(engine),
            paths,
            cache,
            saved,
            settings: tokio::sync::Mutex::new(settings),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The settings as saved, secrets included: the daemon's own.
    pub async fn settings(&self) -> Settings {
        self.settings.lock().await.clone()
    }

    /// The settings as the control API shows them: the proxy passwords and
    /// the components' variables are write-only ([`Settings::redacted`]).
    pub async fn shown_settings(&self) -> Settings {
        self.settings.lock().await.redacted()
    }

    /// The saved settings, told again at each change.
    pub fn watch_settings(&self) -> tokio::sync::watch::Receiver<Settings> {
        self.saved.subscribe()
    }

    /// Where bundles are found (`<cache>/bundles/<version>`).
    pub fn cache(&self) -> &std::path::Path {
        &self.cache
    }

    /// What the facts of the cluster are for judging a change. The bundles'
    /// versions matter only to a change of bundle: only then is the current
    /// one read (the desired one was found by [`Manager::desired`]).
    fn facts(&self, current: &Settings, desired: &Settings, bundle: &Bundle) -> Facts {
        let running = matches!(
            self.engine.record().state,
            ClusterState::Starting { .. } | ClusterState::Running
        );
        let (now, next) = (&current.kubernetes, &desired.kubernetes);
        let other_bundle = now.version != next.version || now.bundle != next.bundle;
        let current_version = other_bundle
            .then(|| now.find_bundle(&self.cache).ok())
            .flatten()
            .map(|(_, v)| v.to_string());
        Facts {
            cluster_exists: self.paths.etcd_data.join("member").exists(),
            running,
            current_version,
            desired_version: bundle.as_ref().map(|(_, v)| v.to_string()),
        }
    }

    /// What changing the settings by `patch` would do, changing nothing.
    pub async fn propose(&self, patch: &Value) -> Result<Vec<Change>, Refusal> {
        let current = self.settings.lock().await.clone();
        let desired = self.desired(&current, patch)?;
        let facts = self.facts(&current, &desired.settings, &desired.bundle);
        settings::changes(&current, &desired.settings, &facts).map_err(Refusal::Invalid)
    }

    /// The document `patch` asks for, checked, with the bundle it names found.
    fn desired(&self, current: &Settings, patch: &Value) -> Result<Desired, Refusal> {
        let mut desired = current.patched(patch).map_err(Refusal::Invalid)?;
        // A component's flag or variable that the manager sets is refused
        // (judged for the components whose overrides change).
        crate::components::overrides::check(&desired.components, Some(&current.components))
            .map_err(Refusal::Invalid)?;
        // A version asked for is the cache's bundle of it: a bundle folder
        // chosen before (of another version) no longer holds.
        let k = patch.get("kubernetes");
        let names = |key: &str| k.and_then(|k| k.get(key)).is_some();
        if names("version") && !names("bundle") {
            desired.kubernetes.bundle = None;
        }
        // The bundle is looked for when the cluster is to run, or when the
        // change names one: never for a toggle off (a bundle since removed
        // must not keep the cluster on).
        let k = &desired.kubernetes;
        let mut bundle = None;
        if k.enabled || names("version") || names("bundle") {
            let (dir, version) = k.find_bundle(&self.cache).map_err(Refusal::Invalid)?;
            // The first enable pins the version it found: a newer bundle in
            // the cache later does not silently change the cluster.
            if desired.kubernetes.enabled && desired.kubernetes.version.is_none() {
                desired.kubernetes.version = Some(version.to_string());
            }
            bundle = Some((dir, version));
        }
        Ok(Desired {
            settings: desired,
            bundle,
        })
    }

    /// Checks and saves a change, and says what brings the cluster to it. A
    /// refused change saves nothing.
    pub async fn change(
        &self,
        patch: &Value,
        options: ChangeOptions,
    ) -> Result<(Applied, Plan), Refusal> {
        self.change_and_plan(patch, options, false).await
    }

    /// [`Manager::change`]; with `recheck`, a running cluster with nothing
    /// changed is re-checked (an `enable`) rather than kept.
    async fn change_and_plan(
        &self,
        patch: &Value,
        options: ChangeOptions,
        recheck: bool,
    ) -> Result<(Applied, Plan), Refusal> {
        let mut current = self.settings.lock().await;
        if let Some(revision) = options.revision
            && revision != current.revision
        {
            return Err(Refusal::Stale {
                revision: current.revision,
            });
        }
        let Desired {
            settings: mut desired,
            bundle,
        } = self.desired(&current, patch)?;
        let facts = self.facts(&current, &desired, &bundle);
        let changes = settings::changes(&current, &desired, &facts).map_err(Refusal::Invalid)?;
        let resets = changes.iter().any(|c| c.effect == Effect::Reset);
        if resets && !options.confirm_reset {
            return Err(Refusal::ResetRequired(changes));
        }
        if !changes.is_empty() {
            desired.revision = current.revision + 1;
            settings::save(&self.paths.settings_file, &desired).map_err(|e| {
                Refusal::Save(format!(
                    "cannot save {}: {e}",
                    self.paths.settings_file.display()
                ))
            })?;
            *current = desired.clone();
            self.saved.send_replace(desired.clone());
        }
        let plan = match (desired.kubernetes.enabled, bundle) {
            // Whatever may run (a failed start leaves processes) stops.
            (false, _) => match self.engine.record().state {
                ClusterState::Stopped => Plan::Keep,
                _ => Plan::Disable,
            },
            // Found before anything was saved: a plan cannot fail after.
            (true, None) => unreachable!("a cluster to run has its bundle found"),
            (true, Some((dir, _))) => {
                let config = desired.to_config(&self.paths.state_dir, dir);
                // A component's restart is an enable too: it restarts only
                // the processes whose command line or files changed.
                let restarts = changes
                    .iter()
                    .any(|c| matches!(c.effect, Effect::Restart | Effect::RestartComponent));
                match (resets, restarts || !facts.running || recheck) {
                    (true, _) => Plan::Rebuild(config),
                    (false, true) => Plan::Enable(config, self.engine.enable_ticket()),
                    (false, false) => Plan::Keep,
                }
            }
        };
        Ok((
            Applied {
                // What leaves the daemon: its secrets are write-only.
                settings: desired.redacted(),
                changes,
                operation: None,
            },
            plan,
        ))
    }

    /// The configuration of a cluster made of these settings.
    fn config(&self, settings: &Settings) -> Result<ClusterConfig, Refusal> {
        let (bundle, _) = settings
            .kubernetes
            .find_bundle(&self.cache)
            .map_err(Refusal::Invalid)?;
        Ok(settings.to_config(&self.paths.state_dir, bundle))
    }

    /// The configuration of the running cluster: the settings (one truth: a
    /// change whose effect is `none`, `certs.renewWithinDays`, is in force
    /// at once), with the bundle it was made from (no lookup: an operation
    /// on the running cluster works while its bundle folder is gone). With
    /// no cluster made there is no bundle: the engine refuses the operation
    /// (`NotRunning`) before anything reads it.
    async fn running_config(&self) -> ClusterConfig {
        let settings = self.settings().await;
        let bundle = self.engine.last_made().map(|made| made.bundle);
        settings.to_config(&self.paths.state_dir, bundle.unwrap_or_default())
    }

    /// Changes the settings and converges in the background; the answer
    /// names the operation that converges, if one runs.
    pub async fn apply(
        self: &Arc<Self>,
        patch: &Value,
        options: ChangeOptions,
    ) -> Result<Applied, Refusal> {
        let (mut applied, plan) = self.change(patch, options).await?;
        if !matches!(plan, Plan::Keep) {
            let id = self.engine.operation_id();
            applied.operation = Some(id);
            let manager = self.clone();
            tokio::spawn(async move {
                if let Err(err) = manager.run(plan, id).await {
                    tracing::warn!("operation {id}: {err}");
                }
            });
        }
        Ok(applied)
    }

    /// Runs a plan as operation `id`, then converges whatever changed
    /// meanwhile (see [`Manager::converge`]).
    pub async fn run(&self, plan: Plan, id: u64) -> Result<(), OperationError> {
        let result = match plan {
            Plan::Keep => return Ok(()),
            Plan::Enable(config, ticket) => {
                self.engine.run(&Enable { config }, id, Some(ticket)).await
            }
            Plan::Disable => self.engine.run(&Disable, id, None).await,
            Plan::Rebuild(config) => {
                let reset = Reset {
                    restart: Some(config),
                };
                self.engine.run(&reset, id, None).await
            }
            Plan::Remove => self.engine.run(&Reset { restart: None }, id, None).await,
        };
        if result.is_ok() || result.as_ref().is_err_and(is_cancel) {
            Box::pin(self.converge()).await;
        }
        result
    }

    /// Brings the cluster to the toggle when the two disagree: settings
    /// that enable a stopped cluster start it (a daemon's start, a toggle on
    /// saved while a stop ran), settings that disable a cluster that runs
    /// stop it (a toggle off saved while a reset's fresh start had not
    /// begun). A cluster in error is left for the user to act on: a failed
    /// start is not tried again and again.
    pub async fn converge(&self) {
        let settings = self.settings.lock().await;
        let state = self.engine.record().state;
        let plan = match (settings.kubernetes.enabled, &state) {
            (true, ClusterState::Stopped) => match self.config(&settings) {
                Ok(config) => Plan::Enable(config, self.engine.enable_ticket()),
                Err(err) => {
                    tracing::error!("not bringing the enabled cluster back: {err}");
                    return;
                }
            },
            (false, ClusterState::Running | ClusterState::Starting { .. }) => Plan::Disable,
            _ => return,
        };
        drop(settings);
        let id = self.engine.operation_id();
        if let Err(err) = Box::pin(self.run(plan, id)).await {
            tracing::error!("converging the cluster to the settings: {err}");
        }
    }

    /// `certs renew` on the running cluster, as operation `id`.
    pub async fn renew_certs(&self, request: RenewRequest, id: u64) -> Result<(), OperationError> {
        let ticket = self.engine.enable_ticket();
        let config = self.running_config().await;
        let renew = RenewCerts { request, config };
        self.engine.run(&renew, id, Some(ticket)).await
    }

    /// `certs rotate-ca` on the running cluster, as operation `id`.
    /// Freezes the running cluster (see [`crate::cluster::operations::pause`]).
    pub async fn pause(&self, request: FreezeRequest, id: u64) -> Result<(), OperationError> {
        let ticket = self.engine.enable_ticket();
        self.engine.run(&Pause { request }, id, Some(ticket)).await
    }

    /// Thaws it.
    pub async fn resume(&self, request: FreezeRequest, id: u64) -> Result<(), OperationError> {
        let ticket = self.engine.enable_ticket();
        self.engine.run(&Resume { request }, id, Some(ticket)).await
    }

    pub async fn rotate_ca(&self, id: u64) -> Result<(), OperationError> {
        let ticket = self.engine.enable_ticket();
        let config = self.running_config().await;
        self.engine
            .run(&RotateCa { config }, id, Some(ticket))
            .await
    }

    /// Whether the daemon has nothing to do: no operation runs or waits,
    /// and the settings keep the cluster off.
    pub fn is_idle(&self) -> bool {
        self.engine.is_idle() && !self.saved.borrow().kubernetes.enabled
    }

    /// `enable`: `kubernetes.enabled=true` with the other settings of
    /// `patch`, and the plan that brings the cluster up (an enable of a
    /// running cluster re-checks it).
    pub async fn enable(&self, patch: &Value, options: ChangeOptions) -> Result<Plan, Refusal> {
        if !patch.is_object() {
            // Refused as any change of this shape is, before the toggle joins it.
            return Err(Refusal::Invalid(
                Settings::default()
                    .patched(patch)
                    .expect_err("not an object"),
            ));
        }
        let mut patch = patch.clone();
        settings::merge_patch(&mut patch, &json!({"kubernetes": {"enabled": true}}));
        let (_, plan) = self.change_and_plan(&patch, options, true).await?;
        Ok(plan)
    }

    /// `disable`: `kubernetes.enabled=false`, and a stop of whatever runs.
    pub async fn disable(&self) -> Result<Plan, Refusal> {
        self.change(
            &json!({"kubernetes": {"enabled": false}}),
            ChangeOptions::default(),
        )
        .await?;
        Ok(Plan::Disable)
    }

    /// `reset`: the cluster thrown away, and made again when the settings
    /// keep it enabled and `restart` is true; otherwise it stays off.
    pub async fn reset(&self, restart: bool) -> Result<Plan, Refusal> {
        if !restart {
            self.change(
                &json!({"kubernetes": {"enabled": false}}),
                ChangeOptions::default(),
            )
            .await?;
        }
        let settings = self.settings().await;
        if !settings.kubernetes.enabled {
            return Ok(Plan::Remove);
        }
        // A reset works when nothing else does: settings that no longer
        // make a cluster (its bundle gone) still let it remove the old one.
        Ok(match self.config(&settings) {
            Ok(config) => Plan::Rebuild(config),
            Err(err) => {
                tracing::warn!("the reset leaves the cluster off: {err}");
                Plan::Remove
            }
        })
    }
}

/// Whether an operation ended by a cancel (the settings moved on meanwhile).
fn is_cancel(err: &OperationError) -> bool {
    err.code == code::CANCELLED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manager of a state folder whose settings enable a v1.34.4 cluster,
    /// with an empty bundle cache.
    fn manager_without_its_bundle(dir: &std::path::Path) -> Manager {
        let paths = Paths::new(dir);
        let settings = Settings::default()
            .patched(&json!({"kubernetes": {"enabled": true, "version": "v1.34.4"}}))
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        settings::save(&paths.settings_file, &settings).unwrap();
        Manager::new(paths, dir.join("cache")).unwrap()
    }

    #[tokio::test]
    async fn a_renewal_of_a_cluster_never_made_ends_told_as_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager_without_its_bundle(dir.path());
        let mut events = manager.engine().subscribe();
        let err = manager
            .renew_certs(RenewRequest::default(), 7)
            .await
            .unwrap_err();
        assert_eq!(err.code, code::NOT_RUNNING, "{err}");
        // A client following operation 7 sees it start and end.
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            match event {
                crate::model::event::Event::Started { id, .. } => seen.push(("started", id)),
                crate::model::event::Event::Done { id, .. } => seen.push(("done", id)),
                _ => {}
            }
        }
        assert_eq!(seen, [("started", 7), ("done", 7)]);
    }

    #[tokio::test]
    async fn the_toggle_turns_off_even_when_the_bundle_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager_without_its_bundle(dir.path());
        let (applied, plan) = manager
            .change(
                &json!({"kubernetes": {"enabled": false}}),
                ChangeOptions::default(),
            )
            .await
            .unwrap();
        assert!(!applied.settings.kubernetes.enabled);
        assert!(matches!(plan, Plan::Keep), "nothing runs: {plan:?}");
        let saved = settings::load(&manager.paths().settings_file)
            .unwrap()
            .unwrap();
        assert!(!saved.kubernetes.enabled);
        // On again: refused, naming the version that has no bundle.
        let refusal = manager
            .change(
                &json!({"kubernetes": {"enabled": true}}),
                ChangeOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(refusal.field(), Some("kubernetes.version"), "{refusal}");
    }

    #[tokio::test]
    async fn a_refused_change_saves_nothing_and_a_stale_revision_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager_without_its_bundle(dir.path());
        let before = std::fs::read(&manager.paths().settings_file).unwrap();
        let refusal = manager
            .change(
                &json!({"kubernetes": {"apiPort": 0}}),
                ChangeOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(refusal.code(), "InvalidSettings");
        assert_eq!(
            std::fs::read(&manager.paths().settings_file).unwrap(),
            before
        );
        let stale = ChangeOptions {
            revision: Some(7),
            ..ChangeOptions::default()
        };
        let refusal = manager
            .change(&json!({"kubernetes": {"enabled": false}}), stale)
            .await
            .unwrap_err();
        assert_eq!(refusal, Refusal::Stale { revision: 0 });
        assert_eq!(
            std::fs::read(&manager.paths().settings_file).unwrap(),
            before
        );
    }

    #[tokio::test]
    async fn a_flag_the_manager_owns_is_refused_and_saves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager_without_its_bundle(dir.path());
        let before = std::fs::read(&manager.paths().settings_file).unwrap();
        for (patch, field, why) in [
            (
                json!({"components": {"kube-apiserver": {"extraArgs": ["--v=3", "--anonymous-auth=true"]}}}),
                "components.kube-apiserver.extraArgs[1]",
                "--anonymous-auth is the manager's",
            ),
            (
                json!({"components": {"etcd": {"extraArgs": ["--data-dir=/tmp/etcd"]}}}),
                "components.etcd.extraArgs[0]",
                "--data-dir is the manager's",
            ),
            (
                json!({"components": {"kubelet": {"env": {"HTTP_PROXY": "http://p.test"}}}}),
                "components.kubelet.env.HTTP_PROXY",
                "proxy.http",
            ),
            (
                json!({"components": {"kube-dns": {"extraArgs": ["--v=3"]}}}),
                "components.kube-dns",
                "unknown field",
            ),
        ] {
            for proposal in [true, false] {
                let refusal = match proposal {
                    true => manager.propose(&patch).await.unwrap_err(),
                    false => manager
                        .change(&patch, ChangeOptions::default())
                        .await
                        .unwrap_err(),
                };
                assert_eq!(refusal.code(), "InvalidSettings");
                assert_eq!(refusal.field(), Some(field), "{refusal}");
                assert!(refusal.to_string().contains(why), "{refusal}");
            }
        }
        assert_eq!(
            std::fs::read(&manager.paths().settings_file).unwrap(),
            before
        );
    }

    #[tokio::test]
    async fn an_override_of_a_cluster_that_is_off_is_saved_and_restarts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let manager = Manager::new(Paths::new(dir.path()), dir.path().join("cache")).unwrap();
        let patch = json!({"components": {"kube-apiserver": {"extraArgs": ["--v=3"]}}});
        let proposed = manager.propose(&patch).await.unwrap();
        assert_eq!(proposed.len(), 1, "{proposed:?}");
        assert_eq!(proposed[0].effect, Effect::None, "nothing runs");
        let (applied, plan) = manager
            .change(&patch, ChangeOptions::default())
            .await
            .unwrap();
        assert!(matches!(plan, Plan::Keep), "{plan:?}");
        assert_eq!(
            applied.settings.components.kube_apiserver.extra_args,
            ["--v=3"]
        );
        let saved = settings::load(&manager.paths().settings_file)
            .unwrap()
            .unwrap();
        assert_eq!(saved.components, applied.settings.components);
    }

    #[tokio::test]
    async fn an_earlier_managers_configuration_becomes_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let mut config = ClusterConfig::new(dir.path().into(), "/b/v1.34.4".into());
        config.api_port = 6555;
        std::fs::write(&paths.config_file, serde_json::to_vec(&config).unwrap()).unwrap();
        let manager = Manager::new(paths.clone(), dir.path().join("cache")).unwrap();
        let settings = manager.settings().await;
        assert_eq!(settings.kubernetes.api_port, 6555);
        assert!(!settings.kubernetes.enabled, "the state record says off");
        assert_eq!(
            settings::load(&paths.settings_file).unwrap(),
            Some(settings)
        );
    }
}

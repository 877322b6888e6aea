//! The daemon: it owns the settings document and converges the cluster to
//! it. A change of settings is checked, saved, and then acted on (start,
//! restart, stop, or reset and start again); `enable`, `disable` and `reset`
//! are settings changes too, followed to their end. At start-up the daemon
//! restores what the settings say; on SIGTERM it stops the cluster's
//! components, keeping the settings as they are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::cancel::CancelSignal;
use crate::cluster::config::{ClusterConfig, Paths};
use crate::cluster::engine::Engine;
use crate::cluster::phases::PhaseError;
use crate::cluster::settings::{self, Change, Effect, Facts, Settings, SettingsError};
use crate::cluster::state::ClusterState;

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

/// How a change is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChangeOptions {
    /// A change whose effect is `reset` goes ahead.
    pub confirm_reset: bool,
    /// The revision the client read: refused if the settings changed since.
    pub revision: Option<u64>,
}

/// What the daemon does to bring the cluster to the settings.
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
    /// Renew certificates of the running cluster (`certs renew`, the
    /// renewal unit).
    RenewCerts(crate::cluster::renewal::RenewRequest),
    /// Replace the cluster CAs of the running cluster (`certs rotate-ca`).
    RotateCa,
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
        let engine = Engine::new(paths.clone()).map_err(|e| e.to_string())?;
        let settings = match settings::load(&paths.settings_file)? {
            Some(settings) => settings,
            None => {
                let record = engine.record();
                let settings = match engine.saved_config()? {
                    Some(config) => Settings::from_config(&config, record.enabled),
                    None => Settings::default(),
                };
                settings::save(&paths.settings_file, &settings)
                    .map_err(|e| format!("cannot save {}: {e}", paths.settings_file.display()))?;
                settings
            }
        };
        Ok(Manager {
            engine: Arc::new(engine),
            paths,
            cache,
            saved: tokio::sync::watch::channel(settings.clone()).0,
            settings: tokio::sync::Mutex::new(settings),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub async fn settings(&self) -> Settings {
        self.settings.lock().await.clone()
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
        let record = self.engine.record();
        let busy = matches!(
            record.state,
            ClusterState::Starting { .. } | ClusterState::Running
        );
        let (now, next) = (&current.kubernetes, &desired.kubernetes);
        let other_bundle = now.version != next.version || now.bundle != next.bundle;
        let current_version = other_bundle
            .then(|| settings::resolve_bundle(now, &self.cache).ok())
            .flatten()
            .map(|(_, v)| v.to_string());
        Facts {
            cluster_exists: self.paths.etcd_data.join("member").exists(),
            running: record.enabled || busy,
            current_version,
            desired_version: bundle.as_ref().map(|(_, v)| v.to_string()),
        }
    }

    /// What changing the settings by `patch` would do, changing nothing.
    pub async fn propose(&self, patch: &Value) -> Result<Vec<Change>, Refusal> {
        let current = self.settings.lock().await.clone();
        let desired = self.desired(&current, patch)?;
        let facts = self.facts(&current, &desired.settings, &desired.bundle);
        Ok(settings::changes(&current, &desired.settings, &facts))
    }

    /// The document `patch` asks for, checked, with the bundle it names found.
    fn desired(&self, current: &Settings, patch: &Value) -> Result<Desired, Refusal> {
        let mut desired = current.patched(patch).map_err(Refusal::Invalid)?;
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
            let (dir, version) =
                settings::resolve_bundle(k, &self.cache).map_err(Refusal::Invalid)?;
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
        let changes = settings::changes(&current, &desired, &facts);
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
            (false, _) => match facts.running {
                true => Plan::Disable,
                false => Plan::Keep,
            },
            // Found before anything was saved: a plan cannot fail after.
            (true, None) => unreachable!("a cluster to run has its bundle found"),
            (true, Some((dir, _))) => {
                let config = desired.to_config(&self.paths.state_dir, dir);
                let restarts = changes.iter().any(|c| c.effect == Effect::Restart);
                match (resets, restarts || !facts.running || recheck) {
                    (true, _) => Plan::Rebuild(config),
                    (false, true) => Plan::Enable(config, self.engine.enable_ticket()),
                    (false, false) => Plan::Keep,
                }
            }
        };
        Ok((
            Applied {
                settings: desired,
                changes,
                operation: None,
            },
            plan,
        ))
    }

    /// The configuration of a cluster made of these settings.
    fn config(&self, settings: &Settings) -> Result<ClusterConfig, Refusal> {
        let (bundle, _) = settings::resolve_bundle(&settings.kubernetes, &self.cache)
            .map_err(Refusal::Invalid)?;
        Ok(settings.to_config(&self.paths.state_dir, bundle))
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

    /// Runs a plan as operation `id`.
    pub async fn run(&self, plan: Plan, id: u64) -> Result<(), PhaseError> {
        match plan {
            Plan::Keep => Ok(()),
            Plan::Enable(config, ticket) => self.engine.enable_with(config, id, ticket).await,
            Plan::Disable => self.engine.disable(id).await,
            Plan::Rebuild(config) => {
                let result = self.engine.reset(Some(config), id).await;
                // A toggle off saved while the reset ran, before its enable
                // began, found nothing to cancel: the cluster goes off now.
                if !self.settings().await.kubernetes.enabled && self.engine.record().enabled {
                    let _ = self.engine.disable(self.engine.operation_id()).await;
                }
                result
            }
            Plan::Remove => self.engine.reset(None, id).await,
            Plan::RenewCerts(request) => self.engine.renew_certs(request, id).await,
            Plan::RotateCa => self.engine.rotate_ca(id).await,
        }
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

/// How the daemon runs.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Do not bring back the cluster the settings enable (the CLI starts the
    /// daemon this way for an explicit request).
    pub no_restore: bool,
    /// The group that may use the control socket.
    pub socket_gid: Option<u32>,
    /// Exit after this long with nothing to do.
    pub exit_when_idle: Option<Duration>,
}

/// Runs the daemon of a state folder until SIGTERM, Ctrl-C, or it outlives
/// its purpose: restores the settings, serves the control API, and stops the
/// cluster's components on the way out.
pub async fn run(paths: Paths, cache: PathBuf, options: DaemonOptions) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let manager = Arc::new(Manager::new(paths.clone(), cache).map_err(anyhow::Error::msg)?);
    if !options.no_restore && manager.settings().await.kubernetes.enabled {
        // A cluster that was enabled comes back with the daemon (VM boot).
        let manager = manager.clone();
        tokio::spawn(async move {
            let id = manager.engine.operation_id();
            let settings = manager.settings.lock().await;
            let plan = manager
                .config(&settings)
                .map(|config| Plan::Enable(config, manager.engine.enable_ticket()));
            drop(settings);
            match plan {
                Ok(plan) => {
                    if let Err(err) = manager.run(plan, id).await {
                        tracing::error!("bringing the enabled cluster back: {err}");
                    }
                }
                Err(err) => tracing::error!("not bringing the enabled cluster back: {err}"),
            }
        });
    }
    // Made before the control API answers: a client that reaches the daemon
    // finds the page's token.
    let token = crate::ui::make_token(&paths).context("cannot save the settings page's token")?;
    let visitors = crate::ui::Visitors::default();
    let page = tokio::spawn(crate::ui::run(manager.clone(), token, visitors.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let outlived = outlived(
        manager.engine.clone(),
        paths.clone(),
        options.exit_when_idle,
        visitors,
    );
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            reason = outlived => tracing::info!("exiting: {reason}"),
        }
    };
    crate::api::server::serve(manager.clone(), &paths.socket, options.socket_gid, shutdown).await?;
    page.abort();
    tracing::info!("stopping the cluster's components for shutdown");
    manager.engine.shutdown().await;
    Ok(())
}

/// Resolves, with the reason, once the daemon has outlived its purpose: its
/// socket no longer reaches it (the state folder was deleted, or another
/// daemon took the socket over: the kernel names the process that answers),
/// or it was idle for `idle` (see [`Engine::is_idle`]) with nobody on the
/// settings page (an open page holds its event stream).
async fn outlived(
    engine: Arc<Engine>,
    paths: Paths,
    idle: Option<Duration>,
    visitors: crate::ui::Visitors,
) -> String {
    const EVERY: Duration = Duration::from_secs(1);
    let client = crate::api::client::Client::new(&paths.socket);
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(EVERY).await;
        if client.daemon_pid().await != Some(std::process::id()) {
            return match paths.state_dir.exists() {
                false => format!("the state folder {} is gone", paths.state_dir.display()),
                true => format!("{} no longer reaches this daemon", paths.socket.display()),
            };
        }
        let Some(idle) = idle else { continue };
        match (engine.is_idle() && visitors.none(), idle_since) {
            (false, _) => idle_since = None,
            (true, None) => idle_since = Some(std::time::Instant::now()),
            (true, Some(since)) if since.elapsed() >= idle => {
                return format!("idle for {}s with the cluster off", idle.as_secs());
            }
            (true, Some(_)) => {}
        }
    }
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

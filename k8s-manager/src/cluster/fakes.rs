//! Fakes of the four parts of the world ([`super::host`]) and of the
//! engine's progress sink, for the unit tests of the enable pipeline and the
//! stop and reset procedures. Each writes what was asked of it into one
//! shared journal, in order, so that a test reads what happened when.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::host::{ClusterApi, ContainerRuntime, Host, ImageImport, Machine, Processes, Ready};
use super::operation::Operation;
use super::preflight::Findings;
use super::progress::Progress;
use crate::bundle::Manifest;
use crate::bundle::manifest::{CLUSTER_EXECUTABLES, cluster_executable};
use crate::components::Probe;
use crate::exec::FileIdentity;
use crate::model::config::{ClusterConfig, Paths};
use crate::model::error::OperationError;
use crate::model::event::Event;
use crate::model::state::ClusterState;
use crate::supervisor::stale::StaleProcess;
use crate::supervisor::{ChildStatus, ProcessSpec, RunState, TaskSpec, UnitKind};

/// What happened, in order.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn note(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Forgets what was noted so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Where `entry` first appears; panics with the journal when it does not.
    pub fn position(&self, entry: &str) -> usize {
        let entries = self.entries();
        entries
            .iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("{entry:?} never happened: {entries:#?}"))
    }

    pub fn has(&self, entry: &str) -> bool {
        self.entries().iter().any(|e| e == entry)
    }

    /// Asserts that `first` happened before `then`.
    pub fn before(&self, first: &str, then: &str) {
        assert!(
            self.position(first) < self.position(then),
            "{first:?} after {then:?}: {:#?}",
            self.entries()
        );
    }
}

/// Stands for a future that never ends: what a stuck step does.
fn stuck<T: Send + 'static>() -> BoxFuture<'static, T> {
    futures::future::pending().boxed()
}

/// Notes `entry` when dropped: shows that a future was ended.
struct NoteOnDrop(Journal, &'static str);

impl Drop for NoteOnDrop {
    fn drop(&mut self) {
        self.0.note(self.1);
    }
}

#[derive(Default)]
pub struct Behaviour {
    /// Components whose probe never answers ready.
    pub never_ready: BTreeSet<&'static str>,
    /// Components that keep exiting (their status counts restarts).
    pub crashing: BTreeSet<&'static str>,
    /// The bundle check never ends (a slow digest check).
    pub bundle_check_stuck: bool,
    /// The image import never ends.
    pub import_stuck: bool,
    /// Processes a dead manager left, ended by preflight.
    pub stale: Vec<StaleProcess>,
    /// Pod removal fails with this.
    pub remove_pods_fails: Option<String>,
    /// Unmounting fails with this.
    pub unmount_fails: Option<String>,
    /// Processes whose start-only input files changed (renewed
    /// certificates): a refresh restarts them, once.
    pub inputs_changed: BTreeSet<&'static str>,
    /// A handover fails with this (the old instance runs on).
    pub handover_fails: Option<String>,
}

/// All the fakes, sharing one journal.
pub struct World {
    pub journal: Journal,
    pub behaviour: Behaviour,
    children: Mutex<Vec<(ProcessSpec, ChildStatus)>>,
    pub events: Mutex<Vec<Event>>,
    pub units: crate::controllers::Handles,
    /// Processes moved over to their changed inputs.
    moved: Mutex<BTreeSet<String>>,
    /// What the record keeps of the cluster made.
    pub made: Mutex<Option<ClusterConfig>>,
    /// Whether the cluster is frozen.
    pub frozen: Mutex<bool>,
    /// Each stop of a running unit, with the grace it was given.
    pub stop_graces: Mutex<Vec<(String, Duration)>>,
}

impl World {
    pub fn new(behaviour: Behaviour) -> Arc<World> {
        Arc::new(World {
            journal: Journal::default(),
            behaviour,
            children: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            units: Default::default(),
            moved: Mutex::new(BTreeSet::new()),
            made: Mutex::new(None),
            frozen: Mutex::new(false),
            stop_graces: Mutex::new(Vec::new()),
        })
    }

    pub fn host(&self) -> Host<'_> {
        Host {
            progress: self,
            processes: self,
            runtime: self,
            machine: self,
            units: &self.units,
        }
    }

    /// An enable of `config`, run in this world.
    pub async fn enable(
        &self,
        config: &ClusterConfig,
        cancel: super::cancel::CancelSignal,
    ) -> Result<(), OperationError> {
        let paths = config.paths();
        let enable = super::operations::Enable {
            config: config.clone(),
        };
        self.run_with(&enable, &paths, None, cancel).await
    }

    /// `operation`'s work in this world, on the state folder `paths`, the
    /// cluster last made being `last_made`.
    pub async fn run(
        &self,
        operation: &dyn Operation,
        paths: &Paths,
        last_made: Option<ClusterConfig>,
    ) -> Result<(), OperationError> {
        let cancel = super::cancel::CancelSignal::new();
        self.run_with(operation, paths, last_made, cancel).await
    }

    async fn run_with(
        &self,
        operation: &dyn Operation,
        paths: &Paths,
        last_made: Option<ClusterConfig>,
        cancel: super::cancel::CancelSignal,
    ) -> Result<(), OperationError> {
        let world = super::operation::World {
            host: self.host(),
            api: self,
            cancel: cancel.clone(),
            paths,
            last_made,
            next_enables: cancel,
        };
        operation.run(&world).await
    }

    pub fn running(&self) -> Vec<String> {
        self.children
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.name.clone())
            .collect()
    }

    /// The spec the process `name` runs with.
    pub fn spec(&self, name: &str) -> Option<ProcessSpec> {
        self.children
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| s.name == name)
            .map(|(s, _)| s.clone())
    }

    /// What the daemon's shutdown does: the supervisor's `stop_all`.
    pub async fn processes_stop_all(&self) {
        Processes::stop_all(self, Duration::ZERO).await
    }

    pub fn notices(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Notice { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Progress for World {
    fn emit(&self, event: Event) {
        if let Event::Phase { phase, .. } = &event {
            self.journal.note(format!("phase {phase}"));
        }
        self.events.lock().unwrap().push(event);
    }

    fn set_state(&self, state: ClusterState) {
        self.events.lock().unwrap().push(Event::State { state });
    }

    fn made(&self, config: Option<&ClusterConfig>) {
        *self.made.lock().unwrap() = config.cloned();
    }
}

impl Processes for World {
    fn start(&self, spec: ProcessSpec, _grace: Duration) -> BoxFuture<'_, std::io::Result<u32>> {
        async move {
            let mut children = self.children.lock().unwrap();
            if let Some((running, _)) = children.iter().find(|(s, _)| s.name == spec.name)
                && *running == spec
            {
                return Ok(1);
            }
            children.retain(|(s, _)| s.name != spec.name);
            let crashing = self.behaviour.crashing.contains(spec.name.as_str());
            self.journal.note(format!("start {}", spec.name));
            let status = ChildStatus {
                name: spec.name.clone(),
                kind: crate::supervisor::UnitKind::Process,
                state: RunState::Running,
                pid: Some(1000 + children.len() as u32),
                up_since: Some(crate::sys::now_rfc3339()),
                restarts: if crashing { 3 } else { 0 },
                last_exit: crashing.then(|| "exit status: 1".into()),
                detail: None,
                cpu_millis: None,
                memory_bytes: None,
            };
            children.push((spec, status));
            Ok(1)
        }
        .boxed()
    }

    fn start_task(&self, spec: TaskSpec, _grace: Duration) -> BoxFuture<'_, ()> {
        let mut children = self.children.lock().unwrap();
        if !children.iter().any(|(s, _)| s.name == spec.name) {
            self.journal.note(format!("start task {}", spec.name));
            let status = ChildStatus {
                name: spec.name.clone(),
                kind: UnitKind::Task,
                state: RunState::Running,
                pid: None,
                up_since: Some(crate::sys::now_rfc3339()),
                restarts: 0,
                last_exit: None,
                detail: None,
                cpu_millis: None,
                memory_bytes: None,
            };
            // The fake runs no task: a process spec stands for it.
            let stands_for = ProcessSpec {
                name: spec.name.clone(),
                program: "/task".into(),
                checked: None,
                args: Vec::new(),
                env: Vec::new(),
                log_file: PathBuf::new(),
                inputs: Vec::new(),
            };
            children.push((stands_for, status));
        }
        futures::future::ready(()).boxed()
    }

    fn status(&self) -> BoxFuture<'_, Vec<ChildStatus>> {
        let status = self
            .children
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| c.clone())
            .collect();
        futures::future::ready(status).boxed()
    }

    fn stop<'a>(&'a self, name: &'a str, grace: Duration) -> BoxFuture<'a, ()> {
        let mut children = self.children.lock().unwrap();
        if children.iter().any(|(s, _)| s.name == name) {
            self.journal.note(format!("stop {name}"));
            self.stop_graces
                .lock()
                .unwrap()
                .push((name.to_string(), grace));
            children.retain(|(s, _)| s.name != name);
        }
        futures::future::ready(()).boxed()
    }

    fn set_frozen<'a>(
        &'a self,
        units: &'a [&'a str],
        frozen: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        let verb = if frozen { "freeze" } else { "thaw" };
        self.journal.note(format!("{verb} {}", units.join(",")));
        *self.frozen.lock().unwrap() = frozen;
        futures::future::ready(Ok(())).boxed()
    }

    fn frozen(&self) -> bool {
        *self.frozen.lock().unwrap()
    }

    fn stop_all(&self, _grace: Duration) -> BoxFuture<'_, ()> {
        self.journal.note("stop all");
        // As the supervisor does: the tasks first, then the processes, each
        // the last started first.
        let all = std::mem::take(&mut *self.children.lock().unwrap());
        let (tasks, processes): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|(_, c)| c.kind == UnitKind::Task);
        for (spec, _) in tasks.iter().rev().chain(processes.iter().rev()) {
            self.journal.note(format!("stop {}", spec.name));
        }
        futures::future::ready(()).boxed()
    }

    fn end_stale(
        &self,
        _ours: Vec<u32>,
        _grace: Duration,
        _graceful: &'static [&'static str],
    ) -> BoxFuture<'_, Vec<StaleProcess>> {
        self.journal.note("end stale");
        futures::future::ready(self.behaviour.stale.clone()).boxed()
    }

    fn inputs_changed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<bool>> {
        let running = self.running().iter().any(|n| n == name);
        let changed = self.behaviour.inputs_changed.contains(name)
            && !self.moved.lock().unwrap().contains(name);
        futures::future::ready(running.then_some(changed)).boxed()
    }

    fn refresh<'a>(
        &'a self,
        name: &'a str,
        _grace: Duration,
    ) -> BoxFuture<'a, std::io::Result<Option<bool>>> {
        async move {
            let Some(changed) = self.inputs_changed(name).await else {
                return Ok(None);
            };
            if changed {
                self.journal.note(format!("restart {name}"));
                self.moved.lock().unwrap().insert(name.to_string());
            }
            Ok(Some(changed))
        }
        .boxed()
    }

    fn runs_as<'a>(&'a self, spec: &'a ProcessSpec) -> BoxFuture<'a, Option<bool>> {
        let children = self.children.lock().unwrap();
        let running = children.iter().find(|(s, _)| s.name == spec.name);
        futures::future::ready(running.map(|(s, _)| s == spec)).boxed()
    }

    fn hand_over<'a>(
        &'a self,
        name: &'a str,
        spec: Option<ProcessSpec>,
        _port: u16,
        _grace: Duration,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            if let Some(why) = &self.behaviour.handover_fails {
                return Err(why.clone());
            }
            self.journal.note(format!("hand over {name}"));
            ready(9000).await?;
            self.journal.note(format!("handed over {name}"));
            self.moved.lock().unwrap().insert(name.to_string());
            if let Some(spec) = spec {
                let mut children = self.children.lock().unwrap();
                if let Some((running, _)) = children.iter_mut().find(|(s, _)| s.name == name) {
                    *running = spec;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

impl ContainerRuntime for World {
    fn check(&self) -> BoxFuture<'_, Vec<String>> {
        futures::future::ready(Vec::new()).boxed()
    }

    fn import_images(&self, _import: ImageImport) -> BoxFuture<'static, Result<(), String>> {
        let journal = self.journal.clone();
        let stuck_import = self.behaviour.import_stuck;
        journal.note("import begins");
        async move {
            let _ended = NoteOnDrop(journal.clone(), "import ended");
            if stuck_import {
                stuck::<()>().await;
            }
            // Long enough that the control plane starts meanwhile.
            tokio::time::sleep(Duration::from_millis(50)).await;
            journal.note("import done");
            Ok(())
        }
        .boxed()
    }

    fn remove_pods(&self) -> BoxFuture<'_, Result<(usize, usize), String>> {
        self.journal.note("remove pods");
        let result = match &self.behaviour.remove_pods_fails {
            Some(err) => Err(err.clone()),
            None => Ok((0, 0)),
        };
        futures::future::ready(result).boxed()
    }

    fn clean_network(
        &self,
        pod_subnet: ipnet::Ipv4Net,
        _cni_conf_dir: PathBuf,
    ) -> BoxFuture<'_, Vec<String>> {
        self.journal.note(format!("clean network {pod_subnet}"));
        futures::future::ready(Vec::new()).boxed()
    }
}

impl Machine for World {
    fn check_host(&self, _config: &ClusterConfig, _ports_are_ours: bool) -> Findings {
        self.journal.note("check host");
        Findings::default()
    }

    fn check_bundle(
        &self,
        _bundle: PathBuf,
        _marker: PathBuf,
    ) -> BoxFuture<'static, Result<BTreeMap<String, FileIdentity>, Vec<String>>> {
        self.journal.note("check bundle");
        if self.behaviour.bundle_check_stuck {
            let ended = NoteOnDrop(self.journal.clone(), "bundle check ended");
            return async move {
                let _ended = ended;
                stuck().await
            }
            .boxed();
        }
        futures::future::ready(Ok(BTreeMap::new())).boxed()
    }

    fn unmount_below(&self, _root: &Path) -> Result<(), String> {
        self.journal.note("unmount");
        match &self.behaviour.unmount_fails {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

impl ClusterApi for World {
    fn probe<'a>(
        &'a self,
        component: &'a str,
        _probe: &'a Probe,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            // A handover's newcomer answers as its component does.
            let name = component.trim_end_matches(" (newcomer)");
            let started = self.running().iter().any(|n| n == name);
            let behaviour = &self.behaviour;
            if !started || behaviour.never_ready.contains(name) || behaviour.crashing.contains(name)
            {
                return Err("connection refused".into());
            }
            let ready = format!("ready {component}");
            if !self.journal.has(&ready) {
                self.journal.note(ready);
            }
            Ok(())
        }
        .boxed()
    }

    fn apply_manifests(
        &self,
        manifests: crate::bootstrap::Manifests,
        _values: BTreeMap<&'static str, String>,
        _limit: Duration,
    ) -> BoxFuture<'_, Result<(), String>> {
        let files: Vec<&str> = manifests.iter().map(|(file, _)| *file).collect();
        self.journal.note(format!("apply {}", files.join(",")));
        futures::future::ready(Ok(())).boxed()
    }

    fn node_ready<'a>(&'a self, node: &'a str, _since: i64) -> BoxFuture<'a, Result<(), String>> {
        self.journal.note(format!("node {node} ready"));
        futures::future::ready(Ok(())).boxed()
    }

    fn node_alive<'a>(&'a self, node: &'a str, _since: i64) -> BoxFuture<'a, Result<(), String>> {
        self.journal.note(format!("node {node} alive"));
        futures::future::ready(Ok(())).boxed()
    }

    fn arm_thaw_guard(&self) -> BoxFuture<'_, Result<(), String>> {
        self.journal.note("thaw guard armed");
        futures::future::ready(Ok(())).boxed()
    }

    fn coredns_answers<'a>(
        &'a self,
        _name: &'a str,
        _expect: IpAddr,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.journal.note("coredns answers");
        futures::future::ready(Ok(())).boxed()
    }

    fn root_ca_published<'a>(
        &'a self,
        _new_ca: &'a str,
        with_old: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        let trusted = if with_old { "both CAs" } else { "the new CA" };
        self.journal.note(format!("published {trusted}"));
        futures::future::ready(Ok(())).boxed()
    }
}

/// A world whose cluster of [`config`] in `dir` was enabled.
pub async fn enabled(dir: &Path) -> (Arc<World>, ClusterConfig) {
    let config = config(dir);
    let world = World::new(Behaviour::default());
    world
        .enable(&config, crate::cluster::cancel::CancelSignal::new())
        .await
        .unwrap();
    (world, config)
}

/// Settings for a cluster under `dir`, with a bundle manifest there (no
/// binaries: the fakes run nothing) and the kubeconfig exported into `dir`.
pub fn config(dir: &Path) -> ClusterConfig {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let zeros = "0".repeat(64);
    let mut files: Vec<serde_json::Value> = CLUSTER_EXECUTABLES
        .iter()
        .map(|name| {
            serde_json::json!({"path": cluster_executable(name), "sha256": zeros, "size": 1, "executable": true})
        })
        .collect();
    let images = [
        ("images/pause.tar", "registry.k8s.io/pause:3.10.1"),
        (
            "images/coredns.tar",
            "registry.k8s.io/coredns/coredns:v1.12.1",
        ),
    ];
    for (path, _) in images {
        files.push(
            serde_json::json!({"path": path, "sha256": zeros, "size": 1, "executable": false}),
        );
    }
    let manifest = serde_json::json!({
        "schemaVersion": 1,
        "kubernetes": "v1.34.4",
        "components": {"kubernetes": "v1.34.4"},
        "executables": CLUSTER_EXECUTABLES.iter().map(|name| serde_json::json!({
            "path": cluster_executable(name), "args": ["--version"], "expect": "v1.34.4"
        })).collect::<Vec<_>>(),
        "images": images.iter().map(|(path, reference)| serde_json::json!({"path": path, "ref": reference})).collect::<Vec<_>>(),
        "files": files,
        "links": [],
    });
    std::fs::write(
        bundle.join("bundle.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    Manifest::load(&bundle).expect("a valid test manifest");
    let mut config = ClusterConfig::new(dir.join("state"), bundle);
    config.advertise_address = Some("192.0.2.10".parse().unwrap());
    config.merge_vm_kubeconfig = false;
    config.host_kubeconfig = Some(dir.join("user.kubeconfig").display().to_string());
    config.cni_conf_dir = dir.join("cni");
    config
}

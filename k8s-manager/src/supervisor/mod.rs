//! Supervision of the cluster's units (the k0s/k3s model: etcd, the API
//! server and the rest are children of the manager, not static pods): a unit
//! is a process or an in-process task ([`task`]), under one lifecycle: they
//! start in order, restart with backoff, and stop in reverse order, the
//! order derived from what each needs ([`order`]).
//!
//! Each child runs under a task that restarts it with exponential backoff when
//! it exits without being asked to, counts the restarts, and appends its
//! output to `<state>/logs/<name>.log`. Every child carries two environment
//! variables, [`INSTANCE_ENV`] (the state folder) and [`COMPONENT_ENV`], so
//! that a manager started after a crash finds the children of its predecessor
//! in `/proc` and ends them ([`stale`]). Stop is safe in any state, twice.

pub mod handover;
pub mod order;
pub mod stale;
pub mod task;

pub use task::{TaskContext, TaskSpec};

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::exec::{self, FileIdentity};
use crate::sys::{self, now_rfc3339};

pub const INSTANCE_ENV: &str = "K8S_MANAGER_INSTANCE";
pub const COMPONENT_ENV: &str = "K8S_MANAGER_COMPONENT";

pub(crate) const BACKOFF_START: Duration = Duration::from_millis(500);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that stayed up this long starts its next backoff from the beginning.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How to run one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub name: String,
    pub program: PathBuf,
    /// The identity `program` had when its digest was checked: then that
    /// very file runs, through its descriptor, and a program changed since is
    /// not started (see [`crate::exec`]). Every start checks it, restarts too.
    pub checked: Option<FileIdentity>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log_file: PathBuf,
    /// Files the process reads only when it starts (its kubeconfig, its
    /// configuration): a start finds it running with other contents in them
    /// and restarts it, as for a changed spec.
    pub inputs: Vec<PathBuf>,
}

/// What `inputs` hold: a digest of each file's contents (a missing file
/// counts as such).
fn fingerprint(inputs: &[PathBuf]) -> Vec<u8> {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for path in inputs {
        context.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(bytes) => {
                context.update(&(bytes.len() as u64).to_le_bytes());
                context.update(&bytes);
            }
            Err(_) => context.update(b"\0missing"),
        }
    }
    context.finish().as_ref().to_vec()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// A task that has not yet said it is ready.
    Starting,
    Running,
    /// Exited on its own; waiting before the next start.
    Backoff,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    pub name: String,
    #[serde(default)]
    pub kind: UnitKind,
    pub state: RunState,
    pub pid: Option<u32>,
    pub up_since: Option<String>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// A task's own word on what it does now (`idle: no Docker engine at
    /// ...`, `serving 3 ports`), set with [`TaskContext::detail`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A process's CPU time and working set, all its processes counted,
    /// from its cgroup (see [`crate::cgroups`]); none for a task, or where
    /// the machine has no cgroups for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// What a unit is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    /// A child process (etcd, the API server, ...).
    #[default]
    Process,
    /// A task inside the manager (a controller, a watcher).
    Task,
}

struct Supervised {
    /// A process's spec; `None` for a task (one runs per name).
    spec: Option<ProcessSpec>,
    /// The digest of the spec's inputs when it was started.
    inputs: Vec<u8>,
    name: String,
    status: Arc<Mutex<ChildStatus>>,
    stop: watch::Sender<bool>,
    /// A process's grace between SIGTERM and SIGKILL, as its stop gives it
    /// (`None` for a task, whose grace is its start's).
    grace: Option<Arc<Mutex<Duration>>>,
    task: JoinHandle<()>,
}

/// The children of one manager, by component name.
pub struct Supervisor {
    instance: String,
    /// The cgroups its processes run in, one per component.
    cgroups: Arc<crate::cgroups::Tree>,
    children: tokio::sync::Mutex<Vec<(String, Supervised)>>,
}

impl Supervisor {
    /// `instance` identifies this cluster's processes (the state folder).
    pub fn new(instance: impl Into<String>) -> Supervisor {
        let instance = instance.into();
        let cgroups = crate::cgroups::Tree::detect(&instance);
        cgroups.enable_v2_memory();
        Supervisor {
            cgroups: Arc::new(cgroups),
            instance,
            children: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The cgroups its processes run in.
    pub fn cgroups(&self) -> &crate::cgroups::Tree {
        &self.cgroups
    }

    /// Starts a child, or leaves it alone when it already runs with the same
    /// spec; a changed spec restarts it. Fails only when the program cannot be
    /// started at all (the first start is made here, so that a missing binary
    /// is an error now rather than a restart loop).
    pub async fn start(&self, spec: ProcessSpec, grace: Duration) -> std::io::Result<u32> {
        let mut children = self.children.lock().await;
        let inputs = fingerprint(&spec.inputs);
        if let Some(pos) = children.iter().position(|(name, _)| *name == spec.name) {
            let same = children[pos].1.spec.as_ref() == Some(&spec)
                && children[pos].1.inputs == inputs
                && !children[pos].1.task.is_finished();
            if same {
                let status = children[pos].1.status.lock().expect("status lock").clone();
                if let Some(pid) = status.pid {
                    return Ok(pid);
                }
            }
            let (_, old) = children.remove(pos);
            stop_child(old, grace).await;
        }
        let child = self.launch(spec, inputs, grace)?;
        let pid = child.status.lock().expect("status lock").pid.unwrap_or(0);
        children.push((child.name.clone(), child));
        Ok(pid)
    }

    /// Spawns `spec` under a supervising task; the caller files it.
    fn launch(
        &self,
        spec: ProcessSpec,
        inputs: Vec<u8>,
        grace: Duration,
    ) -> std::io::Result<Supervised> {
        let child = spawn(&spec, &self.instance, &self.cgroups)?;
        let pid = child.id().unwrap_or(0);
        let status = Arc::new(Mutex::new(ChildStatus {
            name: spec.name.clone(),
            kind: UnitKind::Process,
            state: RunState::Running,
            pid: Some(pid),
            up_since: Some(now_rfc3339()),
            restarts: 0,
            last_exit: None,
            detail: None,
            cpu_millis: None,
            memory_bytes: None,
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let grace = Arc::new(Mutex::new(grace));
        let task = tokio::spawn(supervise(
            spec.clone(),
            self.instance.clone(),
            self.cgroups.clone(),
            child,
            status.clone(),
            stop_rx,
            grace.clone(),
        ));
        Ok(Supervised {
            name: spec.name.clone(),
            spec: Some(spec),
            inputs,
            status,
            stop: stop_tx,
            grace: Some(grace),
            task,
        })
    }

    /// Whether the input files of the running process `name` changed since
    /// it started; `None` when no process of that name runs.
    pub async fn inputs_changed(&self, name: &str) -> Option<bool> {
        let children = self.children.lock().await;
        let (_, child) = children.iter().find(|(n, _)| n == name)?;
        let spec = child.spec.as_ref()?;
        Some(fingerprint(&spec.inputs) != child.inputs)
    }

    /// Whether a process runs with this very spec (and unchanged input
    /// files): `Some(false)` when one of its name runs otherwise, `None`
    /// when none does.
    pub async fn runs_as(&self, spec: &ProcessSpec) -> Option<bool> {
        let children = self.children.lock().await;
        let (_, child) = children.iter().find(|(name, _)| *name == spec.name)?;
        if child.task.is_finished() {
            return None;
        }
        Some(child.spec.as_ref() == Some(spec) && child.inputs == fingerprint(&spec.inputs))
    }

    /// Replaces the running process `name` by a new one of the same spec
    /// (or of `spec`, when given), started beside it ([`handover`]): once `take_over(new_pid)` resolves
    /// (the newcomer serves, and its clients were moved to it), the
    /// incumbent is stopped and the newcomer takes its place. When
    /// `take_over` fails, the newcomer is stopped and the incumbent keeps
    /// running; so too when this future is dropped before the end (a
    /// cancelled operation): the newcomer's supervising task ends it once its
    /// stop channel closes. Returns the newcomer's pid.
    pub async fn replace<F, Fut>(
        &self,
        name: &str,
        spec: Option<ProcessSpec>,
        grace: Duration,
        take_over: F,
    ) -> Result<u32, String>
    where
        F: FnOnce(u32) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let (spec, incumbent) = {
            let children = self.children.lock().await;
            let (_, child) = children
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("{name} does not run"))?;
            let running = child
                .spec
                .clone()
                .ok_or_else(|| format!("{name} is a task"))?;
            let pid = child.status.lock().expect("status lock").pid;
            (spec.unwrap_or(running), pid)
        };
        let inputs = fingerprint(&spec.inputs);
        let newcomer = self
            .launch(spec, inputs, grace)
            .map_err(|e| format!("starting a new {name}: {e}"))?;
        let pid = newcomer
            .status
            .lock()
            .expect("status lock")
            .pid
            .unwrap_or(0);
        if let Err(why) = take_over(pid).await {
            stop_child(newcomer, grace).await;
            return Err(why);
        }
        let old = {
            let mut children = self.children.lock().await;
            let pos = children.iter().position(|(n, c)| {
                n == name && c.status.lock().expect("status lock").pid == incumbent
            });
            match pos {
                Some(pos) => Some(std::mem::replace(&mut children[pos].1, newcomer)),
                None => {
                    drop(children);
                    stop_child(newcomer, grace).await;
                    return Err(format!("{name} was stopped during its handover"));
                }
            }
        };
        if let Some(old) = old {
            stop_child(old, grace).await;
        }
        Ok(pid)
    }

    /// Starts an in-process task after the units started so far (so it
    /// stops before them), or leaves it alone when one of that name runs.
    pub async fn start_task(&self, spec: TaskSpec, grace: Duration) {
        let mut children = self.children.lock().await;
        let running = children
            .iter()
            .any(|(name, c)| *name == spec.name && !c.task.is_finished());
        if running {
            return;
        }
        children.retain(|(name, _)| *name != spec.name);
        let status = Arc::new(Mutex::new(task::initial_status(&spec.name)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let name = spec.name.clone();
        let task = tokio::spawn(task::supervise(spec, status.clone(), stop_rx, grace));
        children.push((
            name.clone(),
            Supervised {
                name,
                spec: None,
                inputs: Vec::new(),
                status,
                stop: stop_tx,
                grace: None,
                task,
            },
        ));
    }

    /// Starts a running process again with the spec it runs with: it is
    /// restarted when its input files changed since it started (a renewed
    /// certificate it reads only at start), left alone otherwise. Returns
    /// whether it was restarted; `None` when no process of that name runs.
    pub async fn refresh(&self, name: &str, grace: Duration) -> std::io::Result<Option<bool>> {
        let running = {
            let children = self.children.lock().await;
            children.iter().find(|(n, _)| n == name).and_then(|(_, c)| {
                let pid = c.status.lock().expect("status lock").pid;
                c.spec.clone().map(|spec| (spec, pid))
            })
        };
        let Some((spec, pid)) = running else {
            return Ok(None);
        };
        let new_pid = self.start(spec, grace).await?;
        Ok(Some(Some(new_pid) != pid))
    }

    /// Stops one child: SIGTERM, then SIGKILL after `grace`. A no-op for a
    /// child that is not running.
    pub async fn stop(&self, name: &str, grace: Duration) {
        let removed = {
            let mut children = self.children.lock().await;
            children
                .iter()
                .position(|(n, _)| n == name)
                .map(|pos| children.remove(pos).1)
        };
        if let Some(child) = removed {
            stop_child(child, grace).await;
        }
    }

    /// Stops every child, the last started first; the in-process tasks
    /// before every process: they are the API server's clients, started once
    /// it answers, and a process restarted later (a changed spec) is pushed
    /// after them. What knows the declared order ([`order`]) stops in its
    /// waves first; this ends whatever is left.
    pub async fn stop_all(&self, grace: Duration) {
        let all: Vec<(String, Supervised)> = std::mem::take(&mut *self.children.lock().await);
        let (tasks, processes): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|(_, c)| c.status.lock().expect("status lock").kind == UnitKind::Task);
        for (_, child) in tasks.into_iter().rev().chain(processes.into_iter().rev()) {
            stop_child(child, grace).await;
        }
        // Nothing of ours runs or restarts now: the cluster's cgroups go
        // (one that still holds a process, a dead manager's, stays).
        self.cgroups.remove_all();
    }

    /// Every child's status, a process's with its CPU time and working set.
    pub async fn status(&self) -> Vec<ChildStatus> {
        self.children
            .lock()
            .await
            .iter()
            .map(|(_, c)| {
                let mut status = c.status.lock().expect("status lock").clone();
                if status.kind == UnitKind::Process {
                    let usage = self.cgroups.usage(&status.name);
                    status.cpu_millis = usage.cpu.map(|d| d.as_millis() as u64);
                    status.memory_bytes = usage.memory;
                }
                status
            })
            .collect()
    }

    pub async fn child_status(&self, name: &str) -> Option<ChildStatus> {
        self.children
            .lock()
            .await
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.status.lock().expect("status lock").clone())
    }
}

async fn stop_child(child: Supervised, grace: Duration) {
    let start = Instant::now();
    let name = child.name.clone();
    if let Some(given) = &child.grace {
        *given.lock().expect("grace lock") = grace;
    }
    let _ = child.stop.send(true);
    // The task ends the process; give it the grace period plus a margin.
    let _ = tokio::time::timeout(grace + Duration::from_secs(5), child.task).await;
    tracing::info!("stopped {name} in {:.2}s", start.elapsed().as_secs_f64());
}

fn spawn(
    spec: &ProcessSpec,
    instance: &str,
    cgroups: &crate::cgroups::Tree,
) -> std::io::Result<tokio::process::Child> {
    // A log may hold what a component says of its secrets: the folder the
    // supervisor makes is 0700, the file 0600 (one an older manager made
    // readable by all is narrowed here too).
    if let Some(dir) = spec.log_file.parent() {
        crate::fsutil::create_dir_all_new_mode(dir, 0o700)?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&spec.log_file)?;
    log.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(log, "{START_MARK}{} at {} ====", spec.name, now_rfc3339())?;
    let cannot_start = |err: std::io::Error| {
        std::io::Error::new(
            err.kind(),
            format!(
                "cannot start {} ({}): {err}",
                spec.name,
                spec.program.display()
            ),
        )
    };
    // Kept open until the child is started: it runs this file.
    let checked = match &spec.checked {
        Some(identity) => Some(exec::open_checked(&spec.program, identity).map_err(|err| {
            cannot_start(std::io::Error::new(
                err.kind(),
                format!("{err}; run `k8s-manager bundle verify` on the bundle, and enable again"),
            ))
        })?),
        None => None,
    };
    let mut cmd = match &checked {
        Some(file) => tokio::process::Command::from(exec::command(file, &spec.program)),
        None => tokio::process::Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(INSTANCE_ENV, instance)
        .env(COMPONENT_ENV, &spec.name)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a terminal's Ctrl-C does not reach it, and a
        // stop reaches whatever it started.
        .process_group(0)
        .kill_on_drop(false);
    // Its cgroups: a machine where they cannot be made runs it all the
    // same, without its figures (and without a freeze).
    match cgroups.prepare(&spec.name) {
        Ok(procs) => crate::sys::join_cgroups_at_exec(cmd.as_std_mut(), &procs)?,
        Err(err) => tracing::warn!("{} runs without cgroups of its own: {err}", spec.name),
    }
    cmd.spawn().map_err(|err| {
        // Nothing joined the cgroups it made (one in use is not removed).
        cgroups.remove(&spec.name);
        cannot_start(err)
    })
}

async fn supervise(
    spec: ProcessSpec,
    instance: String,
    cgroups: Arc<crate::cgroups::Tree>,
    mut child: tokio::process::Child,
    status: Arc<Mutex<ChildStatus>>,
    mut stop: watch::Receiver<bool>,
    grace: Arc<Mutex<Duration>>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let pid = child.id();
        tokio::select! {
            exit = child.wait() => {
                let exit = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::warn!("{} exited ({exit}); restarting in {backoff:?}", spec.name);
                if started.elapsed() > STABLE_AFTER {
                    backoff = BACKOFF_START;
                }
                {
                    let mut st = status.lock().expect("status lock");
                    st.state = RunState::Backoff;
                    st.pid = None;
                    st.up_since = None;
                    st.last_exit = Some(exit);
                }
                // Wait out the backoff, then start again; a start that fails
                // (binary gone) is retried with a growing backoff.
                let next = loop {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break None,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    match spawn(&spec, &instance, &cgroups) {
                        Ok(next) => break Some(next),
                        Err(err) => {
                            tracing::error!("{err}");
                            status.lock().expect("status lock").last_exit = Some(err.to_string());
                        }
                    }
                };
                let Some(next) = next else { break };
                child = next;
                let mut st = status.lock().expect("status lock");
                st.state = RunState::Running;
                st.pid = child.id();
                st.up_since = Some(now_rfc3339());
                st.restarts += 1;
            }
            _ = stop.changed() => {
                if let Some(pid) = pid {
                    let grace = *grace.lock().expect("grace lock");
                    terminate(&spec.name, pid, grace, &mut child).await;
                }
                break;
            }
        }
    }
    // Its cgroups go with it (kept while something it started still runs).
    cgroups.remove(&spec.name);
    let mut st = status.lock().expect("status lock");
    st.state = RunState::Stopped;
    st.pid = None;
    st.up_since = None;
}

/// SIGTERM to the child's process group, SIGKILL after `grace`. The log
/// says when the grace ran out: a graceful stop is expected to end on its own.
async fn terminate(name: &str, pid: u32, grace: Duration, child: &mut tokio::process::Child) {
    sys::signal_group(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        if !grace.is_zero() {
            tracing::warn!("{name} still ran {grace:?} after SIGTERM: killed");
        }
        sys::signal_group(pid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// The line the supervisor writes into a log before each start.
const START_MARK: &str = "==== k8s-manager: starting ";

/// The last `n` lines a component wrote since its latest start, leaving out
/// lines that contain any of `noise` (such as the component's complaints
/// about our own probes, which would push the cause out of view): what an
/// error message shows.
pub fn tail_log(path: &Path, n: usize, noise: &[&str]) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    // Read at most the last 256 KiB: enough for n lines, cheap for a big log.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(256 * 1024);
    let _ = file.seek(SeekFrom::Start(from));
    let mut lines: Vec<String> = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        // A read that starts mid-file starts mid-line.
        .skip(usize::from(from > 0))
        .collect();
    if let Some(start) = lines.iter().rposition(|l| l.starts_with(START_MARK)) {
        lines.drain(..start);
    }
    lines.retain(|l| !noise.iter().any(|w| l.contains(w)));
    lines.split_off(lines.len().saturating_sub(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, name: &str, script: &str) -> ProcessSpec {
        ProcessSpec {
            name: name.into(),
            program: "/bin/sh".into(),
            checked: None,
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            log_file: dir.join(format!("{name}.log")),
            inputs: Vec::new(),
        }
    }

    #[test]
    fn a_log_tail_shows_the_latest_start_without_noise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut text = String::new();
        text.push_str(&format!("{START_MARK}c at 1 ====\nold cause\n"));
        text.push_str(&format!("{START_MARK}c at 2 ====\nnew cause\n"));
        for i in 0..50 {
            text.push_str(&format!("probe said no {i}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            tail_log(&path, 5, &["probe said"]),
            [format!("{START_MARK}c at 2 ===="), "new cause".into()]
        );
        assert_eq!(
            tail_log(&path, 2, &[]),
            ["probe said no 48", "probe said no 49"]
        );
        // A log bigger than what is read: no partial first line, the last lines kept.
        let long = "x".repeat(1000);
        let big: String = (0..400).map(|i| format!("{i} {long}\n")).collect();
        std::fs::write(&path, &big).unwrap();
        let tail = tail_log(&path, 1000, &[]);
        assert!(tail.iter().all(|l| l.ends_with(&long)), "a cut line");
        assert_eq!(tail.last().unwrap(), &format!("399 {long}"));
        assert!(tail_log(&dir.path().join("missing.log"), 5, &[]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_restarted_with_backoff_and_counted() {
        let sup = Supervisor::new("test-instance-task");
        let runs = Arc::new(Mutex::new(Vec::<tokio::time::Instant>::new()));
        let seen = runs.clone();
        let spec = TaskSpec::new("flaky", move |ctx: TaskContext| {
            let seen = seen.clone();
            async move {
                let n = {
                    let mut runs = seen.lock().unwrap();
                    runs.push(tokio::time::Instant::now());
                    runs.len()
                };
                if n < 4 {
                    return Err(format!("attempt {n} failed"));
                }
                ctx.ready();
                let mut ctx = ctx;
                ctx.stopping().await;
                Ok(())
            }
        });
        sup.start_task(spec.clone(), Duration::from_secs(1)).await;
        // Starting it again while it runs is a no-op.
        sup.start_task(spec, Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let status = sup.child_status("flaky").await.unwrap();
        assert_eq!(status.kind, UnitKind::Task);
        assert_eq!((status.state, status.restarts), (RunState::Running, 3));
        assert_eq!(
            status.last_exit.as_deref(),
            Some("failed: attempt 3 failed")
        );
        assert!(status.up_since.is_some());
        // Waits of 0.5 s, 1 s, 2 s between the runs.
        let runs = runs.lock().unwrap().clone();
        let gaps: Vec<u64> = runs
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        assert_eq!(gaps, [500, 1000, 2000]);
        sup.stop_all(Duration::from_secs(1)).await;
        assert!(sup.status().await.is_empty());
    }

    #[tokio::test]
    async fn tasks_stop_before_the_processes_started_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-order");
        let apiserver = sup
            .start(
                spec(dir.path(), "kube-apiserver", "exec sleep 60"),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        // What the task saw of the API server when asked to stop.
        let alive_at_stop = Arc::new(Mutex::new(None::<bool>));
        let record = alive_at_stop.clone();
        let task = TaskSpec::new("controller", move |mut ctx: TaskContext| {
            let record = record.clone();
            async move {
                ctx.ready();
                ctx.stopping().await;
                *record.lock().unwrap() = Some(crate::sys::process_alive(apiserver));
                Ok(())
            }
        });
        sup.start_task(task, Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = sup.status().await;
        let states: Vec<(&str, &RunState)> =
            status.iter().map(|c| (c.name.as_str(), &c.state)).collect();
        assert_eq!(
            states,
            [
                ("kube-apiserver", &RunState::Running),
                ("controller", &RunState::Running)
            ]
        );
        sup.stop_all(Duration::from_secs(2)).await;
        assert_eq!(*alive_at_stop.lock().unwrap(), Some(true));
        assert!(!crate::sys::process_alive(apiserver));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_its_stop_is_dropped_after_grace() {
        let sup = Supervisor::new("test-instance-stubborn");
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct OnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = dropped.clone();
        let task = TaskSpec::new("stubborn", move |_ctx: TaskContext| {
            let guard = OnDrop(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        sup.start_task(task, Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            sup.child_status("stubborn").await.unwrap().state,
            RunState::Starting
        );
        let start = tokio::time::Instant::now();
        sup.stop_all(Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn starts_logs_and_stops_a_child() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-a");
        let pid = sup
            .start(
                spec(
                    dir.path(),
                    "greeter",
                    "echo $GREETING $K8S_MANAGER_COMPONENT; exec sleep 60",
                ),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(String::from_utf8_lossy(&environ).contains("K8S_MANAGER_INSTANCE=test-instance-a"));
        let status = sup.child_status("greeter").await.unwrap();
        assert_eq!(
            (status.state, status.pid, status.restarts),
            (RunState::Running, Some(pid), 0)
        );
        sup.stop_all(Duration::from_secs(2)).await;
        assert!(!crate::sys::process_alive(pid));
        let log = tail_log(&dir.path().join("greeter.log"), 5, &[]);
        assert!(log.iter().any(|l| l == "hello greeter"), "{log:?}");
        // Stopping again, or stopping what never ran, is fine.
        sup.stop("greeter", Duration::from_secs(1)).await;
        sup.stop_all(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_log_and_the_folder_made_for_it_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let sup = Supervisor::new("test-instance-log-modes");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        sup.start(
            spec(&logs, "quiet", "exec sleep 60"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(mode(&logs), 0o700);
        assert_eq!(mode(&logs.join("quiet.log")), 0o600);
        sup.stop_all(Duration::from_secs(1)).await;
        // An older manager's log, readable by all: narrowed at the next start.
        std::fs::set_permissions(
            logs.join("quiet.log"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        sup.start(
            spec(&logs, "quiet", "exec sleep 60"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(mode(&logs.join("quiet.log")), 0o600);
        sup.stop_all(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn restarts_a_crashed_child_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-b");
        sup.start(
            spec(dir.path(), "crasher", "sleep 0.1; exit 3"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        // Exits at 0.1 s, restarts after 0.5 s, exits again, restarts after 1 s.
        tokio::time::sleep(Duration::from_millis(1900)).await;
        let status = sup.child_status("crasher").await.unwrap();
        assert!(status.restarts >= 2, "{status:?}");
        assert!(
            status
                .last_exit
                .as_deref()
                .unwrap_or_default()
                .contains('3'),
            "{status:?}"
        );
        sup.stop_all(Duration::from_secs(1)).await;
        assert_eq!(sup.status().await, vec![]);
    }

    #[tokio::test]
    async fn same_spec_is_left_running_and_a_changed_one_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-c");
        let first = sup
            .start(
                spec(dir.path(), "svc", "exec sleep 60"),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        let again = sup
            .start(
                spec(dir.path(), "svc", "exec sleep 60"),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(first, again);
        let changed = sup
            .start(
                spec(dir.path(), "svc", "exec sleep 61"),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_ne!(first, changed);
        assert!(!crate::sys::process_alive(first));
        sup.stop_all(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn new_contents_in_an_input_file_restart_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-inputs");
        let kubeconfig = dir.path().join("svc.conf");
        std::fs::write(&kubeconfig, "server: https://127.0.0.1:6443\n").unwrap();
        let mut with_input = spec(dir.path(), "svc", "exec sleep 60");
        with_input.inputs = vec![kubeconfig.clone()];
        let grace = Duration::from_secs(1);
        let first = sup.start(with_input.clone(), grace).await.unwrap();
        // Rewritten with the same contents: left running.
        std::fs::write(&kubeconfig, "server: https://127.0.0.1:6443\n").unwrap();
        assert_eq!(sup.start(with_input.clone(), grace).await.unwrap(), first);
        std::fs::write(&kubeconfig, "server: https://127.0.0.1:6444\n").unwrap();
        let second = sup.start(with_input.clone(), grace).await.unwrap();
        assert_ne!(second, first);
        assert!(!crate::sys::process_alive(first));
        std::fs::remove_file(&kubeconfig).unwrap();
        let third = sup.start(with_input, grace).await.unwrap();
        assert_ne!(third, second);
        sup.stop_all(grace).await;
    }

    #[tokio::test]
    async fn a_refresh_restarts_only_for_new_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-refresh");
        let cert = dir.path().join("client.crt");
        std::fs::write(&cert, "old").unwrap();
        let mut with_input = spec(dir.path(), "svc", "exec sleep 60");
        with_input.inputs = vec![cert.clone()];
        let grace = Duration::from_secs(1);
        assert_eq!(sup.refresh("svc", grace).await.unwrap(), None);
        let first = sup.start(with_input, grace).await.unwrap();
        assert_eq!(sup.refresh("svc", grace).await.unwrap(), Some(false));
        std::fs::write(&cert, "renewed").unwrap();
        assert_eq!(sup.refresh("svc", grace).await.unwrap(), Some(true));
        assert!(!crate::sys::process_alive(first));
        assert_eq!(sup.refresh("svc", grace).await.unwrap(), Some(false));
        sup.stop_all(grace).await;
    }

    #[tokio::test]
    async fn a_replace_runs_both_until_the_take_over_and_keeps_the_old_one_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-replace");
        let cert = dir.path().join("client.crt");
        std::fs::write(&cert, "old").unwrap();
        let mut with_input = spec(dir.path(), "svc", "exec sleep 60");
        with_input.inputs = vec![cert.clone()];
        let grace = Duration::from_secs(1);
        assert!(
            sup.replace("svc", None, grace, |_| async { Ok(()) })
                .await
                .is_err()
        );
        let first = sup.start(with_input, grace).await.unwrap();
        assert_eq!(sup.inputs_changed("svc").await, Some(false));
        std::fs::write(&cert, "renewed").unwrap();
        assert_eq!(sup.inputs_changed("svc").await, Some(true));

        // A failed take-over: the newcomer is stopped, the incumbent runs on.
        let seen = Arc::new(Mutex::new(None));
        let newcomer = {
            let seen = seen.clone();
            sup.replace("svc", None, grace, |pid| async move {
                *seen.lock().unwrap() = Some(pid);
                assert!(crate::sys::process_alive(first) && crate::sys::process_alive(pid));
                Err("not ready".to_string())
            })
            .await
        };
        assert_eq!(newcomer, Err("not ready".to_string()));
        let tried = seen.lock().unwrap().unwrap();
        assert!(!crate::sys::process_alive(tried));
        assert_eq!(sup.child_status("svc").await.unwrap().pid, Some(first));

        // Dropped midway (a cancelled operation): the newcomer ends too.
        let seen = Arc::new(Mutex::new(None));
        let cut = {
            let seen = seen.clone();
            let never = sup.replace("svc", None, grace, |pid| async move {
                *seen.lock().unwrap() = Some(pid);
                std::future::pending::<Result<(), String>>().await
            });
            tokio::time::timeout(Duration::from_millis(300), never).await
        };
        assert!(cut.is_err(), "the take-over never ends");
        let dropped = seen.lock().unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while crate::sys::process_alive(dropped) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!crate::sys::process_alive(dropped));
        assert_eq!(sup.child_status("svc").await.unwrap().pid, Some(first));

        // A take-over: both run while it lasts, then the newcomer alone,
        // filed under the name with inputs as they are now.
        let second = sup
            .replace("svc", None, grace, |pid| async move {
                assert!(crate::sys::process_alive(first) && crate::sys::process_alive(pid));
                Ok(())
            })
            .await
            .unwrap();
        assert!(!crate::sys::process_alive(first));
        assert_eq!(sup.child_status("svc").await.unwrap().pid, Some(second));
        assert_eq!(sup.inputs_changed("svc").await, Some(false));
        assert_eq!(sup.status().await.len(), 1);
        sup.stop_all(grace).await;
        assert!(!crate::sys::process_alive(second));
    }

    /// Killed after the grace its stop gives, not the one it started with
    /// (a reset kills at once what was started with seconds of grace).
    #[tokio::test]
    async fn a_child_ignoring_sigterm_is_killed_after_the_stops_grace() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-d");
        let pid = sup
            .start(
                spec(
                    dir.path(),
                    "stubborn",
                    "trap '' TERM; while :; do sleep 0.05; done",
                ),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        sup.stop("stubborn", Duration::from_millis(300)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(!crate::sys::process_alive(pid));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-e");
        let mut s = spec(dir.path(), "ghost", "");
        s.program = dir.path().join("no-such-binary");
        let err = sup.start(s, Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("cannot start ghost"), "{err}");
    }

    /// A program checked by its identity: `marker` shows whether it ran.
    fn checked_program(dir: &Path, marker: &Path) -> (PathBuf, FileIdentity) {
        use std::os::unix::fs::PermissionsExt;
        let program = dir.join("tool");
        let script = format!("#!/bin/sh\ntouch {}\nexec sleep 30\n", marker.display());
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let identity = FileIdentity::of(&std::fs::File::open(&program).unwrap()).unwrap();
        (program, identity)
    }

    #[tokio::test]
    async fn a_checked_program_runs_and_a_changed_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new("test-instance-f");
        let marker = dir.path().join("ran");
        let (program, identity) = checked_program(dir.path(), &marker);
        let mut s = spec(dir.path(), "checked", "");
        s.program = program.clone();
        s.args.clear();
        s.checked = Some(identity);
        sup.start(s.clone(), Duration::from_secs(1)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !marker.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(marker.exists(), "the checked program did not run");
        sup.stop("checked", Duration::from_secs(1)).await;

        // Replaced after its check: refused, and never run.
        std::fs::remove_file(&marker).unwrap();
        let (_, other) = checked_program(dir.path(), &marker);
        assert_ne!(other, identity);
        let err = sup.start(s, Duration::from_secs(1)).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("changed since its digest was checked"),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!marker.exists(), "a program changed after its check ran");
    }
}

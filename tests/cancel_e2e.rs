//! Cancel at any moment, end to end: the toggle off (`kubernetes.enabled=false`
//! through the settings, or `disable`) sent while a cold enable is in etcd,
//! kube-apiserver, kube-proxy and export (held there from outside: the
//! component the phase waits for stopped, or the user's kubeconfig locked as
//! kubectl locks it) ends that enable in that phase (it reports `Cancelled`,
//! exit code 3) and everything is stopped within 5 s, nothing of ours left;
//! sent once the enable has finished, it cancels nothing (the enable
//! succeeded) and stops the cluster; SIGTERM of the daemon mid-start ends it
//! within 10 s, and the next daemon converges to the settings on its own.
//!
//! Needs root, containerd prepared by vm/prepare-vm.sh, and the bundle
//! (`K8S_MANAGER_BUNDLE`), as tests/cluster_e2e.rs; the cluster tests share
//! the machine's ports and its containerd, so they take turns.

mod support;

use support::holds::{KubectlLock, Stopped};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One state folder (a cold cluster) with its HOME and "Windows" kubeconfig;
/// dropping it removes the cluster and ends its daemon.
struct Cluster {
    dir: tempfile::TempDir,
    bundle: PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let bundle = std::env::var_os("K8S_MANAGER_BUNDLE")
            .map(PathBuf::from)
            .expect("K8S_MANAGER_BUNDLE is not set: build the bundle with vm/bundle/build.sh (tests/run.sh does)");
        let dir = tempfile::Builder::new()
            .prefix("k8sm-cancel")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("windows")).unwrap();
        Cluster { dir, bundle }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn manager(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(support::manager_bin());
        cmd.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .env("HOME", self.dir.path().join("home"));
        cmd
    }

    /// `enable --output json` in the background.
    fn spawn_enable(&self) -> Child {
        let host = self.dir.path().join("windows/config");
        self.manager(&["enable", "--output", "json", "--bundle"])
            .arg(&self.bundle)
            .arg("--host-kubeconfig")
            .arg(host)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The state record (`state.json`), or null before there is one.
    fn record(&self) -> serde_json::Value {
        std::fs::read(self.state().join("state.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    fn daemon_pid(&self) -> Option<u32> {
        self.record()["managerPid"].as_u64().map(|p| p as u32)
    }

    /// What of ours is left: processes, k8s.io tasks, mounts, CNI netns.
    fn leftovers(&self) -> Vec<String> {
        let mut left = support::marked_processes(&self.state());
        left.extend(
            support::k8s_tasks()
                .into_iter()
                .map(|t| format!("task {t}")),
        );
        left.extend(support::mounts_below(&self.state()));
        left.extend(
            support::cni_netns()
                .into_iter()
                .map(|n| format!("netns {n}")),
        );
        left
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.manager(&["reset", "--no-restart"]).output();
        if let Some(pid) = self.daemon_pid() {
            signal(pid, libc::SIGTERM);
            wait_gone(pid, Duration::from_secs(15));
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the daemon this test started.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Waits until `pid` is gone; how long it took, or None past `limit`.
fn wait_gone(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while support::holds::alive(pid) {
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(start.elapsed())
}

/// The `{"error": ...}` an `--output json` command printed, if any.
fn json_error(stdout: &[u8]) -> serde_json::Value {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("error").cloned())
        .unwrap_or_default()
}

/// What holds the enable in the phase the cancel is sent in.
enum Hold {
    /// The component, stopped (SIGSTOP) as soon as it runs: the phase
    /// that waits for it waits.
    Component(&'static str),
    /// The user's kubeconfig locked as kubectl locks it: the export waits.
    KubeconfigLock,
}

/// A cold enable, held in `phase` by `hold`, and `off` sent while it is
/// there: the enable ends with `Cancelled` in that very phase (exit code
/// 3), everything is stopped within 5 s of `off`, nothing of ours is left,
/// and the settings say disabled.
fn cancel_in(phase: &str, off: &[&str], hold: Hold) {
    let cluster = Cluster::new();
    let state = cluster.state();
    let lock = match hold {
        Hold::KubeconfigLock => Some(KubectlLock::take(
            &cluster.dir.path().join("windows/config"),
        )),
        Hold::Component(_) => None,
    };
    let mut enable = cluster.spawn_enable();
    let stopped = match hold {
        Hold::Component(component) => Some(
            Stopped::when_started(&state, component, || enable.try_wait().unwrap().is_some())
                .unwrap_or_else(|| panic!("{phase}: the enable ended before {component} ran")),
        ),
        Hold::KubeconfigLock => None,
    };
    let start = Instant::now();
    while cluster.record()["state"]["phase"] != phase {
        assert!(
            enable.try_wait().unwrap().is_none(),
            "{phase}: the enable ended before it: {}",
            cluster.record()
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the enable never reached {phase}: {}",
            cluster.record()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Held there: a moment more, to be sure it stays.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        cluster.record()["state"]["phase"],
        phase,
        "not held in {phase}"
    );
    let asked = Instant::now();
    let disable = cluster
        .manager(off)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = enable.wait_with_output().unwrap();
    // The enable is over: what held it goes, so that the stop finds the
    // component running (a stopped process waits for SIGCONT to handle the
    // stop's SIGTERM).
    drop(stopped);
    drop(lock);
    let disable = disable.wait_with_output().unwrap();
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        disable.status.success(),
        "{phase}: {} failed: {}",
        off.join(" "),
        String::from_utf8_lossy(&disable.stderr)
    );
    let error = json_error(&out.stdout);
    assert_eq!(
        (&error["code"], &error["phase"]),
        (&serde_json::json!("Cancelled"), &serde_json::json!(phase)),
        "{phase}: the enable did not report Cancelled there: {error}\n{stderr}"
    );
    assert_eq!(error["message"], "cancelled by a disable", "{error}");
    // Cancelled is neither a failure (1) nor a refusal (2).
    assert_eq!(out.status.code(), Some(3), "{phase}: {stderr}");
    assert!(
        took < Duration::from_secs(5),
        "{phase}: {} took {took:?}",
        off.join(" ")
    );
    assert_eq!(
        cluster.leftovers(),
        Vec::<String>::new(),
        "{phase}: left after {}",
        off.join(" ")
    );
    assert_disabled(&cluster);
    eprintln!(
        "{} in {phase} of a cold enable: Cancelled, all stopped in {took:.1?}",
        off.join(" ")
    );
}

fn assert_disabled(cluster: &Cluster) {
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cluster.state().join("settings.json")).unwrap())
            .unwrap();
    assert_eq!(settings["kubernetes"]["enabled"], false, "{settings}");
}

/// The toggle as the GUI turns it (a settings change, followed to its end).
const SETTINGS_OFF: &[&str] = &["settings", "set", "kubernetes.enabled=false", "--wait"];

#[test]
fn a_disable_during_a_cold_enable_cancels_it_and_leaves_nothing() {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Early, in the middle, and in the last phase; the toggle and `disable`.
    cancel_in("etcd", SETTINGS_OFF, Hold::Component("etcd"));
    cancel_in(
        "kube-apiserver",
        &["disable"],
        Hold::Component("kube-apiserver"),
    );
    cancel_in("kube-proxy", SETTINGS_OFF, Hold::Component("kube-proxy"));
    cancel_in("export", &["disable"], Hold::KubeconfigLock);
}

/// A disable that comes once the enable has finished cancels nothing: the
/// enable succeeded (exit code 0, its last event says so), and the disable
/// then stops the cluster it made.
#[test]
fn a_disable_after_the_enable_finished_stops_the_cluster_it_made() {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::new();
    let out = cluster.spawn_enable().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let last: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert_eq!(
        (&last["event"], &last["ok"]),
        (&serde_json::json!("done"), &serde_json::json!(true)),
        "{last}\n{stderr}"
    );
    assert_eq!(cluster.record()["state"]["state"], "running");
    let asked = Instant::now();
    let disable = support::run(&mut cluster.manager(SETTINGS_OFF));
    let took = asked.elapsed();
    assert!(
        disable.status.success(),
        "{}",
        String::from_utf8_lossy(&disable.stderr)
    );
    assert!(took < Duration::from_secs(5), "the disable took {took:?}");
    assert_eq!(cluster.leftovers(), Vec::<String>::new());
    assert_disabled(&cluster);
}

#[test]
fn sigterm_of_the_daemon_mid_start_ends_it_and_the_next_daemon_converges() {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::new();
    let enable = cluster.spawn_enable();
    // Mid-start: the control plane is coming up.
    let start = Instant::now();
    let pid = loop {
        let record = cluster.record();
        let phase = record["state"]["phase"].as_str().unwrap_or_default();
        if record["state"]["state"] == "starting"
            && ["kube-apiserver", "control-plane", "images"].contains(&phase)
        {
            break cluster.daemon_pid().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the enable never reached the control plane: {record}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    signal(pid, libc::SIGTERM);
    let gone = wait_gone(pid, Duration::from_secs(10));
    assert!(
        gone.is_some(),
        "the daemon is still there 10 s after SIGTERM"
    );
    let out = enable.wait_with_output().unwrap();
    assert_eq!(
        json_error(&out.stdout)["code"],
        "Cancelled",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        support::marked_processes(&cluster.state()),
        Vec::<String>::new()
    );
    // The next daemon (as the VM's service starts it at boot) converges to
    // the settings, which still say enabled, with no command.
    let log = std::fs::File::create(cluster.dir.path().join("daemon.log")).unwrap();
    let mut daemon = cluster
        .manager(&["daemon"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let record = cluster.record();
        if record["state"]["state"] == "running" && cluster.daemon_pid() == Some(daemon.id()) {
            break;
        }
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}): see {}",
                cluster.dir.path().join("daemon.log").display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the next daemon did not bring the cluster back: {record}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["nodeReady"], true, "{status}");
    // The daemon is stopped by the drop, after the cluster's removal.
}

//! A real cluster for the end-to-end tests: brought up by the real binary in
//! a temporary state folder, driven with upstream kubectl through the
//! "Windows" kubeconfig it merged into, torn down when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub const IMAGE: &str = "example.test/busybox:e2e";
pub const CONTEXT: &str = "docker-desktop";

/// One test cluster: its state folder, its "Windows" kubeconfig, its HOME.
/// It holds the machine's one cluster turn while it lives. Dropping it tears
/// everything down, also when the test panics, and then gives up the turn.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub bundle: PathBuf,
    /// The folder is a tmpfs of its own (see [`Cluster::on_own_tmpfs`]).
    own_tmpfs: bool,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// A cluster whose folder (state, HOME, "Windows" kubeconfig) is a
    /// tmpfs mounted for it: a mount of its own, which a test can watch
    /// (fanotify) without watching the machine's file system. Unmounted
    /// when dropped, after the teardown.
    pub fn on_own_tmpfs() -> Cluster {
        let mut cluster = Cluster::new();
        let dir = cluster.dir.path();
        super::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0755", "k8sm-e2e"])
                .arg(dir),
        );
        cluster.own_tmpfs = true;
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::create_dir_all(dir.join("windows/.kube")).unwrap();
        cluster
    }

    pub fn new() -> Cluster {
        // A test that panicked while holding the turn has torn its cluster down.
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let bundle = std::env::var_os("K8S_MANAGER_BUNDLE")
            .map(PathBuf::from)
            .expect("K8S_MANAGER_BUNDLE is not set: build the bundle with vm/bundle/build.sh (tests/run.sh does)");
        let dir = tempfile::Builder::new()
            .prefix("k8sm-e2e")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("windows/.kube")).unwrap();
        Cluster {
            dir,
            bundle,
            own_tmpfs: false,
            _turn: turn,
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The user's kubeconfig "on Windows", reached through a mount.
    pub fn host_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("windows/.kube/config")
    }

    pub fn manager(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(super::manager_bin());
        cmd.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("K8S_MANAGER_CACHE", self.cache());
        cmd
    }

    /// The daemon's bundle cache: empty but for the bundles a test puts there.
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A bundle manifest of another Kubernetes version in the cache: enough
    /// for the daemon to judge a change of version (it never runs it).
    pub fn fake_cached_bundle(&self, version: &str) {
        let raw = std::fs::read_to_string(self.bundle.join("bundle.json")).unwrap();
        let mut manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
        manifest["kubernetes"] = serde_json::json!(version);
        let dir = self.cache().join("bundles").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
    }

    /// The pid of each component process (not the in-process units), from `status`.
    pub fn component_pids(&self) -> Vec<(String, u64)> {
        let status = super::run_ok(&mut self.manager(&["status", "--output", "json"]));
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] != "task")
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["pid"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    pub fn enable(&self) -> std::process::Output {
        let bundle = self.bundle.to_str().unwrap().to_string();
        let host = self.host_kubeconfig().to_str().unwrap().to_string();
        super::run(&mut self.manager(&["enable", "--bundle", &bundle, "--host-kubeconfig", &host]))
    }

    pub fn enable_ok(&self) -> std::process::Output {
        let out = self.enable();
        assert!(
            out.status.success(),
            "enable failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(super::upstream_kubectl());
        cmd.arg("--kubeconfig")
            .arg(self.host_kubeconfig())
            .arg("--context")
            .arg(CONTEXT)
            .args(args);
        cmd
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        super::run_ok(&mut self.kubectl(args))
    }

    /// The contexts of the user's kubeconfig, as kubectl lists them.
    pub fn context_names(&self) -> String {
        let file = self.host_kubeconfig();
        super::run_ok(
            Command::new(super::upstream_kubectl())
                .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
                .arg(file),
        )
    }

    /// The status of the node's Ready condition, as kubectl shows it.
    pub fn node_ready_condition(&self) -> String {
        self.kubectl_ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        ])
    }

    /// A file for the output of one round of commands.
    pub fn round_log(&self, round: &str) -> std::fs::File {
        let dir = self.dir.path().join("rounds");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::File::create(dir.join(format!("{round}.log"))).unwrap()
    }

    /// A failed test's component logs and state record outlive its
    /// temporary folder: they are copied next to it and the copy is named.
    pub fn keep_logs(&self) {
        let name = self.dir.path().file_name().unwrap().to_string_lossy();
        let kept = std::env::temp_dir().join(format!("{name}-failed"));
        let _ = std::fs::create_dir_all(&kept);
        let _ = Command::new("cp")
            .arg("-a")
            .arg(self.state().join("logs"))
            .arg(self.state().join("state.json"))
            .arg(self.dir.path().join("rounds"))
            .arg(&kept)
            .status();
        eprintln!("component logs kept in {}", kept.display());
        // CI shows only what the test printed: what each round of commands
        // did, in the order they ran.
        let mut rounds: Vec<_> = std::fs::read_dir(self.dir.path().join("rounds"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        rounds.sort();
        for (_, path) in rounds {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let telling: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains("ended processes") || l.contains("error") || l.contains("FAILED")
                })
                .collect();
            eprintln!(
                "round {}: {} | last: {}",
                path.file_stem().unwrap().to_string_lossy(),
                telling.join(" | "),
                text.lines().last().unwrap_or("(nothing)")
            );
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let raw = std::fs::read(self.state().join("state.json")).ok()?;
        let record: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        record["managerPid"].as_u64().map(|p| p as u32)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_logs();
        }
        let _ = self.manager(&["reset", "--no-restart"]).output();
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: kill(2) on the daemon this test started.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        if self.own_tmpfs {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Builds a busybox image (Debian's static busybox) as an OCI archive with
/// the bundle's image tool and imports it into containerd's k8s.io namespace.
pub fn import_busybox(dir: &Path) {
    import_busybox_with(dir, IMAGE, &[]);
}

/// [`import_busybox`] as `reference`, with more files: `(path in the image,
/// file on this machine)`.
pub fn import_busybox_with(dir: &Path, reference: &str, extra: &[(&str, &Path)]) {
    let tool_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/bundle/bundletool");
    let tool = dir.join("bundletool");
    super::run_ok(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&tool)
            .arg(".")
            .current_dir(&tool_src),
    );
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("install busybox-static");
    let archive = dir.join("busybox.tar");
    let mut args: Vec<String> = [
        "image",
        "--ref",
        reference,
        "--out",
        archive.to_str().unwrap(),
        "--entrypoint",
        "/bin/busybox",
        "--add",
        &format!("/bin/busybox={busybox}"),
        "--add",
        &format!("/bin/sh={busybox}"),
    ]
    .map(String::from)
    .into();
    for (inside, file) in extra {
        args.push("--add".into());
        args.push(format!("{inside}={}", file.display()));
    }
    super::run_ok(Command::new(&tool).args(&args));
    super::run_ok(
        Command::new("ctr")
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive),
    );
}

/// Applies a manifest given as text.
pub fn apply_text(cluster: &Cluster, name: &str, text: &str) {
    let file = cluster.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, text).unwrap();
    cluster.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
}

/// Waits for `done`, polling, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A field of a kubeconfig, as upstream kubectl reads it (`jsonpath`, raw:
/// embedded credentials included).
pub fn kubeconfig_field(kubeconfig: &Path, jsonpath: &str) -> String {
    super::run_ok(Command::new(super::upstream_kubectl()).args([
        "config",
        "view",
        "--raw",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]))
}

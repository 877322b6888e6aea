//! `vm/prepare-vm.sh` gives containerd the manager's proxy file: started with
//! the file's variables (and no inherited ones), left alone while they match,
//! restarted when the file changes. Both of its ways are tested for real:
//!
//! - **Without systemd**: the script runs in a PID and mount namespace of its
//!   own, with empty folders over containerd's socket folder, state,
//!   configuration and log, and over `/run/systemd` (so it takes this way
//!   on a machine that runs systemd too): the containerd it starts and
//!   restarts is the test's own (it dies with the namespace), never the
//!   machine's.
//! - **With systemd** (the product's VM: WSL 2 with systemd, a VM image): a
//!   Debian 12 root (`tests/systemd-root.sh`, cached) booted with systemd as
//!   its PID 1 by `systemd-nspawn`, on an overlay (the cached root is never
//!   written), in a network namespace of its own, in a cgroup of its own.
//!   There the script writes containerd's drop-in and restarts containerd
//!   through systemd, and `vm/k8s-manager.service` is installed as
//!   `vm/up.sh` says, checked by `systemd-analyze verify`, and started.
//!
//! Needs root, containerd, util-linux's `unshare` and `nsenter`, procps'
//! `pgrep`; for systemd, `systemd-nspawn` (Debian's systemd-container) and
//! `debootstrap` (tests/run.sh installs both; without them the systemd tests
//! are skipped, see `support::skip`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const STEPS: &str = r#"
set -euo pipefail
script=$1 state=$2
for dir in /run/containerd /var/lib/containerd /etc/containerd /var/log; do
	mkdir -p "$dir"
	mount -t tmpfs tmpfs "$dir"
done
# No /run/systemd/system here: the script starts containerd itself.
if [[ -d /run/systemd ]]; then mount -t tmpfs tmpfs /run/systemd; fi
trap 'cat /var/log/containerd.log >&2 || true' ERR
export K8S_MANAGER_STATE_DIR=$state PREPARE_SKIP_APT=1 PREPARE_SKIP_DOCKER=1
show() {
	local pid
	pid=$(pgrep -x containerd)
	echo "pid=$pid"
	tr '\0' '\n' <"/proc/$pid/environ" | grep -E '^(HTTP|HTTPS|NO)_PROXY=|^(http|https|no)_proxy=' | sort || true
	echo "--"
}
printf '# test\nHTTPS_PROXY=http://192.0.2.1:3128\nhttps_proxy=http://192.0.2.1:3128\nNO_PROXY=localhost,10.96.0.0/12\nno_proxy=localhost,10.96.0.0/12\n' >"$state/proxy.env"
"$script"
show
"$script"
show
rm "$state/proxy.env"
HTTP_PROXY=http://inherited.test:1 "$script"
show
"#;

#[test]
fn containerd_gets_the_proxy_file_and_is_restarted_when_it_changes() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/prepare-vm.sh");
    let state = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc", "bash", "-c"])
        .arg(STEPS)
        .arg("steps")
        .arg(&script)
        .arg(state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let runs: Vec<Vec<&str>> = stdout
        .split("--\n")
        .filter(|run| !run.is_empty())
        .map(|run| run.lines().collect())
        .collect();
    assert_eq!(runs.len(), 3, "{stdout}\n{stderr}");
    let with_proxy = [
        "HTTPS_PROXY=http://192.0.2.1:3128",
        "NO_PROXY=localhost,10.96.0.0/12",
        "https_proxy=http://192.0.2.1:3128",
        "no_proxy=localhost,10.96.0.0/12",
    ];
    assert_eq!(runs[0][1..], with_proxy, "{stderr}");
    // The same file: the same containerd.
    assert_eq!(runs[1], runs[0], "{stderr}");
    // The file gone: a new containerd, without a proxy, not even the caller's.
    assert_ne!(runs[2][0], runs[0][0], "{stderr}");
    assert_eq!(runs[2].len(), 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("runs with other proxy settings"),
        "{stderr}"
    );
}

// --- With systemd --------------------------------------------------------------

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The cgroup hierarchies a container's systemd uses: the unified one alone
/// (cgroup v2), or systemd's named v1 hierarchy and the unified one beside
/// it (hybrid, as on this project's machine).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let top = Path::new("/sys/fs/cgroup");
    if top.join("cgroup.controllers").exists() {
        return vec![top.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| top.join(h))
        .filter(|h| h.join("cgroup.procs").exists())
        .collect()
}

/// The processes of a cgroup and of the cgroups below it.
fn cgroup_pids(dir: &Path) -> Vec<String> {
    let mut pids: Vec<String> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&entry.path()));
        }
    }
    pids
}

/// Removes a cgroup and the cgroups below it (empty ones: the kernel refuses others).
fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

static BOOTS: AtomicU32 = AtomicU32::new(0);

/// The Debian 12 of `tests/systemd-root.sh` booted with systemd as its PID 1
/// by `systemd-nspawn --boot`: on an overlay of the cached root
/// (`--volatile=overlay --read-only`: nothing is written to it, and tests
/// boot it side by side), in a network namespace of its own (its containerd,
/// its sysctls and the manager's ports stay in it), in a cgroup made for it
/// at the top of each hierarchy (`--keep-unit --register=no`: a machine
/// without systemd has no unit and no machined to give it one). The
/// repository's `vm/` is bound read-only at /k8s-manager/vm, the test's
/// `k8s-manager` at /k8s-manager/bin/k8s-manager. Powered off, and its
/// cgroups removed, when dropped.
struct Booted {
    nspawn: Child,
    leader: u32,
    cgroups: Vec<PathBuf>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Booted {
    /// Boots it, or says why this machine cannot: the test `test` is then
    /// skipped (`support::skip`). A boot that fails fails the test.
    fn boot(test: &str) -> Option<Booted> {
        for tool in ["systemd-nspawn", "debootstrap", "nsenter"] {
            if !on_path(tool) {
                support::skip(
                    test,
                    &format!(
                        "no {tool} on PATH to boot systemd in a container (Debian's \
                         systemd-container, debootstrap, util-linux: tests/run.sh installs them)"
                    ),
                );
                return None;
            }
        }
        let cgroups = cgroup_hierarchies();
        if cgroups.is_empty() {
            support::skip(test, "no cgroup hierarchy for systemd under /sys/fs/cgroup");
            return None;
        }
        // The root, built once (about 2 minutes cold) and cached.
        let root = support::run_ok(
            Command::new(repo().join("tests/systemd-root.sh")).stderr(Stdio::inherit()),
        );
        let root = root
            .lines()
            .last()
            .expect("systemd-root.sh prints the root");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("boot.log");
        let name = format!(
            "k8s-manager-test-{}-{}",
            std::process::id(),
            BOOTS.fetch_add(1, Ordering::Relaxed)
        );
        let cgroups: Vec<PathBuf> = cgroups.iter().map(|h| h.join(&name)).collect();
        for cgroup in &cgroups {
            std::fs::create_dir(cgroup)
                .unwrap_or_else(|err| panic!("cannot make {}: {err}", cgroup.display()));
        }
        let vm = repo().join("vm");
        let output = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("sh");
        // Into its cgroups first, then systemd-nspawn.
        cmd.arg("-c")
            .arg(r#"while [ "$1" != -- ]; do echo $$ >"$1/cgroup.procs"; shift; done; shift; exec "$@""#)
            .arg("sh")
            .args(&cgroups)
            .arg("--")
            .arg("systemd-nspawn")
            .args([
                "--quiet",
                "--boot",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--read-only",
                "--private-network",
                "--console=read-only",
            ])
            .arg(format!("--directory={root}"))
            .arg(format!("--machine={name}"))
            .arg(format!("--bind-ro={}:/k8s-manager/vm", vm.display()))
            .arg(format!(
                "--bind-ro={}:/k8s-manager/bin/k8s-manager",
                support::manager_bin().display()
            ))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        let started = Instant::now();
        let nspawn = cmd.spawn().unwrap_or_else(|err| {
            for cgroup in &cgroups {
                let _ = std::fs::remove_dir(cgroup);
            }
            panic!("cannot start systemd-nspawn: {err}")
        });
        let mut booted = Booted {
            nspawn,
            leader: 0,
            cgroups,
            log,
            _dir: dir,
        };
        // The container's init: the child of systemd-nspawn that runs systemd.
        while booted.leader == 0 {
            booted.check_alive(started);
            let task = format!("/proc/{}/task", booted.nspawn.id());
            for t in std::fs::read_dir(&task).into_iter().flatten().flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                for child in children.split_whitespace() {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                    if comm.trim() == "systemd" {
                        booted.leader = child.parse().unwrap();
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Booted: every unit started (or failed: "degraded").
        let state = loop {
            booted.check_alive(started);
            let out = booted.sh("systemctl is-system-running || true");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break state;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let failed = booted.sh("systemctl --failed --no-legend");
        assert_eq!(
            state,
            "running",
            "{}\n{}",
            String::from_utf8_lossy(&failed.stdout),
            booted.boot_log()
        );
        eprintln!("booted systemd in a container in {:?}", started.elapsed());
        Some(booted)
    }

    /// Panics, with the boot's output, when systemd-nspawn ended or the boot
    /// takes more than a minute.
    fn check_alive(&mut self, started: Instant) {
        if let Some(status) = self.nspawn.try_wait().unwrap() {
            panic!("systemd-nspawn ended ({status}):\n{}", self.boot_log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "systemd did not boot in a minute:\n{}",
            self.boot_log()
        );
    }

    fn boot_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs a bash script in the container as root, with a clean environment
    /// but `env` (NAME=VALUE each).
    fn sh_env(&self, env: &[&str], script: &str) -> Output {
        support::run(
            Command::new("nsenter")
                .arg(format!("--target={}", self.leader))
                .args(["--all", "--root", "--wd", "env", "-i"])
                .args([
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8",
                ])
                .args(env)
                .args(["bash", "-euo", "pipefail", "-c", script]),
        )
    }

    fn sh(&self, script: &str) -> Output {
        self.sh_env(&[], script)
    }

    /// Runs a script that must succeed; returns its stdout and stderr.
    fn ok_env(&self, env: &[&str], script: &str) -> (String, String) {
        let out = self.sh_env(env, script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            let journal = self.sh("journalctl --no-pager -n 60 -u containerd -u k8s-manager");
            panic!(
                "in the container, {script}\nfailed ({}):\n{stdout}\n{stderr}\njournal:\n{}",
                out.status,
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        (stdout, stderr)
    }

    fn ok(&self, script: &str) -> String {
        self.ok_env(&[], script).0
    }

    /// `systemctl show UNIT -p NAME` for each name: name to value.
    fn show(&self, unit: &str, names: &[&str]) -> BTreeMap<String, String> {
        let props: Vec<String> = names.iter().map(|n| format!("-p {n}")).collect();
        self.ok(&format!("systemctl show {unit} {}", props.join(" ")))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn prop(&self, unit: &str, name: &str) -> String {
        self.ok(&format!("systemctl show {unit} -p {name} --value"))
            .trim()
            .to_string()
    }

    /// containerd's main PID and the proxy variables it runs with (sorted).
    fn containerd(&self) -> (String, Vec<String>) {
        let out = self.ok(
            r#"pid=$(systemctl show -p MainPID --value containerd)
echo "$pid"
tr '\0' '\n' <"/proc/$pid/environ" | grep -E '^(HTTP|HTTPS|NO)_PROXY=|^(http|https|no)_proxy=' | sort || true"#,
        );
        let mut lines = out.lines().map(str::to_string);
        let pid = lines.next().unwrap();
        assert_ne!(pid, "0", "containerd does not run");
        (pid, lines.collect())
    }

    /// Waits until systemd has no job queued (what a restart set off is done).
    fn settle(&self) {
        self.ok("for _ in $(seq 100); do [[ -z $(systemctl list-jobs --no-legend) ]] && exit 0; sleep 0.1; done; systemctl list-jobs; exit 1");
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SIGRTMIN+4: systemd powers off (about 3 s); then systemd-nspawn ends.
        if self.leader != 0 {
            let _ = Command::new("kill")
                .args(["-s", "RTMIN+4", &self.leader.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.nspawn.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                eprintln!("the container did not power off in 30 s: killing it");
                let _ = self.nspawn.kill();
                for cgroup in &self.cgroups {
                    for pid in cgroup_pids(cgroup) {
                        let _ = Command::new("kill").args(["-9", &pid]).status();
                    }
                }
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for cgroup in &self.cgroups {
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Err(err) = remove_cgroup(cgroup) {
                if err.kind() == std::io::ErrorKind::NotFound || Instant::now() > deadline {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        eprintln!("cannot remove {}: {err}", cgroup.display());
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The proxy file the manager writes (a comment, both spellings), with the
/// proxy `proxy` and no-proxy list `no`.
fn proxy_file(proxy: &str, no: &str) -> String {
    format!("# test\nHTTPS_PROXY={proxy}\nhttps_proxy={proxy}\nNO_PROXY={no}\nno_proxy={no}\n")
}

/// The variables of `proxy_file(proxy, no)`, sorted as `Booted::containerd` lists them.
fn proxy_vars(proxy: &str, no: &str) -> Vec<String> {
    vec![
        format!("HTTPS_PROXY={proxy}"),
        format!("NO_PROXY={no}"),
        format!("https_proxy={proxy}"),
        format!("no_proxy={no}"),
    ]
}

/// Writes the manager's proxy file in the container (0600, as the manager does).
fn write_proxy_file(vm: &Booted, text: &str) {
    vm.ok(&format!(
        "mkdir -p /var/lib/k8s-manager && install -m 0600 /dev/stdin /var/lib/k8s-manager/proxy.env <<'EOF'\n{text}EOF"
    ));
}

const PREPARE_ENV: [&str; 2] = ["PREPARE_SKIP_APT=1", "PREPARE_SKIP_DOCKER=1"];
const DROPIN: &str = "/etc/systemd/system/containerd.service.d/k8s-manager-proxy.conf";

#[test]
fn under_systemd_containerd_reads_the_proxy_file_through_a_drop_in() {
    let test = "prepare_vm::under_systemd_containerd_reads_the_proxy_file_through_a_drop_in";
    let Some(vm) = Booted::boot(test) else { return };
    let prepare = "/k8s-manager/vm/prepare-vm.sh";
    // Debian's containerd, enabled, runs from the boot on.
    let (booted_pid, vars) = vm.containerd();
    assert!(vars.is_empty(), "{vars:?}");

    // No proxy file: the drop-in is written, and containerd restarted for the
    // new configuration, without proxy.
    let (_, stderr) = vm.ok_env(&PREPARE_ENV, prepare);
    assert_eq!(
        vm.ok(&format!("cat {DROPIN}")),
        "# Written by k8s-manager's prepare-vm.sh: containerd's proxy comes from the manager's settings.\n\
         [Service]\nEnvironmentFile=-/var/lib/k8s-manager/proxy.env\n",
        "{stderr}"
    );
    let shown = vm.show("containerd", &["Environment", "EnvironmentFiles"]);
    assert_eq!(shown["Environment"], "", "{shown:?}");
    assert_eq!(
        shown["EnvironmentFiles"],
        "/var/lib/k8s-manager/proxy.env (ignore_errors=yes)"
    );
    let (first, vars) = vm.containerd();
    assert_ne!(first, booted_pid, "{stderr}");
    assert!(vars.is_empty(), "{vars:?}");

    // A proxy file: containerd restarted with its variables.
    write_proxy_file(
        &vm,
        &proxy_file("http://192.0.2.1:3128", "localhost,10.96.0.0/12"),
    );
    let (_, stderr) = vm.ok_env(&PREPARE_ENV, prepare);
    assert!(
        stderr.contains("runs with other proxy settings"),
        "{stderr}"
    );
    let (with_proxy, vars) = vm.containerd();
    assert_ne!(with_proxy, first, "{stderr}");
    assert_eq!(
        vars,
        proxy_vars("http://192.0.2.1:3128", "localhost,10.96.0.0/12")
    );

    // The same file: the same containerd.
    let (_, stderr) = vm.ok_env(&PREPARE_ENV, prepare);
    assert!(!stderr.contains("restarting"), "{stderr}");
    assert_eq!(vm.containerd(), (with_proxy.clone(), vars));

    // Another file: a new containerd with the new variables.
    write_proxy_file(&vm, &proxy_file("http://192.0.2.2:8080", "localhost"));
    let (_, stderr) = vm.ok_env(&PREPARE_ENV, prepare);
    assert!(
        stderr.contains("runs with other proxy settings"),
        "{stderr}"
    );
    let (changed, vars) = vm.containerd();
    assert_ne!(changed, with_proxy, "{stderr}");
    assert_eq!(vars, proxy_vars("http://192.0.2.2:8080", "localhost"));

    // The file gone: a new containerd without proxy, not even the caller's
    // (systemd starts it, not the script).
    vm.ok("rm /var/lib/k8s-manager/proxy.env");
    let caller = [
        "HTTP_PROXY=http://inherited.test:1",
        PREPARE_ENV[0],
        PREPARE_ENV[1],
    ];
    let (_, stderr) = vm.ok_env(&caller, prepare);
    let (gone, vars) = vm.containerd();
    assert_ne!(gone, changed, "{stderr}");
    assert!(vars.is_empty(), "{vars:?}");

    // The unit's own proxy (an administrator's drop-in): the file's values
    // win for the names it sets, the unit's stay for the others, and the
    // script expects just that: no restart.
    vm.ok(
        "printf '[Service]\\nEnvironment=HTTP_PROXY=http://admin.test:3128 NO_PROXY=admin.test\\n' \
         >/etc/systemd/system/containerd.service.d/http-proxy.conf && systemctl daemon-reload",
    );
    write_proxy_file(&vm, &proxy_file("http://192.0.2.1:3128", "localhost"));
    vm.ok("systemctl restart containerd");
    let (admin, vars) = vm.containerd();
    let mut want = proxy_vars("http://192.0.2.1:3128", "localhost");
    want.push("HTTP_PROXY=http://admin.test:3128".to_string());
    want.sort();
    assert_eq!(vars, want);
    let (_, stderr) = vm.ok_env(&PREPARE_ENV, prepare);
    assert!(!stderr.contains("restarting"), "{stderr}");
    assert_eq!(vm.containerd(), (admin, want));
}

#[test]
fn the_unit_wants_containerd_and_outlives_its_restarts() {
    let test = "prepare_vm::the_unit_wants_containerd_and_outlives_its_restarts";
    let Some(vm) = Booted::boot(test) else { return };
    // Installed as vm/up.sh does (the binary linked, not copied, into the
    // overlay's memory); this root has no Docker engine.
    vm.ok(
        "ln -s /k8s-manager/bin/k8s-manager /usr/local/bin/k8s-manager
install -D -m 0755 /k8s-manager/vm/prepare-vm.sh /usr/local/lib/k8s-manager/prepare-vm.sh
install -m 0644 /k8s-manager/vm/k8s-manager.service /etc/systemd/system/
mkdir -p /etc/systemd/system/k8s-manager.service.d
printf '[Service]\\nEnvironment=PREPARE_SKIP_DOCKER=1\\n' >/etc/systemd/system/k8s-manager.service.d/test.conf
systemctl daemon-reload
systemctl enable k8s-manager",
    );
    let verify = vm.sh("systemd-analyze verify /etc/systemd/system/k8s-manager.service");
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        verify.status,
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // Ordered after containerd, wanting it, never bound to it.
    let deps = vm.show(
        "k8s-manager",
        &[
            "After",
            "Wants",
            "Requires",
            "Requisite",
            "BindsTo",
            "PartOf",
            "WantedBy",
        ],
    );
    let has = |prop: &str, unit: &str| deps[prop].split(' ').any(|u| u == unit);
    assert!(has("After", "containerd.service"), "{deps:?}");
    assert!(has("After", "network-online.target"), "{deps:?}");
    assert!(has("Wants", "containerd.service"), "{deps:?}");
    for prop in ["Requires", "Requisite", "BindsTo", "PartOf"] {
        assert!(!has(prop, "containerd.service"), "{deps:?}");
    }
    assert!(has("WantedBy", "multi-user.target"), "{deps:?}");

    // The manager starts with a proxy file containerd does not have yet: its
    // ExecStartPre (prepare-vm.sh) restarts containerd, and the manager's
    // start goes on.
    write_proxy_file(&vm, &proxy_file("http://192.0.2.1:3128", "localhost"));
    let (before, _) = vm.containerd();
    vm.ok("systemctl start k8s-manager");
    vm.settle();
    let (after, vars) = vm.containerd();
    assert_ne!(after, before);
    assert_eq!(vars, proxy_vars("http://192.0.2.1:3128", "localhost"));
    let running = || {
        vm.show(
            "k8s-manager",
            &["ActiveState", "SubState", "NRestarts", "MainPID"],
        )
    };
    let started = running();
    assert_eq!(
        (
            &*started["ActiveState"],
            &*started["SubState"],
            &*started["NRestarts"]
        ),
        ("active", "running", "0"),
        "{started:?}"
    );
    // The daemon answers on its socket.
    vm.ok("for _ in $(seq 100); do [[ -S /var/lib/k8s-manager/manager.sock ]] && break; sleep 0.1; done; k8s-manager status");

    // containerd restarted (by prepare-vm.sh, an upgrade, an administrator):
    // the manager keeps running, the same process.
    vm.ok("systemctl restart containerd");
    vm.settle();
    assert_eq!(running(), started);

    // The check sees the difference: under Requires= the same restart
    // restarts the manager.
    vm.ok(
        "printf '[Unit]\\nRequires=containerd.service\\n' >/etc/systemd/system/k8s-manager.service.d/requires.conf
systemctl daemon-reload
systemctl restart containerd",
    );
    vm.settle();
    assert_ne!(vm.prop("k8s-manager", "MainPID"), started["MainPID"]);

    // And it stops cleanly.
    vm.ok("systemctl stop k8s-manager");
    assert_eq!(vm.prop("k8s-manager", "Result"), "success");
}

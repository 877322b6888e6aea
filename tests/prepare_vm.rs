//! `vm/prepare-vm.sh` gives containerd the manager's proxy file: started with
//! the file's variables (and no inherited ones), left alone while they match,
//! restarted when the file changes.
//!
//! The script runs in a PID and mount namespace of its own, with empty
//! folders over containerd's socket folder, state, configuration and log:
//! the containerd it starts and restarts is the test's own (it dies with the
//! namespace), never the machine's.
//!
//! Needs root, containerd, util-linux's `unshare` and procps' `pgrep`; the
//! test is about the start without systemd: where systemd runs, it says so
//! and is listed as skipped (`support::skip`), never as passed.

mod support;

use std::path::Path;
use std::process::Command;

const STEPS: &str = r#"
set -euo pipefail
script=$1 state=$2
for dir in /run/containerd /var/lib/containerd /etc/containerd /var/log; do
	mkdir -p "$dir"
	mount -t tmpfs tmpfs "$dir"
done
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
    if Path::new("/run/systemd/system").is_dir() {
        return support::skip(
            "prepare_vm::containerd_gets_the_proxy_file_and_is_restarted_when_it_changes",
            "systemd runs containerd here (the drop-in path), and this test is of the start without it",
        );
    }
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

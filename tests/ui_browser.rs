//! The settings page in a real browser against a real cluster: this test
//! brings the cluster up with the real binary (its daemon serves the page on
//! a port of its own), then runs `tests/ui/browser.py`, which drives Debian's
//! chromium headless through Selenium: the status reads Running, the switch
//! turns the cluster off and on (and `k8s-manager status` agrees), Reset and
//! its dialog give a fresh cluster, a refused setting shows next to its
//! field, a failed enable shows its error, a component's flag the manager
//! owns is refused and one of the user's restarts that component only; and
//! plain HTTP requests from
//! another site are refused. Screenshots go to `<target>/ui-artifacts/`.
//!
//! Needs root, containerd prepared by vm/prepare-vm.sh, the bundle
//! (`K8S_MANAGER_BUNDLE`), chromium, chromium-driver and Selenium;
//! tests/run.sh provides them all.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A cluster of a temporary state folder, taken down when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn host_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("windows/.kube/config")
    }

    fn manager(&self, args: &[&str]) -> Command {
        support::manager_in(self.dir.path(), args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.manager(&["reset", "--no-restart"]).output();
        let _ = self.manager(&["daemon", "--stop"]).output();
    }
}

/// A port nothing listens on now, for the page.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn the_settings_page_in_a_real_browser() {
    let bundle = std::env::var_os("K8S_MANAGER_BUNDLE")
        .map(PathBuf::from)
        .expect("K8S_MANAGER_BUNDLE is not set: build the bundle with vm/bundle/build.sh (tests/run.sh does)");
    let dir = tempfile::Builder::new()
        .prefix("k8sm-ui")
        .tempdir()
        .unwrap();
    for sub in ["home", "windows/.kube", "state"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let cluster = Cluster { dir };
    // The page on a port of its own: a daemon of another test may hold the default.
    let settings = serde_json::json!({"schemaVersion": 1, "ui": {"port": free_port()}});
    std::fs::write(cluster.state().join("settings.json"), settings.to_string()).unwrap();

    let (bundle, host) = (bundle.display().to_string(), cluster.host_kubeconfig());
    let host = host.display().to_string();
    support::run_ok(&mut cluster.manager(&[
        "enable",
        "--bundle",
        &bundle,
        "--host-kubeconfig",
        &host,
    ]));
    let url = support::run_ok(&mut cluster.manager(&["ui", "--url"]));
    let url = url.trim();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the tmp folder is inside the target folder")
        .join("ui-artifacts");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/ui/browser.py");
    let status = Command::new("python3")
        .arg(&script)
        .env("UI_URL", url)
        .env("MANAGER", support::manager_bin())
        .env("STATE_DIR", cluster.state())
        .env("HOME", cluster.dir.path().join("home"))
        .env("K8S_MANAGER_CACHE", cluster.dir.path().join("cache"))
        .env("KUBECTL", support::upstream_kubectl())
        .env("KUBECONFIG_FILE", cluster.host_kubeconfig())
        .env("UI_ARTIFACTS", &artifacts)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots in {}",
        artifacts.display()
    );
}

//! Proof that the bundle is real: its etcd and kube-apiserver start with a PKI
//! made by `k8s-manager certs`, and upstream kubectl lists namespaces through
//! them. Needs the bundle (`K8S_MANAGER_BUNDLE`, set by tests/run.sh).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child process when the test ends, also on panic.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bundle() -> PathBuf {
    let dir = std::env::var_os("K8S_MANAGER_BUNDLE")
        .expect("K8S_MANAGER_BUNDLE is not set: build the bundle with vm/bundle/build.sh (tests/run.sh does) and point the variable at it");
    PathBuf::from(dir)
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Guard {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Guard(child)
}

/// The namespaces a new API server makes by itself.
const SYSTEM_NAMESPACES: [&str; 3] = [
    "namespace/default",
    "namespace/kube-system",
    "namespace/kube-public",
];

#[test]
fn bundle_etcd_and_apiserver_serve_kubectl() {
    let bundle = bundle();
    let bin = bundle.join("bin");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let kubeconfigs = dir.path().join("kubeconfig");
    let (etcd_client, etcd_peer, api_port) = (free_port(), free_port(), free_port());

    support::run_ok(Command::new(support::manager_bin()).args([
        "certs",
        "generate",
        "--pki-dir",
        pki.to_str().unwrap(),
        "--node-name",
        "bundle-test",
        "--advertise-address",
        "127.0.0.1",
    ]));
    support::run_ok(Command::new(support::manager_bin()).args([
        "certs",
        "kubeconfigs",
        "--pki-dir",
        pki.to_str().unwrap(),
        "--out-dir",
        kubeconfigs.to_str().unwrap(),
        "--server",
        &format!("https://127.0.0.1:{api_port}"),
        "--node-name",
        "bundle-test",
    ]));

    let p = |name: &str| pki.join(name).display().to_string();
    let etcd_url = format!("https://127.0.0.1:{etcd_client}");
    let peer_url = format!("https://127.0.0.1:{etcd_peer}");
    let _etcd = spawn(
        &bin.join("etcd"),
        &[
            "--name=bundle-test".into(),
            format!("--data-dir={}", dir.path().join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=bundle-test={peer_url}"),
            format!("--cert-file={}", p("etcd/server.crt")),
            format!("--key-file={}", p("etcd/server.key")),
            "--client-cert-auth=true".into(),
            format!("--trusted-ca-file={}", p("etcd/ca.crt")),
            format!("--peer-cert-file={}", p("etcd/peer.crt")),
            format!("--peer-key-file={}", p("etcd/peer.key")),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-trusted-ca-file={}", p("etcd/ca.crt")),
        ],
        &dir.path().join("etcd.log"),
    );
    let _apiserver = spawn(
        &bin.join("kube-apiserver"),
        &[
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--anonymous-auth=false".into(),
            "--authorization-mode=Node,RBAC".into(),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--etcd-servers={etcd_url}"),
            format!("--etcd-cafile={}", p("etcd/ca.crt")),
            format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
        ],
        &dir.path().join("apiserver.log"),
    );

    // system:masters: the admin group's binding is made later by the cluster's bootstrap.
    let kubeconfig = kubeconfigs.join("super-admin.conf");
    let kubectl = support::upstream_kubectl();
    let start = Instant::now();
    loop {
        let out = support::run(Command::new(&kubectl).args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "get",
            "namespaces",
            "-o",
            "name",
        ]));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // The three are made by two of the API server's own controllers, at
        // moments of their own: the list may have one before the others.
        if out.status.success() && SYSTEM_NAMESPACES.iter().all(|ns| stdout.contains(ns)) {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let log = std::fs::read_to_string(dir.path().join("apiserver.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "kubectl never listed {SYSTEM_NAMESPACES:?} in 90 s: it listed {stdout:?}; {}\napiserver log (last lines, newest first):\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // Anonymous requests are refused: the API is not open.
    let anonymous = support::run(Command::new(&kubectl).args([
        "--server",
        &format!("https://127.0.0.1:{api_port}"),
        "--certificate-authority",
        &p("ca.crt"),
        "--kubeconfig",
        "/dev/null",
        "get",
        "namespaces",
    ]));
    assert!(!anonymous.status.success());
    let version = support::run_ok(Command::new(&kubectl).args([
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "version",
        "-o",
        "json",
    ]));
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        manifest["kubernetes"]
    );
}

//! The etcd certificates made by `k8s-manager certs generate`, used by a real
//! etcd with client (and peer) certificate authentication, and checked with
//! the real etcdctl: our clients are accepted, a client of another PKI is not.
//!
//! etcd and etcdctl come from Debian's etcd-server and etcd-client packages;
//! `ETCD_BIN` and `ETCDCTL_BIN` override their paths. A missing binary fails
//! the test.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{manager_bin, run, run_ok};

const INSTALL_HINT: &str = "apt-get install -y etcd-server etcd-client";

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (set {env} or install it: {INSTALL_HINT})",
        path.display()
    );
    path
}

fn generate(pki_dir: &Path, key_algorithm: &str) {
    run_ok(
        Command::new(manager_bin())
            .args(["certs", "generate", "--pki-dir"])
            .arg(pki_dir)
            .args([
                "--node-name",
                "desktop",
                "--advertise-address",
                "127.0.0.1",
                "--key-algorithm",
                key_algorithm,
            ]),
    );
}

/// A port nobody listens on now: bound to port 0, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The etcd process; killed and reaped when dropped, even on a failed assert.
struct Etcd {
    child: Child,
    client_url: String,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start(pki_dir: &Path, work_dir: &Path) -> Etcd {
        let etcd = tool("ETCD_BIN", "/usr/bin/etcd");
        let client_url = format!("https://127.0.0.1:{}", free_port());
        let peer_url = format!("https://127.0.0.1:{}", free_port());
        let log = work_dir.join("etcd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let file = |name: &str| pki_dir.join(name);
        let child = Command::new(etcd)
            .args(["--name", "pki-test", "--data-dir"])
            .arg(work_dir.join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("pki-test={peer_url}")])
            .arg("--cert-file")
            .arg(file("etcd/server.crt"))
            .arg("--key-file")
            .arg(file("etcd/server.key"))
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(file("etcd/ca.crt"))
            .arg("--peer-cert-file")
            .arg(file("etcd/peer.crt"))
            .arg("--peer-key-file")
            .arg(file("etcd/peer.key"))
            .arg("--peer-client-cert-auth")
            .arg("--peer-trusted-ca-file")
            .arg(file("etcd/ca.crt"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start etcd: {err} ({INSTALL_HINT})"));
        Etcd {
            child,
            client_url,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// etcdctl with the CA `ca_pki` trusts and the client certificate
    /// `<client>` of `client_pki`.
    fn etcdctl(&self, ca_pki: &Path, client_pki: &Path, client: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(tool("ETCDCTL_BIN", "/usr/bin/etcdctl"));
        // etcdctl reads every ETCDCTL_* variable: only the API version.
        cmd.env_remove("ETCDCTL_BIN")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.client_url,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "4s",
            ])
            .arg("--cacert")
            .arg(ca_pki.join("etcd/ca.crt"))
            .arg("--cert")
            .arg(client_pki.join(format!("{client}.crt")))
            .arg("--key")
            .arg(client_pki.join(format!("{client}.key")))
            .args(args);
        run(&mut cmd)
    }

    /// Waits until etcd answers our health-check client, or fails with its log.
    fn wait_healthy(&mut self, pki_dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "etcd exited ({status}) before it was healthy:\n{}",
                    self.log()
                );
            }
            let out = self.etcdctl(
                pki_dir,
                pki_dir,
                "etcd/healthcheck-client",
                &["endpoint", "health"],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after 30 s:\netcdctl: {}\netcd log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn etcd_accepts_our_clients_and_refuses_others(key_algorithm: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let foreign_pki = dir.path().join("foreign-pki");
    generate(&pki, key_algorithm);
    generate(&foreign_pki, key_algorithm);

    let mut etcd = Etcd::start(&pki, dir.path());
    etcd.wait_healthy(&pki);

    let health = etcd.etcdctl(
        &pki,
        &pki,
        "etcd/healthcheck-client",
        &["endpoint", "health"],
    );
    assert!(
        // etcdctl 3.4 says it on stderr, 3.6 (the bundle's) on stdout.
        health.status.success() && text(&health).contains("is healthy"),
        "{}",
        text(&health)
    );

    let put = etcd.etcdctl(
        &pki,
        &pki,
        "apiserver-etcd-client",
        &["put", "/registry/probe", "ours"],
    );
    assert!(put.status.success(), "{}", text(&put));
    assert_eq!(String::from_utf8_lossy(&put.stdout).trim(), "OK");
    let get = etcd.etcdctl(
        &pki,
        &pki,
        "apiserver-etcd-client",
        &["get", "/registry/probe"],
    );
    assert!(get.status.success(), "{}", text(&get));
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "/registry/probe\nours"
    );

    // A client certificate of another PKI, with the right CA for the server:
    // etcd must refuse the TLS handshake.
    let foreign = etcd.etcdctl(
        &pki,
        &foreign_pki,
        "apiserver-etcd-client",
        &["get", "/registry/probe"],
    );
    assert!(
        !foreign.status.success(),
        "a foreign client was accepted:\n{}",
        text(&foreign)
    );
    assert!(
        !String::from_utf8_lossy(&foreign.stdout).contains("ours"),
        "{}",
        text(&foreign)
    );

    // And a client that trusts another CA does not trust our server.
    let wrong_ca = etcd.etcdctl(
        &foreign_pki,
        &pki,
        "apiserver-etcd-client",
        &["get", "/registry/probe"],
    );
    assert!(
        !wrong_ca.status.success(),
        "our server was trusted by another CA:\n{}",
        text(&wrong_ca)
    );

    // etcd is still serving our clients after the refusals.
    let health = etcd.etcdctl(
        &pki,
        &pki,
        "etcd/healthcheck-client",
        &["endpoint", "health"],
    );
    assert!(health.status.success(), "{}", text(&health));
}

#[test]
fn etcd_with_ecdsa_certificates() {
    etcd_accepts_our_clients_and_refuses_others("ecdsa-p256");
}

#[test]
fn etcd_with_rsa_certificates() {
    etcd_accepts_our_clients_and_refuses_others("rsa-2048");
}

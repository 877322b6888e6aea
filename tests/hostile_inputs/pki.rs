//! Hostile inputs: pki. A PKI folder broken by a careless user or an
//! attacker (made with the real `openssl` where that is natural), given to
//! the real `k8s-manager certs` commands: `check` reports each broken
//! certificate and fails, no command follows a link out of the folder,
//! blocks on a FIFO or reads a device, none panics, and no message quotes a
//! key or a parser's internals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{manager_bin, run, run_ok};

const NODE: &str = "desktop";
const ADVERTISE: &str = "192.168.65.3";

/// A command that does not answer within this is blocked, and fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs k8s-manager with `args`; kills it and fails the test when it does
/// not finish within [`PATIENCE`] (a read blocked on a FIFO, or endless on a
/// device). Checks that it did not panic and quoted no key.
fn manager(args: &[&str]) -> Output {
    let mut child = Command::new(manager_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("k8s-manager starts");
    let started = Instant::now();
    while child.try_wait().expect("wait for k8s-manager").is_none() {
        if started.elapsed() > PATIENCE {
            child.kill().ok();
            child.wait().ok();
            panic!("k8s-manager {args:?} still runs after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("k8s-manager output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "k8s-manager {args:?} panicked:\n{stderr}"
    );
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains("PRIVATE KEY"),
            "k8s-manager {args:?} quotes a key:\n{text}"
        );
    }
    out
}

fn generate(pki: &Path) {
    let out = manager(&generate_args(pki, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn generate_args<'a>(pki: &'a Path, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "certs",
        "generate",
        "--pki-dir",
        pki.to_str().unwrap(),
        "--node-name",
        NODE,
        "--advertise-address",
        ADVERTISE,
    ];
    args.extend(more);
    args
}

fn check(pki: &Path) -> Output {
    manager(&["certs", "check", "--pki-dir", pki.to_str().unwrap()])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The STATUS column of `name` in `certs check`'s table.
fn status_of(out: &Output, name: &str) -> String {
    text(&out.stdout)
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        // NAME KIND NOT-AFTER DAYS STATUS, then who renews it and from when
        // (words with spaces): the status is the fifth word.
        .and_then(|line| line.split_whitespace().nth(4).map(str::to_string))
        .unwrap_or_else(|| panic!("no row {name}:\n{}", text(&out.stdout)))
}

/// `certs check` fails, and says of `name` that it is invalid, and why.
fn assert_invalid(out: &Output, name: &str, reason: &str) {
    assert!(
        !out.status.success(),
        "check passed:\n{}",
        text(&out.stdout)
    );
    assert_eq!(status_of(out, name), "invalid", "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|line| line.starts_with("error: ") && line.contains(reason))
        .unwrap_or_else(|| panic!("{name}: no error says {reason:?}:\n{stderr}"));
    let remedies = ["run `k8s-manager", "restore", "delete"];
    assert!(
        remedies.iter().any(|remedy| line.contains(remedy)),
        "says what to do: {line}"
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// A self-signed certificate made by openssl in `dir` with `extensions`:
/// `<name>.crt`, `<name>.key`.
fn openssl_ca(dir: &Path, name: &str, extensions: &[&str]) {
    let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=kubernetes",
        "-keyout",
        &key,
        "-out",
        &cert,
    ];
    for extension in extensions {
        args.extend(["-addext", extension]);
    }
    openssl(dir, &args);
}

fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) {
    std::fs::copy(from, to).unwrap();
}

struct Pkis {
    _dir: tempfile::TempDir,
    ours: PathBuf,
    scratch: PathBuf,
}

/// A PKI made by k8s-manager, and an empty folder beside it.
fn pki() -> Pkis {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("pki");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    generate(&ours);
    Pkis {
        _dir: dir,
        ours,
        scratch,
    }
}

#[test]
fn pki_check_reports_a_leaf_key_of_another_pki() {
    let pkis = pki();
    let theirs = pkis.scratch.join("pki");
    generate(&theirs);
    copy(
        theirs.join("apiserver.key"),
        pkis.ours.join("apiserver.key"),
    );
    let out = check(&pkis.ours);
    assert_invalid(&out, "apiserver", "apiserver.key does not belong to");
    assert_eq!(status_of(&out, "ca"), "ok");
}

#[test]
fn pki_a_leaf_signed_by_another_ca_is_reported_and_not_renewed() {
    let pkis = pki();
    let dir = &pkis.scratch;
    openssl_ca(dir, "other-ca", &["basicConstraints=critical,CA:TRUE"]);
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "other-ca.crt",
            "-CAkey",
            "other-ca.key",
            "-days",
            "30",
            "-out",
            "leaf.crt",
        ],
    );
    copy(dir.join("leaf.crt"), pkis.ours.join("apiserver.crt"));
    copy(dir.join("leaf.key"), pkis.ours.join("apiserver.key"));
    assert_invalid(
        &check(&pkis.ours),
        "apiserver",
        "apiserver.crt is not signed by the CA ca",
    );
    // Nor does renew sign the names it carries with our CA.
    let pki = pkis.ours.to_str().unwrap();
    let out = manager(&["certs", "renew", "--pki-dir", pki, "apiserver"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is not signed by its CA ca"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(pkis.ours.join("apiserver.crt")).unwrap(),
        std::fs::read(dir.join("leaf.crt")).unwrap()
    );
}

#[test]
fn pki_check_reports_cas_that_do_not_match_their_key_or_may_not_sign() {
    let pkis = pki();
    let dir = &pkis.scratch;
    openssl_ca(dir, "other-ca", &["basicConstraints=critical,CA:TRUE"]);
    openssl_ca(dir, "no-ca", &["basicConstraints=critical,CA:FALSE"]);
    // CA:TRUE, but a key usage that does not allow signing certificates.
    let no_cert_sign = [
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,digitalSignature",
    ];
    openssl_ca(dir, "no-cert-sign", &no_cert_sign);
    copy(dir.join("other-ca.crt"), pkis.ours.join("ca.crt"));
    for extension in ["crt", "key"] {
        let file = |name: &str| format!("{name}.{extension}");
        copy(dir.join(file("no-ca")), pkis.ours.join(file("etcd/ca")));
        copy(
            dir.join(file("no-cert-sign")),
            pkis.ours.join(file("front-proxy-ca")),
        );
    }
    let out = check(&pkis.ours);
    assert_invalid(&out, "ca", "does not belong to the certificate");
    assert_invalid(
        &out,
        "front-proxy-ca",
        "front-proxy-ca.crt is not a CA certificate",
    );
    assert_invalid(
        &out,
        "apiserver",
        "apiserver.crt cannot be trusted while its CA ca",
    );
    assert_invalid(&out, "etcd/ca", "is not a CA certificate");
    assert_invalid(
        &out,
        "etcd/server",
        "server.crt cannot be trusted while its CA etcd/ca is missing or unusable",
    );
    assert_eq!(status_of(&out, "apiserver-etcd-client"), "invalid");
}

#[test]
fn pki_check_reports_a_ca_file_with_a_second_ca_appended() {
    // Components read ca.crt as a bundle: a CA appended there would be
    // trusted by them all, while k8s-manager looked at the first alone.
    let pkis = pki();
    let ca = ["basicConstraints=critical,CA:TRUE"];
    openssl_ca(&pkis.scratch, "other-ca", &ca);
    let mut bundle = std::fs::read(pkis.ours.join("ca.crt")).unwrap();
    bundle.extend(std::fs::read(pkis.scratch.join("other-ca.crt")).unwrap());
    std::fs::write(pkis.ours.join("ca.crt"), bundle).unwrap();
    assert_invalid(&check(&pkis.ours), "ca", "holds 2 PEM blocks");
}

#[test]
fn pki_check_reports_truncated_misplaced_and_foreign_kind_keys() {
    let pkis = pki();
    let key = std::fs::read(pkis.ours.join("apiserver.key")).unwrap();
    std::fs::write(pkis.ours.join("apiserver.key"), &key[..key.len() / 2]).unwrap();
    copy(pkis.ours.join("kubelet.crt"), pkis.ours.join("kubelet.key"));
    openssl(
        &pkis.scratch,
        &["genpkey", "-algorithm", "ed25519", "-out", "ed25519.key"],
    );
    copy(
        pkis.scratch.join("ed25519.key"),
        pkis.ours.join("etcd/peer.key"),
    );
    let out = check(&pkis.ours);
    assert_invalid(
        &out,
        "apiserver",
        "apiserver.key is not a readable private key",
    );
    assert_invalid(&out, "kubelet", "holds a certificate, not a private key");
    assert_invalid(&out, "etcd/peer", "etcd/peer.key does not belong to");
}

#[test]
fn pki_check_json_reports_problems_in_camel_case() {
    let pkis = pki();
    std::fs::write(pkis.ours.join("front-proxy-client.crt"), b"").unwrap();
    let out = manager(&[
        "certs",
        "check",
        "--output",
        "json",
        "--pki-dir",
        pkis.ours.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", text(&out.stdout)));
    let certificates = report["certificates"].as_array().unwrap();
    let entry = certificates
        .iter()
        .find(|c| c["name"] == "front-proxy-client")
        .unwrap();
    assert_eq!(entry["status"], "invalid");
    assert_eq!(entry["notAfter"], serde_json::Value::Null);
    let problem = entry["problem"].as_str().unwrap();
    assert!(
        problem.contains("front-proxy-client.crt is not a readable certificate (it is empty)"),
        "{problem}"
    );
    let ok = certificates.iter().find(|c| c["name"] == "ca").unwrap();
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["problem"], serde_json::Value::Null);
    for certificate in certificates {
        for key in certificate.as_object().unwrap().keys() {
            assert!(!key.contains(['-', '_']), "not camelCase: {key}");
        }
    }
}

#[test]
fn pki_validity_days_out_of_range_is_an_error_not_a_panic() {
    let pkis = pki();
    let out = manager(&generate_args(
        &pkis.ours,
        &["--validity-days", "4294967295"],
    ));
    // A refused argument: exit 2, as for every refusal.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("between 1 and 36500 days"),
        "{}",
        text(&out.stderr)
    );
    let pki = pkis.ours.to_str().unwrap();
    let out = manager(&[
        "certs",
        "renew",
        "--pki-dir",
        pki,
        "apiserver",
        "--validity-days",
        "3000000",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("between 1 and 36500 days"));
}

#[test]
fn pki_a_fifo_in_place_of_a_certificate_neither_blocks_nor_passes() {
    let pkis = pki();
    let fifo = pkis.ours.join("apiserver.crt");
    std::fs::remove_file(&fifo).unwrap();
    crate::support::mkfifo(&fifo);
    assert_invalid(
        &check(&pkis.ours),
        "apiserver",
        "is a named pipe (FIFO), not a file",
    );
    let out = manager(&generate_args(&pkis.ours, &[]));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("apiserver.crt is a named pipe (FIFO), not a file"));
}

#[test]
fn pki_links_out_of_the_folder_are_not_followed() {
    let pkis = pki();
    // A key that is a device: an endless read before links were refused.
    let key = pkis.ours.join("front-proxy-client.key");
    std::fs::remove_file(&key).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &key).unwrap();
    let out = check(&pkis.ours);
    assert_invalid(&out, "front-proxy-client", "is a symbolic link");

    // A sub-folder linked elsewhere: neither read nor written through.
    let elsewhere = pkis.scratch.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&elsewhere, readable).unwrap();
    std::fs::remove_dir_all(pkis.ours.join("etcd")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, pkis.ours.join("etcd")).unwrap();
    let out = manager(&generate_args(&pkis.ours, &[]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is a symbolic link"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    let out = run(Command::new("stat").args(["-c", "%a"]).arg(&elsewhere));
    assert_eq!(text(&out.stdout).trim(), "755", "chmod followed the link");
}

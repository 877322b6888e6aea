//! The PKI made by the real `k8s-manager certs` commands, checked with the
//! real `openssl` (chains, subjects, SANs, usages, key pairs) and the real
//! kubectl (the kubeconfig files). A missing tool fails the test.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use support::{manager_bin, run, run_ok, upstream_kubectl};

const NODE: &str = "desktop";
const ADVERTISE: &str = "192.168.65.3";

/// Every certificate kubeadm makes, and the kubelet's serving certificate:
/// (name, signing CA, subject as openssl prints it, extended key usages).
const CERTIFICATES: [(&str, &str, &str, &str); 11] = [
    ("ca", "ca", "CN = kubernetes", ""),
    (
        "apiserver",
        "ca",
        "CN = kube-apiserver",
        "TLS Web Server Authentication",
    ),
    (
        "apiserver-kubelet-client",
        "ca",
        "O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client",
        "TLS Web Client Authentication",
    ),
    (
        "front-proxy-ca",
        "front-proxy-ca",
        "CN = front-proxy-ca",
        "",
    ),
    (
        "front-proxy-client",
        "front-proxy-ca",
        "CN = front-proxy-client",
        "TLS Web Client Authentication",
    ),
    ("etcd/ca", "etcd/ca", "CN = etcd-ca", ""),
    (
        "etcd/server",
        "etcd/ca",
        "CN = desktop",
        "TLS Web Server Authentication, TLS Web Client Authentication",
    ),
    (
        "etcd/peer",
        "etcd/ca",
        "CN = desktop",
        "TLS Web Server Authentication, TLS Web Client Authentication",
    ),
    (
        "etcd/healthcheck-client",
        "etcd/ca",
        "CN = kube-etcd-healthcheck-client",
        "TLS Web Client Authentication",
    ),
    (
        "apiserver-etcd-client",
        "etcd/ca",
        "CN = kube-apiserver-etcd-client",
        "TLS Web Client Authentication",
    ),
    (
        "kubelet",
        "ca",
        "O = system:nodes, CN = system:node:desktop",
        "TLS Web Server Authentication",
    ),
];

fn openssl() -> Command {
    let probe = Command::new("openssl").arg("version").output();
    assert!(
        probe.is_ok_and(|out| out.status.success()),
        "openssl is not installed: apt-get install -y openssl"
    );
    Command::new("openssl")
}

fn generate(pki_dir: &Path, key_algorithm: &str) -> String {
    run_ok(
        Command::new(manager_bin())
            .args(["certs", "generate", "--pki-dir"])
            .arg(pki_dir)
            .args([
                "--node-name",
                NODE,
                "--advertise-address",
                ADVERTISE,
                "--san",
                "desktop.example",
                "--san",
                "10.1.2.3",
                "--key-algorithm",
                key_algorithm,
            ]),
    )
}

fn crt(pki_dir: &Path, name: &str) -> PathBuf {
    pki_dir.join(format!("{name}.crt"))
}

fn key(pki_dir: &Path, name: &str) -> PathBuf {
    pki_dir.join(format!("{name}.key"))
}

/// `openssl x509 -noout -ext <ext>` without its header line, trimmed.
fn extension(cert: &Path, ext: &str) -> String {
    let text = run_ok(
        openssl()
            .args(["x509", "-noout", "-ext", ext, "-in"])
            .arg(cert),
    );
    text.lines()
        .skip(1)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The public key of a private key and of a certificate, PEM.
fn public_of_key(key_file: &Path) -> String {
    run_ok(openssl().args(["pkey", "-pubout", "-in"]).arg(key_file))
}

fn public_of_cert(cert: &Path) -> String {
    run_ok(
        openssl()
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(cert),
    )
}

fn check_pki_with_openssl(pki_dir: &Path, key_algorithm: &str) {
    let mut serials = Vec::new();
    for (name, ca, subject, extended_usages) in CERTIFICATES {
        let cert = crt(pki_dir, name);
        let verified = run_ok(
            openssl()
                .args(["verify", "-CAfile"])
                .arg(crt(pki_dir, ca))
                .arg(&cert),
        );
        assert_eq!(verified.trim(), format!("{}: OK", cert.display()), "{name}");
        let printed_subject = run_ok(
            openssl()
                .args(["x509", "-noout", "-subject", "-in"])
                .arg(&cert),
        );
        assert_eq!(
            printed_subject.trim(),
            format!("subject={subject}"),
            "{name}"
        );
        assert_eq!(
            extension(&cert, "extendedKeyUsage"),
            extended_usages,
            "{name}"
        );
        let is_ca = name == ca;
        let key_usage = if is_ca {
            "Digital Signature, Key Encipherment, Certificate Sign"
        } else {
            "Digital Signature, Key Encipherment"
        };
        assert_eq!(extension(&cert, "keyUsage"), key_usage, "{name}");
        assert_eq!(
            extension(&cert, "basicConstraints"),
            if is_ca { "CA:TRUE" } else { "CA:FALSE" },
            "{name}"
        );
        let ca_key_id = extension(&crt(pki_dir, ca), "subjectKeyIdentifier");
        assert!(!ca_key_id.is_empty(), "{ca} has a subject key identifier");
        if !is_ca {
            assert!(
                extension(&cert, "authorityKeyIdentifier").contains(&ca_key_id),
                "{name} names its CA's key"
            );
            assert!(
                !extension(&cert, "subjectKeyIdentifier").is_empty(),
                "{name}"
            );
        }
        // Leaves one year, CAs ten (checkend: "will not expire" within N seconds).
        let (lasts, ends_before) = if is_ca { (3649, 3651) } else { (364, 366) };
        let checkend = |days: u64| {
            run(openssl()
                .args([
                    "x509",
                    "-noout",
                    "-checkend",
                    &(days * 86_400).to_string(),
                    "-in",
                ])
                .arg(&cert))
            .status
            .success()
        };
        assert!(checkend(lasts), "{name} lasts {lasts} days");
        assert!(
            !checkend(ends_before),
            "{name} ends before {ends_before} days"
        );
        let serial = run_ok(
            openssl()
                .args(["x509", "-noout", "-serial", "-in"])
                .arg(&cert),
        );
        let serial = serial.trim().trim_start_matches("serial=").to_string();
        assert!(
            serial.len() >= 24,
            "{name}: serial {serial} is random 128-bit"
        );
        serials.push(serial);

        assert_eq!(
            public_of_key(&key(pki_dir, name)),
            public_of_cert(&cert),
            "{name}: key matches certificate"
        );
        let key_text = run_ok(
            openssl()
                .args(["pkey", "-noout", "-text", "-in"])
                .arg(key(pki_dir, name)),
        );
        match key_algorithm {
            "rsa-2048" => assert!(
                key_text.starts_with("Private-Key: (2048 bit"),
                "{name}: {key_text}"
            ),
            _ => assert!(
                key_text.starts_with("Private-Key: (256 bit") && key_text.contains("prime256v1"),
                "{name}"
            ),
        }
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), CERTIFICATES.len(), "serials are unique");

    let sans = |name: &str| extension(&crt(pki_dir, name), "subjectAltName");
    assert_eq!(
        sans("apiserver"),
        "DNS:desktop, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, \
         DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:192.168.65.3, \
         IP Address:127.0.0.1, DNS:localhost, DNS:kubernetes.docker.internal, DNS:host.docker.internal, \
         DNS:desktop.example, IP Address:10.1.2.3"
    );
    let etcd_sans = "DNS:desktop, DNS:localhost, IP Address:192.168.65.3, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1";
    assert_eq!(sans("etcd/server"), etcd_sans);
    assert_eq!(sans("etcd/peer"), etcd_sans);
    assert_eq!(sans("ca"), "DNS:kubernetes");
    assert_eq!(sans("apiserver-kubelet-client"), "");
    assert_eq!(
        sans("kubelet"),
        "DNS:desktop, IP Address:192.168.65.3, DNS:localhost, IP Address:127.0.0.1"
    );

    // The service-account pair: PKCS#8 private key, SPKI public key, a pair.
    let sa_key = std::fs::read_to_string(pki_dir.join("sa.key")).unwrap();
    assert!(
        sa_key.starts_with("-----BEGIN PRIVATE KEY-----"),
        "sa.key is PKCS#8"
    );
    let sa_pub = run_ok(
        openssl()
            .args(["pkey", "-pubin", "-in"])
            .arg(pki_dir.join("sa.pub")),
    );
    assert!(sa_pub.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        public_of_key(&pki_dir.join("sa.key")),
        sa_pub,
        "sa.key and sa.pub are a pair"
    );
}

fn modes(pki_dir: &Path) -> BTreeMap<String, u32> {
    use std::os::unix::fs::PermissionsExt;
    let mut modes = BTreeMap::new();
    for dir in [pki_dir.to_path_buf(), pki_dir.join("etcd")] {
        modes.insert(
            dir.display().to_string(),
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        );
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                modes.insert(
                    path.display().to_string(),
                    std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                );
            }
        }
    }
    modes
}

#[test]
fn ecdsa_pki_passes_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let printed = generate(&pki_dir, "ecdsa-p256");
    assert!(
        printed
            .lines()
            .any(|line| line.starts_with("apiserver ") && line.ends_with("created")),
        "{printed}"
    );
    check_pki_with_openssl(&pki_dir, "ecdsa-p256");
    for (path, mode) in modes(&pki_dir) {
        let want = if Path::new(&path).is_dir() {
            0o700
        } else if path.ends_with(".key") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode, want, "{path}");
    }

    // Idempotent through the CLI too: a second run keeps every file.
    let again = generate(&pki_dir, "ecdsa-p256");
    assert!(again.lines().all(|line| line.ends_with("kept")), "{again}");
}

#[test]
fn rsa_pki_passes_openssl() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "rsa-2048");
    check_pki_with_openssl(dir.path(), "rsa-2048");
}

#[test]
fn check_and_renew_commands() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), "ecdsa-p256");
    let manager = || {
        let mut cmd = Command::new(manager_bin());
        cmd.arg("certs");
        cmd
    };

    let json = run_ok(
        manager()
            .args(["check", "--output", "json", "--pki-dir"])
            .arg(dir.path()),
    );
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let certificates = report["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), CERTIFICATES.len());
    assert!(certificates.iter().all(|c| c["status"] == "ok"), "{json}");
    assert_eq!(certificates[1]["name"], "apiserver");
    assert_eq!(certificates[1]["ca"], "ca");
    assert!(certificates[1]["daysLeft"].as_i64().unwrap() >= 364);
    let table = run_ok(manager().arg("check").arg("--pki-dir").arg(dir.path()));
    assert!(table.starts_with("NAME"), "{table}");

    let old_apiserver = std::fs::read(crt(dir.path(), "apiserver")).unwrap();
    let old_ca = std::fs::read(crt(dir.path(), "ca")).unwrap();
    let old_subject = run_ok(
        openssl()
            .args([
                "x509",
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
                "-in",
            ])
            .arg(crt(dir.path(), "apiserver")),
    );
    run_ok(
        manager()
            .args(["renew", "apiserver", "--pki-dir"])
            .arg(dir.path()),
    );
    assert_ne!(
        std::fs::read(crt(dir.path(), "apiserver")).unwrap(),
        old_apiserver
    );
    assert_eq!(std::fs::read(crt(dir.path(), "ca")).unwrap(), old_ca);
    let new_subject = run_ok(
        openssl()
            .args([
                "x509",
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
                "-in",
            ])
            .arg(crt(dir.path(), "apiserver")),
    );
    assert_eq!(new_subject, old_subject);
    run_ok(
        openssl()
            .args(["verify", "-CAfile"])
            .arg(crt(dir.path(), "ca"))
            .arg(crt(dir.path(), "apiserver")),
    );

    let refused = run(manager().args(["renew", "ca", "--pki-dir"]).arg(dir.path()));
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("CAs are never renewed"), "{message}");

    // An expired or missing certificate makes `check` fail.
    std::fs::remove_file(crt(dir.path(), "front-proxy-client")).unwrap();
    let failed = run(manager().arg("check").arg("--pki-dir").arg(dir.path()));
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("missing"));
}

#[test]
fn kubeconfigs_are_read_by_kubectl_and_chain_to_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let out_dir = dir.path().join("kube");
    generate(&pki_dir, "ecdsa-p256");
    let write = || {
        run_ok(
            Command::new(manager_bin())
                .args(["certs", "kubeconfigs", "--pki-dir"])
                .arg(&pki_dir)
                .arg("--out-dir")
                .arg(&out_dir)
                .args(["--server", "https://127.0.0.1:6443", "--node-name", NODE]),
        )
    };
    let printed = write();
    assert_eq!(printed.lines().count(), 6, "{printed}");
    let kubectl = upstream_kubectl();
    for (file, user, subject) in [
        (
            "admin.conf",
            "kubernetes-admin",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
        ),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            "O = system:masters, CN = kubernetes-super-admin",
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            "CN = system:kube-controller-manager",
        ),
        (
            "scheduler.conf",
            "system:kube-scheduler",
            "CN = system:kube-scheduler",
        ),
        (
            "kubelet.conf",
            "system:node:desktop",
            "O = system:nodes, CN = system:node:desktop",
        ),
        (
            "kube-proxy.conf",
            "system:kube-proxy",
            "CN = system:kube-proxy",
        ),
    ] {
        let path = out_dir.join(file);
        let view = |jsonpath: &str| {
            run_ok(Command::new(&kubectl).arg("--kubeconfig").arg(&path).args([
                "config",
                "view",
                "--raw",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ]))
        };
        assert_eq!(view("{.current-context}"), format!("{user}@kubernetes"));
        assert_eq!(
            view("{.clusters[0].cluster.server}"),
            "https://127.0.0.1:6443"
        );
        assert_eq!(view("{.users[0].name}"), user);
        let decode = |data: String| {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .unwrap()
        };
        let ca = decode(view("{.clusters[0].cluster.certificate-authority-data}"));
        assert_eq!(ca, std::fs::read(crt(&pki_dir, "ca")).unwrap(), "{file}");
        let client_cert = dir.path().join(format!("{file}.crt"));
        let client_key = dir.path().join(format!("{file}.key"));
        std::fs::write(
            &client_cert,
            decode(view("{.users[0].user.client-certificate-data}")),
        )
        .unwrap();
        std::fs::write(
            &client_key,
            decode(view("{.users[0].user.client-key-data}")),
        )
        .unwrap();
        run_ok(
            openssl()
                .args(["verify", "-CAfile"])
                .arg(crt(&pki_dir, "ca"))
                .arg(&client_cert),
        );
        let printed_subject = run_ok(
            openssl()
                .args(["x509", "-noout", "-subject", "-in"])
                .arg(&client_cert),
        );
        assert_eq!(
            printed_subject.trim(),
            format!("subject={subject}"),
            "{file}"
        );
        assert_eq!(
            extension(&client_cert, "extendedKeyUsage"),
            "TLS Web Client Authentication"
        );
        assert_eq!(
            public_of_key(&client_key),
            public_of_cert(&client_cert),
            "{file}"
        );
    }
    let again = write();
    assert!(again.lines().all(|line| line.ends_with("kept")), "{again}");
}

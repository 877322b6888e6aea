//! Certificates on a real cluster, checked with real openssl: leaves long
//! expired on a stopped cluster are renewed by `enable`, which comes back
//! with its objects and volume data; on a running cluster a leaf close to
//! expiry is renewed by `certs renew` and by the renewal unit, every
//! component serves or uses the new certificate (`openssl s_client` against
//! the API server, etcd and the kubelet), the user's kubeconfig gets a new
//! client certificate, `kubectl logs` works, and no container is restarted.
//! `certs rotate-ca` replaces the CAs while a pod keeps calling the API
//! server, and, cut short by kill -9 of its daemon, is resumed by running it
//! again after `enable` brought the cluster back.
//!
//! Needs root, containerd prepared by vm/prepare-vm.sh, the bundle
//! (`K8S_MANAGER_BUNDLE`), upstream kubectl and openssl; tests/run.sh
//! provides them. The tests share the machine's ports, so they take turns.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::{CONTEXT, Cluster, IMAGE, import_busybox, kubeconfig_field, wait_until};

const DAY: u64 = 86_400;

/// What these tests ask of the shared test cluster beyond its own methods.
trait CertsCluster {
    fn pki(&self) -> PathBuf;
    /// The VM user's kubeconfig (the cluster's HOME), merged like the host's.
    fn vm_kubeconfig(&self) -> PathBuf;
    fn manager_ok(&self, args: &[&str]) -> String;
    /// The pid of a component process, from `status`.
    fn pid(&self, component: &str) -> u64;
}

impl CertsCluster for Cluster {
    fn pki(&self) -> PathBuf {
        self.state().join("pki")
    }

    fn vm_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("home/.kube/config")
    }

    fn manager_ok(&self, args: &[&str]) -> String {
        support::run_ok(&mut self.manager(args))
    }

    fn pid(&self, component: &str) -> u64 {
        self.component_pids()
            .into_iter()
            .find(|(name, _)| name == component)
            .map_or(0, |(_, pid)| pid)
    }
}

/// The busybox test image in containerd: the other cluster tests may have
/// imported it already.
fn ensure_busybox(dir: &Path) {
    let images = support::run_ok(Command::new("ctr").args(["-n", "k8s.io", "images", "ls", "-q"]));
    if !images.lines().any(|l| l == IMAGE) {
        import_busybox(dir);
    }
}

// --- openssl ---------------------------------------------------------------

/// A date `offset_days` from now in openssl's `ca` format.
fn openssl_date(offset_days: i64) -> String {
    let out = support::run_ok(Command::new("date").args([
        "-u",
        "-d",
        &format!("{offset_days} days"),
        "+%Y%m%d%H%M%SZ",
    ]));
    out.trim().to_string()
}

/// Re-signs `cert` (PEM file, key `key`) under the CA `ca` with the same
/// subject, key and extensions, valid from `from_days` to `to_days` from
/// now, with `openssl ca`; writes the result over `out`.
fn resign(
    work: &Path,
    cert: &Path,
    key: &Path,
    ca: &str,
    pki: &Path,
    (from_days, to_days): (i64, i64),
    out: &Path,
) {
    let ca_dir = work.join(format!("ca-{}", rand_name()));
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("index.txt"), "").unwrap();
    std::fs::write(ca_dir.join("serial"), "1000\n").unwrap();
    let config = format!(
        "[ca]\ndefault_ca = own\n[own]\ndatabase = {dir}/index.txt\nnew_certs_dir = {dir}\nserial = {dir}/serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copyall\nunique_subject = no\n[any]\ncommonName = supplied\norganizationName = optional\n",
        dir = ca_dir.display()
    );
    std::fs::write(ca_dir.join("ca.cnf"), config).unwrap();
    let request = ca_dir.join("req.csr");
    support::run_ok(
        Command::new("openssl")
            .args(["x509", "-x509toreq", "-copy_extensions", "copyall", "-in"])
            .arg(cert)
            .arg("-signkey")
            .arg(key)
            .arg("-out")
            .arg(&request),
    );
    support::run_ok(
        Command::new("openssl")
            .args(["ca", "-batch", "-notext", "-preserveDN", "-config"])
            .arg(ca_dir.join("ca.cnf"))
            .arg("-cert")
            .arg(pki.join(format!("{ca}.crt")))
            .arg("-keyfile")
            .arg(pki.join(format!("{ca}.key")))
            .args(["-startdate", &openssl_date(from_days)])
            .args(["-enddate", &openssl_date(to_days)])
            .arg("-in")
            .arg(&request)
            .arg("-out")
            .arg(out)
            .stderr(Stdio::null()),
    );
}

fn rand_name() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Whether the PEM certificate `cert` is valid for at least `seconds` more.
fn valid_for(cert: &Path, seconds: u64) -> bool {
    Command::new("openssl")
        .args(["x509", "-noout", "-checkend", &seconds.to_string(), "-in"])
        .arg(cert)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Asserts that `cert` is valid for about a year (the declared validity).
fn assert_a_year(cert: &Path, what: &str) {
    assert!(valid_for(cert, 360 * DAY), "{what}: not valid for 360 days");
    assert!(!valid_for(cert, 370 * DAY), "{what}: valid past 370 days");
}

fn fingerprint(cert: &Path) -> String {
    support::run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
    )
}

/// The certificate served on 127.0.0.1:`port`, written to a file. A
/// component being restarted serves nothing for a moment: asked again for
/// up to a minute.
fn served(work: &Path, port: u16) -> PathBuf {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = Instant::now();
    loop {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) {
            let file = work.join(format!("served-{port}-{}.crt", rand_name()));
            std::fs::write(&file, format!("{}\n", &text[begin..end + END.len()])).unwrap();
            return file;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing served on {port}: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the API server, etcd and the kubelet serve the certificates
/// of their files (a reload, or a restart, takes a moment).
fn wait_served_as_files(cluster: &Cluster) {
    for (port, file) in [
        (6443, "apiserver"),
        (2379, "etcd/server"),
        (10250, "kubelet"),
    ] {
        let renewed = fingerprint(&cluster.pki().join(format!("{file}.crt")));
        wait_until(
            &format!("{port} serves the renewed {file}"),
            Duration::from_secs(90),
            || fingerprint(&served(cluster.dir.path(), port)) == renewed,
        );
    }
}

/// A credential of `user` in `kubeconfig` (`client-certificate-data`,
/// `client-key-data`), decoded, written to a file in `work`.
fn user_credential(work: &Path, kubeconfig: &Path, user: &str, field: &str) -> PathBuf {
    use base64::Engine;
    let data = kubeconfig_field(
        kubeconfig,
        &format!("{{.users[?(@.name==\"{user}\")].user.{field}}}"),
    );
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .unwrap_or_else(|e| panic!("{field} of {user} in {}: {e}", kubeconfig.display()));
    let file = work.join(format!("{field}-{}.pem", rand_name()));
    std::fs::write(&file, pem).unwrap();
    file
}

/// The client certificate of `user` in a kubeconfig.
fn kubeconfig_client_cert(work: &Path, kubeconfig: &Path, user: &str) -> PathBuf {
    user_credential(work, kubeconfig, user, "client-certificate-data")
}

/// Replaces the client certificate of `user` in `kubeconfig` by one
/// re-signed from it, valid from `from_days` to `to_days`.
fn resign_kubeconfig(
    work: &Path,
    pki: &Path,
    kubeconfig: &Path,
    user: &str,
    key_name: &str,
    from_days: i64,
    to_days: i64,
) {
    let cert = kubeconfig_client_cert(work, kubeconfig, user);
    let key = user_credential(work, kubeconfig, user, "client-key-data");
    let new = work.join(format!("{key_name}-resigned.crt"));
    resign(work, &cert, &key, "ca", pki, (from_days, to_days), &new);
    support::run_ok(Command::new(support::upstream_kubectl()).args([
        "config",
        "set-credentials",
        user,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--embed-certs",
        "--client-certificate",
        new.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ]));
}

/// Re-signs leaves of the PKI folder in place.
fn resign_leaves(cluster: &Cluster, leaves: &[(&str, &str)], from_days: i64, to_days: i64) {
    let pki = cluster.pki();
    for (name, ca) in leaves {
        let cert = pki.join(format!("{name}.crt"));
        let key = pki.join(format!("{name}.key"));
        let new = cluster.dir.path().join("resigned.crt");
        resign(
            cluster.dir.path(),
            &cert,
            &key,
            ca,
            &pki,
            (from_days, to_days),
            &new,
        );
        // Renamed into place, as the manager writes: a copy would let a
        // component's file watch read a half-written certificate.
        std::fs::rename(&new, &cert).unwrap();
    }
}

const LEAVES: [(&str, &str); 8] = [
    ("apiserver", "ca"),
    ("apiserver-kubelet-client", "ca"),
    ("front-proxy-client", "front-proxy-ca"),
    ("etcd/server", "etcd/ca"),
    ("etcd/peer", "etcd/ca"),
    ("etcd/healthcheck-client", "etcd/ca"),
    ("apiserver-etcd-client", "etcd/ca"),
    ("kubelet", "ca"),
];

/// The kubeconfigs of the state folder and the name of their user.
const KUBECONFIGS: [(&str, &str); 5] = [
    ("admin.conf", "kubernetes-admin"),
    ("controller-manager.conf", "system:kube-controller-manager"),
    ("scheduler.conf", "system:kube-scheduler"),
    ("kubelet.conf", "system:node:docker-desktop"),
    ("kube-proxy.conf", "system:kube-proxy"),
];

/// The containers of the running pods: (pod/container, id, restarts).
fn containers(cluster: &Cluster) -> Vec<String> {
    let out = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{range .status.containerStatuses[*]} {.name}={.containerID}/{.restartCount}{end}{\"\\n\"}{end}",
    ]);
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

const SLEEPER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  containers:
    - name: main
      image: example.test/busybox:e2e
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "echo sleeper-started; exec busybox sleep 36000"]
"#;

fn apply(cluster: &Cluster, name: &str, text: &str) {
    let file = cluster.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, text).unwrap();
    cluster.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
}

const WRITER: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 64Mi}
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  containers:
    - name: main
      image: example.test/busybox:e2e
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "[ -f /data/note ] || echo written-before > /data/note; exec busybox sleep 36000"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: data}
"#;

#[test]
fn a_cluster_off_with_long_expired_leaves_comes_back_with_its_data() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    ensure_busybox(cluster.dir.path());
    cluster.kubectl_ok(&["create", "configmap", "kept", "--from-literal=answer=42"]);
    apply(&cluster, "writer", WRITER);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/writer",
        "--timeout=180s",
    ]);
    cluster.manager_ok(&["disable"]);

    // Off for years: every leaf, and the client certificates of the
    // kubeconfigs (the components', the user's, the VM's), expired a day ago.
    resign_leaves(&cluster, &LEAVES, -400, -1);
    let work = cluster.dir.path();
    for (file, user) in KUBECONFIGS {
        let path = cluster.state().join("kubeconfig").join(file);
        resign_kubeconfig(work, &cluster.pki(), &path, user, file, -400, -1);
    }
    resign_kubeconfig(
        work,
        &cluster.pki(),
        &cluster.host_kubeconfig(),
        CONTEXT,
        "host",
        -400,
        -1,
    );
    for (name, _) in LEAVES {
        assert!(
            !valid_for(&cluster.pki().join(format!("{name}.crt")), 0),
            "{name} expired"
        );
    }
    let check = support::run(&mut cluster.manager(&["certs", "check"]));
    assert!(
        !check.status.success(),
        "certs check fails on expired certificates"
    );

    cluster.enable_ok();
    for (name, _) in LEAVES {
        assert_a_year(&cluster.pki().join(format!("{name}.crt")), name);
    }
    for (file, user) in KUBECONFIGS {
        let path = cluster.state().join("kubeconfig").join(file);
        assert_a_year(&kubeconfig_client_cert(work, &path, user), file);
    }
    for kubeconfig in [cluster.host_kubeconfig(), cluster.vm_kubeconfig()] {
        let cert = kubeconfig_client_cert(work, &kubeconfig, CONTEXT);
        assert_a_year(&cert, &kubeconfig.display().to_string());
    }
    assert_a_year(&served(work, 6443), "served by the API server");
    assert_a_year(&served(work, 2379), "served by etcd");
    assert_a_year(&served(work, 10250), "served by the kubelet");
    assert_eq!(
        cluster.kubectl_ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.answer}"]),
        "42"
    );
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/writer",
        "--timeout=180s",
    ]);
    let note = cluster.kubectl_ok(&["exec", "writer", "--", "busybox", "cat", "/data/note"]);
    assert_eq!(note.trim(), "written-before");
    cluster.manager_ok(&["certs", "check"]);
}

#[test]
fn a_running_cluster_renews_in_place_without_restarting_a_container() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    ensure_busybox(cluster.dir.path());
    apply(&cluster, "sleeper", SLEEPER);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/sleeper",
        "--timeout=180s",
    ]);
    let work = cluster.dir.path();
    let before = containers(&cluster);

    // 1. By the command: leaves replaced by ones that expire in 10 days.
    resign_leaves(&cluster, &LEAVES, -1, 10);
    let admin = cluster.state().join("kubeconfig/admin.conf");
    resign_kubeconfig(
        work,
        &cluster.pki(),
        &admin,
        "kubernetes-admin",
        "admin",
        -1,
        10,
    );
    let etcd_pid = cluster.pid("etcd");
    let apiserver_pid = cluster.pid("kube-apiserver");
    let out = support::run(&mut cluster.manager(&["certs", "renew", "--all"]));
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "certs renew: {told}");
    assert!(told.contains("certificate admin.conf renewed"), "{told}");
    for (name, _) in LEAVES {
        assert_a_year(&cluster.pki().join(format!("{name}.crt")), name);
    }
    wait_served_as_files(&cluster);
    assert_eq!(
        cluster.pid("etcd"),
        etcd_pid,
        "etcd reloads its certificates itself"
    );
    assert_ne!(
        cluster.pid("kube-apiserver"),
        apiserver_pid,
        "the API server is restarted for its client certificates"
    );
    assert_a_year(
        &kubeconfig_client_cert(work, &cluster.host_kubeconfig(), CONTEXT),
        "host kubeconfig",
    );
    assert_a_year(
        &kubeconfig_client_cert(work, &cluster.vm_kubeconfig(), CONTEXT),
        "VM kubeconfig",
    );
    let logs = cluster.kubectl_ok(&["logs", "sleeper"]);
    assert!(logs.contains("sleeper-started"), "{logs}");
    assert_eq!(containers(&cluster), before, "no container restarted");

    // What reloads by itself is not restarted: the serving certificates of
    // the API server and etcd, renewed alone, are served by the same
    // processes. The kubelet's is a restart input (see pki::usage).
    let pids: Vec<u64> = ["kube-apiserver", "etcd", "kubelet"]
        .map(|c| cluster.pid(c))
        .to_vec();
    cluster.manager_ok(&["certs", "renew", "apiserver", "etcd/server", "kubelet"]);
    wait_served_as_files(&cluster);
    let after: Vec<u64> = ["kube-apiserver", "etcd", "kubelet"]
        .map(|c| cluster.pid(c))
        .to_vec();
    assert_eq!(
        after[..2],
        pids[..2],
        "the API server and etcd reload their serving certificates"
    );
    assert_ne!(
        after[2], pids[2],
        "the kubelet is restarted for its serving certificate"
    );
    assert_eq!(containers(&cluster), before, "no container restarted");

    // 2. By the unit: a short interval, and again a leaf close to expiry.
    cluster.manager_ok(&["settings", "set", "certs.checkInterval=5"]);
    resign_leaves(
        &cluster,
        &[("apiserver-kubelet-client", "ca"), ("apiserver", "ca")],
        -1,
        10,
    );
    let kubelet_conf = cluster.state().join("kubeconfig/kubelet.conf");
    resign_kubeconfig(
        work,
        &cluster.pki(),
        &kubelet_conf,
        "system:node:docker-desktop",
        "kubelet",
        -1,
        10,
    );
    wait_until(
        "the renewal unit renews the leaves",
        Duration::from_secs(120),
        || {
            valid_for(
                &cluster.pki().join("apiserver-kubelet-client.crt"),
                300 * DAY,
            ) && valid_for(
                &kubeconfig_client_cert(work, &kubelet_conf, "system:node:docker-desktop"),
                300 * DAY,
            )
        },
    );
    wait_until(
        "the API server serves the renewed certificate",
        Duration::from_secs(120),
        || valid_for(&served(work, 6443), 300 * DAY),
    );
    // The kubelet restart and the API server's are done once the operation
    // ends; kubectl logs goes through both.
    wait_until("kubectl logs works", Duration::from_secs(120), || {
        let out = support::run(&mut cluster.kubectl(&["logs", "sleeper"]));
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sleeper-started")
    });
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/sleeper",
        "--timeout=120s",
    ]);
    assert_eq!(containers(&cluster), before, "no container restarted");
    // The unit says in `status` when it checks next and what expires first,
    // once its renewal (restarts and waits) has ended.
    let unit_detail = || {
        let status = cluster.manager_ok(&["status", "--output", "json"]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let unit = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "certs-renewal")
            .unwrap_or_else(|| panic!("no certs-renewal unit: {status}"))
            .clone();
        assert!(
            status["earliestCertificate"]["daysLeft"].as_i64().unwrap() >= 300,
            "{status}"
        );
        unit["detail"].as_str().unwrap_or_default().to_string()
    };
    wait_until(
        "the unit tells its next check",
        Duration::from_secs(90),
        || {
            let detail = unit_detail();
            detail.contains("next check") && detail.contains("earliest expiry")
        },
    );
    let check = cluster.manager_ok(&["certs", "check", "--output", "json"]);
    let check: serde_json::Value = serde_json::from_str(&check).unwrap();
    let names: Vec<&str> = check["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ca") && names.contains(&"admin.conf"),
        "{names:?}"
    );
}

/// A pod whose service-account token and in-cluster CA bundle the test uses
/// to call the API server.
const CALLER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: caller
spec:
  containers:
    - name: main
      image: example.test/busybox:e2e
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "exec busybox sleep 36000"]
"#;

/// The files of the pod's `kube-api-access` projected volume, as the kubelet
/// wrote them on the node: the very `ca.crt` and `token` the container sees
/// under /var/run/secrets/kubernetes.io/serviceaccount (same mount), read
/// without going through the API server the calls are checking.
fn projected_files(cluster: &Cluster, uid: &str) -> (PathBuf, PathBuf) {
    let volumes = cluster
        .state()
        .join("kubelet/pods")
        .join(uid)
        .join("volumes/kubernetes.io~projected");
    let dir = std::fs::read_dir(&volumes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("kube-api-access")
        })
        .unwrap_or_else(|| panic!("no kube-api-access volume in {}", volumes.display()));
    (dir.join("ca.crt"), dir.join("token"))
}

/// One call as the pod makes it: to the `kubernetes` Service's ClusterIP,
/// verified with the pod's projected `ca.crt`, authenticated with its token.
/// `Ok` when it answered 200, else what curl saw.
fn call_as_pod(ca: &Path, token: &Path, service_ip: &str) -> Result<(), String> {
    let token = std::fs::read_to_string(token).unwrap_or_default();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("https://{service_ip}:443/api"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() && code == "200" {
        return Ok(());
    }
    Err(format!(
        "curl exit {:?}, http {code}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Whether `cert` verifies against the CA certificate `ca` with openssl.
fn verifies(cert: &Path, ca: &Path) -> bool {
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd/ca"];

/// The CA certificates as they are before a rotation, copied to `work/old`
/// (the rotation removes its own copy when it ends).
fn keep_old_cas(cluster: &Cluster, work: &Path) -> PathBuf {
    let old = work.join("old");
    std::fs::create_dir_all(old.join("etcd")).unwrap();
    for ca in CAS {
        std::fs::copy(
            cluster.pki().join(format!("{ca}.crt")),
            old.join(format!("{ca}.crt")),
        )
        .unwrap();
    }
    old
}

/// The certificates in the trust bundle of `ca`.
fn trusted_count(cluster: &Cluster, ca: &str) -> usize {
    std::fs::read_to_string(cluster.pki().join(format!("trust/{ca}.crt")))
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count()
}

/// `status --output json`; its exit code is 1 when the state is an error
/// (a manager that died), and the report is printed all the same.
fn status_json(cluster: &Cluster) -> serde_json::Value {
    let out = support::run(&mut cluster.manager(&["status", "--output", "json"]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --output json ({}): {e}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What a finished rotation leaves: only the new CAs (which replaced the
/// ones kept in `old`) are trusted, and everything is signed by them; the
/// service-account key `sa_key` is kept; no rotation in `status`.
fn assert_rotated(cluster: &Cluster, work: &Path, old: &Path, sa_key: &[u8]) {
    for ca in ["ca", "etcd/ca"] {
        assert_ne!(
            fingerprint(&old.join(format!("{ca}.crt"))),
            fingerprint(&cluster.pki().join(format!("{ca}.crt"))),
            "{ca} replaced"
        );
    }
    for (port, ca) in [(6443, "ca"), (2379, "etcd/ca"), (10250, "ca")] {
        let cert = served(work, port);
        assert!(
            verifies(&cert, &cluster.pki().join(format!("{ca}.crt"))),
            "{port} chains to the new {ca}"
        );
        assert!(
            !verifies(&cert, &old.join(format!("{ca}.crt"))),
            "the old {ca} no longer verifies {port}"
        );
    }
    for trust in CAS {
        assert_eq!(trusted_count(cluster, trust), 1, "{trust}");
    }
    assert_eq!(
        std::fs::read(cluster.pki().join("sa.key")).unwrap(),
        sa_key,
        "the service-account key is kept"
    );
    for kubeconfig in [cluster.host_kubeconfig(), cluster.vm_kubeconfig()] {
        let cert = kubeconfig_client_cert(work, &kubeconfig, CONTEXT);
        assert!(verifies(&cert, &cluster.pki().join("ca.crt")));
        assert!(!verifies(&cert, &old.join("ca.crt")));
    }
    cluster.kubectl_ok(&["get", "nodes"]);
    assert!(!cluster.pki().join("rotate-ca").exists());
    let status = status_json(cluster);
    assert_eq!(status["state"]["state"], "running", "{status}");
    assert!(status.get("caRotation").is_none(), "{status}");
}

#[test]
fn rotate_ca_replaces_the_cas_while_a_pod_keeps_calling_the_api_server() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    ensure_busybox(cluster.dir.path());
    apply(&cluster, "caller", CALLER);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/caller",
        "--timeout=180s",
    ]);
    let work = cluster.dir.path().to_path_buf();
    let uid = cluster.kubectl_ok(&["get", "pod", "caller", "-o", "jsonpath={.metadata.uid}"]);
    let service_ip = cluster.kubectl_ok(&[
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let (ca_file, token_file) = projected_files(&cluster, uid.trim());
    let before = containers(&cluster);
    // The cluster CA, re-signed by itself (same key, subject and
    // extensions) to expire in 200 days: `status` names the rotation.
    let short_ca = work.join("short-ca.crt");
    support::run_ok(
        Command::new("openssl")
            .args(["x509", "-days", "200", "-in"])
            .arg(cluster.pki().join("ca.crt"))
            .arg("-signkey")
            .arg(cluster.pki().join("ca.key"))
            .arg("-out")
            .arg(&short_ca),
    );
    std::fs::copy(&short_ca, cluster.pki().join("ca.crt")).unwrap();
    let ca_warnings = || {
        status_json(&cluster)["caWarnings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let warned = ca_warnings();
    assert!(
        warned.len() == 1
            && warned[0].as_str().unwrap().contains("CA ca expires")
            && warned[0]
                .as_str()
                .unwrap()
                .contains("k8s-manager certs rotate-ca"),
        "{warned:?}"
    );
    assert!(
        cluster
            .manager_ok(&["status"])
            .contains("k8s-manager certs rotate-ca"),
        "status names the rotation"
    );
    // And the renewal's check (the unit's, here asked for by `certs renew`
    // with nothing due) says it as an event of its operation.
    let renew = support::run(&mut cluster.manager(&["certs", "renew"]));
    let said = String::from_utf8_lossy(&renew.stderr);
    assert!(
        renew.status.success()
            && said.contains("warning: CA ca expires")
            && said.contains("k8s-manager certs rotate-ca"),
        "certs renew: {said}"
    );
    let old = keep_old_cas(&cluster, &work);
    let sa_key = std::fs::read(cluster.pki().join("sa.key")).unwrap();
    if let Err(why) = call_as_pod(&ca_file, &token_file, service_ip.trim()) {
        panic!("the pod's call before the rotation: {why}");
    }

    // The pod's calls, every second, for as long as the rotation runs: the
    // API server is handed over to a new instance at each step (never
    // stopped first), so every one must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (stop, ca_file, token_file) = (stop.clone(), ca_file.clone(), token_file.clone());
        let service_ip = service_ip.trim().to_string();
        let begun = std::time::Instant::now();
        std::thread::spawn(move || {
            let mut calls = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = format!("{:.1}s", begun.elapsed().as_secs_f64());
                calls.push((at, call_as_pod(&ca_file, &token_file, &service_ip)));
                std::thread::sleep(Duration::from_secs(1));
            }
            calls
        })
    };
    let out = support::run(&mut cluster.manager(&["certs", "rotate-ca"]));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = caller.join().unwrap();
    let told = String::from_utf8_lossy(&out.stderr);
    eprintln!("certs rotate-ca said:\n{told}");
    assert!(out.status.success(), "certs rotate-ca: {told}");
    let failed: Vec<String> = calls
        .iter()
        .filter_map(|(at, c)| c.as_ref().err().map(|why| format!("{at}: {why}")))
        .collect();
    eprintln!(
        "pod calls during the rotation: {} ok, {} failed",
        calls.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "calls failed: {failed:#?}");
    assert!(calls.len() > 60, "too few calls: {}", calls.len());
    assert!(
        told.contains("kube-apiserver handed over"),
        "the API server was handed over, not restarted: {told}"
    );

    assert_rotated(&cluster, &work, &old, &sa_key);
    // The pod's bundle ends with the new CA only (the kubelet refreshes it
    // within about a minute), and the pod still calls with it.
    let new_ca = std::fs::read_to_string(cluster.pki().join("ca.crt")).unwrap();
    wait_until(
        "the pod's ca.crt holds the new CA only",
        Duration::from_secs(150),
        || std::fs::read_to_string(&ca_file).is_ok_and(|b| b.trim() == new_ca.trim()),
    );
    if let Err(why) = call_as_pod(&ca_file, &token_file, service_ip.trim()) {
        panic!("the pod's call after the rotation: {why}");
    }
    assert_eq!(containers(&cluster), before, "no container restarted");
    cluster.manager_ok(&["certs", "check"]);
    assert_eq!(
        ca_warnings(),
        Vec::<serde_json::Value>::new(),
        "the new CAs last"
    );
}

/// The steps of a rotation as `pki/rotate-ca/step` records them, in order.
const STEPS: [&str; 4] = ["new", "trust-both", "switched", "trust-new"];

#[test]
fn rotate_ca_cut_short_by_daemon_crashes_is_resumed_by_running_it_again() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let work = cluster.dir.path().to_path_buf();
    let old = keep_old_cas(&cluster, &work);
    let sa_key = std::fs::read(cluster.pki().join("sa.key")).unwrap();
    let step_file = cluster.pki().join("rotate-ca/step");
    let step = || {
        std::fs::read_to_string(&step_file)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let position = |step: &str| STEPS.iter().position(|s| *s == step);

    // Two crashes, each a kill -9 of the daemon the moment a step is
    // recorded: when the bundles trust both CAs (the kubeconfigs and the
    // components not yet moved over), then when the new CAs sign (the
    // leaves maybe not yet re-issued under them).
    let mut resumed_from: Option<String> = None;
    for target in ["trust-both", "switched"] {
        let round = format!("rotate-ca-killed-at-{target}");
        let log = cluster.round_log(&round);
        let mut cli = cluster
            .manager(&["certs", "rotate-ca"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // Polled often: the kill lands as close to the record as it can.
        let start = Instant::now();
        while position(&step()) < position(target) {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "the rotation never reached {target}: at {:?}",
                step()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if resumed_from.is_none() {
            // The daemon says the rotation runs. Only before the first kill:
            // trust-both is followed by restarts and a 90 s wait, while a
            // status call before the second would let the re-issue of the
            // leaves run ahead of the kill.
            let status = status_json(&cluster);
            assert_eq!(status["caRotation"]["running"], true, "{status}");
            assert_eq!(
                status["caRotation"]["message"],
                format!("a CA rotation is running, at step {target}"),
                "{status}"
            );
        }
        let daemon = cluster
            .daemon_pid()
            .expect("the daemon's pid in state.json");
        // SAFETY: kill(2) on the daemon this test started.
        unsafe {
            libc::kill(daemon as i32, libc::SIGKILL);
        }
        let killed_at = step();
        let pki = cluster.pki();
        eprintln!(
            "daemon {daemon} killed at step {killed_at}; the API server's leaf then signed by the {} CA",
            if verifies(&pki.join("apiserver.crt"), &pki.join("ca.crt")) {
                "signing"
            } else {
                "other"
            }
        );
        let cli = cli.wait().unwrap();
        let told =
            std::fs::read_to_string(work.join("rounds").join(format!("{round}.log"))).unwrap();
        assert!(
            !cli.success(),
            "rotate-ca ended well though its daemon was killed: {told}"
        );
        match &resumed_from {
            None => assert!(told.contains("new cluster CAs made"), "{told}"),
            Some(from) => assert!(
                told.contains(&format!("resuming the CA rotation at its step {from}")),
                "{told}"
            ),
        }

        // With no daemon, `status` reads the state folder: the rotation is
        // there.
        // Gone, or a zombie its parent has not reaped yet, with every thread
        // out (a zombie leader whose threads still leave is what `status`
        // rightly counts as running).
        wait_until("the killed daemon is gone", Duration::from_secs(10), || {
            !support::holds::alive(daemon)
        });
        let status = status_json(&cluster);
        assert_eq!(status["managerRunning"], false, "{status}");
        assert_eq!(status["state"]["state"], "error", "{status}");
        assert_eq!(status["caRotation"]["step"], killed_at.as_str(), "{status}");
        assert_eq!(status["caRotation"]["running"], false, "{status}");

        // The user brings the cluster back: it starts with the files as
        // they are, the rotation still where it stopped.
        cluster.enable_ok();
        cluster.kubectl_ok(&["get", "nodes"]);
        assert_eq!(step(), killed_at, "enable leaves the rotation's step alone");
        if killed_at != "trust-new" {
            for ca in CAS {
                assert_eq!(trusted_count(&cluster, ca), 2, "{ca} trusts old and new");
            }
        }
        if killed_at != "trust-both" {
            // The new CAs sign: what the enable started serves leaves of
            // theirs (re-issued by its certs phase if the killed run had not).
            for (port, ca) in [(6443, "ca"), (2379, "etcd/ca"), (10250, "ca")] {
                let cert = served(&work, port);
                assert!(
                    verifies(&cert, &cluster.pki().join(format!("{ca}.crt"))),
                    "{port} chains to the new {ca}"
                );
                assert!(
                    !verifies(&cert, &old.join(format!("{ca}.crt"))),
                    "{port} chains to the old {ca}"
                );
            }
        }
        let status = status_json(&cluster);
        assert_eq!(status["managerRunning"], true, "{status}");
        assert_eq!(status["state"]["state"], "running", "{status}");
        assert_eq!(status["caRotation"]["step"], killed_at.as_str(), "{status}");
        assert_eq!(status["caRotation"]["running"], false, "{status}");
        eprintln!("caRotation: {}", status["caRotation"]);
        let text = cluster.manager_ok(&["status"]);
        assert!(
            text.contains(&format!(
                "CA rotation: a CA rotation was cut short at step {killed_at}"
            )) && text.contains("`k8s-manager certs rotate-ca` resumes it"),
            "{text}"
        );
        resumed_from = Some(killed_at);
    }

    // Run again, it resumes where it stopped and finishes.
    let from = resumed_from.unwrap();
    let out = support::run(&mut cluster.manager(&["certs", "rotate-ca"]));
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "certs rotate-ca, resumed: {told}");
    assert!(
        told.contains(&format!("resuming the CA rotation at its step {from}")),
        "{told}"
    );
    assert_rotated(&cluster, &work, &old, &sa_key);
    cluster.manager_ok(&["certs", "check"]);
}

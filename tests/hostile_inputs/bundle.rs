//! Hostile inputs: bundle.
//!
//! Fake bundles in a temporary folder, checked by `k8s-manager bundle
//! verify`: small shell scripts stand for the Kubernetes binaries, and a
//! script that must not run leaves a mark when it does.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use k8s_manager::bundle::manifest::CLUSTER_EXECUTABLES;

use crate::support;

fn kube_script(marker: Option<&Path>) -> Vec<u8> {
    let mark = marker.map_or(String::new(), |m| format!("touch {}\n", m.display()));
    format!("#!/bin/sh\n{mark}echo \"Kubernetes v1.34.4\"\n").into_bytes()
}

fn write_script(path: &Path, script: &[u8]) {
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `bin/kube` and a link to it per component, as the builder lays them out.
fn make_bin(bin: &Path, script: &[u8]) {
    std::fs::create_dir_all(bin).unwrap();
    write_script(&bin.join("kube"), script);
    for name in CLUSTER_EXECUTABLES {
        symlink("kube", bin.join(name)).unwrap();
    }
}

/// The manifest of [`make_bin`]'s layout, as a JSON value to spoil.
fn manifest(script: &[u8]) -> serde_json::Value {
    let sha: String = Sha256::digest(script)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({
        "schemaVersion": 1,
        "kubernetes": "v1.34.4",
        "components": {"kubernetes": "v1.34.4"},
        "executables": CLUSTER_EXECUTABLES.iter().map(|n| serde_json::json!(
            {"path": format!("bin/{n}"), "args": ["--version"], "expect": "Kubernetes v1.34.4"}
        )).collect::<Vec<_>>(),
        "images": [],
        "files": [{"path": "bin/kube", "sha256": sha, "size": script.len(), "executable": true}],
        "links": CLUSTER_EXECUTABLES.iter().map(|n| serde_json::json!(
            {"path": format!("bin/{n}"), "target": "kube"}
        )).collect::<Vec<_>>(),
    })
}

fn write_manifest(bundle: &Path, manifest: &serde_json::Value) {
    std::fs::write(
        bundle.join("bundle.json"),
        serde_json::to_vec_pretty(manifest).unwrap(),
    )
    .unwrap();
}

/// Runs a command to its end, or kills it after `limit` and fails the test:
/// a check that waits for ever is a failure, not a hung suite.
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `bundle verify DIR`: its exit status, stdout and stderr.
fn verify(bundle: &Path) -> (bool, String, String) {
    let out = run_within(
        Command::new(support::manager_bin()).args(["bundle", "verify", bundle.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Tells the user what to do: rebuild or fetch the bundle.
fn says_what_to_do(text: &str) {
    assert!(
        text.contains("vm/bundle/build.sh") && text.contains("k8s-manager bundle fetch"),
        "no next step in: {text}"
    );
}

fn no_parser_internals(text: &str) {
    for internal in ["EOF while parsing", "expected value", "at line 1 column"] {
        assert!(!text.contains(internal), "{internal:?} in: {text}");
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    marker: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let bundle = root.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    Fixture {
        marker: root.join("ran"),
        bundle,
        root,
        _dir: dir,
    }
}

#[test]
fn a_bin_folder_linked_out_of_the_bundle_is_not_run() {
    let f = fixture();
    // Outside, the very files the manifest describes, digests and all.
    let script = kube_script(Some(&f.marker));
    let outside = f.root.join("outside");
    make_bin(&outside, &script);
    symlink(&outside, f.bundle.join("bin")).unwrap();
    write_manifest(&f.bundle, &manifest(&script));
    let (ok, stdout, _) = verify(&f.bundle);
    assert!(!ok, "{stdout}");
    assert!(!f.marker.exists(), "an executable outside the bundle ran");
    assert!(
        stdout.contains("problem: bin/kube: leads out of the bundle"),
        "{stdout}"
    );
    assert!(stdout.contains("NOT usable"), "{stdout}");
    says_what_to_do(&stdout);
}

#[test]
fn a_link_to_a_file_outside_is_not_run() {
    let f = fixture();
    make_bin(&f.bundle.join("bin"), &kube_script(None));
    write_manifest(&f.bundle, &manifest(&kube_script(None)));
    let evil = f.root.join("evil");
    write_script(&evil, &kube_script(Some(&f.marker)));
    std::fs::remove_file(f.bundle.join("bin/kubelet")).unwrap();
    symlink(&evil, f.bundle.join("bin/kubelet")).unwrap();
    let (ok, stdout, _) = verify(&f.bundle);
    assert!(!ok, "{stdout}");
    assert!(!f.marker.exists(), "the link out of the bundle ran");
    assert!(
        stdout.contains("problem: bin/kubelet: not run: leads out of the bundle"),
        "{stdout}"
    );
}

#[test]
fn an_executable_without_a_digest_is_not_run() {
    let f = fixture();
    make_bin(&f.bundle.join("bin"), &kube_script(None));
    write_script(&f.bundle.join("bin/helper"), &kube_script(Some(&f.marker)));
    let mut m = manifest(&kube_script(None));
    m["executables"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"path": "bin/helper", "args": ["--version"], "expect": "Kubernetes"}
        ));
    write_manifest(&f.bundle, &m);
    let (ok, stdout, stderr) = verify(&f.bundle);
    assert!(!ok, "{stdout}");
    assert!(!f.marker.exists(), "an executable with no digest ran");
    assert!(
        stderr.contains("bin/helper: listed as an executable, but bin/helper has no digest among the manifest's files: it would run unchecked"),
        "{stderr}"
    );
    says_what_to_do(&stderr);
}

#[test]
fn an_empty_manifest_is_not_a_bundle() {
    let f = fixture();
    let mut m = manifest(b"");
    for list in ["executables", "files", "links"] {
        m[list] = serde_json::json!([]);
    }
    write_manifest(&f.bundle, &m);
    let (ok, stdout, stderr) = verify(&f.bundle);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("it lacks what the cluster runs: no executable bin/etcd, bin/kube-apiserver, bin/kube-controller-manager, bin/kube-scheduler, bin/kubelet, bin/kube-proxy"),
        "{stderr}"
    );
    says_what_to_do(&stderr);
}

#[test]
fn a_manifest_without_kubelet_is_not_a_bundle() {
    // The cluster would run bin/kubelet unchecked: the manifest never names it.
    let f = fixture();
    make_bin(&f.bundle.join("bin"), &kube_script(None));
    let mut m = manifest(&kube_script(None));
    m["executables"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["path"] != "bin/kubelet");
    write_manifest(&f.bundle, &m);
    let (ok, _, stderr) = verify(&f.bundle);
    assert!(!ok);
    assert!(stderr.contains("no executable bin/kubelet"), "{stderr}");
}

#[test]
fn a_manifest_that_is_a_fifo_is_refused_at_once() {
    let f = fixture();
    let fifo = f.bundle.join("bundle.json");
    crate::support::mkfifo(&fifo);
    // Nobody ever writes to it: reading it would wait for ever.
    let (ok, _, stderr) = verify(&f.bundle);
    assert!(!ok);
    assert!(
        stderr.contains("bundle.json: not a usable bundle manifest: not a regular file"),
        "{stderr}"
    );
    says_what_to_do(&stderr);
}

#[test]
fn a_manifest_that_is_a_device_is_not_read() {
    let f = fixture();
    symlink("/dev/zero", f.bundle.join("bundle.json")).unwrap();
    // Capped memory: a manager that reads /dev/zero to its end fails here
    // instead of taking the machine's memory.
    let out = run_within(
        Command::new("sh").args([
            "-c",
            "ulimit -v 1000000; exec \"$0\" bundle verify \"$1\"",
            support::manager_bin().to_str().unwrap(),
            f.bundle.to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn a_huge_manifest_is_refused_in_plain_words() {
    let f = fixture();
    let file = std::fs::File::create(f.bundle.join("bundle.json")).unwrap();
    file.set_len(64 << 20).unwrap();
    let (ok, _, stderr) = verify(&f.bundle);
    assert!(!ok);
    assert!(stderr.contains("larger than the 1048576 bytes"), "{stderr}");
    no_parser_internals(&stderr);
    says_what_to_do(&stderr);
}

#[test]
fn a_manifest_that_is_not_json_is_said_so_plainly() {
    let f = fixture();
    std::fs::write(f.bundle.join("bundle.json"), b"{\"schemaVersion\": 1,").unwrap();
    let (ok, _, stderr) = verify(&f.bundle);
    assert!(!ok);
    assert!(stderr.contains("it is cut short"), "{stderr}");
    no_parser_internals(&stderr);
    says_what_to_do(&stderr);
}

#[test]
fn a_version_probe_that_leaves_a_process_behind_does_not_hold_verify() {
    let f = fixture();
    let pids = f.root.join("pids");
    // Answers and exits, leaving a process that holds its output open.
    let script = format!(
        "#!/bin/sh\necho \"Kubernetes v1.34.4\"\nsleep 120 &\necho $! >> {}\n",
        pids.display()
    )
    .into_bytes();
    make_bin(&f.bundle.join("bin"), &script);
    write_manifest(&f.bundle, &manifest(&script));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify(&f.bundle)));
    // The sleeps this test started end with it.
    for pid in std::fs::read_to_string(&pids).unwrap_or_default().lines() {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
    let (ok, stdout, stderr) = out.expect("verify waited for what the probe left running");
    assert!(ok, "{stdout}{stderr}");
}

#[test]
fn a_mirror_that_sends_a_huge_checksum_is_refused_in_few_words() {
    // Every request is answered with 20 MB that is not a checksum.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let size = 20 << 20;
                let mut stream = &stream;
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                let block = vec![b'a'; 1 << 20];
                for _ in 0..20 {
                    if stream.write_all(&block).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let f = fixture();
    let dest = f.root.join("fetched");
    let out = run_within(
        Command::new(support::manager_bin()).args([
            "bundle",
            "fetch",
            "--version",
            "v1.34.4",
            "--mirror",
            &url,
            "--etcd-mirror",
            &url,
            "--dest",
            dest.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.len() < 4096, "{} bytes of error", stderr.len());
    assert!(
        stderr.contains("larger than the 65536 bytes a checksum file can be"),
        "{stderr}"
    );
    assert!(!dest.exists());
}

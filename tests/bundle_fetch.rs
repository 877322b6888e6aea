//! `k8s-manager bundle fetch` against a mirror served by a local HTTP server
//! started here: a good mirror gives a bundle that `bundle verify` accepts; a
//! dropped connection is resumed with a range request; a corrupt file and a
//! missing checksum fail clearly and leave no bundle behind.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

const VERSION: &str = "v1.34.4";
const ETCD: &str = "v3.6.16";

/// What the mirror serves, and what it saw.
#[derive(Default)]
struct MirrorState {
    files: HashMap<String, Vec<u8>>,
    /// Paths whose first response is cut off after this many bytes.
    cut_once: HashMap<String, usize>,
    /// Every request: path and Range header.
    requests: Vec<(String, Option<String>)>,
}

struct Mirror {
    url: String,
    state: Arc<Mutex<MirrorState>>,
}

impl Mirror {
    fn start(state: MirrorState) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Mirror { url, state }
    }
}

fn serve(stream: TcpStream, state: &Mutex<MirrorState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let mut range = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        let (body, cut) = {
            let mut st = state.lock().unwrap();
            st.requests.push((path.clone(), range.clone()));
            let cut = st.cut_once.remove(&path);
            (st.files.get(&path).cloned(), cut)
        };
        let Some(body) = body else {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
            continue;
        };
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        let (status, slice) = match start {
            Some(s) if s >= body.len() => {
                let _ = stream
                    .write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\ncontent-length: 0\r\n\r\n");
                continue;
            }
            Some(s) => (
                format!(
                    "206 Partial Content\r\ncontent-range: bytes {s}-{}/{}",
                    body.len() - 1,
                    body.len()
                ),
                &body[s..],
            ),
            None => ("200 OK".to_string(), &body[..]),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\naccept-ranges: bytes\r\n\r\n",
            slice.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        match cut {
            Some(n) => {
                let _ = stream.write_all(&slice[..n.min(slice.len())]);
                let _ = stream.flush();
                return; // drop the connection mid-body
            }
            None => stream.write_all(slice).unwrap(),
        }
    }
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A stand-in release binary: a script that answers the version query the
/// bundle manifest uses, padded so that it arrives in several chunks.
fn fake_binary(name: &str) -> Vec<u8> {
    let answer = match name {
        "kubectl" => format!("Client Version: {VERSION}"),
        "kubeadm" => VERSION.to_string(),
        "etcd" => format!("etcd Version: {}", &ETCD[1..]),
        "etcdctl" | "etcdutl" => format!("{name} version: {}", &ETCD[1..]),
        _ => format!("Kubernetes {VERSION}"),
    };
    format!(
        "#!/bin/sh\necho \"{answer}\"\nexit 0\n# {}\n",
        "x".repeat(200_000)
    )
    .into_bytes()
}

fn etcd_tarball() -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for name in ["etcd", "etcdctl", "etcdutl", "README.md"] {
        let data = fake_binary(name);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                format!("etcd-{ETCD}-linux-amd64/{name}"),
                &data[..],
            )
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn good_mirror() -> MirrorState {
    let mut state = MirrorState::default();
    for name in k8s_manager::bundle::fetch::KUBERNETES_BINARIES {
        let path = format!("/k8s/release/{VERSION}/bin/linux/amd64/{name}");
        let data = fake_binary(name);
        if name == "kubeadm" {
            // Some releases publish only sha512 for a file: that must be accepted too.
            let sum: String = sha2::Sha512::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            state
                .files
                .insert(format!("{path}.sha512"), sum.into_bytes());
        } else {
            state
                .files
                .insert(format!("{path}.sha256"), hex_sha256(&data).into_bytes());
        }
        state.files.insert(path, data);
    }
    let tarball = etcd_tarball();
    let name = format!("etcd-{ETCD}-linux-amd64.tar.gz");
    let sums = format!(
        "{}  etcd-{ETCD}-linux-arm64.tar.gz\n{}  {name}\n",
        "0".repeat(64),
        hex_sha256(&tarball)
    );
    state
        .files
        .insert(format!("/etcd/{ETCD}/SHA256SUMS"), sums.into_bytes());
    state.files.insert(format!("/etcd/{ETCD}/{name}"), tarball);
    state
}

fn fetch(mirror: &Mirror, dest: &Path) -> std::process::Output {
    support::run(Command::new(support::manager_bin()).args([
        "bundle",
        "fetch",
        "--version",
        VERSION,
        "--etcd-version",
        ETCD,
        "--mirror",
        &format!("{}/k8s", mirror.url),
        "--etcd-mirror",
        &format!("{}/etcd", mirror.url),
        "--dest",
        dest.to_str().unwrap(),
    ]))
}

fn verify(dest: &Path) -> String {
    support::run_ok(Command::new(support::manager_bin()).args([
        "bundle",
        "verify",
        dest.to_str().unwrap(),
        "--output",
        "json",
    ]))
}

#[test]
fn fetches_a_verifiable_bundle_and_resumes_a_cut_download() {
    let mut state = good_mirror();
    let kubelet = format!("/k8s/release/{VERSION}/bin/linux/amd64/kubelet");
    state.cut_once.insert(kubelet.clone(), 70_000);
    let mirror = Mirror::start(state);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bundles").join(VERSION);

    let out = fetch(&mirror, &dest);
    assert!(
        out.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dest.to_str().unwrap()
    );

    let report: serde_json::Value = serde_json::from_str(&verify(&dest)).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["executablesChecked"], 10);
    assert_eq!(report["components"]["etcd"], ETCD);

    let requests = mirror.state.lock().unwrap().requests.clone();
    let kubelet_requests: Vec<_> = requests.iter().filter(|(p, _)| *p == kubelet).collect();
    assert_eq!(kubelet_requests.len(), 2, "{kubelet_requests:?}");
    assert_eq!(
        kubelet_requests[1].1.as_deref(),
        Some("bytes=70000-"),
        "the second kubelet request must resume; the fetch said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dest.with_file_name(format!("{VERSION}.partial")).exists(),
        "staging folder left behind"
    );

    // A second fetch over an intact bundle re-downloads everything into staging
    // and replaces the bundle whole; it must still verify.
    let out = fetch(&mirror, &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    verify(&dest);
}

#[test]
fn corrupt_file_fails_clearly_and_leaves_no_bundle() {
    let mut state = good_mirror();
    let proxy = format!("/k8s/release/{VERSION}/bin/linux/amd64/kube-proxy");
    let data = state.files.get_mut(&proxy).unwrap();
    data[100] ^= 0xff;
    let mirror = Mirror::start(state);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(VERSION);

    let out = fetch(&mirror, &dest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("kube-proxy"),
        "{stderr}"
    );
    assert!(!dest.exists(), "a failed fetch must not leave a bundle");
    // The corrupt file was tried from scratch each time, never resumed.
    let requests = mirror.state.lock().unwrap().requests.clone();
    let tries: Vec<_> = requests.iter().filter(|(p, _)| *p == proxy).collect();
    assert_eq!(tries.len(), 3);
    assert!(tries.iter().all(|(_, range)| range.is_none()), "{tries:?}");
}

#[test]
fn missing_checksum_is_refused_then_a_fixed_mirror_resumes() {
    let mut state = good_mirror();
    let kubectl = format!("/k8s/release/{VERSION}/bin/linux/amd64/kubectl");
    let sum = state.files.remove(&format!("{kubectl}.sha256")).unwrap();
    let mirror = Mirror::start(state);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(VERSION);

    let out = fetch(&mirror, &dest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no published checksum") && stderr.contains("kubectl.sha256"),
        "{stderr}"
    );
    assert!(!dest.exists());

    // The files verified before the failure are kept and not downloaded again.
    mirror
        .state
        .lock()
        .unwrap()
        .files
        .insert(format!("{kubectl}.sha256"), sum);
    mirror.state.lock().unwrap().requests.clear();
    let out = fetch(&mirror, &dest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = mirror.state.lock().unwrap().requests.clone();
    let apiserver = format!("/k8s/release/{VERSION}/bin/linux/amd64/kube-apiserver");
    assert!(
        !requests.iter().any(|(p, _)| *p == apiserver),
        "kube-apiserver fetched twice: {requests:?}"
    );
    verify(&dest);
}

#[test]
fn verify_reports_a_tampered_bundle() {
    let mirror = Mirror::start(good_mirror());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(VERSION);
    assert!(fetch(&mirror, &dest).status.success());
    let target = dest.join("bin/kubelet");
    let mut data = Vec::new();
    std::fs::File::open(&target)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    data[50] ^= 1;
    std::fs::write(&target, data).unwrap();
    let out = support::run(Command::new(support::manager_bin()).args([
        "bundle",
        "verify",
        dest.to_str().unwrap(),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("bin/kubelet: sha256") && stdout.contains("NOT usable"),
        "{stdout}"
    );
}

//! `bundle verify`: is this folder a bundle we can run? Every file listed is
//! present with its size and sha256, every link points where it should, and
//! every executable starts and reports the version the manifest promises.
//! All problems are collected, not just the first, so one run tells the user
//! everything that is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::BundleError;
use super::manifest::{FileEntry, Manifest, safe_relative_path};
use crate::exec::{self, FileIdentity};

/// How long an executable may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of a version answer is kept: a version is one line.
const VERSION_OUTPUT_LIMIT: usize = 64 * 1024;
/// How long, after an executable exited, its output may take to arrive: a
/// process it left running may hold its output open for ever.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// Checks run on a few threads, not one per entry: a manifest may list thousands.
const MAX_WORKERS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

#[derive(Debug)]
pub struct VerifyReport {
    pub manifest: Manifest,
    pub files_checked: usize,
    pub executables_checked: usize,
    pub problems: Vec<Problem>,
    /// The files whose digest matched, in the state they were read in.
    pub checked: Checked,
    /// Each executable that passed, by its manifest path (`bin/kubelet`): the identity of
    /// the file it runs, whose digest was checked. The cluster runs only
    /// these (see [`crate::exec`]).
    pub executables: BTreeMap<String, FileIdentity>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a digest check found, for a later check of the same manifest to
/// skip the files that did not change since: their identity includes the
/// change time, which any write moves and no process can set back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// SHA-256 of the manifest the digests came from.
    pub manifest: String,
    /// Each file whose digest matched, by its manifest path.
    pub files: BTreeMap<String, FileIdentity>,
}

/// How thorough a check is: the manager's preflight checks digests on every
/// start only when asked (`Digests`), a `bundle verify` also runs executables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Digests,
    DigestsAndVersions,
}

pub fn verify(bundle_dir: &Path, depth: Depth) -> Result<VerifyReport, BundleError> {
    verify_since(bundle_dir, depth, None)
}

/// [`verify`], taking as still good the files `earlier` found good that did
/// not change since.
pub fn verify_since(
    bundle_dir: &Path,
    depth: Depth,
    earlier: Option<&Checked>,
) -> Result<VerifyReport, BundleError> {
    let manifest = Manifest::load(bundle_dir)?;
    // Every path is checked against the bundle's real location: links on
    // the way to it are followed by the kernel, and where it ended is read
    // back from the open descriptor.
    let root = fs::canonicalize(bundle_dir).map_err(|source| BundleError::Io {
        path: bundle_dir.to_path_buf(),
        source,
    })?;
    let manifest_sha = manifest_digest(&manifest);
    let earlier = earlier.filter(|e| e.manifest == manifest_sha);
    let mut problems = Vec::new();

    let file_results = parallel(&manifest.files, |file| {
        let known = earlier.and_then(|e| e.files.get(&file.path));
        check_file(&root, file, known)
    });
    let mut checked = Checked {
        manifest: manifest_sha,
        files: BTreeMap::new(),
    };
    for (file, result) in manifest.files.iter().zip(file_results) {
        match result {
            Ok(identity) => {
                checked.files.insert(file.path.clone(), identity);
            }
            Err(what) => problems.push(Problem {
                path: file.path.clone(),
                what,
            }),
        }
    }

    for link in &manifest.links {
        if let Err(what) = check_link(&root, &link.path, &link.target) {
            problems.push(Problem {
                path: link.path.clone(),
                what,
            });
        }
    }

    let exe_results = parallel(&manifest.executables, |exe| {
        let (file, identity) = open_executable(&root, &manifest, &checked, &exe.path)?;
        if depth == Depth::DigestsAndVersions {
            check_version(
                &file,
                &identity,
                &bundle_dir.join(&exe.path),
                &exe.args,
                &exe.expect,
            )?;
        }
        Ok::<_, String>(identity)
    });
    let mut executables = BTreeMap::new();
    for (exe, result) in manifest.executables.iter().zip(exe_results) {
        match result {
            Ok(identity) => {
                let path = safe_relative_path(&exe.path)
                    .map_or_else(|_| exe.path.clone(), |p| p.to_string_lossy().into_owned());
                executables.insert(path, identity);
            }
            Err(what) => problems.push(Problem {
                path: exe.path.clone(),
                what,
            }),
        }
    }

    Ok(VerifyReport {
        files_checked: manifest.files.len(),
        executables_checked: match depth {
            Depth::Digests => 0,
            Depth::DigestsAndVersions => manifest.executables.len(),
        },
        problems,
        checked,
        executables,
        manifest,
    })
}

/// The fingerprint of a manifest's content.
fn manifest_digest(manifest: &Manifest) -> String {
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    sha256_hex(&json)
}

/// Runs `check` over `items` on at most [`MAX_WORKERS`] threads; the
/// results come back in the items' order.
fn parallel<T: Sync, R: Send>(items: &[T], check: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
        .min(items.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, check(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Opens a path of the manifest inside the bundle whose real path is
/// `root`, following links on the way (and as its last component unless
/// `no_follow`), and checks where the open file really is: inside the
/// bundle, and a regular file.
fn open_inside(root: &Path, relative: &str, no_follow: bool) -> Result<File, String> {
    let path = root.join(safe_relative_path(relative)?);
    let file = exec::open_read(&path, no_follow).map_err(|err| {
        if err.raw_os_error() == Some(libc::ELOOP) {
            "is a symbolic link (or a loop of them), where the manifest lists a file".to_string()
        } else if err.kind() == std::io::ErrorKind::NotFound {
            "missing".to_string()
        } else {
            format!("cannot be opened ({err})")
        }
    })?;
    let real = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|err| format!("cannot tell where it is ({err})"))?;
    if !real.starts_with(root) {
        return Err(format!(
            "leads out of the bundle, to {}: a bundle's files are inside its folder",
            real.display()
        ));
    }
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot be read ({err})"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    Ok(file)
}

/// Checks a file of the manifest and returns its identity as it was read.
fn check_file(
    root: &Path,
    entry: &FileEntry,
    earlier: Option<&FileIdentity>,
) -> Result<FileIdentity, String> {
    let mut file = open_inside(root, &entry.path, true)?;
    let identity = FileIdentity::of(&file).map_err(|err| format!("cannot be read ({err})"))?;
    if identity.size != entry.size {
        return Err(format!(
            "size {} bytes, the manifest says {}",
            identity.size, entry.size
        ));
    }
    let mode = file
        .metadata()
        .map_err(|err| format!("cannot be read ({err})"))?
        .permissions()
        .mode();
    if entry.executable && mode & 0o111 == 0 {
        return Err("not executable".into());
    }
    if earlier == Some(&identity) {
        return Ok(identity);
    }
    let actual = digest_open(&mut file, &aws_lc_rs::digest::SHA256)
        .map_err(|err| format!("cannot be read ({err})"))?;
    exec::ensure_unchanged(&file, &identity)
        .map_err(|_| "changed while its digest was taken".to_string())?;
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(format!(
            "sha256 {actual}, the manifest says {}: the file is corrupt or was replaced",
            entry.sha256
        ));
    }
    Ok(identity)
}

fn check_link(root: &Path, path: &str, target: &str) -> Result<(), String> {
    let relative = safe_relative_path(path)?;
    // The folder the link is in must be the bundle's own, not a link out.
    if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
        let real =
            fs::canonicalize(root.join(parent)).map_err(|err| format!("missing link ({err})"))?;
        if !real.starts_with(root) {
            return Err(format!(
                "leads out of the bundle, to {}: a bundle's files are inside its folder",
                real.display()
            ));
        }
    }
    match fs::read_link(root.join(&relative)) {
        Ok(actual) if actual == Path::new(target) => Ok(()),
        Ok(actual) => Err(format!(
            "links to {}, the manifest says {target}",
            actual.display()
        )),
        Err(err) => Err(format!("missing link ({err})")),
    }
}

/// Opens an executable of the manifest for running: it must be, on disk,
/// the very file the manifest says it ends at (itself or a link's target),
/// in the state whose digest was just checked.
fn open_executable(
    root: &Path,
    manifest: &Manifest,
    checked: &Checked,
    path: &str,
) -> Result<(File, FileIdentity), String> {
    let entry = manifest
        .file_at(path)
        .map_err(|reason| format!("not run: {reason}"))?;
    let Some(expected) = checked.files.get(&entry.path) else {
        return Err(format!("not run: {} did not pass its check", entry.path));
    };
    let file = open_inside(root, path, false).map_err(|what| format!("not run: {what}"))?;
    let identity = FileIdentity::of(&file).map_err(|err| format!("cannot be read ({err})"))?;
    if identity.dev != expected.dev || identity.ino != expected.ino {
        return Err(format!(
            "not run: it is not {}, the file whose digest the manifest gives for it",
            entry.path
        ));
    }
    if identity != *expected {
        return Err(format!(
            "not run: {} changed since its digest was checked",
            entry.path
        ));
    }
    Ok((file, identity))
}

/// SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    digest_file(path, &aws_lc_rs::digest::SHA256)
}

/// A digest of a file, in hex, read a MiB at a time, with aws-lc's
/// SHA-extension code: the bundle's 330 MB are hashed on every cold start.
pub fn digest_file(
    path: &Path,
    algorithm: &'static aws_lc_rs::digest::Algorithm,
) -> std::io::Result<String> {
    digest_open(&mut File::open(path)?, algorithm)
}

fn digest_open(
    file: &mut File,
    algorithm: &'static aws_lc_rs::digest::Algorithm,
) -> std::io::Result<String> {
    let mut context = aws_lc_rs::digest::Context::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        context.update(&buf[..n]);
    }
    Ok(hex(context.finish().as_ref()))
}

/// SHA-256 of bytes, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the open, checked executable `file` (shown to it as `argv0`) with
/// `args`, and checks that its answer contains `expect`. Bounded: the run in
/// [`VERSION_TIMEOUT`], the answer kept to [`VERSION_OUTPUT_LIMIT`], and
/// the wait for the answer once it exited to [`OUTPUT_GRACE`].
fn check_version(
    file: &File,
    identity: &FileIdentity,
    argv0: &Path,
    args: &[String],
    expect: &str,
) -> Result<(), String> {
    // The last look before the run: still the inode, and the content, hashed.
    exec::ensure_unchanged(file, identity).map_err(|err| format!("not run: {err}"))?;
    let mut child = exec::command(file, argv0)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run ({err})"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let (ended, streams_ended) = mpsc::channel();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for mut stream in streams.into_iter().flatten() {
        let output = output.clone();
        let ended = ended.clone();
        // Not joined: a process the executable left behind may hold the
        // stream open; the thread ends when it closes.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
                let room = VERSION_OUTPUT_LIMIT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = ended.send(());
        });
    }
    drop(ended);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for it ({err})"));
            }
        }
        if start.elapsed() > VERSION_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{}` did not answer within {VERSION_TIMEOUT:?}",
                args.join(" ")
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let deadline = Instant::now() + OUTPUT_GRACE;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if streams_ended.recv_timeout(left).is_err() {
            break;
        }
    }
    let out = String::from_utf8_lossy(&output.lock().unwrap_or_else(PoisonError::into_inner))
        .into_owned();
    if !status.success() {
        return Err(format!(
            "`{}` failed ({status}): {}",
            args.join(" "),
            out.trim()
        ));
    }
    if !out.contains(expect) {
        return Err(format!(
            "`{}` printed {:?}, expected it to contain {expect:?}",
            args.join(" "),
            out.trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::manifest::{CLUSTER_EXECUTABLES, cluster_executable};
    use std::os::unix::fs::symlink;

    const KUBE: &[u8] = b"#!/bin/sh\necho \"Kubernetes v1.34.4\"\n";

    fn write_script(path: &Path, script: &[u8]) {
        fs::write(path, script).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn write_manifest(dir: &Path, script: &[u8], extra_executables: &[&str]) {
        let sha = hex(&<sha2::Sha256 as sha2::Digest>::digest(script));
        let mut executables: Vec<serde_json::Value> = CLUSTER_EXECUTABLES
            .iter()
            .map(|n| serde_json::json!({"path": cluster_executable(n), "args": ["--version"], "expect": "Kubernetes v1.34.4"}))
            .collect();
        for path in extra_executables {
            executables.push(serde_json::json!({"path": path, "args": [], "expect": ""}));
        }
        let links: Vec<serde_json::Value> = CLUSTER_EXECUTABLES
            .iter()
            .map(|n| serde_json::json!({"path": cluster_executable(n), "target": "kube"}))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 1,
            "kubernetes": "v1.34.4",
            "components": {"kubernetes": "v1.34.4"},
            "executables": executables,
            "images": [],
            "files": [{"path": "bin/kube", "sha256": sha, "size": script.len(), "executable": true}],
            "links": links,
        });
        fs::write(
            dir.join("bundle.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    /// The builder's layout in small: one multi-call script, a link per component.
    fn make_bin(bin: &Path, script: &[u8]) {
        fs::create_dir_all(bin).unwrap();
        write_script(&bin.join("kube"), script);
        for name in CLUSTER_EXECUTABLES {
            symlink("kube", bin.join(name)).unwrap();
        }
    }

    fn make_bundle(dir: &Path) {
        make_bin(&dir.join("bin"), KUBE);
        write_manifest(dir, KUBE, &[]);
    }

    /// A script that leaves a mark when it runs, and answers like kube.
    fn marking_script(marker: &Path) -> Vec<u8> {
        format!(
            "#!/bin/sh\ntouch {}\necho \"Kubernetes v1.34.4\"\n",
            marker.display()
        )
        .into_bytes()
    }

    fn texts(report: &VerifyReport) -> Vec<String> {
        report.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn intact_bundle_verifies() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!((report.files_checked, report.executables_checked), (1, 6));
        // Every executable runs the one file whose digest was checked.
        let kube = report.checked.files["bin/kube"];
        assert_eq!(report.executables.len(), 6);
        assert!(report.executables.values().all(|id| *id == kube));
        assert!(report.executables.contains_key("bin/kube-apiserver"));
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        // Same size, other content: only the digest can tell.
        fs::write(
            dir.path().join("bin/kube"),
            b"#!/bin/sh\necho \"Kubernetes v1.34.5\"\n",
        )
        .unwrap();
        fs::remove_file(dir.path().join("bin/kubelet")).unwrap();
        symlink("elsewhere", dir.path().join("bin/kubelet")).unwrap();
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        let text = texts(&report);
        assert!(text[0].starts_with("bin/kube: sha256"), "{text:?}");
        assert!(text[1].contains("links to elsewhere"), "{text:?}");
        // No executable runs: the file they all are failed its check.
        assert_eq!(text.len(), 2 + 6, "{text:?}");
        assert!(
            text[2..]
                .iter()
                .all(|t| t.contains("not run: bin/kube did not pass its check")),
            "{text:?}"
        );
    }

    #[test]
    fn wrong_version_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        let mut m: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("bundle.json")).unwrap()).unwrap();
        m["executables"][0]["expect"] = "Kubernetes v1.35.0".into();
        fs::write(
            dir.path().join("bundle.json"),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        assert_eq!(report.problems.len(), 1);
        assert!(
            report.problems[0]
                .what
                .contains("expected it to contain \"Kubernetes v1.35.0\"")
        );
    }

    #[test]
    fn missing_manifest_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(dir.path(), Depth::Digests).unwrap_err();
        assert!(err.to_string().contains("bundle.json"), "{err}");
    }

    #[test]
    fn a_bin_folder_linked_out_of_the_bundle_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let (bundle, outside) = (dir.path().join("bundle"), dir.path().join("outside"));
        let marker = dir.path().join("ran");
        let script = marking_script(&marker);
        // The files outside match the manifest's digests exactly.
        make_bin(&outside, &script);
        fs::create_dir(&bundle).unwrap();
        symlink(&outside, bundle.join("bin")).unwrap();
        write_manifest(&bundle, &script, &[]);
        let report = verify(&bundle, Depth::DigestsAndVersions).unwrap();
        let text = texts(&report);
        assert!(
            text[0].starts_with("bin/kube: leads out of the bundle"),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("bin/kubelet: leads out")),
            "{text:?}"
        );
        assert!(report.executables.is_empty());
        assert!(!marker.exists(), "an executable outside the bundle ran");
    }

    #[test]
    fn a_link_swapped_to_a_file_outside_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        make_bundle(&bundle);
        let marker = dir.path().join("ran");
        let evil = dir.path().join("evil");
        write_script(&evil, &marking_script(&marker));
        fs::remove_file(bundle.join("bin/kubelet")).unwrap();
        symlink(&evil, bundle.join("bin/kubelet")).unwrap();
        let report = verify(&bundle, Depth::DigestsAndVersions).unwrap();
        let text = texts(&report);
        assert!(
            text.iter().any(|t| t.starts_with("bin/kubelet: links to")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("bin/kubelet: not run: leads out of the bundle")),
            "{text:?}"
        );
        assert!(!marker.exists(), "the swapped link ran");
        // The others still run, and only they are handed to the cluster.
        assert_eq!(report.executables.len(), 5);
    }

    #[test]
    fn an_executable_that_is_another_file_than_its_digest_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        let marker = dir.path().join("ran");
        // bin/kubelet is its own file, not the link to the checked bin/kube.
        fs::remove_file(dir.path().join("bin/kubelet")).unwrap();
        write_script(&dir.path().join("bin/kubelet"), &marking_script(&marker));
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        let text = texts(&report);
        assert!(
            text.iter()
                .any(|t| t.contains("bin/kubelet: not run: it is not bin/kube")),
            "{text:?}"
        );
        assert!(!marker.exists());
    }

    #[test]
    fn a_file_changed_after_its_digest_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        let root = fs::canonicalize(dir.path()).unwrap();
        let manifest = Manifest::load(dir.path()).unwrap();
        let report = verify(dir.path(), Depth::Digests).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // Written in place: same inode, same size.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("bin/kube"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"#!/bin/sh\necho \"Kubernetes v6.66.6\"\n").unwrap();
        let err = open_executable(&root, &manifest, &report.checked, "bin/kubelet").unwrap_err();
        assert!(
            err.contains("bin/kube changed since its digest was checked"),
            "{err}"
        );
    }

    #[test]
    fn an_earlier_check_spares_only_unchanged_files() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        let first = verify(dir.path(), Depth::Digests).unwrap();
        assert!(first.is_ok());
        let again = verify_since(dir.path(), Depth::Digests, Some(&first.checked)).unwrap();
        assert!(again.is_ok());
        assert_eq!(again.checked, first.checked);
        std::thread::sleep(Duration::from_millis(20));
        fs::write(
            dir.path().join("bin/kube"),
            b"#!/bin/sh\necho \"Kubernetes v1.34.5\"\n",
        )
        .unwrap();
        let after = verify_since(dir.path(), Depth::Digests, Some(&first.checked)).unwrap();
        assert!(
            texts(&after)[0].starts_with("bin/kube: sha256"),
            "{:?}",
            after.problems
        );
    }

    #[test]
    fn a_version_probe_is_not_held_by_what_it_leaves_running() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // Answers, exits, and leaves a process holding its output open.
        let script = format!(
            "#!/bin/sh\necho \"Kubernetes v1.34.4\"\nsleep 60 &\necho $! >> {}\n",
            pid_file.display()
        );
        make_bin(&dir.path().join("bin"), script.as_bytes());
        write_manifest(dir.path(), script.as_bytes(), &[]);
        let start = Instant::now();
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        let took = start.elapsed();
        // End the sleeps this test started.
        for entry in fs::read_to_string(&pid_file).unwrap_or_default().lines() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", entry.trim()])
                .status();
        }
        assert!(report.is_ok(), "{:?}", report.problems);
        assert!(took < Duration::from_secs(15), "took {took:?}");
    }

    #[test]
    fn checks_run_on_a_few_threads_in_order() {
        let active = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<usize> = (0..200).collect();
        let out = parallel(&items, |i| {
            use std::sync::atomic::Ordering::SeqCst;
            let now = active.fetch_add(1, SeqCst) + 1;
            most.fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            active.fetch_sub(1, SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(most.into_inner() <= MAX_WORKERS);
        assert!(parallel(&[] as &[u8], |_| ()).is_empty());
    }
}

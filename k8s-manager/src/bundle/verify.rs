//! `bundle verify`: is this folder a bundle we can run? Every file listed is
//! present with its size and sha256, every link points where it should, and
//! every executable starts and reports the version the manifest promises.
//! All problems are collected, not just the first, so one run tells the user
//! everything that is wrong.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::BundleError;
use super::manifest::Manifest;

/// How long an executable may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

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
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How thorough a check is: the manager's preflight checks digests on every
/// start only when asked (`Digests`), a `bundle verify` also runs executables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Digests,
    DigestsAndVersions,
}

pub fn verify(bundle_dir: &Path, depth: Depth) -> Result<VerifyReport, BundleError> {
    let manifest = Manifest::load(bundle_dir)?;
    let mut problems = Vec::new();

    let file_problems: Vec<Option<Problem>> = std::thread::scope(|scope| {
        let handles: Vec<_> = manifest
            .files
            .iter()
            .map(|file| {
                scope.spawn(move || {
                    let path =
                        Manifest::resolve(bundle_dir, &file.path).expect("validated on load");
                    check_file(&path, &file.sha256, file.size, file.executable)
                        .err()
                        .map(|what| Problem {
                            path: file.path.clone(),
                            what,
                        })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("checker thread"))
            .collect()
    });
    problems.extend(file_problems.into_iter().flatten());

    for link in &manifest.links {
        let path = Manifest::resolve(bundle_dir, &link.path).expect("validated on load");
        match fs::read_link(&path) {
            Ok(target) if target == Path::new(&link.target) => {}
            Ok(target) => problems.push(Problem {
                path: link.path.clone(),
                what: format!(
                    "links to {}, the manifest says {}",
                    target.display(),
                    link.target
                ),
            }),
            Err(err) => problems.push(Problem {
                path: link.path.clone(),
                what: format!("missing link ({err})"),
            }),
        }
    }
    for image in &manifest.images {
        let listed = manifest.files.iter().any(|f| f.path == image.path);
        if !listed {
            problems.push(Problem {
                path: image.path.clone(),
                what: "image archive is not among the manifest's files".into(),
            });
        }
    }

    let mut executables_checked = 0;
    if depth == Depth::DigestsAndVersions {
        let version_problems: Vec<Option<Problem>> = std::thread::scope(|scope| {
            let handles: Vec<_> = manifest
                .executables
                .iter()
                .map(|exe| {
                    scope.spawn(move || {
                        let path =
                            Manifest::resolve(bundle_dir, &exe.path).expect("validated on load");
                        check_version(&path, &exe.args, &exe.expect)
                            .err()
                            .map(|what| Problem {
                                path: exe.path.clone(),
                                what,
                            })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("checker thread"))
                .collect()
        });
        executables_checked = manifest.executables.len();
        problems.extend(version_problems.into_iter().flatten());
    }

    Ok(VerifyReport {
        files_checked: manifest.files.len(),
        executables_checked,
        problems,
        manifest,
    })
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
    let mut file = fs::File::open(path)?;
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

fn check_file(path: &Path, sha256: &str, size: u64, executable: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path).map_err(|err| format!("missing ({err})"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() != size {
        return Err(format!(
            "size {} bytes, the manifest says {size}",
            meta.len()
        ));
    }
    if executable && meta.permissions().mode() & 0o111 == 0 {
        return Err("not executable".into());
    }
    let actual = sha256_file(path).map_err(|err| format!("cannot read ({err})"))?;
    if actual != sha256 {
        return Err(format!(
            "sha256 {actual}, the manifest says {sha256}: the file is corrupt or was replaced"
        ));
    }
    Ok(())
}

fn check_version(path: &PathBuf, args: &[String], expect: &str) -> Result<(), String> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run ({err})"))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            break status;
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
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut out);
    }
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
    use std::os::unix::fs::PermissionsExt;

    /// A bundle with one executable shell script and a link to it.
    fn make_bundle(dir: &Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        let script = b"#!/bin/sh\necho \"Kubernetes v1.34.4\"\n";
        fs::write(dir.join("bin/kube"), script).unwrap();
        fs::set_permissions(dir.join("bin/kube"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("kube", dir.join("bin/kubelet")).unwrap();
        let sha = hex(&<sha2::Sha256 as sha2::Digest>::digest(script));
        let manifest = serde_json::json!({
            "schemaVersion": 1,
            "kubernetes": "v1.34.4",
            "components": {"kubernetes": "v1.34.4"},
            "executables": [{"path": "bin/kubelet", "args": ["--version"], "expect": "Kubernetes v1.34.4"}],
            "images": [],
            "files": [{"path": "bin/kube", "sha256": sha, "size": script.len(), "executable": true}],
            "links": [{"path": "bin/kubelet", "target": "kube"}]
        });
        fs::write(
            dir.join("bundle.json"),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn intact_bundle_verifies() {
        let dir = tempfile::tempdir().unwrap();
        make_bundle(dir.path());
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!((report.files_checked, report.executables_checked), (1, 1));
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
        std::os::unix::fs::symlink("elsewhere", dir.path().join("bin/kubelet")).unwrap();
        let report = verify(dir.path(), Depth::DigestsAndVersions).unwrap();
        let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(report.problems.len(), 3, "{text:?}");
        assert!(text[0].starts_with("bin/kube: sha256"), "{text:?}");
        assert!(text[1].contains("links to elsewhere"), "{text:?}");
        assert!(text[2].contains("cannot run"), "{text:?}");
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
}

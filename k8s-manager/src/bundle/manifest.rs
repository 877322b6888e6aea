//! `bundle.json`: what a bundle holds, written by the builder (`vm/bundle`)
//! and by [`super::fetch`], read by everything that runs the bundle.
//!
//! Paths in a manifest come from a file on disk and are never trusted: each is
//! checked to be relative and to stay inside the bundle folder before use.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BundleError;

pub const MANIFEST_FILE: &str = "bundle.json";
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    /// The Kubernetes version of the bundle, e.g. `v1.34.4`.
    pub kubernetes: String,
    /// Version of each part: kubernetes, etcd, coredns, pause.
    pub components: BTreeMap<String, String>,
    /// How to ask each executable for its version, and what it must answer.
    pub executables: Vec<Executable>,
    /// Image archives (OCI layout tars) and the reference each carries.
    #[serde(default)]
    pub images: Vec<Image>,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub links: Vec<LinkEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executable {
    pub path: String,
    pub args: Vec<String>,
    /// A substring the version output must contain.
    pub expect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub path: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

/// A manifest describes a dozen files: anything past this size is not one.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What the cluster runs from a bundle, under `bin/`: each must be among the
/// manifest's executables, with a digest (see `components`, whose processes
/// these are).
pub const CLUSTER_EXECUTABLES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// How many links a path may go through in a manifest before it must name a file.
const MAX_LINK_HOPS: usize = 8;

/// The manifest path of one of [`CLUSTER_EXECUTABLES`].
pub fn cluster_executable(name: &str) -> String {
    format!("bin/{name}")
}

impl Manifest {
    /// Reads and checks `bundle.json`: a regular file of at most
    /// [`MAX_MANIFEST_BYTES`], that describes a bundle the cluster can run.
    pub fn load(bundle_dir: &Path) -> Result<Manifest, BundleError> {
        let path = bundle_dir.join(MANIFEST_FILE);
        let bad = |reason: String| BundleError::BadManifest {
            path: path.clone(),
            reason,
        };
        let raw = crate::fsutil::read_bounded(&path, MAX_MANIFEST_BYTES).map_err(|err| {
            bad(match err.is_not_found() {
                true => "there is none: this folder is not a bundle".to_string(),
                false => err.to_string(),
            })
        })?;
        let manifest: Manifest = serde_json::from_slice(&raw)
            .map_err(|err| bad(format!("it {}", crate::input::json_problem(&err))))?;
        manifest.validate().map_err(bad)?;
        Ok(manifest)
    }

    /// Checks what can be checked without touching the files: schema version,
    /// that every path is a safe relative path inside the bundle, that every
    /// executable and link ends at a file with a digest, and that the
    /// executables the cluster runs are there. Every problem is told.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schemaVersion {} is not supported (this manager reads {SCHEMA_VERSION})",
                self.schema_version
            ));
        }
        let mut problems = Vec::new();
        if validate_version(&self.kubernetes).is_err() {
            problems.push(format!(
                "kubernetes {:?} is not a release version like v1.34.4",
                self.kubernetes
            ));
        }
        let paths = self
            .files
            .iter()
            .map(|f| &f.path)
            .chain(self.links.iter().map(|l| &l.path))
            .chain(self.executables.iter().map(|e| &e.path))
            .chain(self.images.iter().map(|i| &i.path));
        for path in paths {
            if let Err(reason) = safe_relative_path(path) {
                problems.push(reason);
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for path in self
            .files
            .iter()
            .map(|f| &f.path)
            .chain(self.links.iter().map(|l| &l.path))
        {
            if let Ok(normal) = safe_relative_path(path)
                && !seen.insert(normal)
            {
                problems.push(format!("{path}: listed twice"));
            }
        }
        for file in &self.files {
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!(
                    "{}: sha256 {:?} is not 64 hex digits",
                    file.path, file.sha256
                ));
            }
        }
        for link in &self.links {
            if let Err(reason) = self
                .link_target(link)
                .and_then(|target| self.file_from(target))
            {
                problems.push(format!("link {} -> {}: {reason}", link.path, link.target));
            }
        }
        for exe in &self.executables {
            match self.file_at(&exe.path) {
                Ok(file) if file.executable => {}
                Ok(file) => problems.push(format!(
                    "{}: listed as an executable, but its file {} is not marked executable",
                    exe.path, file.path
                )),
                Err(reason) => problems.push(format!(
                    "{}: listed as an executable, but {reason}: it would run unchecked",
                    exe.path
                )),
            }
        }
        for image in &self.images {
            if self.file_at(&image.path).is_err() {
                problems.push(format!(
                    "{}: image archive is not among the manifest's files",
                    image.path
                ));
            }
        }
        let missing: Vec<String> = CLUSTER_EXECUTABLES
            .iter()
            .map(|name| cluster_executable(name))
            .filter(|path| !self.executables.iter().any(|e| same_path(&e.path, path)))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "it lacks what the cluster runs: no executable {}",
                missing.join(", ")
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The file entry a path of the manifest ends at: the path itself, or
    /// the file a listed link (or a short chain of them) points to.
    pub fn file_at(&self, path: &str) -> Result<&FileEntry, String> {
        self.file_from(safe_relative_path(path)?)
    }

    fn file_from(&self, mut current: PathBuf) -> Result<&FileEntry, String> {
        let start = current.clone();
        for _ in 0..=MAX_LINK_HOPS {
            if let Some(file) = self
                .files
                .iter()
                .find(|f| safe_relative_path(&f.path).is_ok_and(|p| p == current))
            {
                return Ok(file);
            }
            let Some(link) = self
                .links
                .iter()
                .find(|l| safe_relative_path(&l.path).is_ok_and(|p| p == current))
            else {
                return Err(format!(
                    "{} has no digest among the manifest's files",
                    current.display()
                ));
            };
            current = self.link_target(link)?;
        }
        Err(format!(
            "{}: more than {MAX_LINK_HOPS} links in a row",
            start.display()
        ))
    }

    /// Where a listed link points, as a path of the bundle.
    fn link_target(&self, link: &LinkEntry) -> Result<PathBuf, String> {
        let parent = Path::new(&link.path).parent().unwrap_or(Path::new(""));
        safe_relative_path(&parent.join(&link.target).to_string_lossy())
    }

    /// The path of a file of the bundle, for a path already validated.
    pub fn resolve(bundle_dir: &Path, relative: &str) -> Result<PathBuf, String> {
        Ok(bundle_dir.join(safe_relative_path(relative)?))
    }

    /// The version of one component, e.g. `etcd`.
    pub fn component(&self, name: &str) -> Option<&str> {
        self.components.get(name).map(String::as_str)
    }

    /// The image archive carrying `reference`'s repository (tag ignored), e.g.
    /// `registry.k8s.io/pause`.
    pub fn image(&self, repository: &str) -> Option<&Image> {
        self.images
            .iter()
            .find(|i| i.reference.rsplit_once(':').map(|(repo, _)| repo) == Some(repository))
    }
}

fn same_path(a: &str, b: &str) -> bool {
    matches!((safe_relative_path(a), safe_relative_path(b)), (Ok(a), Ok(b)) if a == b)
}

/// Accepts `bin/kubelet`; rejects empty paths, absolute paths and any `..`,
/// so that a manifest can never point outside its folder.
pub fn safe_relative_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for component in p.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("{path}: '..' is not allowed in a bundle path"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{path}: absolute paths are not allowed in a bundle"
                ));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("{path}: names no file"));
    }
    Ok(out)
}

/// Whether `version` is one a bundle may name: `v` and three numbers
/// (`v1.34.4`); it becomes a folder name, so nothing else gets through.
pub fn validate_version(version: &str) -> Result<(), BundleError> {
    let ok = version.strip_prefix('v').is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    if ok {
        Ok(())
    } else {
        Err(BundleError::BadVersion(version.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked() {
        validate_version("v1.34.4").unwrap();
        for bad in ["1.34.4", "v1.34", "v1.34.x", "v1.34.4/../../x", ""] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
    }

    /// The builder's layout: one multi-call binary, a link per component.
    fn manifest() -> Manifest {
        let mut m: Manifest = serde_json::from_str(
            r#"{
              "schemaVersion": 1,
              "kubernetes": "v1.34.4",
              "components": {"kubernetes": "v1.34.4", "etcd": "v3.6.16"},
              "executables": [{"path": "bin/etcd", "args": ["--version"], "expect": "etcd Version: 3.6.16"}],
              "images": [{"path": "images/pause.tar", "ref": "registry.k8s.io/pause:3.10.1"}],
              "files": [
                {"path": "bin/kube", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "size": 1, "executable": true},
                {"path": "bin/etcd", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "size": 1, "executable": true},
                {"path": "images/pause.tar", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "size": 1, "executable": false}
              ],
              "links": []
            }"#,
        )
        .unwrap();
        for name in &CLUSTER_EXECUTABLES[1..] {
            m.links.push(LinkEntry {
                path: cluster_executable(name),
                target: "kube".into(),
            });
            m.executables.push(Executable {
                path: cluster_executable(name),
                args: vec!["--version".into()],
                expect: "Kubernetes v1.34.4".into(),
            });
        }
        m
    }

    #[test]
    fn reads_the_builders_format() {
        let m = manifest();
        m.validate().unwrap();
        assert_eq!(m.component("etcd"), Some("v3.6.16"));
        assert_eq!(
            m.image("registry.k8s.io/pause").unwrap().path,
            "images/pause.tar"
        );
        assert!(m.image("registry.k8s.io/coredns/coredns").is_none());
        assert_eq!(m.file_at("bin/kubelet").unwrap().path, "bin/kube");
        assert_eq!(m.file_at("./bin/etcd").unwrap().path, "bin/etcd");
    }

    #[test]
    fn rejects_paths_outside_the_bundle() {
        for bad in ["../etc/passwd", "/usr/bin/kubelet", "bin/../../x", "", "."] {
            let mut m = manifest();
            m.files[2].path = bad.into();
            assert!(m.validate().is_err(), "{bad:?} accepted");
        }
        let mut m = manifest();
        m.links[0].target = "../../usr/bin/sh".into();
        assert!(
            m.validate()
                .unwrap_err()
                .contains("link bin/kube-apiserver")
        );
        let mut m = manifest();
        m.links[0].target = "/usr/bin/sh".into();
        assert!(m.validate().is_err());
    }

    #[test]
    fn rejects_unknown_schema_and_bad_digest() {
        let mut m = manifest();
        m.schema_version = 2;
        assert!(m.validate().unwrap_err().contains("schemaVersion 2"));
        let mut m = manifest();
        m.files[0].sha256 = "abc".into();
        assert!(m.validate().unwrap_err().contains("64 hex digits"));
    }

    #[test]
    fn an_executable_without_a_digest_is_refused() {
        let mut m = manifest();
        m.executables.push(Executable {
            path: "bin/helper".into(),
            args: vec![],
            expect: String::new(),
        });
        let err = m.validate().unwrap_err();
        assert!(
            err.contains("bin/helper: listed as an executable, but bin/helper has no digest"),
            "{err}"
        );
        // A link that ends nowhere listed is no better.
        let mut m = manifest();
        m.links[0].target = "kube2".into();
        let err = m.validate().unwrap_err();
        assert!(err.contains("bin/kube2 has no digest"), "{err}");
        assert!(
            err.contains("bin/kube-apiserver: listed as an executable"),
            "{err}"
        );
        // Nor a file not marked executable.
        let mut m = manifest();
        m.files[0].executable = false;
        assert!(m.validate().unwrap_err().contains("not marked executable"));
    }

    #[test]
    fn links_in_a_loop_end() {
        let mut m = manifest();
        m.links.push(LinkEntry {
            path: "bin/a".into(),
            target: "b".into(),
        });
        m.links.push(LinkEntry {
            path: "bin/b".into(),
            target: "a".into(),
        });
        let err = m.validate().unwrap_err();
        assert!(err.contains("links in a row"), "{err}");
    }

    #[test]
    fn a_manifest_must_describe_a_cluster() {
        let mut m = manifest();
        m.files.clear();
        m.links.clear();
        m.executables.clear();
        m.images.clear();
        let err = m.validate().unwrap_err();
        assert!(
            err.contains(
                "it lacks what the cluster runs: no executable bin/etcd, bin/kube-apiserver"
            ),
            "{err}"
        );
        let mut m = manifest();
        m.executables.retain(|e| e.path != "bin/kubelet");
        let err = m.validate().unwrap_err();
        assert!(err.ends_with("no executable bin/kubelet"), "{err}");
        let mut m = manifest();
        m.kubernetes = String::new();
        assert!(m.validate().unwrap_err().contains("not a release version"));
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let mut m = manifest();
        m.links.push(LinkEntry {
            path: "./bin/etcd".into(),
            target: "kube".into(),
        });
        assert!(
            m.validate()
                .unwrap_err()
                .contains("./bin/etcd: listed twice")
        );
    }

    #[test]
    fn a_manifest_that_is_not_one_is_said_so_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let load = |content: &[u8]| {
            std::fs::write(dir.path().join(MANIFEST_FILE), content).unwrap();
            Manifest::load(dir.path()).unwrap_err().to_string()
        };
        let err = load(b"");
        assert!(err.contains("it is cut short"), "{err}");
        assert!(err.contains("vm/bundle/build.sh"), "{err}");
        let err = load(b"\x00\x01");
        assert!(
            err.contains("it is not valid JSON (at line 1, column 1)"),
            "{err}"
        );
        let err = load(br#"{"schemaVersion": 1}"#);
        assert!(err.contains("missing field `kubernetes`"), "{err}");
        let err = load(br#"{"schemaVersion": 1, "kubernetes": "v1.34.4", "components": {}, "executables": [], "files": []}"#);
        assert!(err.contains("lacks what the cluster runs"), "{err}");
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("this folder is not a bundle"), "{err}");
    }

    #[test]
    fn an_oversized_manifest_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join(MANIFEST_FILE)).unwrap();
        file.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("larger than the 1048576 bytes"), "{err}");
    }

    #[test]
    fn safe_paths_are_normalised() {
        assert_eq!(
            safe_relative_path("./bin/kube").unwrap(),
            PathBuf::from("bin/kube")
        );
    }
}

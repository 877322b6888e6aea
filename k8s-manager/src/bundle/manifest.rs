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

impl Manifest {
    pub fn load(bundle_dir: &Path) -> Result<Manifest, BundleError> {
        let path = bundle_dir.join(MANIFEST_FILE);
        let raw = std::fs::read(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&raw).map_err(|err| BundleError::BadManifest {
                path: path.clone(),
                reason: err.to_string(),
            })?;
        manifest
            .validate()
            .map_err(|reason| BundleError::BadManifest { path, reason })?;
        Ok(manifest)
    }

    /// Checks what can be checked without touching the files: schema version,
    /// and that every path is a safe relative path inside the bundle.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schemaVersion {} is not supported (this manager reads {SCHEMA_VERSION})",
                self.schema_version
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
            safe_relative_path(path)?;
        }
        for link in &self.links {
            let parent = Path::new(&link.path).parent().unwrap_or(Path::new(""));
            safe_relative_path(&parent.join(&link.target).to_string_lossy())
                .map_err(|reason| format!("link {} -> {}: {reason}", link.path, link.target))?;
        }
        for file in &self.files {
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{}: sha256 {:?} is not 64 hex digits",
                    file.path, file.sha256
                ));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_str(
            r#"{
              "schemaVersion": 1,
              "kubernetes": "v1.34.4",
              "components": {"kubernetes": "v1.34.4", "etcd": "v3.6.16"},
              "executables": [{"path": "bin/kubelet", "args": ["--version"], "expect": "Kubernetes v1.34.4"}],
              "images": [{"path": "images/pause.tar", "ref": "registry.k8s.io/pause:3.10.1"}],
              "files": [{"path": "bin/kube", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "size": 1, "executable": true}],
              "links": [{"path": "bin/kubelet", "target": "kube"}]
            }"#,
        )
        .unwrap()
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
    }

    #[test]
    fn rejects_paths_outside_the_bundle() {
        for bad in ["../etc/passwd", "/usr/bin/kubelet", "bin/../../x", "", "."] {
            let mut m = manifest();
            m.files[0].path = bad.into();
            assert!(m.validate().is_err(), "{bad:?} accepted");
        }
        let mut m = manifest();
        m.links[0].target = "../../usr/bin/sh".into();
        assert!(m.validate().unwrap_err().contains("link bin/kubelet"));
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
    fn safe_paths_are_normalised() {
        assert_eq!(
            safe_relative_path("./bin/kube").unwrap(),
            PathBuf::from("bin/kube")
        );
    }
}

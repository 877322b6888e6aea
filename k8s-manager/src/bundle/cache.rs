//! The bundle cache: `<cache>/bundles/<version>/`, one folder per Kubernetes
//! version, each with its `bundle.json`. Which bundle a cluster runs is
//! chosen here, from the version and folder the settings name.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why no bundle was found: about the version asked for, or about the
/// folder named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// Whether the folder named is at fault (else the version asked for).
    pub about_folder: bool,
    pub message: String,
}

impl LookupError {
    fn version(message: impl Into<String>) -> LookupError {
        LookupError {
            about_folder: false,
            message: message.into(),
        }
    }

    fn bundle(message: impl Into<String>) -> LookupError {
        LookupError {
            about_folder: true,
            message: message.into(),
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A Kubernetes version, `v1.34.4` (the `v` optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        let bad = || format!("{text:?} is not a Kubernetes version like v1.34.4");
        let digits = text.strip_prefix('v').unwrap_or(text);
        let parts: Vec<u32> = digits
            .split('.')
            .map(|p| {
                (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [major, minor, patch] => Ok(Version {
                major,
                minor,
                patch,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The bundle folder chosen, and its Kubernetes version: `bundle` when
/// given (its version must be `version` when that is given too), else the
/// cache's bundle of `version`, else the newest in the cache. A missing bundle is an error that says
/// how to get one.
pub fn resolve(
    version: Option<&str>,
    bundle: Option<&Path>,
    cache: &Path,
) -> Result<(PathBuf, Version), LookupError> {
    let wanted = version
        .map(Version::parse)
        .transpose()
        .map_err(LookupError::version)?;
    let bundles = cache.join("bundles");
    let dir = match (bundle, wanted) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(version)) => bundles.join(version.to_string()),
        (None, None) => newest_bundle(&bundles).ok_or_else(|| {
            LookupError::version(
                format!(
                    "no Kubernetes bundle in {}: build one with vm/bundle/build.sh, or fetch one with `k8s-manager bundle fetch --version <version>`",
                    bundles.display()
                ),
            )
        })?,
    };
    let missing = !dir.join(super::manifest::MANIFEST_FILE).exists();
    if let (None, Some(v), true) = (bundle, wanted, missing) {
        return Err(LookupError::version(format!(
            "no bundle of Kubernetes {v} in {}: build it with `K8S_VERSION={v} vm/bundle/build.sh`, or fetch it with `k8s-manager bundle fetch --version {v}`",
            bundles.display()
        )));
    }
    let manifest = super::Manifest::load(&dir).map_err(|err| {
        let message = crate::error::chain(&err);
        match bundle {
            Some(_) => LookupError::bundle(message),
            None => LookupError::version(message),
        }
    })?;
    let found = Version::parse(&manifest.kubernetes)
        .map_err(|e| LookupError::bundle(format!("{}: {e}", dir.join("bundle.json").display())))?;
    if let Some(wanted) = wanted
        && wanted != found
    {
        return Err(LookupError::version(format!(
            "the bundle {} is Kubernetes {found}, not {wanted}",
            dir.display()
        )));
    }
    Ok((dir, found))
}

/// The newest bundle folder (`v1.34.4`) of the cache holding a manifest.
pub fn newest_bundle(bundles: &Path) -> Option<PathBuf> {
    cached_bundles(bundles)
        .into_iter()
        .max_by_key(|(version, _)| *version)
        .map(|(_, dir)| dir)
}

/// The versions of the bundles in `<cache>/bundles`, oldest first: what a
/// user may pick for `kubernetes.version`.
pub fn cached_versions(cache: &Path) -> Vec<Version> {
    let mut versions: Vec<Version> = cached_bundles(&cache.join("bundles"))
        .into_iter()
        .map(|(version, _)| version)
        .collect();
    versions.sort();
    versions
}

/// Every folder of `bundles` named for a version and holding a manifest.
fn cached_bundles(bundles: &Path) -> Vec<(Version, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = Version::parse(&name).ok()?;
            let dir = entry.path();
            dir.join(super::manifest::MANIFEST_FILE)
                .exists()
                .then_some((version, dir))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn versions_parse() {
        assert_eq!(
            Version::parse("v1.34.4").unwrap(),
            Version {
                major: 1,
                minor: 34,
                patch: 4
            }
        );
        assert_eq!(Version::parse("1.34.4").unwrap().to_string(), "v1.34.4");
        for bad in ["v1.34", "1.34.x", "", "v1..4", "1.34.4.1", "+1.2.3"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    fn bundle(cache: &Path, version: &str) -> PathBuf {
        let dir = cache.join("bundles").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let names = super::super::manifest::CLUSTER_EXECUTABLES;
        let executables: Vec<Value> = names
            .iter()
            .map(|n| json!({"path": format!("bin/{n}"), "args": ["--version"], "expect": version}))
            .collect();
        let files: Vec<Value> = names
            .iter()
            .map(|n| json!({"path": format!("bin/{n}"), "sha256": "0".repeat(64), "size": 1, "executable": true}))
            .collect();
        let manifest = json!({
            "schemaVersion": 1, "kubernetes": version, "components": {},
            "executables": executables, "files": files
        });
        std::fs::write(dir.join("bundle.json"), manifest.to_string()).unwrap();
        dir
    }

    #[test]
    fn the_version_picks_the_bundle() {
        let cache = tempfile::tempdir().unwrap();
        let (mut version, mut folder): (Option<&str>, Option<PathBuf>) = (None, None);
        let err = resolve(version, folder.as_deref(), cache.path()).unwrap_err();
        assert!(!err.about_folder);
        assert!(err.message.contains("vm/bundle/build.sh"), "{err}");
        let old = bundle(cache.path(), "v1.33.9");
        let new = bundle(cache.path(), "v1.34.4");
        std::fs::create_dir_all(cache.path().join("bundles/v1.99.0")).unwrap();
        let listed: Vec<String> = cached_versions(cache.path())
            .iter()
            .map(Version::to_string)
            .collect();
        assert_eq!(
            listed,
            ["v1.33.9", "v1.34.4"],
            "a folder without a manifest is none"
        );
        let (dir, found) = resolve(version, folder.as_deref(), cache.path()).unwrap();
        assert_eq!((dir, found.to_string()), (new.clone(), "v1.34.4".into()));
        version = Some("1.33.9");
        assert_eq!(
            resolve(version, folder.as_deref(), cache.path()).unwrap().0,
            old
        );
        version = Some("v1.35.1");
        let err = resolve(version, folder.as_deref(), cache.path()).unwrap_err();
        assert!(!err.about_folder);
        assert!(
            err.message.contains("no bundle of Kubernetes v1.35.1"),
            "{err}"
        );
        assert!(
            err.message
                .contains("k8s-manager bundle fetch --version v1.35.1"),
            "{err}"
        );
        folder = Some(new.clone());
        let err = resolve(version, folder.as_deref(), cache.path()).unwrap_err();
        assert!(err.message.contains("is Kubernetes v1.34.4"), "{err}");
        version = None;
        assert_eq!(
            resolve(version, folder.as_deref(), cache.path()).unwrap().0,
            new
        );
    }
}

//! Helpers for the PKI unit tests: a config in a temporary folder and
//! snapshots of what is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::inspect::CertInfo;
use super::{Action, Outcome, PkiConfig, store};

pub const NODE: &str = "desktop";
pub const ADVERTISE: &str = "192.168.65.3";

pub fn config(pki_dir: &Path) -> PkiConfig {
    PkiConfig::new(pki_dir, NODE, ADVERTISE.parse().unwrap())
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                files.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// The files that differ between two snapshots (changed, added or removed).
pub fn changed_files(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<String> {
    let mut paths: Vec<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|path| before.get(*path) != after.get(*path))
        .map(|path| path.display().to_string())
        .collect()
}

pub fn cert(pki_dir: &Path, name: &str) -> CertInfo {
    CertInfo::from_pem(&std::fs::read(store::cert_path(pki_dir, name)).unwrap()).unwrap()
}

/// The outcomes that are not `Kept`, as (name, action).
pub fn changes(outcomes: &[Outcome]) -> Vec<(&str, &Action)> {
    outcomes
        .iter()
        .filter(|outcome| outcome.action != Action::Kept)
        .map(|outcome| (outcome.name.as_str(), &outcome.action))
        .collect()
}

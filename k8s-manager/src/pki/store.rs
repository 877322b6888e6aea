//! The PKI folder on disk: kubeadm's layout (`<name>.crt`, `<name>.key`,
//! `sa.key`, `sa.pub`), the modes, and every read and write of it. Writes go
//! through [`crate::fsutil::write_atomic`], so a crash never leaves half a
//! key; they are made after everything is signed, in one concurrent batch.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::PkiError;
use crate::fsutil;

/// Private keys and the folders that hold them: owner only.
pub const PRIVATE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;
/// Certificates and public keys are public.
pub const PUBLIC_MODE: u32 = 0o644;

/// The service-account signing key pair's base name (`sa.key`, `sa.pub`).
pub const SERVICE_ACCOUNT: &str = "sa";

pub fn cert_path(pki_dir: &Path, name: &str) -> PathBuf {
    pki_dir.join(format!("{name}.crt"))
}

pub fn key_path(pki_dir: &Path, name: &str) -> PathBuf {
    pki_dir.join(format!("{name}.key"))
}

pub fn service_account_public_path(pki_dir: &Path) -> PathBuf {
    pki_dir.join(format!("{SERVICE_ACCOUNT}.pub"))
}

/// A file's bytes, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    fsutil::write_atomic(path, contents, mode).map_err(|source| PkiError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Creates (or narrows to owner-only) the PKI folder and the sub-folders its
/// certificate names need (`etcd/`).
pub fn prepare_dirs<'a>(
    pki_dir: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), PkiError> {
    let create = |dir: &Path| {
        fsutil::create_dir_all_mode(dir, DIR_MODE).map_err(|source| PkiError::Io {
            action: "create folder",
            path: dir.to_path_buf(),
            source,
        })
    };
    create(pki_dir)?;
    for name in names {
        if let Some((sub_dir, _)) = name.rsplit_once('/') {
            create(&pki_dir.join(sub_dir))?;
        }
    }
    Ok(())
}

/// One file to write, with its mode.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl PendingWrite {
    pub fn new(path: PathBuf, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        PendingWrite {
            path,
            contents: contents.into(),
            mode,
        }
    }
}

/// A new key and its certificate. The key is written first: a crash in
/// between leaves a certificate that does not match its key, which the next
/// run re-issues, never a certificate whose key is lost.
pub fn key_and_cert(
    pki_dir: &Path,
    name: &str,
    key_pem: &str,
    cert_pem: &str,
) -> Vec<PendingWrite> {
    vec![
        PendingWrite::new(key_path(pki_dir, name), key_pem, PRIVATE_MODE),
        PendingWrite::new(cert_path(pki_dir, name), cert_pem, PUBLIC_MODE),
    ]
}

/// How many groups are written at once.
const WRITERS: usize = 8;

/// Writes groups of files: the files of a group one after the other, in
/// order, and the groups at the same time. Every atomic write syncs the file
/// and its folder; two dozen of them in a row take ~70 ms on a laptop disk,
/// while the file system commits concurrent syncs together (~8 ms). Returns
/// the first error; the other groups are still written, each file whole.
pub fn write_groups(groups: &[Vec<PendingWrite>]) -> Result<(), PkiError> {
    let write_group = |group: &Vec<PendingWrite>| {
        group
            .iter()
            .try_for_each(|file| write(&file.path, &file.contents, file.mode))
    };
    let workers = WRITERS.min(groups.len());
    if workers <= 1 {
        return groups.iter().try_for_each(write_group);
    }
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(group) = groups.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(err) = write_group(group) {
                        first_error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .get_or_insert(err);
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
    {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

//! The PKI folder on disk: kubeadm's layout (`<name>.crt`, `<name>.key`,
//! `sa.key`, `sa.pub`), the modes, and every read and write of it. Writes go
//! through [`crate::fsutil::write_atomic`], so a crash never leaves half a key.

use std::io;
use std::path::{Path, PathBuf};

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

/// Writes a new key and its certificate. The key goes first: a crash in
/// between leaves a certificate that does not match its key, which the next
/// run re-issues, never a certificate whose key is lost.
pub fn write_key_and_cert(
    pki_dir: &Path,
    name: &str,
    key_pem: &str,
    cert_pem: &str,
) -> Result<(), PkiError> {
    write(&key_path(pki_dir, name), key_pem.as_bytes(), PRIVATE_MODE)?;
    write(&cert_path(pki_dir, name), cert_pem.as_bytes(), PUBLIC_MODE)
}

//! The PKI folder on disk: kubeadm's layout (`<name>.crt`, `<name>.key`,
//! `sa.key`, `sa.pub`), the modes, and every read and write of it. Writes go
//! through [`crate::fsutil::write_atomic`], so a crash never leaves half a
//! key; they are made after everything is signed, in one concurrent batch.
//!
//! Symbolic links inside the folder are refused, files and sub-folders alike:
//! the folder is k8s-manager's own, and a link could make it trust another
//! PKI's key, read a device, or write outside the folder. The PKI folder
//! itself may be a link: where it lives is the user's choice. Every read is
//! bounded: a file is opened without following a link and without blocking
//! (a FIFO answers at once), must be a regular file, and is read up to
//! [`MAX_FILE_BYTES`].

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
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

/// A certificate's file, relative to the PKI folder.
pub fn cert_file(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.crt"))
}

/// A private key's file, relative to the PKI folder.
pub fn key_file(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.key"))
}

pub fn service_account_public_file() -> PathBuf {
    PathBuf::from(format!("{SERVICE_ACCOUNT}.pub"))
}

pub fn cert_path(pki_dir: &Path, name: &str) -> PathBuf {
    pki_dir.join(cert_file(name))
}

pub fn key_path(pki_dir: &Path, name: &str) -> PathBuf {
    pki_dir.join(key_file(name))
}

pub fn service_account_public_path(pki_dir: &Path) -> PathBuf {
    pki_dir.join(service_account_public_file())
}

/// The most a file of the PKI (or a kubeconfig written from it) may hold: an
/// RSA-4096 key is 3.3 KiB, a kubeconfig with an RSA CA, certificate and key
/// embedded about 12 KiB.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The bytes of the file at `relative` under `dir`, or `None` when it does not
/// exist. Neither the file nor a sub-folder on the way to it may be a
/// symbolic link; `dir` itself may.
pub fn read_optional(dir: &Path, relative: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    let path = dir.join(relative);
    refuse_linked_folders(dir, relative)?;
    match fsutil::read_regular(&path, MAX_FILE_BYTES, fsutil::Links::Refuse) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(fsutil::ReadError::Symlink) => Err(PkiError::Symlink { path }),
        Err(fsutil::ReadError::NotRegular { kind }) => Err(PkiError::NotAFile { path, kind }),
        Err(fsutil::ReadError::TooLarge { limit }) => Err(PkiError::TooLarge { path, limit }),
        Err(fsutil::ReadError::Io(source)) => Err(PkiError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// A certificate of the PKI folder, or `None` when it does not exist.
pub fn read_cert(pki_dir: &Path, name: &str) -> Result<Option<Vec<u8>>, PkiError> {
    read_optional(pki_dir, &cert_file(name))
}

/// A private key of the PKI folder, or `None` when it does not exist.
pub fn read_key(pki_dir: &Path, name: &str) -> Result<Option<Vec<u8>>, PkiError> {
    read_optional(pki_dir, &key_file(name))
}

/// An error when a sub-folder between `dir` and the file at `relative` is a
/// symbolic link. A sub-folder that does not exist is no error: the file is
/// then missing, or the folder is made by [`prepare_dirs`].
fn refuse_linked_folders(dir: &Path, relative: &Path) -> Result<(), PkiError> {
    let mut folder = dir.to_path_buf();
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    for component in parent.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        folder.push(name);
        match std::fs::symlink_metadata(&folder) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(PkiError::Symlink { path: folder });
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(PkiError::Io {
                    action: "read",
                    path: folder,
                    source,
                });
            }
        }
    }
    Ok(())
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
        // A linked sub-folder would be followed by the chmod and the writes.
        refuse_linked_folders(pki_dir, &cert_file(name))?;
        if let Some((sub_dir, _)) = name.rsplit_once('/') {
            create(&pki_dir.join(sub_dir))?;
        }
    }
    Ok(())
}

/// One file to write, with its mode. Its `Debug` leaves the contents out:
/// they may be a private key.
#[derive(Clone)]
pub struct PendingWrite {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl fmt::Debug for PendingWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingWrite")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn read(dir: &Path, relative: &str) -> Result<Option<Vec<u8>>, PkiError> {
        read_optional(dir, Path::new(relative))
    }

    #[test]
    fn links_to_files_and_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, elsewhere) = (dir.path().join("pki"), dir.path().join("elsewhere"));
        fs_dir(&pki);
        fs_dir(&elsewhere);
        std::fs::write(elsewhere.join("ca.key"), "another PKI's key").unwrap();
        symlink(elsewhere.join("ca.key"), pki.join("ca.key")).unwrap();
        let err = read(&pki, "ca.key").unwrap_err();
        assert!(
            matches!(&err, PkiError::Symlink { path } if path.ends_with("pki/ca.key")),
            "{err}"
        );
        assert!(!err.to_string().contains("another PKI's key"), "{err}");

        symlink(&elsewhere, pki.join("etcd")).unwrap();
        let err = read(&pki, "etcd/ca.key").unwrap_err();
        assert!(
            matches!(&err, PkiError::Symlink { path } if path.ends_with("pki/etcd")),
            "{err}"
        );
        // Nor is the linked folder made owner-only, nor written into.
        let err = prepare_dirs(&pki, ["ca", "etcd/ca"]).unwrap_err();
        assert!(matches!(&err, PkiError::Symlink { .. }), "{err}");
        assert_eq!(
            crate::fsutil::existing_mode(&elsewhere).unwrap(),
            Some(0o755)
        );

        // The PKI folder itself may be a link: the user chose where it lives.
        let linked_pki = dir.path().join("linked-pki");
        symlink(&elsewhere, &linked_pki).unwrap();
        assert_eq!(
            read(&linked_pki, "ca.key").unwrap().unwrap(),
            b"another PKI's key"
        );
    }

    #[test]
    fn fifos_devices_and_folders_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("apiserver.crt");
        crate::fsutil::mkfifo(&fifo);
        std::fs::create_dir(dir.path().join("apiserver.key")).unwrap();
        // A read that blocks on the FIFO fails the test instead of hanging it.
        let (sender, receiver) = mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let results = [read(&root, "apiserver.crt"), read(&root, "apiserver.key")];
            sender.send(results).unwrap();
        });
        let [fifo_read, folder_read] = receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("reading a FIFO does not block");
        let err = fifo_read.unwrap_err();
        assert!(
            matches!(
                &err,
                PkiError::NotAFile {
                    kind: "named pipe (FIFO)",
                    ..
                }
            ),
            "{err}"
        );
        let err = folder_read.unwrap_err();
        assert!(
            matches!(&err, PkiError::NotAFile { kind: "folder", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("is a folder, not a file"), "{err}");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limit = usize::try_from(MAX_FILE_BYTES).unwrap();
        std::fs::write(dir.path().join("fits.crt"), vec![b'a'; limit]).unwrap();
        assert_eq!(read(dir.path(), "fits.crt").unwrap().unwrap().len(), limit);
        std::fs::write(dir.path().join("huge.crt"), vec![b'a'; limit + 1]).unwrap();
        let err = read(dir.path(), "huge.crt").unwrap_err();
        assert!(matches!(err, PkiError::TooLarge { .. }), "{err}");
        assert_eq!(read(dir.path(), "absent.crt").unwrap(), None);
        assert_eq!(read(dir.path(), "absent/absent.crt").unwrap(), None);
    }

    #[test]
    fn a_pending_write_does_not_show_its_contents() {
        let write = PendingWrite::new(PathBuf::from("ca.key"), "secret key bytes", PRIVATE_MODE);
        let shown = format!("{write:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("ca.key") && shown.contains("600"), "{shown}");
    }

    /// A folder others may read, as a folder outside the PKI would be.
    fn fs_dir(path: &Path) {
        std::fs::create_dir(path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(path, mode).unwrap();
    }
}

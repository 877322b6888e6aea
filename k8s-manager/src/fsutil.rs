//! Crash-safe file writes: a write either lands whole or not at all.
//!
//! Every file the manager owns (keys, certificates, kubeconfigs, state) goes
//! through [`write_atomic`]: the bytes go to a temporary file in the same
//! folder, are flushed to disk, get their final mode, and only then replace the
//! target by `rename(2)`, which is atomic within a file system. A crash at any
//! point leaves either the old file or the new one, plus at worst a stray
//! temporary file that the next write of the same target ignores.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `contents` to `path` atomically with the given permission bits.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode given to open(2); set it
        // exactly. Host mounts (9p, drvfs) may refuse modes: the file is
        // still whole, so that is not a failed write.
        if let Err(err) = file.set_permissions(fs::Permissions::from_mode(mode))
            && !refused_by_mount(&err)
        {
            return Err(err);
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a file, if it is there, and makes the removal durable.
pub fn remove_file_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(&parent_dir(path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Creates `path` and its missing parents, and sets `path` itself to `mode`.
pub fn create_dir_all_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The permission bits of an existing file, if it exists.
pub fn existing_mode(path: &Path) -> io::Result<Option<u32>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.permissions().mode() & 0o7777)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Flushes a folder's entries, so that a rename in it survives a power loss.
/// Some host mounts cannot fsync a folder; the rename is done all the same.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(err) if refused_by_mount(&err) || err.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Errors a host mount gives for operations it does not support.
fn refused_by_mount(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::ENOSYS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_file_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("key.pem");
        write_atomic(&target, b"first", 0o600).unwrap();
        write_atomic(&target, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert_eq!(existing_mode(&target).unwrap(), Some(0o600));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn failed_write_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        // Renaming a file over a folder fails: the folder must survive and no temp remain.
        assert!(write_atomic(&target, b"x", 0o644).is_err());
        assert!(target.is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_has_no_mode() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_mode(&dir.path().join("nope")).unwrap(), None);
    }
}

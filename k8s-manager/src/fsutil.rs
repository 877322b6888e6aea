//! Crash-safe file writes: a write either lands whole or not at all.
//!
//! Every file the manager owns (keys, certificates, kubeconfigs, state) goes
//! through [`write_atomic`]: the bytes go to a temporary file in the same
//! folder, are flushed to disk, get their final mode, and only then replace the
//! target by `rename(2)`, which is atomic within a file system. A crash at any
//! point leaves either the old file or the new one, plus at worst a stray
//! temporary file, named for the target and the writer's pid, which the next
//! write of the same target removes once that writer no longer runs
//! ([`remove_stale_temps`]): a temp file may hold a key.
//!
//! Every read of a file that someone else controls goes through
//! [`read_bounded`]: a FIFO, a device or a file of gigabytes in place of a
//! kubeconfig or a key must be an error, never a hang or an exhausted memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `contents` to `path` atomically with the given permission bits.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_owned(path, contents, mode, None)
}

/// Who owns a file: user and group ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The owner of an existing file or folder (a symlink is followed).
    pub fn of(path: &Path) -> io::Result<Owner> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path)?;
        Ok(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

/// [`write_atomic`], and the new file gets `owner` (when given) before it
/// replaces the old one: a root process rewriting a user's file must leave
/// it the user's. Host mounts that refuse ownership changes keep theirs.
pub fn write_atomic_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    remove_stale_temps(path);
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        if let Some(owner) = owner
            && let Err(err) = std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))
            && !refused_by_mount(&err)
        {
            return Err(err);
        }
        // The umask may have narrowed the mode given to open(2); set it
        // exactly (after the chown, which may clear set-id bits). Host
        // mounts (9p, drvfs) may refuse modes: the file is still whole, so
        // that is not a failed write.
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

/// Creates the folder `path` and its missing parents, each made with `mode`
/// (as the umask narrows it); folders that exist are left as they are (a
/// parent that is not the manager's keeps its mode).
pub fn create_dir_all_new_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// Narrows the permission bits of an existing file or folder to those of
/// `allowed` (an older install's 0755 folder becomes 0700 for `0o700`);
/// never widens them. A symlink, or a path that is not there, is left
/// alone. True when the mode changed.
pub fn restrict_mode(path: &Path, allowed: u32) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_symlink() => meta,
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & !allowed == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode & allowed))?;
    Ok(true)
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

/// A fresh temporary name beside `path`: `.<name>.tmp-<pid>-<n>`.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = temp_prefix(path);
    name.push(format!("{}-{n}", std::process::id()));
    parent_dir(path).join(name)
}

/// `.<name>.tmp-`: what every temporary file of `path` starts with.
fn temp_prefix(path: &Path) -> std::ffi::OsString {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp-");
    name
}

/// Removes the temporary files of `path` ([`temp_path`]) left by writers
/// that no longer run (killed mid-write); how many it removed. Temp files of
/// a live process, this one included, are left alone: they are being
/// written. Best effort: a folder that cannot be listed has nothing to clean.
pub fn remove_stale_temps(path: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let prefix = temp_prefix(path);
    let dir = parent_dir(path);
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let Some(pid) = temp_writer(rest) else {
            continue;
        };
        if crate::sys::process_alive(pid) {
            continue;
        }
        if fs::remove_file(dir.join(&name)).is_ok() {
            tracing::debug!(file = %dir.join(&name).display(), pid, "removed a temporary file left by a writer that no longer runs");
            removed += 1;
        }
    }
    removed
}

/// The pid in `<pid>-<n>`, the tail of a temporary file's name.
fn temp_writer(tail: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(tail).ok()?;
    let (pid, n) = text.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (all_digits(pid) && all_digits(n)).then(|| pid.parse().ok())?
}

/// Why a bounded read refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A folder, a FIFO, a device or a socket where a file should be.
    #[error("not a regular file (a {kind} is in its place)")]
    NotRegular { kind: &'static str },
    /// A symbolic link, where links are not followed.
    #[error("a symbolic link, which is not followed here")]
    Symlink,
    #[error("larger than the {limit} bytes such a file can be")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(err) if err.kind() == io::ErrorKind::NotFound)
    }
}

impl From<ReadError> for io::Error {
    fn from(err: ReadError) -> io::Error {
        let kind = match &err {
            ReadError::Io(_) => match err {
                ReadError::Io(io) => return io,
                _ => unreachable!("matched above"),
            },
            ReadError::NotRegular { .. } | ReadError::Symlink => io::ErrorKind::InvalidInput,
            ReadError::TooLarge { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err.to_string())
    }
}

/// Whether a read follows a symbolic link at the file's own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Follow,
    Refuse,
}

/// Reads a whole regular file of at most `limit` bytes; a symlink is
/// followed. See [`read_regular`].
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_regular(path, limit, Links::Follow)
}

/// Reads a whole regular file of at most `limit` bytes. Opening does not
/// block on a FIFO (`O_NONBLOCK`), a device is refused before any read, and
/// whatever the file turns out to be (one that grows while it is read), no
/// more than `limit + 1` bytes are ever read.
pub fn read_regular(path: &Path, limit: u64, links: Links) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(file) => file,
        Err(err) if links == Links::Refuse && err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ReadError::Symlink);
        }
        Err(err) => return Err(err.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// What a file that is not a regular one is, in words.
fn kind_of(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "folder"
    } else if file_type.is_fifo() {
        "named pipe (FIFO)"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
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

/// Makes a FIFO at `path`, for the tests of what must never wait on one.
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn modes_are_narrowed_never_widened() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("logs");
        fs::create_dir(&folder).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(restrict_mode(&folder, 0o700).unwrap());
        assert_eq!(mode_of(&folder), 0o700);
        assert!(!restrict_mode(&folder, 0o700).unwrap());
        // A group that may reach the socket keeps its search bit.
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o751)).unwrap();
        assert!(restrict_mode(&folder, 0o710).unwrap());
        assert_eq!(mode_of(&folder), 0o710);
        let file = folder.join("etcd.log");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(!restrict_mode(&file, 0o600).unwrap(), "never widened");
        assert_eq!(mode_of(&file), 0o400);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(restrict_mode(&file, 0o600).unwrap());
        assert_eq!(mode_of(&file), 0o600);
        // A symlink and a missing path are left alone.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(!restrict_mode(&link, 0o000).unwrap());
        assert_eq!(mode_of(&file), 0o600);
        assert!(!restrict_mode(&dir.path().join("none"), 0o700).unwrap());
    }

    #[test]
    fn new_folders_get_the_mode_and_existing_ones_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let logs = dir.path().join("state/logs");
        create_dir_all_new_mode(&logs, 0o700).unwrap();
        assert_eq!(mode_of(&logs), 0o700);
        assert_eq!(mode_of(&dir.path().join("state")), 0o700);
        assert_eq!(mode_of(dir.path()), 0o755);
        create_dir_all_new_mode(&logs, 0o700).unwrap();
    }

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
    fn a_temp_left_by_a_dead_writer_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        // A pid that cannot run, one that runs (ours), and look-alikes.
        let dead = dir.path().join(format!(".config.tmp-{}-0", u32::MAX - 3));
        let live = dir
            .path()
            .join(format!(".config.tmp-{}-99", std::process::id()));
        let others = [
            ".config.tmp-x-1",
            ".other.tmp-4294967290-0",
            "config.tmp-4294967290-0",
        ];
        fs::write(&dead, b"key material").unwrap();
        fs::write(&live, b"being written").unwrap();
        for other in others {
            fs::write(dir.path().join(other), b"").unwrap();
        }
        write_atomic(&target, b"new", 0o600).unwrap();
        assert!(!dead.exists(), "a dead writer's temp is removed");
        assert!(live.exists(), "a live writer's temp is kept");
        for other in others {
            assert!(dir.path().join(other).exists(), "{other} is not ours");
        }
    }

    #[test]
    fn the_owner_is_given_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config");
        fs::write(&target, b"old").unwrap();
        let owner = Owner {
            uid: 4242,
            gid: 4343,
        };
        if std::os::unix::fs::chown(&target, Some(owner.uid), Some(owner.gid)).is_err() {
            // Not root: only our own ids can be given.
            let me = Owner::of(&target).unwrap();
            write_atomic_owned(&target, b"new", 0o600, Some(me)).unwrap();
            assert_eq!(Owner::of(&target).unwrap(), me);
            return;
        }
        write_atomic_owned(&target, b"new", 0o640, Some(owner)).unwrap();
        assert_eq!(Owner::of(&target).unwrap(), owner);
        assert_eq!(existing_mode(&target).unwrap(), Some(0o640));
    }

    #[test]
    fn bounded_reads_refuse_fifos_devices_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        assert!(matches!(
            read_bounded(&fifo, 10),
            Err(ReadError::NotRegular {
                kind: "named pipe (FIFO)"
            })
        ));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 10),
            Err(ReadError::NotRegular { kind: "device" })
        ));
        let target = dir.path().join("target");
        fs::write(&target, b"small").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_regular(&link, 10, Links::Refuse),
            Err(ReadError::Symlink)
        ));
        assert_eq!(read_regular(&link, 10, Links::Follow).unwrap(), b"small");
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 11]).unwrap();
        assert!(matches!(
            read_bounded(&big, 10),
            Err(ReadError::TooLarge { limit: 10 })
        ));
        assert_eq!(read_bounded(&big, 11).unwrap().len(), 11);
        assert!(
            read_bounded(&dir.path().join("nope"), 10)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn missing_file_has_no_mode() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_mode(&dir.path().join("nope")).unwrap(), None);
    }
}

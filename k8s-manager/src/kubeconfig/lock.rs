//! The lock kubectl takes before it rewrites a kubeconfig.
//!
//! client-go (`tools/clientcmd`, `lockFile`) creates `<file>.lock` with
//! `O_CREATE|O_EXCL` and deletes it when done; it does not wait, a second
//! kubectl fails with "open <file>.lock: file exists". We take the very same
//! lock, so kubectl and k8s-manager never write the file at the same time,
//! but unlike kubectl we wait for it, with exponential backoff up to a
//! deadline, because the merge runs unattended.
//!
//! Our lock files name their holder (`k8s-manager <pid>`; client-go only
//! checks that the file exists), so that a lock left by a k8s-manager that
//! was killed while holding it is recognised and removed by the next one,
//! instead of blocking every later merge. A lock without our mark (kubectl's)
//! is never removed: the error says how to clear it.
//!
//! The mark must be there from the lock's first instant: a lock created empty
//! and stamped afterwards looks like kubectl's to anyone who finds it after a
//! kill between the two steps, and is then never taken over. So the stamped
//! lock is written to a temporary file first and `link(2)`ed to the lock
//! path, which fails with `EEXIST` exactly like `O_CREAT|O_EXCL`. Where the
//! file system has no hard links (some host mounts), `O_EXCL` then a write.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::error::KubeconfigError;
use crate::fsutil;

/// The first wait after finding the lock taken; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// kubectl holds the lock for milliseconds; polling faster gains nothing.
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// How long a merge waits for the lock unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A held `<file>.lock`; dropping it releases the lock, on every path out,
/// errors and panics included.
#[derive(Debug)]
pub struct KubeconfigLock {
    path: PathBuf,
}

impl KubeconfigLock {
    /// client-go's lock file name for `file`.
    pub fn lock_path(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of `file`, waiting up to `timeout` for another holder.
    ///
    /// Creates the file's own folder when it is missing (a fresh `.kube`),
    /// but unlike client-go not its parents: a missing user profile means a
    /// wrong path or a host drive that is not mounted, and creating it would
    /// put the user's kubeconfig where nobody looks.
    pub fn acquire(file: &Path, timeout: Duration) -> Result<Self, KubeconfigError> {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            match fs::create_dir(dir) {
                // A `.kube` made by root for a user is the user's, like
                // the profile it sits in.
                Ok(()) => {
                    if let Some(profile) = dir.parent().filter(|p| !p.as_os_str().is_empty())
                        && let Ok(owner) = fsutil::Owner::of(profile)
                    {
                        let _ = std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(KubeconfigError::MissingFolder {
                        folder: dir.to_path_buf(),
                    });
                }
                Err(err) => return Err(KubeconfigError::io("create the folder", dir, err)),
            }
        }
        let path = Self::lock_path(file);
        let start = Instant::now();
        let deadline = start + timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match create_stamped(&path) {
                Ok(()) => {
                    tracing::debug!(lock = %path.display(), waited_ms = start.elapsed().as_millis() as u64, "took kubeconfig lock");
                    return Ok(KubeconfigLock { path });
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    if remove_if_stale(&path) {
                        continue;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(KubeconfigError::LockTimeout {
                            lock: path,
                            file: file.to_path_buf(),
                            waited: timeout,
                        });
                    }
                    thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(err) => return Err(KubeconfigError::io("create the lock file", path, err)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates the lock file with our mark in it, in one step where the file
/// system allows (see the module documentation); `AlreadyExists` when the
/// lock is held.
fn create_stamped(lock: &Path) -> io::Result<()> {
    let mark = holder_mark(std::process::id());
    let stamped = fsutil::temp_path(lock);
    fsutil::remove_stale_temps(lock);
    let linked = (|| {
        let mut tmp = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&stamped)?;
        tmp.write_all(mark.as_bytes())?;
        drop(tmp);
        fs::hard_link(&stamped, lock)
    })();
    let _ = fs::remove_file(&stamped);
    match linked {
        Err(err) if no_hard_links(&err) => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(lock)?;
            // Best effort: the lock holds by existing, the mark only helps a successor.
            let _ = file.write_all(mark.as_bytes());
            Ok(())
        }
        other => other,
    }
}

/// Errors of a file system that has no hard links.
fn no_hard_links(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::ENOSYS) | Some(libc::EMLINK)
    )
}

const HOLDER_PREFIX: &str = "k8s-manager ";
/// More than any mark of ours; a lock file is never read past this.
const MAX_MARK_BYTES: u64 = 64;

/// What our lock files contain.
fn holder_mark(pid: u32) -> String {
    format!("{HOLDER_PREFIX}{pid}\n")
}

/// The process that wrote a lock file's content, when it is one of ours.
fn holder_pid(content: &str) -> Option<u32> {
    content.trim().strip_prefix(HOLDER_PREFIX)?.parse().ok()
}

/// Removes the lock when it was left by a k8s-manager process that no
/// longer runs; true when it did.
fn remove_if_stale(lock: &Path) -> bool {
    // Bounded: whatever sits at the lock path (a FIFO, a huge file) is
    // never read beyond a mark's length, nor waited on.
    let read = || fsutil::read_bounded(lock, MAX_MARK_BYTES).ok();
    let Some(content) = read() else {
        return false;
    };
    let Some(pid) = std::str::from_utf8(&content).ok().and_then(holder_pid) else {
        return false;
    };
    if crate::sys::process_alive(pid) {
        return false;
    }
    // Read once more right before removing: another k8s-manager may have
    // cleared the stale lock and taken a fresh one in between.
    if read().as_deref() != Some(content.as_slice()) {
        return false;
    }
    tracing::warn!(lock = %lock.display(), pid, "removing a kubeconfig lock left by a k8s-manager that no longer runs");
    fs::remove_file(lock).is_ok()
}

impl Drop for KubeconfigLock {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.path) {
            // Nothing to return to from a drop: say it loudly, since a lock
            // left behind makes every later kubectl edit fail.
            tracing::error!(lock = %self.path.display(), %err, "cannot remove kubeconfig lock; delete it by hand");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_left_by_a_dead_manager_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let lock_path = KubeconfigLock::lock_path(&file);
        // A pid that cannot be running.
        fs::write(&lock_path, holder_mark(u32::MAX - 7)).unwrap();
        let lock = KubeconfigLock::acquire(&file, Duration::ZERO).unwrap();
        assert_eq!(
            fs::read_to_string(lock.path()).unwrap(),
            holder_mark(std::process::id())
        );
    }

    #[test]
    fn a_kubectl_lock_or_a_live_managers_lock_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let lock_path = KubeconfigLock::lock_path(&file);
        for content in [String::new(), holder_mark(1)] {
            fs::write(&lock_path, &content).unwrap();
            let err = KubeconfigLock::acquire(&file, Duration::from_millis(30)).unwrap_err();
            assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
            assert_eq!(fs::read_to_string(&lock_path).unwrap(), content);
        }
    }

    #[test]
    fn the_lock_appears_with_its_holder_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        // A stamped temp left by a manager killed between write and link.
        let left = dir
            .path()
            .join(format!(".config.lock.tmp-{}-3", u32::MAX - 9));
        fs::write(&left, holder_mark(u32::MAX - 9)).unwrap();
        let lock = KubeconfigLock::acquire(&file, Duration::ZERO).unwrap();
        assert_eq!(
            fs::read_to_string(lock.path()).unwrap(),
            holder_mark(std::process::id())
        );
        drop(lock);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_fifo_at_the_lock_path_is_a_timeout_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let lock = KubeconfigLock::lock_path(&file);
        crate::fsutil::mkfifo(&lock);
        let start = Instant::now();
        let err = KubeconfigLock::acquire(&file, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn lock_is_the_client_go_name_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let lock = KubeconfigLock::acquire(&file, Duration::ZERO).unwrap();
        assert_eq!(lock.path(), dir.path().join("config.lock"));
        assert!(lock.path().exists());
        drop(lock);
        assert!(!dir.path().join("config.lock").exists());
    }

    #[test]
    fn creates_a_missing_kube_folder_but_not_a_missing_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".kube/config");
        let _lock = KubeconfigLock::acquire(&file, Duration::ZERO).unwrap();
        assert!(dir.path().join(".kube/config.lock").exists());

        let unmounted = dir.path().join("mnt/c/Users/me/.kube/config");
        let err = KubeconfigLock::acquire(&unmounted, Duration::ZERO).unwrap_err();
        assert!(
            matches!(err, KubeconfigError::MissingFolder { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("mounted"), "{err}");
        assert!(!dir.path().join("mnt").exists());
    }

    #[test]
    fn waits_for_a_holder_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let held = KubeconfigLock::acquire(&file, Duration::ZERO).unwrap();
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            drop(held);
        });
        let start = Instant::now();
        let lock = KubeconfigLock::acquire(&file, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(150));
        releaser.join().unwrap();
        assert!(lock.path().exists());
    }

    #[test]
    fn times_out_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        // A stale lock, as a killed kubectl leaves it.
        fs::write(KubeconfigLock::lock_path(&file), b"").unwrap();
        let start = Instant::now();
        let err = KubeconfigLock::acquire(&file, Duration::from_millis(120)).unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(120) && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{}.lock", file.display())), "{text}");
        assert!(text.contains("stale"), "{text}");
        // Someone else's lock is never removed by us.
        assert!(KubeconfigLock::lock_path(&file).exists());
    }
}

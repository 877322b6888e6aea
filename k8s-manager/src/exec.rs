//! Running the very file that was checked.
//!
//! A digest says what a file held when it was read; running it by its path
//! afterwards runs whatever the path names by then (a link swapped, a file
//! renamed over it). So the manager runs a checked file through the
//! descriptor it read it from (`/proc/self/fd/N`), which stays on the same
//! inode whatever happens to the path, and compares the inode's
//! [`FileIdentity`] (device, inode number, size, modification and change
//! times) with the one recorded when the digest was taken, right before the
//! run: a write into that inode changes its change time, which no process
//! can set back. What is left is a write in the instant between that last
//! comparison and the kernel's `execve`, by someone who can write the file
//! and so could have replaced the bundle outright.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What tells one state of a file from another without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileIdentity {
    pub fn of(file: &File) -> io::Result<FileIdentity> {
        let meta = file.metadata()?;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Opens `path` for reading without blocking (a FIFO in its place is not
/// waited on) and without following a link as its last component when
/// `no_follow`.
pub fn open_read(path: &Path, no_follow: bool) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// Opens `path` and checks that it is still the file whose identity was
/// recorded when its digest was taken.
pub fn open_checked(path: &Path, expected: &FileIdentity) -> io::Result<File> {
    let file = open_read(path, false)?;
    ensure_unchanged(&file, expected)?;
    Ok(file)
}

/// Fails when the open file is no longer in the state `expected` recorded.
pub fn ensure_unchanged(file: &File, expected: &FileIdentity) -> io::Result<()> {
    if FileIdentity::of(file)? == *expected {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "changed since its digest was checked",
        ))
    }
}

/// A command that runs the open `file` itself, shown to the program as
/// `argv0` (a multi-call binary picks its component from that name). `file`
/// must stay open until the command is spawned.
///
/// The descriptor is close-on-exec in the manager, so that no other child
/// inherits it; in this child only, it is kept open across the exec, since
/// a script's interpreter opens `/proc/self/fd/N` after the exec.
pub fn command(file: &File, argv0: &Path) -> Command {
    let fd = file.as_raw_fd();
    let mut cmd = Command::new(format!("/proc/self/fd/{fd}"));
    cmd.arg0(argv0);
    crate::sys::keep_open_across_exec(&mut cmd, fd);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(path: &Path, body: &str) {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_opened_file_runs_under_its_name_even_after_its_path_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        script(&path, "echo \"checked $0\"");
        let file = open_read(&path, true).unwrap();
        let identity = FileIdentity::of(&file).unwrap();
        // The path now names another file: the open one is what runs.
        let other = dir.path().join("other");
        script(&other, "echo replaced");
        std::fs::rename(&other, &path).unwrap();
        let out = command(&file, Path::new("/bundle/bin/kubelet"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // A script sees the descriptor's path as $0; a binary sees `argv0`.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("checked /proc/self/fd/"), "{stdout}");
        // Opening the path by its recorded identity sees the change; so
        // does the open file, unlinked by the rename (its change time moved).
        let err = open_checked(&path, &identity).unwrap_err();
        assert!(err.to_string().contains("changed since"), "{err}");
        assert!(ensure_unchanged(&file, &identity).is_err());
    }

    #[test]
    fn a_write_into_the_checked_file_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        script(&path, "echo one");
        let file = open_read(&path, true).unwrap();
        let identity = FileIdentity::of(&file).unwrap();
        // Same size, same inode, other content.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"#!/bin/sh\necho two\n"))
            .unwrap();
        assert!(ensure_unchanged(&file, &identity).is_err());
        assert!(open_checked(&path, &identity).is_err());
    }

    #[test]
    fn a_link_as_last_component_is_not_followed_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        script(&dir.path().join("tool"), "true");
        std::os::unix::fs::symlink("tool", dir.path().join("link")).unwrap();
        assert!(open_read(&dir.path().join("link"), true).is_err());
        assert!(open_read(&dir.path().join("link"), false).is_ok());
    }
}

//! The user's kubeconfig on the host: which file to write, and the locked,
//! atomic, backed-up read-modify-write of it.
//!
//! Every rewrite of a user's file:
//! 1. takes `<file>.lock` exactly as kubectl does (see [`super::lock`]) and
//!    holds it from the read to the rename;
//! 2. re-reads the file under the lock and parses it; a file that does not
//!    parse is left as it is and the error names it, with line and column;
//! 3. applies the pure merge/remove rules; when nothing changed, writes
//!    nothing at all (the file keeps its bytes, comments and mtime); when
//!    something did, only the entries that changed are rewritten, as an edit
//!    of the file's own text (see [`super::edit`]), so every other line keeps
//!    its bytes and comments; a file whose shape cannot take the change as an
//!    edit (an alias of what would be rewritten, ...) is refused and left as
//!    it is, never rewritten whole;
//! 4. copies the previous content to `<file>.bak` (atomically, same mode),
//!    so one bad write can always be undone by hand, and only then
//! 5. replaces the file atomically (temp file in the same folder, fsync,
//!    rename) keeping its mode (0600 for a new file: it holds credentials).
//!
//! A symlinked kubeconfig is written through to its target, so the link stays.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::document::{Kubeconfig, Section};
use super::error::KubeconfigError;
use super::lock::{DEFAULT_LOCK_TIMEOUT, KubeconfigLock};
use super::merge::{
    CurrentContextMode, MergeChanges, OwnNames, References, RemoveChanges, merge, remove_context,
};
use crate::fsutil;

/// The mode of a kubeconfig we create: it holds a client key.
const NEW_FILE_MODE: u32 = 0o600;

/// A kubeconfig destination: one file, or a `KUBECONFIG`-style list of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKubeconfig {
    files: Vec<PathBuf>,
}

impl HostKubeconfig {
    /// Reads a `KUBECONFIG`-style value. The separator is `;` when the value
    /// contains one (Windows), else `:` (Linux), with a Windows drive letter
    /// kept whole (`C:\Users\me\.kube\config`). Windows drive paths are
    /// translated to where the host's drives are mounted in the VM:
    /// `C:\Users\me` → `<mount_root>/c/Users/me`.
    ///
    /// With `:`, a single-letter relative path followed by an absolute one
    /// (`c:/x`) reads as a drive path; a real list never looks like that.
    pub fn parse(spec: &str, mount_root: &Path) -> Result<Self, KubeconfigError> {
        let items = split_list(spec);
        // A list is read by a daemon whose working folder means nothing to
        // the user; and `C:\x\config:stream` splits into a drive path and
        // a relative `stream`. Only a single path may be relative.
        if items.len() > 1
            && let Some(relative) = items.iter().find(|i| !is_absolute_item(i))
        {
            return Err(KubeconfigError::InvalidHostPath {
                path: relative.clone(),
                reason: "a KUBECONFIG list names absolute paths only (a ':' inside a Windows \
                         path reads as a list separator)",
            });
        }
        let files = items
            .iter()
            .map(|item| host_path_to_vm(item, mount_root))
            .collect::<Result<Vec<_>, _>>()?;
        if files.is_empty() {
            return Err(KubeconfigError::EmptyList {
                spec: spec.to_string(),
            });
        }
        HostKubeconfig::from_files(files)
    }

    /// A list of VM paths; duplicates are dropped, as kubectl does.
    pub fn from_files(files: Vec<PathBuf>) -> Result<Self, KubeconfigError> {
        if files.is_empty() {
            return Err(KubeconfigError::EmptyList {
                spec: String::new(),
            });
        }
        let mut unique: Vec<PathBuf> = Vec::with_capacity(files.len());
        for file in files {
            if !unique.contains(&file) {
                unique.push(file);
            }
        }
        Ok(HostKubeconfig { files: unique })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl fmt::Display for HostKubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        f.write_str(&names.join(":"))
    }
}

/// A VM path from `/`, or a Windows drive path from its drive's root.
fn is_absolute_item(item: &str) -> bool {
    let b = item.as_bytes();
    item.starts_with('/')
        || item.starts_with("\\\\")
        || (b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'\\' | b'/'))
}

/// Splits a `KUBECONFIG`-style value into its paths, empty items dropped.
fn split_list(spec: &str) -> Vec<String> {
    if spec.contains(';') {
        return spec
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        let is_drive = part.len() == 1 && part.as_bytes()[0].is_ascii_alphabetic();
        match parts.get(i + 1) {
            Some(next) if is_drive && next.starts_with(['\\', '/']) => {
                out.push(format!("{part}:{next}"));
                i += 2;
            }
            _ => {
                if !part.is_empty() {
                    out.push(part.to_string());
                }
                i += 1;
            }
        }
    }
    out
}

/// A host path as the VM sees it: `C:\Users\me\.kube\config` →
/// `<mount_root>/c/Users/me/.kube/config`; a VM path is returned as it is.
///
/// A drive path never leaves its drive's folder under the mount root: `..`
/// is resolved as Windows resolves it, against the path itself and never
/// above the drive's root (`C:\..\x` is `C:\x`), and `.` is dropped. The
/// Win32 namespace prefixes `\\?\` and `\\.\` before a drive name the same
/// path. A `:` past the drive (an alternate data stream), a relative
/// Windows path and a network path are refused: none names a file of a
/// mounted drive.
pub fn host_path_to_vm(path: &str, mount_root: &Path) -> Result<PathBuf, KubeconfigError> {
    let unreachable = || KubeconfigError::UnreachableHostPath {
        path: path.to_string(),
    };
    let local = ["\\\\?\\", "\\\\.\\", "//?/", "//./"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .unwrap_or(path);
    let mut chars = local.chars();
    if let (Some(drive), Some(':')) = (chars.next(), chars.next())
        && drive.is_ascii_alphabetic()
    {
        let rest = chars.as_str();
        // `C:relative` is relative to a per-drive current folder we cannot know.
        if !(rest.is_empty() || rest.starts_with(['\\', '/'])) {
            return Err(unreachable());
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in rest.split(['\\', '/']) {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                _ if part.contains([':', '\0']) => {
                    return Err(KubeconfigError::InvalidHostPath {
                        path: path.to_string(),
                        reason: "a ':' past the drive names an alternate data stream, not a file",
                    });
                }
                _ => parts.push(part),
            }
        }
        let mut vm = mount_root.join(drive.to_ascii_lowercase().to_string());
        vm.extend(parts);
        return Ok(vm);
    }
    // UNC paths (\\server\share) are not mounted in the VM; a backslash
    // anywhere else makes a Windows path without a drive: relative to a
    // folder of the host we do not know.
    if local.starts_with("\\\\") || local.contains('\\') {
        return Err(unreachable());
    }
    Ok(PathBuf::from(path))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOptions {
    pub current_context: CurrentContextMode,
    /// How long to wait for kubectl (or another writer) to release the file.
    pub lock_timeout: Duration,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            current_context: CurrentContextMode::Auto,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    /// The file that holds our entries.
    pub file: PathBuf,
    /// Whether it was rewritten; false when it already held our entries as they are.
    pub written: bool,
    /// Whether the file did not exist before.
    pub created: bool,
    /// Where the previous content was saved.
    pub backup: Option<PathBuf>,
    #[serde(flatten)]
    pub changes: MergeChanges,
    /// The file whose `current-context` the merge set: the target, or with
    /// `always` in a list, the earlier file kubectl takes it from.
    pub current_context_file: Option<PathBuf>,
}

/// Merges the clusters, users and contexts of `src` into the user's
/// kubeconfig `dest`: into the first file of the list that already holds one
/// of them, else where kubectl puts new entries (see [`write_target`]).
/// The `current-context` lives in the first file of the list that sets one,
/// as kubectl reads it; `auto` leaves it alone if any file sets one.
pub fn merge_into_host(
    src: &Kubeconfig,
    dest: &HostKubeconfig,
    opts: &MergeOptions,
) -> Result<MergeReport, KubeconfigError> {
    let own = OwnNames::of(src);
    // A survey without locks decides where to write; the chosen file is read
    // again under its lock before anything is written. A single file needs
    // no survey: it is read once, under its lock.
    let mut survey = match dest.files() {
        [_] => vec![Snapshot::default()],
        files => files
            .iter()
            .map(|f| Snapshot::read(f))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let target = write_target(&survey, |s| own.any_in(&s.doc));
    let current_holder = survey
        .iter()
        .position(|s| s.doc.current_context().is_some());

    // kubectl takes `current-context` from the first file that sets one.
    let (mode, elsewhere) = match (opts.current_context, current_holder) {
        (CurrentContextMode::Never, _) => (CurrentContextMode::Never, None),
        (mode, None) => (mode, None),
        (mode, Some(holder)) if holder == target => (mode, None),
        (CurrentContextMode::Auto, Some(_)) => (CurrentContextMode::Never, None),
        // Set in the target, it comes first and wins.
        (CurrentContextMode::Always, Some(holder)) if holder > target => {
            (CurrentContextMode::Always, None)
        }
        // An earlier file would still win: change it there.
        (CurrentContextMode::Always, Some(holder)) => (CurrentContextMode::Never, Some(holder)),
    };

    let file = dest.files()[target].clone();
    let snapshot = std::mem::take(&mut survey[target]);
    let (mut changes, outcome) = update_locked(&file, snapshot, opts.lock_timeout, |doc| {
        let changes = merge(doc, src, mode);
        let changed = !changes.is_empty();
        (changes, changed)
    })?;
    let mut current_context_file = changes
        .current_context_set
        .as_ref()
        .map(|_| outcome.file.clone());

    if let Some(holder) = elsewhere {
        let holder_file = dest.files()[holder].clone();
        let snapshot = std::mem::take(&mut survey[holder]);
        // Only the current context is ours to change in that file.
        let wanted = src
            .current_context()
            .or_else(|| src.names(Section::Context).next());
        if let Some(wanted) = wanted {
            let (set, holder_outcome) =
                update_locked(&holder_file, snapshot, opts.lock_timeout, |doc| {
                    let set = doc.current_context() != Some(wanted);
                    if set {
                        doc.set_current_context(wanted);
                    }
                    (set, set)
                })?;
            if set {
                changes.current_context_set = Some(wanted.to_string());
                current_context_file = Some(holder_outcome.file);
            }
        }
    }

    Ok(MergeReport {
        file: outcome.file,
        written: outcome.written,
        created: outcome.created,
        backup: outcome.backup,
        changes,
        current_context_file,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveOptions {
    pub lock_timeout: Duration,
}

impl Default for RemoveOptions {
    fn default() -> Self {
        RemoveOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    pub context: String,
    /// The files that changed; empty when there was nothing to remove.
    pub files: Vec<FileRemoval>,
}

impl RemoveReport {
    pub fn found(&self) -> bool {
        !self.files.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRemoval {
    pub file: PathBuf,
    pub backup: Option<PathBuf>,
    #[serde(flatten)]
    pub changes: RemoveChanges,
}

/// Removes context `context` (with its cluster and user unless another
/// context of the list still uses them) from every file of `dest` that
/// defines it, and clears `current-context` wherever it names it. Nothing
/// to remove is not an error.
pub fn remove_from_host(
    dest: &HostKubeconfig,
    context: &str,
    opts: &RemoveOptions,
) -> Result<RemoveReport, KubeconfigError> {
    // A single existing file is read once, under its lock.
    let survey = match dest.files() {
        [file] if file.exists() => vec![Snapshot::default()],
        files => files
            .iter()
            .map(|f| Snapshot::read(f))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let refs: Vec<References> = survey
        .iter()
        .map(|s| {
            let mut refs = References::default();
            refs.add_from(&s.doc, context);
            refs
        })
        .collect();

    let mut report = RemoveReport {
        context: context.to_string(),
        files: Vec::new(),
    };
    for (i, snapshot) in survey.into_iter().enumerate() {
        let doc = &snapshot.doc;
        if snapshot.read
            && !doc.contains(Section::Context, context)
            && doc.current_context() != Some(context)
        {
            continue;
        }
        let mut elsewhere = References::default();
        for (j, other) in refs.iter().enumerate() {
            if j != i {
                elsewhere.extend(other);
            }
        }
        let file = &dest.files()[i];
        let (changes, outcome) = update_locked(file, snapshot, opts.lock_timeout, |doc| {
            let changes = remove_context(doc, context, &elsewhere);
            let changed = !changes.is_empty();
            (changes, changed)
        })?;
        if outcome.written {
            report.files.push(FileRemoval {
                file: outcome.file,
                backup: outcome.backup,
                changes,
            });
        }
    }
    Ok(report)
}

/// Which file of a list gets our entries: the first that already holds one
/// of them; else, as client-go's `GetDefaultFilename` decides for new
/// entries, the first file that exists, or the last one when none does. A
/// single file is itself (not surveyed: read under its lock only).
fn write_target(survey: &[Snapshot], holds_ours: impl Fn(&Snapshot) -> bool) -> usize {
    if survey.len() == 1 {
        return 0;
    }
    survey
        .iter()
        .position(holds_ours)
        .or_else(|| survey.iter().position(|s| s.bytes.is_some()))
        .unwrap_or(survey.len() - 1)
}

/// A file as read without its lock, to decide what to do; the default is a
/// file not read (then read under its lock only).
#[derive(Default)]
struct Snapshot {
    read: bool,
    /// `None` when the file does not exist.
    bytes: Option<Vec<u8>>,
    doc: Kubeconfig,
}

impl Snapshot {
    fn read(path: &Path) -> Result<Self, KubeconfigError> {
        let bytes = read_optional(path)?;
        let doc = match &bytes {
            Some(b) => Kubeconfig::parse(b, path)?,
            None => Kubeconfig::empty(),
        };
        Ok(Snapshot {
            read: true,
            bytes,
            doc,
        })
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, KubeconfigError> {
    match super::document::read_file(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(KubeconfigError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

struct WriteOutcome {
    /// The file on disk (a symlink's target).
    file: PathBuf,
    written: bool,
    created: bool,
    backup: Option<PathBuf>,
}

/// The read-modify-write of one file under its lock; see the module
/// documentation. `survey` is what was read before the lock: when the file
/// is still byte for byte the same, its parsed document is reused rather
/// than parsed a second time. `edit` returns its result and whether it
/// changed the document.
fn update_locked<T>(
    file: &Path,
    survey: Snapshot,
    lock_timeout: Duration,
    edit: impl FnOnce(&mut Kubeconfig) -> (T, bool),
) -> Result<(T, WriteOutcome), KubeconfigError> {
    let _lock = KubeconfigLock::acquire(file, lock_timeout)?;
    let target = resolve_symlink(file)?;
    let bytes = read_optional(&target)?;
    let mut doc = match (&bytes, survey) {
        (
            Some(now),
            Snapshot {
                bytes: Some(then),
                doc,
                ..
            },
        ) if *now == then => doc,
        (Some(now), _) => Kubeconfig::parse(now, file)?,
        (None, _) => Kubeconfig::empty(),
    };

    let (result, changed) = edit(&mut doc);
    let mut outcome = WriteOutcome {
        file: target,
        written: false,
        created: bytes.is_none(),
        backup: None,
    };
    if !changed {
        return Ok((result, outcome));
    }

    let new_bytes = doc.to_bytes(file)?;
    let target = &outcome.file;
    let mode = fsutil::existing_mode(target)
        .map_err(|e| KubeconfigError::io("read the mode of", target, e))?
        .unwrap_or(NEW_FILE_MODE);
    // The file stays its owner's (root rewriting a user's file must not take
    // it); a new file belongs to whoever owns its folder.
    let owner = match &bytes {
        Some(_) => fsutil::Owner::of(target),
        None => fsutil::Owner::of(&parent_of(target)),
    }
    .map_err(|e| KubeconfigError::io("read the owner of", target, e))?;
    if let Some(old) = &bytes {
        outcome.backup = Some(keep_backup(target, old, mode, owner)?);
    }
    fsutil::write_atomic_owned(target, &new_bytes, mode, Some(owner))
        .map_err(|e| KubeconfigError::io("write", target, e))?;
    tracing::debug!(file = %target.display(), bytes = new_bytes.len(), "kubeconfig written");
    outcome.written = true;
    Ok((result, outcome))
}

/// The file a write must replace: a symlink's final target, so that the
/// rename does not turn the user's link into a plain file.
fn resolve_symlink(file: &Path) -> Result<PathBuf, KubeconfigError> {
    match fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(file).map_err(|e| KubeconfigError::io("follow the symlink", file, e))
        }
        _ => Ok(file.to_path_buf()),
    }
}

/// Keeps the current content of `target` as `<file>.bak`. A hard link to the
/// current file costs nothing however large it is: the rename that follows
/// points `target` at a new file and leaves the old one to the backup alone
/// (with its owner and mode). Where the file system has no hard links (some
/// host mounts), a copy, given the file's owner and mode.
fn keep_backup(
    target: &Path,
    old: &[u8],
    mode: u32,
    owner: fsutil::Owner,
) -> Result<PathBuf, KubeconfigError> {
    let backup = backup_path(target);
    fsutil::remove_stale_temps(&backup);
    let link = fsutil::temp_path(&backup);
    let linked = fs::hard_link(target, &link).and_then(|()| fs::rename(&link, &backup));
    // rename(2) of a name onto another link of the same file does nothing
    // and succeeds: when the backup already was a link of the file, the
    // temporary name is still there.
    let _ = fs::remove_file(&link);
    if linked.is_err() {
        fsutil::write_atomic_owned(&backup, old, mode, Some(owner))
            .map_err(|e| KubeconfigError::io("write the backup", &backup, e))?;
    }
    Ok(backup)
}

/// The folder of a file path ("." for a bare name).
fn parent_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where the previous content of `file` is kept: `<file>.bak`.
pub fn backup_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const OURS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: docker-desktop\n  cluster:\n    server: https://kubernetes.docker.internal:6443\nusers:\n- name: docker-desktop\n  user:\n    token: abc\ncontexts:\n- name: docker-desktop\n  context:\n    cluster: docker-desktop\n    user: docker-desktop\ncurrent-context: docker-desktop\n";
    const THEIRS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod\nusers:\n- name: me\n  user:\n    token: t\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: me\ncurrent-context: prod\n# a comment kubectl would drop too\n";

    fn ours() -> Kubeconfig {
        Kubeconfig::parse(OURS.as_bytes(), Path::new("ours")).unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn single(path: &Path) -> HostKubeconfig {
        HostKubeconfig::from_files(vec![path.to_path_buf()]).unwrap()
    }

    #[test]
    fn split_list_on_linux_and_windows() {
        let root = Path::new("/mnt");
        let cases: [(&str, &[&str]); 8] = [
            ("/a/config:/b/config", &["/a/config", "/b/config"]),
            ("/a/config", &["/a/config"]),
            (
                r"C:\Users\me\.kube\config",
                &["/mnt/c/Users/me/.kube/config"],
            ),
            (
                r"C:\Users\me\.kube\config;D:\k\extra",
                &["/mnt/c/Users/me/.kube/config", "/mnt/d/k/extra"],
            ),
            (
                r"C:\Users\me\.kube\config:/vm/config",
                &["/mnt/c/Users/me/.kube/config", "/vm/config"],
            ),
            (
                "C:/Users/me/.kube/config",
                &["/mnt/c/Users/me/.kube/config"],
            ),
            ("/a::/b:", &["/a", "/b"]),
            (r"c:\x; ;/vm/y", &["/mnt/c/x", "/vm/y"]),
        ];
        for (spec, want) in cases {
            let got = HostKubeconfig::parse(spec, root).unwrap();
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got.files(), want, "{spec}");
        }
    }

    #[test]
    fn list_drops_duplicates_and_refuses_nothing_or_unc() {
        let got = HostKubeconfig::parse("/a:/b:/a", Path::new("/mnt")).unwrap();
        assert_eq!(got.files(), [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(matches!(
            HostKubeconfig::parse(" ; ", Path::new("/mnt")),
            Err(KubeconfigError::EmptyList { .. })
        ));
        assert!(matches!(
            HostKubeconfig::parse(r"\\server\share\config", Path::new("/mnt")),
            Err(KubeconfigError::UnreachableHostPath { .. })
        ));
        assert!(host_path_to_vm("C:relative", Path::new("/mnt")).is_err());
        assert_eq!(
            host_path_to_vm("E:", Path::new("/host")).unwrap(),
            PathBuf::from("/host/e")
        );
    }

    #[test]
    fn merge_creates_a_missing_file_and_folder_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".kube/config");
        let report = merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        assert!(report.written && report.created);
        assert_eq!(report.backup, None);
        assert_eq!(report.changes.added.len(), 3);
        assert_eq!(mode_of(&file), 0o600);
        let doc = Kubeconfig::load(&file).unwrap();
        assert_eq!(doc.current_context(), Some("docker-desktop"));
        assert!(!KubeconfigLock::lock_path(&file).exists());
    }

    #[test]
    fn merge_keeps_mode_writes_backup_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();

        let report = merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        assert!(report.written && !report.created);
        let backup = dir.path().join("config.bak");
        assert_eq!(report.backup.as_deref(), Some(backup.as_path()));
        assert_eq!(fs::read_to_string(&backup).unwrap(), THEIRS);
        assert_eq!(mode_of(&file), 0o640);
        assert_eq!(mode_of(&backup), 0o640);
        assert_eq!(
            Kubeconfig::load(&file).unwrap().current_context(),
            Some("prod")
        );

        // Second time: nothing changes, nothing is written, the backup stays.
        let written = fs::read(&file).unwrap();
        let report = merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        assert!(!report.written && report.backup.is_none());
        assert_eq!(report.changes.unchanged.len(), 3);
        assert_eq!(fs::read(&file).unwrap(), written);
        assert_eq!(fs::read_to_string(&backup).unwrap(), THEIRS);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temp or lock file left: {names:?}");
    }

    #[test]
    fn unparsable_file_is_left_untouched_and_the_lock_released() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        let broken = b"apiVersion: v1\nclusters:\n- name: a\n  cluster: {server: x\nusers: []\n";
        fs::write(&file, broken).unwrap();
        let err = merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()) && text.contains("line "),
            "{text}"
        );
        assert_eq!(fs::read(&file).unwrap(), broken);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no lock, backup or temp left"
        );
    }

    #[test]
    fn file_broken_between_survey_and_lock_is_left_untouched() {
        // The survey parses fine; the file changes under us before we hold
        // the lock. The second read must be parsed, not the survey reused.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        let survey = Snapshot::read(&file).unwrap();
        fs::write(&file, b"clusters: [\n").unwrap();
        let err = update_locked(&file, survey, Duration::ZERO, |doc| {
            merge(doc, &ours(), CurrentContextMode::Auto);
            ((), true)
        });
        assert!(matches!(err, Err(KubeconfigError::Parse { .. })));
        assert_eq!(fs::read(&file).unwrap(), b"clusters: [\n");
        assert!(!KubeconfigLock::lock_path(&file).exists());
    }

    #[test]
    fn a_failed_write_keeps_the_file_and_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: it is refused.
        let file = dir.path().join("config");
        fs::create_dir(&file).unwrap();
        assert!(matches!(
            merge_into_host(&ours(), &single(&file), &MergeOptions::default()),
            Err(KubeconfigError::NotRegularFile { .. })
        ));
        assert!(file.is_dir());
        assert!(!KubeconfigLock::lock_path(&file).exists());
    }

    #[test]
    fn merge_waits_for_a_kubectl_holding_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        let lock = KubeconfigLock::lock_path(&file);
        fs::write(&lock, b"").unwrap();
        // "kubectl" rewrites the file in place under its lock, then releases it.
        let writer = {
            let (file, lock) = (file.clone(), lock.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                fs::write(&file, THEIRS.replace("- name: prod\n  cluster", "- name: added-by-kubectl\n  cluster:\n    server: https://k\n- name: prod\n  cluster")).unwrap();
                fs::remove_file(&lock).unwrap();
            })
        };
        let report = merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        writer.join().unwrap();
        assert!(report.written);
        let doc = Kubeconfig::load(&file).unwrap();
        assert!(
            doc.contains(Section::Cluster, "added-by-kubectl"),
            "kubectl's write was kept"
        );
        assert!(doc.contains(Section::Cluster, "docker-desktop"));
    }

    #[test]
    fn merge_times_out_on_a_stale_lock_and_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        fs::write(KubeconfigLock::lock_path(&file), b"").unwrap();
        let opts = MergeOptions {
            lock_timeout: Duration::from_millis(50),
            ..MergeOptions::default()
        };
        let err = merge_into_host(&ours(), &single(&file), &opts).unwrap_err();
        assert!(matches!(err, KubeconfigError::LockTimeout { .. }), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), THEIRS);
        assert!(KubeconfigLock::lock_path(&file).exists());
    }

    #[test]
    fn merge_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-config");
        fs::write(&real, THEIRS).unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let report = merge_into_host(&ours(), &single(&link), &MergeOptions::default()).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(report.file, fs::canonicalize(&real).unwrap());
        assert!(
            Kubeconfig::load(&link)
                .unwrap()
                .contains(Section::Context, "docker-desktop")
        );
    }

    #[test]
    fn list_target_is_the_file_holding_our_entries() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, THEIRS).unwrap();
        fs::write(&b, "users:\n- name: docker-desktop\n  user: {token: old}\n").unwrap();
        let list = HostKubeconfig::from_files(vec![a.clone(), b.clone()]).unwrap();
        let report = merge_into_host(&ours(), &list, &MergeOptions::default()).unwrap();
        assert_eq!(report.file, b);
        assert_eq!(
            fs::read_to_string(&a).unwrap(),
            THEIRS,
            "the other file is untouched"
        );
        assert_eq!(report.changes.replaced.len(), 1);
        // Auto: a.current-context (prod) wins for kubectl, so b gets none.
        assert_eq!(Kubeconfig::load(&b).unwrap().current_context(), None);
        assert_eq!(report.current_context_file, None);
    }

    #[test]
    fn new_entries_go_where_kubectl_puts_them() {
        // client-go: the first file of the list that exists, else the last.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join(".kube/config");
        let existing = dir.path().join("existing");
        fs::write(&existing, THEIRS).unwrap();
        let list = HostKubeconfig::from_files(vec![missing.clone(), existing.clone()]).unwrap();
        let report = merge_into_host(&ours(), &list, &MergeOptions::default()).unwrap();
        assert_eq!(report.file, existing);
        assert!(
            !missing.exists() && !dir.path().join(".kube").exists(),
            "nothing created"
        );

        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let last = dir.path().join("last");
        let list = HostKubeconfig::from_files(vec![first.clone(), last.clone()]).unwrap();
        let report = merge_into_host(&ours(), &list, &MergeOptions::default()).unwrap();
        assert_eq!(report.file, last);
        assert!(report.created && !first.exists());
    }

    #[test]
    fn a_rewritten_file_keeps_its_owner_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let user = fsutil::Owner {
            uid: 1000,
            gid: 1001,
        };
        if std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid)).is_err() {
            return; // Not root: a process can only write files as itself.
        }
        merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        assert_eq!(fsutil::Owner::of(&file).unwrap(), user);
        assert_eq!(mode_of(&file), 0o600);
        assert_eq!(fsutil::Owner::of(&backup_path(&file)).unwrap(), user);

        // A new file and its new .kube folder belong to the profile's owner.
        let profile = dir.path().join("profile");
        fs::create_dir(&profile).unwrap();
        std::os::unix::fs::chown(&profile, Some(user.uid), Some(user.gid)).unwrap();
        let new = profile.join(".kube/config");
        merge_into_host(&ours(), &single(&new), &MergeOptions::default()).unwrap();
        assert_eq!(fsutil::Owner::of(&new).unwrap(), user);
        assert_eq!(fsutil::Owner::of(&profile.join(".kube")).unwrap(), user);
    }

    #[test]
    fn a_backup_that_is_a_link_of_the_file_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        fs::hard_link(&file, backup_path(&file)).unwrap();
        merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["config", "config.bak"]);
        assert_eq!(fs::read_to_string(backup_path(&file)).unwrap(), THEIRS);
    }

    #[test]
    fn temps_left_by_a_killed_merge_are_removed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        let dead = u32::MAX - 5;
        let left = [
            format!(".config.tmp-{dead}-0"),
            format!(".config.bak.tmp-{dead}-1"),
            format!(".config.lock.tmp-{dead}-2"),
        ];
        for name in &left {
            fs::write(dir.path().join(name), "client-key-data: c2VjcmV0").unwrap();
        }
        merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        for name in &left {
            assert!(!dir.path().join(name).exists(), "{name} was removed");
        }
    }

    #[test]
    fn what_kubectl_would_not_load_is_refused_and_left_byte_identical() {
        let cases: [&str; 4] = [
            // Two `clusters:` lists: kubectl keeps the second, silently.
            "clusters:\n- name: prod\n  cluster: {server: https://prod}\nclusters:\n- name: dev\n  cluster: {server: https://dev}\n",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            "users:\n- name: u\n  user: {token: one}\n- name: u\n  user: {token: two}\n",
            "clusters:\n- name: a\n  cluster: {server: https://a}\n---\nclusters: []\n",
        ];
        for content in cases {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("config");
            fs::write(&file, content).unwrap();
            let err =
                merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap_err();
            assert!(
                matches!(err, KubeconfigError::Parse { .. }),
                "{content}: {err}"
            );
            assert_eq!(fs::read_to_string(&file).unwrap(), content);
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{content}");
            let err = remove_from_host(&single(&file), "docker-desktop", &RemoveOptions::default())
                .unwrap_err();
            assert!(
                matches!(err, KubeconfigError::Parse { .. }),
                "{content}: {err}"
            );
        }
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config");
        crate::fsutil::mkfifo(&fifo);
        let err = merge_into_host(&ours(), &single(&fifo), &MergeOptions::default()).unwrap_err();
        assert!(
            matches!(err, KubeconfigError::NotRegularFile { .. }),
            "{err}"
        );
        assert!(!KubeconfigLock::lock_path(&fifo).exists());
        let err = Kubeconfig::load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(err, KubeconfigError::NotRegularFile { .. }),
            "{err}"
        );
    }

    #[test]
    fn windows_paths_never_leave_their_drive() {
        let root = Path::new("/mnt");
        let cases = [
            (r"C:\..\..\outside\config", "/mnt/c/outside/config"),
            (r"C:\Users\me\..\..\..\etc\x", "/mnt/c/etc/x"),
            (
                r"C:\Users\.\me\.kube\config",
                "/mnt/c/Users/me/.kube/config",
            ),
            (r"\\?\C:\Users\me\config", "/mnt/c/Users/me/config"),
            ("C:/../x", "/mnt/c/x"),
        ];
        for (windows, vm) in cases {
            let got = host_path_to_vm(windows, root).unwrap();
            assert_eq!(got, Path::new(vm), "{windows}");
            assert!(got.starts_with("/mnt/c"));
        }
        for refused in [
            r"C:\Users\me\config:stream",
            r".kube\config",
            r"\\server\share\config",
            r"\\?\UNC\server\share",
        ] {
            assert!(host_path_to_vm(refused, root).is_err(), "{refused}");
        }
    }

    #[test]
    fn always_sets_current_context_in_the_target_when_it_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, "users:\n- name: docker-desktop\n  user: {token: old}\n").unwrap();
        fs::write(&b, THEIRS).unwrap();
        let list = HostKubeconfig::from_files(vec![a.clone(), b.clone()]).unwrap();
        let opts = MergeOptions {
            current_context: CurrentContextMode::Always,
            ..MergeOptions::default()
        };
        let report = merge_into_host(&ours(), &list, &opts).unwrap();
        assert_eq!(report.current_context_file.as_deref(), Some(a.as_path()));
        assert_eq!(fs::read_to_string(&b).unwrap(), THEIRS, "b is not touched");
        assert_eq!(
            Kubeconfig::load(&a).unwrap().current_context(),
            Some("docker-desktop")
        );
    }

    #[test]
    fn always_sets_current_context_where_kubectl_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, THEIRS).unwrap();
        fs::write(
            &b,
            "clusters:\n- name: docker-desktop\n  cluster: {server: old}\n",
        )
        .unwrap();
        // a comes first and sets prod; our entries live in b.
        let list = HostKubeconfig::from_files(vec![a.clone(), b.clone()]).unwrap();
        let opts = MergeOptions {
            current_context: CurrentContextMode::Always,
            ..MergeOptions::default()
        };
        let report = merge_into_host(&ours(), &list, &opts).unwrap();
        assert_eq!(report.file, b);
        assert_eq!(report.current_context_file.as_deref(), Some(a.as_path()));
        assert_eq!(
            Kubeconfig::load(&a).unwrap().current_context(),
            Some("docker-desktop")
        );
        assert_eq!(Kubeconfig::load(&b).unwrap().current_context(), None);
    }

    #[test]
    fn remove_restores_the_original_and_absent_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(
            &file,
            THEIRS.replace("current-context: prod", "current-context: \"\""),
        )
        .unwrap();
        let original = Kubeconfig::load(&file).unwrap();
        merge_into_host(&ours(), &single(&file), &MergeOptions::default()).unwrap();
        assert_eq!(
            Kubeconfig::load(&file).unwrap().current_context(),
            Some("docker-desktop")
        );

        let report =
            remove_from_host(&single(&file), "docker-desktop", &RemoveOptions::default()).unwrap();
        assert!(report.found());
        assert!(report.files[0].changes.cleared_current_context);
        assert_eq!(Kubeconfig::load(&file).unwrap(), original);

        let bytes = fs::read(&file).unwrap();
        let report =
            remove_from_host(&single(&file), "docker-desktop", &RemoveOptions::default()).unwrap();
        assert!(!report.found());
        assert_eq!(fs::read(&file).unwrap(), bytes);

        let missing = dir.path().join("nope/config");
        let report = remove_from_host(
            &single(&missing),
            "docker-desktop",
            &RemoveOptions::default(),
        )
        .unwrap();
        assert!(!report.found());
        assert!(!dir.path().join("nope").exists());
    }

    #[test]
    fn remove_in_a_list_keeps_what_other_files_use() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, OURS).unwrap();
        fs::write(&b, "contexts:\n- name: mine\n  context: {cluster: docker-desktop, user: me}\ncurrent-context: docker-desktop\n").unwrap();
        let list = HostKubeconfig::from_files(vec![a.clone(), b.clone()]).unwrap();
        let report = remove_from_host(&list, "docker-desktop", &RemoveOptions::default()).unwrap();
        assert_eq!(report.files.len(), 2);
        let a_doc = Kubeconfig::load(&a).unwrap();
        assert!(
            a_doc.contains(Section::Cluster, "docker-desktop"),
            "still used by b's context"
        );
        assert!(!a_doc.contains(Section::User, "docker-desktop"));
        assert!(!a_doc.contains(Section::Context, "docker-desktop"));
        assert_eq!(Kubeconfig::load(&b).unwrap().current_context(), None);
    }
}

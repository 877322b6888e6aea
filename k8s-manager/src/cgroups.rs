//! The cluster's cgroups: one per component, under one parent per cluster
//! (`k8s-manager/<key>/<component>`, the key from the state folder), in
//! the hierarchies that count and stop processes: the freezer, cpuacct and
//! memory on cgroup v1, the one tree on v2. Every process a component
//! starts (kube-proxy's iptables, the kubelet's mounts) is in it too.
//!
//! What they give: each component's CPU time and memory, measured by the
//! kernel rather than summed over /proc, and one place to stop all its
//! processes at once and to let them go on (the freezer: v1
//! `freezer.state`, v2 `cgroup.freeze`), memory kept, nothing restarted.
//!
//! Pure parts (which hierarchies a mount table offers, the figures a
//! cgroup's files say) are functions of text; the rest reads and writes
//! the cgroup file systems.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The folder of every cluster's cgroups, in each hierarchy.
pub const PARENT: &str = "k8s-manager";

/// The name that stands for the kubelet's pods among the units frozen.
pub const PODS: &str = "pods";

/// The cgroup hierarchies of this machine that the cluster's cgroups use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1 (or hybrid: v1 controllers beside an empty v2 tree): the
    /// freezer's tree, and cpuacct's and memory's when mounted.
    V1 {
        freezer: PathBuf,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
    /// cgroup v2: one tree, its root.
    V2 { root: PathBuf },
    /// Neither a v1 freezer nor a v2 tree: the components run in the
    /// manager's cgroup, and nothing can be frozen (`why` says what is
    /// missing).
    Missing { why: String },
}

impl Hierarchy {
    /// This machine's, from its mount table.
    pub fn detect() -> Hierarchy {
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(table) => Hierarchy::from_mountinfo(&table),
            Err(err) => Hierarchy::Missing {
                why: format!("cannot read /proc/self/mountinfo: {err}"),
            },
        }
    }

    /// The hierarchies a mount table (`/proc/self/mountinfo`) offers: a v1
    /// freezer wins (a hybrid machine's pods live in v1, the kubelet's
    /// choice); else a v2 tree with controllers (`cgroup.controllers` is
    /// read by [`Hierarchy::detect`] only through this rule: a v2 mount is
    /// taken when no v1 freezer is mounted). The first mount of each wins.
    pub fn from_mountinfo(table: &str) -> Hierarchy {
        let mut freezer = None;
        let mut cpuacct = None;
        let mut memory = None;
        let mut v2 = None;
        for mount in crate::mountinfo::mounts(table) {
            let mount_point = PathBuf::from(mount.mount_point);
            match mount.fs_type {
                "cgroup" => {
                    let has = |c: &str| mount.options.split(',').any(|o| o == c);
                    if has("freezer") && freezer.is_none() {
                        freezer = Some(mount_point.clone());
                    }
                    if has("cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(mount_point.clone());
                    }
                    if has("memory") && memory.is_none() {
                        memory = Some(mount_point);
                    }
                }
                "cgroup2" if v2.is_none() => v2 = Some(mount_point),
                _ => {}
            }
        }
        match (freezer, v2) {
            (Some(freezer), _) => Hierarchy::V1 {
                freezer,
                cpuacct,
                memory,
            },
            (None, Some(root)) => Hierarchy::V2 { root },
            (None, None) => Hierarchy::Missing {
                why: "neither a cgroup v1 freezer nor a cgroup v2 tree is mounted".into(),
            },
        }
    }

    /// What status says of it.
    pub fn describe(&self) -> String {
        match self {
            Hierarchy::V1 {
                cpuacct, memory, ..
            } => {
                let mut have = vec!["freezer"];
                have.extend(cpuacct.as_ref().map(|_| "cpuacct"));
                have.extend(memory.as_ref().map(|_| "memory"));
                format!("cgroup v1 ({})", have.join(", "))
            }
            Hierarchy::V2 { .. } => "cgroup v2".into(),
            Hierarchy::Missing { why } => format!(
                "none: {why}; the components run without CPU and memory figures, and the cluster cannot be frozen"
            ),
        }
    }
}

/// Whether a cgroup's processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeState {
    Thawed,
    /// Asked to freeze, not all of its tasks stopped yet.
    Freezing,
    Frozen,
}

/// v1 `freezer.state`.
pub fn parse_freezer_state(text: &str) -> Option<FreezeState> {
    match text.trim() {
        "THAWED" => Some(FreezeState::Thawed),
        "FREEZING" => Some(FreezeState::Freezing),
        "FROZEN" => Some(FreezeState::Frozen),
        _ => None,
    }
}

/// The value of `key` in a flat-keyed file (`cgroup.events`, `cpu.stat`,
/// `memory.stat`: `key value` lines).
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// What a component's cgroup says of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of all its processes since the cgroup was made.
    pub cpu: Option<Duration>,
    /// Its working set: memory in use less the page cache it can give
    /// back (the kubelet's measure).
    pub memory: Option<u64>,
}

/// One cluster's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub hierarchy: Hierarchy,
    /// The folder of this cluster under [`PARENT`].
    key: String,
}

impl Tree {
    /// The cgroups of the cluster whose processes say `instance` (its
    /// state folder), in this machine's hierarchies.
    pub fn detect(instance: &str) -> Tree {
        Tree::new(Hierarchy::detect(), instance)
    }

    pub fn new(hierarchy: Hierarchy, instance: &str) -> Tree {
        Tree {
            hierarchy,
            key: key_of(instance),
        }
    }

    /// The cluster's folder in each hierarchy.
    fn cluster_dirs(&self) -> Vec<PathBuf> {
        let relative = Path::new(PARENT).join(&self.key);
        match &self.hierarchy {
            Hierarchy::V1 {
                freezer,
                cpuacct,
                memory,
            } => std::iter::once(freezer)
                .chain(cpuacct)
                .chain(memory)
                .map(|root| root.join(&relative))
                .collect(),
            Hierarchy::V2 { root } => vec![root.join(&relative)],
            Hierarchy::Missing { .. } => Vec::new(),
        }
    }

    /// The component's cgroup in each hierarchy (none when cgroups are
    /// missing).
    pub fn dirs(&self, component: &str) -> Vec<PathBuf> {
        self.cluster_dirs()
            .into_iter()
            .map(|dir| dir.join(component))
            .collect()
    }

    /// The cgroup that freezes the component.
    pub fn freezer_dir(&self, component: &str) -> Option<PathBuf> {
        self.dirs(component).into_iter().next()
    }

    /// Makes the component's cgroups; the `cgroup.procs` files a process
    /// writes itself into to join them (see [`crate::sys::join_cgroups_at_exec`]).
    pub fn prepare(&self, component: &str) -> io::Result<Vec<PathBuf>> {
        let mut procs = Vec::new();
        for dir in self.dirs(component) {
            std::fs::create_dir_all(&dir).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot make cgroup {}: {err}", dir.display()),
                )
            })?;
            procs.push(dir.join("cgroup.procs"));
        }
        Ok(procs)
    }

    /// Removes the component's cgroups once its processes are gone; one
    /// that still holds a process (or is not there) is left.
    pub fn remove(&self, component: &str) {
        for dir in self.dirs(component) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// The kubelet's pods' cgroup in the freezer's hierarchy (or the one
    /// tree): `kubepods` (the cgroupfs driver) or `kubepods.slice` (systemd),
    /// whichever exists.
    pub fn pods_dir(&self) -> Option<PathBuf> {
        let root = match &self.hierarchy {
            Hierarchy::V1 { freezer, .. } => freezer,
            Hierarchy::V2 { root } => root,
            Hierarchy::Missing { .. } => return None,
        };
        ["kubepods", "kubepods.slice"]
            .iter()
            .map(|name| root.join(name))
            .find(|dir| dir.is_dir())
    }

    /// The freezer cgroup of `unit`: a component's, or the pods' for
    /// [`PODS`].
    pub fn unit_dir(&self, unit: &str) -> Option<PathBuf> {
        match unit {
            PODS => self.pods_dir(),
            _ => self.freezer_dir(unit),
        }
    }

    /// Freezes or thaws each of `units` (components, [`PODS`]) in turn,
    /// each within `limit`; a unit with no cgroup (not running) is passed.
    /// A freeze that fails lets go of what it froze.
    pub async fn set_units_frozen(
        &self,
        units: &[&str],
        frozen: bool,
        limit: Duration,
    ) -> io::Result<()> {
        if let Hierarchy::Missing { why } = &self.hierarchy {
            return Err(io::Error::new(io::ErrorKind::Unsupported, why.clone()));
        }
        for (done, unit) in units.iter().enumerate() {
            let Some(dir) = self.unit_dir(unit).filter(|d| d.is_dir()) else {
                continue;
            };
            if let Err(err) = set_frozen(&self.hierarchy, &dir, frozen, limit).await {
                if frozen {
                    for unit in &units[..done] {
                        if let Some(dir) = self.unit_dir(unit) {
                            let _ = request_freeze(&self.hierarchy, &dir, false);
                        }
                    }
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// Whether `unit`'s cgroup is frozen or freezing.
    pub fn is_frozen(&self, unit: &str) -> bool {
        self.unit_dir(unit).is_some_and(|dir| {
            freeze_state(&self.hierarchy, &dir).is_ok_and(|s| s != FreezeState::Thawed)
        })
    }

    /// Whether any cgroup of the cluster (or the pods') is frozen or
    /// freezing: a freeze a dead manager left counts.
    pub fn any_frozen(&self) -> bool {
        let mut dirs: Vec<PathBuf> = self.pods_dir().into_iter().collect();
        if let Some(cluster) = self.cluster_dirs().into_iter().next()
            && let Ok(entries) = std::fs::read_dir(&cluster)
        {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        dirs.iter()
            .any(|dir| freeze_state(&self.hierarchy, dir).is_ok_and(|s| s != FreezeState::Thawed))
    }

    /// Removes the cluster's cgroups that hold no process, and the parent
    /// folder when no cluster has any left.
    pub fn remove_all(&self) {
        for dir in self.cluster_dirs() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    /// The processes in the component's cgroup.
    pub fn pids(&self, component: &str) -> Vec<u32> {
        self.freezer_dir(component)
            .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Every process of the cluster: its components' (and what they run)
    /// and its pods'.
    pub fn all_pids(&self) -> Vec<u32> {
        let mut dirs: Vec<PathBuf> = self.cluster_dirs().into_iter().take(1).collect();
        dirs.extend(self.pods_dir());
        let mut pids = Vec::new();
        while let Some(dir) = dirs.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids
    }

    /// The component's CPU time and working set.
    pub fn usage(&self, component: &str) -> Usage {
        let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).ok();
        match &self.hierarchy {
            Hierarchy::V1 {
                cpuacct, memory, ..
            } => {
                let relative = Path::new(PARENT).join(&self.key).join(component);
                let cpu = cpuacct
                    .as_ref()
                    .and_then(|root| read(&root.join(&relative), "cpuacct.usage"))
                    .and_then(|t| t.trim().parse().ok())
                    .map(Duration::from_nanos);
                let memory = memory.as_ref().and_then(|root| {
                    let dir = root.join(&relative);
                    let used: u64 = read(&dir, "memory.usage_in_bytes")?.trim().parse().ok()?;
                    let stat = read(&dir, "memory.stat")?;
                    let inactive = flat_key(&stat, "total_inactive_file").unwrap_or(0);
                    Some(used.saturating_sub(inactive))
                });
                Usage { cpu, memory }
            }
            Hierarchy::V2 { root } => {
                let dir = root.join(PARENT).join(&self.key).join(component);
                let cpu = read(&dir, "cpu.stat")
                    .and_then(|t| flat_key(&t, "usage_usec"))
                    .map(Duration::from_micros);
                let memory = read(&dir, "memory.current").and_then(|t| {
                    let used: u64 = t.trim().parse().ok()?;
                    let inactive = read(&dir, "memory.stat")
                        .and_then(|s| flat_key(&s, "inactive_file"))
                        .unwrap_or(0);
                    Some(used.saturating_sub(inactive))
                });
                Usage { cpu, memory }
            }
            Hierarchy::Missing { .. } => Usage::default(),
        }
    }

    /// On v2, the memory controller for the cluster's cgroups (its figures
    /// need it enabled in every parent); a machine that does not offer it
    /// just has no memory figure.
    pub fn enable_v2_memory(&self) {
        if let Hierarchy::V2 { root } = &self.hierarchy {
            let parent = root.join(PARENT);
            let _ = std::fs::create_dir_all(parent.join(&self.key));
            for dir in [root.clone(), parent.clone(), parent.join(&self.key)] {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu");
            }
        }
    }
}

/// Freezes the processes of cgroup `dir` (a component's, or the kubelet's
/// pods'), or lets them go on: the request only; see [`freeze_state`].
pub fn request_freeze(hierarchy: &Hierarchy, dir: &Path, frozen: bool) -> io::Result<()> {
    let (file, value) = match (hierarchy, frozen) {
        (Hierarchy::V1 { .. }, true) => ("freezer.state", "FROZEN"),
        (Hierarchy::V1 { .. }, false) => ("freezer.state", "THAWED"),
        (Hierarchy::V2 { .. }, true) => ("cgroup.freeze", "1"),
        (Hierarchy::V2 { .. }, false) => ("cgroup.freeze", "0"),
        (Hierarchy::Missing { why }, _) => {
            return Err(io::Error::new(io::ErrorKind::Unsupported, why.clone()));
        }
    };
    std::fs::write(dir.join(file), value).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot write {} of {}: {err}", file, dir.display()),
        )
    })
}

/// Whether cgroup `dir`'s processes run.
pub fn freeze_state(hierarchy: &Hierarchy, dir: &Path) -> io::Result<FreezeState> {
    let bad = |file: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} of {} does not read", file, dir.display()),
        )
    };
    match hierarchy {
        Hierarchy::V1 { .. } => {
            parse_freezer_state(&std::fs::read_to_string(dir.join("freezer.state"))?)
                .ok_or_else(|| bad("freezer.state"))
        }
        Hierarchy::V2 { .. } => {
            let asked = std::fs::read_to_string(dir.join("cgroup.freeze"))?;
            let events = std::fs::read_to_string(dir.join("cgroup.events"))?;
            let frozen = flat_key(&events, "frozen").ok_or_else(|| bad("cgroup.events"))?;
            Ok(match (asked.trim() == "1", frozen == 1) {
                (_, true) => FreezeState::Frozen,
                (true, false) => FreezeState::Freezing,
                (false, false) => FreezeState::Thawed,
            })
        }
        Hierarchy::Missing { why } => Err(io::Error::new(io::ErrorKind::Unsupported, why.clone())),
    }
}

/// Freezes (or thaws) cgroup `dir` and waits until the kernel says it is
/// done, up to `limit`: a task in an uninterruptible wait can hold a v1
/// freeze back, which is then an error that names it (and the cgroup is
/// let go, not left half-frozen).
pub async fn set_frozen(
    hierarchy: &Hierarchy,
    dir: &Path,
    frozen: bool,
    limit: Duration,
) -> io::Result<()> {
    let want = if frozen {
        FreezeState::Frozen
    } else {
        FreezeState::Thawed
    };
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        // v1 retries a freeze on each write of FROZEN; writing again while
        // FREEZING is how it is pushed on.
        request_freeze(hierarchy, dir, frozen)?;
        if freeze_state(hierarchy, dir)? == want {
            return Ok(());
        }
        if start.elapsed() > limit {
            if frozen {
                let _ = request_freeze(hierarchy, dir, false);
            }
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not {} within {:?}",
                    dir.display(),
                    if frozen { "freeze" } else { "thaw" },
                    limit
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The folder name of a cluster: a digest of its instance (the state
/// folder's path), short, and the same for every manager of that folder.
fn key_of(instance: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, instance.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
53 47 0:34 / /var/tmp/chroot/sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
";

    #[test]
    fn a_hybrid_machine_uses_its_v1_freezer_and_the_first_mounts() {
        assert_eq!(
            Hierarchy::from_mountinfo(HYBRID),
            Hierarchy::V1 {
                freezer: "/sys/fs/cgroup/freezer".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
                memory: Some("/sys/fs/cgroup/memory".into()),
            }
        );
    }

    #[test]
    fn joined_controllers_and_v2_and_none_are_told_apart() {
        let joined = "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      26 24 0:23 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n";
        assert_eq!(
            Hierarchy::from_mountinfo(joined),
            Hierarchy::V1 {
                freezer: "/sys/fs/cgroup/freezer".into(),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct".into()),
                memory: None,
            }
        );
        let v2 = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Hierarchy::from_mountinfo(v2),
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        let none = "22 1 0:21 / /proc rw - proc proc rw\n";
        assert!(matches!(
            Hierarchy::from_mountinfo(none),
            Hierarchy::Missing { .. }
        ));
        let spaced = "26 24 0:23 / /mnt/cg\\040x rw - cgroup cgroup rw,freezer\n";
        assert!(matches!(
            Hierarchy::from_mountinfo(spaced),
            Hierarchy::V1 { freezer, .. } if freezer == Path::new("/mnt/cg x")
        ));
    }

    #[test]
    fn each_component_has_a_cgroup_in_each_hierarchy_under_its_cluster() {
        let tree = Tree::new(Hierarchy::from_mountinfo(HYBRID), "/var/lib/k8s-manager");
        let dirs = tree.dirs("etcd");
        assert_eq!(dirs.len(), 3);
        for (dir, root) in dirs.iter().zip(["freezer", "cpuacct", "memory"]) {
            assert!(dir.starts_with(Path::new("/sys/fs/cgroup").join(root).join(PARENT)));
            assert!(dir.ends_with("etcd"));
        }
        // Another state folder, another folder; the same, the same.
        let other = Tree::new(Hierarchy::from_mountinfo(HYBRID), "/tmp/other");
        assert_ne!(other.dirs("etcd"), dirs);
        assert_eq!(
            Tree::new(tree.hierarchy.clone(), "/var/lib/k8s-manager"),
            tree
        );
        let missing = Tree::new(Hierarchy::Missing { why: "x".into() }, "/a");
        assert!(missing.dirs("etcd").is_empty());
        assert_eq!(missing.usage("etcd"), Usage::default());
    }

    #[test]
    fn status_says_which_hierarchy_and_what_is_lost_without_one() {
        assert_eq!(
            Hierarchy::from_mountinfo(HYBRID).describe(),
            "cgroup v1 (freezer, cpuacct, memory)"
        );
        let bare = "26 24 0:23 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer\n";
        assert_eq!(
            Hierarchy::from_mountinfo(bare).describe(),
            "cgroup v1 (freezer)"
        );
        let none = Hierarchy::from_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n").describe();
        assert!(
            none.starts_with("none: neither a cgroup v1 freezer nor a cgroup v2 tree is mounted"),
            "{none}"
        );
        assert!(none.contains("cannot be frozen"), "{none}");
    }

    #[test]
    fn the_kernels_files_read() {
        assert_eq!(parse_freezer_state("FROZEN\n"), Some(FreezeState::Frozen));
        assert_eq!(
            parse_freezer_state("FREEZING\n"),
            Some(FreezeState::Freezing)
        );
        assert_eq!(parse_freezer_state("THAWED\n"), Some(FreezeState::Thawed));
        assert_eq!(parse_freezer_state("thawed"), None);
        let events = "populated 1\nfrozen 0\n";
        assert_eq!(flat_key(events, "frozen"), Some(0));
        assert_eq!(flat_key(events, "populated"), Some(1));
        assert_eq!(flat_key(events, "froze"), None);
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(flat_key(stat, "usage_usec"), Some(123_456));
    }

    /// A busy process in a cgroup of its own, frozen and thawed for real
    /// on every hierarchy this machine mounts (v1's freezer, and the v2 tree
    /// a hybrid machine mounts beside it): frozen, it uses no CPU.
    #[tokio::test]
    async fn a_frozen_cgroup_uses_no_cpu_and_a_thawed_one_runs() {
        if !crate::sys::is_root() {
            eprintln!("not root: cgroups cannot be made");
            return;
        }
        let mut tried = 0;
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let v2_table: String = table
            .lines()
            .filter(|l| l.contains(" - cgroup2 "))
            .map(|l| format!("{l}\n"))
            .collect();
        for hierarchy in [
            Hierarchy::from_mountinfo(&table),
            Hierarchy::from_mountinfo(&v2_table),
        ] {
            if matches!(hierarchy, Hierarchy::Missing { .. }) {
                continue;
            }
            tried += 1;
            let tree = Tree::new(
                hierarchy.clone(),
                &format!("test-freeze-{}", std::process::id()),
            );
            let procs = tree.prepare("busy").unwrap();
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", "while :; do :; done"]);
            crate::sys::join_cgroups_at_exec(&mut cmd, &procs).unwrap();
            let mut child = cmd.spawn().unwrap();
            let dir = tree.freezer_dir("busy").unwrap();
            assert_eq!(tree.pids("busy"), vec![child.id()], "{hierarchy:?}");
            let cpu_of = |pid: u32| -> u64 {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
                let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            set_frozen(&hierarchy, &dir, true, Duration::from_secs(5))
                .await
                .unwrap();
            let frozen_at = cpu_of(child.id());
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                cpu_of(child.id()),
                frozen_at,
                "{hierarchy:?}: ran while frozen"
            );
            assert_eq!(freeze_state(&hierarchy, &dir).unwrap(), FreezeState::Frozen);
            set_frozen(&hierarchy, &dir, false, Duration::from_secs(5))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                cpu_of(child.id()) > frozen_at,
                "{hierarchy:?}: did not run again"
            );
            if let Hierarchy::V1 {
                cpuacct: Some(_), ..
            }
            | Hierarchy::V2 { .. } = hierarchy
            {
                assert!(tree.usage("busy").cpu.unwrap() > Duration::from_millis(100));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            // The kernel lets a cgroup go once its last task is reaped.
            let start = std::time::Instant::now();
            while !tree.pids("busy").is_empty() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            tree.remove("busy");
            assert!(!dir.exists(), "{}", dir.display());
            tree.remove_all();
            assert!(tree.cluster_dirs().iter().all(|d| !d.exists()));
        }
        assert!(tried > 0, "no cgroup hierarchy to try");
    }
}

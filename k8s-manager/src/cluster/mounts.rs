//! Mounts kubelet leaves under its root folder (secret and projected volumes
//! are tmpfs mounts): unmounted after the pods are gone, so that a disabled
//! cluster leaves nothing mounted and a reset can delete the folder.

use std::path::{Path, PathBuf};

/// Mount points at or below `root`, deepest first, from mountinfo text.
pub fn mounts_below(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(crate::mountinfo::unescape(p)))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Unmounts everything at or below `root` (lazily, so a busy mount does not
/// block the stop).
pub fn unmount_below(root: &Path) -> Result<(), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading mountinfo: {e}"))?;
    let mut failed = Vec::new();
    for mount in mounts_below(&mountinfo, root) {
        if let Err(err) = crate::sys::unmount_detached(&mount)
            && err.raw_os_error() != Some(libc::EINVAL)
            && err.raw_os_error() != Some(libc::ENOENT)
        {
            failed.push(format!("{}: {err}", mount.display()));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("cannot unmount {}", failed.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_below_a_root_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
300 22 0:50 / /var/lib/k8s-manager/kubelet/pods/a/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
301 22 0:51 / /var/lib/k8s-manager/kubelet/pods/b/volumes/kubernetes.io~secret/my\\040secret rw - tmpfs tmpfs rw
302 22 0:52 / /var/lib/k8s-manager/kubelet rw - tmpfs tmpfs rw
303 22 0:53 / /var/lib/k8s-manager/kubelet-other rw - tmpfs tmpfs rw
";
        let found = mounts_below(info, Path::new("/var/lib/k8s-manager/kubelet"));
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found.last().unwrap(),
            Path::new("/var/lib/k8s-manager/kubelet")
        );
        assert!(found.contains(&PathBuf::from(
            "/var/lib/k8s-manager/kubelet/pods/b/volumes/kubernetes.io~secret/my secret"
        )));
    }
}

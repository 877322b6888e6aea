//! Finding and ending the children of a manager that died: every child
//! carries the instance marker in its environment, which `/proc/<pid>/environ`
//! shows to root even after the parent is gone.

use std::time::{Duration, Instant};

use super::{COMPONENT_ENV, INSTANCE_ENV};
use crate::sys;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleProcess {
    pub pid: u32,
    pub component: String,
}

/// Processes that carry `instance`'s marker, except those in `ours`.
pub fn find(instance: &str, ours: &[u32]) -> Vec<StaleProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let want = format!("{INSTANCE_ENV}={instance}");
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || ours.contains(&pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let mut marked = false;
        let mut component = String::new();
        for var in environ.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if var == want {
                marked = true;
            } else if let Some(name) = var.strip_prefix(&format!("{COMPONENT_ENV}=")) {
                component = name.to_string();
            }
        }
        if marked && !component.is_empty() {
            found.push(StaleProcess { pid, component });
        }
    }
    found
}

/// Ends stale processes and returns what was found. Those whose component
/// is in `graceful` (etcd: it owns the cluster's data) get SIGTERM, and
/// SIGKILL if still alive after `grace`; the others get SIGKILL at once,
/// first. They keep nothing a SIGKILL could lose, and gone, their
/// connections no longer hold up the graceful ones: an etcd whose API
/// server is still connected takes seconds over a SIGTERM, one whose API
/// server was killed first takes 0.15 s.
pub fn end(instance: &str, ours: &[u32], grace: Duration, graceful: &[&str]) -> Vec<StaleProcess> {
    let stale = find(instance, ours);
    for p in &stale {
        tracing::info!(
            "ending stale {} (pid {}) left by an earlier manager",
            p.component,
            p.pid
        );
    }
    let (gentle, blunt): (Vec<_>, Vec<_>) = stale
        .iter()
        .partition(|p| graceful.contains(&p.component.as_str()));
    for p in &blunt {
        sys::signal(p.pid, libc::SIGKILL);
    }
    for p in &gentle {
        sys::signal(p.pid, libc::SIGTERM);
    }
    let alive = |p: &StaleProcess| crate::sys::process_alive(p.pid);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && gentle.iter().any(|p| alive(p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in gentle.iter().filter(|p| alive(p)) {
        sys::signal(p.pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && stale.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn finds_and_ends_marked_processes_only() {
        let instance = format!("stale-test-{}", std::process::id());
        let mut marked = Command::new("sleep")
            .arg("30")
            .env(INSTANCE_ENV, &instance)
            .env(COMPONENT_ENV, "etcd")
            .spawn()
            .unwrap();
        let mut other = Command::new("sleep")
            .arg("30")
            .env(INSTANCE_ENV, "another-instance")
            .env(COMPONENT_ENV, "etcd")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let found = find(&instance, &[]);
        assert_eq!(
            found,
            vec![StaleProcess {
                pid: marked.id(),
                component: "etcd".into()
            }]
        );
        assert!(
            find(&instance, &[marked.id()]).is_empty(),
            "our own children are not stale"
        );
        let ended = end(&instance, &[], Duration::from_secs(2), &[]);
        assert_eq!(ended.len(), 1);
        assert!(marked.wait().unwrap().code().is_none(), "ended by a signal");
        assert!(
            other.try_wait().unwrap().is_none(),
            "another instance's process is left alone"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn the_graceful_get_sigterm_after_the_others_are_killed() {
        use std::os::unix::process::ExitStatusExt;
        let instance = format!("stale-order-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        // Each says a SIGTERM reached it, if its trap gets to run. (A
        // busy loop: a `sleep` child would carry the marker too.)
        let spawn = |component: &str| {
            let said = dir.path().join(component);
            let script = format!(
                "trap 'echo TERM > {}; exit 0' TERM; while :; do :; done",
                said.display()
            );
            Command::new("sh")
                .args(["-c", &script])
                .env(INSTANCE_ENV, &instance)
                .env(COMPONENT_ENV, component)
                .spawn()
                .unwrap()
        };
        let mut store = spawn("etcd");
        let mut server = spawn("kube-apiserver");
        std::thread::sleep(Duration::from_millis(100));
        let ended = end(&instance, &[], Duration::from_secs(5), &["etcd"]);
        assert_eq!(ended.len(), 2);
        assert_eq!(store.wait().unwrap().code(), Some(0), "etcd ran its trap");
        assert!(dir.path().join("etcd").exists());
        assert_eq!(server.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(!dir.path().join("kube-apiserver").exists());
    }
}

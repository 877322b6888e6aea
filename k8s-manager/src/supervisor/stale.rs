//! Finding and ending the children of a manager that died: every child
//! carries the instance marker in its environment, which `/proc/<pid>/environ`
//! shows to root even after the parent is gone.

use std::time::{Duration, Instant};

use super::{COMPONENT_ENV, INSTANCE_ENV};

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

/// Ends stale processes: SIGTERM, then SIGKILL to those still alive after
/// `grace`. Returns what was found.
pub fn end(instance: &str, ours: &[u32], grace: Duration) -> Vec<StaleProcess> {
    let stale = find(instance, ours);
    for p in &stale {
        tracing::info!(
            "ending stale {} (pid {}) left by an earlier manager",
            p.component,
            p.pid
        );
        signal(p.pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && stale
            .iter()
            .any(|p| crate::cluster::state::process_alive(p.pid))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &stale {
        if crate::cluster::state::process_alive(p.pid) {
            signal(p.pid, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && stale
            .iter()
            .any(|p| crate::cluster::state::process_alive(p.pid))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    stale
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: plain kill(2) on a pid we just read from /proc.
    unsafe {
        libc::kill(pid as i32, signal);
    }
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
        let ended = end(&instance, &[], Duration::from_secs(2));
        assert_eq!(ended.len(), 1);
        assert!(marked.wait().unwrap().code().is_none(), "ended by a signal");
        assert!(
            other.try_wait().unwrap().is_none(),
            "another instance's process is left alone"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}

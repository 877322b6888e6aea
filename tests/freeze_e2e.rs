//! `pause` and `resume` on a real cluster: every component and the pods
//! frozen through their cgroups (no CPU used, nothing restarted), status
//! saying so; `resume` after a short pause gives back a cluster whose node
//! stayed Ready and whose processes and containers are the same (after a
//! pause past the kubelet's 30 s runtime check the node can be NotReady for
//! a status period: `bench/freeze.sh` measures that, and the README says it); `disable` of a paused
//! cluster stops it; a daemon killed while the cluster is paused leaves a
//! freeze that the next `enable` thaws.
//!
//! Needs root, containerd prepared by vm/prepare-vm.sh, the bundle
//! (`K8S_MANAGER_BUNDLE`) and upstream kubectl; tests/run.sh provides them.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::cluster::{Cluster, wait_until};

/// The freezer cgroup of process `pid` (v1 `freezer` line, else v2's).
fn freezer_cgroup(pid: u64) -> PathBuf {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        if controllers.is_some_and(|c| c.split(',').any(|c| c == "freezer")) {
            return PathBuf::from(format!("/sys/fs/cgroup/freezer{}", path.unwrap()));
        }
    }
    let path = table
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("no cgroup");
    PathBuf::from(format!("/sys/fs/cgroup{path}"))
}

/// Whether the cgroup at `dir` is frozen (v1 `freezer.state`, v2 `cgroup.events`).
fn frozen(dir: &std::path::Path) -> bool {
    match std::fs::read_to_string(dir.join("freezer.state")) {
        Ok(state) => state.trim() == "FROZEN",
        Err(_) => std::fs::read_to_string(dir.join("cgroup.events"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == "frozen 1"),
    }
}

/// CPU ticks a process used so far, all its threads.
fn ticks(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn status_json(cluster: &Cluster) -> serde_json::Value {
    let out = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    serde_json::from_str(&out).unwrap()
}

/// Each container's restart count, by pod.
fn restarts(cluster: &Cluster) -> String {
    cluster.kubectl_ok(&[
        "get",
        "pods",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.containerStatuses[*].restartCount} {end}",
    ])
}

/// The kubelet's pods' cgroup in the freezer hierarchy.
fn pods_cgroup() -> PathBuf {
    ["/sys/fs/cgroup/freezer/kubepods", "/sys/fs/cgroup/kubepods"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .expect("no kubepods cgroup")
}

#[test]
fn pause_freezes_everything_and_resume_after_a_short_pause_gives_the_same_cluster_back() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let components = cluster.component_pids();
    assert_eq!(components.len(), 6, "{components:?}");
    let restarts_before = restarts(&cluster);

    support::run_ok(&mut cluster.manager(&["pause"]));
    let mut awake = Vec::new();
    for (name, pid) in &components {
        let dir = freezer_cgroup(*pid);
        if !frozen(&dir) {
            awake.push(format!("{name}: {}", dir.display()));
        }
    }
    if !frozen(&pods_cgroup()) {
        awake.push("the pods".into());
    }
    assert!(awake.is_empty(), "not frozen: {awake:?}");
    // Frozen, they use no CPU.
    let before: Vec<u64> = components.iter().map(|(_, pid)| ticks(*pid)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<u64> = components.iter().map(|(_, pid)| ticks(*pid)).collect();
    assert_eq!(before, after, "CPU used while frozen: {components:?}");
    let status = status_json(&cluster);
    assert_eq!(status["paused"], true, "{status}");
    assert!(
        status["summary"].as_str().unwrap().starts_with("paused"),
        "{status}"
    );
    let text = support::run_ok(&mut cluster.manager(&["status"]));
    assert!(text.starts_with("Kubernetes: paused"), "{text}");

    support::run_ok(&mut cluster.manager(&["resume"]));
    let status = status_json(&cluster);
    assert_eq!(status["paused"], false, "{status}");
    assert_eq!(status["summary"], "running", "{status}");
    // The same processes, the same containers, the node Ready all along
    // (the node's Ready condition has not moved since before the pause).
    assert_eq!(cluster.component_pids(), components);
    cluster.kubectl_ok(&["get", "nodes"]);
    assert_eq!(cluster.node_ready_condition(), "True");
    assert_eq!(restarts(&cluster), restarts_before);
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "involvedObject.kind=Node",
    ]);
    assert!(!events.contains("NodeNotReady"), "{events}");
}

#[test]
fn a_paused_cluster_is_disabled_and_a_freeze_left_by_a_killed_daemon_is_thawed_by_enable() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    support::run_ok(&mut cluster.manager(&["pause"]));
    // disable thaws first: a frozen process does not even die of SIGKILL.
    support::run_ok(&mut cluster.manager(&["disable"]));
    let left = support::marked_processes(&cluster.state());
    assert!(left.is_empty(), "left running: {left:?}");

    cluster.enable_ok();
    support::run_ok(&mut cluster.manager(&["pause"]));
    let components = cluster.component_pids();
    let daemon = cluster.daemon_pid().expect("the daemon's pid");
    support::holds::signal(daemon, libc::SIGKILL);
    wait_until("the killed daemon is gone", Duration::from_secs(10), || {
        !support::holds::alive(daemon)
    });
    // The components run on, frozen, without their manager.
    assert!(
        components
            .iter()
            .all(|(_, pid)| frozen(&freezer_cgroup(*pid)))
    );
    cluster.enable_ok();
    let status = status_json(&cluster);
    assert_eq!(status["paused"], false, "{status}");
    assert!(!frozen(&pods_cgroup()));
    cluster.kubectl_ok(&["get", "nodes"]);
    assert_eq!(cluster.node_ready_condition(), "True");
}

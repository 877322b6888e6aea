//! A daemon does not outlive its purpose: it exits when its state folder is
//! deleted, after an idle time when asked to (the CLI starts its daemon so),
//! and on `daemon --stop`. Real daemons, no cluster: nothing is enabled.

mod support;

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use support::{manager_bin, run_ok};

fn daemon(state: &Path, extra: &[&str]) -> Child {
    let child = Command::new(manager_bin())
        .arg("--state-dir")
        .arg(state)
        .args(["daemon", "--no-restore"])
        .args(extra)
        .spawn()
        .expect("the daemon starts");
    let socket = state.join("manager.sock");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the daemon never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The socket is the daemon's first act; an answer means it is made.
    run_ok(
        Command::new(manager_bin())
            .arg("--state-dir")
            .arg(state)
            .args(["status"]),
    );
    child
}

/// The daemon's exit status within `limit`, or a failed test (and the
/// daemon killed) when it does not exit.
fn exits_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the daemon still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_daemon_whose_state_folder_is_deleted_exits() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = daemon(&state, &[]);
    std::fs::remove_dir_all(&state).unwrap();
    assert!(exits_within(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn a_daemon_asked_to_exits_when_idle_with_the_cluster_off() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let started = Instant::now();
    let mut child = daemon(&state, &["--exit-when-idle", "2s"]);
    // Asked for its status meanwhile: it answers, and stays idle.
    let status = Command::new(manager_bin())
        .arg("--state-dir")
        .arg(&state)
        .args(["status", "--output", "json"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("\"managerRunning\": true"), "{said}");
    assert!(exits_within(&mut child, Duration::from_secs(10)).success());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !state.join("manager.sock").exists(),
        "the socket is removed"
    );
}

#[test]
fn daemon_stop_ends_the_daemon_of_the_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = daemon(&state, &[]);
    let said = Command::new(manager_bin())
        .arg("--state-dir")
        .arg(&state)
        .args(["daemon", "--stop"])
        .output()
        .unwrap();
    assert!(
        said.status.success(),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    assert!(
        String::from_utf8_lossy(&said.stderr).contains(&format!("(pid {}) stopped", child.id())),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );
    assert!(exits_within(&mut child, Duration::from_secs(2)).success());
    // None left: said, and not an error.
    let out = run_ok(
        Command::new(manager_bin())
            .arg("--state-dir")
            .arg(&state)
            .args(["daemon", "--stop"]),
    );
    assert!(out.is_empty());
}

/// A daemon that dies as a request arrives (killed, crashed, or exiting when
/// idle) never took it: the CLI waits for it to be gone and hands the
/// request to the next daemon, which it starts. Found as a 1-in-6 failure
/// (`talking to the manager: connection error`) after `kill -9` of the CLI
/// and its daemon: a daemon being killed still accepts for a moment.
#[test]
fn a_request_dropped_by_a_dying_daemon_goes_to_the_next_one() {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let listener = UnixListener::bind(state.join("manager.sock")).unwrap();
    let dying = std::thread::spawn(move || {
        // Probes (a connect and close) are let through; the first request
        // is read and dropped unanswered, and the daemon is gone, its socket
        // file left behind as a killed daemon leaves it.
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 512];
            if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                return;
            }
        }
    });
    let out = Command::new(manager_bin())
        .arg("--state-dir")
        .arg(&state)
        .args(["disable", "--output", "json"])
        .output()
        .unwrap();
    dying.join().unwrap();
    let stop = Command::new(manager_bin())
        .arg("--state-dir")
        .arg(&state)
        .args(["daemon", "--stop"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("\"event\":\"done\",\"operation\":\"disable\""),
        "{said}"
    );
    assert!(
        stop.status.success(),
        "the next daemon was started and stopped"
    );
}

/// Each file of `dir` (recursively) with its size and modification time.
fn listing(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut next = vec![dir.to_path_buf()];
    while let Some(at) = next.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                next.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_second_daemon_of_a_folder_touches_nothing_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut first = daemon(&state, &[]);
    // Answered: the first daemon made its files.
    let settings = || {
        run_ok(
            Command::new(manager_bin())
                .arg("--state-dir")
                .arg(&state)
                .args(["settings", "get"]),
        )
    };
    settings();
    let before = listing(&state);
    let second = Command::new(manager_bin())
        .arg("--state-dir")
        .arg(&state)
        .arg("daemon")
        .output()
        .expect("the second daemon runs");
    assert!(!second.status.success(), "the second daemon did not stop");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another manager already answers"),
        "{stderr}"
    );
    assert_eq!(
        listing(&state),
        before,
        "the second daemon changed the folder"
    );
    // The first still answers, on its own socket.
    settings();
    let _ = first.kill();
    let _ = first.wait();
}

/// A user starts over by deleting the state folder while a daemon idles,
/// then enables: the leaving daemon removes only what is still its own, and
/// the enable works the first time.
#[test]
fn an_enable_after_the_state_folder_was_deleted_under_an_idle_daemon_works() {
    let cluster = support::cluster::Cluster::new();
    // A daemon that idles: started by a CLI call, the cluster off.
    run_ok(&mut cluster.manager(&["settings", "get"]));
    let old = daemons_of(&cluster.state());
    assert_eq!(old.len(), 1, "one daemon idles: {old:?}");
    std::fs::remove_dir_all(cluster.state()).unwrap();
    let out = cluster.enable();
    assert!(
        out.status.success(),
        "the enable after the folder was deleted failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The old daemon left; the new one runs the cluster and still answers
    // on its socket well after the old one's exit.
    std::thread::sleep(Duration::from_secs(3));
    let status = run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"]["state"], "running", "{status}");
    assert_eq!(status["managerRunning"], true, "{status}");
    let now = daemons_of(&cluster.state());
    assert!(
        !now.contains(&old[0]),
        "the old daemon {} is still there",
        old[0]
    );
    assert_eq!(now.len(), 1, "one daemon runs the cluster: {now:?}");
}

/// The daemons of the state folder `state`, by their command lines.
fn daemons_of(state: &Path) -> Vec<u32> {
    let wanted = state.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = args
                .windows(2)
                .any(|w| w[0] == "--state-dir" && w[1] == wanted)
                && args.iter().any(|a| a == "daemon");
            ours.then_some(pid)
        })
        .collect()
}

//! The bundle's pause (vm/bundle/pause/pause.c), compiled here as the builder
//! compiles it: prints its version on -v, exits 0 on SIGTERM and SIGINT, and
//! reaps children that end up parented to it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn build(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/bundle/pause/pause.c");
    let out = dir.join("pause");
    support::run_ok(
        Command::new("cc")
            .args([
                "-static",
                "-Os",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-DPAUSE_VERSION=\"3.10.1\"",
                "-o",
            ])
            .arg(&out)
            .arg(&source),
    );
    out
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child this test started.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Zombie children of `pid`, from /proc.
fn zombie_children(pid: u32) -> Vec<u32> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
            zombies.push(entry.file_name().to_string_lossy().parse().unwrap());
        }
    }
    zombies
}

#[test]
fn prints_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::run_ok(Command::new(build(dir.path())).arg("-v"));
    assert_eq!(out.trim(), "pause.c 3.10.1");
}

#[test]
fn exits_zero_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let pause = build(dir.path());
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(&pause).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause must keep running until signalled"
        );
        signal(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "signal {sig}: {status}");
    }
}

#[test]
fn reaps_children_it_inherits() {
    let dir = tempfile::tempdir().unwrap();
    let pause = build(dir.path());
    // The shell's background children become pause's when the shell execs it.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("sleep 0.2 & sleep 0.3 & exec {}", pause.display()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        zombie_children(child.id()),
        Vec::<u32>::new(),
        "pause left zombies"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "pause exited when its children did"
    );
    signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

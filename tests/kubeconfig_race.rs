//! Concurrent writers on one kubeconfig: 8 real `kubectl config set-context`
//! processes and repeated `k8s-manager kubeconfig merge` calls on the same
//! file. kubectl takes `<file>.lock` and fails at once when it is held, so
//! each kubectl writer retries as a person would (bounded); the manager waits
//! for the lock by itself, so every merge must succeed first time.
//!
//! kubectl loses updates on its own under concurrency: `set-context` reads the
//! file before taking the lock and, once it holds it, deletes every entry
//! that appeared in between (client-go `ModifyConfig` diffs its stale copy
//! against the file), ours included. That is upstream behaviour, not ours, so
//! the test goes on as a user would: after the storm, the manager merges once
//! more (its normal job) and each writer whose context was lost sets it again,
//! in rounds until one round needs no write.
//!
//! What must hold for us: no merge fails or times out, kubectl never finds
//! the lock stuck, the file always parses, no lock or temp file is left, and
//! at the end kubectl sees every ctx-i and our entries.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use k8s_manager::kubeconfig::{Kubeconfig, Section};
use serde_json::Value;
use support::{manager_bin, run, run_ok, upstream_kubectl};

const WRITERS: usize = 8;
const MERGES: usize = 30;
/// Contexts already in the file: a file of real size keeps the lock held
/// long enough, by kubectl and by us, for the writers to collide.
const EXISTING: usize = 300;
/// kubectl attempts per write before the test gives up on a writer.
const ATTEMPTS: usize = 400;
/// Settling rounds after the storm before the test gives up.
const MAX_ROUNDS: usize = 6;

fn our_kubeconfig() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubeconfig/ours-docker-desktop.yaml")
}

fn kubectl(file: &Path) -> Command {
    let mut cmd = Command::new(upstream_kubectl());
    cmd.env_remove("KUBECONFIG").arg("--kubeconfig").arg(file);
    cmd
}

fn has_context(file: &Path, name: &str) -> bool {
    run(kubectl(file).args(["config", "get-contexts", name]))
        .status
        .success()
}

/// Failed kubectl attempts, by cause.
#[derive(Default, Debug)]
struct Refusals {
    lock_held: usize,
    other: usize,
}

/// Sets `ctx-i` with kubectl, retrying (bounded) while it fails: mostly
/// because the lock is held, sometimes because it read a file another
/// kubectl was rewriting in place (kubectl does not write atomically).
fn set_context(file: &Path, i: usize, refusals: &mut Refusals) {
    for attempt in 0..ATTEMPTS {
        let out = run(kubectl(file).args([
            "config",
            "set-context",
            &format!("ctx-{i}"),
            "--cluster=c",
            "--user=u",
        ]));
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains(".lock: file exists") {
            refusals.lock_held += 1;
        } else {
            refusals.other += 1;
        }
        if attempt + 1 == ATTEMPTS {
            panic!("kubectl writer {i} gave up after {ATTEMPTS} attempts; last error: {stderr}");
        }
        thread::sleep(Duration::from_millis(
            2 + (attempt as u64 * 7 + i as u64) % 20,
        ));
    }
}

fn merge(file: &Path, from: &Path) -> String {
    run_ok(
        Command::new(manager_bin())
            .args(["kubeconfig", "merge", "--from"])
            .arg(from)
            .arg("--into")
            .arg(file)
            .args(["--lock-timeout", "30s"]),
    )
}

#[test]
fn kubectl_writers_and_merges_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    let mut seed = String::from(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://c.example\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n",
    );
    for i in 0..EXISTING {
        seed += &format!(
            "- name: old-{i}\n  context:\n    cluster: c\n    user: u\n    namespace: ns-{i}\n"
        );
    }
    seed += "current-context: \"\"\n";
    fs::write(&file, seed).unwrap();
    // Two versions of our kubeconfig (the server moved), merged in turn, so
    // that every merge really rewrites the file.
    let ours = [our_kubeconfig(), dir.path().join("ours-moved.yaml")];
    let moved = fs::read_to_string(&ours[0]).unwrap().replace(
        "https://kubernetes.docker.internal:6443",
        "https://127.0.0.1:6443",
    );
    fs::write(&ours[1], moved).unwrap();

    // The storm: every writer keeps setting its context for as long as the
    // merges run (kubectl takes the lock even when nothing changes).
    let merging = Arc::new(AtomicBool::new(true));
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (file, start, merging) = (file.clone(), start.clone(), merging.clone());
            thread::spawn(move || {
                let mut refusals = Refusals::default();
                start.wait();
                loop {
                    set_context(&file, i, &mut refusals);
                    if !merging.load(Ordering::SeqCst) {
                        return refusals;
                    }
                }
            })
        })
        .collect();
    start.wait();
    for n in 0..MERGES {
        let out = merge(&file, &ours[n % 2]);
        assert!(out.contains(&file.display().to_string()), "{out}");
    }
    merging.store(false, Ordering::SeqCst);
    let mut refusals = Refusals::default();
    for writer in writers {
        let r = writer.join().unwrap();
        refusals.lock_held += r.lock_held;
        refusals.other += r.other;
    }

    // Settle: our entries back if kubectl dropped them, then each lost ctx-i.
    merge(&file, &ours[0]);
    let mut rewrites = 0;
    for round in 1.. {
        assert!(
            round <= MAX_ROUNDS,
            "writers did not settle in {MAX_ROUNDS} rounds"
        );
        let barrier = Arc::new(Barrier::new(WRITERS));
        let settlers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (file, barrier) = (file.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let lost = !has_context(&file, &format!("ctx-{i}"));
                    if lost {
                        set_context(&file, i, &mut Refusals::default());
                    }
                    lost
                })
            })
            .collect();
        let wrote = settlers
            .into_iter()
            .map(|s| s.join().unwrap())
            .filter(|&lost| lost)
            .count();
        rewrites += wrote;
        if wrote == 0 {
            break;
        }
    }
    eprintln!("kubectl refused: {refusals:?}; contexts lost to kubectl and set again: {rewrites}");
    assert!(
        refusals.lock_held > 0,
        "the writers never met a held lock: no contention was tested"
    );

    let view: Value = serde_json::from_str(&run_ok(
        kubectl(&file).args(["config", "view", "--raw", "-o", "json"]),
    ))
    .unwrap();
    let contexts: Vec<&str> = view["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for i in 0..WRITERS {
        assert!(
            contexts.contains(&format!("ctx-{i}").as_str()),
            "ctx-{i} missing: {contexts:?}"
        );
    }
    // Present in every read anyone made: no writer had a reason to drop them.
    for i in 0..EXISTING {
        assert!(
            contexts.contains(&format!("old-{i}").as_str()),
            "old-{i} missing"
        );
    }
    let doc = Kubeconfig::load(&file).unwrap();
    for section in Section::ALL {
        assert!(
            doc.contains(section, "docker-desktop"),
            "our {section:?} missing"
        );
    }
    assert_eq!(view["current-context"], "docker-desktop");
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["config", "config.bak", "ours-moved.yaml"].contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "lock or temp files left: {left:?}");
}

//! Concurrent writers on one kubeconfig: 8 real `kubectl config set-context`
//! writers, repeated `k8s-manager kubeconfig merge` calls, and two readers,
//! all on the same file. kubectl takes `<file>.lock` and fails at once when
//! it is held, so each kubectl writer retries as a person would (bounded);
//! the manager waits for the lock by itself, so every merge must succeed
//! first time.
//!
//! kubectl loses updates on its own when two kubectl run at once: `set-context`
//! reads the file before taking the lock and, once it holds it, deletes every
//! entry that appeared in between (client-go `ModifyConfig` diffs its stale
//! copy against the file). So the kubectl writers take turns among themselves
//! (never with the merges): each kubectl then read a file holding every
//! context an earlier one wrote, and a context kubectl reported written can
//! only be lost by a merge. (A kubectl that read the file just before a merge
//! may still drop or revert our entries: upstream behaviour, which the next
//! merge repairs, as the manager does at each enable.)
//!
//! Each kubectl holds its lock 50 ms longer than it would (strace delays the
//! call that takes it), so that merges often start while kubectl is about to
//! write: a merge must then use what it reads under the lock, not before.
//!
//! What must hold for us: no merge fails or times out, kubectl never finds
//! the lock stuck; the file always parses, during the writes: for every
//! kubectl (a read of it that fails is kept and must never happen), for a
//! reader that takes the lock as kubectl does, and for a reader without the
//! lock (as `kubectl get`), which must see each merge's write whole; the
//! reader under the lock also finds, every time, every context kubectl
//! reported written before; no lock or temp file is left; and at the end,
//! without any context set again, kubectl sees every context it wrote and
//! our entries.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use k8s_manager::kubeconfig::{Kubeconfig, Section};
use serde_json::Value;
use support::{manager_bin, run, run_ok, upstream_kubectl};

const WRITERS: usize = 8;
const MERGES: usize = 30;
/// The storm lasts until kubectl has written at least this many contexts,
const KUBECTL_WRITES: usize = 24;
/// and the reader without the lock has judged this many writes of the merges.
const SEEN_WRITES: usize = 100;
/// Contexts already in the file: a file of real size keeps the lock held
/// long enough, by kubectl and by us, for the writers to collide.
const EXISTING: usize = 300;
/// kubectl attempts per write before the test gives up on a writer.
const ATTEMPTS: usize = 400;

fn our_kubeconfig() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubeconfig/ours-docker-desktop.yaml")
}

fn kubectl(file: &Path) -> Command {
    let mut cmd = Command::new(upstream_kubectl());
    cmd.env_remove("KUBECONFIG").arg("--kubeconfig").arg(file);
    cmd
}

/// Failed kubectl attempts, by cause.
#[derive(Default, Debug)]
struct Refusals {
    lock_held: usize,
    other: Vec<String>,
}

/// How long each kubectl holds its lock before it reads and writes the file
/// (natively a few milliseconds): a merge that starts meanwhile read the file
/// before kubectl's write, and must read it again once it has the lock.
const KUBECTL_HOLD: Duration = Duration::from_millis(50);

/// Sets the context `name` with kubectl, retrying (bounded) while the lock
/// is held. Any other failure (kubectl could not read the file) is kept.
/// kubectl runs under strace, which delays the return of the one call that
/// creates its lock by [`KUBECTL_HOLD`].
fn set_context(file: &Path, name: &str, refusals: &mut Refusals) {
    let lock = k8s_manager::kubeconfig::KubeconfigLock::lock_path(file);
    for attempt in 0..ATTEMPTS {
        let mut slow = Command::new("strace");
        slow.args([
            "-f",
            "--seccomp-bpf",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "signal=none",
            "-P",
        ])
        .arg(&lock)
        .args(["-e", "trace=openat", "-e"])
        .arg(format!(
            "inject=openat:delay_exit={}",
            KUBECTL_HOLD.as_micros()
        ))
        .arg(upstream_kubectl())
        .env_remove("KUBECONFIG")
        .arg("--kubeconfig")
        .arg(file);
        let out = run(slow.args(["config", "set-context", name, "--cluster=c", "--user=u"]));
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains(".lock: file exists") {
            refusals.lock_held += 1;
        } else {
            refusals.other.push(stderr.trim().to_string());
        }
        if attempt + 1 == ATTEMPTS {
            panic!(
                "kubectl writing {name} gave up after {ATTEMPTS} attempts; last error: {stderr}"
            );
        }
        thread::sleep(Duration::from_millis(2 + (attempt as u64 * 7) % 20));
    }
}

/// Reads `file` under its lock, taken as kubectl takes it (`O_CREAT|O_EXCL`
/// of `<file>.lock`, never waited for by kubectl, always by the manager).
fn read_locked(file: &Path) -> Vec<u8> {
    let lock = k8s_manager::kubeconfig::KubeconfigLock::lock_path(file);
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("{}: {err}", lock.display()),
        }
    }
    let bytes = fs::read(file);
    fs::remove_file(&lock).unwrap();
    bytes.unwrap()
}

/// The document of `bytes` read from `file`; a read that does not parse
/// fails the test, saying `what` read it.
fn parses(file: &Path, bytes: &[u8], what: &str) -> Kubeconfig {
    Kubeconfig::parse(bytes, file).unwrap_or_else(|err| {
        panic!(
            "{what}: the file does not parse: {err}\n{}",
            String::from_utf8_lossy(bytes)
        )
    })
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

    // The storm: every writer keeps setting a new context of its own for as
    // long as the merges run, taking turns with the other kubectl writers.
    let merging = Arc::new(AtomicBool::new(true));
    let start = Arc::new(Barrier::new(WRITERS + 3));
    let turn = Arc::new(Mutex::new(()));
    // The contexts kubectl reported written, in order.
    let written = Arc::new(Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (file, start, merging) = (file.clone(), start.clone(), merging.clone());
            let (turn, written) = (turn.clone(), written.clone());
            thread::spawn(move || {
                let mut refusals = Refusals::default();
                start.wait();
                for n in 0.. {
                    let name = format!("ctx-{i}-{n}");
                    {
                        let _turn = turn.lock().unwrap();
                        set_context(&file, &name, &mut refusals);
                        written.lock().unwrap().push(name);
                    }
                    if !merging.load(Ordering::SeqCst) {
                        break;
                    }
                    // Let the others have their turn.
                    thread::sleep(Duration::from_millis(1));
                }
                refusals
            })
        })
        .collect();
    // Two readers. Under the lock, the file parses and holds every old-i and
    // every context kubectl said it wrote before the lock was taken.
    let locked_reader = {
        let (file, start, merging) = (file.clone(), start.clone(), merging.clone());
        let written = written.clone();
        thread::spawn(move || {
            let old: Vec<String> = (0..EXISTING).map(|i| format!("old-{i}")).collect();
            start.wait();
            let mut reads = 0;
            while merging.load(Ordering::SeqCst) {
                let before: Vec<String> = written.lock().unwrap().clone();
                let doc = parses(&file, &read_locked(&file), &format!("locked read {reads}"));
                let names: BTreeSet<&str> = doc.names(Section::Context).collect();
                for name in before.iter().chain(&old) {
                    assert!(
                        names.contains(name.as_str()),
                        "locked read {reads}: {name} lost (kubectl wrote {} contexts before)",
                        before.len()
                    );
                }
                reads += 1;
                thread::sleep(Duration::from_millis(5));
            }
            reads
        })
    };
    // Without the lock, as `kubectl get` reads it: every read parses, but
    // those a kubectl may have been writing in place (its lock, unstamped,
    // was there before or after the read; kubectl holds it at least
    // KUBECTL_HOLD, so a read of a few milliseconds cannot miss it). Counts
    // the merges' writes it judged.
    let seen_writes = Arc::new(AtomicUsize::new(0));
    let unlocked_reader = {
        let (file, start, merging) = (file.clone(), start.clone(), merging.clone());
        let seen_writes = seen_writes.clone();
        thread::spawn(move || {
            let lock = k8s_manager::kubeconfig::KubeconfigLock::lock_path(&file);
            // kubectl's lock (or the locked reader's), not a merge's.
            let unstamped = || fs::read(&lock).is_ok_and(|mark| !mark.starts_with(b"k8s-manager "));
            start.wait();
            let (mut reads, mut last) = (0, Vec::new());
            while merging.load(Ordering::SeqCst) {
                let began = std::time::Instant::now();
                let kubectl_before = unstamped();
                let bytes = fs::read(&file).unwrap();
                let judged = !kubectl_before && !unstamped() && began.elapsed() < KUBECTL_HOLD / 5;
                if judged && bytes != last {
                    parses(&file, &bytes, &format!("read {reads} without the lock"));
                    seen_writes.fetch_add(1, Ordering::SeqCst);
                }
                last = bytes;
                reads += 1;
                thread::sleep(Duration::from_micros(200));
            }
            reads
        })
    };
    start.wait();
    let storm = std::time::Instant::now();
    let mut merges = 0;
    while merges < MERGES
        || written.lock().unwrap().len() < KUBECTL_WRITES
        || seen_writes.load(Ordering::SeqCst) < SEEN_WRITES
    {
        // A reader or writer that failed ends the storm; its join says why.
        if locked_reader.is_finished()
            || unlocked_reader.is_finished()
            || writers.iter().any(|w| w.is_finished())
        {
            break;
        }
        let out = merge(&file, &ours[merges % 2]);
        assert!(out.contains(&file.display().to_string()), "{out}");
        merges += 1;
        // Back to back, the merges would hold the lock nearly always and
        // starve kubectl: a gap, as between a user's commands.
        thread::sleep(Duration::from_millis(30));
        assert!(
            storm.elapsed() < Duration::from_secs(300),
            "kubectl wrote {} contexts in 5 minutes",
            written.lock().unwrap().len()
        );
    }
    merging.store(false, Ordering::SeqCst);
    let locked = locked_reader.join().unwrap();
    let unlocked = unlocked_reader.join().unwrap();
    let mut refusals = Refusals::default();
    for writer in writers {
        let r = writer.join().unwrap();
        refusals.lock_held += r.lock_held;
        refusals.other.extend(r.other);
    }
    let written = written.lock().unwrap().clone();
    eprintln!(
        "{merges} merges; kubectl wrote {} contexts, refused {} times for the lock; reads: {locked} locked, {unlocked} not (over {} writes)",
        written.len(),
        refusals.lock_held,
        seen_writes.load(Ordering::SeqCst)
    );
    assert!(
        refusals.lock_held > 0,
        "the writers never met a held lock: no contention was tested"
    );
    assert!(locked > 0 && unlocked > 0, "the reader never read the file");
    // kubectl taking turns never reads a file half-written by another
    // kubectl: every read it made of ours parsed.
    assert_eq!(
        refusals.other,
        Vec::<String>::new(),
        "kubectl could not read the file"
    );

    // Our entries back if a kubectl that read the file before a merge dropped
    // them; nothing of kubectl's is set again.
    merge(&file, &ours[0]);
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
    for name in &written {
        assert!(
            contexts.contains(&name.as_str()),
            "{name} lost: {contexts:?}"
        );
    }
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

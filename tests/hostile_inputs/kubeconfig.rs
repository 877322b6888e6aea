//! Hostile inputs: the user's kubeconfig, KUBECONFIG lists and Windows
//! paths, through `k8s-manager kubeconfig merge|remove`, judged where it
//! matters by upstream kubectl (the one the user runs).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{manager_bin, run, run_ok, upstream_kubectl};

const THEIRS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example:6443\nusers:\n- name: me\n  user:\n    token: user-token\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: me\ncurrent-context: prod\n";

/// A client key as a user's file carries it: it must never reach a message.
const SECRET: &str = "c2VjcmV0LWtleS1tYXRlcmlhbC1uZXZlci1wcmludGVk";

fn ours() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/kubeconfig/ours-docker-desktop.yaml")
}

fn merge(into: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(manager_bin());
    cmd.args(["kubeconfig", "merge", "--from"])
        .arg(ours())
        .args(["--into", into])
        .args(extra);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A merge refused: non-zero, the message names the file and a line, and
/// the file is byte for byte what it was, with nothing left beside it.
fn assert_refused(content: &str, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::write(&file, content).unwrap();
    let out = run(&mut merge(file.to_str().unwrap(), &[]));
    let said = text(&out);
    assert!(!out.status.success(), "{content}\n{said}");
    assert!(
        said.contains(file.to_str().unwrap()) && said.contains("line "),
        "{said}"
    );
    assert!(said.contains(want), "want {want:?} in: {said}");
    assert!(!said.contains(SECRET), "a secret was printed: {said}");
    assert_eq!(fs::read_to_string(&file).unwrap(), content);
    assert_eq!(names_in(dir.path()), ["config"]);
}

#[test]
fn a_key_given_twice_is_refused_not_half_dropped() {
    // kubectl itself keeps the second `clusters:` and drops `prod` silently.
    let twice = "apiVersion: v1\nclusters:\n- name: prod\n  cluster: {server: https://prod}\nclusters:\n- name: dev\n  cluster: {server: https://dev}\n";
    assert_refused(twice, "\"clusters\" is given twice");
    let nested =
        "clusters:\n- name: prod\n  cluster:\n    server: https://a\n    server: https://b\n";
    assert_refused(nested, "is given twice");
}

#[test]
fn what_is_not_a_kubeconfig_is_refused() {
    assert_refused(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n",
        "not a kubeconfig",
    );
    assert_refused(
        "clusters:\n- name: a\n  cluster: {server: https://a}\n---\nclusters: []\n",
        "more than one YAML document",
    );
    assert_refused(
        &format!(
            "users:\n- name: u\n  user: {{client-key-data: {SECRET}}}\n- name: u\n  user: {{token: t}}\n"
        ),
        "repeats the user name",
    );
    assert_refused(
        "clusters:\n- name: a\n  cluster: {server: 6443}\n",
        "must be a string",
    );
    assert_refused("- just\n- a list\n", "top level must be a mapping");
}

#[test]
fn kubectl_refuses_what_we_refuse_as_not_loadable() {
    // The shapes we call "kubectl would not load": kubectl agrees.
    let dir = tempfile::tempdir().unwrap();
    for (i, content) in [
        "apiVersion: apps/v1\nkind: Deployment\n",
        "users:\n- name: u\n  user: {token: a}\n- name: u\n  user: {token: b}\n",
        "clusters:\n- name: a\n  cluster: {server: 6443}\n",
        "clusters:\n- name: a\n  cluster: {certificate-authority-data: \"QUJ\"}\n",
        "preferences: {colors: \"true\"}\n",
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("c{i}"));
        fs::write(&file, content).unwrap();
        let out = run(Command::new(upstream_kubectl())
            .env_remove("KUBECONFIG")
            .args(["config", "view", "--kubeconfig"])
            .arg(&file));
        assert!(!out.status.success(), "kubectl loads {content}");
        assert!(
            !run(&mut merge(file.to_str().unwrap(), &[]))
                .status
                .success()
        );
    }
}

#[test]
fn parser_internals_and_file_content_stay_out_of_messages() {
    let deep = format!(
        "clusters:\n- name: a\n  cluster:\n    extensions:\n    - name: x\n      extension: {}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    // Too many nodes for the general reader (an anchor takes the file out
    // of the fast reader's subset): one list of 300,000 numbers.
    let huge = format!("x: &many [{}]\n", "1, ".repeat(300_000));
    let broken = format!(
        "users:\n- name: u\n  user:\n    client-key-data: {SECRET}\n    token: \"{SECRET}\n  - : :\n"
    );
    for content in [deep, huge, broken, format!("{{\"users\": [{SECRET}]}}")] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, &content).unwrap();
        let out = run(&mut merge(file.to_str().unwrap(), &[]));
        let said = text(&out);
        assert!(!out.status.success());
        for internal in [
            "budget",
            "Budget",
            "Depth",
            "Nodes",
            "from_str",
            "builder error",
            "{ ",
            SECRET,
        ] {
            assert!(!said.contains(internal), "{internal:?} in: {said}");
        }
        assert_eq!(fs::read_to_string(&file).unwrap(), content);
    }
}

#[test]
fn a_users_file_stays_the_users_and_their_kubectl_still_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(".kube")).unwrap();
    let file = home.join(".kube/config");
    fs::write(&file, THEIRS).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for path in [&home, &home.join(".kube"), &file] {
        std::os::unix::fs::chown(path, Some(1000), Some(1000)).unwrap();
    }
    run_ok(&mut merge(file.to_str().unwrap(), &[]));
    for path in [file.clone(), file.with_extension("bak")] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (1000, 1000, 0o600),
            "{path:?}"
        );
    }
    // The user's own kubectl, as that user.
    let out = run_ok(
        Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups"])
            .arg(upstream_kubectl())
            .env_remove("KUBECONFIG")
            .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
            .arg(&file),
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["docker-desktop", "prod"]);
}

#[test]
fn windows_paths_stay_inside_the_mount_root() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mnt");
    fs::create_dir_all(mount.join("c/outside")).unwrap();
    fs::create_dir_all(dir.path().join("outside")).unwrap();
    let mount_arg = mount.to_str().unwrap();
    // Windows resolves `..` at a drive's root to the root itself.
    run_ok(&mut merge(
        r"C:\..\..\outside\.kube\config",
        &["--mount-root", mount_arg],
    ));
    assert!(mount.join("c/outside/.kube/config").is_file());
    assert_eq!(
        names_in(&dir.path().join("outside")),
        Vec::<String>::new(),
        "escaped the mount root"
    );

    fs::create_dir_all(mount.join("c/Users/me")).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    for (spec, why) in [
        (r"C:\Users\me\config:stream", "list separator"),
        (r"C:\Users\me\config:stream;D:\x", "alternate data stream"),
    ] {
        let refused = run(merge(spec, &["--mount-root", mount_arg]).current_dir(cwd.path()));
        assert!(!refused.status.success(), "{spec}");
        assert!(text(&refused).contains(why), "{spec}: {}", text(&refused));
        assert_eq!(names_in(cwd.path()), Vec::<String>::new());
        assert_eq!(names_in(&mount.join("c/Users/me")), Vec::<String>::new());
    }
    let relative = run(&mut merge(r"..\..\config", &["--mount-root", mount_arg]));
    assert!(!relative.status.success(), "{}", text(&relative));
}

#[test]
fn a_kubeconfig_list_writes_where_kubectl_would() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/config");
    let existing = dir.path().join("existing");
    fs::write(&existing, THEIRS).unwrap();
    let list = format!("{}:{}", missing.display(), existing.display());
    run_ok(&mut merge(&list, &[]));
    assert!(!missing.exists() && !dir.path().join("missing").exists());
    // kubectl, through the same list, finds our context in the file it would write.
    run_ok(
        Command::new(upstream_kubectl())
            .env("KUBECONFIG", &list)
            .args(["config", "set-context", "kubectl-added", "--cluster=prod"]),
    );
    let names = run_ok(
        Command::new(upstream_kubectl())
            .env_remove("KUBECONFIG")
            .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
            .arg(&existing),
    );
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["docker-desktop", "kubectl-added", "prod"]
    );
    assert!(!missing.exists(), "kubectl wrote to the same file");
}

#[test]
fn fifos_and_endless_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config");
    crate::support::mkfifo(&fifo);
    let start = Instant::now();
    let out = run(&mut merge(
        fifo.to_str().unwrap(),
        &["--lock-timeout", "1s"],
    ));
    assert!(!out.status.success());
    assert!(text(&out).contains("not a regular file"), "{}", text(&out));
    let mut from_zero = Command::new(manager_bin());
    from_zero
        .args(["kubeconfig", "merge", "--from", "/dev/zero", "--into"])
        .arg(dir.path().join("other"));
    let out = run(&mut from_zero);
    assert!(!out.status.success());
    assert!(text(&out).contains("not a regular file"), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// Runs a merge under strace, killed by SIGKILL at the `nth` call of one of
/// `syscalls`: a `kill -9` at a precise step. The merge must have died of
/// that SIGKILL, at that call, and the call must be the step named by
/// `step` (a part of the call as strace shows it, descriptors as paths): a
/// merge that no longer makes that call, or makes it elsewhere, or a strace
/// that cannot trace, fails here instead of passing unkilled.
fn merge_killed_at(file: &Path, syscalls: &str, nth: u32, step: &str) {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("strace.log");
    let out = run(Command::new("strace")
        .args(["-f", "-y", "-o"])
        .arg(&log)
        .arg("-e")
        .arg(format!("trace={syscalls}"))
        .arg("-e")
        .arg(format!("inject={syscalls}:signal=KILL:when={nth}"))
        .arg(manager_bin())
        .args(["kubeconfig", "merge", "--from"])
        .arg(ours())
        .arg("--into")
        .arg(file));
    let traced = fs::read_to_string(&log).unwrap_or_default();
    let at = format!("{syscalls}:{nth}");
    // strace ends itself with the signal that ended the command.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGKILL),
        "{at}: the merge was not killed ({}): {}\n{traced}",
        out.status,
        text(&out)
    );
    let lines: Vec<&str> = traced.lines().collect();
    let killed = lines
        .iter()
        .position(|l| l.ends_with("+++ killed by SIGKILL +++"))
        .unwrap_or_else(|| panic!("{at}: no process killed in:\n{traced}"));
    let pid = lines[killed].split_whitespace().next().unwrap();
    let last_call = lines[..killed]
        .iter()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(pid))
        .unwrap_or_else(|| panic!("{at}: killed before any call:\n{traced}"));
    let calls = lines[..killed]
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(pid) && !l.contains("+++"))
        .count();
    assert!(
        last_call.ends_with("= ?") && last_call.contains(step) && calls == nth as usize,
        "{at}: killed elsewhere than at the {nth}th call, {step:?}:\n{traced}"
    );
}

#[test]
fn a_merge_killed_at_any_step_leaves_nothing_the_next_does_not_clean() {
    // Each step of a merge, in order, and the call it is killed at (before
    // the call takes effect): the next merge succeeds at once and leaves
    // only the file and its backup.
    for (syscalls, nth, step) in [
        // The stamped lock written under a temp name, not yet linked.
        ("link,linkat", 1, "{dir}/config.lock\", 0)"),
        // Linked (the lock is held), its temp name still there.
        ("unlink,unlinkat", 1, "(\"{dir}/.config.lock.tmp-"),
        // The backup's temp link made, not yet renamed into place.
        ("rename,renameat,renameat2", 1, "\"{dir}/config.bak\")"),
        // The new content written, not yet flushed.
        ("fsync", 1, "<{dir}/.config.tmp-"),
        // Flushed, not yet renamed over the file.
        ("rename,renameat,renameat2", 2, "\"{dir}/config\")"),
        // In place, the folder not yet flushed.
        ("fsync", 2, "<{dir}>)"),
        // Done, the lock not yet released.
        ("unlink,unlinkat", 3, "(\"{dir}/config.lock\")"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, THEIRS).unwrap();
        let step = step.replace("{dir}", dir.path().to_str().unwrap());
        merge_killed_at(&file, syscalls, nth, &step);
        let content = fs::read_to_string(&file).unwrap();
        assert!(
            content == THEIRS || content.contains("docker-desktop"),
            "{syscalls}: whole, old or new"
        );
        let start = Instant::now();
        run_ok(&mut merge(
            file.to_str().unwrap(),
            &["--lock-timeout", "3s"],
        ));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{syscalls}: waited for a dead lock"
        );
        assert_eq!(
            names_in(dir.path()),
            ["config", "config.bak"],
            "{syscalls}:{nth}"
        );
    }
}

#[test]
fn many_top_level_keys_are_merged_in_linear_time() {
    // 90,000 unknown top-level keys: a valid kubeconfig. The in-place writer
    // once looked each key up in a list, and took a minute here.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    let content: String = (0..90_000).map(|i| format!("x{i}: [1, 2]\n")).collect();
    fs::write(&file, &content).unwrap();
    let start = Instant::now();
    run_ok(&mut merge(file.to_str().unwrap(), &[]));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let merged = fs::read_to_string(&file).unwrap();
    assert!(merged.starts_with(&content), "every key kept, in place");
}

#[test]
fn a_merge_over_a_hard_linked_backup_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::write(&file, THEIRS).unwrap();
    fs::hard_link(&file, dir.path().join("config.bak")).unwrap();
    run_ok(&mut merge(file.to_str().unwrap(), &[]));
    assert_eq!(names_in(dir.path()), ["config", "config.bak"]);
}

/// The shapes a merge once wrote back whole, dropping every comment (issue
/// 21): anchors and aliases, a `...` end marker, a flow-style top level, and
/// a CRLF file with flow mappings (what Windows editors write). Each is
/// edited in place now: every comment stays, in order, and kubectl sees the
/// user's entries and ours.
#[test]
fn comments_survive_a_merge_whatever_the_files_shape() {
    let shapes = [
        "# shared CA\nx-ca: &ca QUJD\nclusters:\n- name: prod # the shop\n  cluster: {server: https://prod:6443, certificate-authority-data: *ca}\n# end\n",
        "apiVersion: v1 # version\nclusters:\n- name: prod\n  cluster: {server: https://prod:6443}\n...\n# after the document\n",
        "{apiVersion: v1, clusters: [{name: prod, cluster: {server: https://prod:6443}}]} # flow\n",
        "# from Notepad\r\nclusters: [\r\n  {name: prod, cluster: {server: https://prod:6443}}, # prod\r\n]\r\ncurrent-context: prod\r\n",
    ];
    for content in shapes {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, content).unwrap();
        run_ok(&mut merge(file.to_str().unwrap(), &[]));
        let merged = fs::read_to_string(&file).unwrap();
        let mut from = 0;
        for comment in content.lines().filter_map(|l| l.find('#').map(|i| &l[i..])) {
            let at = merged[from..]
                .find(comment)
                .unwrap_or_else(|| panic!("{comment:?} lost:\n{merged}"));
            from += at + comment.len();
        }
        if content.contains("\r\n") {
            assert_eq!(merged.matches('\n').count(), merged.matches("\r\n").count());
        }
        let names = run_ok(
            Command::new(upstream_kubectl())
                .env_remove("KUBECONFIG")
                .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
                .arg(&file),
        );
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            ["docker-desktop"],
            "{merged}"
        );
        let clusters = run_ok(
            Command::new(upstream_kubectl())
                .env_remove("KUBECONFIG")
                .args(["config", "get-clusters", "--kubeconfig"])
                .arg(&file),
        );
        assert!(clusters.contains("prod"), "{clusters}");
    }
}

/// What a merge cannot write without changing what is not ours is refused:
/// the message says which construct and what to change, and the file stays
/// byte for byte, with nothing beside it.
#[test]
fn a_shape_that_cannot_take_the_change_is_refused_untouched() {
    for (content, want) in [
        // Our stale cluster defines `&ca`, which prod's alias uses.
        (
            "clusters:\n- name: docker-desktop\n  cluster: &ca {server: https://old}\n- name: prod\n  cluster: *ca\n",
            "the alias `*ca` at line 5 uses",
        ),
        (
            "x-all: &all []\nclusters: *all\n",
            "the value of `clusters` is an alias",
        ),
        ("x-base: &base {kind: Config}\n<<: *base\n", "merge key"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        fs::write(&file, content).unwrap();
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        let out = run(&mut merge(file.to_str().unwrap(), &["--output", "json"]));
        assert!(!out.status.success(), "{content}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["error"]["code"], "UnsupportedKubeconfig", "{report}");
        let message = report["error"]["message"].as_str().unwrap();
        for words in [file.to_str().unwrap(), want, "write", "left untouched"] {
            assert!(message.contains(words), "{words:?} not in {message}");
        }
        assert_eq!(fs::read_to_string(&file).unwrap(), content);
        assert_eq!(fs::metadata(&file).unwrap().modified().unwrap(), mtime);
        assert_eq!(names_in(dir.path()), ["config"]);
    }
}

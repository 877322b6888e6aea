//! `k8s-manager kubeconfig merge|remove` on real-world-shaped kubeconfigs,
//! judged by upstream kubectl: after a merge kubectl must see every original
//! entry exactly as before plus ours; after a remove, exactly the original.
//!
//! The corpus is `tests/fixtures/kubeconfig/` (see its README); a UTF-16 copy
//! and a 1,500-context file are generated here.

mod kubeconfig_shapes;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_manager::kubeconfig::Kubeconfig;
use serde_json::Value;
use support::{manager_bin, run, run_ok, upstream_kubectl};

const OURS: &str = "docker-desktop";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/kubeconfig")
}

fn our_kubeconfig() -> PathBuf {
    fixtures().join("ours-docker-desktop.yaml")
}

fn kubectl() -> Command {
    let mut cmd = Command::new(upstream_kubectl());
    // Only the files a test names may be read.
    cmd.env_remove("KUBECONFIG");
    cmd
}

/// What kubectl sees: `kubectl config view --raw -o json`.
fn view(file: &Path) -> Value {
    let out = run_ok(
        kubectl()
            .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
            .arg(file),
    );
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

/// What kubectl sees through a KUBECONFIG list.
fn view_list(list: &str) -> Value {
    let out = run_ok(
        kubectl()
            .args(["config", "view", "--raw", "-o", "json"])
            .env("KUBECONFIG", list),
    );
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

fn context_names(file: &Path) -> Vec<String> {
    let out = run_ok(
        kubectl()
            .args(["config", "get-contexts", "-o", "name", "--kubeconfig"])
            .arg(file),
    );
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

fn current_context(file: &Path) -> Option<String> {
    let out = run(kubectl()
        .args(["config", "current-context", "--kubeconfig"])
        .arg(file));
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_string())
}

fn merge_cmd(into: &str) -> Command {
    let mut cmd = Command::new(manager_bin());
    cmd.args(["kubeconfig", "merge", "--from"])
        .arg(our_kubeconfig())
        .args(["--into", into]);
    cmd
}

fn merge(into: &Path) -> String {
    run_ok(&mut merge_cmd(into.to_str().unwrap()))
}

fn remove(from: &str) -> String {
    run_ok(Command::new(manager_bin()).args([
        "kubeconfig",
        "remove",
        "--context",
        OURS,
        "--from",
        from,
    ]))
}

/// A named list of a kubectl view, by name.
fn by_name(view: &Value, list: &str) -> BTreeMap<String, Value> {
    view[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| (item["name"].as_str().unwrap().to_string(), item.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn without_ours(mut entries: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    entries.remove(OURS);
    entries
}

/// The checks after a merge: theirs identical, ours exactly our fixture.
fn assert_merged(name: &str, before: &Value, after: &Value) {
    let ours = view(&our_kubeconfig());
    for list in ["clusters", "users", "contexts"] {
        assert_eq!(
            without_ours(by_name(after, list)),
            without_ours(by_name(before, list)),
            "{name}: the other {list} changed"
        );
        assert_eq!(
            by_name(after, list).get(OURS),
            by_name(&ours, list).get(OURS),
            "{name}: our {list} entry"
        );
    }
    for key in ["preferences", "extensions", "kind", "apiVersion"] {
        assert_eq!(after.get(key), before.get(key), "{name}: {key}");
    }
    let had = before["current-context"].as_str().unwrap_or_default();
    let want = if had.is_empty() { OURS } else { had };
    assert_eq!(
        after["current-context"].as_str(),
        Some(want),
        "{name}: current-context"
    );
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        "eks.yaml",
        "gke.yaml",
        "oidc-preferences-unknown.yaml",
        "minikube-windows-crlf.yaml",
        "bom.yaml",
        "json-form.json",
        "empty.yaml",
        "yaml11-scalars.yaml",
        "stale-docker-desktop.yaml",
    ]
    .into_iter()
    .map(|name| Case {
        name,
        bytes: fs::read(fixtures().join(name)).unwrap(),
    })
    .collect();
    // Windows PowerShell 5 writes UTF-16 with `>`; kubectl reads it.
    let crlf = fs::read_to_string(fixtures().join("minikube-windows-crlf.yaml")).unwrap();
    cases.push(Case {
        name: "powershell-utf16le.yaml",
        bytes: [0xFF, 0xFE]
            .into_iter()
            .chain(crlf.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
    });
    cases.push(Case {
        name: "1500-contexts.yaml",
        bytes: many_contexts(1500).into_bytes(),
    });
    cases
}

fn many_contexts(n: usize) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Config\npreferences: {}\nclusters:\n");
    for i in 0..n {
        text += &format!(
            "- name: c{i}\n  cluster:\n    server: https://10.{}.{}.1:6443\n",
            i / 250,
            i % 250
        );
    }
    text += "contexts:\n";
    for i in 0..n {
        text += &format!(
            "- name: ctx-{i}\n  context:\n    cluster: c{i}\n    user: u{i}\n    namespace: ns-{i}\n"
        );
    }
    text += "users:\n";
    for i in 0..n {
        text += &format!("- name: u{i}\n  user:\n    token: t{i}\n");
    }
    text + "current-context: ctx-7\n"
}

#[test]
fn corpus_merge_then_remove_as_kubectl_sees_it() {
    let mut edited_in_place = Vec::new();
    for case in corpus() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(case.name);
        fs::write(&file, &case.bytes).unwrap();
        let before = view(&file);
        let had_ours = by_name(&before, "contexts").contains_key(OURS);

        let out = merge(&file);
        assert!(out.contains("updated"), "{}: {out}", case.name);
        let after = view(&file);
        assert_merged(case.name, &before, &after);
        let mut want_names: Vec<String> = by_name(&before, "contexts").into_keys().collect();
        if !had_ours {
            want_names.push(OURS.to_string());
        }
        want_names.sort();
        assert_eq!(
            context_names(&file),
            want_names,
            "{}: get-contexts",
            case.name
        );
        assert_eq!(
            current_context(&file).as_deref(),
            after["current-context"].as_str(),
            "{}: kubectl config current-context",
            case.name
        );
        let bak = fs::read(dir.path().join(format!("{}.bak", case.name))).unwrap();
        assert_eq!(
            bak, case.bytes,
            "{}: the backup holds the previous bytes",
            case.name
        );
        assert_same_form(case.name, &case.bytes, &fs::read(&file).unwrap());
        let original = (!case.bytes.is_empty())
            .then(|| Kubeconfig::parse(&case.bytes, Path::new(case.name)).unwrap());
        let in_place = original.as_ref().is_some_and(Kubeconfig::edited_in_place);
        if in_place {
            edited_in_place.push(case.name);
            // Written as an edit: the user's comments are all still there.
            let text = String::from_utf8_lossy(&case.bytes).into_owned();
            let merged = String::from_utf8_lossy(&fs::read(&file).unwrap()).into_owned();
            for comment in text.lines().filter(|l| l.trim_start().starts_with('#')) {
                assert!(merged.contains(comment), "{}: {comment:?} lost", case.name);
            }
        }

        // A second merge finds nothing to do and writes nothing.
        let merged = fs::read(&file).unwrap();
        assert!(merge(&file).contains("up to date"), "{}", case.name);
        assert_eq!(fs::read(&file).unwrap(), merged, "{}", case.name);

        let out = remove(file.to_str().unwrap());
        assert!(
            out.contains(&format!("removed context {OURS}")),
            "{}: {out}",
            case.name
        );
        let removed = view(&file);
        if had_ours {
            // Our stale entries are gone and nothing else moved.
            for list in ["clusters", "users", "contexts"] {
                assert_eq!(
                    by_name(&removed, list),
                    without_ours(by_name(&before, list)),
                    "{}",
                    case.name
                );
            }
            assert_eq!(removed["current-context"], "", "{}: it was ours", case.name);
        } else {
            assert_eq!(
                removed, before,
                "{}: remove gives back the original",
                case.name
            );
            // Beyond what kubectl shows (unknown fields, order): the same document.
            if let Some(original) = &original {
                let now = Kubeconfig::load(&file).unwrap();
                assert_eq!(
                    now.root(),
                    original.root(),
                    "{}: document after merge + remove",
                    case.name
                );
                // Edited in place, and the current context stayed the
                // user's: the very same bytes.
                if in_place && original.current_context().is_some() {
                    assert_eq!(
                        fs::read(&file).unwrap(),
                        case.bytes,
                        "{}: bytes after merge + remove",
                        case.name
                    );
                }
            }
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "{}: only the file and its backup",
            case.name
        );

        let out = remove(file.to_str().unwrap());
        assert!(out.contains("nothing to remove"), "{}: {out}", case.name);
    }
    // Every file of the corpus, JSON included, is written as an edit of its
    // own text (the empty one has no text to keep).
    assert_eq!(
        edited_in_place.len(),
        corpus().len() - 1,
        "{edited_in_place:?}"
    );
}

/// CRLF stays CRLF, a BOM stays, UTF-16 stays UTF-16, JSON stays JSON.
fn assert_same_form(name: &str, before: &[u8], after: &[u8]) {
    for bom in [&b"\xEF\xBB\xBF"[..], b"\xFF\xFE"] {
        assert_eq!(
            before.starts_with(bom),
            after.starts_with(bom),
            "{name}: byte order mark"
        );
    }
    if before.starts_with(b"\xFF\xFE") {
        return;
    }
    let crlf = |b: &[u8]| b.windows(2).filter(|w| w == b"\r\n").count();
    let lf = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    if crlf(before) > 0 {
        assert_eq!(crlf(after), lf(after), "{name}: every line ends in CRLF");
    } else {
        assert_eq!(crlf(after), 0, "{name}: no CRLF");
    }
    if before.first() == Some(&b'{') {
        serde_json::from_slice::<Value>(after)
            .unwrap_or_else(|e| panic!("{name}: still JSON: {e}"));
    }
}

#[test]
fn extension_payloads_and_exec_users_survive_byte_for_byte_in_kubectl() {
    // The tricky scalars of yaml11-scalars.yaml (yes, 0123, 1e3, "yes", ...)
    // must read the same in kubectl before and after our rewrite.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::copy(fixtures().join("yaml11-scalars.yaml"), &file).unwrap();
    let before = view(&file);
    merge(&file);
    let after = view(&file);
    assert_eq!(
        by_name(&after, "clusters")["edge"],
        by_name(&before, "clusters")["edge"]
    );
    assert_eq!(
        by_name(&after, "users")["edge"],
        by_name(&before, "users")["edge"]
    );
    assert_eq!(
        by_name(&after, "contexts")["edge"]["context"]["namespace"],
        "0123"
    );
}

#[test]
fn unparsable_file_is_refused_with_file_and_line_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::copy(fixtures().join("unparsable.yaml"), &file).unwrap();
    let original = fs::read(&file).unwrap();
    for mut cmd in [merge_cmd(file.to_str().unwrap()), {
        let mut cmd = Command::new(manager_bin());
        cmd.args(["kubeconfig", "remove", "--context", OURS, "--from"])
            .arg(&file);
        cmd
    }] {
        let out = run(&mut cmd);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains("line 7"), "{stderr}");
        assert_eq!(fs::read(&file).unwrap(), original);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no lock, backup or temp file left"
        );
    }
}

#[test]
fn held_lock_times_out_naming_the_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::copy(fixtures().join("eks.yaml"), &file).unwrap();
    let lock = dir.path().join("config.lock");
    fs::write(&lock, b"").unwrap();
    let out = run(merge_cmd(file.to_str().unwrap()).args(["--lock-timeout", "300ms"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&lock.display().to_string()) && stderr.contains("stale"),
        "{stderr}"
    );
    assert_eq!(
        fs::read(&file).unwrap(),
        fs::read(fixtures().join("eks.yaml")).unwrap()
    );
}

#[test]
fn kubeconfig_lists_write_the_file_holding_our_entries() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    fs::copy(fixtures().join("eks.yaml"), &a).unwrap();
    fs::copy(fixtures().join("stale-docker-desktop.yaml"), &b).unwrap();
    let a_bytes = fs::read(&a).unwrap();
    let list = format!("{}:{}", a.display(), b.display());
    let before = view_list(&list);

    merge(Path::new(&list));
    assert_eq!(
        fs::read(&a).unwrap(),
        a_bytes,
        "a holds none of ours: untouched"
    );
    let after = view_list(&list);
    assert_merged("a:b", &before, &after);
    assert_eq!(
        by_name(&view(&b), "clusters")[OURS]["cluster"]["server"],
        "https://kubernetes.docker.internal:6443"
    );

    remove(&list);
    assert_eq!(fs::read(&a).unwrap(), a_bytes);
    let removed = view_list(&list);
    assert!(!by_name(&removed, "contexts").contains_key(OURS));
    assert_eq!(removed["current-context"], before["current-context"]);
}

#[test]
fn windows_style_list_creates_a_fresh_kube_folder() {
    // The host's drives mounted under dir/mnt, a profile without .kube yet;
    // the list as Windows spells it, none of its files there yet: like
    // client-go, the merge creates the last one, and only that one.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mnt");
    fs::create_dir_all(mount.join("c/Users/dev")).unwrap();
    let list = r"C:\Users\dev\.kube\extra;C:\Users\dev\.kube\config";
    let out = run_ok(
        merge_cmd(list)
            .args(["--mount-root"])
            .arg(&mount)
            .args(["--set-current-context", "never"]),
    );
    let created = mount.join("c/Users/dev/.kube/config");
    assert!(
        out.contains(&format!("created {}", created.display())),
        "{out}"
    );
    assert!(!mount.join("c/Users/dev/.kube/extra").exists());
    let seen = view(&created);
    assert!(by_name(&seen, "contexts").contains_key(OURS));
    assert_eq!(seen["current-context"], "");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&created).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A profile that is not there (wrong user, drive not mounted): refused,
    // nothing created inside the VM.
    let out = run(merge_cmd(r"C:\Users\ghost\.kube\config")
        .args(["--mount-root"])
        .arg(&mount));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mounted"), "{stderr}");
    assert!(!mount.join("c/Users/ghost").exists());
}

#[test]
fn json_output_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    let out = run_ok(merge_cmd(file.to_str().unwrap()).args(["--output", "json"]));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["created"], true);
    assert_eq!(report["currentContextSet"], OURS);
    assert_eq!(report["added"].as_array().unwrap().len(), 3);

    let mount = dir.path().join("mnt");
    fs::create_dir_all(mount.join("c/Users/Public")).unwrap();
    fs::create_dir_all(mount.join("c/Users/dev")).unwrap();
    let out = run_ok(
        Command::new(manager_bin())
            .args(["kubeconfig", "discover", "--output", "json", "--mount-root"])
            .arg(&mount)
            .env_remove("K8S_MANAGER_KUBECONFIG")
            .env_remove("K8S_MANAGER_HOST_KUBECONFIG")
            .env_remove("K8S_MANAGER_HOST_USERPROFILE")
            .env_remove("K8S_MANAGER_HOST_USERNAME"),
    );
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        found["files"][0],
        mount.join("c/Users/dev/.kube/config").display().to_string()
    );
    assert_eq!(found["source"], "only-profile");
}

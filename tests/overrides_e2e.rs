//! Component overrides on a real cluster (`components.<name>.extraArgs` and
//! `.env`): a flag set with `settings set` shows in the running API server's
//! command line, restarts the API server and nothing else, and survives a
//! disable and an enable; a flag the manager owns, an unknown component and
//! a malformed flag are refused (exit code 2) and change nothing, the saved
//! settings byte for byte included; taking the override out restarts the
//! API server without it.
//!
//! Needs root, containerd prepared by vm/prepare-vm.sh and the bundle
//! (`K8S_MANAGER_BUNDLE`); tests/run.sh provides them.

mod support;

use support::cluster::Cluster;

/// The harmless flag the test adds: the API server keeps no audit log
/// (there is no --audit-log-path) whatever its age.
const FLAG: &str = "--audit-log-maxage=5";

/// The command line and the environment of a process, one entry each.
fn proc_strings(pid: u64, file: &str) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn pid_of(pids: &[(String, u64)], name: &str) -> u64 {
    pids.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not among {pids:?}"))
        .1
}

/// `settings ... --output json`: its exit code and its answer.
fn settings_json(cluster: &Cluster, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["settings"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = support::run(&mut cluster.manager(&all));
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{all:?}: not JSON:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), answer)
}

#[test]
fn an_api_server_flag_restarts_it_alone_and_survives_disable_and_enable() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let settings_file = cluster.state().join("settings.json");
    let pids = cluster.component_pids();
    assert_eq!(pids.len(), 6, "{pids:?}");
    assert!(pids.iter().all(|(_, pid)| *pid > 0), "{pids:?}");
    let apiserver = pid_of(&pids, "kube-apiserver");
    assert!(!proc_strings(apiserver, "cmdline").contains(&FLAG.to_string()));

    // Refused, each naming its field: nothing saved, nothing restarted.
    let saved = std::fs::read(&settings_file).unwrap();
    for (assignment, field, why) in [
        (
            r#"components.kube-apiserver.extraArgs=["--anonymous-auth=true"]"#,
            "components.kube-apiserver.extraArgs[0]",
            "--anonymous-auth is the manager's",
        ),
        (
            r#"components.kubelet.extraArgs=["--v=2","--kubeconfig=/tmp/k"]"#,
            "components.kubelet.extraArgs[1]",
            "--kubeconfig is the manager's",
        ),
        (
            r#"components.kube-apiserver.extraArgs=["-v=3"]"#,
            "components.kube-apiserver.extraArgs[0]",
            "--name=value",
        ),
        (
            r#"components.kube-dns.extraArgs=["--v=3"]"#,
            "components.kube-dns",
            "unknown field",
        ),
        (
            "components.etcd.env.HTTPS_PROXY=http://proxy.test:3128",
            "components.etcd.env.HTTPS_PROXY",
            "proxy.https",
        ),
    ] {
        let (code, answer) = settings_json(&cluster, &["set", assignment]);
        assert_eq!(code, Some(2), "{assignment}: {answer}");
        assert_eq!(answer["error"]["code"], "InvalidSettings", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{assignment}: {message}");
    }
    assert_eq!(std::fs::read(&settings_file).unwrap(), saved);
    assert_eq!(cluster.component_pids(), pids);

    // Proposed: a restart of the API server, and of nothing else.
    let assignment = format!(r#"components.kube-apiserver.extraArgs=["{FLAG}"]"#);
    let (code, proposal) = settings_json(&cluster, &["propose", &assignment]);
    assert_eq!(code, Some(0), "{proposal}");
    let changes = proposal["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{proposal}");
    assert_eq!(changes[0]["key"], "components.kube-apiserver.extraArgs");
    assert_eq!(changes[0]["effect"], "restart-component", "{proposal}");
    assert_eq!(changes[0]["component"], "kube-apiserver", "{proposal}");
    assert_eq!(std::fs::read(&settings_file).unwrap(), saved);

    // Set: the API server runs with it (after the manager's own flags) and
    // the variable; every other component kept its process.
    support::run_ok(&mut cluster.manager(&[
        "settings",
        "set",
        &assignment,
        "components.kube-apiserver.env.GOGC=150",
        "--wait",
    ]));
    let after = cluster.component_pids();
    let restarted = pid_of(&after, "kube-apiserver");
    assert_ne!(restarted, apiserver, "the API server was not restarted");
    let cmdline = proc_strings(restarted, "cmdline");
    assert_eq!(
        cmdline.last().map(String::as_str),
        Some(FLAG),
        "{cmdline:?}"
    );
    assert!(
        cmdline.contains(&"--anonymous-auth=false".to_string()),
        "{cmdline:?}"
    );
    let environ = proc_strings(restarted, "environ");
    assert!(environ.contains(&"GOGC=150".to_string()), "{environ:?}");
    for (name, pid) in &pids {
        if name != "kube-apiserver" {
            assert_eq!(pid_of(&after, name), *pid, "{name} was restarted");
        }
    }
    assert_eq!(cluster.node_ready_condition(), "True");
    cluster.kubectl_ok(&["get", "--raw", "/readyz"]);
    // Shown with the other settings.
    let shown = support::run_ok(&mut cluster.manager(&["settings", "get"]));
    assert!(
        shown.contains(&format!("components.kube-apiserver.extraArgs=[\"{FLAG}\"]")),
        "{shown}"
    );

    // Kept across a disable and an enable: it lives in the settings.
    support::run_ok(&mut cluster.manager(&["disable"]));
    assert!(support::marked_processes(&cluster.state()).is_empty());
    cluster.enable_ok();
    let again = pid_of(&cluster.component_pids(), "kube-apiserver");
    let cmdline = proc_strings(again, "cmdline");
    assert_eq!(
        cmdline.last().map(String::as_str),
        Some(FLAG),
        "{cmdline:?}"
    );
    assert!(proc_strings(again, "environ").contains(&"GOGC=150".to_string()));

    // Taken out (the whole entry back to its default): the API server
    // restarts without it, the others stay.
    let pids = cluster.component_pids();
    support::run_ok(&mut cluster.manager(&[
        "settings",
        "set",
        "components.kube-apiserver=null",
        "--wait",
    ]));
    let after = cluster.component_pids();
    let plain = pid_of(&after, "kube-apiserver");
    assert_ne!(plain, again);
    assert!(!proc_strings(plain, "cmdline").contains(&FLAG.to_string()));
    assert!(!proc_strings(plain, "environ").contains(&"GOGC=150".to_string()));
    for (name, pid) in &pids {
        if name != "kube-apiserver" {
            assert_eq!(pid_of(&after, name), *pid, "{name} was restarted");
        }
    }
    assert_eq!(cluster.node_ready_condition(), "True");
}

//! A settings change shows no client an error, on a real cluster: a change
//! whose effect is a restart (`proxy.http`, which the environment of every
//! component but etcd carries) hands the API server over to a new instance beside
//! the running one, so that a caller reading the nodes every ~100 ms through
//! the user's kubeconfig sees every call answered — no refused connection,
//! no `Forbidden` from an API server whose authorization caches are not yet
//! filled — and `settings set --wait` ends with the cluster healthy.
//!
//! Needs root, containerd and the bundle (`K8S_MANAGER_BUNDLE`), as the
//! other cluster tests.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::cluster::Cluster;

fn component_pid(cluster: &Cluster, component: &str) -> u64 {
    cluster
        .component_pids()
        .into_iter()
        .find(|(name, _)| name == component)
        .map(|(_, pid)| pid)
        .unwrap_or_else(|| panic!("{component} runs"))
}

fn apiserver_pid(cluster: &Cluster) -> u64 {
    component_pid(cluster, "kube-apiserver")
}

#[test]
fn a_restart_effect_on_the_api_server_fails_no_call() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let before = apiserver_pid(&cluster);
    let etcd_before = component_pid(&cluster, "etcd");

    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let stop = stop.clone();
        let get = cluster.kubectl(&["get", "nodes", "--request-timeout=10s", "-o", "name"]);
        // The command's arguments, to run it afresh each time.
        let program = get.get_program().to_owned();
        let args: Vec<_> = get.get_args().map(|a| a.to_owned()).collect();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new(&program)
                    .args(&args)
                    .output()
                    .expect("kubectl runs");
                match out.status.success() {
                    true => ok += 1,
                    false => failed.push(String::from_utf8_lossy(&out.stderr).into_owned()),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        })
    };

    let asked = Instant::now();
    let set = support::run(&mut cluster.manager(&[
        "settings",
        "set",
        "proxy.http=http://192.0.2.1:3128",
        "--wait",
    ]));
    let took = asked.elapsed();
    // A few more calls after the change, on the new instance.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = caller.join().unwrap();
    assert!(
        set.status.success(),
        "settings set failed:\n{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        failed.is_empty(),
        "{} of {} calls failed during the change:\n{}",
        failed.len(),
        ok + failed.len(),
        failed.join("\n")
    );
    assert!(ok >= 10, "only {ok} calls were made");
    let stderr = String::from_utf8_lossy(&set.stderr);
    assert!(
        stderr.contains("kube-apiserver handed over to a new instance with the new settings"),
        "the API server was not handed over:\n{stderr}"
    );
    // A new instance, which carries the new setting.
    let after = apiserver_pid(&cluster);
    assert_ne!(after, before);
    let environ = std::fs::read(format!("/proc/{after}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("HTTP_PROXY=http://192.0.2.1:3128"),
        "the new API server lacks the proxy"
    );
    // etcd, which reaches nothing through a proxy, kept running: restarting
    // it would stall every call while it drains the API server's watches.
    assert_eq!(
        component_pid(&cluster, "etcd"),
        etcd_before,
        "etcd was restarted for a proxy change"
    );
    // `--wait` ended with the cluster healthy: the node is Ready now.
    assert!(
        cluster.node_ready_condition().contains("True"),
        "the node is not Ready after the change"
    );
    eprintln!("proxy.http set in {took:.1?}: {ok} calls, none failed");
}

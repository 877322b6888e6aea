//! End to end, as a user would: the real binary brings a real cluster up on
//! the real containerd, and upstream kubectl, through the "Windows" kubeconfig
//! the manager merged into, runs a locally built image, reaches it by
//! Service IP and DNS name, reads logs, execs, port-forwards; disable leaves
//! nothing running; enable brings the workload back; reset gives a fresh
//! cluster with a new CA; and `kill -9` of the manager in any phase is
//! followed by an enable that converges.
//!
//! Needs root, containerd prepared by vm/prepare-vm.sh, and the bundle
//! (`K8S_MANAGER_BUNDLE`); tests/run.sh provides all three. The tests share the
//! machine's ports, so they take turns.

mod support;

use support::cluster::{
    CONTEXT, Cluster, apply_text, import_busybox, kubeconfig_field, wait_until,
};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: example.test/busybox:e2e
          imagePullPolicy: Never
          command: ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && echo web-started && exec busybox httpd -f -v -p 8080 -h /www"]
          ports: [{containerPort: 8080}]
          readinessProbe:
            tcpSocket: {port: 8080}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
    - name: client
      image: example.test/busybox:e2e
      imagePullPolicy: Never
      command: ["busybox", "sleep", "3600"]
"#;

fn http_get(cluster: &Cluster, target: &str) -> String {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc {target} 80");
    let start = Instant::now();
    loop {
        let out = support::run(
            &mut cluster.kubectl(&["exec", "client", "--", "busybox", "sh", "-c", &script]),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && stdout.contains("hello-from-web") {
            return stdout;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "GET {target} from the client pod failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ca_data(kubeconfig: &Path) -> String {
    let out = kubeconfig_field(
        kubeconfig,
        "{.clusters[?(@.name==\"docker-desktop\")].cluster.certificate-authority-data}",
    );
    assert!(
        !out.is_empty(),
        "no docker-desktop cluster in {}",
        kubeconfig.display()
    );
    out
}

#[test]
fn enable_use_disable_enable_reset() {
    let cluster = Cluster::new();
    // The user already has a kubeconfig with other entries: they must survive.
    std::fs::write(
        cluster.host_kubeconfig(),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: work\n  cluster:\n    server: https://work.example.test:6443\ncontexts:\n- name: work\n  context:\n    cluster: work\n    user: me\ncurrent-context: work\nusers:\n- name: me\n  user:\n    token: secret-token\n",
    )
    .unwrap();

    cluster.enable_ok();
    // enable on a running cluster re-checks every phase and changes nothing.
    // It comes a few seconds later, as a user's would: statuses that the
    // running components wrote before it must still count.
    std::thread::sleep(Duration::from_secs(3));
    cluster.enable_ok();
    let nodes = cluster.node_ready_condition();
    assert_eq!(nodes, "True");
    assert_eq!(
        cluster.kubectl_ok(&["auth", "can-i", "*", "*"]).trim(),
        "yes"
    );
    let contexts = cluster.context_names();
    assert!(
        contexts.contains("work") && contexts.contains(CONTEXT),
        "{contexts}"
    );
    let current = support::run_ok(Command::new(support::upstream_kubectl()).args([
        "config",
        "current-context",
        "--kubeconfig",
        cluster.host_kubeconfig().to_str().unwrap(),
    ]));
    assert_eq!(
        current.trim(),
        "work",
        "the user's current context must not change"
    );

    import_busybox(cluster.dir.path());
    let manifest = cluster.dir.path().join("workload.yaml");
    std::fs::write(&manifest, WORKLOAD).unwrap();
    cluster.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=120s",
    ]);

    let cluster_ip =
        cluster.kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    http_get(&cluster, &cluster_ip);
    http_get(&cluster, "web.default.svc.cluster.local");
    let lookup = cluster.kubectl_ok(&[
        "exec",
        "client",
        "--",
        "busybox",
        "nslookup",
        "web.default.svc.cluster.local",
        "10.96.0.10",
    ]);
    assert!(lookup.contains(&cluster_ip), "{lookup}");

    settings_refusals_leave_the_cluster_untouched(&cluster);

    let logs = cluster.kubectl_ok(&["logs", "deployment/web"]);
    assert!(logs.contains("web-started"), "{logs}");

    let mut forward = cluster
        .kubectl(&["port-forward", "deployment/web", "18080:8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = port_forward_get(18080, &mut forward);
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(body.contains("hello-from-web"), "{body}");

    // A user's tool watches the pods over HTTP/1.1 (client-go's switch for
    // proxies that cannot do HTTP/2): an open HTTP/1.1 response keeps the API
    // server's HTTP shutdown waiting until its watches are ended.
    let mut watch = cluster
        .kubectl(&["get", "pods", "--all-namespaces", "--watch"])
        .env("DISABLE_HTTP2", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(watch.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("NAME"), "{first}");

    // disable: nothing of ours runs, nothing is mounted, no pod container is left.
    let log = cluster.state().join("logs/manager.log");
    let logged = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
    let out = support::run(&mut cluster.manager(&["disable"]));
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        out.status.success(),
        "disable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each component ended on its own after SIGTERM, the API server too with
    // that watch and CoreDNS's open: none waited out its grace to be killed.
    let stop = std::fs::read_to_string(&log).unwrap();
    let stop = &stop[logged..];
    assert!(stop.contains("stopped kube-apiserver"), "{stop}");
    assert!(!stop.contains("after SIGTERM: killed"), "{stop}");
    assert_eq!(
        support::marked_processes(&cluster.state()),
        Vec::<String>::new()
    );
    assert_eq!(
        support::mounts_below(&cluster.state()),
        Vec::<String>::new()
    );
    assert_eq!(support::k8s_containers(), Vec::<String>::new());
    let status = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"]["state"], "stopped", "{status}");

    // enable again (warm), now behind a proxy that does not answer (a
    // TEST-NET address): the same Deployment comes back, so everything the
    // cluster reaches of its own (API server to kubelet for exec, Services,
    // webhooks) is covered by NO_PROXY.
    set_saved_proxy(
        &cluster,
        serde_json::json!({"http": DEAD_PROXY, "https": DEAD_PROXY, "noProxy": ["example.test"]}),
    );
    let out = cluster.enable_ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("containerd runs with other proxy settings"),
        "{stderr}"
    );
    cluster.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=120s",
    ]);
    http_get(&cluster, "web");
    // Every component but etcd, which reaches nothing beyond loopback.
    let marked = proxy_variables_of_marked(&cluster.state());
    let (etcd, proxied): (Vec<_>, Vec<_>) =
        marked.into_iter().partition(|(name, _)| name == "etcd");
    assert!(
        matches!(etcd.as_slice(), [(_, env)] if env.is_empty()),
        "etcd: {etcd:?}"
    );
    assert!(proxied.len() >= 5, "the other components: {proxied:?}");
    for (_, env) in &proxied {
        assert!(env.contains(&format!("HTTPS_PROXY={DEAD_PROXY}")), "{env}");
        assert!(
            env.contains(",10.96.0.0/12,10.244.0.0/16,.svc,.cluster.local,example.test"),
            "{env}"
        );
    }
    let file = std::fs::read_to_string(cluster.state().join("proxy.env")).unwrap();
    assert!(
        file.contains(&format!("\nhttps_proxy={DEAD_PROXY}\n")),
        "{file}"
    );

    // Without a proxy again, the reset's cluster has none and the file is gone.
    set_saved_proxy(&cluster, serde_json::json!({}));

    // reset: a fresh cluster, without the workload, under a new CA.
    let old_ca = ca_data(&cluster.host_kubeconfig());
    let out = support::run(&mut cluster.manager(&["reset"]));
    assert!(
        out.status.success(),
        "reset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_ca = ca_data(&cluster.host_kubeconfig());
    assert_ne!(
        old_ca, new_ca,
        "reset must put the new CA into the user's kubeconfig"
    );
    let missing = support::run(&mut cluster.kubectl(&["get", "deployment", "web"]));
    assert!(
        !missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("NotFound"),
        "{missing:?}"
    );
    cluster.kubectl_ok(&["get", "nodes"]);
    let contexts = cluster.context_names();
    assert!(contexts.contains("work"), "{contexts}");
    assert!(!cluster.state().join("proxy.env").exists());
    let proxied = proxy_variables_of_marked(&cluster.state());
    assert!(
        proxied.iter().all(|(_, env)| !env.contains("HTTPS_PROXY")),
        "{proxied:?}"
    );
}

/// A proxy nobody answers at (TEST-NET-1).
const DEAD_PROXY: &str = "http://192.0.2.1:3128";

/// Sets the proxy settings (each key of `proxy`; the others back to none),
/// and waits for a running cluster to take them.
fn set_saved_proxy(cluster: &Cluster, proxy: serde_json::Value) {
    let mut args = vec!["settings".to_string(), "set".into(), "--wait".into()];
    for key in ["http", "https", "noProxy"] {
        let value = proxy.get(key).cloned().unwrap_or(serde_json::Value::Null);
        args.push(format!("proxy.{key}={value}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    support::run_ok(&mut cluster.manager(&args));
}

/// The proxy variables of each process carrying this cluster's marker, one
/// `KEY=VALUE ...` line each.
fn proxy_variables_of_marked(state: &Path) -> Vec<(String, String)> {
    let want = format!("K8S_MANAGER_INSTANCE={}", state.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let vars = k8s_manager::model::proxy::proxy_variables(&environ);
            let line: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
            found.push((name.trim().to_string(), line.join(" ")));
        }
    }
    found
}

/// On the running cluster: a setting refused names its field, saves nothing
/// and touches nothing; propose says what a version change would do.
fn settings_refusals_leave_the_cluster_untouched(cluster: &Cluster) {
    let settings_file = cluster.state().join("settings.json");
    let saved = std::fs::read(&settings_file).unwrap();
    let pids = cluster.component_pids();
    assert!(pids.iter().all(|(_, pid)| *pid > 0), "{pids:?}");
    for (assignment, field) in [
        ("kubernetes.apiPort=70000", "kubernetes.apiPort"),
        ("kubernetes.colour=blue", "kubernetes.colour"),
        ("kubernetes.version=v1.99.0", "kubernetes.version"),
    ] {
        let out = support::run(
            &mut cluster.manager(&["settings", "set", assignment, "--output", "json"]),
        );
        assert_eq!(out.status.code(), Some(2), "{assignment}: {out:?}");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert_eq!(answer["error"]["code"], "InvalidSettings", "{answer}");
    }
    assert_eq!(std::fs::read(&settings_file).unwrap(), saved);
    assert_eq!(cluster.component_pids(), pids);
    assert_eq!(cluster.node_ready_condition(), "True");

    // Another minor version throws the cluster away; another patch restarts it.
    cluster.fake_cached_bundle("v1.35.0");
    cluster.fake_cached_bundle("v1.34.99");
    for (version, effect) in [("v1.35.0", "reset"), ("v1.34.99", "restart")] {
        let assignment = format!("kubernetes.version={version}");
        let proposal = support::run_ok(&mut cluster.manager(&[
            "settings",
            "propose",
            &assignment,
            "--output",
            "json",
        ]));
        let proposal: serde_json::Value = serde_json::from_str(&proposal).unwrap();
        let change = proposal["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == "kubernetes.version")
            .unwrap_or_else(|| panic!("{proposal}"));
        assert_eq!(change["effect"], effect, "{proposal}");
        assert_eq!(change["desired"], version, "{proposal}");
    }
    // A reset not confirmed is refused, and changes nothing.
    let out = support::run(&mut cluster.manager(&[
        "settings",
        "set",
        "kubernetes.version=v1.35.0",
        "--output",
        "json",
    ]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["error"]["code"], "ResetRequired", "{answer}");
    assert_eq!(std::fs::read(&settings_file).unwrap(), saved);
    assert_eq!(cluster.component_pids(), pids);

    // Another API port: a restart. Every component that reads a kubeconfig
    // is restarted with its new contents (etcd, which reads none, is not),
    // and the user's kubeconfig follows.
    support::run_ok(&mut cluster.manager(&[
        "settings",
        "set",
        "kubernetes.apiPort=6444",
        "--wait",
    ]));
    let after = cluster.component_pids();
    for (name, pid) in &pids {
        let now = after.iter().find(|(n, _)| n == name).unwrap().1;
        match name.as_str() {
            "etcd" => assert_eq!(now, *pid, "{name} was restarted"),
            _ => assert_ne!(now, *pid, "{name} still runs with its old kubeconfig"),
        }
    }
    let config = std::fs::read_to_string(cluster.host_kubeconfig()).unwrap();
    assert!(config.contains("https://127.0.0.1:6444"), "{config}");
    assert_eq!(cluster.node_ready_condition(), "True");

    // Another context name: the user's kubeconfig has the new one, and the
    // old one is gone (the user's own entries stay); then back.
    support::run_ok(&mut cluster.manager(&[
        "settings",
        "set",
        "kubernetes.contextName=dev-desktop",
        "--wait",
    ]));
    let contexts = cluster.context_names();
    let names: Vec<&str> = contexts.lines().collect();
    assert!(
        names.contains(&"dev-desktop") && names.contains(&"work"),
        "{contexts}"
    );
    assert!(!names.contains(&CONTEXT), "{contexts}");
    support::run_ok(&mut cluster.manager(&[
        "settings",
        "set",
        "kubernetes.contextName=null",
        "--wait",
    ]));
    let contexts = cluster.context_names();
    assert!(!contexts.lines().any(|c| c == "dev-desktop"), "{contexts}");
    assert_eq!(cluster.node_ready_condition(), "True");
}

/// GET through `kubectl port-forward` once it listens.
fn port_forward_get(port: u16, forward: &mut Child) -> String {
    let start = Instant::now();
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            let _ = stream.read_to_string(&mut body);
            if body.contains("200") {
                return body;
            }
        }
        if let Ok(Some(status)) = forward.try_wait() {
            let mut err = String::new();
            forward
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("kubectl port-forward exited ({status}): {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "port-forward never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The body of a plain HTTP GET from this machine, or "" when nothing answers.
fn local_http_get(address: &str, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return String::new();
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// etcd's flags for a member of its own on loopback, without TLS, on ports
/// other than the cluster's.
fn plain_etcd_args(data: &Path) -> Vec<String> {
    let peer = "http://127.0.0.1:22380";
    let client = "http://127.0.0.1:22379";
    vec![
        "--name=docker-desktop".into(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=docker-desktop={peer}"),
        "--listen-metrics-urls=http://127.0.0.1:22381".into(),
    ]
}

/// The CI once caught this in the test below: the manager was killed while
/// etcd made its data folder, and the next manager's SIGTERM (to the etcd it
/// left) landed after etcd had created its write-ahead log and before the
/// first entries (the membership) were in it. Such a member restarts with
/// no members and never elects itself. Here etcd is stopped at exactly that
/// point, every time: under strace, killed at its first fsync(2), which is
/// of the member folder right after the log's rename into place.
#[test]
fn an_etcd_first_start_cut_short_is_started_again_from_empty() {
    let cluster = Cluster::new();
    let etcd = cluster.bundle.join("bin/etcd");
    let data = cluster.state().join("etcd");
    std::fs::create_dir_all(cluster.state()).unwrap();
    let cut = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fsync"])
        .args(["-e", "inject=fsync:signal=KILL:when=1"])
        .arg(&etcd)
        .args(plain_etcd_args(&data))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("strace (tests/run.sh installs it)");
    assert!(!cut.success(), "etcd was not cut short");
    assert!(data.join("member/wal").is_dir(), "no write-ahead log yet");

    // The premise: etcd itself cannot come back from that folder.
    let copy = cluster.dir.path().join("etcd-copy");
    support::run_ok(Command::new("cp").arg("-a").arg(&data).arg(&copy));
    let log = cluster.dir.path().join("etcd-copy.log");
    let mut stuck = Command::new(&etcd)
        .args(plain_etcd_args(&copy))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let health = loop {
        let answer = local_http_get("127.0.0.1:22381", "/health");
        // Well past the moment a healthy single member elects itself.
        if start.elapsed() > Duration::from_secs(3) && !answer.is_empty() {
            break answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "etcd never answered on 127.0.0.1:22381; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = stuck.kill();
    let _ = stuck.wait();
    assert!(health.contains("RAFT NO LEADER"), "{health}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("switched to configuration voters=()"),
        "etcd came back with members"
    );

    // The manager marks a first start until etcd serves; a manager killed
    // at that point leaves the mark next to the folder.
    std::fs::write(cluster.state().join("etcd.first-start"), "").unwrap();
    let out = cluster.enable_ok();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("etcd's first start was cut short"), "{said}");
    assert!(!cluster.state().join("etcd.first-start").exists());
    assert_eq!(cluster.node_ready_condition(), "True");
    // Once etcd has served, its folder is the cluster's: no mark, and a
    // disable and enable keep what the cluster holds.
    cluster.kubectl_ok(&["create", "namespace", "kept"]);
    support::run_ok(&mut cluster.manager(&["disable"]));
    let again = cluster.enable_ok();
    assert!(!String::from_utf8_lossy(&again.stderr).contains("cut short"));
    cluster.kubectl_ok(&["get", "namespace", "kept"]);
}

/// The phases of an enable, in order.
const PHASES: [&str; 14] = [
    "preflight",
    "certs",
    "kubeconfigs",
    "cni",
    "etcd",
    "kube-apiserver",
    "control-plane",
    "images",
    "kubelet",
    "kube-proxy",
    "bootstrap",
    "wait-node",
    "wait-dns",
    "export",
];

/// The state record's phase and writer (`state.json`), if there is one.
fn recorded(cluster: &Cluster) -> (String, Option<u32>) {
    let record: serde_json::Value = std::fs::read(cluster.state().join("state.json"))
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_default();
    let phase = match record["state"]["state"].as_str() {
        Some("starting") => record["state"]["phase"].as_str().unwrap_or_default(),
        other => other.unwrap_or_default(),
    };
    (
        phase.to_string(),
        record["managerPid"].as_u64().map(|p| p as u32),
    )
}

/// The executable a process finds as `name` on PATH.
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} on PATH"))
}

/// One enable, its daemon killed (SIGKILL) in `target`, with its CLI when
/// `with_cli`; returns the phase the state record says the daemon died in.
///
/// The enable is held in `target` from outside, so that the kill lands in
/// it every time, however short the phase is:
/// - the phases that open files: every open(2) the daemon makes of a file
///   of the cluster's folder (a tmpfs of its own) or of the CNI folder waits
///   until this test has read the state record; the first made while the
///   record says `target` gets the kill, the daemon standing still in it;
/// - images: the phase waits for the image import, whose first step runs
///   `ctr`: that exec is held from the start;
/// - bootstrap, wait-node, wait-dns, whose work is API requests: when the
///   daemon opens the record to write that it enters `target`, the API
///   server is frozen (cgroup freezer); the daemon then waits on it in
///   `target`. (A SIGSTOP would do, but a stopped process whose parent dies
///   gets SIGHUP from the kernel: the kill would end the API server too.)
fn kill_in(cluster: &Cluster, target: &'static str, with_cli: bool) -> String {
    use support::holds::{Frozen, OpenHold, Watch, component_pid, is_daemon_of};
    let state = cluster.state();
    let index = PHASES.iter().position(|p| *p == target).unwrap();
    let through_api = ["bootstrap", "wait-node", "wait-dns"].contains(&target);
    let ctr = on_path("ctr");
    let cni = Path::new("/etc/cni/net.d");
    let watches = match target {
        "images" => vec![Watch::Exec(&ctr)],
        "cni" => vec![Watch::Mount(cluster.dir.path()), Watch::Children(cni)],
        _ => vec![Watch::Mount(cluster.dir.path())],
    };
    let daemon_state = state.clone();
    let hold = OpenHold::new(&watches, move |pid, _| is_daemon_of(pid, &daemon_state));

    let bundle = cluster.bundle.to_str().unwrap().to_string();
    let host = cluster.host_kubeconfig().to_str().unwrap().to_string();
    // Each round's output is kept: a failed run shows what every round did.
    let out = cluster.round_log(&format!(
        "{index:02}-{target}{}",
        if with_cli { "-with-cli" } else { "" }
    ));
    let mut cli = cluster
        .manager(&["enable", "--bundle", &bundle, "--host-kubeconfig", &host])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut api_frozen: Option<Frozen> = None;
    let mut import_held = Vec::new();
    let daemon = loop {
        assert!(
            cli.try_wait().unwrap().is_none(),
            "{target}: the enable ended before the daemon was killed in it (last record: {:?})",
            recorded(cluster)
        );
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{target}: never held there (last record: {:?})",
            recorded(cluster)
        );
        let held = hold.next_held(Duration::from_millis(5));
        let (phase, writer) = recorded(cluster);
        let Some(held) = held else {
            // Waiting on the API server or the import: killed once there.
            let waiting = api_frozen.is_some() || !import_held.is_empty();
            if waiting && phase == target && writer.is_some_and(|w| is_daemon_of(w, &state)) {
                break writer.unwrap();
            }
            continue;
        };
        if target == "images" {
            // The import's `ctr`, held until the kill.
            import_held.push(held);
            continue;
        }
        // The daemon is about to record that it enters the next phase.
        let entering = held.path.to_string_lossy().contains("/.state.json.tmp");
        let ours = writer == Some(held.pid);
        if through_api {
            if entering && ours && phase == PHASES[index - 1] && api_frozen.is_none() {
                let pid = component_pid(&state, "kube-apiserver")
                    .unwrap_or_else(|| panic!("{target}: no API server to stop"));
                api_frozen = Some(Frozen::new(pid));
            }
            hold.let_go(held);
            continue;
        }
        if ours && phase == target {
            assert!(
                !entering,
                "{target}: the daemon opened nothing in {target} before it recorded the next phase"
            );
            break held.pid;
        }
        assert!(
            !(ours && PHASES.iter().position(|p| *p == phase) > Some(index)),
            "{target}: the enable went past it ({phase}) without being held there"
        );
        hold.let_go(held);
    };
    if with_cli {
        let _ = cli.kill();
    }
    support::holds::signal(daemon, libc::SIGKILL);
    // Held, the daemon could not have moved on: the record is the one it
    // left. (The next enable, with the CLI's round, may already be writing.)
    let (phase, writer) = recorded(cluster);
    drop(hold);
    drop(import_held);
    drop(api_frozen);
    let _ = cli.wait();
    assert_eq!(
        writer,
        Some(daemon),
        "{target}: the record is not the killed daemon's"
    );
    phase
}

/// `kill -9` of the daemon in every phase of the enable, each kill landing
/// in its phase (see [`kill_in`]): first the daemon alone, the CLI left to
/// notice; then the CLI and its daemon together, and the next enable starts
/// at once, while the killed daemon may still be going away. Then an enable
/// converges: the next daemon ends what each killed one left.
#[test]
fn kill_minus_nine_in_every_phase_then_enable_converges() {
    let cluster = Cluster::on_own_tmpfs();
    let rounds = PHASES
        .iter()
        .map(|p| (*p, false))
        .chain(PHASES.iter().map(|p| (*p, true)));
    let mut killed_in = Vec::new();
    for (target, with_cli) in rounds {
        let phase = kill_in(&cluster, target, with_cli);
        assert_eq!(phase, target, "the kill landed elsewhere: {killed_in:?}");
        killed_in.push(phase);
    }
    eprintln!("killed in phases: {killed_in:?}");
    // The manager died mid-phase many times; the next enable, at once, must
    // converge.
    cluster.enable_ok();
    let ready = cluster.node_ready_condition();
    assert_eq!(ready, "True");
    cluster.kubectl_ok(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/coredns",
        "--timeout=60s",
    ]);
    let status = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"]["state"], "running", "{status}");
    assert!(
        status["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "running"),
        "{status}"
    );
    // One process per component: every killed daemon's were ended. (A
    // component's own helper, an `iptables` of the kube-proxy, may be
    // running at this moment too: it carries its component's marker.)
    let marked = support::marked_components(&cluster.state());
    assert_eq!(
        marked.len(),
        6,
        "{marked:#?}\nall marked: {:#?}",
        support::marked_processes(&cluster.state())
    );
}

/// A claim of the default class, a pod that writes through it, and one
/// that reads it back; `hostpath-retain`'s volume of a second claim.
fn storage_workload(claim: &str, class: Option<&str>, pod: &str, script: &str) -> String {
    let class = class.map_or(String::new(), |c| format!("  storageClassName: {c}\n"));
    format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {claim}
spec:
{class}  accessModes: [ReadWriteOnce]
  resources:
    requests: {{storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: example.test/busybox:e2e
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "{script}"]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
    - name: data
      persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

fn wait_succeeded(cluster: &Cluster, pod: &str) {
    cluster.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        &format!("pod/{pod}"),
        "--timeout=120s",
    ]);
}

#[test]
fn volumes_of_the_default_class_persist_until_their_claim_or_the_cluster_goes() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    import_busybox(cluster.dir.path());
    let volumes = cluster.state().join("volumes");

    // The default class, served by the manager: a pod writes through a claim
    // that names no class.
    let classes = cluster.kubectl_ok(&["get", "storageclass", "-o", "name"]);
    assert!(
        classes.contains("storageclass.storage.k8s.io/hostpath\n")
            && classes.contains("storageclass.storage.k8s.io/hostpath-retain"),
        "{classes}"
    );
    apply_text(
        &cluster,
        "writer",
        &storage_workload(
            "data",
            None,
            "writer",
            "echo written-before-disable > /data/file",
        ),
    );
    wait_succeeded(&cluster, "writer");
    let class = cluster.kubectl_ok(&[
        "get",
        "pvc",
        "data",
        "-o",
        "jsonpath={.spec.storageClassName}",
    ]);
    assert_eq!(class, "hostpath");
    let pv = cluster.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    assert!(pv.starts_with("pvc-"), "{pv}");
    let dir = volumes.join(&pv);
    assert_eq!(
        std::fs::read_to_string(dir.join("file")).unwrap(),
        "written-before-disable\n"
    );
    let status = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let unit = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "volume-provisioner")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(
        (&unit["kind"], &unit["state"]),
        (&serde_json::json!("task"), &serde_json::json!("running")),
        "{status}"
    );

    // disable, enable: the data is still there, and another pod reads it.
    support::run_ok(&mut cluster.manager(&["disable"]));
    assert!(dir.join("file").exists(), "disable keeps the volumes");
    cluster.enable_ok();
    cluster.kubectl_ok(&["delete", "pod", "writer", "--wait=true"]);
    apply_text(
        &cluster,
        "reader",
        &storage_workload("data", None, "reader", "cat /data/file"),
    );
    wait_succeeded(&cluster, "reader");
    let read = cluster.kubectl_ok(&["logs", "reader"]);
    assert_eq!(read, "written-before-disable\n");

    // Deleting the claim deletes the volume with its directory.
    cluster.kubectl_ok(&["delete", "pod", "reader", "--wait=true"]);
    cluster.kubectl_ok(&["delete", "pvc", "data", "--wait=true"]);
    wait_until(
        "the volume's directory removed",
        Duration::from_secs(60),
        || !dir.exists(),
    );
    wait_until("the PV deleted", Duration::from_secs(60), || {
        !support::run(&mut cluster.kubectl(&["get", "pv", &pv]))
            .status
            .success()
    });

    // hostpath-retain: the claim goes, its volume and data stay.
    apply_text(
        &cluster,
        "kept",
        &storage_workload(
            "kept",
            Some("hostpath-retain"),
            "keeper",
            "echo kept > /data/file",
        ),
    );
    wait_succeeded(&cluster, "keeper");
    let kept = cluster.kubectl_ok(&["get", "pvc", "kept", "-o", "jsonpath={.spec.volumeName}"]);
    cluster.kubectl_ok(&["delete", "pod", "keeper", "--wait=true"]);
    cluster.kubectl_ok(&["delete", "pvc", "kept", "--wait=true"]);
    wait_until(
        "the retained volume Released",
        Duration::from_secs(60),
        || {
            cluster.kubectl_ok(&["get", "pv", &kept, "-o", "jsonpath={.status.phase}"])
                == "Released"
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(volumes.join(&kept).join("file").exists());

    // reset: no volume data is left under the state folder.
    let out = support::run(&mut cluster.manager(&["reset"]));
    assert!(
        out.status.success(),
        "reset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!volumes.exists(), "reset leaves {}", volumes.display());
    let pvs = cluster.kubectl_ok(&["get", "pv", "-o", "name"]);
    assert_eq!(pvs, "");
}

/// An HTTPS GET of `url` that trusts only `ca`, as `identity` (a
/// certificate and its key) when given: the status, or why there was none
/// (a handshake refused).
fn https_get(url: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<u16, String> {
    k8s_manager::install_crypto_provider();
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(&read(ca)).unwrap()]);
    if let Some((cert, key)) = identity {
        let mut pem = read(cert);
        pem.extend_from_slice(&read(key));
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    let client = builder.build().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut text = String::new();
        match client.get(url).send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(err) => {
                let mut source: Option<&dyn std::error::Error> = Some(&err);
                while let Some(e) = source {
                    text.push_str(&format!("{e}: "));
                    source = e.source();
                }
                Err(text)
            }
        }
    })
}

/// What kubectl's `auth can-i` answers for the node's own identity.
fn node_can(cluster: &Cluster, verb_and_resource: &[&str]) -> String {
    let mut args = vec!["auth", "can-i"];
    args.extend_from_slice(verb_and_resource);
    args.extend(["--as=system:node:docker-desktop", "--as-group=system:nodes"]);
    let out = support::run(&mut cluster.kubectl(&args));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The secure defaults, end to end on a running cluster rather than as the
/// flags that ask for them: the API server and the kubelet refuse anonymous
/// requests (401, where anonymous access would get the public /version or
/// a 403 from the authorizer); the kubelet's read-only port is closed; etcd
/// refuses a client without a certificate of its CA; the kubelet serves a
/// certificate of the cluster CA; the node's identity is held to its own
/// (Node authorization); every key and kubeconfig is mode 0600. Every
/// finding is collected, then all are reported at once.
#[test]
fn a_running_cluster_keeps_its_secure_defaults() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let pki = cluster.state().join("pki");
    let (ca, etcd_ca) = (pki.join("ca.crt"), pki.join("etcd/ca.crt"));
    let kubelet_client = (
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    );
    let etcd_client = (
        pki.join("etcd/healthcheck-client.crt"),
        pki.join("etcd/healthcheck-client.key"),
    );
    let mut wrong = Vec::new();
    let mut expect = |what: &str,
                      url: &str,
                      ca: &Path,
                      identity: Option<&(PathBuf, PathBuf)>,
                      want: fn(&Result<u16, String>) -> bool| {
        let identity = identity.map(|(cert, key)| (cert.as_path(), key.as_path()));
        let got = https_get(url, ca, identity);
        if !want(&got) {
            wrong.push(format!("{what}: got {got:?}"));
        }
    };
    // The API server: anonymous gets 401 even where the authorizer would
    // let anyone in (/version is public to every authenticated user and,
    // with anonymous requests on, to system:anonymous).
    let version = "https://127.0.0.1:6443/version";
    expect("API server, anonymous", version, &ca, None, |r| {
        *r == Ok(401)
    });
    expect(
        "API server, with a client certificate",
        version,
        &ca,
        Some(&kubelet_client),
        |r| *r == Ok(200),
    );
    // The kubelet: its serving certificate is the cluster CA's (the
    // handshake trusts only it), anonymous gets 401 (not the authorizer's
    // 403), the API server's client certificate gets in.
    let pods = "https://127.0.0.1:10250/pods";
    expect("kubelet 10250, anonymous", pods, &ca, None, |r| {
        *r == Ok(401)
    });
    expect(
        "kubelet 10250, with the API server's client certificate",
        pods,
        &ca,
        Some(&kubelet_client),
        |r| *r == Ok(200),
    );
    // etcd: no certificate, no connection, nor with one of another CA (the
    // cluster's); the healthcheck client's gets in.
    let health = "https://127.0.0.1:2379/health";
    expect(
        "etcd 2379, without a client certificate",
        health,
        &etcd_ca,
        None,
        |r| r.is_err(),
    );
    expect(
        "etcd 2379, with a client certificate of the cluster CA",
        health,
        &etcd_ca,
        Some(&kubelet_client),
        |r| r.is_err(),
    );
    expect(
        "etcd 2379, with a client certificate of the etcd CA",
        health,
        &etcd_ca,
        Some(&etcd_client),
        |r| *r == Ok(200),
    );
    // No read-only port, on any address.
    for address in ["127.0.0.1:10255", "0.0.0.0:10255"] {
        if let Ok(open) =
            TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(2))
        {
            wrong.push(format!(
                "the kubelet's read-only port answers at {address} ({:?})",
                open.peer_addr()
            ));
        }
    }
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    // Local address column: hex port 281F is 10255; state 0A is LISTEN.
    if listening.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.len() > 3 && fields[1].ends_with(":281F") && fields[3] == "0A"
    }) {
        wrong.push("something listens on port 10255".into());
    }

    // Node authorization: the node's identity reads its own Node, not the
    // others nor every Secret (RBAC alone would let system:nodes do more).
    let own = node_can(&cluster, &["get", "node/docker-desktop"]);
    let nodes = node_can(&cluster, &["list", "nodes"]);
    let secrets = node_can(&cluster, &["list", "secrets", "--all-namespaces"]);
    let first = |answer: &str| {
        answer
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    if [first(&own), first(&nodes), first(&secrets)] != ["yes", "no", "no"] {
        wrong.push(format!(
            "the node may get its Node: {own}; list nodes: {nodes}; list every Secret: {secrets} (want yes, no, no)"
        ));
    }

    // Keys and kubeconfigs: 0600, every one.
    let mut files = Vec::new();
    let mut folders = vec![pki.clone(), cluster.state().join("kubeconfig")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "key" || e == "conf") {
                files.push(path);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("ca.key"))
            && files.iter().any(|f| f.ends_with("admin.conf")),
        "keys and kubeconfigs not where this test looks: {files:?}"
    );
    for file in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        if mode != 0o600 {
            wrong.push(format!("{} is mode {mode:o}", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "secure defaults not kept:\n{}",
        wrong.join("\n")
    );
}

/// `ps -e`, top and `pgrep` show each component by its name (the kernel's
/// name of the process, /proc/PID/comm, at most 15 bytes: what a
/// kube-controller-manager binary shows too), though it runs through the
/// descriptor of the file the manager verified (`/proc/self/fd/N`).
#[test]
fn the_components_are_named_in_ps_and_each_runs_in_a_cgroup_of_its_own() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let components = cluster.component_pids();
    assert_eq!(components.len(), 6, "{components:?}");
    let mut wrong = Vec::new();
    for (name, pid) in &components {
        let comm: String = name.chars().take(15).collect();
        let shown = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let found = support::run(Command::new("pgrep").args(["-x", &comm]));
        let pids = String::from_utf8_lossy(&found.stdout).into_owned();
        if shown.trim_end() != comm || !pids.lines().any(|p| p == pid.to_string()) {
            wrong.push(format!(
                "{name} (pid {pid}) is named {:?}; pgrep -x {comm} found {:?}",
                shown.trim_end(),
                pids.lines().collect::<Vec<_>>()
            ));
        }
        // Every thread carries the name (top -H, htop).
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let thread = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if thread.trim_end() != comm {
                wrong.push(format!(
                    "{name}: thread {:?} is named {thread:?}",
                    task.file_name()
                ));
                break;
            }
        }
    }
    let ps = support::run_ok(Command::new("ps").args(["-e", "-o", "pid=,comm="]));
    for (name, pid) in &components {
        let comm: String = name.chars().take(15).collect();
        if !ps.lines().any(|l| {
            l.split_whitespace().collect::<Vec<_>>() == [pid.to_string().as_str(), comm.as_str()]
        }) {
            wrong.push(format!("ps -e does not show {pid} as {comm}"));
        }
    }

    // Each runs in a cgroup of its own, `k8s-manager/<cluster>/<name>`, in
    // the freezer's hierarchy (v1) or the one tree (v2), the same cluster
    // folder for all six; status tells each one's CPU time and working set
    // from it.
    let mut clusters = std::collections::BTreeSet::new();
    for (name, pid) in &components {
        let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path = table
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "freezer")
                    .then_some(path)
            })
            .or_else(|| table.lines().find_map(|l| l.strip_prefix("0::")))
            .unwrap_or_default()
            .to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["k8s-manager", key, last] if last == name => {
                clusters.insert(key.to_string());
            }
            _ => wrong.push(format!("{name} (pid {pid}) runs in cgroup {path:?}")),
        }
    }
    if clusters.len() != 1 {
        wrong.push(format!("the components are in clusters {clusters:?}"));
    }
    let out = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    for (name, _) in &components {
        let Some(c) = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
        else {
            wrong.push(format!("status does not list {name}"));
            continue;
        };
        // Every component has used CPU to start, and holds megabytes.
        let cpu = c["cpuMillis"].as_u64().unwrap_or(0);
        let memory = c["memoryBytes"].as_u64().unwrap_or(0);
        if cpu == 0 || memory < 1 << 20 {
            wrong.push(format!(
                "status says of {name}: cpu {cpu} ms, memory {memory} B: {c}"
            ));
        }
    }
    // Which hierarchy, said (this machine has cgroups: the figures above).
    let hierarchy = status["cgroups"].as_str().unwrap_or_default();
    assert!(hierarchy.starts_with("cgroup v"), "{status}");
    let text = support::run_ok(&mut cluster.manager(&["status"]));
    assert!(
        text.contains(" CPU ") && text.contains(" MEMORY "),
        "{text}"
    );
    assert!(text.contains(&format!("Cgroups: {hierarchy}\n")), "{text}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A warm start calls the API server ready without waiting for its two
/// bootstrap hooks (their roles and priority classes are stored already):
/// ready must still mean ready. While a warm enable runs, one thread asks
/// `/readyz` as the manager's probe does (the hooks excluded) and another
/// calls the API as kube-proxy, whose permission comes from RBAC: no call
/// sent after the first "ready" may be refused. (What guarantees it: the
/// probe's own call is authorized by RBAC, as the manager's probe identity
/// is not in `system:masters`, so `/readyz` answers 403 until the
/// authorizer's informers hold the stored roles; `informer-sync` is among
/// the checks too. A mutation run that also excluded `informer-sync` and
/// `etcd` from the test's probe still passed, for that reason.)
#[test]
fn a_warm_start_is_ready_only_once_authorization_answers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let cluster = Cluster::new();
    cluster.enable_ok();
    let state = cluster.state();
    let marked = std::fs::read_to_string(state.join("apiserver.bootstrapped")).unwrap();
    assert!(marked.starts_with("v1."), "{marked}");
    support::run_ok(&mut cluster.manager(&["disable"]));

    let stop = Arc::new(AtomicBool::new(false));
    let ready: Arc<Mutex<Option<Instant>>> = Arc::default();
    let pki = state.join("pki");
    let poller = {
        let (stop, ready) = (stop.clone(), ready.clone());
        std::thread::spawn(move || {
            let url = "https://127.0.0.1:6443/readyz\
                       ?exclude=poststarthook/rbac/bootstrap-roles\
                       &exclude=poststarthook/scheduling/bootstrap-system-priority-classes";
            while !stop.load(Ordering::Relaxed) {
                let identity = (
                    pki.join("apiserver-kubelet-client.crt"),
                    pki.join("apiserver-kubelet-client.key"),
                );
                let answer = https_get(url, &pki.join("ca.crt"), Some((&identity.0, &identity.1)));
                if answer == Ok(200) {
                    *ready.lock().unwrap() = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // (when the call was sent, what it answered)
    let calls: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let caller = {
        let (stop, calls) = (stop.clone(), calls.clone());
        let kubeconfig = state.join("kubeconfig/kube-proxy.conf");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let out = Command::new(support::upstream_kubectl())
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["get", "--raw", "/api/v1/nodes", "--request-timeout=5s"])
                    .output()
                    .unwrap();
                let said = if out.status.success() {
                    "ok".to_string()
                } else {
                    String::from_utf8_lossy(&out.stderr).trim().to_string()
                };
                calls.lock().unwrap().push((sent, said));
            }
        })
    };
    cluster.enable_ok();
    // A few calls after the enable too.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    caller.join().unwrap();

    let ready = ready
        .lock()
        .unwrap()
        .expect("/readyz answered 200 during the enable");
    let calls = calls.lock().unwrap();
    let after: Vec<&(Instant, String)> = calls.iter().filter(|(sent, _)| *sent > ready).collect();
    assert!(!after.is_empty(), "no call was sent after ready");
    let refused: Vec<&String> = after
        .iter()
        .map(|(_, said)| said)
        .filter(|said| *said != "ok")
        .collect();
    assert!(
        refused.is_empty(),
        "calls sent after the API server was ready were refused: {refused:?}"
    );
}

/// `status` judges the node alive as the controller-manager does, from the
/// later of the kubelet's two heartbeats: its full status, written at its
/// start, on a change and every 5 minutes, and its lease, renewed every 10 s
/// (and made only seconds after a first start). A node whose lease is gone
/// but whose status is fresh is Ready; so is one whose status was last
/// written 10 minutes ago but whose lease is fresh.
#[test]
fn status_reads_the_kubelets_heartbeat_from_its_status_or_its_lease() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    let node = cluster.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let node = node.trim();
    let node_ready = || {
        let out = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["nodeReady"].clone()
    };
    let lease = |args: &[&str]| {
        let mut all = vec!["-n", "kube-node-lease"];
        all.extend_from_slice(args);
        support::run(&mut cluster.kubectl(&all))
    };
    // No lease (the kubelet makes it again at its next renewal, within
    // 10 s: a round where it came back before the verdict is done again).
    let mut proved = false;
    for _ in 0..5 {
        lease(&["delete", "lease", node]);
        let verdict = node_ready();
        let back = lease(&["get", "lease", node]).status.success();
        assert_eq!(verdict, true, "no lease, a fresh status");
        if !back {
            proved = true;
            break;
        }
    }
    assert!(proved, "the kubelet made its lease again every time");
    // The lease back, the status' heartbeat 10 minutes old.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !lease(&["get", "lease", node]).status.success() {
        assert!(std::time::Instant::now() < deadline, "no lease again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let heartbeat = || {
        cluster.kubectl_ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}",
        ])
    };
    // A round where the kubelet wrote its status again before the verdict
    // (it does on any change, such as a new image in the node's list) is
    // done again.
    let mut proved = false;
    for _ in 0..5 {
        let long_ago = time_ago(600);
        let patch = serde_json::json!({
            "status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": long_ago}]}
        });
        cluster.kubectl_ok(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &patch.to_string(),
        ]);
        let verdict = node_ready();
        let text = support::run_ok(&mut cluster.manager(&["status"]));
        assert_eq!(verdict, true, "an old status, a fresh lease");
        assert!(text.contains("Node: Ready"), "{text}");
        if heartbeat() == long_ago {
            proved = true;
            break;
        }
    }
    assert!(proved, "the kubelet wrote its status again every time");
}

/// The UTC time `seconds` ago, as Kubernetes writes it.
fn time_ago(seconds: u64) -> String {
    let out = support::run_ok(
        Command::new("date")
            .args(["-u", "-d", &format!("{seconds} seconds ago")])
            .arg("+%Y-%m-%dT%H:%M:%SZ"),
    );
    out.trim().to_string()
}

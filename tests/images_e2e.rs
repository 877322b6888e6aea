//! End to end, the everyday loop: `docker build` on the VM's real dockerd,
//! and the image runs in a pod of the real cluster with no registry and no
//! other command. Rebuilt, it rolls out; saved, removed and loaded, it is
//! usable again; a `:latest` image with the default pull policy (`Always`)
//! is pulled through the manager's loopback endpoint, offline; a removed
//! image leaves `k8s.io` unless a container uses it. Without a Docker
//! engine the cluster works and `status` says why image sync is idle.
//!
//! Needs what `cluster_e2e` needs, and dockerd running on the same
//! containerd (vm/prepare-vm.sh starts it; tests/run.sh runs that).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::cluster::{Cluster, apply_text, wait_until};

/// Debian's static busybox (package busybox-static), the image's only file.
const BUSYBOX: &str = "/bin/busybox";
const SYNC_LIMIT: Duration = Duration::from_secs(60);

fn docker(args: &[&str]) -> String {
    support::run_ok(Command::new("docker").args(args))
}

/// `docker build -t TAG` of an offline image that serves `content` on
/// port 8080 (busybox httpd); returns the image ID.
fn build(dir: &Path, tag: &str, content: &str) -> String {
    let context = dir.join(format!("build-{}", tag.replace([':', '/'], "-")));
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(BUSYBOX, context.join("busybox")).expect("busybox-static is installed");
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN mkdir /www && echo {content} > /www/index.html\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    let out = support::run(
        Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(&context)
            .env("DOCKER_BUILDKIT", "0"),
    );
    assert!(
        out.status.success(),
        "docker build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `images list --output json` as (docker ref → (image id, synced)).
fn listed(cluster: &Cluster) -> Vec<serde_json::Value> {
    let out = support::run_ok(&mut cluster.manager(&["images", "list", "--output", "json"]));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["images"].as_array().unwrap().clone()
}

/// Waits until `images list` shows `tag` synced at the image `id`.
fn wait_synced(cluster: &Cluster, tag: &str, id: &str) {
    wait_until(&format!("{tag} synced at {id}"), SYNC_LIMIT, || {
        listed(cluster)
            .iter()
            .any(|i| i["dockerRef"] == tag && i["imageId"] == id && i["synced"] == true)
    });
}

/// Waits for the manager's log line of the import of `name` that says
/// `how`, and returns it.
fn import_logged(cluster: &Cluster, name: &str, how: &str) -> String {
    let log = cluster.state().join("logs/manager.log");
    let wanted = format!("image sync: {name} imported");
    let mut line = String::new();
    wait_until(
        &format!("the log says {name} was imported ({how})"),
        SYNC_LIMIT,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match text.lines().rev().find(|l| l.contains(&wanted)) {
                Some(found) if found.contains(how) => {
                    line = found.to_string();
                    true
                }
                _ => false,
            }
        },
    );
    line
}

/// The names containerd's `k8s.io` namespace has.
fn k8s_images() -> String {
    support::run_ok(Command::new("ctr").args(["-n", "k8s.io", "images", "ls", "-q"]))
}

fn served(cluster: &Cluster, target: &str) -> String {
    cluster.kubectl_ok(&[
        "exec",
        target,
        "--",
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080",
    ])
}

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        imagePullPolicy: IfNotPresent
"
    )
}

fn rollout(cluster: &Cluster, name: &str) {
    cluster.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=120s",
    ]);
}

fn remove_test_images() {
    for tag in ["myapp:dev", "loadme:1", "latestapp", "usedonly:1"] {
        let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
    }
}

#[test]
fn docker_images_run_in_pods_offline() {
    remove_test_images();
    let cluster = Cluster::new();
    cluster.enable_ok();
    let dir = cluster.dir.path().to_path_buf();

    // docker build → a Deployment naming it runs, with no other command.
    let v1 = build(&dir, "myapp:dev", "content-v1");
    wait_synced(&cluster, "myapp:dev", &v1);
    // Read from Docker's store in place, not exported by `docker save`.
    import_logged(&cluster, "docker.io/library/myapp:dev", "read in place");
    apply_text(&cluster, "myapp", &deployment("myapp", "myapp:dev"));
    rollout(&cluster, "myapp");
    assert!(served(&cluster, "deploy/myapp").contains("content-v1"));

    // Rebuilt under the same tag → after a restart the new pods serve it.
    let v2 = build(&dir, "myapp:dev", "content-v2");
    assert_ne!(v1, v2);
    wait_synced(&cluster, "myapp:dev", &v2);
    // Only the layer the rebuild changed is written: busybox and its links
    // are the same two layers as before.
    import_logged(
        &cluster,
        "docker.io/library/myapp:dev",
        "read in place: 1 of 3 layers written",
    );
    cluster.kubectl_ok(&["rollout", "restart", "deployment/myapp"]);
    rollout(&cluster, "myapp");
    wait_until("the new pods serve content-v2", SYNC_LIMIT, || {
        served(&cluster, "deploy/myapp").contains("content-v2")
    });

    // `images sync REF` and `images list` say what they see.
    let sync = support::run_ok(&mut cluster.manager(&["images", "sync", "myapp:dev"]));
    assert!(
        sync.contains("present") && sync.contains("docker.io/library/myapp:dev"),
        "{sync}"
    );
    let list = support::run_ok(&mut cluster.manager(&["images", "list"]));
    assert!(list.contains("DOCKER REF"), "{list}");
    assert!(
        list.lines().any(|l| l.starts_with("myapp:dev")
            && l.contains("docker.io/library/myapp:dev")
            && l.ends_with("yes")),
        "{list}"
    );
    let unknown = support::run(&mut cluster.manager(&["images", "sync", "nosuch:1"]));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("Docker has no image"));

    // save + rmi + load → usable too; the rmi of the unused synced image
    // took it out of k8s.io.
    let v3 = build(&dir, "loadme:1", "content-v3");
    wait_synced(&cluster, "loadme:1", &v3);
    let archive = dir.join("loadme.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), "loadme:1"]);
    docker(&["rmi", "loadme:1"]);
    wait_until("loadme:1 removed from k8s.io", SYNC_LIMIT, || {
        !k8s_images().contains("docker.io/library/loadme:1")
    });
    docker(&["load", "-i", archive.to_str().unwrap()]);
    wait_synced(&cluster, "loadme:1", &v3);
    apply_text(&cluster, "loadme", &deployment("loadme", "loadme:1"));
    rollout(&cluster, "loadme");
    assert!(served(&cluster, "deploy/loadme").contains("content-v3"));

    // A `:latest` image, default pull policy (Always): the kubelet pulls it,
    // through the loopback endpoint, with no registry reachable.
    let latest = build(&dir, "latestapp", "content-latest");
    // Docker lists it with its tag.
    wait_synced(&cluster, "latestapp:latest", &latest);
    cluster.kubectl_ok(&["run", "latest", "--image=latestapp"]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/latest",
        "--timeout=120s",
    ]);
    let pulled = cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=latest,reason=Pulled",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(pulled.contains("Successfully pulled"), "{pulled}");
    // Once unused and gone from Docker, it leaves k8s.io with the digest
    // names the pull added.
    cluster.kubectl_ok(&["delete", "pod", "latest", "--wait=true", "--grace-period=1"]);
    docker(&["rmi", "latestapp"]);
    wait_until("latestapp gone from k8s.io", SYNC_LIMIT, || {
        support::run_ok(&mut cluster.manager(&["images", "sync"]));
        !k8s_images().contains("docker.io/library/latestapp")
    });

    // docker rmi of an image a container uses: it stays in k8s.io.
    docker(&["rmi", "-f", "myapp:dev"]);
    let report = support::run_ok(&mut cluster.manager(&["images", "sync", "--output", "json"]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(
        report["kept"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "docker.io/library/myapp:dev"),
        "{report}"
    );
    assert!(k8s_images().contains("docker.io/library/myapp:dev"));
    assert!(served(&cluster, "deploy/myapp").contains("content-v2"));

    // The unit shows what it does in status.
    let status = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let sync = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "image-sync")
        .expect("image-sync in status")
        .clone();
    assert!(
        sync["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("following Docker"),
        "{sync}"
    );
    // Once nothing uses them, the names Docker dropped leave k8s.io, and
    // the test leaves no image of its own behind.
    cluster.kubectl_ok(&["delete", "deployment", "myapp", "loadme", "--wait=true"]);
    remove_test_images();
    wait_until("the test's images gone from k8s.io", SYNC_LIMIT, || {
        support::run_ok(&mut cluster.manager(&["images", "sync"]));
        let left = k8s_images();
        !left.contains("library/myapp") && !left.contains("library/loadme")
    });
}

#[test]
fn without_a_docker_engine_the_cluster_works_and_status_says_why() {
    let cluster = Cluster::new();
    let nowhere = cluster.dir.path().join("no-docker.sock");
    let mut enable = cluster.manager(&[
        "enable",
        "--bundle",
        cluster.bundle.to_str().unwrap(),
        "--host-kubeconfig",
        cluster.host_kubeconfig().to_str().unwrap(),
        "--set",
        &format!("docker.socket={}", nowhere.display()),
    ]);
    support::run_ok(&mut enable);
    assert_eq!(cluster.node_ready_condition(), "True");
    let mut detail = String::new();
    wait_until(
        "image-sync says it is idle",
        Duration::from_secs(20),
        || {
            let status = support::run_ok(&mut cluster.manager(&["status", "--output", "json"]));
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            detail = status["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "image-sync")
                .and_then(|c| c["detail"].as_str())
                .unwrap_or_default()
                .to_string();
            detail.contains("idle")
        },
    );
    assert!(
        detail.contains("no Docker engine") && detail.contains("no-docker.sock"),
        "{detail}"
    );
    let text = support::run_ok(&mut cluster.manager(&["status"]));
    assert!(text.contains("idle"), "{text}");
    let list = support::run(&mut cluster.manager(&["images", "list"]));
    assert!(!list.status.success());
    assert!(
        String::from_utf8_lossy(&list.stderr).contains("idle"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    // The cluster itself serves: a pod of the bundle's image runs.
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "k8s-app=kube-dns",
        "-n",
        "kube-system",
        "--timeout=60s",
    ]);
}

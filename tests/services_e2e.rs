//! LoadBalancer and NodePort Services on localhost, end to end: a real
//! cluster, HTTP servers and a UDP echo server in pods, and this test as the
//! client on 127.0.0.1, as a Windows user's browser would be through WSL 2's
//! localhost forwarding. Two LoadBalancer Services answer at once; a third
//! on a port this test holds gets a Warning Event naming the port and this
//! process, stays pending while the others answer, and answers once the
//! port is let go; a UDP port answers; a node port answers on localhost; a
//! changed port moves the listener; a deleted Service frees its port within
//! 2 s; disable closes every listener.
//!
//! Needs what cluster_e2e needs (root, containerd, the bundle) and a C
//! compiler (the UDP echo server is a few lines of C, built static).
//! Ports 18080-18089 and 31880 are used: unusual ones, not to meet other
//! tests on this machine.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, apply_text, import_busybox_with, wait_until};

const IMAGE: &str = "example.test/busybox-lb:e2e";

const UDP_ECHO: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
    char buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n >= 0) sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
    }
}
"#;

/// The test image: busybox and the UDP echo server.
fn import_image(dir: &Path) {
    let source = dir.join("udpecho.c");
    std::fs::write(&source, UDP_ECHO).unwrap();
    let binary = dir.join("udpecho");
    support::run_ok(
        Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(&binary)
            .arg(&source),
    );
    import_busybox_with(dir, IMAGE, &[("/bin/udpecho", &binary)]);
}

/// A Deployment `name` whose pod serves `hello-<name>` over HTTP on 8080
/// and echoes UDP on 9000.
fn backend(name: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: web
          image: {IMAGE}
          imagePullPolicy: Never
          command: ["/bin/sh", "-c", "mkdir -p /www && echo hello-{name} > /www/index.html && exec busybox httpd -f -p 8080 -h /www"]
          readinessProbe:
            tcpSocket: {{port: 8080}}
            periodSeconds: 1
        - name: echo
          image: {IMAGE}
          imagePullPolicy: Never
          command: ["/bin/udpecho", "9000"]
"#
    )
}

/// A Service `name` of `kind` in front of the pods of `app`.
fn service(name: &str, kind: &str, app: &str, ports: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: {kind}
  selector: {{app: {app}}}
  ports: {ports}
"#
    )
}

/// The body of a GET of 127.0.0.1:`port`, or "" when nothing answers.
fn get(port: u16) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let mut response = String::new();
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return String::new();
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default()
}

fn answers(port: u16, body: &str) -> bool {
    get(port) == body
}

/// The reply of the UDP echo at 127.0.0.1:`port` to `word`, if any.
fn udp_echo(port: u16, word: &str) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(("127.0.0.1", port)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket.send(word.as_bytes()).ok()?;
    let mut buf = [0u8; 128];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn ingress_hostname(cluster: &Cluster, name: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "svc",
        name,
        "-o",
        "jsonpath={.status.loadBalancer.ingress[*].hostname}",
    ])
}

/// The messages of the Warning Events about Service `name`.
fn warnings(cluster: &Cluster, name: &str) -> String {
    cluster.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.kind=Service,involvedObject.name={name},type=Warning"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
}

/// Whether this process can bind `port` on 127.0.0.1 (and so nothing else
/// holds it); the socket is closed again at once.
fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits (at most `limit`) until `port` is free; how long it took.
fn freed_within(port: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    wait_until(&format!("127.0.0.1:{port} free"), limit, || bindable(port));
    start.elapsed()
}

#[test]
fn load_balancers_and_node_ports_answer_on_localhost() {
    let cluster = Cluster::new();
    cluster.enable_ok();
    import_image(cluster.dir.path());
    let workload = [
        backend("a"),
        backend("b"),
        service(
            "lb-a",
            "LoadBalancer",
            "a",
            "[{name: http, port: 18080, targetPort: 8080}, {name: echo, port: 18081, targetPort: 9000, protocol: UDP}]",
        ),
        service(
            "lb-b",
            "LoadBalancer",
            "b",
            "[{port: 18082, targetPort: 8080}]",
        ),
        service(
            "np",
            "NodePort",
            "a",
            "[{port: 80, targetPort: 8080, nodePort: 31880}]",
        ),
    ]
    .join("---\n");
    apply_text(&cluster, "workload", &workload);
    let up = Duration::from_secs(120);

    // Two LoadBalancers at once, each to its own pods, and their ingress.
    wait_until("lb-a answers on 18080", up, || answers(18080, "hello-a"));
    wait_until("lb-b answers on 18082", up, || answers(18082, "hello-b"));
    wait_until(
        "both show ingress localhost",
        Duration::from_secs(10),
        || {
            ingress_hostname(&cluster, "lb-a") == "localhost"
                && ingress_hostname(&cluster, "lb-b") == "localhost"
        },
    );
    let listed = cluster.kubectl_ok(&["get", "svc", "lb-a", "lb-b"]);
    assert_eq!(listed.matches("localhost").count(), 2, "{listed}");

    // UDP, and a node port on localhost.
    wait_until("the UDP echo answers on 18081", up, || {
        udp_echo(18081, "ping").as_deref() == Some("ping")
    });
    wait_until("the node port answers on 31880", up, || {
        answers(31880, "hello-a")
    });

    // A port held by another process: a Warning naming it and its holder,
    // pending, the others unharmed; served once the port is let go.
    let held = TcpListener::bind("127.0.0.1:18083").expect("18083 free for the test");
    apply_text(
        &cluster,
        "lb-c",
        &service(
            "lb-c",
            "LoadBalancer",
            "b",
            "[{port: 18083, targetPort: 8080}]",
        ),
    );
    let pid = format!("pid {}", std::process::id());
    wait_until("the Warning Event of lb-c", Duration::from_secs(30), || {
        let said = warnings(&cluster, "lb-c");
        said.contains("18083/TCP") && said.contains(&pid)
    });
    let said = warnings(&cluster, "lb-c");
    assert!(said.starts_with("PortUnavailable: "), "{said}");
    assert_eq!(said.lines().count(), 1, "one Event per episode: {said}");
    assert_eq!(ingress_hostname(&cluster, "lb-c"), "", "lb-c is pending");
    assert!(answers(18080, "hello-a") && answers(18082, "hello-b"));
    let status = support::run_ok(&mut cluster.manager(&["status"]));
    assert!(
        status.contains("waiting (18083 held by") && status.contains(&pid),
        "{status}"
    );
    drop(held);
    wait_until(
        "lb-c answers once 18083 is free",
        Duration::from_secs(10),
        || answers(18083, "hello-b"),
    );
    wait_until("lb-c shows its ingress", Duration::from_secs(10), || {
        ingress_hostname(&cluster, "lb-c") == "localhost"
    });

    // A changed port moves the listener: the new one answers, the old is free.
    cluster.kubectl_ok(&[
        "patch",
        "svc",
        "lb-b",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 18084}]"#,
    ]);
    let took = freed_within(18082, Duration::from_secs(2));
    eprintln!("18082 freed {took:?} after the change");
    wait_until("lb-b answers on 18084", Duration::from_secs(10), || {
        answers(18084, "hello-b")
    });

    // Deleting a Service frees its ports (TCP and UDP) within 2 s; the
    // others keep answering.
    cluster.kubectl_ok(&["delete", "svc", "lb-a", "--wait=false"]);
    let took = freed_within(18080, Duration::from_secs(2));
    eprintln!("18080 freed {took:?} after the delete");
    wait_until("18081/UDP free", Duration::from_secs(2), || {
        UdpSocket::bind("127.0.0.1:18081").is_ok()
    });
    assert!(answers(18083, "hello-b") && answers(31880, "hello-a"));

    // Disable stops the unit: every listener closes.
    support::run_ok(&mut cluster.manager(&["disable"]));
    for port in [18083, 18084, 31880] {
        assert!(bindable(port), "127.0.0.1:{port} still held after disable");
    }
}

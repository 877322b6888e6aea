//! LoadBalancer and NodePort Services on localhost, end to end: a real
//! cluster, HTTP servers and a UDP echo server in pods, and this test as the
//! client on 127.0.0.1, as a Windows user's browser would be through WSL 2's
//! localhost forwarding. Two LoadBalancer Services answer at once, with
//! ingress `hostname: localhost`; a UDP port answers; node ports (a
//! NodePort's, a LoadBalancer's) answer on localhost; a Service on a port
//! this test holds gets a Warning Event naming the port and this process,
//! stays pending while the others answer, and answers once the port is let
//! go; of two Services on one port the older keeps it, the newer waits with
//! a Warning naming the older and gets it when the older goes; a Service of
//! another loadBalancerClass keeps only its node port; an SCTP port gets a
//! Warning, its Service's TCP port is served; a changed port moves the
//! listener, and a deleted Service frees its ports, each within 2 s of
//! kubectl's return, closing their open connections; a port moved onto one
//! that is held clears the ingress until it frees; another
//! `network.loadBalancerAddress` moves every listener there (the node's own
//! address: ingress `ip` with `ipMode: Proxy`); disable closes every
//! listener. (UDP sessions' end after 60 s idle is a unit test of
//! controllers/services/forward.rs, with a shorter idle time.)
//!
//! Needs what cluster_e2e needs (root, containerd, the bundle) and a C
//! compiler (the UDP echo server is a few lines of C, built static).
//! Ports 18080-18089 (127.0.0.1, 127.0.0.2 and the node's address) and
//! 31880 are used: unusual ones, not to meet other tests on this machine.

mod support;

use std::io::Read;
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
    get_at("127.0.0.1", port)
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

/// How long after `since` `port` could be bound on 127.0.0.1 (polled every
/// millisecond), failing the test past `limit`.
fn freed_within(port: u16, since: Instant, limit: Duration) -> Duration {
    loop {
        if bindable(port) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "127.0.0.1:{port} still held {limit:?} after"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How long the manager may take to close a listener after kubectl's
/// change returned: the watch brings the change, one pass closes it. It
/// takes milliseconds (printed); the bound is what holds on a loaded
/// 2-core machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(2);

/// A connection through 127.0.0.1:`port`, open and idle (the backend waits
/// for a request that does not come).
fn idle_connection(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1];
    let still_open = matches!(
        (&stream).read(&mut buf),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut
    );
    assert!(
        still_open,
        "the connection through {port} did not stay open"
    );
    stream
}

/// Whether the connection was closed (end of stream or reset) within `limit`.
fn closed_within(mut stream: &TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The body of a GET of `address`:`port`, or "" when nothing answers.
fn get_at(address: &str, port: u16) -> String {
    support::http_get(address, port, Duration::from_secs(3))
}

/// The Service's `status.loadBalancer.ingress`, as JSON.
fn ingress(cluster: &Cluster, name: &str) -> serde_json::Value {
    let out = cluster.kubectl_ok(&["get", "svc", name, "-o", "json"]);
    let service: serde_json::Value = serde_json::from_str(&out).unwrap();
    service["status"]["loadBalancer"]["ingress"].clone()
}

/// The node port of the first port of Service `name`.
fn node_port(cluster: &Cluster, name: &str) -> u16 {
    cluster
        .kubectl_ok(&[
            "get",
            "svc",
            name,
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .unwrap()
}

/// The address of this machine's default route (the node's address).
fn node_address() -> String {
    let out = support::run_ok(Command::new("ip").args(["-4", "route", "get", "1.1.1.1"]));
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "src")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no source address in: {out}"))
        .to_string()
}

/// Sets `network.loadBalancerAddress` and waits for the cluster to take it.
fn set_address(cluster: &Cluster, address: &str) {
    support::run_ok(&mut cluster.manager(&[
        "settings",
        "set",
        &format!("network.loadBalancerAddress={address}"),
        "--wait",
    ]));
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

    // UDP, a node port on localhost, and a LoadBalancer's own node port.
    wait_until("the UDP echo answers on 18081", up, || {
        udp_echo(18081, "ping").as_deref() == Some("ping")
    });
    wait_until("the node port answers on 31880", up, || {
        answers(31880, "hello-a")
    });
    let lb_node_port = node_port(&cluster, "lb-b");
    wait_until(
        "lb-b's node port answers on localhost",
        Duration::from_secs(10),
        || answers(lb_node_port, "hello-b"),
    );

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

    // A port two Services want: the older keeps it, the newer waits with a
    // Warning naming the older, and gets it once the older is gone.
    apply_text(
        &cluster,
        "lb-d",
        &service(
            "lb-d",
            "LoadBalancer",
            "a",
            "[{port: 18086, targetPort: 8080}]",
        ),
    );
    wait_until("lb-d answers on 18086", up, || answers(18086, "hello-a"));
    apply_text(
        &cluster,
        "lb-e",
        &service(
            "lb-e",
            "LoadBalancer",
            "b",
            "[{port: 18086, targetPort: 8080}]",
        ),
    );
    wait_until("the Warning Event of lb-e", Duration::from_secs(30), || {
        warnings(&cluster, "lb-e").contains("held by Service default/lb-d")
    });
    assert!(answers(18086, "hello-a"), "the older Service lost its port");
    assert_eq!(ingress_hostname(&cluster, "lb-e"), "", "lb-e is pending");
    cluster.kubectl_ok(&["delete", "svc", "lb-d"]);
    wait_until(
        "lb-e answers once lb-d is gone",
        Duration::from_secs(10),
        || answers(18086, "hello-b"),
    );
    wait_until("lb-e shows its ingress", Duration::from_secs(10), || {
        ingress_hostname(&cluster, "lb-e") == "localhost"
    });

    // Another implementation's LoadBalancer (loadBalancerClass) keeps only
    // its node port here; an SCTP port is said not served, the Service's
    // TCP port is. Both in one apply: once the TCP port answers, the pass
    // that saw both has run.
    apply_text(
        &cluster,
        "others",
        &[
            service(
                "lb-other",
                "LoadBalancer",
                "a",
                "[{port: 18085, targetPort: 8080}]",
            )
            .replace("spec:\n", "spec:\n  loadBalancerClass: example.test/other\n"),
            service(
                "lb-sctp",
                "LoadBalancer",
                "a",
                "[{name: web, port: 18087, targetPort: 8080}, {name: s, port: 18088, targetPort: 9999, protocol: SCTP}]",
            ),
        ]
        .join("---\n"),
    );
    wait_until("lb-sctp's TCP port answers", up, || {
        answers(18087, "hello-a")
    });
    wait_until(
        "the Warning Event of lb-sctp",
        Duration::from_secs(30),
        || warnings(&cluster, "lb-sctp").contains("UnsupportedProtocol: port 18088/SCTP"),
    );
    wait_until("lb-sctp shows its ingress", Duration::from_secs(10), || {
        ingress_hostname(&cluster, "lb-sctp") == "localhost"
    });
    let other_node_port = node_port(&cluster, "lb-other");
    wait_until(
        "lb-other's node port answers",
        Duration::from_secs(10),
        || answers(other_node_port, "hello-a"),
    );
    assert!(bindable(18085), "another class's port was taken");
    assert_eq!(ingress(&cluster, "lb-other"), serde_json::Value::Null);
    assert_eq!(warnings(&cluster, "lb-other"), "");

    // A changed port moves the listener and closes its connections: the
    // new one answers, the old is free.
    let connection = idle_connection(18082);
    cluster.kubectl_ok(&[
        "patch",
        "svc",
        "lb-b",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 18084}]"#,
    ]);
    let changed = Instant::now();
    let took = freed_within(18082, changed, CLOSED_WITHIN);
    assert!(
        closed_within(&connection, CLOSED_WITHIN),
        "a connection through 18082 outlived its port's change"
    );
    eprintln!("18082 freed {took:?} after kubectl's change returned");
    wait_until("lb-b answers on 18084", Duration::from_secs(10), || {
        answers(18084, "hello-b")
    });

    // A port moved onto one another process holds: the old listener
    // closes, the ingress is cleared, the Service waits; served again once
    // the port is free.
    let held = TcpListener::bind("127.0.0.1:18089").expect("18089 free for the test");
    cluster.kubectl_ok(&[
        "patch",
        "svc",
        "lb-c",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 18089}]"#,
    ]);
    wait_until("lb-c's ingress cleared", Duration::from_secs(10), || {
        ingress(&cluster, "lb-c") == serde_json::Value::Null
    });
    assert!(bindable(18083), "lb-c's old port is still held");
    drop(held);
    wait_until(
        "lb-c answers on 18089 once it is free",
        Duration::from_secs(10),
        || answers(18089, "hello-b"),
    );
    wait_until(
        "lb-c shows its ingress again",
        Duration::from_secs(10),
        || ingress_hostname(&cluster, "lb-c") == "localhost",
    );

    // Deleting a Service frees its ports (TCP and UDP) and closes its
    // connections; the others keep answering.
    let connection = idle_connection(18080);
    cluster.kubectl_ok(&["delete", "svc", "lb-a", "--wait=false"]);
    let deleted = Instant::now();
    let took = freed_within(18080, deleted, CLOSED_WITHIN);
    assert!(
        closed_within(&connection, CLOSED_WITHIN),
        "a connection through 18080 outlived its Service"
    );
    eprintln!("18080 freed {took:?} after kubectl's delete returned");
    wait_until("18081/UDP free", CLOSED_WITHIN, || {
        UdpSocket::bind("127.0.0.1:18081").is_ok()
    });
    assert!(answers(18089, "hello-b") && answers(31880, "hello-a"));

    // Another load-balancer address: every listener moves there (a
    // loopback address keeps `hostname: localhost`), the old address is
    // free; on the node's own address the ingress is that `ip`, with
    // `ipMode: Proxy`; back to 127.0.0.1.
    set_address(&cluster, "127.0.0.2");
    wait_until("lb-c answers on 127.0.0.2", up, || {
        get_at("127.0.0.2", 18089) == "hello-b"
    });
    assert_eq!(get_at("127.0.0.2", 31880), "hello-a");
    assert!(bindable(18089) && bindable(31880), "127.0.0.1 still served");
    assert_eq!(ingress_hostname(&cluster, "lb-c"), "localhost");
    let node = node_address();
    set_address(&cluster, &node);
    wait_until(&format!("lb-c answers on {node}"), up, || {
        get_at(&node, 18089) == "hello-b"
    });
    wait_until(
        "lb-c's ingress is the node's ip",
        Duration::from_secs(10),
        || ingress(&cluster, "lb-c") == serde_json::json!([{"ip": node, "ipMode": "Proxy"}]),
    );
    assert!(
        TcpListener::bind(("127.0.0.2", 18089)).is_ok(),
        "127.0.0.2 still served"
    );
    set_address(&cluster, "127.0.0.1");
    wait_until("lb-c answers on 127.0.0.1 again", up, || {
        answers(18089, "hello-b")
    });
    wait_until(
        "lb-c's ingress is localhost again",
        Duration::from_secs(10),
        || ingress(&cluster, "lb-c") == serde_json::json!([{"hostname": "localhost"}]),
    );

    // Disable stops the unit: every listener closes.
    support::run_ok(&mut cluster.manager(&["disable"]));
    for port in [18084, 18086, 18087, 18089, 31880, lb_node_port] {
        assert!(bindable(port), "127.0.0.1:{port} still held after disable");
    }
}

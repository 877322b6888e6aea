//! `runtime` against a real containerd: CRI calls, image import (cold, then a
//! no-op), the sandbox-image tag, a real pod sandbox on our CNI network, its
//! removal with its network, the removal of `k8s.io` leftovers while another
//! namespace's container survives, and the host network cleanup with Docker's
//! and a user's iptables chains kept.
//!
//! The test runs its own containerd — the machine's binary, configured like
//! `vm/prepare-vm.sh` configures the system one — with its own socket, state
//! and CNI folder, inside a network namespace of its own. `remove_all_pods`
//! and the iptables cleanup act on everything of a kind (every pod sandbox,
//! every KUBE-* chain): run against the system containerd and host network,
//! they would tear down a cluster someone else is running on this machine.
//! Here they act on the test's world only, and the bridge and iptables rules
//! it made vanish with the namespace whatever the outcome.
//!
//! Needs root, containerd, runc, the CNI plugins, iptables, iproute2, Go and a
//! C compiler (for the test images), and a static busybox (Debian:
//! busybox-static). Anything missing fails the test with what to install.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PortMapping,
    RunPodSandboxRequest,
};
use k8s_manager::runtime::cni::{self, CniNetwork};
use k8s_manager::runtime::images::{self, ImportOutcome};
use k8s_manager::runtime::iptables::{self, Family};
use k8s_manager::runtime::{Cri, Ctr, netclean};
use support::{run, run_ok};

/// The sandbox image the test containerd is configured with: not the pause
/// image's own name, so that the tag is exercised.
const SANDBOX_IMAGE: &str = "k8s-manager.test/pause:sandbox";
const BUSYBOX_IMAGE: &str = "k8s-manager.test/busybox:1";
const OWN_PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
const POD_SUBNET: &str = "10.244.0.0/24";
const RUNC_SHIM_ROOT: &str = "/run/containerd/runc";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate is in the workspace")
        .to_path_buf()
}

fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "`{program}` is not on PATH: install {package}");
}

/// The CNI plugins folder: `$CNI_BIN_DIR`, else where Debian or the upstream
/// tarball puts them (the same search as vm/prepare-vm.sh).
fn cni_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CNI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    ["/usr/lib/cni", "/opt/cni/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("bridge").is_file())
        .expect("no CNI plugins in /usr/lib/cni or /opt/cni/bin: install containernetworking-plugins or set CNI_BIN_DIR")
}

/// A statically linked busybox: `$BUSYBOX`, else Debian's busybox-static.
fn static_busybox() -> PathBuf {
    let path = std::env::var_os("BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    let bytes = std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}: install busybox-static or set BUSYBOX",
            path.display()
        )
    });
    assert!(
        !has_program_interpreter(&bytes),
        "{} is dynamically linked and cannot run alone in an image: install busybox-static or set BUSYBOX",
        path.display()
    );
    path
}

/// Whether a 64-bit little-endian ELF executable asks for a dynamic loader
/// (has a PT_INTERP program header).
fn has_program_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert!(
        elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let offset = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entry_size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = offset + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// Whether this process may lower oom_score_adj; if not, containerd's CRI
/// must be told to leave it alone (MACHINE-NOTES.md, vm/prepare-vm.sh).
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd line");
    let bits = u64::from_str_radix(bounding.trim(), 16).expect("hex capability set");
    bits & (1 << 24) != 0
}

/// A pause image archive: the bundle's (`$K8S_MANAGER_BUNDLE`, as tests/run.sh
/// sets it, else a bundle in the cache), or one built here the way the bundle
/// builder builds it.
fn pause_archive(work: &Path, bundletool: &Path) -> PathBuf {
    let mut bundles: Vec<PathBuf> =
        std::fs::read_dir(k8s_manager::bundle::cache_dir().join("bundles"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
    bundles.sort();
    bundles.extend(std::env::var_os("K8S_MANAGER_BUNDLE").map(PathBuf::from));
    if let Some(archive) = bundles
        .iter()
        .rev()
        .map(|bundle| bundle.join("images/pause.tar"))
        .find(|archive| archive.is_file())
    {
        eprintln!("pause image: {}", archive.display());
        return archive;
    }
    let binary = work.join("pause");
    let source = repo_root().join("vm/bundle/pause/pause.c");
    run_ok(
        Command::new("cc")
            .args(["-static", "-Os", "-DPAUSE_VERSION=\"3.10.1\"", "-o"])
            .arg(&binary)
            .arg(&source),
    );
    let archive = work.join("pause.tar");
    run_ok(
        Command::new(bundletool)
            .args([
                "image",
                "--ref",
                OWN_PAUSE_IMAGE,
                "--entrypoint",
                "/pause",
                "--out",
            ])
            .arg(&archive)
            .arg(format!("--add=/pause={}", binary.display())),
    );
    eprintln!("pause image: built from {}", source.display());
    archive
}

/// The test's containerd. Dropping it kills every task it runs (their shims
/// outlive containerd otherwise), stops it, and removes what the test left
/// on the host's file system.
struct TestContainerd {
    child: Child,
    socket: PathBuf,
    conf_dir: PathBuf,
    network: CniNetwork,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

impl TestContainerd {
    fn start(dir: tempfile::TempDir, network: CniNetwork) -> TestContainerd {
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let conf_dir = root.join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let config = format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{socket}"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{SANDBOX_IMAGE}"
    restrict_oom_score_adj = {restrict_oom}
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{bin_dir}"
      conf_dir = "{conf_dir}"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{root}/opt"
"#,
            root = root.display(),
            socket = socket.display(),
            restrict_oom = !has_cap_sys_resource(),
            bin_dir = cni_bin_dir().display(),
            conf_dir = conf_dir.display(),
        );
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts: install containerd (vm/prepare-vm.sh does)");
        let mut containerd = TestContainerd {
            child,
            socket,
            conf_dir,
            network,
            namespaces: vec![k8s_manager::runtime::ctr::K8S_NAMESPACE.to_string()],
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = run(Command::new("ctr")
                .arg("--address")
                .arg(&containerd.socket)
                .arg("version"));
            if answer.status.success() {
                break;
            }
            if let Some(status) = containerd.child.try_wait().unwrap() {
                panic!("containerd exited ({status}):\n{}", containerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 20 s:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace]);
        cmd
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        // A test that failed half-way leaves pod sandboxes: removed through
        // CRI, containerd also unmounts their network namespaces from
        // /var/run/netns, which would outlive everything else. Drop may run
        // while the test's runtime unwinds on this thread, so the removal gets
        // a thread and a runtime of its own.
        let socket = self.socket.clone();
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async { Cri::connect(&socket).await?.remove_all_pods().await })
        });
        if let Ok(Err(err)) = removal.join() {
            eprintln!("cleanup: removing the test's pods failed: {err}");
        }
        for namespace in self.namespaces.clone() {
            let tasks = run(self.ctr(&namespace).args(["tasks", "list", "--quiet"]));
            for task in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
                let _ = run(self
                    .ctr(&namespace)
                    .args(["tasks", "delete", "--force", task]));
            }
        }
        // SAFETY: the PID is our own child's, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Mounts a failed test left (a sandbox's /dev/shm) would keep the
        // folder from being removed.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| Path::new(m).starts_with(self.dir.path()))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = run(Command::new("umount").args(["--lazy", mount]));
        }
        let _ = netclean::remove_cni_files(
            &self.network,
            &self.conf_dir,
            Path::new(cni::DEFAULT_CNI_STATE_DIR),
        );
        // containerd 1.6's runc shim keeps its state under this fixed root,
        // one folder per namespace, whatever containerd's own state folder;
        // k8s.io's folder is shared with the system containerd and stays.
        for namespace in self
            .namespaces
            .iter()
            .filter(|ns| *ns != k8s_manager::runtime::ctr::K8S_NAMESPACE)
        {
            let _ = std::fs::remove_dir(Path::new(RUNC_SHIM_ROOT).join(namespace));
        }
    }
}

/// Moves this thread into a new network namespace with its loopback up. The
/// test's containerd, the CNI plugins and the `ip`/`iptables` commands the
/// library runs are all started from this thread and so live there too.
fn enter_private_network_namespace() {
    // SAFETY: unshare only changes this thread's namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    run_ok(Command::new("ip").args(["link", "set", "lo", "up"]));
}

fn iptables_save(family: Family) -> String {
    let program = match family {
        Family::Ipv4 => "iptables-save",
        Family::Ipv6 => "ip6tables-save",
    };
    run_ok(&mut Command::new(program))
}

fn iptables_restore(family: Family, script: &str) {
    use std::io::Write;
    let program = match family {
        Family::Ipv4 => "iptables-restore",
        Family::Ipv6 => "ip6tables-restore",
    };
    let mut child = Command::new(program)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{program} refused:\n{script}"
    );
}

/// Rules and chains of someone else (Docker, a user, another CNI network)
/// next to leftovers of ours (kube-proxy, kubelet, a pod whose CNI DEL never
/// ran), as the test puts them into its namespace.
fn foreign_and_leftover_rules(network: &str) -> String {
    let id = "5a".repeat(32);
    let other_id = "0b".repeat(32);
    format!(
        r#"*mangle
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*filter
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-FIREWALL - [0:0]
:USER-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -j USER-FIREWALL
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -i k8smgr0 -m comment --comment "user rule about the pod bridge" -j ACCEPT
-A DOCKER-USER -j RETURN
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -j DROP
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A USER-FIREWALL -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*nat
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:CNI-5a5a5a5a5a5a5a5a5a5a5a5a - [0:0]
:CNI-0b0b0b0b0b0b0b0b0b0b0b0b - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 10.244.0.99/32 -m comment --comment "name: \"{network}\" id: \"{id}\"" -j CNI-5a5a5a5a5a5a5a5a5a5a5a5a
-A POSTROUTING -s 10.88.0.3/32 -m comment --comment "name: \"podman\" id: \"{other_id}\"" -j CNI-0b0b0b0b0b0b0b0b0b0b0b0b
-A DOCKER -i docker0 -j RETURN
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-MARK-MASQ
-A CNI-5a5a5a5a5a5a5a5a5a5a5a5a ! -d 224.0.0.0/4 -m comment --comment "name: \"{network}\" id: \"{id}\"" -j MASQUERADE
-A CNI-0b0b0b0b0b0b0b0b0b0b0b0b ! -d 224.0.0.0/4 -m comment --comment "name: \"podman\" id: \"{other_id}\"" -j MASQUERADE
COMMIT
"#
    )
}

/// The lines of an iptables-save output that are not ours.
fn foreign_lines(saved: &str) -> Vec<String> {
    saved
        .lines()
        .filter(|l| {
            ["DOCKER", "docker0", "USER-FIREWALL", "podman", "0b0b0b"]
                .iter()
                .any(|mark| l.contains(mark))
        })
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect()
}

fn interfaces_on_bridge(bridge: &str) -> Vec<String> {
    run_ok(Command::new("ip").args(["-o", "link", "show", "master", bridge]))
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|name| name.trim().to_string()))
        .collect()
}

/// The IP addresses host-local has handed out on the network.
fn allocated_ips(network: &CniNetwork) -> Vec<String> {
    let dir = network.ipam_dir(Path::new(cni::DEFAULT_CNI_STATE_DIR));
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn runtime_against_real_containerd() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test drives containerd and iptables: run it as root"
    );
    for (program, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("ip", "iproute2"),
        ("iptables-save", "iptables"),
        ("ip6tables-save", "iptables"),
        ("go", "Go (golang)"),
        ("cc", "a C compiler (gcc) with static glibc (libc6-dev)"),
    ] {
        require_program(program, package);
    }
    enter_private_network_namespace();
    // Everything below runs on this thread, inside the namespace.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scenario());
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    // --- test images ----------------------------------------------------------
    let bundletool = work.join("bundletool");
    run_ok(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bundletool)
            .arg(".")
            .current_dir(repo_root().join("vm/bundle/bundletool")),
    );
    let busybox = static_busybox();
    let busybox_archive = work.join("busybox.tar");
    run_ok(
        Command::new(&bundletool)
            .args([
                "image",
                "--ref",
                BUSYBOX_IMAGE,
                "--entrypoint",
                "/bin/sh",
                "--out",
            ])
            .arg(&busybox_archive)
            .arg(format!("--add=/bin/sh={}", busybox.display()))
            .arg(format!("--add=/bin/sleep={}", busybox.display())),
    );
    let pause_archive = pause_archive(&work, &bundletool);

    // --- containerd -------------------------------------------------------------
    let network = CniNetwork {
        name: format!("k8s-manager-test-{}", std::process::id()),
        ..CniNetwork::new(POD_SUBNET.parse::<ipnet::IpNet>().unwrap())
    };
    let mut containerd = TestContainerd::start(dir, network.clone());
    let cri = Cri::connect(&containerd.socket).await.expect("connect");
    let ctr = Ctr::new(&containerd.socket);

    let version = cri.version().await.expect("version");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty());
    eprintln!(
        "runtime: {} {}",
        version.runtime_name, version.runtime_version
    );

    let status = cri.status().await.expect("status");
    assert!(status.runtime.ready, "{:?}", status.runtime);
    assert!(
        !status.network.ready,
        "no CNI configuration yet, yet {:?}",
        status.network
    );
    assert_eq!(status.sandbox_image, SANDBOX_IMAGE);

    // --- CNI configuration: containerd picks it up ------------------------------
    let conf_file =
        cni::write_cni_config(&containerd.conf_dir, &network).expect("write CNI config");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cri.status().await.expect("status");
        if status.network.ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "containerd did not load {}: {:?}",
            conf_file.display(),
            status.network
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- images -----------------------------------------------------------------
    let started = Instant::now();
    let cold = images::import_archive(&ctr, &cri, &busybox_archive)
        .await
        .expect("import");
    let cold_time = started.elapsed();
    assert_eq!(cold.outcome, ImportOutcome::Imported);
    assert_eq!(cold.images[0].reference, BUSYBOX_IMAGE);
    let started = Instant::now();
    let warm = images::import_archive(&ctr, &cri, &busybox_archive)
        .await
        .expect("import again");
    let warm_time = started.elapsed();
    assert_eq!(warm.outcome, ImportOutcome::AlreadyPresent);
    eprintln!("timing: import busybox (3.8 MiB) cold {cold_time:?}, warm {warm_time:?}");
    assert!(cri.image_present(BUSYBOX_IMAGE).await.unwrap());
    assert!(
        !cri.image_present("k8s-manager.test/absent:1")
            .await
            .unwrap()
    );

    let pause = images::import_archive(&ctr, &cri, &pause_archive)
        .await
        .expect("import pause");
    let pause_ref = pause.images[0].reference.clone();
    assert_ne!(pause_ref, SANDBOX_IMAGE);
    assert_eq!(
        images::ensure_sandbox_image(&ctr, &cri, &pause_ref)
            .await
            .expect("tag"),
        SANDBOX_IMAGE
    );
    let digests = ctr.image_digests().await.unwrap();
    assert_eq!(
        digests[SANDBOX_IMAGE], digests[&pause_ref],
        "the sandbox name points at the pause image"
    );
    assert_eq!(
        cri.image_id(SANDBOX_IMAGE).await.unwrap(),
        cri.image_id(&pause_ref).await.unwrap()
    );
    images::ensure_sandbox_image(&ctr, &cri, &pause_ref)
        .await
        .expect("second tag is a no-op");

    // --- a real pod sandbox on our network ------------------------------------------
    let logs = containerd.dir.path().join("pods/runtime-test");
    std::fs::create_dir_all(&logs).unwrap();
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "runtime-test".into(),
            uid: format!("uid-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "runtime-test".into(),
        log_directory: logs.display().to_string(),
        // A hostPort, so that portmap makes its chains too.
        port_mappings: vec![PortMapping {
            protocol: 0,
            container_port: 80,
            host_port: 18080,
            host_ip: String::new(),
        }],
        ..Default::default()
    };
    let started = Instant::now();
    let pod_id = cri
        .runtime_service()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|status| {
            panic!(
                "RunPodSandbox: {status:?}\ncontainerd log:\n{}",
                containerd.log()
            )
        })
        .into_inner()
        .pod_sandbox_id;
    eprintln!("timing: RunPodSandbox {:?}", started.elapsed());

    let pods = cri.list_pods().await.unwrap();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert!(
        pods[0].ready && pods[0].name == "runtime-test" && pods[0].namespace == "default",
        "{pods:?}"
    );
    let pod_status = cri
        .runtime_service()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ip = pod_status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        ip.starts_with("10.244.0."),
        "pod IP {ip:?} is not from {POD_SUBNET}"
    );
    assert_eq!(
        allocated_ips(&network),
        std::slice::from_ref(&ip),
        "host-local holds the pod's address"
    );
    let veths = interfaces_on_bridge(&network.bridge);
    assert_eq!(veths.len(), 1, "one veth on {}: {veths:?}", network.bridge);

    // containerd ran the loopback plugin itself: lo is up in the pod.
    let info: serde_json::Value = serde_json::from_str(&pod_status.info["info"]).unwrap();
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .expect("the sandbox has a network namespace")
        .to_string();
    let lo = run_ok(
        Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["ip", "-o", "link", "show", "lo"]),
    );
    assert!(lo.contains(",UP"), "loopback is down in the pod: {lo}");

    // The rules the real bridge and portmap plugins made carry the comment
    // the cleanup plan recognises.
    let live_plan = iptables::cleanup_plan(
        &iptables::parse_save(&iptables_save(Family::Ipv4)).unwrap(),
        &network.name,
    );
    let nat = live_plan
        .tables
        .iter()
        .find(|t| t.table == "nat")
        .expect("our pod's nat rules");
    let per_pod: Vec<_> = nat
        .delete_chains
        .iter()
        .filter(|c| !c.starts_with("CNI-HOSTPORT-"))
        .collect();
    assert!(
        per_pod.iter().any(|c| c.starts_with("CNI-DN-")),
        "portmap chain of the pod not planned: {nat:#?}"
    );
    assert!(
        per_pod.iter().any(|c| !c.starts_with("CNI-DN-")),
        "bridge masquerade chain not planned: {nat:#?}"
    );

    // --- a container in another namespace, and a k8s.io container CRI does not know
    let other_namespace = format!("other-test-{}", std::process::id());
    containerd.namespaces.push(other_namespace.clone());
    let survivor = format!("survivor-{}", std::process::id());
    let leftover = format!("leftover-{}", std::process::id());
    run_ok(
        containerd
            .ctr(&other_namespace)
            .args(["images", "import"])
            .arg(&busybox_archive),
    );
    run_ok(containerd.ctr(&other_namespace).args([
        "run",
        "-d",
        BUSYBOX_IMAGE,
        &survivor,
        "/bin/sleep",
        "600",
    ]));
    run_ok(containerd.ctr("k8s.io").args([
        "run",
        "-d",
        BUSYBOX_IMAGE,
        &leftover,
        "/bin/sleep",
        "600",
    ]));

    // --- remove_all_pods: the pod and its network go -------------------------------
    let started = Instant::now();
    assert_eq!(cri.remove_all_pods().await.expect("remove_all_pods"), 1);
    eprintln!("timing: remove_all_pods (1 pod) {:?}", started.elapsed());
    assert!(cri.list_pods().await.unwrap().is_empty());
    assert!(
        interfaces_on_bridge(&network.bridge).is_empty(),
        "a veth is left on the bridge"
    );
    assert!(
        allocated_ips(&network).is_empty(),
        "host-local still holds {:?}",
        allocated_ips(&network)
    );
    assert_eq!(
        cri.remove_all_pods().await.unwrap(),
        0,
        "nothing left to remove"
    );

    // --- k8s.io leftovers go, the other namespace's container stays ------------------
    let removed = ctr
        .remove_k8s_namespace_leftovers()
        .await
        .expect("leftovers");
    assert_eq!(removed.tasks, std::slice::from_ref(&leftover));
    assert_eq!(removed.containers, std::slice::from_ref(&leftover));
    let k8s_containers = run_ok(
        containerd
            .ctr("k8s.io")
            .args(["containers", "list", "--quiet"]),
    );
    assert!(
        k8s_containers.trim().is_empty(),
        "left in k8s.io: {k8s_containers}"
    );
    let other_tasks = run_ok(containerd.ctr(&other_namespace).args(["tasks", "list"]));
    assert!(
        other_tasks
            .lines()
            .any(|l| l.starts_with(&survivor) && l.contains("RUNNING")),
        "the other namespace's container did not survive:\n{other_tasks}"
    );
    assert!(
        cri.image_present(BUSYBOX_IMAGE).await.unwrap(),
        "images stay for the next start"
    );

    // --- host network cleanup: ours goes, Docker's and the user's stay --------------
    iptables_restore(Family::Ipv4, &foreign_and_leftover_rules(&network.name));
    iptables_restore(
        Family::Ipv6,
        "*filter\n:KUBE-FIREWALL - [0:0]\n:DOCKER-USER - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A FORWARD -j DOCKER-USER\nCOMMIT\n",
    );
    let before = [Family::Ipv4, Family::Ipv6].map(|f| foreign_lines(&iptables_save(f)));
    assert!(before[0].len() >= 10 && before[1].len() == 2, "{before:#?}");

    let state_dir = Path::new(cni::DEFAULT_CNI_STATE_DIR);
    let started = Instant::now();
    let report = netclean::clean_host_network(&network, &containerd.conf_dir, state_dir)
        .await
        .expect("clean");
    eprintln!("timing: clean_host_network {:?}", started.elapsed());
    assert!(report.bridge_deleted);
    assert!(report.cni_files.contains(&conf_file), "{report:#?}");
    assert!(
        report.cni_files.contains(&network.ipam_dir(state_dir)),
        "{report:#?}"
    );
    let v4 = report
        .iptables
        .iter()
        .find(|c| c.family == Family::Ipv4)
        .expect("IPv4 cleaned");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-FORWARD",
        "KUBE-IPTABLES-HINT",
        "CNI-5a5a5a5a5a5a5a5a5a5a5a5a",
    ] {
        assert!(
            v4.chains_deleted.iter().any(|c| c == chain),
            "{chain} not deleted: {v4:#?}"
        );
    }
    let v6 = report
        .iptables
        .iter()
        .find(|c| c.family == Family::Ipv6)
        .expect("IPv6 cleaned");
    assert_eq!(v6.chains_deleted, ["KUBE-FIREWALL"]);

    for (family, kept) in [Family::Ipv4, Family::Ipv6].into_iter().zip(&before) {
        let after = iptables_save(family);
        assert!(!after.contains("KUBE-"), "{family:?}: KUBE- left:\n{after}");
        assert!(
            !after.contains(&network.name),
            "{family:?}: rules of our network left:\n{after}"
        );
        assert_eq!(
            &foreign_lines(&after),
            kept,
            "{family:?}: foreign rules changed:\n{after}"
        );
    }
    let user_rule =
        "-A FORWARD -i k8smgr0 -m comment --comment \"user rule about the pod bridge\" -j ACCEPT";
    assert!(
        iptables_save(Family::Ipv4).contains(user_rule),
        "the user's rule about our bridge must stay"
    );
    assert!(
        !run(Command::new("ip").args(["link", "show", &network.bridge]))
            .status
            .success(),
        "bridge left"
    );
    assert!(!conf_file.exists());

    let again = netclean::clean_host_network(&network, &containerd.conf_dir, state_dir)
        .await
        .expect("clean again");
    assert!(
        !again.bridge_deleted && again.cni_files.is_empty(),
        "{again:#?}"
    );
    assert!(
        again
            .iptables
            .iter()
            .all(|c| c.rules_deleted == 0 && c.chains_deleted.is_empty()),
        "{again:#?}"
    );

    let other_tasks = run_ok(containerd.ctr(&other_namespace).args(["tasks", "list"]));
    assert!(
        other_tasks.contains("RUNNING"),
        "the other namespace's container stopped:\n{other_tasks}"
    );
}

//! What the enable pipeline and the stop and reset procedures ask of the
//! world, as four small traits: the supervisor ([`Processes`]), containerd
//! and the host network ([`ContainerRuntime`]), the machine's checks and
//! mounts ([`Machine`]), and the cluster's endpoints ([`ClusterApi`]). The
//! daemon gives them the real things below; the unit tests give them fakes,
//! so that the whole pipeline runs without root.
//!
//! Blocking work (signals and waits, hashing the bundle) runs on tokio's
//! blocking pool and is awaited: a cancel, which drops the awaiting future,
//! is seen at once even while that work finishes on its thread.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::preflight::{self, Findings};
use crate::bundle::{self, Manifest};
use crate::components::Probe;
use crate::error::chain;
use crate::exec::FileIdentity;
use crate::model::config::{ClusterConfig, Paths};
use crate::supervisor::stale::{self, StaleProcess};
use crate::supervisor::{ChildStatus, ProcessSpec, Supervisor, TaskSpec};

/// The cluster's processes, as the supervisor runs them.
/// How long one cgroup may take to freeze or thaw.
pub const FREEZE_LIMIT: Duration = Duration::from_secs(5);

pub trait Processes: Send + Sync {
    /// Starts a process, or leaves it running when it runs with this very spec.
    fn start(&self, spec: ProcessSpec, grace: Duration) -> BoxFuture<'_, std::io::Result<u32>>;
    /// Starts an in-process unit after those started so far (so that it
    /// stops before them), or leaves it running when one of its name runs.
    fn start_task(&self, spec: TaskSpec, grace: Duration) -> BoxFuture<'_, ()>;
    fn status(&self) -> BoxFuture<'_, Vec<ChildStatus>>;
    /// Stops one process (a no-op for one not running).
    fn stop<'a>(&'a self, name: &'a str, grace: Duration) -> BoxFuture<'a, ()>;
    /// Stops every unit: the in-process ones first (they are the API
    /// server's clients), then the processes, each the last started first.
    fn stop_all(&self, grace: Duration) -> BoxFuture<'_, ()>;
    /// Freezes (or thaws) each of `units` in turn: components by name, and
    /// [`crate::cgroups::PODS`] for the kubelet's pods.
    fn set_frozen<'a>(
        &'a self,
        units: &'a [&'a str],
        frozen: bool,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Whether anything of the cluster is frozen (a freeze a dead manager
    /// left counts).
    fn frozen(&self) -> bool;
    /// Ends the processes of this instance that are not ours (left by a
    /// manager that died): those named in `graceful` with SIGTERM and up to
    /// `grace`, the others with SIGKILL.
    fn end_stale(
        &self,
        ours: Vec<u32>,
        grace: Duration,
        graceful: &'static [&'static str],
    ) -> BoxFuture<'_, Vec<StaleProcess>>;
    /// Whether the input files of the running process `name` changed since
    /// it started; `None` when no process of that name runs.
    fn inputs_changed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<bool>>;
    /// Starts the running process `name` again with its spec when its
    /// input files changed: whether it was restarted; `None` when none runs.
    fn refresh<'a>(
        &'a self,
        name: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, std::io::Result<Option<bool>>>;
    /// Whether a process runs with this very spec: `Some(false)` when one of
    /// its name runs otherwise, `None` when none does.
    fn runs_as<'a>(&'a self, spec: &'a ProcessSpec) -> BoxFuture<'a, Option<bool>>;
    /// Hands the running process `name`, listening on `port`, over to a new
    /// instance started beside it, of `spec` when given (else of its own):
    /// once `ready` resolves for the newcomer's pid, every new connection
    /// goes to the newcomer and the old instance stops. On an error the old
    /// one runs on with every client.
    fn hand_over<'a>(
        &'a self,
        name: &'a str,
        spec: Option<ProcessSpec>,
        port: u16,
        grace: Duration,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// What a handover waits for once its newcomer (this pid) listens.
pub type Ready<'a> = Box<dyn FnOnce(u32) -> BoxFuture<'a, Result<(), String>> + Send + 'a>;

/// The status of one process, if it was started.
pub async fn child_status(processes: &dyn Processes, name: &str) -> Option<ChildStatus> {
    processes
        .status()
        .await
        .into_iter()
        .find(|c| c.name == name)
}

/// What the background image import brings into containerd.
#[derive(Debug, Clone)]
pub struct ImageImport {
    pub bundle: PathBuf,
    pub images: Vec<bundle::manifest::Image>,
    /// The pause image's reference, also tagged as containerd's sandbox image.
    pub pause: Option<String>,
}

/// containerd (through CRI and `ctr`) and the host network the pods use.
pub trait ContainerRuntime: Send + Sync {
    /// Problems that keep containerd from running a cluster (none: ready).
    fn check(&self) -> BoxFuture<'_, Vec<String>>;
    /// Imports the bundle's images; a future of its own, so that it can run
    /// in the background. Dropping it ends the import (and kills `ctr`).
    fn import_images(&self, import: ImageImport) -> BoxFuture<'static, Result<(), String>>;
    /// Removes every pod sandbox through CRI, then what CRI no longer tracks
    /// in the `k8s.io` namespace: (sandboxes, leftover containers) removed.
    fn remove_pods(&self) -> BoxFuture<'_, Result<(usize, usize), String>>;
    /// Our CNI files and IP allocations, our bridge and our iptables chains.
    fn clean_network(
        &self,
        pod_subnet: ipnet::Ipv4Net,
        cni_conf_dir: PathBuf,
    ) -> BoxFuture<'_, Vec<String>>;
}

/// The machine: what preflight checks, and the mounts the kubelet leaves.
pub trait Machine: Send + Sync {
    /// Root, cgroups, kernel, swap, ports (unless `ports_are_ours`).
    fn check_host(&self, config: &ClusterConfig, ports_are_ours: bool) -> Findings;
    /// Checks the bundle's files against their digests, remembering them in
    /// `marker` so that the next check hashes only what changed; the identity
    /// of each executable checked, or the problems found.
    fn check_bundle(
        &self,
        bundle: PathBuf,
        marker: PathBuf,
    ) -> BoxFuture<'static, Result<BTreeMap<String, FileIdentity>, Vec<String>>>;
    /// Unmounts everything at or below `root`.
    fn unmount_below(&self, root: &Path) -> Result<(), String>;
}

/// The cluster's endpoints: the components' probes and the API. One per
/// enable: its clients are built on first use, from the kubeconfigs that
/// enable wrote.
pub trait ClusterApi: Send + Sync {
    /// One attempt of a component's probe: Ok when it answers ready.
    fn probe<'a>(
        &'a self,
        component: &'a str,
        probe: &'a Probe,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Server-side applies `manifests` with `values`, retrying while the
    /// API server makes its own objects, for up to `limit`.
    fn apply_manifests(
        &self,
        manifests: crate::bootstrap::Manifests,
        values: BTreeMap<&'static str, String>,
        limit: Duration,
    ) -> BoxFuture<'_, Result<(), String>>;
    /// Whether the node reports Ready with a status newer than `since` (Unix seconds).
    fn node_ready<'a>(&'a self, node: &'a str, since: i64) -> BoxFuture<'a, Result<(), String>>;
    /// Whether the node is Ready and its lease was renewed at or after `since`.
    fn node_alive<'a>(&'a self, node: &'a str, since: i64) -> BoxFuture<'a, Result<(), String>>;
    /// Arms the thaw guard (see `manifests/thaw-guard.yaml`).
    fn arm_thaw_guard(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Whether CoreDNS is Ready and answers `name` with `expect`.
    fn coredns_answers<'a>(
        &'a self,
        name: &'a str,
        expect: IpAddr,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Whether every namespace's `kube-root-ca.crt` holds `new_ca` and,
    /// unless `with_old`, nothing else.
    fn root_ca_published<'a>(
        &'a self,
        new_ca: &'a str,
        with_old: bool,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// How long a newcomer has to listen on its port in a handover.
const LISTEN_WITHIN: Duration = Duration::from_secs(90);

/// How long the incumbent of a handover keeps serving once every new
/// connection goes to the newcomer, before it is told to stop. A connection
/// it accepted just before the switch sends its request only after its TLS
/// handshake; the API server answers a request read once its stop has begun
/// with 503 "apiserver is shutting down" (the request is not in flight yet,
/// so it is not drained). Milliseconds on a loopback; a second leaves room
/// for a loaded machine.
const SETTLE: Duration = Duration::from_secs(1);

impl Processes for Supervisor {
    fn start(&self, spec: ProcessSpec, grace: Duration) -> BoxFuture<'_, std::io::Result<u32>> {
        Supervisor::start(self, spec, grace).boxed()
    }

    fn start_task(&self, spec: TaskSpec, grace: Duration) -> BoxFuture<'_, ()> {
        Supervisor::start_task(self, spec, grace).boxed()
    }

    fn status(&self) -> BoxFuture<'_, Vec<ChildStatus>> {
        Supervisor::status(self).boxed()
    }

    fn stop<'a>(&'a self, name: &'a str, grace: Duration) -> BoxFuture<'a, ()> {
        Supervisor::stop(self, name, grace).boxed()
    }

    fn stop_all(&self, grace: Duration) -> BoxFuture<'_, ()> {
        Supervisor::stop_all(self, grace).boxed()
    }

    fn set_frozen<'a>(
        &'a self,
        units: &'a [&'a str],
        frozen: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            self.cgroups()
                .set_units_frozen(units, frozen, FREEZE_LIMIT)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn frozen(&self) -> bool {
        self.cgroups().any_frozen()
    }

    fn end_stale(
        &self,
        ours: Vec<u32>,
        grace: Duration,
        graceful: &'static [&'static str],
    ) -> BoxFuture<'_, Vec<StaleProcess>> {
        let instance = self.instance().to_string();
        crate::offload::blocking(move || stale::end(&instance, &ours, grace, graceful)).boxed()
    }

    fn inputs_changed<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<bool>> {
        Supervisor::inputs_changed(self, name).boxed()
    }

    fn refresh<'a>(
        &'a self,
        name: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, std::io::Result<Option<bool>>> {
        Supervisor::refresh(self, name, grace).boxed()
    }

    fn runs_as<'a>(&'a self, spec: &'a ProcessSpec) -> BoxFuture<'a, Option<bool>> {
        Supervisor::runs_as(self, spec).boxed()
    }

    fn hand_over<'a>(
        &'a self,
        name: &'a str,
        spec: Option<ProcessSpec>,
        port: u16,
        grace: Duration,
        ready: Ready<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            use crate::supervisor::handover::{Route, Steering};
            let pid = self
                .child_status(name)
                .await
                .and_then(|s| s.pid)
                .ok_or_else(|| format!("{name} does not run"))?;
            let steering = crate::offload::blocking(move || Steering::of(pid, port)).await?;
            steering
                .route(Route::Ipv6ToNewcomer)
                .map_err(|e| format!("steering port {port}: {e}"))?;
            let take_over = |newcomer: u32| async move {
                let deadline = tokio::time::Instant::now() + LISTEN_WITHIN;
                // Until the newcomer listens, the group's second socket is
                // not its: a probe would reach the old instance.
                while crate::offload::blocking(move || {
                    crate::procnet::listener_fd(Path::new("/proc"), newcomer, port)
                })
                .await
                .is_none()
                {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!("the new {name} did not listen on {port}"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ready(newcomer).await?;
                steering
                    .route(Route::AllToNewcomer)
                    .map_err(|e| format!("steering port {port}: {e}"))?;
                drop(steering);
                tokio::time::sleep(SETTLE).await;
                Ok(())
            };
            self.replace(name, spec, grace, take_over).await.map(|_| ())
        }
        .boxed()
    }
}

/// The containerd at a socket, and this host's network.
pub struct Containerd {
    pub socket: PathBuf,
}

impl ContainerRuntime for Containerd {
    fn check(&self) -> BoxFuture<'_, Vec<String>> {
        async move {
            let version = match crate::runtime::Cri::connect(&self.socket).await {
                Ok(cri) => cri.version().await,
                Err(err) => return vec![chain(&err)],
            };
            match version {
                Ok(version) => {
                    tracing::debug!(
                        "container runtime {} {}",
                        version.runtime_name,
                        version.runtime_version
                    );
                    Vec::new()
                }
                Err(err) => vec![chain(&err)],
            }
        }
        .boxed()
    }

    fn import_images(&self, import: ImageImport) -> BoxFuture<'static, Result<(), String>> {
        let socket = self.socket.clone();
        async move {
            let pause = import.pause.ok_or("the bundle carries no pause image")?;
            let cri = crate::runtime::Cri::connect(&socket)
                .await
                .map_err(|e| chain(&e))?;
            let ctr = crate::runtime::Ctr::new(&socket);
            for image in &import.images {
                let archive = Manifest::resolve(&import.bundle, &image.path)?;
                let report = crate::runtime::images::import_archive(&ctr, &cri, &archive)
                    .await
                    .map_err(|e| chain(&e))?;
                tracing::debug!("{}: {:?}", archive.display(), report.outcome);
            }
            crate::runtime::images::ensure_sandbox_image(&ctr, &cri, &pause)
                .await
                .map_err(|e| chain(&e))?;
            Ok(())
        }
        .boxed()
    }

    fn remove_pods(&self) -> BoxFuture<'_, Result<(usize, usize), String>> {
        async move {
            let cri = crate::runtime::Cri::connect(&self.socket)
                .await
                .map_err(|e| chain(&e))?;
            let removed = cri.remove_all_pods().await.map_err(|e| chain(&e))?;
            let leftovers = crate::runtime::Ctr::new(&self.socket)
                .remove_k8s_namespace_leftovers()
                .await
                .map_err(|e| chain(&e))?;
            Ok((removed, leftovers.containers.len()))
        }
        .boxed()
    }

    fn clean_network(
        &self,
        pod_subnet: ipnet::Ipv4Net,
        cni_conf_dir: PathBuf,
    ) -> BoxFuture<'_, Vec<String>> {
        async move {
            let network = crate::runtime::CniNetwork::new(pod_subnet);
            match crate::runtime::netclean::clean_host_network(
                &network,
                &cni_conf_dir,
                Path::new(crate::runtime::cni::DEFAULT_CNI_STATE_DIR),
            )
            .await
            {
                Ok(_) => Vec::new(),
                Err(err) => vec![chain(&err)],
            }
        }
        .boxed()
    }
}

/// This machine.
pub struct ThisMachine;

impl Machine for ThisMachine {
    fn check_host(&self, config: &ClusterConfig, ports_are_ours: bool) -> Findings {
        preflight::check_host(config, ports_are_ours)
    }

    fn check_bundle(
        &self,
        bundle: PathBuf,
        marker: PathBuf,
    ) -> BoxFuture<'static, Result<BTreeMap<String, FileIdentity>, Vec<String>>> {
        crate::offload::blocking(move || check_bundle(&bundle, &marker)).boxed()
    }

    fn unmount_below(&self, root: &Path) -> Result<(), String> {
        super::mounts::unmount_below(root)
    }
}

/// The bundle is checked on every start: each file inside the bundle with
/// its digest, each executable the very file whose digest was checked. The
/// digests (300 MB to read) are remembered in the state folder with each
/// file's identity, so that a start hashes only what changed since. The
/// identities of the executables go to the components: the supervisor runs
/// only those files.
fn check_bundle(
    bundle_dir: &Path,
    marker: &Path,
) -> Result<BTreeMap<String, FileIdentity>, Vec<String>> {
    // Written by an earlier start; anything unreadable only costs a full check.
    let earlier: Option<bundle::verify::Checked> =
        crate::fsutil::read_bounded(marker, bundle::manifest::MAX_MANIFEST_BYTES)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
    match bundle::verify::verify_since(bundle_dir, bundle::Depth::Digests, earlier.as_ref()) {
        Ok(report) if report.is_ok() => {
            if earlier.as_ref() != Some(&report.checked)
                && let Ok(json) = serde_json::to_vec(&report.checked)
            {
                let _ = crate::fsutil::write_atomic(marker, &json, 0o600);
            }
            Ok(report.executables)
        }
        Ok(report) => {
            let mut problems: Vec<String> = report
                .problems
                .iter()
                .map(|p| format!("bundle: {p}"))
                .collect();
            problems.push(format!(
                "the bundle {} is not usable as it is: `k8s-manager bundle verify {0}` tells more; rebuild it with vm/bundle/build.sh or fetch it again with `k8s-manager bundle fetch`",
                bundle_dir.display()
            ));
            Err(problems)
        }
        Err(err) => Err(vec![format!("bundle: {}", chain(&err))]),
    }
}

/// Which version of a file a probe client read: files are replaced by an
/// atomic rename, so a new file is a new inode (or modification time).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp(Option<(u64, u64, std::time::SystemTime)>);

impl FileStamp {
    fn of(path: &std::path::Path) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp(std::fs::metadata(path).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.modified().unwrap_or(std::time::UNIX_EPOCH),
            )
        }))
    }
}

/// A probe's client, with the probe and the file versions it was made from.
type ProbeClient = (Probe, Vec<FileStamp>, reqwest::Client);

/// The real cluster's endpoints. Each probe's client is built once (its
/// certificates are read then), and again when one of its certificate files
/// was replaced (a CA rotation changes the CA it verifies with); the kube
/// clients on first use.
pub struct LiveApi {
    paths: Paths,
    probes: Mutex<HashMap<String, ProbeClient>>,
    super_admin: tokio::sync::OnceCell<kube::Client>,
    admin: tokio::sync::OnceCell<kube::Client>,
}

impl LiveApi {
    pub fn new(paths: Paths) -> LiveApi {
        LiveApi {
            paths,
            probes: Mutex::new(HashMap::new()),
            super_admin: tokio::sync::OnceCell::new(),
            admin: tokio::sync::OnceCell::new(),
        }
    }

    fn probe_client(&self, component: &str, probe: &Probe) -> Result<reqwest::Client, String> {
        let stamps: Vec<FileStamp> = probe.files().into_iter().map(FileStamp::of).collect();
        let mut probes = self.probes.lock().expect("probe clients lock");
        if let Some((made_for, made_with, client)) = probes.get(component)
            && made_for == probe
            && *made_with == stamps
        {
            return Ok(client.clone());
        }
        let client = probe
            .client()
            .map_err(|e| format!("{component} probe: {e}"))?;
        probes.insert(
            component.to_string(),
            (probe.clone(), stamps, client.clone()),
        );
        Ok(client)
    }

    async fn admin(&self) -> Result<&kube::Client, String> {
        self.admin
            .get_or_try_init(|| async {
                crate::bootstrap::client(&self.paths.admin_kubeconfig())
                    .await
                    .map_err(|e| chain(&e))
            })
            .await
    }
}

impl ClusterApi for LiveApi {
    fn probe<'a>(
        &'a self,
        component: &'a str,
        probe: &'a Probe,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let client = self.probe_client(component, probe)?;
            probe.check(&client).await
        }
        .boxed()
    }

    fn apply_manifests(
        &self,
        manifests: crate::bootstrap::Manifests,
        values: BTreeMap<&'static str, String>,
        limit: Duration,
    ) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let client = self
                .super_admin
                .get_or_try_init(|| async {
                    let kubeconfig = self.paths.kubeconfigs.join("super-admin.conf");
                    crate::bootstrap::client(&kubeconfig)
                        .await
                        .map_err(|e| chain(&e))
                })
                .await?;
            crate::bootstrap::apply_all(client, manifests, &values, limit)
                .await
                .map(|_| ())
                .map_err(|e| chain(&e))
        }
        .boxed()
    }

    fn node_ready<'a>(&'a self, node: &'a str, since: i64) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let client = self.admin().await?;
            crate::bootstrap::wait::node_ready(client, node, since).await
        }
        .boxed()
    }

    fn node_alive<'a>(&'a self, node: &'a str, since: i64) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let client = self.admin().await?;
            crate::bootstrap::wait::node_alive(client, node, since).await
        }
        .boxed()
    }

    fn arm_thaw_guard(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let client = self.admin().await?;
            crate::bootstrap::thaw_guard(client, true).await
        }
        .boxed()
    }

    fn coredns_answers<'a>(
        &'a self,
        name: &'a str,
        expect: IpAddr,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let client = self.admin().await?;
            crate::bootstrap::wait::coredns_answers(client, name, expect).await
        }
        .boxed()
    }

    fn root_ca_published<'a>(
        &'a self,
        new_ca: &'a str,
        with_old: bool,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            // A client of its own each time: a CA rotation replaces the
            // admin kubeconfig's certificate between two calls.
            let client = crate::bootstrap::client(&self.paths.admin_kubeconfig())
                .await
                .map_err(|e| chain(&e))?;
            crate::bootstrap::wait::root_ca_published(&client, new_ca, with_old).await
        }
        .boxed()
    }
}

/// What a procedure (enable, stop, reset) works with: where it reports, and
/// the three parts of the world it changes.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    pub progress: &'a dyn super::progress::Progress,
    pub processes: &'a dyn Processes,
    pub runtime: &'a dyn ContainerRuntime,
    pub machine: &'a dyn Machine,
    /// What the in-process units share with the daemon's API.
    pub units: &'a crate::controllers::Handles,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpSocket, TcpStream};

    const FAKE_PORT: &str = "K8SM_TEST_HANDOVER_PORT";

    /// Not a test by itself: with `FAKE_PORT` set (the test below runs this
    /// binary again as its child), a server that shares its port as the API
    /// server does (IPv6 dual-stack, `SO_REUSEPORT`) and stops as it does:
    /// on SIGTERM it stops listening, and a request it reads from then on is
    /// refused ("shutting down") instead of served ("served by <pid>").
    #[test]
    fn handover_fake_server() {
        let Ok(port) = std::env::var(FAKE_PORT) else {
            return;
        };
        let port: u16 = port.parse().unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let socket = TcpSocket::new_v6().unwrap();
                socket.set_reuseport(true).unwrap();
                socket
                    .bind((std::net::Ipv6Addr::UNSPECIFIED, port).into())
                    .unwrap();
                let listener = socket.listen(16).unwrap();
                let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .unwrap();
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        accepted = listener.accept() => {
                            let (stream, _) = accepted.unwrap();
                            let stopping = stopping.clone();
                            tokio::spawn(async move {
                                let mut stream = BufReader::new(stream);
                                let mut line = String::new();
                                stream.read_line(&mut line).await.unwrap();
                                let answer = if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                                    "shutting down\n".to_string()
                                } else {
                                    format!("served by {}\n", std::process::id())
                                };
                                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
                            });
                        }
                    }
                }
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                drop(listener);
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
    }

    async fn call(stream: &mut TcpStream) -> String {
        stream.write_all(b"call\n").await.unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await.unwrap();
        answer.trim().to_string()
    }

    /// A client that connected to the incumbent just before the switch and
    /// sends its request just after it is served, not refused: the incumbent
    /// is stopped only once such a request has had time to arrive. Real
    /// processes, a real port group, the real steering and stop.
    #[tokio::test]
    async fn a_call_on_a_connection_made_just_before_the_switch_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = ProcessSpec {
            name: "fake-server".into(),
            program: std::env::current_exe().unwrap(),
            checked: None,
            args: [
                "--exact",
                "cluster::host::tests::handover_fake_server",
                "--test-threads=1",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![(FAKE_PORT.into(), port.to_string())],
            log_file: dir.path().join("fake-server.log"),
            inputs: Vec::new(),
        };
        let sup = Supervisor::new("test-instance-handover");
        let grace = Duration::from_secs(2);
        let incumbent = sup.start(spec, grace).await.unwrap();
        let v4 = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut early = loop {
            match TcpStream::connect(&v4).await {
                Ok(stream) => break stream,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(err) => panic!("the fake server does not listen: {err}"),
            }
        };
        assert_eq!(call(&mut early).await, format!("served by {incumbent}"));
        // Connected to the incumbent (IPv4 stays with it until the switch);
        // its request goes 200 ms after the newcomer is found ready, the
        // switch being the next step.
        let mut late = TcpStream::connect(&v4).await.unwrap();
        let (switched_tx, switched) = tokio::sync::oneshot::channel::<u32>();
        let ready: Ready = Box::new(move |newcomer| {
            async move {
                switched_tx.send(newcomer).unwrap();
                Ok(())
            }
            .boxed()
        });
        let handover = Processes::hand_over(&sup, "fake-server", None, port, grace, ready);
        let client = async {
            let newcomer = switched.await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let answer = call(&mut late).await;
            let mut fresh = TcpStream::connect(&v4).await.unwrap();
            (newcomer, answer, call(&mut fresh).await)
        };
        let (done, (newcomer, answer, fresh)) = tokio::join!(handover, client);
        done.unwrap();
        assert_eq!(answer, format!("served by {incumbent}"));
        assert_eq!(fresh, format!("served by {newcomer}"));
        assert!(!crate::sys::process_alive(incumbent));
        sup.stop_all(grace).await;
    }
}

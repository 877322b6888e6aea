//! The idle freeze (`idle-freeze` unit): a cluster nobody uses is frozen
//! (`pause`, [`crate::cluster::operations::pause`]) after
//! `idle.freezeAfter` seconds, and the first call wakes it.
//!
//! **Used** means: a connection to the API server's port from a process
//! that is not the cluster's own (not the manager, not a component, not a
//! pod), traffic through a LoadBalancer or NodePort listener (the
//! `load-balancer` unit tells [`Idle::traffic`]; a pod's connection comes
//! from the pod network, a process's of the VM from a socket the cluster's
//! cgroups do not hold), an operation, or pods
//! running outside `kube-system` while `idle.freezeWorkloads` is false. The
//! unit looks every 5 s (see [`LOOK_EVERY`] for why not more often), and the
//! owner of a new connection is looked up once.
//!
//! **Waking**: while the cluster is frozen, the unit holds a duplicate of
//! the API server's listening socket (`pidfd_getfd`). The kernel completes
//! a client's handshake for a frozen listener and queues it, and the
//! duplicate then reads as ready: the unit wakes at once, without a proxy
//! in front of the API server and without any CPU while it waits. A queued
//! connection that is the manager's own (a unit's watch that reconnected)
//! does not wake it. Traffic to a LoadBalancer or NodePort listener wakes it
//! too; the connection waits in the kernel and is served once the pods run
//! again. The wake is asked of the daemon as `resume` with its cause, which
//! tells how long the API server took to run again (`status`, the `thawed`
//! event).
//!
//! A freeze of more than 30 s leaves the kubelet's runtime check stale: its
//! first status after the thaw says NotReady ("container runtime is down")
//! before the check runs again. `pause` arms the thaw guard
//! (`manifests/thaw-guard.yaml`) before it freezes, which refuses exactly
//! that status while armed (the kubelet asks again at once, checked afresh);
//! this unit disarms it [`GUARD_FOR`] after the thaw.
//!
//! Going through the control API, the freeze and the wake take their turn
//! with every other operation; an operation that runs is use, and a freeze
//! asked for while one ran is dropped when its turn comes if anything used
//! the cluster since.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, watch};

use super::Unit;
use crate::cgroups::{Hierarchy, Tree};
use crate::client::Client;
use crate::components::ApiServer;
use crate::model::api::FreezeRequest;
use crate::model::config::{ClusterConfig, Paths};
use crate::model::settings::Settings;
use crate::model::status::{Frozen, IdleStatus, Wake};
use crate::procnet::{self, SocketLine};
use crate::supervisor::{TaskContext, TaskSpec};

/// The unit's name, as `status` shows it.
pub const NAME: &str = "idle-freeze";
/// How often the awake cluster's use is looked at. Reading the kernel's
/// socket tables walks its whole connection hash: 3.6 ms of CPU per table
/// measured here (24 GiB: a large hash), 1.5 % of a core twice a second. A
/// call shorter than the period can go unseen: the cluster then freezes
/// earlier than it would have, and the next call wakes it in milliseconds.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// How often the pods outside `kube-system` are counted (an API call).
const PODS_EVERY: Duration = Duration::from_secs(10);
/// The cause of an idle freeze.
pub const IDLE: &str = "idle";
/// How long after a thaw the thaw guard stays armed: the kubelet's runtime
/// check runs every 5 s, its pod-lifecycle check every second.
const GUARD_FOR: Duration = Duration::from_secs(10);

/// The unit as declared: a client of the API server.
pub const UNIT: Unit = Unit {
    name: NAME,
    needs: &[&ApiServer],
    make: |config, handles| unit(config, handles.idle.clone(), handles.settings.clone()),
};

/// The supervised unit of a cluster with `config`.
pub fn unit(config: &ClusterConfig, idle: Idle, settings: watch::Receiver<Settings>) -> TaskSpec {
    let paths = config.paths();
    let (port, pods) = (config.api_port, config.pod_cidr);
    TaskSpec::new(NAME, move |ctx| {
        let (paths, idle, settings) = (paths.clone(), idle.clone(), settings.clone());
        async move { run(ctx, paths, port, pods, idle, settings).await }
    })
}

/// What the daemon, the operations, the `load-balancer` unit and this unit
/// share about the cluster's use: one per engine.
#[derive(Clone, Default)]
pub struct Idle(Arc<Shared>);

#[derive(Default)]
struct Shared {
    view: Mutex<View>,
    /// Rung when the freeze changes or traffic asks for a wake.
    changed: Notify,
}

#[derive(Default)]
struct View {
    status: IdleStatus,
    /// The API server frozen with the cluster, whose socket is watched.
    api_pid: Option<u32>,
    last_used: Option<OffsetDateTime>,
    /// A wake asked for: its cause, and when.
    wake: Option<(String, Instant)>,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Idle").field(&self.status()).finish()
    }
}

fn now_text(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Idle {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.0.view.lock().expect("idle view")
    }

    /// Something used the cluster now.
    pub fn used(&self) {
        let mut view = self.view();
        view.last_used = Some(OffsetDateTime::now_utc());
        view.status.idle_since = None;
    }

    /// Whether anything used the cluster after `since`.
    pub fn used_after(&self, since: OffsetDateTime) -> bool {
        self.view().last_used.is_some_and(|t| t > since)
    }

    /// A connection through a LoadBalancer or NodePort listener (`what`
    /// says which): use, and the cause of a wake when the cluster is frozen.
    pub fn traffic(&self, what: &str) {
        self.used();
        let mut view = self.view();
        if view.status.frozen.is_some() && view.wake.is_none() {
            view.wake = Some((what.to_string(), Instant::now()));
            drop(view);
            self.0.changed.notify_waiters();
        }
    }

    /// Asks for a wake with `cause` (the first one asked counts).
    pub fn ask_wake(&self, cause: &str) {
        let mut view = self.view();
        if view.wake.is_none() {
            view.wake = Some((cause.to_string(), Instant::now()));
        }
    }

    /// The cluster was frozen, with the API server `api_pid` (none: no call
    /// can wake it); an idle freeze says since when nothing used it.
    pub fn froze(&self, cause: &str, idle_since: Option<OffsetDateTime>, api_pid: Option<u32>) {
        let idle_since = idle_since.map(now_text);
        let mut view = self.view();
        view.api_pid = api_pid;
        view.wake = None;
        view.status.frozen = Some(Frozen {
            since: now_text(OffsetDateTime::now_utc()),
            cause: cause.to_string(),
            idle_since,
            wakes_on_first_call: api_pid.is_some(),
        });
        view.status.idle_since = None;
        drop(view);
        self.0.changed.notify_waiters();
    }

    /// The API server runs again: the wake asked for (or `cause`, when none
    /// was) is recorded with its latency (from when it was asked, or from
    /// `started`), and returned.
    pub fn thawed(&self, cause: &str, started: Instant) -> Wake {
        let mut view = self.view();
        let (cause, asked) = view.wake.take().unwrap_or((cause.to_string(), started));
        let wake = Wake {
            at: now_text(OffsetDateTime::now_utc()),
            cause,
            latency_ms: asked.elapsed().as_millis() as u64,
        };
        view.status.frozen = None;
        view.api_pid = None;
        view.status.last_wake = Some(wake.clone());
        view.last_used = Some(OffsetDateTime::now_utc());
        drop(view);
        self.0.changed.notify_waiters();
        wake
    }

    /// The idle freeze as `status` shows it.
    pub fn status(&self) -> IdleStatus {
        self.view().status.clone()
    }

    fn frozen_api_pid(&self) -> Option<Option<u32>> {
        let view = self.view();
        view.status.frozen.as_ref().map(|_| view.api_pid)
    }

    fn wake_asked(&self) -> Option<String> {
        self.view().wake.as_ref().map(|(cause, _)| cause.clone())
    }

    fn awake(&self, kept_awake_by: Option<String>) {
        let mut view = self.view();
        let since = view.last_used;
        view.status.kept_awake_by = kept_awake_by;
        view.status.idle_since = since.map(now_text);
    }

    fn unused_for(&self) -> Option<(Duration, OffsetDateTime)> {
        let since = self.view().last_used?;
        let unused = OffsetDateTime::now_utc() - since;
        Some((unused.try_into().unwrap_or_default(), since))
    }
}

/// One connection to the API port, as the server's end sees it.
type Connection = (SocketAddr, SocketAddr);

/// Who connects to the API port: the connections the server's end lists,
/// each looked up once as the cluster's own (the manager's, a component's,
/// a pod's) or not.
struct Clients {
    port: u16,
    /// The pods' addresses: their clients are the cluster's own.
    pods: ipnet::Ipv4Net,
    tree: Tree,
    known: HashMap<Connection, bool>,
}

impl Clients {
    fn new(port: u16, pods: ipnet::Ipv4Net, tree: Tree) -> Clients {
        Clients {
            port,
            pods,
            tree,
            known: HashMap::new(),
        }
    }

    /// How many connections to the API port come from outside the cluster.
    fn outside(&mut self) -> usize {
        let proc = Path::new("/proc");
        let (served, clients) = tables(proc, self.port);
        let now: HashSet<Connection> = served.iter().map(|s| (s.local, s.remote)).collect();
        self.known.retain(|c, _| now.contains(c));
        let new: Vec<Connection> = now
            .iter()
            .filter(|c| !self.known.contains_key(c))
            .copied()
            .collect();
        if !new.is_empty() {
            // The manager's own and the pods' first (the manager reconnects
            // now and then); the cluster's processes' descriptors only for
            // what is left.
            let mine: HashSet<u64> = procnet::socket_inodes(proc, std::process::id())
                .into_iter()
                .collect();
            let (known, rest): (Vec<Connection>, Vec<Connection>) = new
                .into_iter()
                .partition(|c| from_pod(c.1, self.pods) || is_own(*c, &clients, &mine));
            for connection in known {
                self.known.insert(connection, true);
            }
            let ours: HashSet<u64> = match rest.is_empty() {
                true => HashSet::new(),
                false => self
                    .tree
                    .all_pids()
                    .iter()
                    .flat_map(|pid| procnet::socket_inodes(proc, *pid))
                    .collect(),
            };
            for connection in rest {
                let own = is_own(connection, &clients, &ours);
                if !own {
                    tracing::debug!(
                        "a client of the API server from outside the cluster: {}",
                        connection.1
                    );
                }
                self.known.insert(connection, own);
            }
        }
        self.known.values().filter(|own| !**own).count()
    }
}

/// The server's ends of the connections to `port` (queued ones included:
/// they have no descriptor yet), and every client end on this host.
fn tables(proc: &Path, port: u16) -> (Vec<SocketLine>, Vec<SocketLine>) {
    procnet::tcp_sockets(proc)
        .into_iter()
        .filter(|line| line.state == procnet::TCP_ESTABLISHED)
        .filter(|line| line.local.port() == port || line.remote.port() == port)
        .partition(|line| line.local.port() == port)
}

/// Whether the connection `(server end, client end)` comes from one of the
/// sockets `ours`: a client on another host, or one whose socket no process
/// of ours holds, is not.
fn is_own(connection: Connection, clients: &[SocketLine], ours: &HashSet<u64>) -> bool {
    let (server, client) = connection;
    clients
        .iter()
        .find(|c| same(c.local, client) && same(c.remote, server))
        .is_some_and(|c| ours.contains(&c.inode))
}

/// Whether `client` is a pod's address (its socket is in the pod's network
/// namespace: no table of ours lists it).
fn from_pod(client: SocketAddr, pods: ipnet::Ipv4Net) -> bool {
    match plain(client).ip() {
        std::net::IpAddr::V4(v4) => pods.contains(&v4),
        std::net::IpAddr::V6(_) => false,
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 one.
fn plain(s: SocketAddr) -> SocketAddr {
    match s {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => s,
        },
        v4 => v4,
    }
}

/// Two socket addresses alike, an IPv4-mapped IPv6 one and its IPv4 one.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    plain(a) == plain(b)
}

async fn run(
    mut ctx: TaskContext,
    paths: Paths,
    port: u16,
    pods: ipnet::Ipv4Net,
    idle: Idle,
    settings: watch::Receiver<Settings>,
) -> Result<(), String> {
    ctx.ready();
    let tree = Tree::detect(&paths.state_dir.display().to_string());
    if let Hierarchy::Missing { why } = &tree.hierarchy {
        ctx.detail(Some(format!("never freezes: {why}")));
        ctx.stopping().await;
        return Ok(());
    }
    idle.used();
    let kubeconfig = paths.admin_kubeconfig();
    let mut clients = Clients::new(port, pods, tree);
    let mut pods_counted: Option<Instant> = None;
    // One client for the counts and the guard: a new one each time would be
    // a new connection (and a TLS handshake) every few seconds.
    let mut api: Option<kube::Client> = None;
    let mut pods_outside = 0usize;
    // A guard a crash left armed is disarmed at once.
    let mut disarm_at = Some(Instant::now());
    loop {
        if let Some(api_pid) = idle.frozen_api_pid() {
            ctx.detail(Some(match api_pid {
                Some(_) => "frozen: wakes on the first call".into(),
                None => "frozen: `k8s-manager resume` thaws it".into(),
            }));
            let cause = tokio::select! {
                cause = wait_for_use(&idle, api_pid, port) => cause,
                _ = ctx.stopping() => return Ok(()),
            };
            if let Some(cause) = cause {
                idle.ask_wake(&cause);
                let request = FreezeRequest {
                    cause: Some(cause),
                    idle_since: None,
                };
                if let Err(err) = ask_daemon(&paths, crate::model::api::RESUME, &request).await {
                    tracing::warn!("waking the cluster: {err}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            clients.known.clear();
            disarm_at = Some(Instant::now() + GUARD_FOR);
            continue;
        }
        if disarm_at.is_some_and(|at| at <= Instant::now()) {
            let disarmed = match client_of(&mut api, &kubeconfig).await {
                Ok(client) => crate::bootstrap::thaw_guard(client, false).await,
                Err(err) => Err(err),
            };
            match disarmed {
                Ok(()) => disarm_at = None,
                Err(err) => {
                    tracing::debug!("{err}");
                    // Made again next time: its credentials may be old (a
                    // CA rotation).
                    api = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = idle.0.changed.notified() => continue,
            _ = ctx.stopping() => return Ok(()),
        }
        let wanted = settings.borrow().idle.clone();
        // The socket tables (a few ms of the kernel's walk, every 5 s); the
        // owners' descriptors only for a new connection.
        if clients.outside() > 0 {
            idle.used();
        }
        // Counted every few seconds, and again just before a freeze.
        let due = idle.unused_for().is_some_and(|(unused, _)| {
            wanted.freeze_after > 0 && unused.as_secs() >= wanted.freeze_after
        });
        let recount = if due {
            Duration::from_secs(1)
        } else {
            PODS_EVERY
        };
        if pods_counted.is_none_or(|at| at.elapsed() >= recount) {
            pods_counted = Some(Instant::now());
            let counted = match client_of(&mut api, &kubeconfig).await {
                Ok(client) => pods_outside_kube_system(client).await,
                Err(err) => Err(err),
            };
            match counted {
                Ok(count) => pods_outside = count,
                Err(err) => {
                    tracing::debug!("counting pods: {err}");
                    api = None;
                }
            }
        }
        let kept = (pods_outside > 0 && !wanted.freeze_workloads).then(|| {
            format!(
                "{pods_outside} pod{} outside kube-system (idle.freezeWorkloads is false)",
                if pods_outside == 1 { " runs" } else { "s run" }
            )
        });
        if kept.is_some() {
            idle.used();
        }
        idle.awake(kept.clone());
        let Some((unused, since)) = idle.unused_for() else {
            continue;
        };
        ctx.detail(Some(match (&kept, wanted.freeze_after) {
            (Some(kept), _) => format!("awake: {kept}"),
            (None, 0) => "awake: idle.freezeAfter is 0 (never)".into(),
            (None, after) => format!(
                "awake: unused for {}s, freezes after {after}s",
                unused.as_secs()
            ),
        }));
        if wanted.freeze_after == 0 || kept.is_some() || unused.as_secs() < wanted.freeze_after {
            continue;
        }
        let request = FreezeRequest {
            cause: Some(IDLE.into()),
            // Whole precision: the operation compares it with the last use.
            idle_since: since.format(&Rfc3339).ok(),
        };
        tracing::info!(
            "nothing used the cluster for {}s: freezing it",
            unused.as_secs()
        );
        if let Err(err) = ask_daemon(&paths, crate::model::api::PAUSE, &request).await {
            tracing::warn!("freezing the idle cluster: {err}");
            // Not again before another whole period.
            idle.used();
        }
    }
}

/// Waits, without using CPU, for what wakes the frozen cluster: a
/// connection queued on the API server's listening socket that is not the
/// manager's own, or traffic through a LoadBalancer; `None` when the
/// cluster was thawed by something else (an operation).
async fn wait_for_use(idle: &Idle, api_pid: Option<u32>, port: u16) -> Option<String> {
    let listener = api_pid.and_then(|pid| {
        let fd = procnet::listener_fd(Path::new("/proc"), pid, port)?;
        match crate::sys::fd_of_process(pid, fd) {
            Ok(copy) => crate::sys::async_fd(copy).ok(),
            Err(err) => {
                tracing::warn!("cannot watch the API server's socket: {err}");
                None
            }
        }
    });
    loop {
        // Thawed by something else (an operation): nothing to wake.
        idle.frozen_api_pid()?;
        if let Some(cause) = idle.wake_asked() {
            return Some(cause);
        }
        let changed = idle.0.changed.notified();
        let ready = async {
            match &listener {
                Some(fd) => fd.readable().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => continue,
            guard = ready => {
                if let Some(client) = queued_from_outside(port) {
                    tracing::info!("a call to the frozen API server from {client}: waking the cluster");
                    return Some("a call to the API server".into());
                }
                // Only the manager's own: wait for the next connection (the
                // watch is edge-triggered: a queued one does not spin it).
                if let Some(mut guard) = guard {
                    guard.clear_ready();
                }
            }
        }
    }
}

/// The client of a connection queued on the API port (the kernel's, not
/// yet accepted: no descriptor, inode 0) that is not the manager's own, if
/// any. One queued just before the freeze finished counts as well as one
/// after.
fn queued_from_outside(port: u16) -> Option<SocketAddr> {
    let proc = Path::new("/proc");
    let (served, clients) = tables(proc, port);
    let queued: Vec<Connection> = served
        .iter()
        .filter(|s| s.inode == 0)
        .map(|s| (s.local, s.remote))
        .collect();
    if queued.is_empty() {
        return None;
    }
    let ours: HashSet<u64> = procnet::socket_inodes(proc, std::process::id())
        .into_iter()
        .collect();
    queued
        .iter()
        .find(|c| !is_own(**c, &clients, &ours))
        .map(|(_, client)| *client)
}

/// The unit's one client of the API server, made the first time it is
/// needed (the API server may not answer when the unit starts).
async fn client_of<'a>(
    api: &'a mut Option<kube::Client>,
    kubeconfig: &Path,
) -> Result<&'a kube::Client, String> {
    if api.is_none() {
        let client = crate::bootstrap::client(kubeconfig)
            .await
            .map_err(|e| crate::error::chain(&e))?;
        *api = Some(client);
    }
    Ok(api.as_ref().expect("made above"))
}

/// How many pods outside `kube-system` run or are about to (not ended).
async fn pods_outside_kube_system(client: &kube::Client) -> Result<usize, String> {
    use k8s_openapi::api::core::v1::Pod;
    let params = kube::api::ListParams::default()
        .fields("status.phase!=Succeeded,status.phase!=Failed,metadata.namespace!=kube-system");
    let pods = kube::Api::<Pod>::all(client.clone())
        .list_metadata(&params)
        .await
        .map_err(|e| e.to_string())?;
    Ok(pods.items.len())
}

/// Asks the daemon for `pause` or `resume` with `request`, and waits for
/// its end.
async fn ask_daemon(paths: &Paths, path: &str, request: &FreezeRequest) -> Result<(), String> {
    let body = serde_json::to_vec(request).expect("serialises");
    Client::new(&paths.socket)
        .run_operation(path, body)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(local: &str, remote: &str, inode: u64) -> SocketLine {
        SocketLine {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state: procnet::TCP_ESTABLISHED,
            inode,
        }
    }

    #[test]
    fn a_connection_is_our_own_only_when_we_hold_its_client_end() {
        let server: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let clients = [
            line("127.0.0.1:40000", "127.0.0.1:6443", 7),
            // An IPv4-mapped client end of a dual-stack socket.
            line("[::ffff:127.0.0.1]:40001", "[::ffff:127.0.0.1]:6443", 8),
        ];
        let ours: HashSet<u64> = [7, 8].into();
        let own = |client: &str| is_own((server, client.parse().unwrap()), &clients, &ours);
        assert!(own("127.0.0.1:40000"));
        assert!(own("127.0.0.1:40001"));
        // No client end on this host: from another machine (the Windows side).
        assert!(!own("172.20.0.1:50000"));
        // A pod's: its socket is in its own network namespace.
        let pods: ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert!(from_pod("[::ffff:10.244.0.2]:60728".parse().unwrap(), pods));
        assert!(!from_pod("172.20.0.1:50000".parse().unwrap(), pods));
        // A client end that is someone else's.
        assert!(!is_own(
            (server, "127.0.0.1:40000".parse().unwrap()),
            &clients,
            &[9].into()
        ));
    }

    #[test]
    fn traffic_wakes_a_frozen_cluster_once_and_the_wake_is_timed() {
        let idle = Idle::default();
        // Awake: traffic is use, not a wake.
        idle.traffic("LoadBalancer 127.0.0.1:8080");
        assert_eq!(idle.wake_asked(), None);
        let since = OffsetDateTime::parse("2026-01-01T00:00:00.25Z", &Rfc3339).unwrap();
        idle.froze(IDLE, Some(since), Some(1));
        let status = idle.status();
        assert_eq!(
            status.paused_line().unwrap(),
            "Paused (idle since 2026-01-01T00:00:00Z, wakes on the first call)"
        );
        idle.traffic("LoadBalancer 127.0.0.1:8080");
        idle.traffic("LoadBalancer 127.0.0.1:9090");
        assert_eq!(
            idle.wake_asked().as_deref(),
            Some("LoadBalancer 127.0.0.1:8080")
        );
        let wake = idle.thawed("resume", Instant::now());
        assert_eq!(wake.cause, "LoadBalancer 127.0.0.1:8080");
        assert_eq!(idle.status().frozen, None);
        assert_eq!(idle.status().last_wake, Some(wake));
        // A thaw nobody asked for is the operation's.
        idle.froze("pause", None, None);
        assert_eq!(
            idle.status().paused_line().unwrap(),
            format!(
                "Paused (by `k8s-manager pause` at {}, `k8s-manager resume` thaws it)",
                idle.status().frozen.unwrap().since
            )
        );
        assert_eq!(idle.thawed("disable", Instant::now()).cause, "disable");
    }

    #[test]
    fn use_after_the_idle_decision_is_seen() {
        let idle = Idle::default();
        let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        assert!(!idle.used_after(before));
        idle.used();
        assert!(idle.used_after(before));
        assert!(!idle.used_after(OffsetDateTime::now_utc() + time::Duration::seconds(1)));
    }

    /// The frozen listener's duplicate wakes on a queued connection from
    /// outside, and not on one of the manager's own.
    #[tokio::test]
    async fn a_queued_connection_from_another_process_wakes_and_our_own_does_not() {
        // A listener that never accepts, as a frozen API server's.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let idle = Idle::default();
        idle.froze(IDLE, None, Some(std::process::id()));
        let waiting = tokio::spawn({
            let idle = idle.clone();
            async move { wait_for_use(&idle, Some(std::process::id()), port).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _own = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "woken by the manager's own connection"
        );
        let mut outside = std::process::Command::new("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 5")])
            .spawn()
            .unwrap();
        let cause = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken within 5 s")
            .unwrap();
        let _ = outside.kill();
        let _ = outside.wait();
        assert_eq!(cause.as_deref(), Some("a call to the API server"));
        drop(listener);

        // A call queued while the freeze was being made wakes it as well.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut early = std::process::Command::new("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 5")])
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cause = tokio::time::timeout(
            Duration::from_secs(5),
            wait_for_use(&idle, Some(std::process::id()), port),
        )
        .await
        .expect("woken within 5 s");
        let _ = early.kill();
        let _ = early.wait();
        assert_eq!(cause.as_deref(), Some("a call to the API server"));
    }
}

//! LoadBalancer and NodePort Services on localhost, as many as the ports
//! allow: the manager itself listens on `network.loadBalancerAddress`
//! (127.0.0.1) at each LoadBalancer Service's `port`s and at every node
//! port, and forwards to the Service's cluster IP (kube-proxy's OUTPUT
//! rules carry a connection from the VM to a ready endpoint). A real bound
//! socket is what WSL 2's localhost forwarding sees, so each port also
//! answers on the Windows side.
//!
//! One pass decides everything from all Services at once ([`plan`]):
//! the listeners wanted (each port to its oldest claimant), against those
//! that exist: the others are closed (a deleted Service, a changed port:
//! its listener and connections close at once), the missing ones bound. A
//! bind that fails (another process, or an older Service, holds the port)
//! leaves that Service pending with a Warning Event naming the port and its
//! holder ([`holder`]), once per episode; the pass runs again every second
//! while something waits, so the Service is served as soon as the port
//! frees. Every other Service keeps its listeners.
//!
//! `status.loadBalancer.ingress` is written only once all of a Service's
//! ports listen for it, and cleared when they stop. It says
//! `hostname: localhost` on a loopback address (see [`plan::ingress_for`]
//! for why, and `ip` + `ipMode: Proxy` otherwise).
//!
//! Node ports: kube-proxy is configured with `localhostNodePorts: false`
//! (`components/kube_proxy.rs`), so 127.0.0.1:<nodePort> is no longer
//! DNAT-ed inside the node (and `route_localnet` is not needed): this
//! unit's listener answers there, the same way as for a LoadBalancer port,
//! and a port held by something else is reported instead of silently
//! stolen by iptables. The node's other addresses keep kube-proxy's node
//! ports.

pub mod forward;
pub mod holder;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::mpsc;

use super::Unit;
use crate::components::ApiServer;
use crate::model::config::ClusterConfig;
use crate::supervisor::{TaskContext, TaskSpec};
use plan::{EpisodeId, PortKey, ServiceId, Waiting};

/// The unit's name, as `status` shows it.
pub const NAME: &str = "load-balancer";
/// How often a port that was taken is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The unit as declared: a client of the API server.
pub const UNIT: Unit = Unit {
    name: NAME,
    needs: &[&ApiServer],
    make: |config, handles| unit(config, handles.idle.clone()),
};

/// The supervised unit: serves the Services of a cluster with `config`.
pub fn unit(config: &ClusterConfig, idle: crate::controllers::idle::Idle) -> TaskSpec {
    let kubeconfig = config.paths().admin_kubeconfig();
    let address = config.load_balancer_address;
    TaskSpec::new(NAME, move |ctx| {
        let kubeconfig = kubeconfig.clone();
        let idle = idle.clone();
        async move { run(ctx, &kubeconfig, address, idle).await }
    })
}

/// A listener of ours, and whose it is.
struct Active {
    uid: String,
    listening: forward::Listening,
}

/// What one pass leaves for the next.
struct Balancer {
    address: IpAddr,
    client: kube::Client,
    recorder: Recorder,
    active: BTreeMap<PortKey, Active>,
    /// The claims that waited at the last pass, with why.
    waiting: BTreeMap<EpisodeId, Waiting>,
    /// Unsupported ports already said (uid and message).
    said: HashSet<(String, String)>,
    /// The ingress last written for each Service uid (the watch may not
    /// have brought our own write back yet).
    written: BTreeMap<String, Vec<LoadBalancerIngress>>,
    /// A status write failed: the next tick tries again.
    unsettled: bool,
    /// Where a TCP port says it reached its cap of connections.
    full: mpsc::UnboundedSender<PortKey>,
    /// The cluster's use, told of every connection.
    idle: crate::controllers::idle::Idle,
}

async fn run(
    mut ctx: TaskContext,
    kubeconfig: &Path,
    address: IpAddr,
    idle: crate::controllers::idle::Idle,
) -> Result<(), String> {
    let client = crate::bootstrap::watch_client(kubeconfig)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let (store, writer) = reflector::store::<Service>();
    let mut events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .boxed();
    let reporter = Reporter {
        controller: format!("k8s-manager/{NAME}"),
        instance: None,
    };
    let (full, mut filled) = mpsc::unbounded_channel();
    let mut balancer = Balancer {
        address,
        client: client.clone(),
        recorder: Recorder::new(client, reporter),
        active: BTreeMap::new(),
        waiting: BTreeMap::new(),
        said: HashSet::new(),
        written: BTreeMap::new(),
        unsettled: false,
        full,
        idle,
    };
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listed = false;
    loop {
        let dirty = tokio::select! {
            _ = ctx.stopping() => return Ok(()),
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => {
                    listed = true;
                    true
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => false,
                Some(Ok(_)) => true,
                Some(Err(err)) => {
                    tracing::debug!("{NAME}: watch: {err}");
                    false
                }
                None => return Err("the Services' watch ended".into()),
            },
            _ = tick.tick() => !balancer.waiting.is_empty() || balancer.unsettled,
            Some(key) = filled.recv() => {
                let services = store.state();
                let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
                balancer.full(&services, key).await;
                false
            }
        };
        if dirty && listed {
            let services = store.state();
            let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
            balancer.pass(&services).await;
            ctx.ready();
            ctx.detail(Some(balancer.detail()));
        }
    }
}

impl Balancer {
    /// Makes the listeners and statuses what the Services want.
    async fn pass(&mut self, services: &[&Service]) {
        let plan = plan::plan(services);
        let before: BTreeSet<EpisodeId> = self.waiting.keys().cloned().collect();
        // Close what is no longer wanted, or wanted by another Service.
        self.active
            .retain(|key, a| plan.listeners.get(key).is_some_and(|c| c.uid == a.uid));
        let mut waiting = BTreeMap::new();
        for (key, claim) in &plan.listeners {
            if let Some(active) = self.active.get(key) {
                active.listening.retarget(claim.target);
                continue;
            }
            let tell = forward::Tell {
                full: self.full.clone(),
                idle: self.idle.clone(),
            };
            match forward::listen(self.address, *key, claim.target, tell).await {
                Ok(listening) => {
                    tracing::info!("{NAME}: {} serves {key} → {}", claim.service, claim.target);
                    self.active.insert(
                        *key,
                        Active {
                            uid: claim.uid.clone(),
                            listening,
                        },
                    );
                }
                Err(err) => {
                    let id = (claim.uid.clone(), *key);
                    let why = match self.waiting.remove(&id) {
                        // Still the same episode: who holds it was found at its start.
                        Some(why) => why,
                        None => self.why(key, err).await,
                    };
                    waiting.insert(id, why);
                }
            }
        }
        for (claim, winner) in &plan.conflicts {
            waiting.insert(
                (claim.uid.clone(), claim.key),
                Waiting::Service(winner.clone()),
            );
        }
        let mut owners: BTreeMap<&str, &Service> = BTreeMap::new();
        for s in services {
            if let Some(uid) = s.metadata.uid.as_deref() {
                owners.insert(uid, s);
            }
        }
        for ((uid, key), why) in plan::new_episodes(&before, &waiting) {
            let note = plan::waiting_note(key, self.address, why);
            tracing::warn!("{NAME}: {note}");
            if let Some(service) = owners.get(uid.as_str()) {
                self.warn(service, "PortUnavailable", note).await;
            }
        }
        self.waiting = waiting;
        for unsupported in &plan.unsupported {
            let said = (unsupported.uid.clone(), unsupported.what.clone());
            if self.said.insert(said)
                && let Some(service) = owners.get(unsupported.uid.as_str())
            {
                self.warn(service, "UnsupportedProtocol", unsupported.what.clone())
                    .await;
            }
        }
        self.write_statuses(&plan).await;
    }

    /// Tells the Service that `key` serves that it reached the cap of
    /// connections at once: new ones are closed until one ends.
    async fn full(&self, services: &[&Service], key: PortKey) {
        let Some(active) = self.active.get(&key) else {
            return;
        };
        let note = format!(
            "{key} on {} serves {} connections at once, its most: new connections are closed until one ends",
            self.address,
            forward::TCP_MAX_CONNECTIONS
        );
        tracing::warn!("{NAME}: {note}");
        let owner = services
            .iter()
            .find(|s| s.metadata.uid.as_deref() == Some(active.uid.as_str()));
        if let Some(service) = owner {
            self.warn(service, "TooManyConnections", note).await;
        }
    }

    /// Why `key` could not be bound: which process holds it, when it is one.
    async fn why(&self, key: &PortKey, err: std::io::Error) -> Waiting {
        if err.kind() != std::io::ErrorKind::AddrInUse {
            return Waiting::Error(err.to_string());
        }
        let (key, address) = (*key, self.address);
        let found =
            tokio::task::spawn_blocking(move || holder::find(Path::new("/proc"), &key, address))
                .await
                .ok()
                .flatten();
        Waiting::Process(found)
    }

    async fn warn(&self, service: &Service, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Listen".into(),
            secondary: None,
        };
        if let Err(err) = self
            .recorder
            .publish(&event, &service.object_ref(&()))
            .await
        {
            tracing::warn!("{NAME}: an Event for {}: {err}", ServiceId::of(service));
        }
    }

    async fn write_statuses(&mut self, plan: &plan::Plan) {
        self.unsettled = false;
        let uids: HashSet<&str> = plan.balanced.values().map(|b| b.uid.as_str()).collect();
        self.written.retain(|uid, _| uids.contains(uid.as_str()));
        for (id, balanced) in &plan.balanced {
            let serving =
                |key: &PortKey| self.active.get(key).is_some_and(|a| a.uid == balanced.uid);
            let wanted = plan::wanted_ingress(balanced, serving, self.address);
            if wanted == balanced.ingress || self.written.get(&balanced.uid) == Some(&wanted) {
                continue;
            }
            let ingress = if wanted.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::to_value(&wanted).expect("serialises")
            };
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let api: Api<Service> = Api::namespaced(self.client.clone(), &id.namespace);
            match api
                .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.written.insert(balanced.uid.clone(), wanted);
                }
                Err(err) => {
                    tracing::warn!("{NAME}: the status of {id}: {err}");
                    self.unsettled = true;
                }
            }
        }
    }

    fn detail(&self) -> String {
        let waiting: Vec<(PortKey, String)> = self
            .waiting
            .iter()
            .map(|((_, key), why)| (*key, why.said()))
            .collect();
        plan::detail(self.active.len(), &waiting)
    }
}

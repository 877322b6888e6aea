//! `pause` and `resume`: the running cluster frozen and thawed through its
//! cgroups ([`crate::cgroups`]): every component and the kubelet's pods stop
//! using CPU, their memory kept, nothing restarted; `resume` (or any other
//! operation, which thaws first) lets them go on.
//!
//! The idle unit ([`crate::controllers::idle`]) asks for both too: `pause`
//! with the cause `idle` once nobody used the cluster for
//! `idle.freezeAfter`, `resume` with what woke it.
//!
//! The order is meant to keep the node Ready (`bench/freeze.sh` measures
//! it): a freeze takes the API server's clients first and etcd last; a thaw
//! lets the pods, the kubelet, kube-proxy, etcd and the API server go on
//! together (the first call waits for the API server only: milliseconds);
//! then, once the kubelet renewed the node's lease (at once after a thaw),
//! the scheduler and the controller-manager, whose node monitor would
//! otherwise read the node's last heartbeat as lost.

use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::cgroups::PODS;
use crate::cluster::operation::{Needs, Operation, Turn, World};
use crate::model::api::FreezeRequest;
use crate::model::error::OperationError;
use crate::model::event::Event;
use crate::model::state::Phase;

pub const PAUSE: &str = "pause";
pub const RESUME: &str = "resume";

/// The freeze's order: the API server's clients, then the pods, then the
/// API server and etcd.
pub const FREEZE_ORDER: [&str; 7] = [
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
    PODS,
    "kube-apiserver",
    "etcd",
];

/// What a thaw lets go on first, together: everything the first call and
/// the node's heartbeat need.
pub const THAW_FIRST: [&str; 5] = [PODS, "kubelet", "kube-proxy", "etcd", "kube-apiserver"];
/// A lease renewed this recently is a heartbeat the controller-manager's
/// node monitor (50 s of grace, a look every 5 s) reads as alive: after a
/// short freeze the thaw does not wait for the next renewal (up to the
/// kubelet's 10 s period), after a longer one it waits for the renewal the
/// kubelet makes at once.
const LEASE_FRESH_SECONDS: i64 = 20;
/// How long the thaw waits for the node's heartbeat (its lease renewed)
/// before it lets the controller-manager go on all the same.
const HEARTBEAT_WITHIN: Duration = Duration::from_secs(15);

/// The operation that freezes the cluster.
#[derive(Default)]
pub struct Pause {
    pub request: FreezeRequest,
}

/// The operation that thaws it.
#[derive(Default)]
pub struct Resume {
    pub request: FreezeRequest,
}

impl Operation for Pause {
    fn name(&self) -> &'static str {
        PAUSE
    }

    fn needs(&self) -> Needs {
        Needs::RunningCluster
    }

    fn turn(&self) -> Turn {
        Turn::CancelledByStops
    }

    fn done(&self, seconds: f64) -> String {
        format!("cluster paused in {seconds:.2}s: `k8s-manager resume` (or any operation) thaws it")
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        async move {
            let idle = &world.host.units.idle;
            let cause = self.request.cause.clone().unwrap_or_else(|| PAUSE.into());
            let idle_since = self.request.idle_since.clone();
            // Asked for while something ran: it may be in use again.
            let since = idle_since.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            if since.is_some_and(|since| idle.used_after(since)) {
                world.host.progress.emit(Event::Notice {
                    message:
                        "the cluster was used since the idle freeze was asked for: it stays awake"
                            .into(),
                });
                return Ok(());
            }
            if world.host.processes.frozen() {
                world.host.progress.emit(Event::Notice {
                    message: "the cluster is paused already".into(),
                });
                return Ok(());
            }
            let phase = Phase::named("freeze");
            world.host.progress.emit(Event::Phase {
                phase: phase.clone(),
                description: "freezing the components and the pods".into(),
            });
            // A stale NotReady after a long freeze is refused while it thaws.
            if let Err(err) = world.api.arm_thaw_guard().await {
                world.host.progress.emit(Event::Notice {
                    message: format!(
                        "{err}: after a long freeze the node may show NotReady for a few seconds"
                    ),
                });
            }
            let api_pid = world
                .host
                .processes
                .status()
                .await
                .into_iter()
                .find(|c| c.name == "kube-apiserver")
                .and_then(|c| c.pid);
            world
                .host
                .processes
                .set_frozen(&FREEZE_ORDER, true)
                .await
                .map_err(|e| {
                    OperationError::new(phase, format!("cannot freeze the cluster: {e}"))
                })?;
            idle.froze(&cause, since, api_pid);
            world
                .host
                .progress
                .emit(Event::Frozen { cause, idle_since });
            Ok(())
        }
        .boxed()
    }
}

impl Operation for Resume {
    fn name(&self) -> &'static str {
        RESUME
    }

    fn needs(&self) -> Needs {
        Needs::RunningCluster
    }

    fn turn(&self) -> Turn {
        Turn::CancelledByStops
    }

    fn done(&self, seconds: f64) -> String {
        format!("cluster resumed in {seconds:.2}s")
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        async move {
            if !world.host.processes.frozen() {
                world.host.progress.emit(Event::Notice {
                    message: "the cluster is not paused: nothing to thaw".into(),
                });
                return Ok(());
            }
            world.host.progress.emit(Event::Phase {
                phase: Phase::named("thaw"),
                description: "thawing the cluster".into(),
            });
            let cause = self.request.cause.as_deref().unwrap_or(RESUME);
            thaw(world, cause).await
        }
        .boxed()
    }
}

/// The error of a thaw that failed.
fn thaw_failed(e: String) -> OperationError {
    OperationError::new(
        Phase::named("thaw"),
        format!("cannot thaw the cluster: {e}"),
    )
}

/// Tells that the API server runs again: `cause` woke it (unless a wake
/// was asked for, which is told instead), `started` when.
fn told_thawed(world: &World<'_>, cause: &str, started: Instant) {
    let wake = world.host.units.idle.thawed(cause, started);
    world.host.progress.emit(Event::Thawed {
        cause: wake.cause,
        latency_ms: wake.latency_ms,
    });
}

/// Thaws everything at once, for an operation that stops the cluster
/// anyway (a disable, a reset: `cause`): no wait for the node.
pub async fn thaw_at_once(world: &World<'_>, cause: &str) -> Result<(), OperationError> {
    let started = Instant::now();
    world
        .host
        .processes
        .set_frozen(&FREEZE_ORDER, false)
        .await
        .map_err(thaw_failed)?;
    told_thawed(world, cause, started);
    Ok(())
}

/// Thaws the cluster in the order that keeps its node Ready (see the
/// module's words), for `cause`; what no freeze holds is passed.
pub async fn thaw(world: &World<'_>, cause: &str) -> Result<(), OperationError> {
    let processes = world.host.processes;
    let fresh_since = time::OffsetDateTime::now_utc().unix_timestamp() - LEASE_FRESH_SECONDS;
    let begun = Instant::now();
    processes
        .set_frozen(&THAW_FIRST, false)
        .await
        .map_err(thaw_failed)?;
    told_thawed(world, cause, begun);
    if let Some(config) = &world.last_made {
        // One check answers at once: asked again until the kubelet posted.
        let posted = async {
            while let Err(why) = world.api.node_alive(&config.node_name, fresh_since).await {
                tracing::debug!("after the thaw: {why}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(HEARTBEAT_WITHIN, posted)
            .await
            .is_err()
        {
            tracing::warn!(
                "the node renewed no lease within {HEARTBEAT_WITHIN:?} of the thaw: the controller-manager goes on all the same"
            );
        }
    }
    processes
        .set_frozen(&["kube-scheduler", "kube-controller-manager"], false)
        .await
        .map_err(thaw_failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fakes;

    #[tokio::test]
    async fn pause_freezes_clients_first_and_resume_thaws_the_kubelet_before_the_api_server() {
        let dir = tempfile::tempdir().unwrap();
        let (world, config) = fakes::enabled(dir.path()).await;
        let paths = config.paths();
        world.journal.clear();
        world
            .run(&Pause::default(), &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(
            world.journal.entries(),
            [
                "phase freeze",
                "thaw guard armed",
                "freeze kube-controller-manager,kube-scheduler,kube-proxy,kubelet,pods,kube-apiserver,etcd"
            ]
        );
        world.journal.clear();
        world
            .run(&Resume::default(), &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(
            world.journal.entries(),
            [
                "phase thaw",
                "thaw pods,kubelet,kube-proxy,etcd,kube-apiserver",
                // The controller-manager only once the node's lease is fresh.
                &format!("node {} alive", config.node_name),
                "thaw kube-scheduler,kube-controller-manager"
            ]
        );
        // A cluster that is not paused is left as it is.
        world.journal.clear();
        world
            .run(&Resume::default(), &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(world.journal.entries(), Vec::<String>::new());

        // An idle freeze asked for before a use is dropped at its turn; one
        // asked for after the last use is made, and says so in status.
        let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
        world.units.idle.used();
        let stale = Pause {
            request: FreezeRequest {
                cause: Some("idle".into()),
                idle_since: before
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok(),
            },
        };
        world
            .run(&stale, &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(world.journal.entries(), Vec::<String>::new());
        let after = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
        let fresh = Pause {
            request: FreezeRequest {
                cause: Some("idle".into()),
                idle_since: after
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok(),
            },
        };
        world
            .run(&fresh, &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(world.journal.entries()[0], "phase freeze");
        let idle = world.units.idle.status();
        assert_eq!(idle.frozen.unwrap().cause, "idle");
    }
}

//! `pause` and `resume`: the running cluster frozen and thawed through its
//! cgroups ([`crate::cgroups`]): every component and the kubelet's pods stop
//! using CPU, their memory kept, nothing restarted; `resume` (or any other
//! operation, which thaws first) lets them go on.
//!
//! The order is meant to keep the node Ready (`bench/freeze.sh` measures
//! it; after a freeze longer than the kubelet's 30 s runtime check it does
//! not always yet: the README has the figures): a freeze takes the API
//! server's clients first and etcd last; a thaw lets
//! the pods, the kubelet and kube-proxy go on first, while etcd and the API
//! server are still frozen, so that the kubelet checks its runtime again
//! (its check goes stale after 30 s) before it can post a status (its call
//! to the API server waits); then etcd and the API server; then, once the
//! node posted a Ready status, the scheduler and the controller-manager,
//! whose node monitor would otherwise read the node's last status as lost.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::cgroups::PODS;
use crate::cluster::operation::{Needs, Operation, Turn, World};
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

/// How long the kubelet runs before etcd and the API server are thawed: the
/// time for its runtime and pod-lifecycle checks to run again (0.1 s was
/// not enough after 200 s frozen; 0.3 s was, after 70 s).
pub const KUBELET_FIRST: Duration = Duration::from_millis(300);
/// How long the thaw waits for the node's Ready status before it lets the
/// controller-manager go on all the same: a kubelet that posted NotReady
/// first posts again after its status period (10 s).
const NODE_READY_WITHIN: Duration = Duration::from_secs(15);

/// The operation that freezes the cluster.
pub struct Pause;

/// The operation that thaws it.
pub struct Resume;

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
            let phase = Phase::named("freeze");
            world.host.progress.emit(Event::Phase {
                phase: phase.clone(),
                description: "freezing the components and the pods".into(),
            });
            world
                .host
                .processes
                .set_frozen(&FREEZE_ORDER, true)
                .await
                .map_err(|e| OperationError::new(phase, format!("cannot freeze the cluster: {e}")))
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
            thaw(world).await
        }
        .boxed()
    }
}

/// Thaws everything at once, for an operation that stops the cluster
/// anyway (a disable, a reset): no wait for the node.
pub async fn thaw_at_once(world: &World<'_>) -> Result<(), OperationError> {
    world
        .host
        .processes
        .set_frozen(&FREEZE_ORDER, false)
        .await
        .map_err(|e| {
            OperationError::new(
                Phase::named("thaw"),
                format!("cannot thaw the cluster: {e}"),
            )
        })
}

/// Thaws the cluster in the order that keeps its node Ready (see the
/// module's words); what no freeze holds is passed.
pub async fn thaw(world: &World<'_>) -> Result<(), OperationError> {
    let phase = Phase::named("thaw");
    let processes = world.host.processes;
    let fail =
        |e: String| OperationError::new(phase.clone(), format!("cannot thaw the cluster: {e}"));
    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    processes
        .set_frozen(&[PODS, "kubelet", "kube-proxy"], false)
        .await
        .map_err(fail)?;
    tokio::time::sleep(KUBELET_FIRST).await;
    processes
        .set_frozen(&["etcd", "kube-apiserver"], false)
        .await
        .map_err(fail)?;
    if let Some(config) = &world.last_made {
        // One check answers at once: asked again until the kubelet posted.
        let posted = async {
            while let Err(why) = world.api.node_ready(&config.node_name, started).await {
                tracing::debug!("after the thaw: {why}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(NODE_READY_WITHIN, posted)
            .await
            .is_err()
        {
            tracing::warn!(
                "the node posted no Ready status within {NODE_READY_WITHIN:?} of the thaw: the controller-manager goes on all the same"
            );
        }
    }
    processes
        .set_frozen(&["kube-scheduler", "kube-controller-manager"], false)
        .await
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fakes::{self, Behaviour, World};

    #[tokio::test]
    async fn pause_freezes_clients_first_and_resume_thaws_the_kubelet_before_the_api_server() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let world = World::new(Behaviour::default());
        world
            .enable(&config, crate::cluster::cancel::CancelSignal::new())
            .await
            .unwrap();
        let paths = config.paths();
        world.journal.clear();
        world
            .run(&Pause, &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(
            world.journal.entries(),
            [
                "phase freeze",
                "freeze kube-controller-manager,kube-scheduler,kube-proxy,kubelet,pods,kube-apiserver,etcd"
            ]
        );
        world.journal.clear();
        world
            .run(&Resume, &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(
            world.journal.entries(),
            [
                "phase thaw",
                "thaw pods,kubelet,kube-proxy",
                "thaw etcd,kube-apiserver",
                // The controller-manager only once the node posted Ready.
                &format!("node {} ready", config.node_name),
                "thaw kube-scheduler,kube-controller-manager"
            ]
        );
        // A cluster that is not paused is left as it is.
        world.journal.clear();
        world
            .run(&Resume, &paths, Some(config.clone()))
            .await
            .unwrap();
        assert_eq!(world.journal.entries(), Vec::<String>::new());
    }
}

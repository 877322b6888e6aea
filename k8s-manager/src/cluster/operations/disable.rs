//! `disable`: the cluster stopped, its data kept, so that the next enable is
//! warm: everything that runs, in the waves its declared order gives (the
//! API server's clients together, then the API server, then etcd), whatever
//! a dead manager left, then the pods' sandboxes,
//! containers and network and the mounts the kubelet left. It works on a
//! broken or half-started cluster, and on one whose enable was just
//! cancelled (it cancels the enables running and queued first).

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::enable::{GRACEFUL, STALE_GRACE};
use crate::cluster::cancel::CancelSignal;
use crate::cluster::host::Host;
use crate::cluster::operation::{
    Needs, Operation, Shown, Step, StepContext, Turn, World, run_steps,
};
pub(crate) use crate::cluster::order::Ending;
use crate::cluster::progress::Progress;
use crate::model::config::{ClusterConfig, Paths};
use crate::model::error::OperationError;
use crate::model::event::Event;
use crate::model::state::{ClusterState, Phase};

/// How long a component has to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The operation.
pub struct Disable;

impl Operation for Disable {
    fn name(&self) -> &'static str {
        "disable"
    }

    fn needs(&self) -> Needs {
        Needs::Nothing
    }

    fn turn(&self) -> Turn {
        Turn::CancelsEnables("a disable")
    }

    fn done(&self, seconds: f64) -> String {
        format!("cluster stopped in {seconds:.1}s")
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        async move {
            world.host.progress.set_state(ClusterState::Stopping);
            let mut teardown = Teardown::of(world);
            run_steps(&[stop_step()], &mut teardown, Shown::AsProgress).await?;
            world.host.progress.set_state(ClusterState::Stopped);
            Ok(())
        }
        .boxed()
    }
}

/// What the steps that take a cluster down see: the world, the state
/// folder, and the cluster last made (`None`: never made, or its record is
/// gone; everything of ours is stopped all the same).
pub(crate) struct Teardown<'a> {
    pub host: Host<'a>,
    pub paths: &'a Paths,
    pub config: Option<ClusterConfig>,
    /// How the processes end: gracefully, unless the data goes next.
    pub ending: Ending,
    /// Taking a cluster down is never cancelled.
    cancel: CancelSignal,
}

impl<'a> Teardown<'a> {
    pub fn of(world: &World<'a>) -> Teardown<'a> {
        Teardown {
            host: world.host,
            paths: world.paths,
            config: world.last_made.clone(),
            ending: Ending::Graceful,
            cancel: CancelSignal::new(),
        }
    }
}

impl StepContext for Teardown<'_> {
    fn progress(&self) -> &dyn Progress {
        self.host.progress
    }

    fn cancel(&self) -> &CancelSignal {
        &self.cancel
    }

    fn enter(&mut self, _phase: &Phase, _deadline: Duration) {}
}

/// The stop, as a step of its own (a reset's first).
pub(crate) fn stop_step<'b>() -> Step<Teardown<'b>> {
    Step::new("stop", "stopping", 120, |t| {
        async move {
            stop(t.host, t.paths, t.config.as_ref(), t.ending)
                .await
                .map_err(|e| OperationError::new(Phase::named("stop"), e))
        }
        .boxed()
    })
}

/// Stops everything (in the stop's waves) and whatever a dead manager left,
/// then removes the pods' sandboxes, containers and network, and the mounts
/// the kubelet left. `config`: the saved settings, when they could be read.
/// Every step runs even when one before failed.
pub(crate) async fn stop(
    host: Host<'_>,
    paths: &Paths,
    config: Option<&ClusterConfig>,
    ending: Ending,
) -> Result<(), String> {
    // In the waves the declaration gives: the API server's clients, the
    // in-process units among them, stop together (one by one, each taking
    // its time over a SIGTERM in the middle of its start, they made a stop
    // during an enable take seconds more; and none of them sees the API
    // server go); then the API server; then etcd, which stops at once when
    // no API server holds it. Then whatever else runs.
    crate::cluster::order::stop(host.processes, ending).await;
    host.processes.stop_all(STOP_GRACE).await;
    host.processes
        .end_stale(Vec::new(), STALE_GRACE, GRACEFUL)
        .await;
    let mut errors = Vec::new();
    if let Err(err) = remove_pods(host, config).await {
        errors.push(err);
    }
    if let Err(err) = host.machine.unmount_below(&paths.kubelet_root) {
        errors.push(err);
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

/// Every pod sandbox (with its containers and network) through CRI, then
/// anything CRI no longer tracks in the `k8s.io` namespace.
async fn remove_pods(host: Host<'_>, config: Option<&ClusterConfig>) -> Result<(), String> {
    // Tearing a pod's network down goes through CNI: if our configuration
    // went missing (a half-made or half-removed cluster), put it back first.
    if let Some(config) = config {
        let network = crate::runtime::CniNetwork::new(config.node_pod_subnet());
        if let Err(err) = crate::runtime::cni::write_cni_config(&config.cni_conf_dir, &network) {
            tracing::warn!("cannot restore the CNI configuration for pod removal: {err}");
        }
    }
    let (removed, leftovers) = host.runtime.remove_pods().await?;
    if removed > 0 || leftovers > 0 {
        host.progress.emit(Event::Notice {
            message: format!(
                "removed {removed} pod sandbox(es) and {leftovers} leftover container(s)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fakes::{self, Behaviour, World};
    use crate::supervisor::order::Declared;

    #[tokio::test]
    async fn a_stop_without_settings_still_stops_everything() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::model::config::Paths::new(dir.path());
        let world = World::new(Behaviour::default());
        world.run(&Disable, &paths, None).await.unwrap();
        assert_eq!(
            world.journal.entries(),
            [
                "phase stop",
                "stop all",
                "end stale",
                "remove pods",
                "unmount"
            ]
        );
    }

    #[tokio::test]
    async fn the_api_servers_clients_stop_before_it_and_etcd_last() {
        let dir = tempfile::tempdir().unwrap();
        let (world, config) = fakes::enabled(dir.path()).await;
        world
            .run(&Disable, &config.paths(), Some(config.clone()))
            .await
            .unwrap();
        // Each wave of the declared order stops before the next, and all
        // of them before whatever else runs.
        let declared = crate::cluster::order::declared();
        let waves = crate::supervisor::order::stop_waves(&declared);
        let stop = |unit: &Declared| format!("stop {}", unit.name);
        for pair in waves.windows(2) {
            for earlier in &pair[0] {
                for later in &pair[1] {
                    world.journal.before(&stop(earlier), &stop(later));
                }
            }
        }
        for unit in waves.iter().flatten() {
            world.journal.before(&stop(unit), "stop all");
        }
        // The in-process units, started once the API answered, stop before it.
        for unit in crate::controllers::UNITS.map(|u| u.name) {
            world
                .journal
                .before(&format!("start task {unit}"), &format!("stop {unit}"));
            world
                .journal
                .before(&format!("stop {unit}"), "stop kube-apiserver");
        }
        world.journal.before("stop kube-apiserver", "stop etcd");
        assert!(world.running().is_empty());
    }

    #[tokio::test]
    async fn a_stop_of_everything_at_once_stops_the_units_before_the_api_server() {
        // The daemon's shutdown: one stop_all, no named stops first.
        let dir = tempfile::tempdir().unwrap();
        let (world, _config) = fakes::enabled(dir.path()).await;
        world.processes_stop_all().await;
        for unit in crate::controllers::UNITS.map(|u| u.name) {
            world
                .journal
                .before(&format!("stop {unit}"), "stop kube-apiserver");
        }
    }
}

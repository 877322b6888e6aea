//! `reset`: the cluster thrown away — stopped (as `disable` does), then its
//! data deleted — and, when asked, a fresh one made. Works on a broken or
//! half-started cluster: every step runs even when one before failed, and
//! their errors are told together. It cancels the enables running and
//! queued first; the fresh cluster's enable is cancelled by a disable or a
//! reset asked for meanwhile.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::disable::{Ending, Teardown, stop_step};
use crate::cluster::host::Host;
use crate::cluster::operation::{Needs, Operation, Shown, Step, Turn, World, run_steps};
use crate::model::config::{ClusterConfig, Paths};
use crate::model::error::OperationError;
use crate::model::state::{ClusterState, Phase};

/// The operation: the cluster thrown away, then a fresh one of `restart`
/// made when given.
pub struct Reset {
    pub restart: Option<ClusterConfig>,
}

impl Operation for Reset {
    fn name(&self) -> &'static str {
        "reset"
    }

    fn needs(&self) -> Needs {
        Needs::Nothing
    }

    fn turn(&self) -> Turn {
        Turn::CancelsEnables("a reset")
    }

    fn done(&self, seconds: f64) -> String {
        match self.restart {
            Some(_) => format!("fresh cluster ready in {seconds:.1}s"),
            None => format!("cluster removed in {seconds:.1}s"),
        }
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        async move {
            world.host.progress.set_state(ClusterState::Stopping);
            let mut teardown = Teardown::of(world);
            // The data goes next: the processes are killed, not asked to end.
            teardown.ending = Ending::Discarding;
            let stopped = run_steps(&[stop_step()], &mut teardown, Shown::AsProgress).await;
            let removed = run_steps(&[remove_step()], &mut teardown, Shown::AsProgress).await;
            match (stopped, removed) {
                (Ok(()), Ok(())) => {}
                (Err(err), Ok(())) | (Ok(()), Err(err)) => return Err(err),
                (Err(stop), Err(mut removal)) => {
                    removal.message = format!("{}; {}", stop.message, removal.message);
                    return Err(removal);
                }
            }
            world.host.progress.made(None);
            world.host.progress.set_state(ClusterState::Stopped);
            match &self.restart {
                Some(config) => {
                    super::enable::enable(world, config, world.next_enables.clone()).await
                }
                None => Ok(()),
            }
        }
        .boxed()
    }
}

fn remove_step<'b>() -> Step<Teardown<'b>> {
    Step::new("reset", "removing the cluster's data", 120, |t| {
        async move {
            remove_data(t.host, t.paths, t.config.as_ref())
                .await
                .map_err(|e| OperationError::new(Phase::named("reset"), e))
        }
        .boxed()
    })
}

/// Deletes the cluster's data: etcd, PKI,
/// kubeconfigs, kubelet and CNI state, every volume with its data, our iptables chains and bridge, and
/// our entries in the user's kubeconfigs. Every part is removed even when
/// one before failed; the errors are reported together at the end.
async fn remove_data(
    host: Host<'_>,
    paths: &Paths,
    config: Option<&ClusterConfig>,
) -> Result<(), String> {
    let mut errors = Vec::new();
    // The volumes go with the cluster whose claims they served: a claim
    // made again under the same name never sees old data.
    for dir in [
        &paths.etcd_data,
        &paths.pki,
        &paths.kubeconfigs,
        &paths.kubelet_root,
        &paths.component_config,
        &paths.volumes,
    ] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => errors.push(format!("{}: {err}", dir.display())),
        }
    }
    let _ = std::fs::remove_file(&paths.bundle_verified);
    let _ = std::fs::remove_file(&paths.etcd_first_start);
    let subnet = config.map_or(
        crate::model::config::node_pod_subnet(crate::model::config::DEFAULT_POD_CIDR),
        ClusterConfig::node_pod_subnet,
    );
    let conf_dir = config.map_or_else(
        || crate::model::config::DEFAULT_CNI_CONF_DIR.into(),
        |c| c.cni_conf_dir.clone(),
    );
    errors.extend(host.runtime.clean_network(subnet, conf_dir).await);
    errors.extend(
        config
            .map(crate::cluster::export::remove)
            .unwrap_or_default(),
    );
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fakes::{self, Behaviour, World};

    #[tokio::test]
    async fn reset_runs_every_step_even_after_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let paths = config.paths();
        for made in [
            &paths.etcd_data,
            &paths.pki,
            &paths.kubeconfigs,
            &paths.kubelet_root,
            &paths.volumes,
        ] {
            std::fs::create_dir_all(made.join("inside")).unwrap();
        }
        let world = World::new(Behaviour {
            remove_pods_fails: Some("containerd said no".into()),
            unmount_fails: Some("cannot unmount a busy thing".into()),
            ..Behaviour::default()
        });
        let err = world
            .run(&Reset { restart: None }, &paths, Some(config.clone()))
            .await
            .unwrap_err();
        // The stop failed: the error is its step's; the data went all the same.
        assert_eq!(err.phase, "stop");
        assert!(err.message.contains("containerd said no"), "{err}");
        assert!(err.message.contains("cannot unmount a busy thing"), "{err}");
        for step in [
            "stop all",
            "end stale",
            "remove pods",
            "unmount",
            "phase reset",
        ] {
            assert!(
                world.journal.has(step),
                "{step}: {:?}",
                world.journal.entries()
            );
        }
        world.journal.before("stop all", "remove pods");
        world
            .journal
            .before("unmount", "clean network 10.244.0.0/24");
        for gone in [
            &paths.etcd_data,
            &paths.pki,
            &paths.kubeconfigs,
            &paths.kubelet_root,
            &paths.volumes,
        ] {
            assert!(!gone.exists(), "{} is still there", gone.display());
        }
    }

    /// A reset kills the component processes at once (their data goes
    /// next); a disable gives each its grace. The in-process units get
    /// theirs either way.
    #[tokio::test]
    async fn a_reset_kills_the_processes_a_disable_lets_them_end() {
        for (operation, killed) in [("reset", true), ("disable", false)] {
            let dir = tempfile::tempdir().unwrap();
            let (world, config) = fakes::enabled(dir.path()).await;
            let paths = config.paths();
            match operation {
                "reset" => world.run(&Reset { restart: None }, &paths, Some(config.clone())),
                _ => world.run(
                    &super::super::disable::Disable,
                    &paths,
                    Some(config.clone()),
                ),
            }
            .await
            .unwrap();
            let graces = world.stop_graces.lock().unwrap().clone();
            for component in crate::components::ALL {
                let grace = graces.iter().find(|(n, _)| n == component.name());
                let expected = match killed {
                    true => std::time::Duration::ZERO,
                    false => component.stop_grace(),
                };
                assert_eq!(
                    grace.map(|(_, g)| *g),
                    Some(expected),
                    "{operation}: {}",
                    component.name()
                );
            }
            let units: Vec<_> = graces
                .iter()
                .filter(|(n, _)| crate::controllers::UNITS.iter().any(|u| u.name == n))
                .collect();
            assert!(!units.is_empty(), "{operation}: {graces:?}");
            for (name, grace) in units {
                assert_eq!(
                    *grace,
                    crate::controllers::STOP_GRACE,
                    "{operation}: {name}"
                );
            }
        }
    }
}

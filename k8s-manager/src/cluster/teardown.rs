//! The two procedures that take a cluster down, apart from the enable
//! pipeline: stop (every component, then the pods and the mounts they left)
//! and reset (stop, then the cluster's data). Both work on a broken or
//! half-started cluster, and on one whose enable was just cancelled.

use std::time::{Duration, Instant};

use super::config::{ClusterConfig, Paths};
use super::event::Event;
use super::host::Host;
use super::phases::{GRACEFUL, PhaseError, STALE_GRACE};
use super::state::Phase;
use crate::components::{Component, ControllerManager, KubeProxy, Kubelet, Scheduler};

/// How long a component has to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The components that only talk to the API server: nothing else depends on them.
const API_CLIENTS: [&dyn Component; 4] = [&KubeProxy, &Kubelet, &Scheduler, &ControllerManager];

/// Stops every component (reverse order) and whatever a dead manager left,
/// then removes the pods' sandboxes, containers and network, and the mounts
/// the kubelet left. `config`: the saved settings, when they could be read.
/// Every step runs even when one before failed.
pub async fn stop(
    host: Host<'_>,
    paths: &Paths,
    config: Option<&ClusterConfig>,
) -> Result<(), PhaseError> {
    host.progress.emit(Event::Phase {
        phase: Phase::Stop,
        description: Phase::Stop.description().into(),
    });
    let start = Instant::now();
    // The API server's clients stop together: each only talks to the API
    // server, and one by one, each taking its time over a SIGTERM in the
    // middle of its start, they made a stop during an enable take seconds
    // more. Then the rest, the last started first: the API server before
    // etcd, which stops at once when no API server holds it.
    // The in-process units are clients of the API server too: they stop
    // with the others, so that none of them sees it go.
    let units = crate::controllers::NAMES
        .iter()
        .map(|name| host.processes.stop(name, crate::controllers::STOP_GRACE));
    let clients = API_CLIENTS
        .iter()
        .map(|c| host.processes.stop(c.name(), STOP_GRACE));
    futures::future::join_all(units.chain(clients)).await;
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
    if !errors.is_empty() {
        return Err(PhaseError::new(Phase::Stop, errors.join("; ")));
    }
    host.progress.emit(Event::PhaseDone {
        phase: Phase::Stop,
        seconds: start.elapsed().as_secs_f64(),
    });
    Ok(())
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

/// Stops everything, then deletes the cluster's data: etcd, PKI,
/// kubeconfigs, kubelet and CNI state, every volume with its data, our iptables chains and bridge, and
/// our entries in the user's kubeconfigs. Every step runs even when one
/// before failed; the errors are reported together at the end.
pub async fn reset(
    host: Host<'_>,
    paths: &Paths,
    config: Option<&ClusterConfig>,
) -> Result<(), PhaseError> {
    let mut errors = Vec::new();
    if let Err(err) = stop(host, paths, config).await {
        errors.push(err.message);
    }
    host.progress.emit(Event::Phase {
        phase: Phase::Reset,
        description: Phase::Reset.description().into(),
    });
    let start = Instant::now();
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
        super::config::node_pod_subnet(super::config::DEFAULT_POD_CIDR),
        ClusterConfig::node_pod_subnet,
    );
    let conf_dir = config.map_or_else(
        || super::config::DEFAULT_CNI_CONF_DIR.into(),
        |c| c.cni_conf_dir.clone(),
    );
    errors.extend(host.runtime.clean_network(subnet, conf_dir).await);
    errors.extend(config.map(super::export::remove).unwrap_or_default());
    host.progress.emit(Event::PhaseDone {
        phase: Phase::Reset,
        seconds: start.elapsed().as_secs_f64(),
    });
    match errors.is_empty() {
        true => Ok(()),
        false => Err(PhaseError::new(Phase::Reset, errors.join("; "))),
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
        let err = reset(world.host(), &paths, Some(&config))
            .await
            .unwrap_err();
        assert_eq!(err.phase, Phase::Reset);
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

    #[tokio::test]
    async fn a_stop_without_settings_still_stops_everything() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::cluster::config::Paths::new(dir.path());
        let world = World::new(Behaviour::default());
        stop(world.host(), &paths, None).await.unwrap();
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
        let config = fakes::config(dir.path());
        let world = World::new(Behaviour::default());
        world
            .enable(&config, crate::cluster::cancel::CancelSignal::new())
            .await
            .unwrap();
        stop(world.host(), &config.paths(), Some(&config))
            .await
            .unwrap();
        for client in API_CLIENTS {
            let stopped = format!("stop {}", client.name());
            world.journal.before(&stopped, "stop all");
        }
        // The in-process units, started once the API answered, stop before it.
        for unit in crate::controllers::NAMES {
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
        let config = fakes::config(dir.path());
        let world = World::new(Behaviour::default());
        world
            .enable(&config, crate::cluster::cancel::CancelSignal::new())
            .await
            .unwrap();
        world.processes_stop_all().await;
        for unit in crate::controllers::NAMES {
            world
                .journal
                .before(&format!("stop {unit}"), "stop kube-apiserver");
        }
    }
}

//! Everything the manager runs, as one kind (k0s's component manager is the
//! model): each component process and each in-process unit, with what it
//! needs running ([`Component::needs`], [`crate::controllers::Unit`]). The
//! start order and the stop's waves are derived from this one declaration
//! ([`crate::supervisor::order`]); no order is written down anywhere else.
//!
//! etcd ← the API server ← {controller-manager, scheduler, kubelet,
//! kube-proxy, every in-process unit}: the stop ends the API server's
//! clients together, then the API server, then etcd.

use futures::future::join_all;

use super::host::Processes;
use crate::components::{self, Component};
use crate::controllers;
use crate::supervisor::order::{self, Declared};

/// The declaration: every component, then every in-process unit.
pub fn declared() -> Vec<Declared> {
    let names = |needs: &[&dyn Component]| needs.iter().map(|c| c.name()).collect();
    let processes = components::ALL.iter().map(|c| Declared {
        name: c.name(),
        needs: names(c.needs()),
        grace: c.stop_grace(),
    });
    let units = controllers::UNITS.iter().map(|u| Declared {
        name: u.name,
        needs: names(u.needs),
        grace: controllers::STOP_GRACE,
    });
    processes.chain(units).collect()
}

/// The components in their start order: the order a rollout moves them
/// over in, each after what it talks to.
pub fn components() -> Vec<&'static dyn Component> {
    order::start_order(&declared())
        .into_iter()
        .filter_map(|d| components::ALL.into_iter().find(|c| c.name() == d.name))
        .collect()
}

/// The components that need `component` running: its clients.
pub fn clients_of(component: &dyn Component) -> Vec<&'static dyn Component> {
    components::ALL
        .into_iter()
        .filter(|c| c.needs().iter().any(|n| n.name() == component.name()))
        .collect()
}

/// How a stop ends the component processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM, and each its own grace to finish: the cluster's data is kept.
    Graceful,
    /// SIGKILL at once: the cluster's data is deleted next (a reset), so
    /// nothing a process would write or tell on its way out is of use, and
    /// a graceful end costs seconds (the API server's alone takes 1-2 s).
    /// The in-process units keep their grace: they write outside the state
    /// folder too (containerd's images).
    Discarding,
}

/// Stops everything declared, wave by wave (those of one wave together),
/// each with its own grace, or none for a process when `ending` says so. A
/// no-op for what does not run.
pub async fn stop(processes: &dyn Processes, ending: Ending) {
    let declared = declared();
    for wave in order::stop_waves(&declared) {
        join_all(wave.iter().map(|u| {
            let process = components::ALL.iter().any(|c| c.name() == u.name);
            let grace = match ending {
                Ending::Discarding if process => std::time::Duration::ZERO,
                _ => u.grace,
            };
            processes.stop(u.name, grace)
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(wave: &[&Declared]) -> Vec<&'static str> {
        wave.iter().map(|u| u.name).collect()
    }

    #[test]
    fn the_api_servers_clients_and_the_units_stop_together_then_it_then_etcd() {
        let declared = declared();
        let waves: Vec<Vec<&str>> = order::stop_waves(&declared)
            .iter()
            .map(|w| names(w))
            .collect();
        let clients: Vec<&str> = [
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        ]
        .into_iter()
        .chain(controllers::UNITS.map(|u| u.name))
        .collect();
        assert_eq!(waves, [clients, vec!["kube-apiserver"], vec!["etcd"]]);
    }

    #[test]
    fn the_components_start_each_after_what_it_talks_to() {
        let names: Vec<&str> = components().iter().map(|c| c.name()).collect();
        assert_eq!(names, crate::pki::usage::ORDER);
        let clients: Vec<&str> = clients_of(&components::ApiServer)
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(
            clients,
            [
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kube-proxy"
            ]
        );
    }
}

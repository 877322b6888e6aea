//! The in-process units of the daemon: controllers that serve the cluster
//! from inside the manager (no pod, no image). Each is a supervised task
//! ([`crate::supervisor::TaskSpec`]): started by the bootstrap phase once the
//! API answers and the cluster's own objects (RBAC, StorageClasses) are
//! applied, restarted with backoff when it fails, shown in `status` as kind
//! `task`, and stopped before the API server.
//!
//! One file per unit, each declaring itself as a [`Unit`] (its name, what it
//! needs running, how it is made): the same declaration as a component's,
//! from which the order is derived (`cluster::order`). [`UNITS`] is the
//! list the pipeline starts.

pub mod certs;
pub mod idle;
pub mod image_mirror;
pub mod image_sync;
pub mod services;
pub mod volumes;

use std::time::Duration;

use tokio::sync::watch;

use crate::components::Component;
use crate::images::ImageSync;
use crate::model::config::ClusterConfig;
use crate::model::settings::Settings;
use crate::supervisor::TaskSpec;

/// How long a controller has to return once asked to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// An in-process unit as it declares itself.
#[derive(Clone, Copy)]
pub struct Unit {
    /// Its name, as `status` shows it.
    pub name: &'static str,
    /// The components it needs running, as [`Component::needs`] says of a
    /// component: it starts after them and stops before them.
    pub needs: &'static [&'static dyn Component],
    /// Its task, for a cluster with this configuration.
    pub make: fn(&ClusterConfig, &Handles) -> TaskSpec,
}

/// Every in-process unit, in its start order.
pub const UNITS: [Unit; 6] = [
    volumes::UNIT,
    services::UNIT,
    image_mirror::UNIT,
    image_sync::UNIT,
    certs::UNIT,
    idle::UNIT,
];

/// What the units share with the daemon, made once by the engine and given
/// to every start of them: how the API reaches a running unit, and the
/// settings as the daemon saves them.
#[derive(Debug, Clone)]
pub struct Handles {
    pub images: ImageSync,
    pub settings: watch::Receiver<Settings>,
    /// The cluster's use and freeze ([`idle`]).
    pub idle: idle::Idle,
}

impl Handles {
    pub fn new(settings: watch::Receiver<Settings>) -> Handles {
        Handles {
            images: ImageSync::default(),
            settings,
            idle: idle::Idle::default(),
        }
    }
}

impl Default for Handles {
    /// Handles whose settings stay the defaults (the unit tests').
    fn default() -> Handles {
        Handles::new(watch::channel(Settings::default()).1)
    }
}

/// The in-process units of a cluster with `config`, in their start order.
pub fn units(config: &ClusterConfig, handles: &Handles) -> Vec<TaskSpec> {
    UNITS
        .iter()
        .map(|unit| (unit.make)(config, handles))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_is_made_under_its_declared_name() {
        let config = ClusterConfig::new("/s".into(), "/b".into());
        let names: Vec<String> = units(&config, &Handles::default())
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, UNITS.map(|u| u.name));
    }
}

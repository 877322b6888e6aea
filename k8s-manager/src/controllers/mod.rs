//! The in-process units of the daemon: controllers that serve the cluster
//! from inside the manager (no pod, no image). Each is a supervised task
//! ([`crate::supervisor::TaskSpec`]): started by the bootstrap phase once the
//! API answers and the cluster's own objects (RBAC, StorageClasses) are
//! applied, restarted with backoff when it fails, shown in `status` as kind
//! `task`, and stopped before the API server.
//!
//! One file per controller; [`units`] is the list the pipeline starts.

pub mod certs;
pub mod image_mirror;
pub mod image_sync;
pub mod services;
pub mod volumes;

use crate::images::ImageSync;

use std::time::Duration;

use tokio::sync::watch;

use crate::model::config::ClusterConfig;
use crate::model::settings::Settings;
use crate::supervisor::TaskSpec;

/// How long a controller has to return once asked to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The names of the units [`units`] makes, in their start order.
pub const NAMES: [&str; 5] = [
    volumes::NAME,
    services::NAME,
    image_mirror::NAME,
    image_sync::NAME,
    certs::NAME,
];

/// What the units share with the daemon, made once by the engine and given
/// to every start of them: how the API reaches a running unit, and the
/// settings as the daemon saves them.
#[derive(Debug, Clone)]
pub struct Handles {
    pub images: ImageSync,
    pub settings: watch::Receiver<Settings>,
}

impl Handles {
    pub fn new(settings: watch::Receiver<Settings>) -> Handles {
        Handles {
            images: ImageSync::default(),
            settings,
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
    vec![
        volumes::unit(config),
        services::unit(config),
        image_mirror::unit(config.containerd_socket.clone()),
        image_sync::unit(
            config.docker_socket.clone(),
            config.containerd_socket.clone(),
            handles.images.clone(),
        ),
        certs::unit(config, handles.settings.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_those_of_the_units() {
        let config = ClusterConfig::new("/s".into(), "/b".into());
        let names: Vec<String> = units(&config, &Handles::default())
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, NAMES);
    }
}

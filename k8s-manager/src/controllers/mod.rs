//! The in-process units of the daemon: controllers that serve the cluster
//! from inside the manager (no pod, no image). Each is a supervised task
//! ([`crate::supervisor::TaskSpec`]): started by the bootstrap phase once the
//! API answers and the cluster's own objects (RBAC, StorageClasses) are
//! applied, restarted with backoff when it fails, shown in `status` as kind
//! `task`, and stopped before the API server.
//!
//! One file per controller; [`units`] is the list the pipeline starts.

pub mod certs;
pub mod volumes;

use std::time::Duration;

use crate::cluster::config::ClusterConfig;
use crate::supervisor::TaskSpec;

/// How long a controller has to return once asked to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The names of the units [`units`] makes, in their start order.
pub const NAMES: [&str; 2] = [volumes::NAME, certs::NAME];

/// The in-process units of a cluster with `config`, in their start order.
pub fn units(config: &ClusterConfig) -> Vec<TaskSpec> {
    vec![volumes::unit(config), certs::unit(config)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_those_of_the_units() {
        let config = ClusterConfig::new("/s".into(), "/b".into());
        let names: Vec<String> = units(&config).into_iter().map(|u| u.name).collect();
        assert_eq!(names, NAMES);
    }
}

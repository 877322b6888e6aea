//! The image mirror as an in-process unit: the read-only registry of
//! [`crate::images::mirror`] on loopback, served from containerd's `k8s.io`
//! images, supervised as a task.

use std::path::PathBuf;

use super::Unit;
use crate::components::ApiServer;
use crate::images::mirror;
use crate::supervisor::TaskSpec;

/// The unit's name, as `status` shows it.
pub const NAME: &str = "image-mirror";

/// The unit as declared: started once the API answers, with the API
/// server's clients, and stopped with them.
pub const UNIT: Unit = Unit {
    name: NAME,
    needs: &[&ApiServer],
    make: |config, _| unit(config.containerd_socket.clone()),
};

/// The supervised unit: the endpoint, served from containerd at `socket`.
pub fn unit(containerd_socket: PathBuf) -> TaskSpec {
    TaskSpec::new(NAME, move |ctx| {
        let socket = containerd_socket.clone();
        async move { mirror::run(ctx, socket).await }
    })
}

//! The image sync as an in-process unit: every tagged Docker image kept in
//! containerd's `k8s.io` namespace by [`crate::images::sync`], supervised as
//! a task; the daemon's API reaches it through its [`ImageSync`] handle.

use std::path::PathBuf;

use super::Unit;
use crate::components::ApiServer;
use crate::images::{ImageSync, sync};
use crate::supervisor::TaskSpec;

/// The unit's name, as `status` shows it.
pub const NAME: &str = "image-sync";

/// The unit as declared: started once the API answers, with the API
/// server's clients, and stopped with them.
pub const UNIT: Unit = Unit {
    name: NAME,
    needs: &[&ApiServer],
    make: |config, handles| {
        unit(
            config.docker_socket.clone(),
            config.containerd_socket.clone(),
            handles.images.clone(),
        )
    },
};

/// The supervised unit for the engine at `docker_socket` and containerd at
/// `containerd_socket`, reachable through `handle`.
pub fn unit(docker_socket: PathBuf, containerd_socket: PathBuf, handle: ImageSync) -> TaskSpec {
    TaskSpec::new(NAME, move |ctx| {
        let (docker, containerd, handle) = (
            docker_socket.clone(),
            containerd_socket.clone(),
            handle.clone(),
        );
        async move { sync::run(ctx, docker, containerd, handle).await }
    })
}

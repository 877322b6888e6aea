//! Images built with Docker, usable by the cluster with no registry and no
//! command.
//!
//! dockerd 20.10 keeps its images in its own store, not in containerd, so
//! [`sync`] copies each tagged image into containerd's `k8s.io`
//! namespace under the name Kubernetes resolves ([`reference`]): the layers
//! containerd lacks, read in place from Docker's store ([`docker_store`])
//! into an OCI layout ([`oci_layout`]), or the whole image as `docker save`
//! gives it where the store cannot be read. It decides
//! what to do in a pure function ([`plan`]) from what the engine has
//! ([`docker`]) and what containerd has ([`containerd`]). The daemon's API
//! reaches it through a [`handle`]. The [`mirror`] serves those images to
//! containerd as a read-only registry on loopback, the first mirror of
//! `docker.io`, so that a pull (a `:latest` image's policy `Always`) works
//! offline. Both run as in-process units, which `controllers` declares and
//! wires (the logic is here, the lifecycle there).

pub mod containerd;
pub mod docker;
pub mod docker_store;
pub mod handle;
pub mod mirror;
pub mod oci_layout;
pub mod plan;
pub mod reference;
pub mod sync;

pub use handle::ImageSync;

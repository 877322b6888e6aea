//! The containerd side of the image sync and of the image endpoint:
//! containerd's own gRPC API (images and content services) in the `k8s.io`
//! namespace, and `ctr images import` fed from a stream for the import.
//!
//! Why the gRPC API and not `ctr` for the questions: a pass asks for every
//! image with its labels and reads each manifest to learn its config digest;
//! one `ctr` process per question costs ~20 ms of the 2-core VM each, the
//! gRPC call well under 1 ms. Why `ctr` for the import: importing is writing
//! every blob into the content store under a lease, creating the image and
//! unpacking its layers into the snapshotter — what `ctr images import`
//! does, at the version of the containerd it ships with. It reads the
//! archive from its standard input, so nothing is written to disk first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, Image, InfoRequest, ListImagesRequest,
    ReadContentRequest, UpdateImageRequest,
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tonic::Request;
use tonic::transport::Channel;

use super::plan::K8sImage;
use crate::runtime::RuntimeError;
use crate::runtime::cri::{call_request, unix_channel};
use crate::runtime::ctr::{Ctr, K8S_NAMESPACE};

/// The label the sync puts on every name it makes in `k8s.io`, with the
/// Docker image ID as value: those names, and only those, it may remove.
pub const SYNCED_LABEL: &str = "io.k8s-manager.image/docker-id";
/// How containerd finds the namespace of a request.
const NAMESPACE_HEADER: &str = "containerd-namespace";
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A manifest or a config is a few KiB; more means it is not one.
const SMALL_BLOB_MAX: i64 = 4 << 20;

/// containerd's API on one socket, in the `k8s.io` namespace.
#[derive(Debug, Clone)]
pub struct Containerd {
    socket: PathBuf,
    images: ImagesClient<Channel>,
    content: ContentClient<Channel>,
}

/// An image's name and the descriptor it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

fn in_namespace<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        NAMESPACE_HEADER,
        K8S_NAMESPACE.parse().expect("an ASCII namespace"),
    );
    request
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// This node's architecture as OCI names it.
pub fn node_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Containerd {
    pub async fn connect(socket: &Path) -> Result<Containerd, RuntimeError> {
        let channel = unix_channel(socket).await?;
        Ok(Containerd {
            socket: socket.to_path_buf(),
            images: ImagesClient::new(channel.clone()),
            content: ContentClient::new(channel),
        })
    }

    /// Every image of `k8s.io` with its labels and target.
    pub async fn list(
        &self,
    ) -> Result<Vec<(String, BTreeMap<String, String>, Target)>, RuntimeError> {
        let mut client = self.images.clone();
        let response = call_request(
            "Images.List",
            QUERY_TIMEOUT,
            in_namespace(ListImagesRequest { filters: vec![] }),
            |r| client.list(r),
        )
        .await?;
        Ok(response
            .images
            .into_iter()
            .filter_map(|image| {
                let target = image.target?;
                Some((
                    image.name,
                    image.labels.into_iter().collect(),
                    Target {
                        media_type: target.media_type,
                        digest: target.digest,
                        size: target.size,
                    },
                ))
            })
            .collect())
    }

    /// Every image of `k8s.io` as the sync sees it: its config digest for
    /// this node (read from its manifest; `cache` keeps what was read, by
    /// manifest digest, across passes) and whether the sync made it.
    pub async fn images(
        &self,
        cache: &mut HashMap<String, Option<String>>,
    ) -> Result<Vec<K8sImage>, RuntimeError> {
        let mut out = Vec::new();
        for (name, labels, target) in self.list().await? {
            let config = match cache.get(&target.digest) {
                Some(config) => config.clone(),
                None => {
                    let config = self.config_digest(&target).await.ok().flatten();
                    cache.insert(target.digest.clone(), config.clone());
                    config
                }
            };
            out.push(K8sImage {
                synced: labels.contains_key(SYNCED_LABEL),
                name,
                config,
            });
        }
        Ok(out)
    }

    /// The config digest of the image `target` points at, for this node's
    /// platform (through an index when it is one).
    pub async fn config_digest(&self, target: &Target) -> Result<Option<String>, RuntimeError> {
        let mut digest = target.digest.clone();
        for _ in 0..2 {
            let blob = self.read_small(&digest).await?;
            let Ok(manifest) = serde_json::from_slice::<Manifest>(&blob) else {
                return Ok(None);
            };
            if let Some(config) = manifest.config {
                return Ok(Some(config.digest));
            }
            let arch = node_architecture();
            let Some(found) = manifest.manifests.into_iter().find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            }) else {
                return Ok(None);
            };
            let _ = manifest.media_type;
            digest = found.digest;
        }
        Ok(None)
    }

    /// The size of a blob, or `None` when the content store does not have it.
    pub async fn blob_size(&self, digest: &str) -> Result<Option<i64>, RuntimeError> {
        let mut client = self.content.clone();
        let answer = call_request(
            "Content.Info",
            QUERY_TIMEOUT,
            in_namespace(InfoRequest {
                digest: digest.to_string(),
            }),
            |r| client.info(r),
        )
        .await;
        match answer {
            Ok(response) => Ok(response.info.map(|i| i.size)),
            Err(RuntimeError::Rpc {
                code: tonic::Code::NotFound,
                ..
            }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A blob's bytes as a stream of chunks, as containerd sends them.
    pub async fn read(
        &self,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, tonic::Status>> + use<>, RuntimeError> {
        let mut client = self.content.clone();
        let stream = call_request(
            "Content.Read",
            QUERY_TIMEOUT,
            in_namespace(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }),
            |r| client.read(r),
        )
        .await?;
        Ok(stream.map(|chunk| chunk.map(|c| Bytes::from(c.data))))
    }

    /// A small blob (a manifest, a config) whole.
    pub async fn read_small(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = Box::pin(self.read(digest).await?);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|status| RuntimeError::Rpc {
                call: "Content.Read",
                code: status.code(),
                message: status.message().to_string(),
            })?;
            out.extend_from_slice(&chunk);
            if out.len() as i64 > SMALL_BLOB_MAX {
                return Err(RuntimeError::Image {
                    reference: digest.to_string(),
                    reason: format!("more than {SMALL_BLOB_MAX} bytes: not a manifest"),
                });
            }
        }
        Ok(out)
    }

    /// Sets our label on `name` (the other labels stay).
    pub async fn mark_synced(&self, name: &str, docker_id: &str) -> Result<(), RuntimeError> {
        let mut client = self.images.clone();
        let label = format!("labels.{SYNCED_LABEL}");
        let request = UpdateImageRequest {
            image: Some(Image {
                name: name.to_string(),
                labels: HashMap::from([(SYNCED_LABEL.to_string(), docker_id.to_string())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec![label] }),
            ..Default::default()
        };
        call_request("Images.Update", QUERY_TIMEOUT, in_namespace(request), |r| {
            client.update(r)
        })
        .await?;
        Ok(())
    }

    /// Makes `name` point where `source` points, marked as ours.
    pub async fn tag(&self, source: &str, name: &str, docker_id: &str) -> Result<(), RuntimeError> {
        let found = self.list().await?;
        let Some((_, _, target)) = found.into_iter().find(|(n, _, _)| n == source) else {
            return Err(RuntimeError::Image {
                reference: source.to_string(),
                reason: "gone from k8s.io before it could be tagged".into(),
            });
        };
        let image = Image {
            name: name.to_string(),
            labels: HashMap::from([(SYNCED_LABEL.to_string(), docker_id.to_string())]),
            target: Some(containerd_client::types::Descriptor {
                media_type: target.media_type,
                digest: target.digest,
                size: target.size,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut client = self.images.clone();
        let created = call_request(
            "Images.Create",
            QUERY_TIMEOUT,
            in_namespace(CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }),
            |r| client.create(r),
        )
        .await;
        match created {
            Ok(_) => Ok(()),
            // Another image had the name: it is replaced, as `ctr tag --force` does.
            Err(RuntimeError::Rpc {
                code: tonic::Code::AlreadyExists,
                ..
            }) => {
                let mut client = self.images.clone();
                let request = UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    ..Default::default()
                };
                call_request("Images.Update", QUERY_TIMEOUT, in_namespace(request), |r| {
                    client.update(r)
                })
                .await?;
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Removes the name `name` (containerd collects what nothing refers to).
    pub async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let mut client = self.images.clone();
        let answer = call_request(
            "Images.Delete",
            QUERY_TIMEOUT,
            in_namespace(DeleteImageRequest {
                name: name.to_string(),
                sync: false,
                ..Default::default()
            }),
            |r| client.delete(r),
        )
        .await;
        match answer {
            Ok(_)
            | Err(RuntimeError::Rpc {
                code: tonic::Code::NotFound,
                ..
            }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Imports a docker-archive (or OCI) tar read from `archive`
    /// ([`Ctr::import_stream`]), unpacked for this node's platform.
    pub async fn import<S, E>(&self, archive: S, limit: Duration) -> Result<(), RuntimeError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let archive = archive.map(|chunk| chunk.map_err(|e| format!("from Docker: {e}")));
        Ctr::new(&self.socket).import_stream(archive, limit).await
    }
}

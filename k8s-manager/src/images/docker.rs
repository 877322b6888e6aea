//! The Docker engine's side of the image sync (bollard over the unix
//! socket of the setting `docker.socket`): its tagged images, its image
//! events, and an image as a `docker save` stream.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, ListImagesOptions};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::docker_store::DockerStore;
use super::plan::DockerImage;

/// How long one request to the engine may take (an export streams for
/// longer: its chunks keep it alive).
const REQUEST_TIMEOUT_SECS: u64 = 600;

/// The image events after which what Docker has may have changed (a
/// `docker build` ends in a `tag`).
pub const IMAGE_ACTIONS: [&str; 6] = ["tag", "untag", "load", "import", "pull", "delete"];

/// A connection to the Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

/// A failure to speak with the engine, said in one line.
pub type EngineError = String;

fn said(err: bollard::errors::Error) -> EngineError {
    crate::error::chain(&err)
}

impl Engine {
    /// Connects to the engine at `socket` and agrees on an API version (the
    /// VM's dockerd 20.10 speaks 1.41, older than bollard's default).
    pub async fn connect(socket: &Path) -> Result<Engine, EngineError> {
        if !socket.exists() {
            return Err(format!("no Docker engine at {}", socket.display()));
        }
        let path = socket.to_str().ok_or("the socket path is not UTF-8")?;
        let docker =
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                .map_err(said)?
                .negotiate_version()
                .await
                .map_err(|e| {
                    format!(
                        "the Docker engine at {} does not answer: {}",
                        socket.display(),
                        said(e)
                    )
                })?;
        Ok(Engine { docker })
    }

    /// The engine's version, for the unit's detail line.
    pub async fn version(&self) -> Result<String, EngineError> {
        let version = self.docker.version().await.map_err(said)?;
        Ok(version.version.unwrap_or_default())
    }

    /// The engine's image store, to read in place ([`DockerStore`]): its
    /// root folder and storage driver, as the engine says them.
    pub async fn store(&self) -> Result<DockerStore, EngineError> {
        let info = self.docker.info().await.map_err(said)?;
        let root = info
            .docker_root_dir
            .ok_or("the Docker engine names no root folder")?;
        DockerStore::new(Path::new(&root), info.driver.as_deref().unwrap_or_default())
    }

    /// Every tagged image.
    pub async fn images(&self) -> Result<Vec<DockerImage>, EngineError> {
        let filters = HashMap::from([("dangling".to_string(), vec!["false".to_string()])]);
        let options = ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let listed = self.docker.list_images(Some(options)).await.map_err(said)?;
        Ok(listed
            .into_iter()
            .map(|image| DockerImage {
                id: image.id,
                tags: image
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                size: image.size.max(0) as u64,
            })
            .filter(|image| !image.tags.is_empty())
            .collect())
    }

    /// Image events from now on; each item is the action (`tag`, ...).
    pub fn image_events(&self) -> impl Stream<Item = Result<String, EngineError>> + use<> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["image".to_string()]),
            (
                "event".to_string(),
                IMAGE_ACTIONS.iter().map(|a| a.to_string()).collect(),
            ),
        ]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .events(Some(options))
            .map(|event| event.map(|e| e.action.unwrap_or_default()).map_err(said))
    }

    /// `docker save <reference>`: a docker-archive tar, as a stream.
    pub fn export(
        &self,
        reference: &str,
    ) -> impl Stream<Item = Result<Bytes, EngineError>> + use<> {
        self.docker
            .export_image(reference)
            .map(|chunk| chunk.map_err(said))
    }
}

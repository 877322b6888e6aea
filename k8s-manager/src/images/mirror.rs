//! A read-only OCI distribution endpoint on loopback, served from
//! containerd's `k8s.io` images and content: the first mirror of
//! `docker.io` in containerd's registry configuration (`vm/prepare-vm.sh`
//! writes `/etc/containerd/certs.d/docker.io/hosts.toml`, this endpoint
//! first, then the real registry).
//!
//! Why: the pull policy of a `:latest` image defaults to `Always`, so the
//! kubelet asks containerd to pull even an image the sync put there, and
//! offline that pull fails. With this endpoint containerd resolves the tag
//! here, finds the manifest's blobs already in its content store, and the
//! pull succeeds without a registry; for an image we do not have it answers
//! 404 and containerd goes on to Docker Hub (as it does when the daemon is
//! down and nothing listens).
//!
//! Only what the pull needs: `GET /v2/`, `GET|HEAD /v2/<name>/manifests/
//! <tag|digest>`, `GET|HEAD /v2/<name>/blobs/<digest>`, for repositories of
//! which `k8s.io` holds an image (`docker.io/<name>:<any tag>`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::containerd::{Containerd, Target};
use super::reference::{docker_io_repository, split_tag};
use crate::supervisor::TaskContext;

/// Where the endpoint listens. A port in no common use, below the
/// ephemeral range and outside the NodePort range; `vm/prepare-vm.sh`
/// has the same default (`K8S_MANAGER_IMAGE_MIRROR`).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:17431";
/// The environment variable that moves it (for the daemon and prepare-vm).
pub const ADDRESS_ENV: &str = "K8S_MANAGER_IMAGE_MIRROR";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;
/// A blob's bytes as they come.
pub type BlobStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// The address to listen on: [`ADDRESS_ENV`] when set, else [`DEFAULT_ADDRESS`].
pub fn address() -> Result<SocketAddr, String> {
    let text = std::env::var(ADDRESS_ENV).unwrap_or_else(|_| DEFAULT_ADDRESS.into());
    parse_address(&text)
}

/// A loopback `address:port`: the endpoint serves every `k8s.io` image
/// without asking who, so it must never be reachable from the network.
fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("{ADDRESS_ENV}={text}: not an address:port"))?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "{ADDRESS_ENV}={text}: the image endpoint listens on loopback only (127.0.0.1:<port>)"
        ));
    }
    Ok(address)
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// A manifest of the repository `repository` (`docker.io/library/x`)
    /// by tag or digest.
    Manifest {
        repository: String,
        reference: String,
    },
    Blob {
        repository: String,
        digest: String,
    },
    NotFound,
    MethodNotAllowed,
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

fn is_tag(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The route of a request (pure).
pub fn route(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            Route::Base
        } else {
            Route::NotFound
        };
    };
    let read = method == Method::GET || method == Method::HEAD;
    if rest.is_empty() {
        return if read {
            Route::Base
        } else {
            Route::MethodNotAllowed
        };
    }
    let parsed = if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        docker_io_repository(name)
            .filter(|_| is_tag(reference) || is_digest(reference))
            .map(|repository| Route::Manifest {
                repository,
                reference: reference.to_string(),
            })
    } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        docker_io_repository(name)
            .filter(|_| is_digest(digest))
            .map(|repository| Route::Blob {
                repository,
                digest: digest.to_string(),
            })
    } else {
        None
    };
    match parsed {
        Some(_) if !read => Route::MethodNotAllowed,
        Some(route) => route,
        None => Route::NotFound,
    }
}

/// Where the endpoint's answers come from: containerd, or a fake in tests.
pub trait Source: Send + Sync + 'static {
    /// Every image of `k8s.io`: its full name and its target.
    fn images(&self) -> impl Future<Output = Result<Vec<(String, Target)>, String>> + Send;
    /// The size of a blob, if the content store has it.
    fn size(&self, digest: &str) -> impl Future<Output = Result<Option<i64>, String>> + Send;
    /// A blob's bytes.
    fn read(&self, digest: &str) -> impl Future<Output = Result<BlobStream, String>> + Send;
}

impl Source for Containerd {
    async fn images(&self) -> Result<Vec<(String, Target)>, String> {
        let listed = self.list().await.map_err(|e| crate::error::chain(&e))?;
        Ok(listed
            .into_iter()
            .map(|(name, _, target)| (name, target))
            .collect())
    }

    async fn size(&self, digest: &str) -> Result<Option<i64>, String> {
        self.blob_size(digest)
            .await
            .map_err(|e| crate::error::chain(&e))
    }

    async fn read(&self, digest: &str) -> Result<BlobStream, String> {
        let stream = Containerd::read(self, digest)
            .await
            .map_err(|e| crate::error::chain(&e))?;
        Ok(Box::pin(
            stream.map(|c| c.map_err(|s| s.message().to_string())),
        ))
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .expect("valid response")
}

fn registry_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("valid response")
}

/// The answer to `route` from `source` (`head`: headers only).
pub async fn respond<S: Source>(source: &S, route: Route, head: bool) -> Response<Body> {
    let (repository, digest, media_type) = match route {
        Route::Base => {
            let mut response = empty(StatusCode::OK);
            response.headers_mut().insert(
                "docker-distribution-api-version",
                "registry/2.0".parse().expect("header"),
            );
            return response;
        }
        Route::NotFound => return registry_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found"),
        Route::MethodNotAllowed => {
            return registry_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "this registry is read-only",
            );
        }
        Route::Manifest {
            repository,
            reference,
        } => {
            let images = match source.images().await {
                Ok(images) => images,
                Err(err) => {
                    return registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", &err);
                }
            };
            let ours = images
                .iter()
                .filter(|(name, _)| split_tag(name).0 == repository);
            let found = if is_digest(&reference) {
                let mut ours = ours.peekable();
                if ours.peek().is_none() {
                    None
                } else {
                    // A platform manifest of an index, or an image's own.
                    let media = ours
                        .find(|(_, t)| t.digest == reference)
                        .map(|(_, t)| t.media_type.clone());
                    Some((reference.clone(), media))
                }
            } else {
                let name = format!("{repository}:{reference}");
                ours.into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| (t.digest.clone(), Some(t.media_type.clone())))
            };
            let Some((digest, media)) = found else {
                return registry_error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                );
            };
            (repository, digest, Some(media.unwrap_or_default()))
        }
        Route::Blob { repository, digest } => (repository, digest, None),
    };
    if media_type.is_none() {
        let images = match source.images().await {
            Ok(images) => images,
            Err(err) => {
                return registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", &err);
            }
        };
        if !images
            .iter()
            .any(|(name, _)| split_tag(name).0 == repository)
        {
            return registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository unknown");
        }
    }
    let size = match source.size(&digest).await {
        Ok(Some(size)) => size,
        Ok(None) => return registry_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown"),
        Err(err) => return registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", &err),
    };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header("content-length", size)
        .header("docker-content-digest", &digest);
    // A manifest asked for by digest whose type no image target says: read
    // it (it is small) for its own mediaType.
    let mut body_bytes = None;
    match media_type.as_deref() {
        None => builder = builder.header("content-type", "application/octet-stream"),
        Some("") => {
            let bytes = match read_all(source, &digest).await {
                Ok(bytes) => bytes,
                Err(err) => {
                    return registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", &err);
                }
            };
            let media = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| OCI_MANIFEST.to_string());
            builder = builder.header("content-type", media);
            body_bytes = Some(bytes);
        }
        Some(media) => builder = builder.header("content-type", media),
    }
    if head {
        return builder
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .expect("valid response");
    }
    if let Some(bytes) = body_bytes {
        return builder
            .body(
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("valid response");
    }
    match source.read(&digest).await {
        Ok(stream) => {
            let frames = stream.map(|chunk| chunk.map(Frame::data).map_err(std::io::Error::other));
            builder
                .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
                .expect("valid response")
        }
        Err(err) => registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", &err),
    }
}

async fn read_all<S: Source>(source: &S, digest: &str) -> Result<Vec<u8>, String> {
    let mut stream = source.read(digest).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
        if out.len() > 4 << 20 {
            return Err("more than 4 MiB: not a manifest".into());
        }
    }
    Ok(out)
}

/// Serves `source` on `listener` until the future is dropped.
pub async fn serve<S: Source>(listener: TcpListener, source: Arc<S>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let source = source.clone();
                async move {
                    let head = req.method() == Method::HEAD;
                    let route = route(req.method(), req.uri().path());
                    Ok::<_, Infallible>(respond(source.as_ref(), route, head).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!("image endpoint connection: {err}");
            }
        });
    }
}

/// One run of the unit (which `controllers::image_mirror` supervises): the
/// endpoint, served from containerd at `socket` until asked to stop.
pub async fn run(mut ctx: TaskContext, socket: PathBuf) -> Result<(), String> {
    let address = address()?;
    let containerd = Containerd::connect(&socket)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    ctx.ready();
    ctx.detail(Some(format!(
        "serving k8s.io images to containerd as a docker.io mirror on http://{address}"
    )));
    tokio::select! {
        _ = ctx.stopping() => Ok(()),
        served = serve(listener, Arc::new(containerd)) => served.map_err(|e| format!("{address}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const MEDIA: &str = "application/vnd.docker.distribution.manifest.v2+json";

    #[test]
    fn only_a_loopback_address_is_taken() {
        assert_eq!(
            parse_address("127.0.0.1:17431").unwrap().to_string(),
            "127.0.0.1:17431"
        );
        for refused in ["0.0.0.0:17431", "192.0.2.7:17431", "localhost"] {
            let err = parse_address(refused).unwrap_err();
            assert!(err.contains(refused), "{err}");
        }
    }

    #[test]
    fn prepare_vm_points_containerd_at_the_same_address() {
        let script = include_str!("../../../vm/prepare-vm.sh");
        let default = format!("${{{ADDRESS_ENV}:-{DEFAULT_ADDRESS}}}");
        assert!(
            script.contains(&default),
            "vm/prepare-vm.sh should default to {default}"
        );
    }

    #[test]
    fn routes_are_those_of_a_pull() {
        let get = Method::GET;
        assert_eq!(route(&get, "/v2/"), Route::Base);
        assert_eq!(
            route(&get, "/v2/library/app/manifests/latest"),
            Route::Manifest {
                repository: "docker.io/library/app".into(),
                reference: "latest".into()
            }
        );
        assert_eq!(
            route(&Method::HEAD, &format!("/v2/user/app/manifests/{D1}")),
            Route::Manifest {
                repository: "docker.io/user/app".into(),
                reference: D1.into()
            }
        );
        assert_eq!(
            route(&get, &format!("/v2/library/app/blobs/{D2}")),
            Route::Blob {
                repository: "docker.io/library/app".into(),
                digest: D2.into()
            }
        );
        assert_eq!(
            route(&Method::PUT, "/v2/library/app/manifests/latest"),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route(&Method::POST, "/v2/library/app/blobs/uploads/"),
            Route::NotFound
        );
        for bad in [
            "/v2/library/app/blobs/sha256:xyz",
            "/v2/library/app/manifests/",
            "/v2/../x/manifests/latest",
            "/v2/library/app/tags/list",
            "/other",
        ] {
            assert_eq!(route(&get, bad), Route::NotFound, "{bad}");
        }
    }

    struct Fake {
        images: Vec<(String, Target)>,
        blobs: HashMap<String, Vec<u8>>,
    }

    impl Source for Fake {
        async fn images(&self) -> Result<Vec<(String, Target)>, String> {
            Ok(self.images.clone())
        }
        async fn size(&self, digest: &str) -> Result<Option<i64>, String> {
            Ok(self.blobs.get(digest).map(|b| b.len() as i64))
        }
        async fn read(&self, digest: &str) -> Result<BlobStream, String> {
            let bytes = self.blobs.get(digest).cloned().ok_or("gone")?;
            Ok(Box::pin(futures::stream::iter(vec![Ok(Bytes::from(
                bytes,
            ))])))
        }
    }

    fn fake() -> Fake {
        Fake {
            images: vec![(
                "docker.io/library/app:latest".into(),
                Target {
                    media_type: MEDIA.into(),
                    digest: D1.into(),
                    size: 7,
                },
            )],
            blobs: HashMap::from([
                (D1.to_string(), b"{\"a\":1}".to_vec()),
                (D2.to_string(), b"layer".to_vec()),
            ]),
        }
    }

    async fn answer(method: Method, path: &str) -> (StatusCode, HashMap<String, String>, Vec<u8>) {
        let head = method == Method::HEAD;
        let response = respond(&fake(), route(&method, path), head).await;
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn a_tag_resolves_to_its_manifest_with_type_and_digest() {
        let (status, headers, body) = answer(Method::GET, "/v2/library/app/manifests/latest").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], MEDIA);
        assert_eq!(headers["docker-content-digest"], D1);
        assert_eq!(headers["content-length"], "7");
        assert_eq!(body, b"{\"a\":1}");
        let (status, headers, body) =
            answer(Method::HEAD, "/v2/library/app/manifests/latest").await;
        assert_eq!(
            (status, headers["content-length"].as_str()),
            (StatusCode::OK, "7")
        );
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn blobs_of_a_known_repository_are_served() {
        let (status, _, body) = answer(Method::GET, &format!("/v2/library/app/blobs/{D2}")).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"layer"[..]));
        let (status, headers, _) =
            answer(Method::GET, &format!("/v2/library/app/manifests/{D1}")).await;
        assert_eq!(
            (status, headers["content-type"].as_str()),
            (StatusCode::OK, MEDIA)
        );
    }

    #[tokio::test]
    async fn what_k8s_io_does_not_have_is_404_so_containerd_asks_the_registry() {
        for path in [
            "/v2/library/app/manifests/other".to_string(),
            "/v2/library/redis/manifests/latest".to_string(),
            format!("/v2/library/redis/blobs/{D2}"),
            format!("/v2/library/redis/manifests/{D1}"),
            format!("/v2/library/app/blobs/sha256:{}", "3".repeat(64)),
        ] {
            let (status, _, body) = answer(Method::GET, &path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                String::from_utf8(body).unwrap().contains("errors"),
                "{path}"
            );
        }
        let (status, _, _) = answer(Method::GET, "/v2/").await;
        assert_eq!(status, StatusCode::OK);
    }
}

//! containerd's CRI v1 API, spoken over its unix socket with tonic.
//!
//! The manager needs few calls from it: preflight asks whether containerd
//! answers and has CRI ([`Cri::version`], [`Cri::status`]); the image phase
//! asks what containerd uses as its sandbox image and whether an image is
//! there; `disable` and `reset` remove every pod sandbox, which is what makes
//! containerd run the CNI DEL of each pod (veth, IP address, iptables rules)
//! and remove its containers. Every call has its own deadline, sent to
//! containerd as the gRPC timeout and enforced here as well, so that a wedged
//! containerd gives an error instead of a hang.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListPodSandboxRequest, PodSandboxState, RemovePodSandboxRequest,
    StatusRequest, StatusResponse, StopPodSandboxRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

use super::RuntimeError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries answer from containerd's memory: seconds mean it is wedged.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Stopping a sandbox kills its containers and runs the CNI DEL chain; on a
/// loaded 2-core VM with a container ignoring SIGTERM this is the slow call.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime's name and version, as preflight shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub runtime_name: String,
    pub runtime_version: String,
    /// The CRI version the runtime speaks (`v1`).
    pub runtime_api_version: String,
}

/// One of the runtime's conditions (RuntimeReady, NetworkReady).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// What containerd's CRI says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriStatus {
    pub runtime: Condition,
    /// Not ready while containerd has no CNI configuration it can load.
    pub network: Condition,
    /// The image containerd starts every pod sandbox from (`sandbox_image` of
    /// its CRI configuration); the bundle's pause image must be there under
    /// this name, or containerd tries to pull it.
    pub sandbox_image: String,
}

/// A pod sandbox as CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub ready: bool,
}

/// A connection to containerd's CRI. Cheap to clone: clones share the
/// connection.
#[derive(Debug, Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to containerd's socket (`/run/containerd/containerd.sock` on
    /// a standard install).
    pub async fn connect(socket: &Path) -> Result<Cri, RuntimeError> {
        let channel = unix_channel(socket).await?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// The runtime service client itself, for the CRI calls this wrapper does
    /// not cover (tests create pod sandboxes with it, as kubelet would).
    pub fn runtime_service(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// Asks the runtime for its version; answers only if CRI is enabled.
    pub async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        let mut client = self.runtime.clone();
        let response = call(
            "Version",
            QUERY_TIMEOUT,
            VersionRequest {
                version: "v1".into(),
            },
            |r| client.version(r),
        )
        .await?;
        Ok(RuntimeVersion {
            runtime_name: response.runtime_name,
            runtime_version: response.runtime_version,
            runtime_api_version: response.runtime_api_version,
        })
    }

    /// The runtime's conditions and the sandbox image it uses.
    pub async fn status(&self) -> Result<CriStatus, RuntimeError> {
        let mut client = self.runtime.clone();
        // The sandbox image is only in the verbose information.
        let response = call(
            "Status",
            QUERY_TIMEOUT,
            StatusRequest { verbose: true },
            |r| client.status(r),
        )
        .await?;
        parse_status(response)
    }

    /// The image ID (its config digest) of `reference`, if containerd's CRI
    /// knows that reference.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        let mut client = self.images.clone();
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let response = call("ImageStatus", QUERY_TIMEOUT, request, |r| {
            client.image_status(r)
        })
        .await?;
        // CRI answers an unknown image with an empty status, not an error.
        Ok(response.image.map(|image| image.id))
    }

    pub async fn image_present(&self, reference: &str) -> Result<bool, RuntimeError> {
        Ok(self.image_id(reference).await?.is_some())
    }

    /// The image IDs (config digests) the containers CRI knows were made
    /// from, running or not: an image one of them uses must stay.
    pub async fn images_in_use(&self) -> Result<std::collections::BTreeSet<String>, RuntimeError> {
        let mut client = self.runtime.clone();
        let response = call(
            "ListContainers",
            QUERY_TIMEOUT,
            k8s_cri::v1::ListContainersRequest { filter: None },
            |r| client.list_containers(r),
        )
        .await?;
        Ok(response
            .containers
            .into_iter()
            .map(|c| c.image_ref)
            .filter(|r| !r.is_empty())
            .collect())
    }

    /// Every pod sandbox containerd's CRI knows, ready or not.
    pub async fn list_pods(&self) -> Result<Vec<PodSummary>, RuntimeError> {
        let mut client = self.runtime.clone();
        let response = call(
            "ListPodSandbox",
            QUERY_TIMEOUT,
            ListPodSandboxRequest { filter: None },
            |r| client.list_pod_sandbox(r),
        )
        .await?;
        Ok(response
            .items
            .into_iter()
            .map(|pod| {
                let meta = pod.metadata.unwrap_or_default();
                PodSummary {
                    ready: pod.state == PodSandboxState::SandboxReady as i32,
                    id: pod.id,
                    name: meta.name,
                    namespace: meta.namespace,
                }
            })
            .collect())
    }

    /// Stops and removes every pod sandbox, all at once, and returns how many
    /// there were. Stopping a sandbox makes containerd run the CNI DEL of the
    /// pod (its veth, IP address and iptables rules go) and kill its
    /// containers; removing it removes them. kubelet must be stopped first, or
    /// it recreates the pods, and the CNI configuration must still be in
    /// place, or containerd cannot run the DEL and the stop fails. Every pod
    /// is tried; the first failure is returned after all have been.
    pub async fn remove_all_pods(&self) -> Result<usize, RuntimeError> {
        let pods = self.list_pods().await?;
        let mut removals = JoinSet::new();
        for pod in &pods {
            let client = self.runtime.clone();
            let (id, label) = (pod.id.clone(), pod_label(pod));
            removals.spawn(async move {
                remove_pod(client, id)
                    .await
                    .map_err(|err| RuntimeError::Pod {
                        pod: label,
                        source: Box::new(err),
                    })
            });
        }
        let mut first_error = None;
        while let Some(result) = removals.join_next().await {
            let result =
                result.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(pods.len()),
        }
    }
}

/// A gRPC channel to a unix socket (containerd's), connected within
/// [`CONNECT_TIMEOUT`]; an error names the socket and why.
pub(crate) async fn unix_channel(socket: &Path) -> Result<Channel, RuntimeError> {
    let path = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    // tonic wants a URI; the connector ignores it and dials the socket.
    let endpoint =
        Endpoint::from_static("http://containerd.invalid").connect_timeout(CONNECT_TIMEOUT);
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect_with_connector(connector)).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(err)) => Err(RuntimeError::Connect {
            socket: socket.to_path_buf(),
            reason: error_chain(&err),
        }),
        Err(_) => Err(RuntimeError::Connect {
            socket: socket.to_path_buf(),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

async fn remove_pod(
    mut client: RuntimeServiceClient<Channel>,
    id: String,
) -> Result<(), RuntimeError> {
    let stop = StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    };
    call("StopPodSandbox", POD_TIMEOUT, stop, |r| {
        client.stop_pod_sandbox(r)
    })
    .await?;
    let remove = RemovePodSandboxRequest { pod_sandbox_id: id };
    call("RemovePodSandbox", POD_TIMEOUT, remove, |r| {
        client.remove_pod_sandbox(r)
    })
    .await?;
    Ok(())
}

/// `namespace/name (id prefix)`, how a person recognises a pod in an error.
fn pod_label(pod: &PodSummary) -> String {
    let short_id = pod.id.get(..12).unwrap_or(&pod.id);
    format!("{}/{} ({short_id})", pod.namespace, pod.name)
}

/// Sends one request with `limit` as its gRPC deadline and waits at most as
/// long for the answer.
async fn call<Req, Resp, F, Fut>(
    what: &'static str,
    limit: Duration,
    message: Req,
    send: F,
) -> Result<Resp, RuntimeError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    call_request(what, limit, Request::new(message), send).await
}

/// [`call`] with a request made by the caller (containerd's own API wants
/// its namespace in the request's metadata).
pub(crate) async fn call_request<Req, Resp, F, Fut>(
    what: &'static str,
    limit: Duration,
    mut request: Request<Req>,
    send: F,
) -> Result<Resp, RuntimeError>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    request.set_timeout(limit);
    match tokio::time::timeout(limit, send(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            Err(RuntimeError::Timeout {
                call: what,
                after: limit,
            })
        }
        // What containerd answers when its CRI plugin is not loaded.
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            Err(RuntimeError::NoCri {
                call: what,
                message: status_message(&status),
            })
        }
        Ok(Err(status)) => Err(RuntimeError::Rpc {
            call: what,
            code: status.code(),
            message: status_message(&status),
        }),
        Err(_) => Err(RuntimeError::Timeout {
            call: what,
            after: limit,
        }),
    }
}

/// A status's message, or, for transport failures that carry none, the chain
/// of causes.
fn status_message(status: &Status) -> String {
    if !status.message().is_empty() {
        return status.message().to_string();
    }
    match std::error::Error::source(status) {
        Some(source) => error_chain(source),
        None => format!("{:?}", status.code()),
    }
}

/// An error and its causes on one line: tonic's transport errors say little
/// at the top ("transport error") and the reason further down.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        cause = next.source();
    }
    parts.join(": ")
}

/// Reads the runtime conditions and the sandbox image out of a verbose Status
/// answer.
pub fn parse_status(response: StatusResponse) -> Result<CriStatus, RuntimeError> {
    let conditions = response.status.map(|s| s.conditions).unwrap_or_default();
    let condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == kind)
            .map(|c| Condition {
                ready: c.status,
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .unwrap_or_else(|| Condition {
                ready: false,
                reason: "NotReported".into(),
                message: format!("the runtime does not report {kind}"),
            })
    };
    Ok(CriStatus {
        runtime: condition("RuntimeReady"),
        network: condition("NetworkReady"),
        sandbox_image: sandbox_image_from_info(&response.info)?,
    })
}

/// containerd 1.6 and 1.7 put their whole CRI configuration, as JSON, under
/// the `config` key of the verbose status; the sandbox image is its
/// `sandboxImage`.
pub fn sandbox_image_from_info(info: &HashMap<String, String>) -> Result<String, RuntimeError> {
    let config = info.get("config").ok_or_else(|| {
        RuntimeError::BadStatus(
            "the verbose status carries no `config`: is this containerd 1.6 or 1.7 with its CRI plugin?".into(),
        )
    })?;
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|err| RuntimeError::BadStatus(format!("its `config` is not JSON: {err}")))?;
    match config.get("sandboxImage").and_then(|v| v.as_str()) {
        Some(image) if !image.is_empty() => Ok(image.to_string()),
        _ => Err(RuntimeError::BadStatus(
            "its `config` names no sandboxImage (containerd 1.6/1.7 always do; a newer containerd moved it)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{RuntimeCondition, RuntimeStatus};

    fn info_with_config(config: &str) -> HashMap<String, String> {
        HashMap::from([
            ("config".to_string(), config.to_string()),
            ("golang".to_string(), "\"go1.19.8\"".to_string()),
        ])
    }

    #[test]
    fn sandbox_image_read_from_containerd_config() {
        // Shape of containerd 1.6's verbose status (abridged).
        let info = info_with_config(
            r#"{"containerd":{"snapshotter":"overlayfs","defaultRuntimeName":"runc"},
                "cni":{"binDir":"/usr/lib/cni","confDir":"/etc/cni/net.d","maxConfNum":1},
                "enableSelinux":false,"sandboxImage":"registry.k8s.io/pause:3.10.1",
                "restrictOOMScoreAdj":true}"#,
        );
        assert_eq!(
            sandbox_image_from_info(&info).unwrap(),
            "registry.k8s.io/pause:3.10.1"
        );
    }

    #[test]
    fn missing_or_broken_config_is_an_error_that_says_why() {
        let err = sandbox_image_from_info(&HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `config`"), "{err}");
        let err = sandbox_image_from_info(&info_with_config("{not json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not JSON"), "{err}");
        let err = sandbox_image_from_info(&info_with_config(r#"{"sandboxImage":""}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no sandboxImage"), "{err}");
    }

    #[test]
    fn status_conditions_are_read_and_missing_ones_are_not_ready() {
        let response = StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NetworkPluginNotReady".into(),
                        message: "cni config uninitialized".into(),
                    },
                ],
            }),
            info: info_with_config(r#"{"sandboxImage":"k8s.gcr.io/pause:3.6"}"#),
            ..Default::default()
        };
        let status = parse_status(response).unwrap();
        assert!(status.runtime.ready);
        assert!(!status.network.ready);
        assert_eq!(status.network.reason, "NetworkPluginNotReady");
        assert_eq!(status.sandbox_image, "k8s.gcr.io/pause:3.6");

        let bare = StatusResponse {
            info: info_with_config(r#"{"sandboxImage":"p:1"}"#),
            ..Default::default()
        };
        let status = parse_status(bare).unwrap();
        assert!(!status.runtime.ready);
        assert_eq!(status.runtime.reason, "NotReported");
    }

    #[test]
    fn pod_label_names_namespace_name_and_short_id() {
        let pod = PodSummary {
            id: "0123456789abcdef0123".into(),
            name: "coredns-1".into(),
            namespace: "kube-system".into(),
            ready: true,
        };
        assert_eq!(pod_label(&pod), "kube-system/coredns-1 (0123456789ab)");
    }

    #[tokio::test]
    async fn call_errors_say_what_went_wrong() {
        let answer = |status: Status| async move { Err::<Response<()>, _>(status) };
        let limit = Duration::from_secs(5);
        let err = call("Version", limit, (), |_| {
            answer(Status::unimplemented(
                "unknown service runtime.v1.RuntimeService",
            ))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("does not serve CRI v1") && err.contains("unknown service"),
            "{err}"
        );
        let err = call("Status", limit, (), |_| {
            answer(Status::deadline_exceeded(""))
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, RuntimeError::Timeout { call: "Status", .. }),
            "{err}"
        );
        let err = call("Status", limit, (), |_| {
            answer(Status::unavailable("connection refused"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "containerd CRI Status failed (Unavailable): connection refused"
        );

        let silent = |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Status>(Response::new(()))
        };
        let err = call("StopPodSandbox", Duration::from_millis(20), (), silent)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "containerd CRI StopPodSandbox did not answer within 20ms"
        );
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_says_where_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = Cri::connect(&dir.path().join("containerd.sock"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("containerd.sock"), "{err}");
        assert!(err.contains("No such file"), "{err}");
        assert!(err.contains("prepare-vm.sh"), "{err}");
    }
}

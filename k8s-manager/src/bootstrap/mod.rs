//! After the API answers: the cluster's own objects (RBAC, CoreDNS) applied
//! from `manifests/` by server-side apply, and the waits that tell the
//! cluster is usable (node Ready, CoreDNS Ready).
//!
//! The manifests are plain YAML compiled into the binary; `${NAME}`
//! placeholders are filled from the cluster's settings before they are sent.

pub mod dns;
pub mod wait;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};

/// The field manager of every object we apply.
pub const FIELD_MANAGER: &str = "k8s-manager";

/// Manifests: each file's name and text, applied in order.
pub type Manifests = &'static [(&'static str, &'static str)];

/// The `kubernetes` Service's endpoint, the node's API server: applied as
/// soon as the API server answers (its own reconciler is off, see the file),
/// before kube-proxy's first sync, as the reconciler did.
pub const API_ENDPOINT: Manifests = &[(
    "apiserver-endpoints.yaml",
    include_str!("../../../manifests/apiserver-endpoints.yaml"),
)];

/// The cluster's own objects, applied once the node's components run.
pub const MANIFESTS: Manifests = &[
    ("rbac.yaml", include_str!("../../../manifests/rbac.yaml")),
    (
        "coredns.yaml",
        include_str!("../../../manifests/coredns.yaml"),
    ),
    (
        "storage.yaml",
        include_str!("../../../manifests/storage.yaml"),
    ),
    (
        "thaw-guard.yaml",
        include_str!("../../../manifests/thaw-guard.yaml"),
    ),
];

/// The ConfigMap whose presence arms the thaw guard (`manifests/thaw-guard.yaml`).
pub const THAW_GUARD: &str = "k8s-manager-thaw-guard";

/// Arms (`on`) or disarms the thaw guard: makes or deletes its ConfigMap in
/// `kube-system`; either is done when already so.
pub async fn thaw_guard(client: &kube::Client, on: bool) -> Result<(), String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    if on {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": THAW_GUARD, "namespace": "kube-system"},
        }))
        .expect("a ConfigMap");
        maps.patch(
            THAW_GUARD,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&map),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("arming the thaw guard: {e}"))
    } else {
        match maps.delete(THAW_GUARD, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(format!("disarming the thaw guard: {e}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{file}: {reason}")]
    Manifest { file: String, reason: String },
    #[error("cannot read the kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("applying {what}")]
    Apply { what: String, source: kube::Error },
    #[error("{0}")]
    Timeout(String),
}

/// Replaces every `${NAME}` with its value; a placeholder without a value is
/// an error, so that a typo never reaches the API server.
pub fn render(
    file: &str,
    text: &str,
    values: &BTreeMap<&str, String>,
) -> Result<String, BootstrapError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| BootstrapError::Manifest {
            file: file.into(),
            reason: "unclosed ${".into(),
        })?;
        let name = &after[..end];
        let value = values.get(name).ok_or_else(|| BootstrapError::Manifest {
            file: file.into(),
            reason: format!("no value for ${{{name}}}"),
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every object of `manifests`, rendered and parsed, in order.
pub fn objects(
    manifests: Manifests,
    values: &BTreeMap<&str, String>,
) -> Result<Vec<(String, DynamicObject)>, BootstrapError> {
    let mut all = Vec::new();
    for &(file, text) in manifests {
        let rendered = render(file, text, values)?;
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&rendered).map_err(|e| BootstrapError::Manifest {
                file: file.into(),
                reason: e.to_string(),
            })?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let obj: DynamicObject =
                serde_json::from_value(doc).map_err(|e| BootstrapError::Manifest {
                    file: file.into(),
                    reason: e.to_string(),
                })?;
            if obj.types.is_none() || obj.metadata.name.is_none() {
                return Err(BootstrapError::Manifest {
                    file: file.into(),
                    reason: "an object lacks apiVersion, kind or name".into(),
                });
            }
            all.push((file.to_string(), obj));
        }
    }
    Ok(all)
}

/// A client from a kubeconfig file of ours.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, BootstrapError> {
    client_with_read_timeout(kubeconfig, Duration::from_secs(10)).await
}

/// A client for watches: a watch's response stays open for minutes with
/// nothing to read, so its reads wait longer than the API server's own
/// watch timeout (290 s at most, kube's default).
pub async fn watch_client(kubeconfig: &Path) -> Result<kube::Client, BootstrapError> {
    client_with_read_timeout(kubeconfig, Duration::from_secs(330)).await
}

async fn client_with_read_timeout(
    kubeconfig: &Path,
    read_timeout: Duration,
) -> Result<kube::Client, BootstrapError> {
    let fail = |reason: String| BootstrapError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        reason,
    };
    let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| fail(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| fail(e.to_string()))?;
    // Only the cluster's own API server is reached, on this machine: never
    // through a proxy (kube would take one from HTTPS_PROXY in the daemon's
    // environment, and it is built without proxy support, so every client
    // would fail to build).
    config.proxy_url = None;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(read_timeout);
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// Server-side applies every object. Retries while the API server is still
/// creating its own objects (e.g. the kube-system namespace) until `deadline`.
pub async fn apply_all(
    client: &kube::Client,
    manifests: Manifests,
    values: &BTreeMap<&str, String>,
    deadline: Duration,
) -> Result<usize, BootstrapError> {
    let objects = objects(manifests, values)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut kinds: BTreeMap<String, (ApiResource, ApiCapabilities)> = BTreeMap::new();
    let start = tokio::time::Instant::now();
    for (file, obj) in &objects {
        let types = obj.types.as_ref().expect("checked when parsed");
        let name = obj.metadata.name.clone().expect("checked when parsed");
        let what = format!("{} {} from {file}", types.kind, name);
        loop {
            let result = apply_one(client, obj, &mut kinds, &params).await;
            match result {
                Ok(()) => break,
                Err(err) if start.elapsed() < deadline && retryable(&err) => {
                    tracing::debug!("{what}: {err}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(source) => return Err(BootstrapError::Apply { what, source }),
            }
        }
    }
    Ok(objects.len())
}

async fn apply_one(
    client: &kube::Client,
    obj: &DynamicObject,
    kinds: &mut BTreeMap<String, (ApiResource, ApiCapabilities)>,
    params: &PatchParams,
) -> Result<(), kube::Error> {
    let types = obj.types.as_ref().expect("checked when parsed");
    let key = format!("{}/{}", types.api_version, types.kind);
    if !kinds.contains_key(&key) {
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
        kinds.insert(
            key.clone(),
            kube::discovery::pinned_kind(client, &gvk).await?,
        );
    }
    let (resource, caps) = &kinds[&key];
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().unwrap_or("default"),
            resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), resource),
    };
    api.patch(
        obj.metadata.name.as_deref().expect("checked"),
        params,
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Errors worth another try while the API server finishes starting.
fn retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 404 | 409 | 429 | 500 | 503),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("CLUSTER_DNS", "10.96.0.10".to_string()),
            ("CLUSTER_DOMAIN", "cluster.local".to_string()),
            (
                "COREDNS_IMAGE",
                "registry.k8s.io/coredns/coredns:v1.12.4".to_string(),
            ),
            ("ADVERTISE_ADDRESS", "192.0.2.10".to_string()),
            ("API_PORT", "6443".to_string()),
        ])
    }

    /// Where the child of [`the_client_ignores_any_proxy`] sends its request:
    /// the ports of the "API server" and of the proxy.
    const DIRECT_CHILD: &str = "K8S_MANAGER_TEST_DIRECT_CHILD";

    /// A proxy named by the kubeconfig and by every proxy variable of the
    /// environment (as the daemon's may hold them) is not used: a request
    /// of the client reaches the API server's port directly (its first
    /// bytes are a TLS handshake, not a proxy's CONNECT) and the proxy
    /// never sees a connection. The request is made in a child process
    /// (this test run again, alone), whose environment names the proxy.
    #[test]
    fn the_client_ignores_any_proxy() {
        if let Ok(ports) = std::env::var(DIRECT_CHILD) {
            return request_through_proxied_environment(&ports);
        }
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let (api_port, proxy_port) = (
            api.local_addr().unwrap().port(),
            proxy.local_addr().unwrap().port(),
        );
        // The "API server": the first bytes of the first connection, which
        // it then closes (it speaks no TLS).
        api.set_nonblocking(true).unwrap();
        let seen = std::thread::spawn(move || {
            use std::io::Read;
            let start = std::time::Instant::now();
            let mut conn = loop {
                match api.accept() {
                    Ok((conn, _)) => break conn,
                    Err(_) if start.elapsed() < Duration::from_secs(30) => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(err) => return Err(err),
                }
            };
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut first = [0u8; 3];
            conn.read_exact(&mut first).map(|_| first)
        });
        let proxy_url = format!("http://127.0.0.1:{proxy_port}");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "bootstrap::tests::the_client_ignores_any_proxy",
                "--nocapture",
            ])
            .env(DIRECT_CHILD, format!("{api_port} {proxy_port}"))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            child.env(var, &proxy_url);
        }
        let out = child.output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("request made: "),
            "the child made no request ({}):\n{said}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let first = seen.join().unwrap().expect("the API server got a request");
        // A TLS record of type handshake (0x16), version 3.x: the client's
        // hello, sent to the API server itself.
        assert_eq!(first[..2], [0x16, 0x03], "{first:?}: not a TLS hello");
        assert!(
            matches!(proxy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the proxy was connected to"
        );
    }

    /// The child's part: a client of a kubeconfig naming the proxy, with the
    /// proxy in the environment, makes one request.
    fn request_through_proxied_environment(ports: &str) {
        let (api_port, proxy_port) = ports.split_once(' ').unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("admin.conf");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\n    proxy-url: http://127.0.0.1:{proxy_port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"
            ),
        )
        .unwrap();
        crate::install_crypto_provider();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The "API server" speaks no TLS: the request fails once it is made.
        let outcome = runtime.block_on(async {
            let client = client(&kubeconfig).await.unwrap();
            client.apiserver_version().await
        });
        println!("request made: {outcome:?}");
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_rejected() {
        assert_eq!(
            render("f", "ip: ${CLUSTER_DNS}!", &values()).unwrap(),
            "ip: 10.96.0.10!"
        );
        let err = render("f.yaml", "x: ${NOPE}", &values())
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml") && err.contains("${NOPE}"), "{err}");
        assert!(render("f", "x: ${OPEN", &values()).is_err());
    }

    #[test]
    fn manifests_parse_into_named_objects() {
        let objects: Vec<_> = [API_ENDPOINT, MANIFESTS]
            .into_iter()
            .flat_map(|m| objects(m, &values()).unwrap())
            .collect();
        let names: Vec<String> = objects
            .iter()
            .map(|(_, o)| {
                format!(
                    "{}/{}",
                    o.types.as_ref().unwrap().kind,
                    o.metadata.name.as_ref().unwrap()
                )
            })
            .collect();
        assert!(
            names.contains(&"ClusterRoleBinding/kubeadm:cluster-admins".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"Deployment/coredns".to_string()));
        // The `kubernetes` Service's endpoint, the node's API server, typed
        // (a number for the port) as the API server would write it.
        let slice = objects
            .iter()
            .find(|(_, o)| o.types.as_ref().unwrap().kind == "EndpointSlice")
            .unwrap();
        assert_eq!(slice.1.metadata.name.as_deref(), Some("kubernetes"));
        assert_eq!(slice.1.data["endpoints"][0]["addresses"][0], "192.0.2.10");
        assert_eq!(slice.1.data["ports"][0]["port"], 6443);
        assert!(names.contains(&"Endpoints/kubernetes".to_string()));
        let default_class = objects
            .iter()
            .find(|(_, o)| o.metadata.name.as_deref() == Some("hostpath"))
            .unwrap();
        assert_eq!(default_class.1.data["provisioner"], "docker.io/hostpath");
        assert_eq!(
            default_class.1.data["volumeBindingMode"],
            "WaitForFirstConsumer"
        );
        let annotations = default_class.1.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
        assert!(names.contains(&"StorageClass/hostpath-retain".to_string()));
        let service = objects
            .iter()
            .find(|(_, o)| o.metadata.name.as_deref() == Some("kube-dns"))
            .unwrap();
        assert_eq!(service.1.data["spec"]["clusterIP"], "10.96.0.10");
        let deployment = objects
            .iter()
            .find(|(_, o)| {
                o.metadata.name.as_deref() == Some("coredns")
                    && o.types.as_ref().unwrap().kind == "Deployment"
            })
            .unwrap();
        let container = &deployment.1.data["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["image"],
            "registry.k8s.io/coredns/coredns:v1.12.4"
        );
        let corefile = objects
            .iter()
            .find(|(_, o)| o.types.as_ref().unwrap().kind == "ConfigMap")
            .unwrap();
        assert!(
            corefile.1.data["data"]["Corefile"]
                .as_str()
                .unwrap()
                .contains("kubernetes cluster.local in-addr.arpa")
        );
    }
}

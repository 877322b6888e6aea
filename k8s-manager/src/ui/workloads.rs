//! What the page shows of the cluster's objects: the pods per namespace with
//! the status kubectl would print, and the LoadBalancer Services with their
//! localhost addresses. Pure: objects in, rows out; the server lists them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde::Serialize;

/// One pod, as a row of the workloads view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub name: String,
    /// What kubectl's STATUS column says: `Running`, `Pending`,
    /// `ContainerCreating`, `CrashLoopBackOff`, `Completed`, `Terminating`.
    pub status: String,
    /// Ready containers over containers (`1/1`).
    pub ready: String,
    pub restarts: i32,
}

/// The pods of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub namespace: String,
    pub pods: Vec<PodRow>,
}

/// A LoadBalancer Service and where it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerRow {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<PortRow>,
    /// The addresses in `status.loadBalancer.ingress` (IP or host name);
    /// empty while no controller has published the Service.
    pub ingress: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRow {
    pub port: i32,
    pub protocol: String,
    /// `http://localhost:<port>` for a published TCP port: the VM's
    /// loopback, which WSL 2 forwards to Windows.
    pub url: Option<String>,
}

/// Pods grouped by namespace (namespaces and pods by name).
pub fn namespaces(pods: &[Pod]) -> Vec<Namespace> {
    let mut grouped: BTreeMap<String, Vec<PodRow>> = BTreeMap::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        grouped.entry(namespace).or_default().push(pod_row(pod));
    }
    grouped
        .into_iter()
        .map(|(namespace, mut pods)| {
            pods.sort_by(|a, b| a.name.cmp(&b.name));
            Namespace { namespace, pods }
        })
        .collect()
}

fn pod_row(pod: &Pod) -> PodRow {
    let containers = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let count = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = containers.map_or(0, |cs| cs.iter().filter(|c| c.ready).count());
    let restarts = containers.map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
    PodRow {
        name: pod.metadata.name.clone().unwrap_or_default(),
        status: pod_status(pod),
        ready: format!("{ready}/{count}"),
        restarts,
    }
}

/// kubectl's rule, shortened: a pod being deleted is `Terminating`; else the
/// first container's reason for waiting or having ended; else the phase
/// (`Succeeded` reads `Completed`).
fn pod_status(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.as_ref();
    let reason = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref())
        .find_map(|state| {
            let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone());
            let ended = state.terminated.as_ref().map(|t| {
                t.reason
                    .clone()
                    .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code))
            });
            waiting.or(ended)
        });
    let phase = status.and_then(|s| s.phase.clone());
    match (reason, phase.as_deref()) {
        (_, Some("Succeeded")) => "Completed".into(),
        (Some(reason), _) => reason,
        (None, Some(phase)) => phase.into(),
        (None, None) => "Unknown".into(),
    }
}

/// The Services of type LoadBalancer, by namespace and name.
pub fn load_balancers(services: &[Service]) -> Vec<LoadBalancerRow> {
    let mut rows: Vec<LoadBalancerRow> = services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer"))
        .map(|s| {
            let ingress: Vec<String> = s
                .status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .collect();
            let ports = s
                .spec
                .as_ref()
                .and_then(|spec| spec.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    let url = (protocol == "TCP" && !ingress.is_empty())
                        .then(|| format!("http://localhost:{}", p.port));
                    PortRow {
                        port: p.port,
                        protocol,
                        url,
                    }
                })
                .collect();
            LoadBalancerRow {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.metadata.name.clone().unwrap_or_default(),
                ports,
                ingress,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pods_read_as_kubectl_reads_them() {
        let pods = [
            pod(json!({
                "metadata": {"name": "web-1", "namespace": "default"},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "image": "", "imageID": "",
                     "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 1, "image": "", "imageID": "",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
            })),
            pod(json!({
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                "spec": {"containers": [{"name": "c"}]},
                "status": {"phase": "Pending"}
            })),
            pod(json!({
                "metadata": {"name": "job", "namespace": "default"},
                "spec": {"containers": [{"name": "c"}]},
                "status": {"phase": "Succeeded", "containerStatuses": [
                    {"name": "c", "ready": false, "restartCount": 0, "image": "", "imageID": "",
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
            })),
            pod(json!({
                "metadata": {"name": "old", "namespace": "default",
                             "deletionTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"containers": [{"name": "c"}]},
                "status": {"phase": "Running"}
            })),
        ];
        let view = namespaces(&pods);
        let names: Vec<&str> = view.iter().map(|n| n.namespace.as_str()).collect();
        assert_eq!(names, ["default", "kube-system"]);
        let default: Vec<(&str, &str, &str, i32)> = view[0]
            .pods
            .iter()
            .map(|p| (&*p.name, &*p.status, &*p.ready, p.restarts))
            .collect();
        assert_eq!(
            default,
            [
                ("job", "Completed", "0/1", 0),
                ("old", "Terminating", "0/1", 0),
                ("web-1", "CrashLoopBackOff", "1/2", 3),
            ]
        );
        assert_eq!(view[1].pods[0].status, "Pending");
    }

    #[test]
    fn load_balancers_link_their_published_tcp_ports() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"type": "LoadBalancer", "ports": [
                 {"port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
             "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}},
            {"metadata": {"name": "waiting", "namespace": "default"},
             "spec": {"type": "LoadBalancer", "ports": [{"port": 9000}]}},
            {"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"type": "ClusterIP", "ports": [{"port": 443}]}}
        ]))
        .unwrap();
        let rows = load_balancers(&services);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "waiting");
        assert_eq!(rows[0].ports[0].url, None, "not published yet");
        assert_eq!(rows[1].ingress, ["127.0.0.1"]);
        assert_eq!(
            rows[1].ports[0].url.as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(rows[1].ports[1].protocol, "UDP");
        assert_eq!(rows[1].ports[1].url, None, "no browser link for UDP");
    }
}

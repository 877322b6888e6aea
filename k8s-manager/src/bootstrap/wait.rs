//! Waits with a deadline and a message: each polls one condition and, when
//! time is up, says what it last saw.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

use super::BootstrapError;

const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it returns Ok or `deadline` passes; the error then
/// carries the last thing `check` reported.
pub async fn until<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<(), BootstrapError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let seen = match check().await {
            Ok(()) => return Ok(()),
            Err(seen) => seen,
        };
        if start.elapsed() >= deadline {
            return Err(BootstrapError::Timeout(format!("{what}: not within {}s; last seen: {seen}", deadline.as_secs())));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the node reports Ready, or why not.
pub async fn node_ready(client: &kube::Client, name: &str) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get_opt(name).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("node {name} is not registered yet"))?;
    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!("node {name} Ready={} ({}: {})", c.status, c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())),
        None => Err(format!("node {name} has no Ready condition yet")),
    }
}

/// Whether CoreDNS has a ready replica, or what its pod is doing.
pub async fn coredns_ready(client: &kube::Client) -> Result<(), String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let deployment = deployments.get_opt("coredns").await.map_err(|e| e.to_string())?.ok_or("deployment coredns not found")?;
    let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    if ready >= 1 {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let list = pods.list(&ListParams::default().labels("k8s-app=kube-dns")).await.map_err(|e| e.to_string())?;
    let seen: Vec<String> = list.items.iter().map(describe_pod).collect();
    Err(if seen.is_empty() { "no CoreDNS pod yet".into() } else { seen.join("; ") })
}

/// One line about a pod that is not ready: its phase and the first reason found.
pub fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(status) = &pod.status else { return format!("pod {name}: no status") };
    let phase = status.phase.clone().unwrap_or_default();
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.waiting.as_ref().map(|w| format!("{}: {}", w.reason.clone().unwrap_or_default(), w.message.clone().unwrap_or_default())));
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| format!("unscheduled: {}", c.message.clone().unwrap_or_default()));
    let detail = waiting.or(unscheduled).unwrap_or_else(|| "containers not ready".into());
    format!("pod {name} {phase}, {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_reports_the_last_thing_seen() {
        let mut n = 0;
        let err = until("the thing", Duration::from_millis(300), || {
            n += 1;
            let seen = format!("attempt {n}");
            async move { Err(seen) }
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("the thing: not within 0s; last seen: attempt"), "{err}");

        let mut calls = 0;
        until("ok", Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 2;
            async move { if done { Ok(()) } else { Err("no".into()) } }
        })
        .await
        .unwrap();
    }

    #[test]
    fn a_pending_pod_says_why() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "coredns-1"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}]}
        }))
        .unwrap();
        assert_eq!(describe_pod(&pod), "pod coredns-1 Pending, unscheduled: 0/1 nodes are available");
    }
}

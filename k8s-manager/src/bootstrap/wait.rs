//! Waits with a deadline and a message: each polls one condition and, when
//! time is up, says what it last saw.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams};

use super::BootstrapError;

const POLL: Duration = Duration::from_millis(200);
/// One DNS question's wait: CoreDNS answers from memory in about a
/// millisecond; a lost question is asked again after this and `POLL`.
const DNS_TIMEOUT: Duration = Duration::from_millis(250);

/// Polls `check` until it returns Ok or `deadline` passes; the error then
/// carries the last thing `check` reported.
pub async fn until<F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> Result<(), BootstrapError>
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
            return Err(BootstrapError::Timeout(format!(
                "{what}: not within {}s; last seen: {seen}",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Seconds since the Unix epoch of a Kubernetes time, if set.
fn seconds(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.map(|t| t.0.as_second()).unwrap_or(0)
}

/// Whether the node reports Ready, or why not. `since` (Unix seconds) is
/// when the running kubelet started: a status written before it does not
/// count, since after a restart the node object still says Ready until the
/// new kubelet reports (it always reports once it is up).
pub async fn node_ready(client: &kube::Client, name: &str, since: i64) -> Result<(), String> {
    match ready_condition(client, name, since).await? {
        Heartbeat::Fresh => Ok(()),
        Heartbeat::Stale => Err(format!(
            "node {name}: no status from the kubelet since this start yet"
        )),
    }
}

/// How recent the heartbeat of a node's Ready=True condition is.
enum Heartbeat {
    /// At or after the time asked about.
    Fresh,
    /// Before it.
    Stale,
}

/// The node's Ready condition, when True, judged against `since`; an error
/// says why the node is not Ready.
async fn ready_condition(
    client: &kube::Client,
    name: &str,
    since: i64,
) -> Result<Heartbeat, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("node {name} is not registered yet"))?;
    let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" && seconds(c.last_heartbeat_time.as_ref()) >= since => {
            Ok(Heartbeat::Fresh)
        }
        Some(c) if c.status == "True" => Ok(Heartbeat::Stale),
        Some(c) => Err(format!(
            "node {name} Ready={} ({}: {})",
            c.status,
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        )),
        None => Err(format!("node {name} has no Ready condition yet")),
    }
}

/// Whether the node is Ready and its kubelet gave a sign of life at or after
/// `since` (Unix seconds): its Ready condition's heartbeat or its lease's
/// renewal, whichever is later, as the controller-manager's node monitor
/// reads it. The lease is renewed every 10 s, the full status only on a
/// change and every 5 minutes; but a kubelet just started writes its status
/// at once, and may create its lease only seconds later. After a thaw the
/// kubelet renews its lease at once.
pub async fn node_alive(client: &kube::Client, name: &str, since: i64) -> Result<(), String> {
    use k8s_openapi::api::coordination::v1::Lease;
    if let Heartbeat::Fresh = ready_condition(client, name, since).await? {
        return Ok(());
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renewed = leases
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|lease| lease.spec)
        .and_then(|s| s.renew_time)
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    match renewed >= since {
        true => Ok(()),
        false => Err(format!(
            "node {name}: neither its status nor its lease was renewed since {since} (Unix seconds): \
             is its kubelet running (`k8s-manager status`, its log in the state folder's logs/kubelet.log)?"
        )),
    }
}

/// Whether a CoreDNS pod is Ready and, asked at its own address, answers
/// `name` with `expect`; if not, what the pods are doing. The answer is what
/// makes it true now: a Ready condition alone may be one that an earlier
/// kubelet left in the API.
pub async fn coredns_answers(
    client: &kube::Client,
    name: &str,
    expect: IpAddr,
) -> Result<(), String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    deployments
        .get_opt("coredns")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("deployment coredns not found")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let list = pods
        .list(&ListParams::default().labels("k8s-app=kube-dns"))
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for pod in &list.items {
        let address = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        match address {
            Some(ip) if is_ready(pod) => {
                match super::dns::resolve(SocketAddr::new(ip, 53), name, DNS_TIMEOUT).await {
                    Ok(addresses) if addresses.contains(&expect) => return Ok(()),
                    Ok(addresses) => seen.push(format!(
                        "{}: {name} is {addresses:?}, not {expect}",
                        describe_pod(pod)
                    )),
                    Err(err) => seen.push(format!("{} at {ip}: {err}", describe_pod(pod))),
                }
            }
            _ => seen.push(describe_pod(pod)),
        }
    }
    Err(if seen.is_empty() {
        "no CoreDNS pod yet".into()
    } else {
        seen.join("; ")
    })
}

/// Whether every namespace's `kube-root-ca.crt` (what pods verify the API
/// server with) holds `new_ca` and, unless `with_old`, nothing else; else
/// the first namespace that does not, and why.
pub async fn root_ca_published(
    client: &kube::Client,
    new_ca: &str,
    with_old: bool,
) -> Result<(), String> {
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let list = maps
        .list(&ListParams::default().fields("metadata.name=kube-root-ca.crt"))
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .iter()
        .try_for_each(|map| root_ca_holds(map, new_ca, with_old))
}

/// One namespace's `kube-root-ca.crt` judged (see [`root_ca_published`]).
fn root_ca_holds(map: &ConfigMap, new_ca: &str, with_old: bool) -> Result<(), String> {
    let namespace = map.metadata.namespace.clone().unwrap_or_default();
    let bundle = map
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(String::as_str)
        .unwrap_or_default();
    let certs = bundle.matches("BEGIN CERTIFICATE").count();
    let has_new = bundle.contains(new_ca);
    if has_new && (with_old || certs == 1) {
        return Ok(());
    }
    Err(format!(
        "namespace {namespace}: {certs} certificate(s), the new CA {}",
        if has_new { "among them" } else { "missing" }
    ))
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// One line about a pod: Ready, or its phase and the first reason found.
pub fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let Some(status) = &pod.status else {
        return format!("pod {name}: no status");
    };
    if is_ready(pod) {
        return format!("pod {name} Ready");
    }
    let phase = status.phase.clone().unwrap_or_default();
    let waiting = status.container_statuses.iter().flatten().find_map(|c| {
        c.state.as_ref()?.waiting.as_ref().map(|w| {
            format!(
                "{}: {}",
                w.reason.clone().unwrap_or_default(),
                w.message.clone().unwrap_or_default()
            )
        })
    });
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| format!("unscheduled: {}", c.message.clone().unwrap_or_default()));
    let detail = waiting
        .or(unscheduled)
        .unwrap_or_else(|| "containers not ready".into());
    format!("pod {name} {phase}, {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_ca_bundle_holds_the_new_ca_then_it_alone() {
        let map = |bundle: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("ca.crt".to_string(), bundle.to_string())].into()),
            ..Default::default()
        };
        let (old, new) = (
            "-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----",
        );
        let both = map(&format!("{old}\n{new}\n"));
        assert_eq!(root_ca_holds(&both, new, true), Ok(()));
        let err = root_ca_holds(&both, new, false).unwrap_err();
        assert_eq!(
            err,
            "namespace default: 2 certificate(s), the new CA among them"
        );
        assert_eq!(root_ca_holds(&map(new), new, false), Ok(()));
        let err = root_ca_holds(&map(old), new, true).unwrap_err();
        assert!(err.ends_with("the new CA missing"), "{err}");
    }

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
        assert!(
            err.starts_with("the thing: not within 0s; last seen: attempt"),
            "{err}"
        );

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
    fn a_ready_pod_says_so() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "coredns-1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}]}
        }))
        .unwrap();
        assert_eq!(describe_pod(&pod), "pod coredns-1 Ready");
    }

    #[test]
    fn a_pending_pod_says_why() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "coredns-1"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}]}
        }))
        .unwrap();
        assert_eq!(
            describe_pod(&pod),
            "pod coredns-1 Pending, unscheduled: 0/1 nodes are available"
        );
    }
}

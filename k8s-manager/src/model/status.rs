//! The status report: everything a user asks when something seems off —
//! state, each component, whether the API answers and the node is Ready,
//! versions, the earliest certificate expiry, and a CA rotation left
//! half-done. Made by the daemon (or the CLI without one), read by the CLI,
//! the page and any client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::ClusterState;
use crate::pki::rotation::Step;
use crate::supervisor::ChildStatus;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub state: ClusterState,
    /// One line for people: `running`, `starting (etcd)`, `error in phase …`.
    pub summary: String,
    pub enabled: bool,
    pub since: String,
    /// Whether a manager (daemon) is running for this state folder.
    pub manager_running: bool,
    pub components: Vec<ChildStatus>,
    pub api_reachable: bool,
    pub node_ready: Option<bool>,
    pub server_url: Option<String>,
    pub versions: BTreeMap<String, String>,
    pub earliest_certificate: Option<CertExpiry>,
    /// The CAs within a year of expiry, each with what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_warnings: Vec<String>,
    /// A CA rotation in progress (`pki/rotate-ca/step` exists): running, or
    /// cut short and waiting for `certs rotate-ca` to resume it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_rotation: Option<CaRotation>,
    /// The cgroups the components run in (`cgroup v1 (freezer, cpuacct,
    /// memory)`, `cgroup v2`), or why there are none: then no component has
    /// figures and nothing can be frozen.
    #[serde(default)]
    pub cgroups: String,
    /// Whether the cluster is frozen (`pause`): its processes use no CPU
    /// until `resume`, or any other operation, thaws them.
    #[serde(default)]
    pub paused: bool,
    /// The idle freeze: when the cluster freezes, why it stays awake, what
    /// froze it and what last woke it (absent without a daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleStatus>,
}

/// The idle freeze as the daemon sees it ([`crate::controllers::idle`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleStatus {
    /// `idle.freezeAfter`: seconds unused before the freeze; 0: never.
    pub freeze_after: u64,
    /// Since when nothing used the awake cluster (RFC 3339); absent when
    /// something uses it now, or no idle unit runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<String>,
    /// Why the awake cluster does not freeze, when something keeps it awake
    /// that is not a client (`2 pods run outside kube-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_awake_by: Option<String>,
    /// The freeze the cluster is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<Frozen>,
    /// The last wake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake: Option<Wake>,
}

/// A freeze: when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Frozen {
    /// When it froze (RFC 3339).
    pub since: String,
    /// `idle` (the unit) or `pause` (asked for).
    pub cause: String,
    /// For an idle freeze: since when nothing had used the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<String>,
    /// Whether a call to the API server (or a LoadBalancer) wakes it now.
    pub wakes_on_first_call: bool,
}

/// A wake: what woke the cluster, when, and how long until the API server
/// ran again (what the first call waited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wake {
    pub at: String,
    pub cause: String,
    pub latency_ms: u64,
}

impl IdleStatus {
    /// The one line a paused cluster shows: `Paused (idle since …, wakes on
    /// the first call)`.
    pub fn paused_line(&self) -> Option<String> {
        let frozen = self.frozen.as_ref()?;
        let mut parts = vec![match (&frozen.idle_since, frozen.cause.as_str()) {
            (Some(since), _) => format!("idle since {since}"),
            (None, "pause") => format!("by `k8s-manager pause` at {}", frozen.since),
            (None, cause) => format!("{cause} at {}", frozen.since),
        }];
        parts.push(match frozen.wakes_on_first_call {
            true => "wakes on the first call".into(),
            false => "`k8s-manager resume` thaws it".into(),
        });
        Some(format!("Paused ({})", parts.join(", ")))
    }
}

/// The summary of a paused cluster.
pub const PAUSED: &str = "paused (frozen: `k8s-manager resume`, or any other operation, thaws it)";

/// Where a CA rotation in progress is (see [`crate::pki::rotation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaRotation {
    /// The last step done: `new`, `trust-both`, `switched` or `trust-new`.
    pub step: Step,
    /// Whether the `rotate-ca` operation runs now; else it was cut short
    /// (a crash, a disable) and waits for `certs rotate-ca` to resume it.
    #[serde(default)]
    pub running: bool,
    /// One line for people: where it is and, cut short, what resumes it.
    pub message: String,
}

impl CaRotation {
    pub fn at(step: Step, running: bool) -> CaRotation {
        let message = if running {
            format!("a CA rotation is running, at step {step}")
        } else {
            format!(
                "a CA rotation was cut short at step {step}: `k8s-manager certs rotate-ca` resumes it"
            )
        };
        CaRotation {
            step,
            running,
            message,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertExpiry {
    pub name: String,
    pub not_after: String,
    pub days_left: i64,
}

/// The report as lines for a terminal.
/// The idle freeze's lines of the text status.
fn idle_lines(idle: &IdleStatus, paused: bool) -> String {
    let mut out = String::new();
    if !paused {
        let line = match (&idle.kept_awake_by, idle.freeze_after, &idle.idle_since) {
            (Some(kept), _, _) => format!("stays awake: {kept}"),
            (None, 0, _) => "never (idle.freezeAfter is 0)".into(),
            (None, after, Some(since)) => {
                format!("after {after}s unused (unused since {since})")
            }
            (None, after, None) => format!("after {after}s unused (in use now)"),
        };
        out.push_str(&format!("Idle freeze: {line}\n"));
    }
    if let Some(wake) = &idle.last_wake {
        out.push_str(&format!(
            "Last wake: {} at {}, the API server ran again after {} ms\n",
            wake.cause, wake.at, wake.latency_ms
        ));
    }
    out
}

pub fn render_text(report: &StatusReport) -> String {
    let mut out = format!("Kubernetes: {}\n", report.summary);
    if let Some(url) = &report.server_url {
        out.push_str(&format!(
            "API server: {url} ({})\n",
            if report.paused {
                "frozen: the first call wakes it"
            } else if report.api_reachable {
                "reachable"
            } else {
                "not reachable"
            }
        ));
    }
    if let Some(idle) = &report.idle {
        out.push_str(&idle_lines(idle, report.paused));
    }
    if let Some(ready) = report.node_ready {
        out.push_str(&format!(
            "Node: {}\n",
            if ready { "Ready" } else { "NotReady" }
        ));
    }
    if !report.versions.is_empty() {
        let versions: Vec<String> = report
            .versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!("Versions: {}\n", versions.join(", ")));
    }
    if let Some(cert) = &report.earliest_certificate {
        out.push_str(&format!(
            "Certificates: earliest expiry {} on {} ({} days)\n",
            cert.name, cert.not_after, cert.days_left
        ));
    }
    if let Some(rotation) = &report.ca_rotation {
        out.push_str(&format!("CA rotation: {}\n", rotation.message));
    }
    for warning in &report.ca_warnings {
        out.push_str(&format!("Warning: {warning}\n"));
    }
    if !report.cgroups.is_empty() {
        out.push_str(&format!("Cgroups: {}\n", report.cgroups));
    }
    if !report.manager_running {
        out.push_str("Manager: not running\n");
    }
    if !report.components.is_empty() {
        out.push_str(&format!(
            "{:<26} {:<9} {:>8} {:>9} {:>9} {:>9}  {}\n",
            "COMPONENT", "STATE", "PID", "RESTARTS", "CPU", "MEMORY", "UP SINCE"
        ));
        for c in &report.components {
            let state = serde_json::to_value(&c.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:<26} {:<9} {:>8} {:>9} {:>9} {:>9}  {}\n",
                c.name,
                state,
                c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                c.restarts,
                c.cpu_millis
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                c.memory_bytes
                    .map(|b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)))
                    .unwrap_or_else(|| "-".into()),
                c.up_since.clone().unwrap_or_else(|| "-".into())
            ));
            if let Some(detail) = &c.detail {
                out.push_str(&format!("{:<26} {detail}\n", ""));
            }
        }
    }
    out
}

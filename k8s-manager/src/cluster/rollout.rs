//! The rollout: the running cluster moved over to files that changed under
//! it (renewed certificates, new trust bundles, a new admin kubeconfig), one
//! component at a time, each answering before the next is looked at. The
//! one place that restarts what runs, for `certs renew`, `certs rotate-ca`
//! and the enable's in-process units.
//!
//! A component that can be handed over (the API server: see
//! [`crate::supervisor::handover`]) gets a new instance beside the running
//! one, and its clients move once it answers: no call fails. The others are
//! restarted by the supervisor when their start-only inputs changed, and
//! waited on. Pods and containers are not touched: a kubelet restart leaves
//! them running.

use std::time::Duration;

use super::context::PhaseContext;
use super::host::{self, Processes};
use crate::components::Component;
use crate::error::chain;
use crate::model::config::ClusterConfig;
use crate::model::error::OperationError;

/// How long a restarted component has to answer again.
pub const READY_WITHIN: Duration = Duration::from_secs(90);

/// Moves each component whose start-only inputs changed over to them, in
/// their start order ([`super::order`]: [`crate::pki::usage::ORDER`]);
/// `what` names what they load, in the notices.
pub async fn move_components(cx: &mut PhaseContext<'_>, what: &str) -> Result<(), OperationError> {
    for component in super::order::components() {
        let name = component.name();
        if let Some(handover) = component.handover(&cx.components)
            && cx.processes.inputs_changed(name).await == Some(true)
        {
            match hand_over(cx, component, &handover, None).await {
                Ok(()) => {
                    cx.notice(format!(
                        "{name} handed over to a new instance to load {what}"
                    ));
                    continue;
                }
                // It still runs, with its old files: a restart, as for the others.
                Err(why) => cx.notice(format!(
                    "{name} cannot be handed over ({why}): restarting it"
                )),
            }
        }
        let restarted = cx
            .processes
            .refresh(name, component.stop_grace())
            .await
            .map_err(|e| cx.fail(format!("restarting {name}: {}", chain(&e))))?;
        if restarted == Some(true) {
            cx.notice(format!("{name} restarted to load {what}"));
            let deadline = std::mem::replace(&mut cx.deadline, READY_WITHIN);
            let ready = cx.wait_ready(component).await;
            cx.deadline = deadline;
            ready?;
        }
    }
    Ok(())
}

/// Starts `component` as the settings say now. One that runs otherwise and
/// can be handed over gets a new instance beside it, and its clients move
/// once the newcomer answers ready: a settings change shows no client an
/// error (a restarted API server refuses calls, then answers `Forbidden`
/// until its authorization caches are filled). Otherwise the supervisor
/// starts it, or restarts it when its spec changed.
pub async fn start_handing_over(
    cx: &PhaseContext<'_>,
    component: &dyn Component,
) -> Result<(), OperationError> {
    let name = component.name();
    if let Some(handover) = component.handover(&cx.components) {
        let spec = cx.spec_of(component);
        if cx.processes.runs_as(&spec).await == Some(false) {
            cx.prepare(component)?;
            match hand_over(cx, component, &handover, Some(spec)).await {
                Ok(()) => {
                    cx.notice(format!(
                        "{name} handed over to a new instance with the new settings"
                    ));
                    return Ok(());
                }
                Err(why) => cx.notice(format!(
                    "{name} cannot be handed over ({why}): restarting it"
                )),
            }
        }
    }
    cx.start(&[component]).await
}

/// Replaces the running `component` by a new instance beside it (of `spec`
/// when given): once the newcomer answers its probe, its clients are moved
/// to it and the old one stops. On an error the old one runs on, untouched,
/// with every client.
async fn hand_over(
    cx: &PhaseContext<'_>,
    component: &dyn Component,
    handover: &crate::components::Handover,
    spec: Option<crate::supervisor::ProcessSpec>,
) -> Result<(), String> {
    let name = component.name();
    let probe_name = format!("{name} (newcomer)");
    let api = cx.api;
    let probe = &handover.probe;
    let ready: host::Ready<'_> = Box::new(move |_newcomer| {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + READY_WITHIN;
            loop {
                match api.probe(&probe_name, probe).await {
                    Ok(()) => return Ok(()),
                    Err(last) if tokio::time::Instant::now() >= deadline => {
                        return Err(format!(
                            "the new {name} was not ready within {}s: {last}",
                            READY_WITHIN.as_secs()
                        ));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    });
    cx.processes
        .hand_over(name, spec, handover.port, component.stop_grace(), ready)
        .await
}

/// After `admin.conf` changed: the manager's own units restarted (they read
/// it at start), and the user's and the VM's kubeconfigs merged again by the
/// export step's code (their other entries kept).
pub async fn move_manager(cx: &mut PhaseContext<'_>, what: &str) -> Result<(), OperationError> {
    // The renewal unit is the caller of a renewal; it reads no kubeconfig.
    let skip = Some(crate::controllers::certs::NAME);
    restart_units(cx.processes, cx.config, cx.units, skip).await;
    let config = cx.config.clone();
    let admin = cx.components.paths.admin_kubeconfig();
    let written = crate::offload::blocking(move || super::export::merge(&config, &admin))
        .await
        .map_err(|e| cx.fail(e))?;
    let names: Vec<String> = written.iter().map(|f| f.display().to_string()).collect();
    cx.notice(format!("{what} is merged into {}", names.join(", ")));
    Ok(())
}

/// Starts the in-process units afresh (but `skip`): each reads the admin
/// kubeconfig when it starts, and it may have changed (another API port, a
/// new client certificate), so one still running from before is stopped
/// first. They are idempotent: a restart costs a list of what they watch.
pub async fn restart_units(
    processes: &dyn Processes,
    config: &ClusterConfig,
    units: &crate::controllers::Handles,
    skip: Option<&str>,
) {
    for unit in crate::controllers::units(config, units) {
        if Some(unit.name.as_str()) == skip {
            continue;
        }
        processes
            .stop(&unit.name, crate::controllers::STOP_GRACE)
            .await;
        processes
            .start_task(unit, crate::controllers::STOP_GRACE)
            .await;
    }
}

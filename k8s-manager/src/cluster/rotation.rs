//! The cluster CAs replaced on a running cluster: the `rotate-ca` operation
//! (`k8s-manager certs rotate-ca`, `POST /v1/certs/rotate-ca`).
//!
//! It runs as the renewal does (one operation at a time, only on a running
//! cluster), through the resumable file steps of [`crate::pki::rotation`],
//! each followed by the moves the renewal makes (components restarted one at
//! a time in [`crate::pki::usage::ORDER`], each answering before the next;
//! the manager's units restarted and the user's kubeconfigs merged again):
//!
//! 1. new CAs made next to the old ones;
//! 2. every trust bundle holds both: the components that read one at start
//!    are restarted, every kubeconfig embeds both; then the wait until every
//!    namespace's `kube-root-ca.crt` (filled by the controller-manager from
//!    its `--root-ca-file`) holds the new CA, and [`PROJECTION`] for the
//!    kubelet to refresh the copies projected into running pods: a pod that
//!    verifies the API server with its `ca.crt` then trusts both;
//! 3. the new CAs sign: every leaf and kubeconfig client certificate is
//!    re-issued under them, the components moved over;
//! 4. the bundles hold the new CA only, the components moved over again (the
//!    controller-manager's restart updates every `kube-root-ca.crt`);
//! 5. the rotation's folder (the old keys) is removed.
//!
//! The service-account key pair is kept: tokens stay valid. A failure or a
//! crash leaves the step on disk; the next `rotate-ca` resumes there, and an
//! enable in between starts the cluster with the files as they are (a leaf
//! not signed by its CA is re-issued by the certs phase).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

use super::host;
use super::phases;
use super::phases::{PhaseContext, PhaseError};
use super::renewal::{self, move_components, move_manager};
use super::state::Phase;
use crate::error::chain;
use crate::pki::rotation::{self, Step};
use crate::pki::{KeyAlgorithm, kubeconfigs};
use crate::supervisor::Supervisor;

/// The operation's name in its events.
pub const OPERATION: &str = "rotate-ca";
/// How long the kubelet may take to refresh a ConfigMap projected into a
/// running pod once the object changed: its pod sync period (1 minute) plus
/// its ConfigMap cache's TTL, with margin. The kubelet exposes no signal of
/// it; waiting a bounded time is what kubeadm's manual rotation guide says too.
pub const PROJECTION: Duration = Duration::from_secs(90);
/// How long the controller-manager has to publish the new bundle in every
/// namespace after its restart.
const PUBLISH_WITHIN: Duration = Duration::from_secs(120);

/// Rotates the CAs of the running cluster of `cx`.
pub(super) async fn run(
    cx: &mut PhaseContext<'_>,
    supervisor: &Supervisor,
) -> Result<(), PhaseError> {
    let phase = Phase::Certs;
    let fail = move |e: String| PhaseError::new(phase, e);
    let pki = cx.components.paths.pki.clone();
    let on_pki = |work: fn(&std::path::Path) -> Result<(), crate::pki::PkiError>| {
        let pki = pki.clone();
        async move {
            host::blocking(move || work(&pki).map_err(|e| chain(&e)))
                .await
                .map_err(fail)
        }
    };

    let step = {
        let pki = pki.clone();
        host::blocking(move || {
            rotation::begin(&pki, KeyAlgorithm::default()).map_err(|e| chain(&e))
        })
        .await
        .map_err(fail)?
    };
    cx.progress.notice(match step {
        Step::New => "new cluster CAs made (ca, front-proxy-ca, etcd/ca)".to_string(),
        step => format!("resuming the CA rotation at its step {step}"),
    });

    if step <= Step::TrustBoth {
        on_pki(rotation::trust_both).await?;
        move_over(
            cx,
            supervisor,
            "the old and the new CAs are trusted",
            "both CAs",
            "the trust of both CAs",
        )
        .await?;
        let new_ca = new_ca_pem(&pki).await.map_err(fail)?;
        wait_published(cx, &new_ca, true).await?;
        cx.progress.notice(format!(
            "every kube-root-ca.crt holds both CAs; waiting {}s for the kubelet to refresh the copies in running pods",
            PROJECTION.as_secs()
        ));
        tokio::time::sleep(PROJECTION).await;
    }
    if step <= Step::Switched {
        on_pki(rotation::switch).await?;
        // Every leaf is now not signed by its CA: the certs phase of enable
        // re-issues each, with the subject and names of the settings; then
        // every kubeconfig client certificate (in `move_over`), for the same
        // reason.
        phases::certs(cx).await?;
        move_over(
            cx,
            supervisor,
            "every certificate re-issued under the new CAs",
            "its certificate from the new CA",
            "the client certificate from the new CA",
        )
        .await?;
    }
    on_pki(rotation::trust_new).await?;
    move_over(
        cx,
        supervisor,
        "only the new CAs are trusted",
        "the new CAs only",
        "the new CA",
    )
    .await?;
    let new_ca = new_ca_pem(&pki).await.map_err(fail)?;
    wait_published(cx, &new_ca, false).await?;
    on_pki(rotation::finish).await?;
    cx.progress
        .notice("the CA rotation is complete: the old CAs are no longer trusted".to_string());
    Ok(())
}

/// The new cluster CA (PEM), as the rotation folder or, once switched, the
/// PKI holds it.
async fn new_ca_pem(pki: &std::path::Path) -> Result<String, String> {
    let pki = pki.to_path_buf();
    host::blocking(move || {
        rotation::new_ca(&pki, "ca")
            .map(|pem| String::from_utf8_lossy(&pem).trim().to_string())
            .map_err(|e| chain(&e))
    })
    .await
}

/// After a step's files: every kubeconfig written again (see
/// [`write_kubeconfigs`]), `done` said, then the components and the
/// manager's own units moved over (`components` and `manager` name what they
/// load, in their notices).
async fn move_over(
    cx: &mut PhaseContext<'_>,
    supervisor: &Supervisor,
    done: &str,
    components: &str,
    manager: &str,
) -> Result<(), PhaseError> {
    write_kubeconfigs(&cx.components.paths, cx.config)
        .await
        .map_err(|e| PhaseError::new(Phase::Certs, e))?;
    cx.progress.notice(done.to_string());
    move_components(cx, supervisor, components).await?;
    move_manager(cx, supervisor, manager).await
}

/// Writes every kubeconfig with the trust bundles as they are: one whose
/// embedded CA differs, or whose client certificate is not signed by the CA
/// that signs now, is written again.
async fn write_kubeconfigs(
    paths: &super::config::Paths,
    config: &super::config::ClusterConfig,
) -> Result<(), String> {
    let (paths, config) = (paths.clone(), config.clone());
    host::blocking(move || {
        kubeconfigs::write_all(&renewal::kubeconfigs_config(&paths, &config))
            .map(|_| ())
            .map_err(|e| chain(&e))
    })
    .await
}

/// Waits until every namespace's `kube-root-ca.crt` holds `new_ca` and,
/// unless `with_old`, nothing else.
async fn wait_published(
    cx: &mut PhaseContext<'_>,
    new_ca: &str,
    with_old: bool,
) -> Result<(), PhaseError> {
    let phase = Phase::Certs;
    let admin = cx.components.paths.admin_kubeconfig();
    let deadline = tokio::time::Instant::now() + PUBLISH_WITHIN;
    loop {
        let last = match published(&admin, new_ca, with_old).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(PhaseError::new(
                phase,
                format!(
                    "kube-root-ca.crt was not updated within {}s: {last}",
                    PUBLISH_WITHIN.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn published(admin: &std::path::Path, new_ca: &str, with_old: bool) -> Result<(), String> {
    let client = crate::bootstrap::client(admin)
        .await
        .map_err(|e| e.to_string())?;
    let maps: Api<ConfigMap> = Api::all(client);
    let list = maps
        .list(&ListParams::default().fields("metadata.name=kube-root-ca.crt"))
        .await
        .map_err(|e| e.to_string())?;
    for map in list {
        let namespace = map.metadata.namespace.clone().unwrap_or_default();
        let bundle = map
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .cloned()
            .unwrap_or_default();
        let certs = bundle.matches("BEGIN CERTIFICATE").count();
        let ok = bundle.contains(new_ca) && (with_old || certs == 1);
        if !ok {
            return Err(format!(
                "namespace {namespace}: {certs} certificate(s), the new CA {}",
                if bundle.contains(new_ca) {
                    "among them"
                } else {
                    "missing"
                }
            ));
        }
    }
    Ok(())
}

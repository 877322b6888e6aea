//! The volume provisioner of the `hostpath` StorageClasses: a volume is a
//! directory under `<state-dir>/volumes/<pv-name>/`, made by the manager
//! itself (no helper pod, no image: it works offline).
//!
//! It follows the external-provisioner protocol. The PV controller of
//! kube-controller-manager marks a claim of a class whose provisioner is
//! not in-tree with `volume.kubernetes.io/storage-provisioner`; for a
//! `WaitForFirstConsumer` class the scheduler, once a pod uses the claim,
//! names the node in `volume.kubernetes.io/selected-node`. Then this unit
//! makes the directory and a PersistentVolume `pvc-<claim uid>` (hostPath,
//! held to our node, the claim's size and access modes, `claimRef` to the
//! claim, the class's reclaim policy, `pv.kubernetes.io/provisioned-by`);
//! the PV controller binds the two. When a volume of ours with reclaim
//! policy `Delete` is `Released` (its claim was deleted), the directory and
//! then the PV are removed.
//!
//! Every step is idempotent and named from the claim's uid, so a restart
//! mid-way converges: a directory made without its PV is used by the PV made
//! next time; a PV that exists already is not made again; a Released
//! volume whose directory is gone is still deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::Unit;
use crate::components::ApiServer;
use crate::model::config::ClusterConfig;
use crate::supervisor::{TaskContext, TaskSpec};

/// The unit's name, as `status` shows it.
pub const NAME: &str = "volume-provisioner";
/// The provisioner of our StorageClasses: Docker Desktop's name, so that a
/// manifest written for it (a class of its own naming this provisioner)
/// is served here too.
pub const PROVISIONER: &str = "docker.io/hostpath";
/// Set by the scheduler on a claim of a `WaitForFirstConsumer` class.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set by the PV controller on a claim: who is to provision it.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Set on the volumes we make: whose they are (kube-controller-manager then
/// leaves their deletion to us).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// How soon a failed reconcile is tried again.
const RETRY: Duration = Duration::from_secs(3);

/// The unit as declared: a client of the API server.
pub const UNIT: Unit = Unit {
    name: NAME,
    needs: &[&ApiServer],
    make: |config, _| unit(config),
};

/// The supervised unit: runs the provisioner of a cluster with `config`.
pub fn unit(config: &ClusterConfig) -> TaskSpec {
    let paths = config.paths();
    let node = config.node_name.clone();
    TaskSpec::new(NAME, move |ctx| {
        let kubeconfig = paths.admin_kubeconfig();
        let volumes = paths.volumes.clone();
        let node = node.clone();
        async move { run(ctx, &kubeconfig, volumes, node).await }
    })
}

/// What to do for a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimAction {
    /// Not ours, bound already, or going away.
    Ignore,
    /// Ours, but no pod uses it yet (`WaitForFirstConsumer`).
    WaitForConsumer,
    /// Ours, and not servable: why.
    Refuse(String),
    /// Make this volume (its directory is its hostPath's path).
    Provision(Box<PersistentVolume>),
}

/// What to do for a volume.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeAction {
    Keep,
    /// Remove this directory, then the PV.
    Delete(PathBuf),
}

/// Whether a class is served here.
pub fn is_ours(class: &StorageClass) -> bool {
    class.provisioner == PROVISIONER
}

/// The name of the volume of a claim: external-provisioner's, from its uid,
/// so that a claim gets the same volume however often it is looked at, and
/// a new claim of the same name never gets an old volume.
pub fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    claim.metadata.uid.as_ref().map(|uid| format!("pvc-{uid}"))
}

/// The directory of the volume `name`, when `name` is one of a volume (no
/// path separator, no dot-only name): what is made and removed is always
/// directly under `volumes`.
pub fn volume_dir(volumes: &Path, name: &str) -> Option<PathBuf> {
    let safe =
        !name.is_empty() && !name.contains('/') && name != "." && name != ".." && name.len() <= 253;
    safe.then(|| volumes.join(name))
}

/// What to do for `claim`, of the class `class`, on the node `node`.
pub fn claim_action(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    volumes: &Path,
) -> ClaimAction {
    if !is_ours(class) || claim.metadata.deletion_timestamp.is_some() {
        return ClaimAction::Ignore;
    }
    let Some(spec) = claim.spec.as_ref() else {
        return ClaimAction::Ignore;
    };
    let bound = spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
        || claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if bound {
        return ClaimAction::Ignore;
    }
    let annotations = claim.metadata.annotations.clone().unwrap_or_default();
    let selected = annotations.get(SELECTED_NODE);
    let wait_for_consumer = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    match selected {
        None if wait_for_consumer => return ClaimAction::WaitForConsumer,
        Some(other) if other != node => return ClaimAction::Ignore,
        _ => {}
    }
    if spec.volume_mode.as_deref() == Some("Block") {
        return ClaimAction::Refuse(
            "volumeMode Block: the hostpath classes serve only Filesystem volumes".into(),
        );
    }
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return ClaimAction::Refuse(
            "a data source: the hostpath classes make only empty volumes".into(),
        );
    }
    let Some(name) = volume_name(claim) else {
        return ClaimAction::Ignore;
    };
    let Some(dir) = volume_dir(volumes, &name) else {
        return ClaimAction::Ignore;
    };
    let capacity: BTreeMap<_, _> = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| [("storage".to_string(), q.clone())].into())
        .unwrap_or_default();
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some([(PROVISIONED_BY.to_string(), PROVISIONER.to_string())].into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "k8s-manager".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some(capacity),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: Some("Directory".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some("Filesystem".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };
    ClaimAction::Provision(Box::new(pv))
}

/// What to do for a volume: one of ours, `Released` with reclaim policy
/// `Delete`, is deleted with its directory; every other one is kept.
pub fn volume_action(pv: &PersistentVolume, volumes: &Path) -> VolumeAction {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER);
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    let dir = pv
        .metadata
        .name
        .as_deref()
        .and_then(|name| volume_dir(volumes, name));
    match dir {
        Some(dir) if ours && released && delete => VolumeAction::Delete(dir),
        _ => VolumeAction::Keep,
    }
}

/// A reconcile that failed: tried again after [`RETRY`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(String);

struct Provisioner {
    client: kube::Client,
    node: String,
    volumes: PathBuf,
}

/// One run of the unit: both controllers, until asked to stop.
async fn run(
    mut ctx: TaskContext,
    kubeconfig: &Path,
    volumes: PathBuf,
    node: String,
) -> Result<(), String> {
    let client = crate::bootstrap::watch_client(kubeconfig)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let provisioner = Arc::new(Provisioner {
        client: client.clone(),
        node,
        volumes,
    });
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    );
    let pvs = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    );
    let (claims_seen, pvs_seen) = (claims.store(), pvs.store());
    let claims = claims
        .run(reconcile_claim, retry, provisioner.clone())
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!("{NAME}: claims: {err}");
            }
        });
    let pvs = pvs
        .run(reconcile_volume, retry, provisioner)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!("{NAME}: volumes: {err}");
            }
        });
    let readiness = ctx.clone();
    let ready = async move {
        // Both watches have listed what exists: the unit serves.
        if claims_seen.wait_until_ready().await.is_ok() && pvs_seen.wait_until_ready().await.is_ok()
        {
            readiness.ready();
        }
        futures::future::pending::<()>().await
    };
    tokio::select! {
        _ = ctx.stopping() => Ok(()),
        _ = claims => Err("the claims' watch ended".into()),
        _ = pvs => Err("the volumes' watch ended".into()),
        _ = ready => Ok(()),
    }
}

fn retry<K>(_: Arc<K>, err: &Failed, _: Arc<Provisioner>) -> Action {
    tracing::warn!("{NAME}: {err}; trying again in {RETRY:?}");
    Action::requeue(RETRY)
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    p: Arc<Provisioner>,
) -> Result<Action, Failed> {
    let Some(class_name) = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
    else {
        return Ok(Action::await_change());
    };
    let classes = Api::<StorageClass>::all(p.client.clone());
    let class = classes
        .get_opt(&class_name)
        .await
        .map_err(|e| Failed(format!("StorageClass {class_name}: {e}")))?;
    let Some(class) = class else {
        return Ok(Action::await_change());
    };
    let what = format!(
        "claim {}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    );
    match claim_action(&claim, &class, &p.node, &p.volumes) {
        ClaimAction::Ignore | ClaimAction::WaitForConsumer => Ok(Action::await_change()),
        ClaimAction::Refuse(why) => {
            tracing::warn!("{NAME}: {what}: cannot be served: {why}");
            Ok(Action::await_change())
        }
        ClaimAction::Provision(pv) => {
            let name = pv.metadata.name.clone().unwrap_or_default();
            let dir = volume_dir(&p.volumes, &name).expect("made from a safe name");
            make_dir(&dir).map_err(|e| Failed(format!("{what}: {}: {e}", dir.display())))?;
            let api = Api::<PersistentVolume>::all(p.client.clone());
            match api.create(&PostParams::default(), &pv).await {
                Ok(_) => tracing::info!("{NAME}: {what}: volume {name} at {}", dir.display()),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(Failed(format!("{what}: creating {name}: {e}"))),
            }
            Ok(Action::await_change())
        }
    }
}

async fn reconcile_volume(
    pv: Arc<PersistentVolume>,
    p: Arc<Provisioner>,
) -> Result<Action, Failed> {
    let VolumeAction::Delete(dir) = volume_action(&pv, &p.volumes) else {
        return Ok(Action::await_change());
    };
    let name = pv.metadata.name.clone().unwrap_or_default();
    let removed = crate::offload::blocking({
        let dir = dir.clone();
        move || std::fs::remove_dir_all(&dir)
    })
    .await;
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failed(format!("volume {name}: {}: {e}", dir.display()))),
    }
    let api = Api::<PersistentVolume>::all(p.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!("{NAME}: volume {name} released: deleted with its data"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(Failed(format!("volume {name}: deleting: {e}"))),
    }
    Ok(Action::await_change())
}

/// The volume's directory, writable by any user a pod runs as (as Docker
/// Desktop's and local-path's are).
fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    const NODE: &str = "docker-desktop";

    fn class(name: &str, reclaim: &str) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            provisioner: PROVISIONER.into(),
            reclaim_policy: Some(reclaim.into()),
            volume_binding_mode: Some("WaitForFirstConsumer".into()),
            ..StorageClass::default()
        }
    }

    fn claim(selected: Option<&str>) -> PersistentVolumeClaim {
        let mut annotations = BTreeMap::from([(STORAGE_PROVISIONER.into(), PROVISIONER.into())]);
        if let Some(node) = selected {
            annotations.insert(SELECTED_NODE.into(), node.into());
        }
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("apps".into()),
                uid: Some("1234-abcd".into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some("hostpath".into()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".into(), Quantity("1Gi".into()))].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Pending".into()),
                ..PersistentVolumeClaimStatus::default()
            }),
        }
    }

    fn provisioned(action: ClaimAction) -> PersistentVolume {
        match action {
            ClaimAction::Provision(pv) => *pv,
            other => panic!("not provisioned: {other:?}"),
        }
    }

    #[test]
    fn a_claim_with_its_node_selected_gets_a_volume_made_from_it() {
        let volumes = Path::new("/var/lib/k8s-manager/volumes");
        let pv = provisioned(claim_action(
            &claim(Some(NODE)),
            &class("hostpath", "Delete"),
            NODE,
            volumes,
        ));
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234-abcd"));
        assert_eq!(
            pv.metadata.annotations.as_ref().unwrap()[PROVISIONED_BY],
            PROVISIONER
        );
        let spec = pv.spec.unwrap();
        assert_eq!(
            spec.host_path.unwrap().path,
            "/var/lib/k8s-manager/volumes/pvc-1234-abcd"
        );
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("1Gi".into()));
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("hostpath"));
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(
            (
                claim_ref.namespace.as_deref(),
                claim_ref.name.as_deref(),
                claim_ref.uid.as_deref()
            ),
            (Some("apps"), Some("data"), Some("1234-abcd"))
        );
        let term = &spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms[0];
        let requirement = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(requirement.key, "kubernetes.io/hostname");
        assert_eq!(requirement.values.as_ref().unwrap(), &[NODE.to_string()]);
    }

    #[test]
    fn the_retain_class_makes_retained_volumes() {
        let pv = provisioned(claim_action(
            &claim(Some(NODE)),
            &class("hostpath-retain", "Retain"),
            NODE,
            Path::new("/v"),
        ));
        let spec = pv.spec.unwrap();
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("hostpath-retain"));
    }

    #[test]
    fn what_is_done_for_each_claim_state() {
        let class = class("hostpath", "Delete");
        let v = Path::new("/v");
        // No pod uses it yet.
        assert_eq!(
            claim_action(&claim(None), &class, NODE, v),
            ClaimAction::WaitForConsumer
        );
        // Immediate binding: no node is selected, and none is needed.
        let mut immediate = class.clone();
        immediate.volume_binding_mode = Some("Immediate".into());
        assert!(matches!(
            claim_action(&claim(None), &immediate, NODE, v),
            ClaimAction::Provision(_)
        ));
        // Another node's.
        assert_eq!(
            claim_action(&claim(Some("elsewhere")), &class, NODE, v),
            ClaimAction::Ignore
        );
        // Another provisioner's class.
        let mut theirs = class.clone();
        theirs.provisioner = "rancher.io/local-path".into();
        assert_eq!(
            claim_action(&claim(Some(NODE)), &theirs, NODE, v),
            ClaimAction::Ignore
        );
        // Bound already.
        let mut bound = claim(Some(NODE));
        bound.spec.as_mut().unwrap().volume_name = Some("pvc-1234-abcd".into());
        assert_eq!(claim_action(&bound, &class, NODE, v), ClaimAction::Ignore);
        // Going away.
        let mut deleted = claim(Some(NODE));
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(claim_action(&deleted, &class, NODE, v), ClaimAction::Ignore);
        // A block volume.
        let mut block = claim(Some(NODE));
        block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert!(matches!(
            claim_action(&block, &class, NODE, v),
            ClaimAction::Refuse(_)
        ));
    }

    fn volume(phase: &str, reclaim: &str, ours: bool) -> PersistentVolume {
        let mut pv = provisioned(claim_action(
            &claim(Some(NODE)),
            &class("hostpath", reclaim),
            NODE,
            Path::new("/v"),
        ));
        if !ours {
            pv.metadata.annotations = None;
        }
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..PersistentVolumeStatus::default()
        });
        pv
    }

    #[test]
    fn what_is_done_for_each_volume_state() {
        let v = Path::new("/v");
        assert_eq!(
            volume_action(&volume("Released", "Delete", true), v),
            VolumeAction::Delete("/v/pvc-1234-abcd".into())
        );
        for (phase, reclaim, ours) in [
            ("Bound", "Delete", true),
            ("Available", "Delete", true),
            ("Pending", "Delete", true),
            ("Released", "Retain", true),
            ("Released", "Delete", false),
        ] {
            assert_eq!(
                volume_action(&volume(phase, reclaim, ours), v),
                VolumeAction::Keep,
                "{phase} {reclaim} ours={ours}"
            );
        }
        // A name that is not one of a folder directly under volumes/.
        let mut odd = volume("Released", "Delete", true);
        odd.metadata.name = Some("..".into());
        assert_eq!(volume_action(&odd, v), VolumeAction::Keep);
    }

    #[test]
    fn a_volume_directory_is_made_writable_for_any_user_and_made_again_harmlessly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volumes/pvc-1");
        make_dir(&volume).unwrap();
        std::fs::write(volume.join("data"), "kept").unwrap();
        make_dir(&volume).unwrap();
        let mode = std::fs::metadata(&volume).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
        assert_eq!(
            std::fs::read_to_string(volume.join("data")).unwrap(),
            "kept"
        );
    }
}

//! The image-sync unit: follows the Docker engine's image events and keeps
//! containerd's `k8s.io` namespace holding every tagged Docker image under
//! the name Kubernetes resolves (see [`super::plan`] for the rules).
//!
//! Without an engine (no socket, dockerd stopped or restarting) the unit
//! still runs: it says in its detail line why it is idle and tries again
//! with backoff (0.5 s doubling to 30 s). Events are coalesced: after one,
//! the unit waits until the engine has been quiet for [`QUIET`] (at most
//! [`MAX_DELAY`]), then makes one pass over everything, so a burst of tags
//! is one pass.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::containerd::Containerd;
use super::docker::Engine;
use super::docker_store::DockerStore;
use super::handle::{ImageSync, Request};
use super::oci_layout::{self, Carried, ChannelWriter};
use super::plan::{self, Action};
use crate::model::images::{ImageEntry, Problem, SyncReport};
use crate::runtime::Cri;
use crate::supervisor::TaskContext;

/// Quiet time after an event before the pass.
const QUIET: Duration = Duration::from_millis(50);
/// The longest a pass waits for a burst of events to end.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// How soon a pass looks again at names kept because a container used them.
const RESWEEP: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// One image's move; a 1 GB image takes well under a minute here.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// What a pass works with.
struct Sides {
    engine: Engine,
    /// The engine's store, when it can be read in place.
    store: Option<DockerStore>,
    containerd: Containerd,
    cri: Cri,
    /// Config digests by manifest digest: a manifest never changes.
    configs: HashMap<String, Option<String>>,
    /// The names this unit made or labelled since it started: still ours
    /// when CRI's pull of one (a `:latest`) has rewritten its labels.
    made: HashSet<String>,
}

/// One run of the unit (which `controllers::image_sync` supervises):
/// follows the engine at `docker_socket` into containerd at
/// `containerd_socket`, answering the requests `handle` brings, until asked
/// to stop.
pub async fn run(
    mut ctx: TaskContext,
    docker_socket: PathBuf,
    containerd_socket: PathBuf,
    handle: ImageSync,
) -> Result<(), String> {
    let mut requests = handle.attach();
    let containerd = Containerd::connect(&containerd_socket)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let cri = Cri::connect(&containerd_socket)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    ctx.ready();
    let mut backoff = BACKOFF_START;
    let mut configs = HashMap::new();
    let mut made = HashSet::new();
    loop {
        let engine = match Engine::connect(&docker_socket).await {
            Ok(engine) => engine,
            Err(why) => {
                let idle = format!("idle: {why}");
                ctx.detail(Some(format!(
                    "{idle} (trying again every {}s at most)",
                    BACKOFF_MAX.as_secs()
                )));
                let mut stop = ctx.clone();
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = stop.stopping() => return Ok(()),
                        _ = &mut wait => break,
                        Some(request) = requests.recv() => refuse(request, &idle),
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_START;
        let store = match engine.store().await {
            Ok(store) => Some(store),
            Err(why) => {
                tracing::info!("image sync: images are exported by Docker: {why}");
                None
            }
        };
        let mut sides = Sides {
            engine,
            store,
            containerd: containerd.clone(),
            cri: cri.clone(),
            configs: std::mem::take(&mut configs),
            made: std::mem::take(&mut made),
        };
        let gone = follow(&mut ctx, &mut sides, &mut requests, &docker_socket).await;
        configs = sides.configs;
        made = sides.made;
        match gone {
            None => return Ok(()),
            Some(why) => {
                tracing::info!("image sync: {why}; reconnecting");
                ctx.detail(Some(format!("idle: {why}; reconnecting")));
            }
        }
    }
}

fn refuse(request: Request, why: &str) {
    let why = format!("image sync is {why}");
    match request {
        Request::Sync { reply, .. } => {
            let _ = reply.send(Err(why));
        }
        Request::List { reply } => {
            let _ = reply.send(Err(why));
        }
    }
}

/// Follows one connection to the engine: a first pass, then a pass after
/// each burst of events and for each request. Returns `None` when asked to
/// stop, or why the engine was lost.
async fn follow(
    ctx: &mut TaskContext,
    sides: &mut Sides,
    requests: &mut mpsc::Receiver<Request>,
    socket: &std::path::Path,
) -> Option<String> {
    // Subscribed before the first pass, so nothing between is missed.
    let mut events = Box::pin(sides.engine.image_events());
    let version = sides.engine.version().await.unwrap_or_default();
    let following = format!("following Docker {version} at {}", socket.display());
    let mut stop = ctx.clone();
    let mut pending = true;
    // Names kept for a container: looked at again after a while, as no
    // Docker event will say when the container is gone.
    let mut kept = false;
    loop {
        if pending {
            pending = false;
            match pass(sides, None).await {
                Ok(report) => {
                    kept = !report.kept.is_empty();
                    ctx.detail(Some(summary(&following, &report)));
                }
                Err(err) => {
                    tracing::warn!("image sync pass failed: {err}");
                    ctx.detail(Some(format!("{following}; last pass failed: {err}")));
                }
            }
        }
        tokio::select! {
            _ = stop.stopping() => return None,
            _ = tokio::time::sleep(RESWEEP), if kept => pending = true,
            Some(request) = requests.recv() => match request {
                Request::Sync { refs, reply } => {
                    let only = (!refs.is_empty()).then_some(refs);
                    let report = pass(sides, only.as_deref()).await;
                    if let Ok(report) = &report {
                        ctx.detail(Some(summary(&following, report)));
                    }
                    let _ = reply.send(report);
                }
                Request::List { reply } => {
                    let _ = reply.send(list(sides).await);
                }
            },
            event = events.next() => match event {
                Some(Ok(_)) => {
                    coalesce(&mut events).await;
                    pending = true;
                }
                Some(Err(err)) => return Some(format!("the Docker engine's events ended: {err}")),
                None => return Some("the Docker engine closed its event stream".into()),
            },
        }
    }
}

/// Waits until no event came for [`QUIET`], or [`MAX_DELAY`] passed.
async fn coalesce<S: futures::Stream + Unpin>(events: &mut S) {
    let deadline = tokio::time::Instant::now() + MAX_DELAY;
    loop {
        let quiet = tokio::time::sleep(QUIET);
        tokio::select! {
            _ = quiet => return,
            _ = tokio::time::sleep_until(deadline) => return,
            next = events.next() => if next.is_none() { return },
        }
    }
}

/// Imports Docker's image `id` into `k8s.io` as `name`: read in place when
/// the store allows, else exported by Docker (`docker save` of
/// `docker_tag`). Says how, for the log.
async fn import(
    sides: &Sides,
    id: &str,
    docker_tag: &str,
    name: &str,
) -> Result<String, crate::runtime::RuntimeError> {
    if let Some(store) = &sides.store {
        match in_place(store, &sides.containerd, id, name).await {
            Ok(carried) => {
                return Ok(format!(
                    "read in place: {} of {} layers written, {:.1} MB",
                    carried.layers,
                    carried.of_layers,
                    carried.bytes as f64 / 1e6
                ));
            }
            Err(why) => tracing::warn!(
                "image sync: {name}: reading Docker's store failed ({why}); exported by Docker instead"
            ),
        }
    }
    let archive = sides.engine.export(docker_tag);
    sides.containerd.import(archive, IMPORT_TIMEOUT).await?;
    Ok("exported by Docker".into())
}

/// The layers of `id` that containerd lacks, read from Docker's store, and
/// the image made of them and of those it has.
async fn in_place(
    store: &DockerStore,
    containerd: &Containerd,
    id: &str,
    name: &str,
) -> Result<Carried, String> {
    let (reader, owned) = (store.clone(), id.to_string());
    let config = tokio::task::spawn_blocking(move || reader.config(&owned))
        .await
        .map_err(|e| e.to_string())??;
    // The layers containerd has, by digest, with their lengths.
    let mut known = HashMap::new();
    for diff_id in &config.diff_ids {
        let size = containerd
            .blob_size(diff_id)
            .await
            .map_err(|e| crate::error::chain(&e))?;
        if let Some(size) = size.and_then(|s| u64::try_from(s).ok()) {
            known.insert(diff_id.clone(), size);
        }
    }
    let reader = store.clone();
    let image = {
        let known = known.clone();
        tokio::task::spawn_blocking(move || reader.image(config, &known))
            .await
            .map_err(|e| e.to_string())??
    };
    let present: HashSet<String> = known.into_keys().collect();
    // A move that stalls gives way to the export soon, not after
    // IMPORT_TIMEOUT: 30 s, and a second for every 20 MB to write (a 200 MB
    // image takes ~3.5 s here).
    let missing: u64 = image
        .layers
        .iter()
        .filter(|l| !present.contains(&l.diff_id))
        .map(|l| l.size)
        .sum();
    let limit = Duration::from_secs(30 + missing / 20_000_000);
    let (mut writer, archive) = ChannelWriter::new(4);
    let name = name.to_string();
    let writing = tokio::task::spawn_blocking(move || {
        oci_layout::write(&mut writer, &name, &image, &present)
    });
    let imported = containerd.import(archive, limit).await;
    let written = writing.await.map_err(|e| e.to_string())?;
    match (written, imported) {
        (Ok(carried), Ok(())) => Ok(carried),
        // The import ended first (failed, or out of time): its error says why.
        (Err(why), Err(err)) if why.contains(oci_layout::READER_STOPPED) => {
            Err(crate::error::chain(&err))
        }
        // The writer's error says why the archive was cut short.
        (Err(why), _) => Err(why),
        (Ok(_), Err(err)) => Err(crate::error::chain(&err)),
    }
}

fn summary(following: &str, report: &SyncReport) -> String {
    let synced = report.present.len() + report.imported.len() + report.tagged.len();
    let tags = if synced == 1 { "tag" } else { "tags" };
    let mut line = format!("{following}: {synced} {tags} in k8s.io");
    if !report.failed.is_empty() {
        line.push_str(&format!(
            ", {} failed (images sync says why)",
            report.failed.len()
        ));
    }
    line
}

/// What Docker has, and what `k8s.io` has.
async fn both(sides: &mut Sides) -> Result<(Vec<plan::DockerImage>, Vec<plan::K8sImage>), String> {
    let docker = sides.engine.images().await?;
    let mut k8s = sides
        .containerd
        .images(&mut sides.configs)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    for image in &mut k8s {
        image.synced |= sides.made.contains(&image.name);
    }
    Ok((docker, k8s))
}

async fn list(sides: &mut Sides) -> Result<Vec<ImageEntry>, String> {
    let (docker, k8s) = both(sides).await?;
    Ok(plan::entries(&docker, &k8s))
}

/// One pass: over everything, or over `only`.
async fn pass(sides: &mut Sides, only: Option<&[String]>) -> Result<SyncReport, String> {
    let (docker, k8s) = both(sides).await?;
    let in_use = match only {
        Some(_) => BTreeSet::new(),
        None => sides
            .cri
            .images_in_use()
            .await
            .map_err(|e| crate::error::chain(&e))?,
    };
    let plan = plan::plan(&docker, &k8s, &in_use, only);
    let mut report = SyncReport {
        present: plan.present,
        kept: plan
            .kept
            .into_iter()
            .map(|k| Problem {
                name: k.name,
                reason: k.reason,
            })
            .collect(),
        ..Default::default()
    };
    if let Some(refs) = only {
        let known: Vec<(String, Option<String>)> = docker
            .iter()
            .flat_map(|i| i.tags.iter())
            .map(|t| (t.clone(), super::reference::k8s_name(t)))
            .collect();
        for r in refs {
            let found = known.iter().any(|(tag, name)| {
                tag == r || name.is_some() && *name == super::reference::k8s_name(r)
            });
            if !found {
                report.failed.push(Problem {
                    name: r.clone(),
                    reason: "Docker has no image with this tag".into(),
                });
            }
        }
    }
    for action in plan.actions {
        let (name, done) = match &action {
            Action::Import {
                id,
                docker_tag,
                name,
            } => {
                let imported = async {
                    let start = std::time::Instant::now();
                    let how = import(sides, id, docker_tag, name).await?;
                    let moved = start.elapsed();
                    sides.containerd.mark_synced(name, id).await?;
                    crate::runtime::images::wait_for_cri(&sides.cri, name).await?;
                    tracing::info!(
                        "image sync: {name} imported and unpacked in {moved:.2?} ({how}), seen by CRI after {:.2?}",
                        start.elapsed()
                    );
                    Ok(())
                };
                (name, imported.await.map(|()| &mut report.imported))
            }
            Action::Tag { id, source, name } => {
                let tagged = async {
                    sides.containerd.tag(source, name, id).await?;
                    crate::runtime::images::wait_for_cri(&sides.cri, name).await
                };
                (name, tagged.await.map(|()| &mut report.tagged))
            }
            Action::Mark { id, name } => {
                let marked = sides.containerd.mark_synced(name, id).await;
                match marked {
                    Ok(()) => {
                        sides.made.insert(name.clone());
                        continue;
                    }
                    Err(err) => (name, Err(err)),
                }
            }
            Action::Remove { name } => (
                name,
                sides
                    .containerd
                    .remove(name)
                    .await
                    .map(|()| &mut report.removed),
            ),
        };
        match done {
            Ok(list) => {
                match action {
                    Action::Remove { .. } => sides.made.remove(name),
                    _ => sides.made.insert(name.clone()),
                };
                list.push(name.clone())
            }
            Err(err) => {
                tracing::warn!("image sync: {name}: {}", crate::error::chain(&err));
                report.failed.push(Problem {
                    name: name.clone(),
                    reason: crate::error::chain(&err),
                });
            }
        }
    }
    for name in &report.tagged {
        tracing::info!("image sync: {name} tagged in k8s.io");
    }
    for name in &report.removed {
        tracing::info!("image sync: {name} removed from k8s.io");
    }
    Ok(report)
}

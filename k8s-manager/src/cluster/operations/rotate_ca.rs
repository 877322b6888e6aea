//! The cluster CAs replaced on a running cluster: the `rotate-ca` operation
//! (`k8s-manager certs rotate-ca`, `POST /v1/certs/rotate-ca`).
//!
//! It runs as the renewal does (only on a running cluster), through the
//! resumable file steps of [`crate::pki::rotation`], each followed by the
//! moves the renewal makes ([`crate::cluster::rollout`]: components moved
//! over one at a time, the manager's units restarted and the user's
//! kubeconfigs merged again). Its steps:
//!
//! 1. `new-cas`: new CAs made next to the old ones;
//! 2. `trust-both`: every trust bundle holds both: the components that read one at start
//!    are restarted, every kubeconfig embeds both; then the wait until every
//!    namespace's `kube-root-ca.crt` (filled by the controller-manager from
//!    its `--root-ca-file`) holds the new CA, and [`PROJECTION`] for the
//!    kubelet to refresh the copies projected into running pods: a pod that
//!    verifies the API server with its `ca.crt` then trusts both;
//! 3. `switch`: the new CAs sign: every leaf and kubeconfig client certificate is
//!    re-issued under them, the components moved over;
//! 4. `trust-new`: the bundles hold the new CA only, the components moved over again (the
//!    controller-manager's restart updates every `kube-root-ca.crt`);
//! 5. `finish`: the rotation's folder (the old keys) is removed.
//!
//! The service-account key pair is kept: tokens stay valid. A failure or a
//! crash leaves the step on disk; the next `rotate-ca` resumes there, and an
//! enable in between starts the cluster with the files as they are (a leaf
//! not signed by its CA is re-issued by the certs phase).

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::cluster::context::{Carrying, PhaseContext, run_on_running};
use crate::cluster::operation::{Needs, Operation, Step, Turn, World};
use crate::cluster::rollout;
use crate::error::chain;
use crate::model::config::ClusterConfig;
use crate::model::error::OperationError;
use crate::pki::rotation;
use crate::pki::{KeyAlgorithm, kubeconfigs};

/// The operation's name in its events.
pub const NAME: &str = "rotate-ca";
/// How long the kubelet may take to refresh a ConfigMap projected into a
/// running pod once the object changed: its pod sync period (1 minute) plus
/// its ConfigMap cache's TTL, with margin. The kubelet exposes no signal of
/// it; waiting a bounded time is what kubeadm's manual rotation guide says too.
pub const PROJECTION: Duration = Duration::from_secs(90);
/// How long the controller-manager has to publish the new bundle in every
/// namespace after its restart.
const PUBLISH_WITHIN: Duration = Duration::from_secs(120);

/// The operation: the CAs of the running cluster of `config` replaced.
pub struct RotateCa {
    pub config: ClusterConfig,
}

impl Operation for RotateCa {
    fn name(&self) -> &'static str {
        NAME
    }

    fn needs(&self) -> Needs {
        Needs::RunningCluster
    }

    fn turn(&self) -> Turn {
        Turn::CancelledByStops
    }

    fn done(&self, seconds: f64) -> String {
        format!("cluster CAs rotated in {seconds:.1}s")
    }

    fn target(&self) -> Option<&ClusterConfig> {
        Some(&self.config)
    }

    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>> {
        async move {
            let steps = steps();
            run_on_running(world, &self.config, NAME, rotation::Step::New, &steps).await
        }
        .boxed()
    }
}

/// A rotation as it goes; its state is the step it found on disk when it
/// began (a rotation cut short resumes there).
type Rotation<'b> = Carrying<'b, rotation::Step>;

type Done<'a> = BoxFuture<'a, Result<(), OperationError>>;

/// Each step moves every component over, one at a time, each given
/// [`rollout::READY_WITHIN`]; the trust steps also wait for the new bundle
/// to be published and projected.
fn steps<'b>() -> [Step<Rotation<'b>>; 5] {
    [
        Step::new("new-cas", "making the new CAs", 60, new_cas),
        Step::new(
            "trust-both",
            "trusting the old and the new CAs",
            1200,
            trust_both,
        ),
        Step::new(
            "switch",
            "re-issuing every certificate under the new CAs",
            900,
            switch,
        ),
        Step::new("trust-new", "trusting the new CAs only", 900, trust_new),
        Step::new("finish", "removing the old CAs", 30, finish),
    ]
}

/// Runs `work` on the PKI folder, off the runtime's threads.
async fn on_pki(
    cx: &PhaseContext<'_>,
    work: fn(&std::path::Path) -> Result<(), crate::pki::PkiError>,
) -> Result<(), OperationError> {
    let pki = cx.components.paths.pki.clone();
    crate::offload::blocking(move || work(&pki).map_err(|e| chain(&e)))
        .await
        .map_err(|e| cx.fail(e))
}

fn new_cas<'a>(run: &'a mut Rotation<'_>) -> Done<'a> {
    async move {
        let pki = run.cx.components.paths.pki.clone();
        run.state = crate::offload::blocking(move || {
            rotation::begin(&pki, KeyAlgorithm::default()).map_err(|e| chain(&e))
        })
        .await
        .map_err(|e| run.cx.fail(e))?;
        run.cx.notice(match run.state {
            rotation::Step::New => "new cluster CAs made (ca, front-proxy-ca, etcd/ca)".to_string(),
            step => format!("resuming the CA rotation at its step {step}"),
        });
        Ok(())
    }
    .boxed()
}

fn trust_both<'a>(run: &'a mut Rotation<'_>) -> Done<'a> {
    async move {
        if run.state > rotation::Step::TrustBoth {
            return Ok(());
        }
        let cx = &mut run.cx;
        on_pki(cx, rotation::trust_both).await?;
        move_over(
            cx,
            "the old and the new CAs are trusted",
            "both CAs",
            "the trust of both CAs",
        )
        .await?;
        wait_published(cx, true).await?;
        cx.notice(format!(
            "every kube-root-ca.crt holds both CAs; waiting {}s for the kubelet to refresh the copies in running pods",
            PROJECTION.as_secs()
        ));
        tokio::time::sleep(PROJECTION).await;
        Ok(())
    }
    .boxed()
}

fn switch<'a>(run: &'a mut Rotation<'_>) -> Done<'a> {
    async move {
        if run.state > rotation::Step::Switched {
            return Ok(());
        }
        let cx = &mut run.cx;
        on_pki(cx, rotation::switch).await?;
        // Every leaf is now not signed by its CA: the certs step of enable
        // re-issues each, with the subject and names of the settings; then
        // every kubeconfig client certificate (in `move_over`), for the same
        // reason.
        super::enable::certs(cx).await?;
        move_over(
            cx,
            "every certificate re-issued under the new CAs",
            "its certificate from the new CA",
            "the client certificate from the new CA",
        )
        .await
    }
    .boxed()
}

fn trust_new<'a>(run: &'a mut Rotation<'_>) -> Done<'a> {
    async move {
        let cx = &mut run.cx;
        on_pki(cx, rotation::trust_new).await?;
        move_over(
            cx,
            "only the new CAs are trusted",
            "the new CAs only",
            "the new CA",
        )
        .await?;
        wait_published(cx, false).await
    }
    .boxed()
}

fn finish<'a>(run: &'a mut Rotation<'_>) -> Done<'a> {
    async move {
        on_pki(&run.cx, rotation::finish).await?;
        run.cx
            .notice("the CA rotation is complete: the old CAs are no longer trusted".to_string());
        Ok(())
    }
    .boxed()
}

/// The new cluster CA (PEM), as the rotation folder or, once switched, the
/// PKI holds it.
async fn new_ca_pem(pki: &std::path::Path) -> Result<String, String> {
    let pki = pki.to_path_buf();
    crate::offload::blocking(move || {
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
    done: &str,
    components: &str,
    manager: &str,
) -> Result<(), OperationError> {
    write_kubeconfigs(&cx.components.paths, cx.config)
        .await
        .map_err(|e| cx.fail(e))?;
    cx.notice(done.to_string());
    rollout::move_components(cx, components).await?;
    rollout::move_manager(cx, manager).await
}

/// Writes every kubeconfig with the trust bundles as they are: one whose
/// embedded CA differs, or whose client certificate is not signed by the CA
/// that signs now, is written again.
async fn write_kubeconfigs(
    paths: &crate::model::config::Paths,
    config: &ClusterConfig,
) -> Result<(), String> {
    let (paths, config) = (paths.clone(), config.clone());
    crate::offload::blocking(move || {
        kubeconfigs::write_all(&super::enable::kubeconfigs_config(&paths, &config))
            .map(|_| ())
            .map_err(|e| chain(&e))
    })
    .await
}

/// Waits until every namespace's `kube-root-ca.crt` holds the new cluster
/// CA and, unless `with_old`, nothing else.
async fn wait_published(cx: &PhaseContext<'_>, with_old: bool) -> Result<(), OperationError> {
    let new_ca = new_ca_pem(&cx.components.paths.pki)
        .await
        .map_err(|e| cx.fail(e))?;
    let deadline = tokio::time::Instant::now() + PUBLISH_WITHIN;
    loop {
        let last = match cx.api.root_ca_published(&new_ca, with_old).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(cx.fail(format!(
                "kube-root-ca.crt was not updated within {}s: {last}",
                PUBLISH_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::cancel::CancelSignal;
    use crate::cluster::fakes::{self, Behaviour, World};

    fn every_component() -> Behaviour {
        Behaviour {
            inputs_changed: crate::components::ALL.iter().map(|c| c.name()).collect(),
            ..Behaviour::default()
        }
    }

    fn phases(world: &World) -> Vec<String> {
        world
            .journal
            .entries()
            .into_iter()
            .filter_map(|e| e.strip_prefix("phase ").map(str::to_string))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_walks_its_steps_and_leaves_only_the_new_cas_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let pki = config.paths().pki;
        let world = World::new(every_component());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        let old_ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        let rotate = RotateCa {
            config: config.clone(),
        };
        world
            .run(&rotate, &config.paths(), Some(config.clone()))
            .await
            .unwrap();
        let steps: Vec<String> = phases(&world)
            .into_iter()
            .skip_while(|p| p != "new-cas")
            .collect();
        assert_eq!(
            steps,
            ["new-cas", "trust-both", "switch", "trust-new", "finish"]
        );
        let j = &world.journal;
        j.before("phase trust-both", "hand over kube-apiserver");
        j.before("published both CAs", "phase switch");
        j.before("phase trust-new", "published the new CA");
        j.before("published the new CA", "phase finish");
        let new_ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        assert_ne!(new_ca, old_ca);
        let trusted = std::fs::read_to_string(rotation::trust_path(&pki, "ca")).unwrap();
        assert_eq!(trusted.trim(), new_ca.trim(), "only the new CA is trusted");
        assert_eq!(
            rotation::current(&pki).unwrap(),
            None,
            "the rotation is finished"
        );
        // The user's kubeconfig was merged again with the new CA.
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(new_ca.trim_end());
        let user = std::fs::read_to_string(dir.path().join("user.kubeconfig")).unwrap();
        assert!(
            user.contains(&encoded[..60]),
            "the user's kubeconfig has the new CA"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_cut_short_resumes_at_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let pki = config.paths().pki;
        let world = World::new(every_component());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        // An earlier rotation got as far as the switch, then stopped.
        rotation::begin(&pki, KeyAlgorithm::default()).unwrap();
        rotation::trust_both(&pki).unwrap();
        rotation::switch(&pki).unwrap();
        let rotate = RotateCa {
            config: config.clone(),
        };
        world
            .run(&rotate, &config.paths(), Some(config.clone()))
            .await
            .unwrap();
        assert!(
            world
                .notices()
                .contains(&"resuming the CA rotation at its step switched".to_string()),
            "{:?}",
            world.notices()
        );
        assert!(
            !world.journal.has("published both CAs"),
            "not trusted again"
        );
        assert!(world.journal.has("published the new CA"));
        assert_eq!(rotation::current(&pki).unwrap(), None);
    }
}

//! The enable schedule as one table, and the runner that walks it.
//!
//! Each row is a phase: its name, what it tells the user, its deadline, and
//! what happens in it, in this order: its own work, the components it starts,
//! those it starts early (ahead of their own phases, so that their start-up
//! overlaps this phase's wait; a failure there is left for their own phase to
//! report), the work it begins in the background, what it waits on, and its
//! work once those waits are met. So the overlaps read here: the image import
//! runs from preflight to the images phase, the API server starts while etcd
//! comes up, and everything that only needs the API starts while the API
//! server comes up.
//!
//! The runner sets the state and tells each phase, runs it under its deadline,
//! and ends it the moment the enable is cancelled: the phase's future is
//! dropped (a supervised start either happened or did not; the background
//! import is aborted with its `ctr`), and the enable ends with a `Cancelled`
//! error.

use std::time::Duration;

use super::event::Event;
use super::phases::{self, Background, PhaseContext, PhaseError, Wait, Work, code};
use super::state::{ClusterState, Phase};
use crate::components::{
    ApiServer, Component, ControllerManager, Etcd, KubeProxy, Kubelet, Scheduler,
};

/// One phase of the enable schedule.
pub struct Step {
    pub phase: Phase,
    pub description: &'static str,
    pub deadline: Duration,
    /// The phase's own work, first.
    pub work: Option<Work>,
    /// The components it starts (a no-op for those already running as asked).
    pub starts: &'static [&'static dyn Component],
    /// Components it starts ahead of their own phases.
    pub starts_early: &'static [&'static dyn Component],
    /// Work begun in the background, waited on by a later phase.
    pub begins: Option<Background>,
    /// What must be true before the phase ends.
    pub waits_on: &'static [Wait],
    /// The phase's own work once its waits are met.
    pub then: Option<Work>,
}

impl Step {
    const fn new(phase: Phase, description: &'static str, deadline_secs: u64) -> Step {
        Step {
            phase,
            description,
            deadline: Duration::from_secs(deadline_secs),
            work: None,
            starts: &[],
            starts_early: &[],
            begins: None,
            waits_on: &[],
            then: None,
        }
    }
    const fn work(mut self, work: Work) -> Step {
        self.work = Some(work);
        self
    }
    const fn starts(mut self, components: &'static [&'static dyn Component]) -> Step {
        self.starts = components;
        self
    }
    const fn starts_early(mut self, components: &'static [&'static dyn Component]) -> Step {
        self.starts_early = components;
        self
    }
    const fn begins(mut self, background: Background) -> Step {
        self.begins = Some(background);
        self
    }
    const fn waits_on(mut self, waits: &'static [Wait]) -> Step {
        self.waits_on = waits;
        self
    }
    const fn then(mut self, work: Work) -> Step {
        self.then = Some(work);
        self
    }
}

/// The enable schedule. Deadlines are generous for a slow machine, never endless.
pub const ENABLE: [Step; 14] = [
    Step::new(Phase::Preflight, "checking the machine", 20)
        .work(Work::Preflight)
        .begins(Background::ImageImport),
    Step::new(Phase::Certs, "certificates", 20).work(Work::Certs),
    Step::new(Phase::Kubeconfigs, "component kubeconfigs", 20).work(Work::Kubeconfigs),
    Step::new(Phase::Cni, "pod network configuration", 20).work(Work::Cni),
    Step::new(Phase::Etcd, "starting etcd", 45)
        .work(Work::EtcdFirstStart)
        .starts(&[&Etcd])
        // It retries its etcd connection: its start-up overlaps etcd's.
        // (Started after etcd, so that the stop, in reverse, ends it first.)
        .starts_early(&[&ApiServer])
        .waits_on(&[Wait::Ready(&Etcd)])
        .then(Work::EtcdServed),
    Step::new(Phase::KubeApiserver, "starting kube-apiserver", 90)
        .starts(&[&ApiServer])
        // They only wait for the API to answer: each connects the moment it does.
        .starts_early(&[&ControllerManager, &Scheduler, &Kubelet, &KubeProxy])
        .waits_on(&[Wait::Ready(&ApiServer)])
        .then(Work::ApiEndpoint),
    Step::new(
        Phase::ControlPlane,
        "starting controller-manager and scheduler",
        45,
    )
    .starts(&[&ControllerManager, &Scheduler])
    .waits_on(&[Wait::Ready(&ControllerManager), Wait::Ready(&Scheduler)]),
    Step::new(Phase::Images, "importing pause and CoreDNS images", 90)
        .waits_on(&[Wait::ImageImport]),
    Step::new(Phase::Kubelet, "starting kubelet", 45)
        .starts(&[&Kubelet])
        .waits_on(&[Wait::Ready(&Kubelet)]),
    Step::new(Phase::KubeProxy, "starting kube-proxy", 45)
        .starts(&[&KubeProxy])
        .waits_on(&[Wait::Ready(&KubeProxy)]),
    Step::new(Phase::Bootstrap, "applying CoreDNS and RBAC", 90)
        .work(Work::Bootstrap)
        // The in-process units (the volume provisioner): the API answers,
        // and what they rely on is applied.
        .then(Work::Controllers),
    Step::new(Phase::WaitNode, "waiting for the node to be Ready", 90).waits_on(&[Wait::NodeReady]),
    Step::new(Phase::WaitDns, "waiting for CoreDNS to answer", 120)
        .waits_on(&[Wait::CoreDnsAnswers]),
    Step::new(Phase::Export, "merging the kubeconfig", 30).work(Work::Export),
];

/// The row of an enable phase.
pub fn step(phase: Phase) -> Option<&'static Step> {
    ENABLE.iter().find(|s| s.phase == phase)
}

/// A phase's deadline: its row's, and for stop and reset their own.
pub fn deadline(phase: Phase) -> Duration {
    step(phase).map_or(Duration::from_secs(120), |s| s.deadline)
}

/// Runs `schedule` top to bottom; the first failure, timeout or cancel ends it.
pub async fn run(schedule: &[Step], cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let cancel = cx.cancel.clone();
    for step in schedule {
        let phase = step.phase;
        cx.progress.set_state(ClusterState::Starting { phase });
        cx.progress.emit(Event::Phase {
            phase,
            description: step.description.into(),
        });
        let start = tokio::time::Instant::now();
        cx.deadline = step.deadline;
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(cancel.error(phase)),
            outcome = tokio::time::timeout(step.deadline, run_step(step, cx)) => {
                outcome.unwrap_or_else(|_| {
                    Err(PhaseError::with_code(
                        phase,
                        code::PHASE_TIMEOUT,
                        format!("did not finish within {}s", step.deadline.as_secs()),
                    ))
                })
            }
        };
        outcome?;
        cx.progress.emit(Event::PhaseDone {
            phase,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(())
}

async fn run_step(step: &Step, cx: &mut PhaseContext<'_>) -> Result<(), PhaseError> {
    let phase = step.phase;
    if let Some(work) = step.work {
        phases::work(work, cx).await?;
    }
    phases::start(cx, phase, step.starts).await?;
    for &component in step.starts_early {
        if let Err(err) = phases::start(cx, phase, &[component]).await {
            tracing::debug!("early start of {}: {err}", component.name());
        }
    }
    if let Some(background) = step.begins {
        cx.begin(background);
    }
    phases::wait_all(cx, phase, step.waits_on).await?;
    if let Some(work) = step.then {
        phases::work(work, cx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::cancel::CancelSignal;
    use crate::cluster::config::ClusterConfig;
    use crate::cluster::fakes::{self, Behaviour, World};
    use crate::supervisor::stale::StaleProcess;

    /// The fake API's journal line of the bootstrap phase's apply.
    const MANIFESTS_APPLIED: &str = "apply rbac.yaml,coredns.yaml,storage.yaml";

    const COMPONENTS: [&str; 6] = crate::bundle::manifest::CLUSTER_EXECUTABLES;

    /// Runs an enable in the background, cancels it once `seen` happened,
    /// and returns its error and how long it took to end after the cancel.
    async fn cancel_once(
        world: Arc<World>,
        config: ClusterConfig,
        seen: &str,
    ) -> (PhaseError, Duration) {
        let cancel = CancelSignal::new();
        let running = tokio::spawn({
            let (world, cancel) = (world.clone(), cancel.clone());
            async move { world.enable(&config, cancel).await }
        });
        let waiting = async {
            while !world.journal.has(seen) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap_or_else(|_| panic!("{seen:?} never happened: {:#?}", world.journal.entries()));
        // Stuck there, not passing by.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = std::time::Instant::now();
        cancel.cancel("a disable");
        let ended = tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the cancelled enable ends")
            .unwrap();
        (ended.unwrap_err(), asked.elapsed())
    }

    #[tokio::test]
    async fn the_pipeline_starts_early_what_the_schedule_says_and_waits_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        let j = &world.journal;
        let phases: Vec<String> = j
            .entries()
            .into_iter()
            .filter(|e| e.starts_with("phase "))
            .collect();
        let expected: Vec<String> = ENABLE
            .iter()
            .map(|s| format!("phase {}", s.phase))
            .collect();
        assert_eq!(phases, expected);
        // The import runs in the background from preflight on; the images
        // phase waits for it.
        j.before("import begins", "phase certs");
        j.before("import done", "phase kubelet");
        // The API server starts while etcd comes up.
        j.before("start etcd", "start kube-apiserver");
        j.before("start kube-apiserver", "ready etcd");
        j.before("ready etcd", "phase kube-apiserver");
        // What only needs the API starts while the API server comes up.
        for early in [
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        ] {
            j.before(&format!("start {early}"), "ready kube-apiserver");
        }
        j.before("ready kube-apiserver", "phase control-plane");
        // The `kubernetes` Service's endpoint as soon as the API answers,
        // before kube-proxy's first sync.
        j.before("ready kube-apiserver", "apply apiserver-endpoints.yaml");
        j.before("apply apiserver-endpoints.yaml", "phase control-plane");
        j.before(MANIFESTS_APPLIED, "node docker-desktop ready");
        j.before("node docker-desktop ready", "coredns answers");
        // The in-process units start once the API answers and the
        // manifests (RBAC, StorageClasses) are applied.
        for unit in crate::controllers::NAMES {
            let started = format!("start task {unit}");
            j.before("ready kube-apiserver", &started);
            j.before(MANIFESTS_APPLIED, &started);
            j.before(&started, "phase wait-node");
        }
        // Each started once, in the order the stop reverses.
        for name in COMPONENTS {
            let starts = j
                .entries()
                .iter()
                .filter(|e| **e == format!("start {name}"))
                .count();
            assert_eq!(starts, 1, "{name}: {:#?}", j.entries());
        }
        let units: Vec<&str> = COMPONENTS
            .into_iter()
            .chain(crate::controllers::NAMES)
            .collect();
        assert_eq!(world.running(), units);
        assert!(!config.paths().etcd_first_start.exists());
        let exported = std::fs::read_to_string(dir.path().join("user.kubeconfig")).unwrap();
        assert!(exported.contains("docker-desktop"), "{exported}");
    }

    #[tokio::test]
    async fn a_failure_names_its_phase_with_the_components_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let log = config.paths().log("kube-apiserver");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(
            &log,
            "I0101 starting\nE0101 open /pki/sa.key: no such file\n",
        )
        .unwrap();
        let world = World::new(Behaviour {
            crashing: ["kube-apiserver"].into(),
            ..Behaviour::default()
        });
        let err = world
            .enable(&config, CancelSignal::new())
            .await
            .unwrap_err();
        assert_eq!(err.phase, Phase::KubeApiserver);
        assert_eq!(err.code, code::PHASE_FAILED);
        assert!(
            err.message.contains("kube-apiserver keeps exiting"),
            "{err}"
        );
        assert_eq!(
            err.logs.last().unwrap(),
            "E0101 open /pki/sa.key: no such file"
        );
        assert!(!world.journal.has("phase control-plane"));
    }

    #[tokio::test]
    async fn a_cancel_ends_a_phase_stuck_in_blocking_work_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::new(Behaviour {
            bundle_check_stuck: true,
            ..Behaviour::default()
        });
        let config = fakes::config(dir.path());
        let (err, took) = cancel_once(world.clone(), config, "check bundle").await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(
            (err.phase, err.code.as_str()),
            (Phase::Preflight, code::CANCELLED)
        );
        assert_eq!(err.message, "cancelled by a disable");
        assert!(world.journal.has("bundle check ended"));
        assert!(!world.journal.has("phase certs"));
    }

    #[tokio::test]
    async fn a_cancel_aborts_the_background_import_and_keeps_etcds_first_start_mark() {
        let dir = tempfile::tempdir().unwrap();
        let world = World::new(Behaviour {
            import_stuck: true,
            never_ready: ["etcd"].into(),
            ..Behaviour::default()
        });
        let config = fakes::config(dir.path());
        let paths = config.paths();
        let (err, took) = cancel_once(world.clone(), config, "start kube-apiserver").await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(
            (err.phase, err.code.as_str()),
            (Phase::Etcd, code::CANCELLED)
        );
        // The import's task is aborted: its future is dropped (with its `ctr`).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            world.journal.has("import ended"),
            "{:#?}",
            world.journal.entries()
        );
        assert!(!world.journal.has("import done"));
        // etcd never served: the mark says so to the next start.
        assert!(paths.etcd_first_start.exists());
    }

    #[tokio::test]
    async fn an_etcd_first_start_cut_short_is_made_again_and_a_served_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        let paths = config.paths();
        // Cut short: the mark is there, and a member folder with no cluster in it.
        std::fs::create_dir_all(paths.etcd_data.join("member/wal")).unwrap();
        std::fs::write(&paths.etcd_first_start, "").unwrap();
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        assert!(!paths.etcd_data.join("member").exists(), "not made again");
        assert!(!paths.etcd_first_start.exists());
        assert!(
            world
                .notices()
                .iter()
                .any(|n| n.contains("etcd's first start was cut short")),
            "{:?}",
            world.notices()
        );
        // Served (no mark): its data is the cluster's, and stays.
        std::fs::create_dir_all(paths.etcd_data.join("member/snap")).unwrap();
        let world = World::new(Behaviour::default());
        world.enable(&config, CancelSignal::new()).await.unwrap();
        assert!(paths.etcd_data.join("member/snap").exists());
        assert!(
            !paths.etcd_first_start.exists(),
            "a served folder is not marked"
        );
        assert!(world.notices().iter().all(|n| !n.contains("cut short")));
    }

    #[tokio::test]
    async fn after_a_manager_died_mid_start_the_next_enable_ends_its_processes_and_converges() {
        let dir = tempfile::tempdir().unwrap();
        let config = fakes::config(dir.path());
        // The first manager gets as far as the API server, then dies.
        let first = World::new(Behaviour {
            never_ready: ["kube-apiserver"].into(),
            ..Behaviour::default()
        });
        let (err, _) = cancel_once(first.clone(), config.clone(), "start kube-proxy").await;
        assert_eq!(err.phase, Phase::KubeApiserver);
        let left: Vec<StaleProcess> = first
            .running()
            .into_iter()
            .enumerate()
            .map(|(i, component)| StaleProcess {
                pid: 4000 + i as u32,
                component,
            })
            .collect();
        assert_eq!(left.len(), COMPONENTS.len());
        // The next one ends what it left before its checks, and converges.
        let next = World::new(Behaviour {
            stale: left,
            ..Behaviour::default()
        });
        next.enable(&config, CancelSignal::new()).await.unwrap();
        next.journal.before("end stale", "check host");
        let notice = next
            .notices()
            .into_iter()
            .find(|n| n.starts_with("ended processes left by an earlier manager"))
            .expect("a notice of what was ended");
        assert!(notice.contains("etcd (4000)"), "{notice}");
        assert_eq!(next.running()[..COMPONENTS.len()], COMPONENTS);
    }

    #[test]
    fn the_schedule_runs_the_enable_phases_in_their_order() {
        let phases: Vec<Phase> = ENABLE.iter().map(|s| s.phase).collect();
        assert_eq!(phases, Phase::ENABLE);
    }

    #[test]
    fn every_phase_has_a_deadline_and_a_description() {
        for step in &ENABLE {
            assert!(step.deadline >= Duration::from_secs(20), "{}", step.phase);
            assert!(!step.description.is_empty(), "{}", step.phase);
            assert_eq!(step.phase.description(), step.description);
        }
    }

    #[test]
    fn each_component_is_started_by_its_own_phase_and_waited_on() {
        for step in &ENABLE {
            for component in step.starts {
                let waited = step
                    .waits_on
                    .iter()
                    .any(|w| matches!(w, Wait::Ready(c) if c.name() == component.name()));
                assert!(
                    waited,
                    "{} starts {} without waiting",
                    step.phase,
                    component.name()
                );
            }
        }
    }
}

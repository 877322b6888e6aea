//! Operations as one concept. Enable, disable, reset, `certs renew` and
//! `certs rotate-ca` are each an [`Operation`]: a name, what it needs (a
//! running cluster or not), how it stands to the enables around it, and its
//! work over a [`World`]. The engine runs every one of them the same way
//! (`Engine::run`): it takes the operation's turn, holds its cancel signal,
//! tells `started` and `done`, records a failure, and ends it the moment it
//! is cancelled. A new operation is one file under [`super::operations`].
//!
//! An operation's work is a list of [`Step`]s — a name (the phase its
//! progress and its errors are told under), a description, a deadline and
//! the work — walked by [`run_steps`], as kubeadm's workflow phases are.

use std::time::Duration;

use futures::future::BoxFuture;

use super::cancel::CancelSignal;
use super::host::{ClusterApi, Host};
use crate::model::config::{ClusterConfig, Paths};
use crate::model::error::{OperationError, code};
use crate::model::event::Event;
use crate::model::state::{ClusterState, Phase};

/// What an operation needs before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: it works on a stopped, broken or half-started cluster, and
    /// its failure is the cluster's state (`error in phase …`).
    Nothing,
    /// A running cluster: on any other it ends at once with
    /// [`code::NOT_RUNNING`]. Its failure leaves the cluster running, and
    /// its state as it was.
    RunningCluster,
}

/// How an operation stands to the enables asked for around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// It cancels the enables running and queued first, for this reason ("a
    /// disable"), and nothing cancels it.
    CancelsEnables(&'static str),
    /// It is cancelled as an enable is: by the next disable, reset or
    /// shutdown, even one that comes before its turn.
    CancelledByStops,
}

/// One operation: what the engine runs, one at a time.
pub trait Operation: Send + Sync {
    /// Its name in its events and errors (`enable`, `renew-certs`).
    fn name(&self) -> &'static str;
    fn needs(&self) -> Needs;
    fn turn(&self) -> Turn;
    /// The `done` event's sentence once it succeeded, after `seconds`.
    fn done(&self, seconds: f64) -> String;
    /// The configuration it runs the cluster with, if it brings one up or
    /// works on one (else it works on the cluster last made).
    fn target(&self) -> Option<&ClusterConfig> {
        None
    }
    /// Its work.
    fn run<'a>(&'a self, world: &'a World<'a>) -> BoxFuture<'a, Result<(), OperationError>>;
}

/// What an operation works with: where it reports and the parts of the
/// world it changes ([`Host`]), the cluster's endpoints, its cancel signal,
/// the state folder, and the cluster last made (the record's), which a stop
/// and a reset take down.
pub struct World<'a> {
    pub host: Host<'a>,
    pub api: &'a dyn ClusterApi,
    pub cancel: CancelSignal,
    pub paths: &'a Paths,
    pub last_made: Option<ClusterConfig>,
    /// The cancel signal of enables asked for from now on: an enable that
    /// an operation runs after its own work (a reset's fresh cluster) is
    /// cancelled by a disable asked for meanwhile.
    pub next_enables: CancelSignal,
}

/// One step: its name, what it tells the user, its deadline and its work.
pub struct Step<C> {
    pub phase: Phase,
    pub description: &'static str,
    pub deadline: Duration,
    pub work: for<'a> fn(&'a mut C) -> BoxFuture<'a, Result<(), OperationError>>,
}

impl<C> Step<C> {
    pub const fn new(
        name: &'static str,
        description: &'static str,
        deadline_secs: u64,
        work: for<'a> fn(&'a mut C) -> BoxFuture<'a, Result<(), OperationError>>,
    ) -> Step<C> {
        Step {
            phase: Phase::named(name),
            description,
            deadline: Duration::from_secs(deadline_secs),
            work,
        }
    }
}

/// What the steps of an operation run over.
pub trait StepContext: Send {
    fn progress(&self) -> &dyn super::progress::Progress;
    fn cancel(&self) -> &CancelSignal;
    /// The step now running: its name for the errors of its work, its
    /// deadline for its waits.
    fn enter(&mut self, phase: &Phase, deadline: Duration);
}

/// Whether each step is the cluster's state while it runs (an enable's
/// `starting (etcd)`), or only told as progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    AsStarting,
    AsProgress,
}

/// Runs `steps` top to bottom, each under its deadline; the first failure,
/// timeout or cancel ends the walk. A cancel drops the step's future at
/// once (blocking work runs off the runtime's threads and is only awaited).
pub async fn run_steps<C: StepContext>(
    steps: &[Step<C>],
    cx: &mut C,
    shown: Shown,
) -> Result<(), OperationError> {
    let cancel = cx.cancel().clone();
    for step in steps {
        let phase = step.phase.clone();
        if shown == Shown::AsStarting {
            cx.progress().set_state(ClusterState::Starting {
                phase: phase.clone(),
            });
        }
        cx.progress().emit(Event::Phase {
            phase: phase.clone(),
            description: step.description.into(),
        });
        let start = tokio::time::Instant::now();
        cx.enter(&phase, step.deadline);
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(cancel.error(phase.clone())),
            outcome = tokio::time::timeout(step.deadline, (step.work)(cx)) => {
                outcome.unwrap_or_else(|_| {
                    Err(OperationError::with_code(
                        phase.clone(),
                        code::PHASE_TIMEOUT,
                        format!("did not finish within {}s", step.deadline.as_secs()),
                    ))
                })
            }
        };
        outcome?;
        cx.progress().emit(Event::PhaseDone {
            phase,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(())
}

/// The names of `steps`, in order.
pub fn names<C>(steps: &[Step<C>]) -> Vec<&str> {
    steps.iter().map(|s| s.phase.name()).collect()
}

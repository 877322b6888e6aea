//! In-process units: a controller or a watcher that runs inside the manager
//! under the same lifecycle as the processes (k0s's component manager is the
//! model): started in order, reporting ready, restarted with backoff when it
//! fails or ends on its own, stopped in reverse order.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{BACKOFF_MAX, BACKOFF_START, ChildStatus, RunState, STABLE_AFTER};
use crate::sys::now_rfc3339;

/// One run of a task: ends with `Err` when it failed (it is restarted), or
/// `Ok` when it returned (also restarted, unless it was asked to stop).
pub type TaskRun = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How to run a task: called again for each restart.
pub type TaskFn = Arc<dyn Fn(TaskContext) -> TaskRun + Send + Sync>;

/// What a supervised task is.
#[derive(Clone)]
pub struct TaskSpec {
    pub name: String,
    pub run: TaskFn,
}

impl TaskSpec {
    pub fn new<F, Fut>(name: impl Into<String>, run: F) -> TaskSpec
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        TaskSpec {
            name: name.into(),
            run: Arc::new(move |ctx| Box::pin(run(ctx))),
        }
    }
}

impl std::fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskSpec")
            .field("name", &self.name)
            .finish()
    }
}

/// What a task's run is given: how to say it is ready, and how to hear
/// that it is asked to stop (it then has the stop's grace to return; after
/// that it is dropped).
#[derive(Clone)]
pub struct TaskContext {
    status: Arc<Mutex<ChildStatus>>,
    stop: watch::Receiver<bool>,
}

impl TaskContext {
    /// The task serves: its state turns `running`.
    pub fn ready(&self) {
        let mut status = self.status.lock().expect("status lock");
        if status.state == RunState::Starting {
            status.state = RunState::Running;
            status.up_since = Some(now_rfc3339());
        }
    }

    /// Says in a line what the task does now (shown by `status`); `None`
    /// clears it.
    pub fn detail(&self, detail: Option<String>) {
        self.status.lock().expect("status lock").detail = detail;
    }

    /// Resolves once the task is asked to stop.
    pub async fn stopping(&mut self) {
        while !*self.stop.borrow_and_update() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A new task's status: starting, until it says it is ready.
pub(super) fn initial_status(name: &str) -> ChildStatus {
    ChildStatus {
        name: name.to_string(),
        kind: super::UnitKind::Task,
        state: RunState::Starting,
        pid: None,
        up_since: None,
        restarts: 0,
        last_exit: None,
        detail: None,
        cpu_millis: None,
        memory_bytes: None,
    }
}

/// Runs the task until asked to stop, restarting it with exponential
/// backoff after each failure or unasked return.
pub(super) async fn supervise(
    spec: TaskSpec,
    status: Arc<Mutex<ChildStatus>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let ctx = TaskContext {
            status: status.clone(),
            stop: stop.clone(),
        };
        let mut run = (spec.run)(ctx);
        let ended = tokio::select! {
            ended = &mut run => ended,
            _ = stop.changed() => {
                // Its own grace to return, as a process gets after SIGTERM.
                if tokio::time::timeout(grace, &mut run).await.is_err() {
                    tracing::warn!("task {} did not stop within {grace:?}: dropped", spec.name);
                }
                break;
            }
        };
        // A task that saw the stop itself returned as asked: no restart
        // (and no warning that it returned).
        if *stop.borrow() {
            break;
        }
        let exit = match ended {
            Ok(()) => "returned".to_string(),
            Err(err) => format!("failed: {err}"),
        };
        if started.elapsed() > STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        tracing::warn!("task {} {exit}; restarting in {backoff:?}", spec.name);
        {
            let mut st = status.lock().expect("status lock");
            st.state = RunState::Backoff;
            st.up_since = None;
            st.last_exit = Some(exit);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        let mut st = status.lock().expect("status lock");
        st.state = RunState::Starting;
        st.restarts += 1;
    }
    let mut st = status.lock().expect("status lock");
    st.state = RunState::Stopped;
    st.up_since = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that returns once it sees its stop was asked to: it is not
    /// told as a return to restart after (no warning, no last exit). Many
    /// rounds: which of the two ends the supervisor sees first is chance.
    #[tokio::test]
    async fn a_task_that_returns_at_its_stop_is_stopped_not_restarted() {
        for _ in 0..50 {
            let spec = TaskSpec::new("polite", |mut ctx: TaskContext| async move {
                ctx.ready();
                ctx.stopping().await;
                Ok(())
            });
            let status = Arc::new(Mutex::new(initial_status("polite")));
            let (stop_tx, stop_rx) = watch::channel(false);
            let supervised = tokio::spawn(supervise(
                spec,
                status.clone(),
                stop_rx,
                Duration::from_secs(2),
            ));
            tokio::task::yield_now().await;
            stop_tx.send(true).unwrap();
            supervised.await.unwrap();
            let st = status.lock().unwrap().clone();
            assert_eq!(st.state, RunState::Stopped);
            assert_eq!((st.restarts, st.last_exit), (0, None));
        }
    }
}

//! How the daemon's API reaches the running image-sync unit: a handle made
//! once by the engine, given to each start of the unit (which attaches a
//! fresh request channel) and to the API's handlers (which send requests
//! and wait for the answer). No global state: a second engine, as in tests,
//! has its own handle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::images::{ImageEntry, SyncReport};

/// How long `images sync` may wait for a pass (a big image's import).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// A request to the unit.
#[derive(Debug)]
pub enum Request {
    /// A pass now: over everything (`refs` empty) or over these references.
    Sync {
        refs: Vec<String>,
        reply: oneshot::Sender<Result<SyncReport, String>>,
    },
    /// Docker's tagged images and their state in the cluster.
    List {
        reply: oneshot::Sender<Result<Vec<ImageEntry>, String>>,
    },
}

/// The handle; clones share the channel.
#[derive(Debug, Clone, Default)]
pub struct ImageSync {
    requests: Arc<Mutex<Option<mpsc::Sender<Request>>>>,
}

const NOT_RUNNING: &str =
    "image sync is not running: it runs while the cluster is enabled (k8s-manager enable)";

impl ImageSync {
    /// For a start of the unit: the requests sent from now on.
    pub fn attach(&self) -> mpsc::Receiver<Request> {
        let (sender, receiver) = mpsc::channel(16);
        *self.requests.lock().expect("image sync lock") = Some(sender);
        receiver
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Request,
        limit: Duration,
    ) -> Result<T, String> {
        let sender = self.requests.lock().expect("image sync lock").clone();
        let sender = sender.ok_or(NOT_RUNNING)?;
        let (reply, answer) = oneshot::channel();
        sender.send(request(reply)).await.map_err(|_| NOT_RUNNING)?;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the image sync stopped before it answered".into()),
            Err(_) => Err(format!("the image sync did not answer within {limit:?}")),
        }
    }

    /// Runs a pass and waits for it.
    pub async fn sync(&self, refs: Vec<String>) -> Result<SyncReport, String> {
        self.ask(|reply| Request::Sync { refs, reply }, SYNC_TIMEOUT)
            .await
    }

    /// Docker's tagged images and their state in the cluster.
    pub async fn list(&self) -> Result<Vec<ImageEntry>, String> {
        self.ask(|reply| Request::List { reply }, LIST_TIMEOUT)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_running_unit_the_answer_says_so() {
        let handle = ImageSync::default();
        let err = handle.list().await.unwrap_err();
        assert!(err.contains("not running"), "{err}");
        let receiver = handle.attach();
        drop(receiver);
        let err = handle.sync(vec![]).await.unwrap_err();
        assert!(err.contains("not running"), "{err}");
    }

    #[tokio::test]
    async fn a_request_reaches_the_attached_unit() {
        let handle = ImageSync::default();
        let mut requests = handle.attach();
        let unit = tokio::spawn(async move {
            if let Some(Request::Sync { refs, reply }) = requests.recv().await {
                let _ = reply.send(Ok(SyncReport {
                    present: refs,
                    ..Default::default()
                }));
            }
        });
        let report = handle.sync(vec!["a:1".into()]).await.unwrap();
        assert_eq!(report.present, vec!["a:1".to_string()]);
        unit.await.unwrap();
    }
}

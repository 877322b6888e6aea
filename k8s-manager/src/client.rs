//! The control API's client (its server is [`crate::api`]): requests over
//! the unix socket, and starting the daemon when none answers. The CLI uses
//! it, and so do the certificate renewal and idle freeze units, which ask
//! the daemon for their operations as the CLI does; it knows the model only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::model::api::{Applied, ErrorBody, ImageList, SyncRequest};
use crate::model::event::Event;
use crate::model::images::SyncReport;
use crate::model::settings::{Change, Settings};
use crate::model::status::StatusReport;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the manager at {socket}: {reason}")]
    Connect { socket: PathBuf, reason: String },
    #[error("the manager answered {status}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        /// The setting at fault, when the manager named one.
        field: Option<String>,
    },
    /// The manager closed the connection before it answered: it stopped or
    /// crashed as the request arrived, so the request was not taken.
    #[error("the manager at {} closed the connection before answering (it stopped or crashed)", socket.display())]
    Dropped { socket: PathBuf },
    #[error("talking to the manager: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A stable reason a GUI can act on, in Kubernetes' CamelCase; for a
    /// refused request, the daemon's own.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Connect { .. } | ClientError::Dropped { .. } => "DaemonUnavailable",
            ClientError::Status { code, .. } => code,
            ClientError::Protocol(_) => "DaemonProtocol",
        }
    }

    /// The error of a non-2xx answer, from its body ([`ErrorBody`]);
    /// a body of another shape is kept as the message.
    fn refused(status: u16, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(body) => ClientError::Status {
                status,
                code: body.error.code,
                message: body.error.message,
                field: body.error.field,
            },
            Err(_) => ClientError::Status {
                status,
                code: "Internal".into(),
                message: String::from_utf8_lossy(body).into_owned(),
                field: None,
            },
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Whether a manager answers on the socket.
    pub async fn is_up(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    /// The pid of the manager that answers on the socket, as the kernel
    /// tells it (`SO_PEERCRED`): no pid file to go stale.
    pub async fn daemon_pid(&self) -> Option<u32> {
        let stream = UnixStream::connect(&self.socket).await.ok()?;
        let pid = stream.peer_cred().ok()?.pid()?;
        u32::try_from(pid).ok()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| ClientError::Connect {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        // Any failure before the answer's head arrives (a reset, an early
        // close) means the manager never took the request; only an answer
        // that is not HTTP is a protocol error.
        let dropped = |e: hyper::Error| match e.is_parse() {
            true => ClientError::Protocol(e.to_string()),
            false => ClientError::Dropped {
                socket: self.socket.clone(),
            },
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(dropped)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "k8s-manager")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(dropped)?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::refused(status, &body));
        }
        Ok(response)
    }

    /// A request whose answer is one JSON document, read as `T`.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!(
                "the manager sent an answer to {path} this client does not read ({e}); are both the same version?"
            ))
        })
    }

    /// The daemon's status report, as the server's own type.
    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        self.call("GET", crate::model::api::STATUS, Vec::new())
            .await
    }

    /// Docker's tagged images and whether the cluster has each.
    pub async fn images(&self) -> Result<ImageList, ClientError> {
        self.call("GET", crate::model::api::IMAGES, Vec::new())
            .await
    }

    /// A sync pass over `refs` (all when empty), once it is done.
    pub async fn sync_images(&self, refs: Vec<String>) -> Result<SyncReport, ClientError> {
        let body = serde_json::to_vec(&SyncRequest { refs }).expect("serialises");
        self.call("POST", crate::model::api::IMAGES_SYNC, body)
            .await
    }

    /// The settings document.
    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.call("GET", crate::model::api::SETTINGS, Vec::new())
            .await
    }

    /// Changes the settings by `patch` (a JSON merge patch); the daemon
    /// converges in the background, as the answer's `operation`.
    pub async fn change_settings(
        &self,
        patch: &serde_json::Value,
        confirm_reset: bool,
    ) -> Result<Applied, ClientError> {
        let path = match confirm_reset {
            true => format!("{}?confirm=reset", crate::model::api::SETTINGS),
            false => crate::model::api::SETTINGS.to_string(),
        };
        self.call("PUT", &path, patch.to_string().into_bytes())
            .await
    }

    /// What changing the settings by `patch` would do, changing nothing.
    pub async fn propose(&self, patch: &serde_json::Value) -> Result<Vec<Change>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Proposal {
            changes: Vec<Change>,
        }
        let proposal: Proposal = self
            .call(
                "PUT",
                crate::model::api::SETTINGS_PROPOSE,
                patch.to_string().into_bytes(),
            )
            .await?;
        Ok(proposal.changes)
    }

    /// Every event from now on (`GET /v1/events`): subscribed when this
    /// returns, so that a change sent next has none of its events missed.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let response = self
            .send("GET", crate::model::api::EVENTS, Vec::new())
            .await?;
        Ok(EventStream {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    /// Sends an operation and hands each progress event to `on_event` until
    /// the operation's `done`; returns that last event.
    pub async fn operation(
        &self,
        path: &str,
        body: Vec<u8>,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Event, ClientError> {
        let response = self.send("POST", path, body).await?;
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.extend_from_slice(data);
            while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=pos).collect();
                let event: Event = serde_json::from_slice(&line).map_err(|e| {
                    ClientError::Protocol(format!("the manager sent an event this client does not know ({e}); are both the same version?"))
                })?;
                on_event(&event);
                if matches!(event, Event::Done { .. }) {
                    return Ok(event);
                }
            }
        }
        Err(ClientError::Protocol("the manager closed the connection before the operation ended (did it crash? see its log)".into()))
    }
}

/// An operation that did not succeed: the manager could not be asked, or
/// the operation failed (its message, and its error when it ended with one).
#[derive(Debug, thiserror::Error)]
pub enum OperationFailed {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{message}")]
    Failed {
        message: String,
        error: Option<crate::model::error::OperationError>,
    },
}

impl Client {
    /// Runs the operation at `path` with `body` and waits for its end,
    /// without following its progress (the in-process units' way).
    pub async fn run_operation(&self, path: &str, body: Vec<u8>) -> Result<(), OperationFailed> {
        match self.operation(path, body, |_| {}).await? {
            Event::Done { ok: true, .. } => Ok(()),
            Event::Done { message, error, .. } => Err(OperationFailed::Failed { message, error }),
            other => {
                Err(ClientError::Protocol(format!("the operation ended with {other:?}")).into())
            }
        }
    }
}

/// The events the daemon sends, one at a time.
pub struct EventStream {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                return serde_json::from_slice(&line).map(Some).map_err(|e| {
                    ClientError::Protocol(format!("the manager sent an event this client does not know ({e}); are both the same version?"))
                });
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
                    if let Some(data) = frame.data_ref() {
                        self.buffer.extend_from_slice(data);
                    }
                }
            }
        }
    }

    /// Hands each event to `on_event` until the `done` of operation `id`,
    /// and returns that one.
    pub async fn until_done(
        &mut self,
        id: u64,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Event, ClientError> {
        let mut ours = false;
        while let Some(event) = self.next().await? {
            if let Event::Started { id: started, .. } = &event {
                ours = *started == id;
            }
            if ours {
                on_event(&event);
            }
            if let Event::Done { id: done, .. } = &event
                && *done == id
            {
                return Ok(event);
            }
        }
        Err(ClientError::Protocol(
            "the manager closed the event stream before the operation ended (did it crash? see its log)".into(),
        ))
    }
}

/// How long a daemon started by the CLI waits, idle, before it exits.
pub const CLI_DAEMON_IDLE: &str = "60s";

/// Starts `k8s-manager daemon` in the background, detached from this
/// terminal, and waits until it answers.
pub async fn start_daemon(exe: &Path, state_dir: &Path, log: &Path) -> Result<(), ClientError> {
    let socket = crate::model::config::Paths::new(state_dir).socket;
    let fail = |reason: String| ClientError::Connect {
        socket: socket.clone(),
        reason,
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| fail(e.to_string()))?;
    let mut cmd = std::process::Command::new(exe);
    // An explicit request follows; the daemon must not also restore the last state.
    // Nor outlive its purpose: once the cluster is off and nobody asks,
    // it exits (the VM's own service runs a daemon that stays).
    cmd.arg("--state-dir")
        .arg(state_dir)
        .arg("daemon")
        .arg("--no-restore")
        .args(["--exit-when-idle", CLI_DAEMON_IDLE])
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(|e| fail(e.to_string()))?)
        .stderr(out);
    // A new session, no controlling terminal: the daemon outlives this
    // command and its terminal.
    crate::sys::new_session(&mut cmd);
    cmd.spawn()
        .map_err(|e| fail(format!("cannot start the daemon: {e}")))?;
    let client = Client::new(&socket);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if client.is_up().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(fail(format!(
        "the daemon did not answer within 10s; see {}",
        log.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        use crate::model::state::{ClusterState, Phase};
        let events = vec![
            Event::Phase {
                phase: Phase::named("etcd"),
                description: "starting etcd".into(),
            },
            Event::PhaseDone {
                phase: Phase::named("etcd"),
                seconds: 1.5,
            },
            Event::Notice {
                message: "warning".into(),
            },
            Event::State {
                state: ClusterState::Error {
                    phase: Phase::named("kubelet"),
                    message: "x".into(),
                },
            },
            Event::Started {
                operation: "enable".into(),
                id: 7,
            },
            Event::Done {
                operation: "enable".into(),
                id: 7,
                ok: true,
                message: "ok".into(),
                seconds: 9.0,
                error: None,
            },
            Event::Done {
                operation: "enable".into(),
                id: 8,
                ok: false,
                message: "error execution phase preflight: 2 problem(s):".into(),
                seconds: 0.5,
                error: Some(crate::model::error::OperationError {
                    phase: Phase::named("preflight"),
                    code: "PreflightFailed".into(),
                    message: "2 problem(s):".into(),
                    problems: vec!["swap is on".into(), "port 6443 is taken".into()],
                    logs: vec![],
                }),
            },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        }
        let done: serde_json::Value = serde_json::to_value(&Event::Done {
            operation: "disable".into(),
            id: 1,
            ok: false,
            message: "m".into(),
            seconds: 1.0,
            error: Some(crate::model::error::OperationError::new(
                Phase::named("stop"),
                "m",
            )),
        })
        .unwrap();
        assert_eq!(done["error"]["code"], "PhaseFailed");
        assert_eq!(done["error"]["phase"], "stop");
        assert!(serde_json::from_str::<Event>(r#"{"event": "nope"}"#).is_err());
    }

    #[test]
    fn a_refusal_keeps_the_daemons_code_and_message() {
        let body = br#"{"error": {"code": "SettingsMissing", "message": "no saved settings"}}"#;
        let err = ClientError::refused(400, body);
        assert_eq!(err.code(), "SettingsMissing");
        assert_eq!(
            err.to_string(),
            "the manager answered 400: no saved settings"
        );
        let err = ClientError::refused(502, b"bad gateway");
        assert_eq!(err.code(), "Internal");
        assert_eq!(err.to_string(), "the manager answered 502: bad gateway");
    }
}

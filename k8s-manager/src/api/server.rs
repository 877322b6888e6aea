//! The daemon side of the control API.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};

use serde_json::Value;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::manager::{Manager, Plan, Refusal};
use crate::model::api::{ChangeOptions, FreezeRequest};
use crate::model::error::OperationError;
use crate::model::event::Event;
use crate::model::status::StatusReport;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A client has this long to send a request's headers, and again its body:
/// one that never finishes holds a connection that long, not for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Cluster settings are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The control socket, bound: its listener, and the socket file's identity,
/// so that only this daemon's own file is removed on the way out.
pub struct Bound {
    listener: UnixListener,
    path: std::path::PathBuf,
    identity: Option<(u64, u64)>,
}

/// Takes the control socket at `socket`, mode 0660 and group `group`. A
/// socket another manager answers on is an error, and left as it is; one
/// left by a manager that died is replaced.
pub async fn bind(socket: &Path, group: Option<u32>) -> std::io::Result<Bound> {
    if socket.exists() {
        // A socket left by a manager that died; nobody answers on it.
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another manager already answers on {}", socket.display()),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(socket, None, Some(gid))?;
    }
    Ok(Bound {
        listener,
        path: socket.to_path_buf(),
        identity: file_identity(socket),
    })
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// How long the accept loop rests after an error (out of descriptors): the
/// connections being served close meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the API on the bound socket until `shutdown` resolves. An accept
/// that fails (EMFILE: every descriptor in use) is told and tried again
/// after a rest; it never ends the daemon. On the way out the socket file is
/// removed if it is still this daemon's: a new daemon of a folder deleted
/// and made again owns the path now.
pub async fn serve(
    manager: Arc<Manager>,
    bound: Bound,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tracing::info!("control API on {}", bound.path.display());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let manager = manager.clone();
                    tokio::spawn(serve_connection(stream, "control API", move |req| {
                        handle(manager.clone(), req)
                    }));
                }
                Err(err) => {
                    tracing::warn!("control API: accepting a connection: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    if bound.identity.is_some() && file_identity(&bound.path) == bound.identity {
        let _ = std::fs::remove_file(&bound.path);
    }
    Ok(())
}

/// Serves one connection's request with `respond` (HTTP/1.1), with the
/// headers' deadline; `what` names the server in the log.
///
/// One request a connection (`Connection: close`): a kept-alive connection
/// would be closed by that deadline 10 s after its last answer, and a client
/// that sends its next request on it just then gets a failed call, not an
/// answer (a settings page's Apply failed so in CI: "the manager does not
/// answer"). A new connection on the loopback or a unix socket costs
/// microseconds; the event streams keep theirs for as long as they run.
pub(crate) async fn serve_connection<S, F>(
    stream: S,
    what: &'static str,
    respond: impl Fn(Request<hyper::body::Incoming>) -> F + Send + 'static,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(respond));
    if let Err(err) = connection.await {
        tracing::debug!("{what} connection: {err}");
    }
}

/// Answers one request of the control API (also mounted under `/api` by
/// the settings page's server, behind its gate).
pub(crate) async fn handle(
    manager: Arc<Manager>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query().unwrap_or_default());
    let method = req.method().clone();
    let response = match (method, path.as_str()) {
        (Method::GET, super::STATUS) => json(StatusCode::OK, &status(&manager).await),
        (Method::GET, super::EVENTS) => stream_events(manager.engine().subscribe(), None),
        (Method::GET, super::IMAGES) => match manager.engine().image_sync().list().await {
            Ok(images) => json(StatusCode::OK, &crate::model::api::ImageList { images }),
            Err(err) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ImageSyncUnavailable",
                &err,
            ),
        },
        (Method::POST, super::IMAGES_SYNC) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(response) => return Ok(response),
            };
            let request: crate::model::api::SyncRequest = match body.is_empty() {
                true => crate::model::api::SyncRequest::default(),
                false => match serde_json::from_slice(&body) {
                    Ok(request) => request,
                    Err(err) => {
                        return Ok(error(
                            StatusCode::BAD_REQUEST,
                            "InvalidArgument",
                            &format!("the body is not an image sync request: {err}"),
                        ));
                    }
                },
            };
            match manager.engine().image_sync().sync(request.refs).await {
                Ok(report) => json(StatusCode::OK, &report),
                Err(err) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ImageSyncUnavailable",
                    &err,
                ),
            }
        }
        (Method::GET, super::SETTINGS) => json(StatusCode::OK, &manager.shown_settings().await),
        (Method::PUT, super::SETTINGS) => {
            let patch = match read_patch(req).await {
                Ok(patch) => patch,
                Err(response) => return Ok(response),
            };
            match manager.apply(&patch, query.change_options()).await {
                Ok(applied) => json(StatusCode::OK, &applied),
                Err(refusal) => refused(&refusal),
            }
        }
        (Method::PUT, super::SETTINGS_PROPOSE) => {
            let patch = match read_patch(req).await {
                Ok(patch) => patch,
                Err(response) => return Ok(response),
            };
            match manager.propose(&patch).await {
                Ok(changes) => json(StatusCode::OK, &serde_json::json!({ "changes": changes })),
                Err(refusal) => refused(&refusal),
            }
        }
        (Method::POST, super::ENABLE) => {
            let patch = match read_patch(req).await {
                Ok(patch) => patch,
                Err(response) => return Ok(response),
            };
            match manager.enable(&patch, query.change_options()).await {
                Ok(plan) => operation(manager, plan),
                Err(refusal) => refused(&refusal),
            }
        }
        (Method::POST, super::CERTS_RENEW) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(response) => return Ok(response),
            };
            let request = match body.is_empty() {
                true => Ok(Default::default()),
                false => serde_json::from_slice(&body),
            };
            match request {
                Ok(request) => run_streamed(manager, move |manager, id| {
                    async move { manager.renew_certs(request, id).await }.boxed()
                }),
                Err(err) => error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    &format!("the renewal request does not read: {err}"),
                ),
            }
        }
        (Method::POST, super::CERTS_ROTATE_CA) => run_streamed(manager, |manager, id| {
            async move { manager.rotate_ca(id).await }.boxed()
        }),
        (Method::POST, path @ (super::PAUSE | super::RESUME)) => {
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(response) => return Ok(response),
            };
            let request: Result<FreezeRequest, _> = match body.is_empty() {
                true => Ok(Default::default()),
                false => serde_json::from_slice(&body),
            };
            let pause = path == super::PAUSE;
            match request {
                Ok(request) => run_streamed(manager, move |manager, id| {
                    async move {
                        match pause {
                            true => manager.pause(request, id).await,
                            false => manager.resume(request, id).await,
                        }
                    }
                    .boxed()
                }),
                Err(err) => error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    &format!(
                        "the request does not read ({err}): send no body, or {{\"cause\": \"…\"}}"
                    ),
                ),
            }
        }
        (Method::POST, super::DISABLE) => match manager.disable().await {
            Ok(plan) => operation(manager, plan),
            Err(refusal) => refused(&refusal),
        },
        (Method::POST, super::RESET) => match manager.reset(query.restart).await {
            Ok(plan) => operation(manager, plan),
            Err(refusal) => refused(&refusal),
        },
        (method, path) => match allowed_method(path) {
            Some(allowed) => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    &format!("{path} answers {allowed}, not {method}"),
                );
                if let Ok(value) = hyper::header::HeaderValue::from_str(&allowed) {
                    response.headers_mut().insert(hyper::header::ALLOW, value);
                }
                response
            }
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no such endpoint: {path}"),
            ),
        },
    };
    Ok(response)
}

/// What a request's query string may say.
#[derive(Debug, Clone, Copy)]
struct Query {
    /// `confirm=reset`: a change that throws the cluster away goes ahead.
    confirm_reset: bool,
    /// `revision=N`: the settings revision the client read.
    revision: Option<u64>,
    /// `restart=false`: a reset leaves the cluster off.
    restart: bool,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query {
            confirm_reset: false,
            revision: None,
            restart: true,
        };
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("confirm", "reset")) => parsed.confirm_reset = true,
                Some(("restart", "false")) => parsed.restart = false,
                Some(("revision", n)) => parsed.revision = n.parse().ok(),
                _ => {}
            }
        }
        parsed
    }

    fn change_options(self) -> ChangeOptions {
        ChangeOptions {
            confirm_reset: self.confirm_reset,
            revision: self.revision,
        }
    }
}

/// The method each endpoint answers (the routes above), for a 405 that says it.
fn allowed_method(path: &str) -> Option<String> {
    match path {
        super::STATUS | super::EVENTS => Some("GET".into()),
        super::SETTINGS => Some("GET, PUT".into()),
        super::SETTINGS_PROPOSE => Some("PUT".into()),
        super::IMAGES => Some("GET".into()),
        super::IMAGES_SYNC => Some("POST".into()),
        super::ENABLE
        | super::DISABLE
        | super::RESET
        | super::CERTS_RENEW
        | super::CERTS_ROTATE_CA
        | super::PAUSE
        | super::RESUME => Some("POST".into()),
        _ => None,
    }
}

/// A request's body as a settings change (a JSON merge patch); an empty
/// body changes nothing.
async fn read_patch(req: Request<hyper::body::Incoming>) -> Result<Value, Response<Body>> {
    let body = read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice::<Value>(&body).map_err(|err| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            &format!(
                "the settings sent {}: send a JSON object of the settings to change",
                crate::input::json_problem(&err)
            ),
        )
    })
}

/// The answer to a refused settings change.
fn refused(refusal: &Refusal) -> Response<Body> {
    let status = match refusal {
        Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
        Refusal::ResetRequired(_) | Refusal::Stale { .. } => StatusCode::CONFLICT,
        Refusal::Save(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = crate::model::api::ErrorBody {
        error: crate::model::api::ErrorDetail {
            code: refusal.code().into(),
            message: refusal.to_string(),
            field: refusal.field().map(str::to_string),
        },
    };
    json(status, &body)
}

/// A request's body, bounded in size ([`MAX_BODY_BYTES`]) and in the time it
/// takes to arrive ([`BODY_READ_TIMEOUT`]); otherwise the error to answer.
async fn read_body(req: Request<hyper::body::Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            &format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes; cluster settings are a few hundred"
            ),
        )
    };
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "the request body broke off before its end",
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            &format!(
                "the request body did not arrive within {}s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

pub async fn status(manager: &Manager) -> StatusReport {
    let engine = manager.engine();
    let record = engine.record();
    let settings = manager.settings().await;
    let components = engine.supervisor.status().await;
    let rotating = engine.running_operation() == Some(crate::cluster::operations::rotate_ca::NAME);
    let mut report = crate::cluster::status::report(
        engine.paths(),
        &record,
        settings.kubernetes.enabled,
        components,
        true,
        rotating,
    )
    .await;
    let mut idle = engine.units().idle.status();
    idle.freeze_after = settings.idle.freeze_after;
    if report.paused
        && report.state == crate::model::state::ClusterState::Running
        && let Some(line) = idle.paused_line()
    {
        report.summary = line;
    }
    report.idle = Some(idle);
    report
}

/// Runs an operation in its own task and streams its own events to the
/// caller: from its `started` to its `done` (an operation queued behind
/// another does not show the other's events). Subscribing first means no
/// event is missed.
fn operation(manager: Arc<Manager>, plan: Plan) -> Response<Body> {
    run_streamed(manager, move |manager, id| {
        async move { manager.run(plan, id).await }.boxed()
    })
}

/// Runs `work` as a new operation in its own task, and streams its events.
fn run_streamed(
    manager: Arc<Manager>,
    work: impl FnOnce(Arc<Manager>, u64) -> BoxFuture<'static, Result<(), OperationError>>
    + Send
    + 'static,
) -> Response<Body> {
    let events = manager.engine().subscribe();
    let id = manager.engine().operation_id();
    tokio::spawn(async move {
        if let Err(err) = work(manager, id).await {
            tracing::warn!("operation {id}: {err}");
        }
    });
    stream_events(events, Some(id))
}

fn stream_events(mut events: broadcast::Receiver<Event>, only: Option<u64>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let mut ours = only.is_none();
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if let (Some(want), Event::Started { id, .. }) = (only, &event) {
                ours = *id == want;
            }
            if !ours {
                continue;
            }
            let mut line = serde_json::to_vec(&event).expect("event serialises");
            line.push(b'\n');
            if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                break;
            }
            if let (Some(want), Event::Done { id, .. }) = (only, &event)
                && *id == want
            {
                break;
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(body))
        .expect("valid response")
}

fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).expect("serialises");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = crate::model::api::ErrorBody {
        error: crate::model::api::ErrorDetail {
            code: code.into(),
            message: message.into(),
            field: None,
        },
    };
    json(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Paths;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A daemon's API on a socket in `dir`, served until the test ends.
    async fn daemon(dir: &Path) -> std::path::PathBuf {
        let paths = Paths::new(dir);
        let manager = Arc::new(Manager::new(paths.clone(), dir.join("cache")).unwrap());
        let socket = paths.socket.clone();
        let bound = bind(&socket, None).await.unwrap();
        tokio::spawn(async move { serve(manager, bound, std::future::pending()).await });
        socket
    }

    /// Sends raw bytes, and reads what comes back until the daemon closes
    /// the connection; a daemon that never does fails the test.
    async fn exchange(socket: &Path, request: &[u8]) -> String {
        let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
        // A daemon that answers early (a body too large) may close before
        // it read everything: what it answered is still read below.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
            .await
            .expect("the daemon still holds the connection after 60s");
        if let Err(err) = read {
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: k8s-manager\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A client that would keep its connection gets it closed right after
    /// the answer, which says so: no request can be sent on a connection
    /// that the daemon closes at the same moment.
    #[tokio::test]
    async fn each_connection_serves_one_request_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        let keep =
            b"GET /v1/nothing HTTP/1.1\r\nHost: k8s-manager\r\nConnection: keep-alive\r\n\r\n";
        let answer = exchange(&socket, keep).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("connection: close\r\n"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_wrong_methods_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        let answer = exchange(&socket, &request("GET", "/v1/nothing", "")).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("no such endpoint: /v1/nothing"), "{answer}");
        let answer = exchange(&socket, &request("GET", super::super::ENABLE, "")).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        assert!(answer.contains("allow: POST"), "{answer}");
        assert!(
            answer.contains("/v1/enable answers POST, not GET"),
            "{answer}"
        );
        let answer = exchange(&socket, &request("DELETE", super::super::STATUS, "")).await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }

    #[tokio::test]
    async fn malformed_settings_are_a_400_in_plain_words() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        for (body, says) in [
            ("{\"kubernetes\": ", "the settings sent is cut short"),
            (
                "kubernetes.apiPort=1",
                "the settings sent is not valid JSON (at line 1, column 1)",
            ),
            (
                "[]",
                "a settings change is a JSON object of the keys to change",
            ),
        ] {
            let answer = exchange(&socket, &request("POST", super::super::ENABLE, body)).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{body}: {answer}");
            assert!(answer.contains(says), "{body}: {answer}");
            assert!(!answer.contains("EOF while parsing"), "{answer}");
        }
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        // Announced too large: answered before any of it is read.
        let headers = format!(
            "POST /v1/enable HTTP/1.1\r\nHost: k\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let answer = exchange(&socket, headers.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        // Announced large, sent in chunks: counted as it comes.
        let mut chunked = b"POST /v1/enable HTTP/1.1\r\nHost: k\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..20 {
            chunked.extend_from_slice(format!("1000\r\n{}\r\n", "a".repeat(0x1000)).as_bytes());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let answer = exchange(&socket, &chunked).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_never_ends_does_not_hold_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        // Headers that never end: the connection is closed (else `exchange` fails).
        exchange(
            &socket,
            b"POST /v1/enable HTTP/1.1\r\nHost: k8s-manager\r\n",
        )
        .await;
        // A body that never comes: answered, and closed.
        let answer = exchange(
            &socket,
            b"POST /v1/enable HTTP/1.1\r\nHost: k\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{\"node",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    #[tokio::test]
    async fn damaged_saved_settings_are_named_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::write(&paths.settings_file, b"\x00garbage").unwrap();
        let err = Manager::new(paths.clone(), dir.path().join("cache"))
            .err()
            .expect("a damaged settings file stops the daemon");
        assert!(
            err.contains("settings.json: the settings are damaged"),
            "{err}"
        );
        assert_eq!(std::fs::read(&paths.settings_file).unwrap(), b"\x00garbage");
    }

    #[tokio::test]
    async fn a_refused_setting_names_its_field_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        let settings_file = Paths::new(dir.path()).settings_file;
        let before = std::fs::read(&settings_file).unwrap();
        for (body, status, field) in [
            (
                r#"{"kubernetes": {"apiPort": 70000}}"#,
                "400",
                "kubernetes.apiPort",
            ),
            (
                r#"{"kubernetes": {"colour": "blue"}}"#,
                "400",
                "kubernetes.colour",
            ),
            (
                r#"{"kubernetes": {"version": "v1.99.0"}}"#,
                "400",
                "kubernetes.version",
            ),
        ] {
            let answer = exchange(&socket, &request("PUT", super::super::SETTINGS, body)).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{body}: {answer}"
            );
            assert!(
                answer.contains(&format!("\"field\": \"{field}\"")),
                "{body}: {answer}"
            );
            assert!(answer.contains("InvalidSettings"), "{answer}");
        }
        assert_eq!(std::fs::read(&settings_file).unwrap(), before);
        // A change that runs nothing (the cluster is off) is saved and answered.
        let answer = exchange(
            &socket,
            &request(
                "PUT",
                super::super::SETTINGS,
                r#"{"kubernetes": {"apiPort": 6444}}"#,
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("\"key\": \"kubernetes.apiPort\""),
            "{answer}"
        );
        assert!(!answer.contains("\"operation\""), "{answer}");
        let answer = exchange(&socket, &request("GET", super::super::SETTINGS, "")).await;
        assert!(answer.contains("\"apiPort\": 6444"), "{answer}");
        assert!(answer.contains("\"revision\": 1"), "{answer}");
        // A version with no bundle in the cache is refused.
        let answer = exchange(
            &socket,
            &request(
                "PUT",
                super::super::SETTINGS,
                r#"{"kubernetes": {"version": "v1.34.4"}}"#,
            ),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "no bundle in the cache: {answer}"
        );
        // A stale revision is refused.
        let answer = exchange(
            &socket,
            &request(
                "PUT",
                "/v1/settings?revision=0",
                r#"{"kubernetes": {"apiPort": 6445}}"#,
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    }

    #[tokio::test]
    async fn secrets_are_write_only_through_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let socket = daemon(dir.path()).await;
        let secrets = r#"{"proxy": {"http": "http://me:s3cret@proxy.test:3128"},
            "components": {"kubelet": {"env": {"TOKEN": "t0ken"}}}}"#;
        let answers = [
            exchange(&socket, &request("PUT", "/v1/settings/propose", secrets)).await,
            exchange(&socket, &request("PUT", "/v1/settings", secrets)).await,
            exchange(&socket, &request("GET", "/v1/settings", "")).await,
        ];
        for answer in &answers {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(
                !answer.contains("s3cret") && !answer.contains("t0ken"),
                "{answer}"
            );
        }
        let body = |answer: &str| -> serde_json::Value {
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
        };
        let shown = body(&answers[2]);
        assert_eq!(
            shown["proxy"]["http"],
            "http://me:********@proxy.test:3128/"
        );
        assert_eq!(shown["components"]["kubelet"]["env"]["TOKEN"], "********");
        // What was read, sent back: kept, nothing changed.
        let back = serde_json::json!({"proxy": shown["proxy"], "components": shown["components"]});
        let answer = exchange(&socket, &request("PUT", "/v1/settings", &back.to_string())).await;
        assert_eq!(body(&answer)["changes"], serde_json::json!([]), "{answer}");
        let saved = std::fs::read_to_string(Paths::new(dir.path()).settings_file).unwrap();
        assert!(
            saved.contains("http://me:s3cret@proxy.test:3128"),
            "{saved}"
        );
        assert!(saved.contains(r#""TOKEN": "t0ken""#), "{saved}");
    }
}

//! The daemon side of the control API.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};

use crate::cluster::config::ClusterConfig;
use crate::cluster::engine::{Engine, Event};

type Body = BoxBody<Bytes, Infallible>;

/// Serves the API on `socket` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    socket: &Path,
    group: Option<u32>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
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
    tracing::info!("control API on {}", socket.display());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let engine = engine.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(engine.clone(), req));
                    if let Err(err) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!("control API connection: {err}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}

async fn handle(
    engine: Arc<Engine>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let method = req.method().clone();
    let response = match (method, path.as_str()) {
        (Method::GET, super::STATUS) => {
            let report = status(&engine).await;
            json(StatusCode::OK, &report)
        }
        (Method::GET, super::EVENTS) => stream_events(engine.subscribe(), None),
        (Method::POST, super::ENABLE) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(err) => {
                    return Ok(error(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgument",
                        &err.to_string(),
                    ));
                }
            };
            let config = if body.iter().all(u8::is_ascii_whitespace) {
                match engine.saved_config() {
                    Some(config) => config,
                    None => {
                        return Ok(error(
                            StatusCode::BAD_REQUEST,
                            "SettingsMissing",
                            "no saved settings: send the cluster settings with the first enable",
                        ));
                    }
                }
            } else {
                match serde_json::from_slice::<ClusterConfig>(&body) {
                    Ok(config) => config,
                    Err(err) => {
                        return Ok(error(
                            StatusCode::BAD_REQUEST,
                            "InvalidArgument",
                            &format!("bad settings: {err}"),
                        ));
                    }
                }
            };
            operation(engine, move |e, id| async move {
                e.enable(config, id).await.map_err(|err| err.to_string())
            })
        }
        (Method::POST, super::DISABLE) => operation(engine, |e, id| async move {
            e.disable(id).await.map_err(|err| err.to_string())
        }),
        (Method::POST, super::RESET) => {
            let restart = !query.split('&').any(|kv| kv == "restart=false");
            operation(engine, move |e, id| async move {
                e.reset(restart, id).await.map_err(|err| err.to_string())
            })
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no such endpoint: {path}"),
        ),
    };
    Ok(response)
}

pub async fn status(engine: &Engine) -> crate::cluster::status::StatusReport {
    let record = engine.record();
    let config = engine.saved_config();
    let components = engine.supervisor.status().await;
    crate::cluster::status::report(engine.paths(), &record, config.as_ref(), components, true).await
}

/// Runs an operation in its own task and streams its own events to the
/// caller: from its `started` to its `done` (an operation queued behind
/// another does not show the other's events). Subscribing first means no
/// event is missed.
fn operation<F, Fut>(engine: Arc<Engine>, op: F) -> Response<Body>
where
    F: FnOnce(Arc<Engine>, u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let events = engine.subscribe();
    let id = engine.operation_id();
    tokio::spawn(async move {
        if let Err(err) = op(engine, id).await {
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

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).expect("serialises");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = super::ErrorBody {
        error: super::ErrorDetail {
            code: code.into(),
            message: message.into(),
        },
    };
    json(status, &body)
}

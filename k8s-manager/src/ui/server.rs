//! The settings page's HTTP server on `127.0.0.1:<ui.port>`: the page's
//! files, the control API mounted under `/api/v1/...` (the very handlers of
//! the unix socket, so the page and the CLI see one truth), and a few reads
//! only the page needs under `/api/ui/...`. Every request passes the gate
//! first ([`super::security`]); no answer carries a CORS header.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;
use tokio::net::TcpListener;

use super::security::{Gate, RequestHeaders, TOKEN_HEADER};
use super::{assets, workloads};
use crate::api::server::{Body, error, json, serve_connection};
use crate::manager::Manager;

/// The page polls the cluster's objects; a stuck API server must not hold it.
const KUBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How many log lines the page shows for a component.
const LOG_LINES: usize = 40;

/// The page's own reads.
const META: &str = "/api/ui/meta";
const CLUSTER: &str = "/api/ui/cluster";
const LOGS: &str = "/api/ui/logs";

/// Serves the page on `listener` until `stop` resolves.
pub async fn serve(
    manager: Arc<Manager>,
    listener: TcpListener,
    gate: Arc<Gate>,
    visitors: &super::Visitors,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (manager, gate) = (manager.clone(), gate.clone());
                let visit = visitors.arrive();
                tokio::spawn(async move {
                    serve_connection(stream, "settings page", move |req| {
                        handle(manager.clone(), gate.clone(), req)
                    })
                    .await;
                    drop(visit);
                });
            }
            _ = &mut stop => break,
        }
    }
}

async fn handle(
    manager: Arc<Manager>,
    gate: Arc<Gate>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let api = path.starts_with("/api/");
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let headers = RequestHeaders {
        host: header(header::HOST.as_str()),
        origin: header(header::ORIGIN.as_str()),
        token: header(TOKEN_HEADER),
        sec_fetch_site: header("sec-fetch-site"),
    };
    if let Err(refused) = gate.check(req.method(), api, &headers) {
        tracing::debug!(
            "settings page: refused {} {path}: {}",
            req.method(),
            refused.code
        );
        return Ok(hardened(error(
            refused.status,
            refused.code,
            &refused.message,
        )));
    }
    let response = match (req.method(), path.as_str()) {
        (_, p) if p.starts_with("/api/v1/") => {
            // The control API itself, its paths without the `/api` prefix.
            let inner = match req.uri().query() {
                Some(q) => format!("{}?{q}", &path[4..]),
                None => path[4..].to_string(),
            };
            *req.uri_mut() = inner.parse().expect("a path taken from a valid URI");
            crate::api::server::handle(manager, req).await?
        }
        (&Method::GET, META) => json(StatusCode::OK, &meta(&manager)),
        (&Method::GET, CLUSTER) => json(StatusCode::OK, &cluster(&manager).await),
        (&Method::GET, LOGS) => {
            let component = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("component=")))
                .unwrap_or_default();
            logs(&manager, component).await
        }
        (_, META | CLUSTER | LOGS) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{path} answers GET"),
        ),
        (_, path) => match assets::find(path) {
            Some(asset) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, asset.content_type)
                .body(Full::new(Bytes::from_static(asset.body)).boxed())
                .expect("valid response"),
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no such page: {path}"),
            ),
        },
    };
    Ok(hardened(response))
}

/// Headers on every answer: no sniffing, no framing by other sites (a
/// framed page could be clicked through), no referrer, nothing cached, and a
/// content policy that lets the page load only its own files.
fn hardened(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// What the page reads once: the enable phases with their descriptions (for
/// `Starting — <description>` and its progress) and the versions it may pick.
fn meta(manager: &Manager) -> serde_json::Value {
    let phases: Vec<_> = crate::cluster::operations::enable::schedule()
        .iter()
        .map(|s| json!({"name": s.phase.name(), "description": s.description}))
        .collect();
    let versions: Vec<String> = crate::bundle::cache::cached_versions(manager.cache())
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({"phases": phases, "versions": versions})
}

/// What the page polls: the kubeconfig files the cluster is merged into, and
/// its LoadBalancer Services and pods when the API answers.
async fn cluster(manager: &Manager) -> serde_json::Value {
    let kubeconfigs: Vec<String> = match manager.engine().last_made() {
        Some(config) => crate::cluster::export::targets(&config)
            .unwrap_or_default()
            .iter()
            .flat_map(|t| t.files().iter())
            .filter(|f| f.exists())
            .map(|f| f.display().to_string())
            .collect(),
        _ => Vec::new(),
    };
    let objects = tokio::time::timeout(KUBE_TIMEOUT, list_objects(manager)).await;
    let (services, pods, problem) = match objects {
        Ok(Ok((services, pods))) => (services, pods, None),
        Ok(Err(err)) => (Vec::new(), Vec::new(), Some(err)),
        Err(_) => (
            Vec::new(),
            Vec::new(),
            Some(format!(
                "the API server did not answer within {}s",
                KUBE_TIMEOUT.as_secs()
            )),
        ),
    };
    json!({
        "kubeconfigs": kubeconfigs,
        "loadBalancers": workloads::load_balancers(&services),
        "namespaces": workloads::namespaces(&pods),
        "problem": problem,
    })
}

async fn list_objects(manager: &Manager) -> Result<(Vec<Service>, Vec<Pod>), String> {
    use kube::api::{Api, ListParams};
    let kubeconfig = manager.paths().admin_kubeconfig();
    if !kubeconfig.exists() {
        return Err("no cluster yet".into());
    }
    let client = crate::bootstrap::client(&kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Services: {e}"))?;
    let pods = Api::<Pod>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    Ok((services.items, pods.items))
}

/// The last lines of a component's log. The name is a unit's (lowercase
/// letters, digits, `-`): it never makes a path of its own.
async fn logs(manager: &Manager, component: &str) -> Response<Body> {
    let name_ok = !component.is_empty()
        && component
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let path = manager.paths().log(component);
    if !name_ok || !path.is_file() {
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no log of a component named {component:?}"),
        );
    }
    let lines = crate::supervisor::tail_log(&path, LOG_LINES, &[]);
    json(
        StatusCode::OK,
        &json!({"component": component, "file": path.display().to_string(), "lines": lines}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Paths;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A page served on an ephemeral port for a manager of `dir`; its port,
    /// and who is on it.
    async fn page(dir: &std::path::Path) -> (u16, super::super::Visitors) {
        let paths = Paths::new(dir);
        let manager = Arc::new(Manager::new(paths, dir.join("cache")).unwrap());
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Arc::new(Gate::new(port, "s3cret".into()));
        let visitors = super::super::Visitors::default();
        let counted = visitors.clone();
        tokio::spawn(async move {
            serve(manager, listener, gate, &counted, std::future::pending()).await
        });
        (port, visitors)
    }

    async fn exchange(port: u16, request: String) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn request(method: &str, path: &str, extra: &str, body: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn the_gate_stands_before_every_route_and_no_answer_has_cors() {
        let dir = tempfile::tempdir().unwrap();
        let (port, _) = page(dir.path()).await;
        let host = format!("Host: 127.0.0.1:{port}\r\n");
        let origin = format!("Origin: http://127.0.0.1:{port}\r\n");
        let token = "X-K8s-Manager-Token: s3cret\r\n";
        let change = r#"{"kubernetes": {"apiPort": 6444}}"#;
        let cases = [
            // The page itself, with its own name and without a token.
            (request("GET", "/", &host, ""), "200"),
            // DNS rebinding: another name, even with the token.
            (
                request("GET", "/", "Host: evil.test\r\n", ""),
                "403 Forbidden",
            ),
            (
                request(
                    "GET",
                    "/api/v1/settings",
                    &format!("Host: evil.test:{port}\r\n{token}"),
                    "",
                ),
                "403",
            ),
            // The data needs the token.
            (request("GET", "/api/v1/status", &host, ""), "401"),
            (
                request("GET", "/api/v1/settings", &format!("{host}{token}"), ""),
                "200",
            ),
            // A change without the token, or from another origin.
            (
                request(
                    "PUT",
                    "/api/v1/settings",
                    &format!("{host}{origin}"),
                    change,
                ),
                "401",
            ),
            (
                request(
                    "PUT",
                    "/api/v1/settings",
                    &format!("{host}{token}Origin: http://evil.test\r\n"),
                    change,
                ),
                "403",
            ),
            (
                request("PUT", "/api/v1/settings", &format!("{host}{token}"), change),
                "403",
            ),
            // A preflight gets no CORS answer.
            (
                request(
                    "OPTIONS",
                    "/api/v1/settings",
                    &format!(
                        "{host}Origin: http://evil.test\r\nAccess-Control-Request-Method: PUT\r\n"
                    ),
                    "",
                ),
                "401",
            ),
            (
                request("GET", "/api/ui/meta", &format!("{host}{token}"), ""),
                "200",
            ),
            (
                request(
                    "GET",
                    "/api/ui/logs?component=../../etc/passwd",
                    &format!("{host}{token}"),
                    "",
                ),
                "404",
            ),
        ];
        for (req, status) in cases {
            let answer = exchange(port, req.clone()).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{req}\n---\n{answer}"
            );
            assert!(
                !answer.to_ascii_lowercase().contains("access-control-"),
                "{answer}"
            );
            assert!(answer.contains("x-frame-options: DENY"), "{answer}");
        }
        // Nothing refused was saved.
        let saved = crate::model::settings::load(&Paths::new(dir.path()).settings_file)
            .unwrap()
            .unwrap();
        assert_eq!(saved.kubernetes.api_port, 6443);
        // The page's own change goes through, and is the control API's.
        let answer = exchange(
            port,
            request(
                "PUT",
                "/api/v1/settings",
                &format!("{host}{token}{origin}"),
                change,
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("\"key\": \"kubernetes.apiPort\""),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn an_open_page_counts_as_a_visitor_until_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (port, visitors) = page(dir.path()).await;
        assert!(visitors.none());
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let events = format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: localhost:{port}\r\nX-K8s-Manager-Token: s3cret\r\n\r\n"
        );
        stream.write_all(events.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        assert!(!visitors.none(), "the event stream is open");
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !visitors.none() {
            assert!(std::time::Instant::now() < deadline, "still counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

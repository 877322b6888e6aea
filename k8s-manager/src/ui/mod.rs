//! The settings page: what a person sees behind the desktop app's "Enable
//! Kubernetes" toggle, served by the daemon on `127.0.0.1:<ui.port>` only
//! (WSL 2 forwards localhost to Windows; no other address is ever bound).
//! It reads and changes the same settings, status and events as the CLI,
//! through the same handlers ([`server`]); who may use it is decided by
//! [`security`]; its files are built into the binary ([`assets`]); what it
//! shows of the cluster's objects is [`workloads`].
//!
//! `k8s-manager ui --url` prints its address with the token the page needs.

pub mod assets;
pub mod security;
pub mod server;
pub mod workloads;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::Manager;

/// A taken port is tried again this often (it may be freed).
const RETRY_BIND: Duration = Duration::from_secs(5);

/// Makes the page's token for this daemon's life and saves it (mode 0600)
/// where `k8s-manager ui` reads it. A token of an earlier daemon stops
/// working: the page opened with it asks for the new address.
pub fn make_token(paths: &crate::cluster::config::Paths) -> std::io::Result<String> {
    let token = security::new_token();
    crate::fsutil::write_atomic(&paths.ui_token, token.as_bytes(), 0o600)?;
    Ok(token)
}

/// Serves the page for as long as the daemon runs, on the port the settings
/// name: a change of `ui.port` moves it (the old listener is closed). A port
/// another program holds is logged once and tried again every few seconds.
pub async fn run(manager: Arc<Manager>, token: String) {
    let mut settings = manager.watch_settings();
    let mut warned = None;
    loop {
        let port = settings.borrow_and_update().ui.port;
        match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => {
                warned = None;
                tracing::info!(
                    "settings page on http://127.0.0.1:{port}/ (`k8s-manager ui` prints its address)"
                );
                let gate = Arc::new(security::Gate::new(port, token.clone()));
                let mut moved = settings.clone();
                let port_changed = async move {
                    while moved.changed().await.is_ok() {
                        if moved.borrow_and_update().ui.port != port {
                            return;
                        }
                    }
                    std::future::pending().await
                };
                server::serve(manager.clone(), listener, gate, port_changed).await;
                tracing::info!("settings page: moving off port {port}");
            }
            Err(err) => {
                if warned != Some(port) {
                    tracing::warn!(
                        "settings page: cannot listen on 127.0.0.1:{port}: {err}; trying again every {}s (or set ui.port)",
                        RETRY_BIND.as_secs()
                    );
                    warned = Some(port);
                }
                let _ = tokio::time::timeout(RETRY_BIND, settings.changed()).await;
            }
        }
    }
}

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::manager::Manager;

/// A taken port is tried again this often (it may be freed).
const RETRY_BIND: Duration = Duration::from_secs(5);

/// The connections open to the page: an open page keeps its event stream,
/// so a daemon that exits when idle does not leave a page behind.
#[derive(Debug, Clone, Default)]
pub struct Visitors(Arc<AtomicUsize>);

impl Visitors {
    pub fn none(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }

    /// Counts a connection until the guard is dropped.
    fn arrive(&self) -> Visit {
        self.0.fetch_add(1, Ordering::SeqCst);
        Visit(self.0.clone())
    }
}

struct Visit(Arc<AtomicUsize>);

impl Drop for Visit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Makes the page's token for this daemon's life and saves it (mode 0600)
/// where `k8s-manager ui` reads it. A token of an earlier daemon stops
/// working: the page opened with it asks for the new address.
pub fn make_token(paths: &crate::model::config::Paths) -> std::io::Result<String> {
    let token = security::new_token();
    crate::fsutil::write_atomic(&paths.ui_token, token.as_bytes(), 0o600)?;
    Ok(token)
}

/// Serves the page for as long as the daemon runs, on the port the settings
/// name: a change of `ui.port` moves it (the old listener is closed). A port
/// another program holds is logged once and tried again every few seconds.
pub async fn run(manager: Arc<Manager>, token: String, visitors: Visitors) {
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
                server::serve(manager.clone(), listener, gate, &visitors, port_changed).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Paths;

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn answers(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[tokio::test]
    async fn a_new_port_moves_the_page_and_leaves_the_cluster_alone() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let manager = Arc::new(Manager::new(paths.clone(), dir.path().join("cache")).unwrap());
        let (first, second) = (free_port(), free_port());
        let patch = |port| serde_json::json!({"ui": {"port": port}});
        manager
            .apply(&patch(first), Default::default())
            .await
            .unwrap();
        let token = make_token(&paths).unwrap();
        assert_eq!(std::fs::read_to_string(&paths.ui_token).unwrap(), token);
        let mode = std::fs::metadata(&paths.ui_token).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        tokio::spawn(run(manager.clone(), token, Visitors::default()));
        wait_for("the page listens on its port", || answers(first)).await;
        let applied = manager
            .apply(&patch(second), Default::default())
            .await
            .unwrap();
        assert_eq!(
            applied.changes[0].effect,
            crate::model::settings::Effect::None
        );
        assert_eq!(applied.operation, None, "nothing of the cluster runs");
        wait_for("the page moves", || answers(second) && !answers(first)).await;
    }
}

//! The daemon, the process root: it makes the manager, restores what the
//! settings say, serves the control API and the settings page, and on
//! SIGTERM (or once it outlived its purpose) stops the cluster's components,
//! keeping the settings as they are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::manager::Manager;
use crate::model::config::Paths;

/// How the daemon runs.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Do not bring back the cluster the settings enable (the CLI starts the
    /// daemon this way for an explicit request).
    pub no_restore: bool,
    /// The group that may use the control socket.
    pub socket_gid: Option<u32>,
    /// Exit after this long with nothing to do.
    pub exit_when_idle: Option<Duration>,
}

/// Runs the daemon of a state folder until SIGTERM, Ctrl-C, or it outlives
/// its purpose: takes the control socket (a second daemon of the same
/// folder stops there, having touched nothing), converges the cluster to
/// the settings, serves the control API and the page, and always stops the
/// cluster's components in order on the way out.
pub async fn run(paths: Paths, cache: PathBuf, options: DaemonOptions) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // Every LoadBalancer connection holds descriptors: the shell's 1024
    // would end the control API's accepts long before memory runs short.
    match crate::sys::raise_open_files_limit() {
        Ok(limit) => tracing::debug!("open files limit: {limit}"),
        Err(err) => tracing::warn!("cannot raise the open files limit: {err}"),
    }
    prepare_state_dir(&paths, options.socket_gid)
        .with_context(|| format!("cannot make {} private", paths.state_dir.display()))?;
    let socket = crate::api::server::bind(&paths.socket, options.socket_gid).await?;
    let manager = Arc::new(Manager::new(paths.clone(), cache).map_err(anyhow::Error::msg)?);
    if !options.no_restore {
        // A cluster that was enabled comes back with the daemon (VM boot).
        let manager = manager.clone();
        tokio::spawn(async move { manager.converge().await });
    }
    // Made before the control API answers: a client that reaches the daemon
    // finds the page's token.
    let token = crate::ui::make_token(&paths).context("cannot save the settings page's token")?;
    let visitors = crate::ui::Visitors::default();
    let page = tokio::spawn(crate::ui::run(manager.clone(), token, visitors.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let outlived = outlived(
        manager.clone(),
        paths.clone(),
        options.exit_when_idle,
        visitors,
    );
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            reason = outlived => tracing::info!("exiting: {reason}"),
        }
    };
    let served = crate::api::server::serve(manager.clone(), socket, shutdown).await;
    page.abort();
    tracing::info!("stopping the cluster's components for shutdown");
    manager.engine().shutdown().await;
    Ok(served?)
}

/// Resolves, with the reason, once the daemon has outlived its purpose: its
/// socket no longer reaches it (the state folder was deleted, or another
/// daemon took the socket over: the kernel names the process that answers),
/// or it was idle for `idle` (see [`Manager::is_idle`]) with nobody on the
/// settings page (an open page holds its event stream).
async fn outlived(
    manager: Arc<Manager>,
    paths: Paths,
    idle: Option<Duration>,
    visitors: crate::ui::Visitors,
) -> String {
    const EVERY: Duration = Duration::from_secs(1);
    const SOCKET_MISSES: u32 = 3;
    let client = crate::client::Client::new(&paths.socket);
    let mut idle_since: Option<std::time::Instant> = None;
    let mut missed = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        // A gone folder is final; a probe that failed once may be a busy
        // moment (every descriptor in use): only a few in a row end it.
        let gone = !paths.state_dir.exists();
        if client.daemon_pid().await == Some(std::process::id()) && !gone {
            missed = 0;
        } else {
            missed += 1;
            if gone || missed >= SOCKET_MISSES {
                return match gone {
                    true => format!("the state folder {} is gone", paths.state_dir.display()),
                    false => format!("{} no longer reaches this daemon", paths.socket.display()),
                };
            }
            continue;
        }
        let Some(idle) = idle else { continue };
        match (manager.is_idle() && visitors.none(), idle_since) {
            (false, _) => idle_since = None,
            (true, None) => idle_since = Some(std::time::Instant::now()),
            (true, Some(since)) if since.elapsed() >= idle => {
                return format!("idle for {}s with the cluster off", idle.as_secs());
            }
            (true, Some(_)) => {}
        }
    }
}

/// The state folder, made or narrowed before anything is written in it: it
/// holds keys, the settings (a proxy password) and the components' logs.
/// 0700, or 0710 with the socket's group as its group when one is given
/// (`--socket-gid`: its members reach the socket and can list nothing);
/// what an older manager left open in it is narrowed too
/// ([`Paths::restrict_modes`]).
fn prepare_state_dir(paths: &Paths, socket_gid: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match socket_gid {
        Some(_) => 0o710,
        None => 0o700,
    };
    crate::fsutil::create_dir_all_mode(&paths.state_dir, 0o700)?;
    if let Some(gid) = socket_gid {
        std::os::unix::fs::chown(&paths.state_dir, None, Some(gid))?;
    }
    std::fs::set_permissions(&paths.state_dir, std::fs::Permissions::from_mode(mode))?;
    for path in paths.restrict_modes(mode)? {
        tracing::info!(
            "made private what an earlier manager left open: {}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn an_older_install_s_open_state_folder_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(&dir.path().join("state"));
        // As an earlier manager left it: 0755 folders, 0644 files.
        for folder in [&paths.state_dir, &paths.logs, &paths.pki, &paths.volumes] {
            std::fs::create_dir_all(folder).unwrap();
            set(folder, 0o755);
        }
        let volume = paths.volumes.join("pvc-1");
        std::fs::create_dir(&volume).unwrap();
        set(&volume, 0o777);
        for file in [
            paths.log("etcd"),
            paths.state_file.clone(),
            paths.proxy_env.clone(),
        ] {
            std::fs::write(&file, b"x").unwrap();
            set(&file, 0o644);
        }
        prepare_state_dir(&paths, None).unwrap();
        assert_eq!(mode(&paths.state_dir), 0o700);
        for folder in [&paths.logs, &paths.pki, &paths.volumes] {
            assert_eq!(mode(folder), 0o700, "{}", folder.display());
        }
        for file in [
            paths.log("etcd"),
            paths.state_file.clone(),
            paths.proxy_env.clone(),
        ] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        assert_eq!(mode(&volume), 0o777, "a volume stays the pods'");

        // A group that reaches the socket may search the folder, no more.
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        prepare_state_dir(&paths, Some(gid)).unwrap();
        assert_eq!(mode(&paths.state_dir), 0o710);
        assert_eq!(std::fs::metadata(&paths.state_dir).unwrap().gid(), gid);
        // A new one is made private.
        let fresh = Paths::new(&dir.path().join("fresh"));
        prepare_state_dir(&fresh, None).unwrap();
        assert_eq!(mode(&fresh.state_dir), 0o700);
    }
}

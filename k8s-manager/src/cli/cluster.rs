//! `enable`, `disable`, `status`, `reset` and `daemon`: the CLI is a client of
//! the daemon's control API, and starts the daemon when none runs, so the GUI
//! and the CLI drive the same engine and read the same state.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use k8s_manager::client::{self, Client, ClientError};
use k8s_manager::cluster::engine::STOP_GRACE;
use k8s_manager::cluster::status;
use k8s_manager::daemon::DaemonOptions;
use k8s_manager::model::api;
use k8s_manager::model::config::{ClusterConfig, Paths};
use k8s_manager::model::event::Event;
use k8s_manager::model::settings;
use k8s_manager::model::state::{ClusterState, StateRecord};
use serde_json::json;

use super::error::{CliError, ErrorReport, PHASE_FAILED};
use super::{GlobalArgs, Output, OutputArg};

/// `enable` is `kubernetes.enabled=true` followed to its end. Each flag is a
/// setting saved for later (`k8s-manager settings get` shows them all); a
/// setting left out keeps its saved value, or on a first enable takes the
/// default its help names.
#[derive(Args, Debug)]
pub struct EnableArgs {
    /// The Kubernetes bundle folder (kubernetes.bundle) [default: the
    /// bundle of kubernetes.version in the cache, else the newest there].
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// The user's kubeconfig to merge into: a path or a KUBECONFIG-style list
    /// (e.g. the Windows profile's .kube/config through its mount)
    /// [default: the saved one, else none: only the VM user's].
    #[arg(long, value_name = "PATH_OR_LIST")]
    pub host_kubeconfig: Option<String>,
    /// The node's name, a lowercase DNS name [default: the saved one, else
    /// docker-desktop].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The API server's port [default: the saved one, else 6443].
    #[arg(long, value_name = "PORT")]
    pub api_port: Option<u16>,
    /// The API server URL written into kubeconfigs [default: the saved one,
    /// else https://127.0.0.1:<api-port>].
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
    /// The address the API server advertises [default: the saved one, else
    /// the address of the default route].
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// containerd's socket, with its CRI plugin enabled [default: the saved
    /// one, else /run/containerd/containerd.sock].
    #[arg(long, value_name = "SOCKET")]
    pub containerd_socket: Option<PathBuf>,
    /// Do not merge into the VM user's ~/.kube/config (saved for later enables).
    #[arg(long)]
    pub no_vm_kubeconfig: bool,
    /// Any other setting, as `settings set` takes it (repeatable) [default:
    /// none: the saved settings stay as they are].
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Go ahead when a setting changed throws the existing cluster away.
    #[arg(long)]
    pub confirm_reset: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Leave the cluster off after removing it, even if it was enabled.
    #[arg(long)]
    pub no_restart: bool,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Do not bring back a cluster that was enabled when the last daemon stopped
    /// (the CLI starts the daemon this way for an explicit request).
    #[arg(long)]
    pub no_restore: bool,
    /// Group (numeric id) that may use the control socket (mode 0660)
    /// [default: the daemon's own group].
    // u32::MAX is chown's "leave the group as it is", not a group.
    #[arg(long, value_name = "GID", value_parser = clap::value_parser!(u32).range(..i64::from(u32::MAX)))]
    pub socket_gid: Option<u32>,
    /// Exit after this long with nothing to do: the cluster off and no
    /// operation (the CLI starts its daemon with 60s) [default: never, as the
    /// VM's service runs it].
    #[arg(long, value_name = "DURATION", value_parser = super::kubeconfig::parse_duration)]
    pub exit_when_idle: Option<Duration>,
    /// Stop the daemon of this state folder (SIGTERM: it stops the cluster's
    /// components, keeping whether it was enabled) and wait for it to exit.
    #[arg(long, conflicts_with_all = ["no_restore", "socket_gid", "exit_when_idle"])]
    pub stop: bool,
}

/// `daemon --stop`: SIGTERM to the daemon that answers on this state
/// folder's socket, then waits for it to exit.
async fn stop_daemon(paths: &Paths) -> anyhow::Result<ExitCode> {
    let client = Client::new(&paths.socket);
    let Some(pid) = client.daemon_pid().await else {
        eprintln!("no daemon runs for {}", paths.state_dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    k8s_manager::sys::signal(pid, libc::SIGTERM);
    // It stops the cluster's components first (each up to its grace).
    let deadline = std::time::Instant::now() + STOP_GRACE + Duration::from_secs(20);
    while k8s_manager::sys::process_alive(pid) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the daemon (pid {pid}) did not exit within {}s of SIGTERM; see {}",
                (STOP_GRACE + Duration::from_secs(20)).as_secs(),
                paths.log("manager").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("daemon (pid {pid}) stopped");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The settings an enable's flags change, as a merge patch.
fn enable_patch(args: &EnableArgs) -> anyhow::Result<serde_json::Value> {
    let mut patch = settings::patch_from_assignments(&args.set)
        .map_err(|e| CliError::InvalidArgument(e.to_string()))?;
    let mut flags = serde_json::Map::new();
    let mut set = |key: &str, value: serde_json::Value| {
        flags.insert(key.to_string(), value);
    };
    if let Some(bundle) = &args.bundle {
        // The bundle's own version is taken (and pinned).
        set("bundle", json!(std::path::absolute(bundle)?));
        set("version", serde_json::Value::Null);
    }
    if let Some(v) = &args.host_kubeconfig {
        set("hostKubeconfig", json!(v));
    }
    if let Some(v) = &args.node_name {
        set("nodeName", json!(v));
    }
    if let Some(v) = args.api_port {
        set("apiPort", json!(v));
    }
    if let Some(v) = &args.server_url {
        set("serverUrl", json!(v));
    }
    if let Some(v) = args.advertise_address {
        set("advertiseAddress", json!(v));
    }
    if args.no_vm_kubeconfig {
        set("mergeVmKubeconfig", json!(false));
    }
    settings::merge_patch(&mut patch, &json!({ "kubernetes": flags }));
    if let Some(v) = &args.containerd_socket {
        settings::merge_patch(&mut patch, &json!({"containerd": {"socket": v}}));
    }
    Ok(patch)
}

/// A client of the running daemon, started first if none answers.
pub(super) async fn daemon(global: &GlobalArgs) -> anyhow::Result<Client> {
    let paths = Paths::new(&global.state_dir);
    let client = Client::new(&paths.socket);
    if !client.is_up().await {
        let exe = std::env::current_exe()
            .context("cannot find this program's path to start the daemon")?;
        client::start_daemon(&exe, &global.state_dir, &paths.log("manager")).await?;
    }
    Ok(client)
}

/// Prints progress: a line per step with its time, and the total.
pub(super) struct Progress {
    output: Output,
    tty: bool,
    /// The running step's description, for its line once done.
    step: std::cell::RefCell<String>,
}

impl Progress {
    pub(super) fn new(output: Output) -> Progress {
        Progress {
            output,
            tty: std::io::stderr().is_terminal(),
            step: Default::default(),
        }
    }

    pub(super) fn show(&self, event: &Event) {
        if self.output == Output::Json {
            println!("{}", serde_json::to_string(event).expect("serialises"));
            return;
        }
        let mut err = std::io::stderr();
        match event {
            Event::Phase { phase, description } => {
                self.step.replace(description.clone());
                if self.tty {
                    let _ = write!(err, "\r\x1b[2K  … {:<14} {description}", phase.name());
                }
            }
            Event::PhaseDone { phase, seconds } => {
                let prefix = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(
                    err,
                    "{prefix}  ✓ {:<14} {:>6.2}s  {}",
                    phase.name(),
                    seconds,
                    self.step.borrow()
                );
            }
            Event::Notice { message } => {
                let prefix = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(err, "{prefix}  ! {message}");
            }
            Event::CertRenewed { name, not_after } => {
                let prefix = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(
                    err,
                    "{prefix}  ✓ certificate {name} renewed, valid until {not_after}"
                );
            }
            Event::Frozen { cause, .. } => {
                let prefix = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(err, "{prefix}  ✓ frozen ({cause})");
            }
            Event::Thawed { cause, latency_ms } => {
                let prefix = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(
                    err,
                    "{prefix}  ✓ thawed ({cause}): the API server ran again after {latency_ms} ms"
                );
            }
            Event::State { .. } | Event::Started { .. } => {}
            Event::Done {
                ok: true, message, ..
            } => {
                let prefix = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(err, "{prefix}done: {message}");
            }
            // The error is the command's, printed as every error is; only
            // the progress line is cleared for it.
            Event::Done { ok: false, .. } if self.tty => {
                let _ = write!(err, "\r\x1b[2K");
            }
            Event::Done { ok: false, .. } => {}
        }
    }
}

async fn run_operation(
    global: &GlobalArgs,
    path: &str,
    body: Vec<u8>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let client = daemon(global).await?;
    let progress = Progress::new(output);
    let answering = client.daemon_pid().await;
    let done = match client
        .operation(path, body.clone(), |e| progress.show(e))
        .await
    {
        // The daemon went away as the request arrived (killed, crashed, or
        // exiting when idle): the request was not taken. Once that daemon is
        // gone, the request goes to the next one, started if need be.
        Err(ClientError::Dropped { .. }) => {
            let gone_by = std::time::Instant::now() + Duration::from_secs(5);
            while client.daemon_pid().await == answering && std::time::Instant::now() < gone_by {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let client = daemon(global).await?;
            client.operation(path, body, |e| progress.show(e)).await
        }
        other => other,
    };
    outcome(done?)
}

/// The exit code of an operation that ended with `done`, or its error.
pub(super) fn outcome(done: Event) -> anyhow::Result<ExitCode> {
    match done {
        Event::Done { ok: true, .. } => Ok(ExitCode::SUCCESS),
        Event::Done {
            operation,
            message,
            error,
            ..
        } => Err(CliError::OperationFailed {
            operation,
            message,
            error,
        }
        .into()),
        other => Err(ClientError::Protocol(format!("the operation ended with {other:?}")).into()),
    }
}

pub fn enable(args: EnableArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let patch = enable_patch(&args)?;
    let path = match args.confirm_reset {
        true => format!("{}?confirm=reset", api::ENABLE),
        false => api::ENABLE.to_string(),
    };
    let rt = runtime()?;
    let code = rt.block_on(run_operation(
        global,
        &path,
        patch.to_string().into_bytes(),
        args.output.value,
    ))?;
    if code == ExitCode::SUCCESS && args.output.value == Output::Text {
        let paths = Paths::new(&global.state_dir);
        let config = ClusterConfig::load_saved(&paths).map_err(anyhow::Error::msg)?;
        if let Some(config) = config {
            eprintln!(
                "\nkubectl is ready: context {:?} in {}",
                config.context_name,
                kubeconfig_targets(&config).join(", ")
            );
            eprintln!("  kubectl --context {} get nodes", config.context_name);
        }
        eprintln!(
            "  (admin kubeconfig of the VM: {})",
            paths.admin_kubeconfig().display()
        );
    }
    Ok(code)
}

fn kubeconfig_targets(config: &ClusterConfig) -> Vec<String> {
    let mut targets = Vec::new();
    if let Some(host) = &config.host_kubeconfig {
        targets.push(host.clone());
    }
    if config.merge_vm_kubeconfig {
        targets.push("~/.kube/config".into());
    }
    targets
}

pub fn disable(output: Output, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(run_operation(global, api::DISABLE, Vec::new(), output))
}

/// An operation of the daemon that takes no request body (`pause`, `resume`).
pub fn operation(path: &str, output: Output, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(run_operation(global, path, Vec::new(), output))
}

pub fn reset(args: ResetArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let path = if args.no_restart {
        format!("{}?restart=false", api::RESET)
    } else {
        api::RESET.to_string()
    };
    runtime()?.block_on(run_operation(global, &path, Vec::new(), args.output.value))
}

pub fn status(output: Output, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&global.state_dir);
    let rt = runtime()?;
    let report = rt.block_on(async {
        let client = Client::new(&paths.socket);
        match client.status().await {
            Ok(report) => return Ok(report),
            // No daemon, or one that went away as it was asked: the state
            // folder tells the rest.
            Err(ClientError::Connect { .. } | ClientError::Dropped { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        // No daemon: report from the state folder alone.
        let mut record = StateRecord::load(&paths.state_file)?;
        if record.cluster.is_none() {
            // A folder of an older manager, not yet taken over by a daemon.
            record.cluster = ClusterConfig::load_saved(&paths).map_err(anyhow::Error::msg)?;
        }
        let enabled = settings::load(&paths.settings_file)
            .map_err(anyhow::Error::msg)?
            .is_some_and(|s| s.kubernetes.enabled);
        anyhow::Ok(status::report(&paths, &record, enabled, Vec::new(), false, false).await)
    })?;
    let error = match &report.state {
        ClusterState::Error { .. } => Some(ErrorReport::new(PHASE_FAILED, report.state.label())),
        _ => None,
    };
    match output {
        Output::Json => {
            let mut json = serde_json::to_value(&report)?;
            if let Some(error) = &error {
                error.attach_to(&mut json);
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Text => print!("{}", k8s_manager::model::status::render_text(&report)),
    }
    Ok(error.map_or(ExitCode::SUCCESS, |error| error.exit_code()))
}

pub fn daemon_main(args: DaemonArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&global.state_dir);
    let rt = runtime()?;
    if args.stop {
        return rt.block_on(stop_daemon(&paths));
    }
    let options = DaemonOptions {
        no_restore: args.no_restore,
        socket_gid: args.socket_gid,
        exit_when_idle: args.exit_when_idle,
    };
    rt.block_on(k8s_manager::daemon::run(
        paths,
        k8s_manager::bundle::cache_dir(),
        options,
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use k8s_manager::model::config::{
        DEFAULT_API_PORT, DEFAULT_CONTAINERD_SOCKET, DEFAULT_NODE_NAME,
    };

    use super::super::Cli;

    /// The help of an enable option names the default of the settings.
    #[test]
    fn enable_help_names_the_defaults_of_the_settings() {
        let cli = Cli::command();
        let enable = cli.find_subcommand("enable").unwrap();
        let help = |id: &str| {
            let arg = enable.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_help().unwrap().to_string()
        };
        assert!(help("node_name").contains(DEFAULT_NODE_NAME));
        assert!(help("api_port").contains(&DEFAULT_API_PORT.to_string()));
        assert!(help("containerd_socket").contains(DEFAULT_CONTAINERD_SOCKET));
    }
}

//! Command-line interface: argument parsing and dispatch. Each command group
//! lives in its own file and only translates arguments into library calls.

mod bundle;
mod certs;
mod cluster;
pub mod error;
mod images;
mod json;
mod kubeconfig;
mod settings;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "k8s-manager",
    version,
    about = "Runs a single-node Kubernetes cluster on containerd, behind a desktop 'Enable Kubernetes' toggle"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Folder holding the cluster's state: PKI, kubeconfigs, etcd data, logs.
    #[arg(
        long,
        global = true,
        env = "K8S_MANAGER_STATE_DIR",
        default_value = "/var/lib/k8s-manager"
    )]
    pub state_dir: PathBuf,
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How a command prints its result on standard output.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArg {
    /// How to print the result: text for people, or json for programs
    /// (camelCase keys; a failure is {"error": {"code", "message"}}).
    #[arg(long = "output", value_name = "FORMAT", value_enum, default_value_t)]
    pub value: Output,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bring the cluster up (or back): every phase, then merge the kubeconfig.
    Enable(cluster::EnableArgs),
    /// Stop the cluster; keep its data so the next enable is fast.
    Disable {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show the cluster's state, components, API and node health, versions, certificate expiry.
    Status {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Freeze the running cluster: no CPU used, memory kept, nothing restarted (resume, or any operation, thaws it).
    Pause {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Thaw a paused cluster.
    Resume {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Throw the cluster away and build a fresh one (only if it was enabled, unless --no-restart).
    Reset(cluster::ResetArgs),
    /// Run the manager: supervise the cluster and serve the control API on <state-dir>/manager.sock.
    Daemon(cluster::DaemonArgs),
    /// Read and change the settings the daemon converges the cluster to.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Generate, check and renew the cluster's certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Check a Kubernetes bundle, or fetch one from the official releases.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Merge into and remove from a user's kubeconfig.
    #[command(subcommand)]
    Kubeconfig(kubeconfig::KubeconfigCommand),
    /// Print the address of the settings page the daemon serves on 127.0.0.1 (setting ui.port).
    Ui(ui::UiArgs),
    /// Docker's images in the cluster: sync now, or list them.
    #[command(subcommand)]
    Images(images::ImagesCommand),
}

impl Command {
    /// How the command prints its result, and so its error; text for the
    /// commands without --output.
    pub fn output(&self) -> Output {
        match self {
            Command::Enable(args) => args.output.value,
            Command::Disable { output }
            | Command::Status { output }
            | Command::Pause { output }
            | Command::Resume { output } => output.value,
            Command::Reset(args) => args.output.value,
            Command::Daemon(_) | Command::Ui(_) => Output::Text,
            Command::Settings(cmd) => cmd.output(),
            Command::Certs(cmd) => cmd.output(),
            Command::Bundle(cmd) => cmd.output(),
            Command::Kubeconfig(cmd) => cmd.output(),
            Command::Images(cmd) => cmd.output(),
        }
    }
}

pub fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match global.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("K8S_MANAGER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match global.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Enable(args) => cluster::enable(args, &cli.global),
        Command::Disable { output } => cluster::disable(output.value, &cli.global),
        Command::Pause { output } => {
            cluster::operation(k8s_manager::model::api::PAUSE, output.value, &cli.global)
        }
        Command::Resume { output } => {
            cluster::operation(k8s_manager::model::api::RESUME, output.value, &cli.global)
        }
        Command::Status { output } => cluster::status(output.value, &cli.global),
        Command::Reset(args) => cluster::reset(args, &cli.global),
        Command::Daemon(args) => cluster::daemon_main(args, &cli.global),
        Command::Settings(cmd) => settings::run(cmd, &cli.global),
        Command::Bundle(cmd) => bundle::run(cmd, &cli.global),
        Command::Certs(cmd) => certs::run(cmd, &cli.global),
        Command::Kubeconfig(cmd) => kubeconfig::run(cmd, &cli.global),
        Command::Ui(args) => ui::run(args, &cli.global),
        Command::Images(cmd) => images::run(cmd, &cli.global),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every argument of `cmd` and of its subcommands, with the command's path.
    fn every_arg(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        let path = format!("{path} {}", cmd.get_name());
        for arg in cmd.get_arguments() {
            out.push((path.clone(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            every_arg(sub, &path, out);
        }
    }

    fn args() -> Vec<(String, clap::Arg)> {
        let mut cli = Cli::command();
        // Adds --help and --version, and copies the global options to every command.
        cli.build();
        let mut all = Vec::new();
        every_arg(&cli, "", &mut all);
        all
    }

    #[test]
    fn every_argument_of_every_command_is_described() {
        let undescribed: Vec<String> = args()
            .into_iter()
            .filter(|(_, arg)| {
                arg.get_help()
                    .is_none_or(|help| help.to_string().trim().is_empty())
            })
            .map(|(path, arg)| format!("{path} {}", arg.get_id()))
            .collect();
        assert_eq!(undescribed, Vec::<String>::new());
    }

    /// clap shows a default value itself; an option without one says what
    /// its absence means, in clap's own form.
    #[test]
    fn an_option_without_a_default_says_what_its_absence_means() {
        let silent: Vec<String> = args()
            .into_iter()
            .filter(|(_, arg)| {
                arg.get_action().takes_values()
                    && !arg.is_required_set()
                    && arg.get_default_values().is_empty()
                    && !arg.get_help().unwrap().to_string().contains("[default: ")
            })
            .map(|(path, arg)| format!("{path} {}", arg.get_id()))
            .collect();
        assert_eq!(silent, Vec::<String>::new());
    }

    #[test]
    fn every_command_has_an_output_it_reports_errors_in() {
        let cli =
            Cli::try_parse_from(["k8s-manager", "certs", "check", "--output", "json"]).unwrap();
        assert_eq!(cli.command.output(), Output::Json);
        let cli = Cli::try_parse_from(["k8s-manager", "status"]).unwrap();
        assert_eq!(cli.command.output(), Output::Text);
        let cli = Cli::try_parse_from(["k8s-manager", "kubeconfig", "discover", "--output=json"])
            .unwrap();
        assert_eq!(cli.command.output(), Output::Json);
    }
}

//! `settings get|set|propose`: the settings document through the daemon.

use std::process::ExitCode;

use clap::Subcommand;
use k8s_manager::model::settings::{self, Change, Effect};

use super::error::CliError;
use super::{GlobalArgs, Output, OutputArg};

#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// Print the settings (every key, with its value).
    Get {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Change settings, all or none; the daemon then converges the cluster
    /// (`status` follows it). A value is JSON when it reads as JSON (true,
    /// 6444, ["a","b"], null for the default), a string otherwise.
    Set {
        /// The settings to change: a dotted key and its value, e.g.
        /// kubernetes.apiPort=6444.
        #[arg(value_name = "KEY=VALUE", required = true)]
        assignments: Vec<String>,
        /// Go ahead when a change throws the existing cluster away.
        #[arg(long)]
        confirm_reset: bool,
        /// Follow the cluster's convergence to its end, with progress (the
        /// exit code says whether it converged).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Say what a change would do to the cluster (none, restart-component,
    /// restart, reset), changing nothing.
    Propose {
        /// The settings a change would set, as `settings set` takes them.
        #[arg(value_name = "KEY=VALUE", required = true)]
        assignments: Vec<String>,
        #[command(flatten)]
        output: OutputArg,
    },
}

impl SettingsCommand {
    pub fn output(&self) -> Output {
        match self {
            SettingsCommand::Get { output }
            | SettingsCommand::Set { output, .. }
            | SettingsCommand::Propose { output, .. } => output.value,
        }
    }
}

pub fn run(command: SettingsCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let output = command.output();
    let rt = super::cluster::runtime()?;
    rt.block_on(async {
        let client = super::cluster::daemon(global).await?;
        match command {
            SettingsCommand::Get { .. } => {
                let settings = client.settings().await?;
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&settings)?),
                    Output::Text => {
                        for (key, value) in settings::leaves(&settings.to_value()) {
                            println!("{key}={}", shown(&value));
                        }
                    }
                }
            }
            SettingsCommand::Set {
                assignments,
                confirm_reset,
                wait,
                ..
            } => {
                let patch = patch(&assignments)?;
                // Subscribed before the change: none of its events is missed.
                let mut events = match wait {
                    true => Some(client.events().await?),
                    false => None,
                };
                let applied = client.change_settings(&patch, confirm_reset).await?;
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&applied)?),
                    Output::Text => {
                        print_changes(&applied.changes);
                        match applied.operation {
                            Some(id) if !wait => eprintln!(
                                "the cluster converges (operation {id}): `k8s-manager status` follows it"
                            ),
                            None if applied.changes.is_empty() => eprintln!("nothing changed"),
                            _ => {}
                        }
                    }
                }
                if let (Some(events), Some(id)) = (&mut events, applied.operation) {
                    let progress = super::cluster::Progress::new(output);
                    let done = events.until_done(id, |e| progress.show(e)).await?;
                    return super::cluster::outcome(done);
                }
            }
            SettingsCommand::Propose { assignments, .. } => {
                let changes = client.propose(&patch(&assignments)?).await?;
                match output {
                    Output::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({ "changes": changes }))?
                    ),
                    Output::Text if changes.is_empty() => eprintln!("nothing would change"),
                    Output::Text => print_changes(&changes),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn patch(assignments: &[String]) -> anyhow::Result<serde_json::Value> {
    settings::patch_from_assignments(assignments)
        .map_err(|e| CliError::InvalidArgument(e.to_string()).into())
}

fn print_changes(changes: &[Change]) {
    for change in changes {
        let effect = match change.effect {
            Effect::None => String::new(),
            Effect::RestartComponent => format!(
                "  (restarts {})",
                change.component.as_deref().unwrap_or("its component")
            ),
            Effect::Restart => "  (restarts the cluster's components)".into(),
            Effect::Reset => "  (RESETS the cluster: its workloads and data are lost)".into(),
        };
        println!(
            "{}: {} → {}{effect}",
            change.key,
            shown(&change.current),
            shown(&change.desired)
        );
    }
}

/// A value as text for people. The daemon shows no secret (a proxy's
/// password, a component's variable are `********`): a terminal, a screen
/// share or a pasted log does not carry one.
fn shown(value: &serde_json::Value) -> String {
    value.to_string()
}

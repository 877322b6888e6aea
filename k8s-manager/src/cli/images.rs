//! `images sync|list`: Docker's images in the cluster, through the daemon's
//! image-sync unit.

use std::process::ExitCode;

use clap::Subcommand;

use super::{GlobalArgs, Output, OutputArg};

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Copy Docker's tagged images into the cluster now and wait until it is
    /// done (the daemon also does it by itself after each build, tag, load
    /// or pull); print what was imported, tagged, removed, or failed.
    Sync {
        /// Docker references to sync (myapp:dev) [default: every tagged image].
        #[arg(value_name = "REF")]
        refs: Vec<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List Docker's tagged images with the name Kubernetes knows each by,
    /// and whether the cluster has it.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
}

impl ImagesCommand {
    pub fn output(&self) -> Output {
        match self {
            ImagesCommand::Sync { output, .. } | ImagesCommand::List { output } => output.value,
        }
    }
}

pub fn run(command: ImagesCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let output = command.output();
    let rt = super::cluster::runtime()?;
    rt.block_on(async {
        let client = super::cluster::daemon(global).await?;
        match command {
            ImagesCommand::Sync { refs, .. } => {
                let report = client.sync_images(refs).await?;
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                    Output::Text => {
                        for (what, names) in [
                            ("imported", &report.imported),
                            ("tagged", &report.tagged),
                            ("present", &report.present),
                            ("removed", &report.removed),
                        ] {
                            for name in names {
                                println!("{what:<9} {name}");
                            }
                        }
                        for kept in &report.kept {
                            println!("kept      {} ({})", kept.name, kept.reason);
                        }
                        for failed in &report.failed {
                            println!("failed    {}: {}", failed.name, failed.reason);
                        }
                    }
                }
                Ok(match report.failed.is_empty() {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::FAILURE,
                })
            }
            ImagesCommand::List { .. } => {
                let list = client.images().await?;
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                    Output::Text => {
                        println!(
                            "{:<30} {:<45} {:<19} {:>9}  SYNCED",
                            "DOCKER REF", "KUBERNETES NAME", "IMAGE ID", "SIZE"
                        );
                        for image in &list.images {
                            let id = image.image_id.trim_start_matches("sha256:");
                            let synced = match (&image.synced, &image.why) {
                                (true, _) => "yes".to_string(),
                                (false, Some(why)) => format!("no: {why}"),
                                (false, None) => "no".to_string(),
                            };
                            println!(
                                "{:<30} {:<45} {:<19} {:>9}  {synced}",
                                image.docker_ref,
                                image.k8s_name.as_deref().unwrap_or("-"),
                                &id[..id.len().min(12)],
                                size(image.size),
                            );
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} kB", b as f64 / 1024.0),
    }
}

//! `ui`: the address of the settings page the daemon serves.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use k8s_manager::model::config::Paths;
use k8s_manager::ui::security::Gate;

use super::GlobalArgs;

#[derive(Args, Debug)]
pub struct UiArgs {
    /// Print only the page's address (with its token), for a script or the
    /// desktop app to open.
    #[arg(long)]
    pub url: bool,
}

pub fn run(args: UiArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let rt = super::cluster::runtime()?;
    rt.block_on(async {
        // The daemon serves the page; the token is made when it starts.
        let client = super::cluster::daemon(global).await?;
        let port = client.settings().await?.ui.port;
        let paths = Paths::new(&global.state_dir);
        let token = std::fs::read_to_string(&paths.ui_token)
            .with_context(|| format!("cannot read the page's token {}", paths.ui_token.display()))?;
        let url = Gate::url(port, token.trim());
        match args.url {
            true => println!("{url}"),
            false => {
                println!("{url}");
                eprintln!(
                    "open this address in a browser on this machine (or on Windows: WSL forwards localhost); it carries the page's key, keep it to yourself"
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

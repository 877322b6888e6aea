//! The `k8s-manager` binary: a thin CLI over the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::error::{ErrorReport, wants_json};

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let args = match cli::Cli::try_parse_from(&argv) {
        Ok(args) => args,
        // --help and --version are not errors; clap prints them.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) if wants_json(&argv) => {
            return ErrorReport::from_clap(&err).print(cli::Output::Json);
        }
        Err(err) => err.exit(),
    };
    let output = args.command.output();
    cli::init_logging(&args.global);
    k8s_manager::install_crypto_provider();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => ErrorReport::from_error(&err).print(output),
    }
}

//! `k8s-manager bundle ...`: check a bundle, fetch one from the official releases.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use k8s_manager::bundle::{self, Depth, fetch};

use super::error::ErrorReport;
use super::{GlobalArgs, Output, OutputArg};

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Check a bundle: every file present with the right sha256, every executable
    /// runnable and reporting the expected version.
    Verify {
        /// The bundle folder (holds bundle.json).
        dir: PathBuf,
        /// Only check digests and links; do not run the executables.
        #[arg(long)]
        digests_only: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Download the official linux/amd64 release binaries of a Kubernetes version
    /// and etcd, verify each against its published checksum, and write a bundle.
    Fetch {
        /// Kubernetes version, e.g. v1.34.4.
        #[arg(long)]
        version: String,
        /// Base URL of the Kubernetes release tree (serves release/<v>/bin/linux/amd64/<name>[.sha256]).
        #[arg(long, default_value = fetch::DEFAULT_KUBERNETES_MIRROR)]
        mirror: String,
        /// etcd version to bundle.
        #[arg(long, default_value = fetch::DEFAULT_ETCD_VERSION)]
        etcd_version: String,
        /// Base URL of the etcd releases (serves <v>/etcd-<v>-linux-amd64.tar.gz and <v>/SHA256SUMS).
        #[arg(long, default_value = fetch::DEFAULT_ETCD_MIRROR)]
        etcd_mirror: String,
        /// Where to write the bundle [default: <cache>/bundles/<version>, the
        /// cache being $K8S_MANAGER_CACHE, else $XDG_CACHE_HOME/k8s-manager,
        /// else ~/.cache/k8s-manager].
        #[arg(long)]
        dest: Option<PathBuf>,
    },
}

impl BundleCommand {
    pub fn output(&self) -> Output {
        match self {
            BundleCommand::Verify { output, .. } => output.value,
            BundleCommand::Fetch { .. } => Output::Text,
        }
    }
}

pub fn run(cmd: BundleCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCommand::Verify {
            dir,
            digests_only,
            output,
        } => {
            let depth = if digests_only {
                Depth::Digests
            } else {
                Depth::DigestsAndVersions
            };
            let report = bundle::verify(&dir, depth)?;
            match output.value {
                Output::Json => {
                    let problems: Vec<_> = report
                        .problems
                        .iter()
                        .map(|p| serde_json::json!({"path": p.path, "problem": p.what}))
                        .collect();
                    let mut json = serde_json::json!({
                        "bundle": dir,
                        "kubernetes": report.manifest.kubernetes,
                        "components": report.manifest.components,
                        "filesChecked": report.files_checked,
                        "executablesChecked": report.executables_checked,
                        "ok": report.is_ok(),
                        "problems": problems,
                    });
                    if !report.is_ok() {
                        let error = ErrorReport::new(
                            "BundleInvalid",
                            format!("{} is not a usable bundle", dir.display()),
                        )
                        .with_problems(report.problems.iter().map(|p| p.to_string()).collect());
                        error.attach_to(&mut json);
                    }
                    println!("{}", serde_json::to_string_pretty(&json)?);
                }
                Output::Text => {
                    for problem in &report.problems {
                        println!("problem: {problem}");
                    }
                    let versions: Vec<String> = report
                        .manifest
                        .components
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect();
                    println!(
                        "{}: {} ({}); {} files, {} executables checked",
                        dir.display(),
                        if report.is_ok() { "ok" } else { "NOT usable" },
                        versions.join(", "),
                        report.files_checked,
                        report.executables_checked
                    );
                    if !report.is_ok() {
                        println!(
                            "rebuild it with vm/bundle/build.sh, or fetch it again with `k8s-manager bundle fetch --version {}`",
                            report.manifest.kubernetes
                        );
                    }
                }
            }
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        BundleCommand::Fetch {
            version,
            mirror,
            etcd_version,
            etcd_mirror,
            dest,
        } => {
            fetch::validate_version(&version)?;
            let dest = dest.unwrap_or_else(|| bundle::cached_bundle(&version));
            let opts = fetch::FetchOptions {
                version,
                etcd_version,
                mirror,
                etcd_mirror,
                dest,
                progress_bars: std::io::stderr().is_terminal(),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime
                .block_on(fetch::fetch(&opts))
                .with_context(|| format!("fetching Kubernetes {} (partial downloads are kept and resumed by the next run)", opts.version))?;
            eprintln!(
                "fetched {:.1} MB{}; images are not part of a fetched bundle: import pause and CoreDNS images into containerd's k8s.io namespace, or let containerd pull them",
                report.downloaded_bytes as f64 / 1e6,
                if report.resumed.is_empty() {
                    String::new()
                } else {
                    format!(" (resumed: {})", report.resumed.join(", "))
                }
            );
            println!("{}", report.dest.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

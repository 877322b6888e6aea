//! `k8s-manager kubeconfig merge|remove|discover`: the user's kubeconfig.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::json::with_camel_case_keys;
use super::{GlobalArgs, Output, OutputArg};
use k8s_manager::kubeconfig::{
    self, CurrentContextMode, DEFAULT_CONTEXT_NAME, EntryRef, HostEnvironment, HostKubeconfig,
    Kubeconfig, MergeOptions, MergeReport, RemoveOptions, RemoveReport,
};

#[derive(Subcommand, Debug)]
pub enum KubeconfigCommand {
    /// Merge the clusters, users and contexts of a kubeconfig into a user's
    /// kubeconfig, keeping every other entry. The previous file is kept as
    /// <file>.bak.
    Merge(MergeArgs),
    /// Remove a context, and its cluster and user unless another context
    /// uses them, from a user's kubeconfig.
    Remove(RemoveArgs),
    /// Find the Windows user's kubeconfig as seen from the VM.
    Discover(DiscoverArgs),
}

impl KubeconfigCommand {
    pub fn output(&self) -> Output {
        match self {
            KubeconfigCommand::Merge(args) => args.common.output.value,
            KubeconfigCommand::Remove(args) => args.common.output.value,
            KubeconfigCommand::Discover(args) => args.output.value,
        }
    }
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The kubeconfig to merge (e.g. the cluster's admin kubeconfig).
    #[arg(long, value_name = "SRC")]
    from: PathBuf,
    /// The user's kubeconfig: a file or a KUBECONFIG-style list (':' or ';'
    /// separated; Windows drive paths are mapped under --mount-root).
    #[arg(long, value_name = "DEST")]
    into: String,
    /// When to make our context the current one: auto (only if none is set),
    /// always, never.
    #[arg(long, value_name = "auto|always|never", default_value_t = CurrentContextMode::Auto)]
    set_current_context: CurrentContextMode,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The context to remove.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONTEXT_NAME)]
    context: String,
    /// The user's kubeconfig: a file or a KUBECONFIG-style list.
    #[arg(long, value_name = "DEST")]
    from: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// How long to wait for kubectl (or another writer) to release
    /// <file>.lock, e.g. 10s, 500ms, 1m; at most 1h.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    lock_timeout: Duration,
    /// Where the host's drives are mounted in the VM.
    #[arg(long, env = "K8S_MANAGER_HOST_MOUNT_ROOT", default_value = HostEnvironment::DEFAULT_MOUNT_ROOT)]
    mount_root: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// A configured kubeconfig path or list; wins over everything else
    /// [default: none: the host's settings below decide].
    #[arg(long, env = "K8S_MANAGER_KUBECONFIG")]
    kubeconfig: Option<String>,
    /// The host's %KUBECONFIG%, as handed over by the host; next in line
    /// [default: none: the user profile decides].
    #[arg(long, env = "K8S_MANAGER_HOST_KUBECONFIG")]
    host_kubeconfig: Option<String>,
    /// The host's %USERPROFILE% (C:\Users\me), whose .kube\config is used
    /// [default: none: the user name decides].
    #[arg(long, env = "K8S_MANAGER_HOST_USERPROFILE")]
    host_userprofile: Option<String>,
    /// The host's %USERNAME%, whose profile under <mount-root>/c/Users is used
    /// [default: none: the only real profile there, if one is].
    #[arg(long, env = "K8S_MANAGER_HOST_USERNAME")]
    host_username: Option<String>,
    /// Where the host's drives are mounted in the VM.
    #[arg(long, env = "K8S_MANAGER_HOST_MOUNT_ROOT", default_value = HostEnvironment::DEFAULT_MOUNT_ROOT)]
    mount_root: PathBuf,
    #[command(flatten)]
    output: OutputArg,
}

pub fn run(cmd: KubeconfigCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        KubeconfigCommand::Merge(args) => merge(args),
        KubeconfigCommand::Remove(args) => remove(args),
        KubeconfigCommand::Discover(args) => discover(args),
    }
}

fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let src = Kubeconfig::load(&args.from).context("cannot read the kubeconfig to merge")?;
    let dest = HostKubeconfig::parse(&args.into, &args.common.mount_root)?;
    let opts = MergeOptions {
        current_context: args.set_current_context,
        lock_timeout: args.common.lock_timeout,
    };
    let report = kubeconfig::merge_into_host(&src, &dest, &opts)?;
    match args.common.output.value {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&with_camel_case_keys(&report)?)?
        ),
        Output::Text => print!("{}", merge_text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let dest = HostKubeconfig::parse(&args.from, &args.common.mount_root)?;
    let opts = RemoveOptions {
        lock_timeout: args.common.lock_timeout,
    };
    let report = kubeconfig::remove_from_host(&dest, &args.context, &opts)?;
    match args.common.output.value {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&with_camel_case_keys(&report)?)?
        ),
        Output::Text => print!("{}", remove_text(&report, &dest)),
    }
    Ok(ExitCode::SUCCESS)
}

fn discover(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let env = HostEnvironment {
        explicit: args.kubeconfig,
        kubeconfig: args.host_kubeconfig,
        user_profile: args.host_userprofile,
        user_name: args.host_username,
        mount_root: args.mount_root,
    };
    let found = kubeconfig::discover(&env)?;
    match args.output.value {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&with_camel_case_keys(&found)?)?
        ),
        Output::Text => {
            let files: Vec<String> = found
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            println!("{}\n({})", files.join(":"), found.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn merge_text(report: &MergeReport) -> String {
    let file = report.file.display();
    let changes = &report.changes;
    let mut out = String::new();
    if !report.written {
        out.push_str(&format!("{file} is up to date: nothing written\n"));
    } else {
        let verb = if report.created { "created" } else { "updated" };
        out.push_str(&format!("{verb} {file}\n"));
        push_entries(&mut out, "added", &changes.added);
        push_entries(&mut out, "replaced", &changes.replaced);
        if let Some(backup) = &report.backup {
            out.push_str(&format!(
                "  previous content saved as {}\n",
                backup.display()
            ));
        }
    }
    if let (Some(name), Some(in_file)) =
        (&changes.current_context_set, &report.current_context_file)
    {
        out.push_str(&format!(
            "  current-context set to {name} in {}\n",
            in_file.display()
        ));
    }
    out
}

fn remove_text(report: &RemoveReport, dest: &HostKubeconfig) -> String {
    if !report.found() {
        return format!(
            "context {} is not in {dest}: nothing to remove\n",
            report.context
        );
    }
    let mut out = String::new();
    for file in &report.files {
        out.push_str(&format!("updated {}\n", file.file.display()));
        push_entries(&mut out, "removed", &file.changes.removed);
        push_entries(
            &mut out,
            "kept (still used by another context)",
            &file.changes.kept_shared,
        );
        if file.changes.cleared_current_context {
            out.push_str("  current-context cleared\n");
        }
        if let Some(backup) = &file.backup {
            out.push_str(&format!(
                "  previous content saved as {}\n",
                backup.display()
            ));
        }
    }
    out
}

fn push_entries(out: &mut String, label: &str, entries: &[EntryRef]) {
    for entry in entries {
        out.push_str(&format!("  {label} {entry}\n"));
    }
}

/// The longest lock wait: longer is a mistake, and an unbounded one would
/// overflow the deadline.
const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reads "10s", "500ms", "2m" or a bare number of seconds, up to an hour
/// (a lock timeout, an idle time).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: expected e.g. 10s, 500ms, 1m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s or m"
            ));
        }
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration > MAX_LOCK_TIMEOUT {
        return Err(format!("{text:?} is longer than the longest wait, 1h"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("60m"), Ok(MAX_LOCK_TIMEOUT));
        assert!(parse_duration("61m").is_err());
        assert!(parse_duration("18446744073709551615").is_err());
        assert!(parse_duration("1e9").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration(".").is_err());
    }

    #[test]
    fn nothing_to_remove_is_said() {
        let dest =
            HostKubeconfig::from_files(vec![PathBuf::from("/a"), PathBuf::from("/b")]).unwrap();
        let report = RemoveReport {
            context: "docker-desktop".into(),
            files: Vec::new(),
        };
        assert_eq!(
            remove_text(&report, &dest),
            "context docker-desktop is not in /a:/b: nothing to remove\n"
        );
    }
}

//! `k8s-manager certs generate|check|renew|kubeconfigs`: the cluster's PKI.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use k8s_manager::pki::{
    self, CertState, CertStatus, KeyAlgorithm, Outcome, PkiConfig, ServiceCidr, SubjectAltName,
    kubeconfigs::{self, KubeconfigsConfig},
};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::error::ErrorReport;
use super::{GlobalArgs, Output, OutputArg};

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Make the cluster's PKI (kubeadm's layout): create what is missing,
    /// keep what is valid, re-issue leaves that expire within 90 days or no
    /// longer cover the asked names. An existing CA is reused, never replaced.
    Generate(GenerateArgs),
    /// Show every certificate (CAs, leaves, the kubeconfigs' client
    /// certificates): its file, expiry, days left, what renews it and from
    /// when, and whether it can be used (readable, signed by its CA, with its
    /// own key); exit code 1 if one is expired, missing or invalid.
    Check(CheckArgs),
    /// Re-issue leaf and kubeconfig client certificates (all, or those
    /// named) under the same CA, with the same subject and names; on a
    /// running cluster, through the manager, which then moves each component
    /// over to them one at a time (nothing else to do). CAs are never renewed.
    Renew(RenewArgs),
    /// Replace the cluster CAs (ca, front-proxy-ca, etcd/ca) of the running
    /// cluster, through the manager: new CAs are trusted next to the old
    /// ones, every certificate is re-issued under them, the components move
    /// over one at a time, then only the new CAs are trusted. The
    /// service-account key is kept (existing tokens stay valid), pods keep
    /// talking to the API server, the kubeconfigs get the new CA. Takes a few
    /// minutes; an interrupted rotation is resumed by running it again.
    RotateCa,
    /// Write the components' kubeconfig files (admin, super-admin,
    /// controller-manager, scheduler, kubelet) with embedded credentials.
    Kubeconfigs(KubeconfigsArgs),
}

impl CertsCommand {
    pub fn output(&self) -> Output {
        match self {
            CertsCommand::Check(args) => args.output.value,
            CertsCommand::Generate(_)
            | CertsCommand::Renew(_)
            | CertsCommand::RotateCa
            | CertsCommand::Kubeconfigs(_) => Output::Text,
        }
    }
}

#[derive(Args, Debug)]
pub struct PkiDirArg {
    /// The PKI folder [default: <state-dir>/pki].
    #[arg(long, value_name = "DIR")]
    pki_dir: Option<PathBuf>,
}

impl PkiDirArg {
    fn resolve(&self, global: &GlobalArgs) -> PathBuf {
        self.pki_dir
            .clone()
            .unwrap_or_else(|| k8s_manager::model::config::Paths::new(&global.state_dir).pki)
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pki_dir: PkiDirArg,
    /// The node's name (etcd's CN, a SAN of the API server and etcd).
    #[arg(long, value_name = "NAME")]
    node_name: String,
    /// The IP the API server and etcd advertise.
    #[arg(long, value_name = "IP")]
    advertise_address: IpAddr,
    /// Another name or address for the API server certificate (repeatable);
    /// an IP if it parses as one, else a DNS name [default: none: only the
    /// node's and the in-cluster names every API server certificate has].
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    sans: Vec<SubjectAltName>,
    /// The Service network; its first IP is the API server's in-cluster address.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    service_cidr: ServiceCidr,
    /// The cluster's DNS domain: the API server certificate covers
    /// kubernetes.default.svc.<domain>.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    dns_domain: String,
    #[command(flatten)]
    key_algorithm: KeyAlgorithmArg,
    /// Validity of new leaf certificates, in days [default: 365].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    validity_days: Option<u32>,
}

#[derive(Args, Debug)]
pub struct KeyAlgorithmArg {
    /// The algorithm of new keys; existing keys keep theirs.
    #[arg(
        long = "key-algorithm",
        value_name = "ALGORITHM",
        default_value = KeyAlgorithm::default().name(),
        value_parser = PossibleValuesParser::new(KeyAlgorithm::NAMES)
            .try_map(|name| name.parse::<KeyAlgorithm>()),
    )]
    value: KeyAlgorithm,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pki_dir: PkiDirArg,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Args, Debug)]
pub struct RenewArgs {
    #[command(flatten)]
    pki_dir: PkiDirArg,
    /// Certificates to renew, by name: leaves (apiserver, etcd/server, ...)
    /// and kubeconfigs (admin.conf, kubelet.conf, ...) [default: every one].
    #[arg(value_name = "NAME", conflicts_with = "all")]
    names: Vec<String>,
    /// Renew every leaf and kubeconfig client certificate (the default when
    /// no name is given).
    #[arg(long)]
    all: bool,
    /// Validity of the renewed certificates, in days [default: 365].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    validity_days: Option<u32>,
}

#[derive(Args, Debug)]
pub struct KubeconfigsArgs {
    #[command(flatten)]
    pki_dir: PkiDirArg,
    /// Where to write the .conf files.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// The API server URL the files point at.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The node's name, for the kubelet's identity system:node:<name>.
    #[arg(long, value_name = "NAME")]
    node_name: String,
    /// The name of the cluster (and the context) inside the files.
    #[arg(long, value_name = "NAME", default_value = kubeconfigs::DEFAULT_CLUSTER_NAME)]
    cluster_name: String,
    #[command(flatten)]
    key_algorithm: KeyAlgorithmArg,
}

pub fn run(cmd: CertsCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Generate(args) => generate(args, global),
        CertsCommand::Check(args) => check(args, global),
        CertsCommand::Renew(args) => renew(args, global),
        CertsCommand::RotateCa => rotate_ca(global),
        CertsCommand::Kubeconfigs(args) => write_kubeconfigs(args, global),
    }
}

fn days(count: Option<u32>) -> Option<Duration> {
    count.map(|days| Duration::days(days.into()))
}

fn generate(args: GenerateArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let mut config = PkiConfig::new(
        args.pki_dir.resolve(global),
        args.node_name,
        args.advertise_address,
    );
    config.extra_sans = args.sans;
    config.service_cidr = args.service_cidr;
    config.dns_domain = args.dns_domain;
    config.key_algorithm = args.key_algorithm.value;
    config.leaf_validity = days(args.validity_days);
    let outcomes = pki::ensure(&config)
        .with_context(|| format!("cannot generate the PKI in {}", config.pki_dir.display()))?;
    print_outcomes(&outcomes);
    Ok(ExitCode::SUCCESS)
}

fn print_outcomes(outcomes: &[Outcome]) {
    let width = outcomes
        .iter()
        .map(|outcome| outcome.name.len())
        .max()
        .unwrap_or(0);
    for outcome in outcomes {
        println!("{:<width$}  {}", outcome.name, outcome.action);
    }
}

/// One row of `certs check`: a certificate's status, what it is, where it
/// is, and what renews it from when.
struct Row {
    status: CertStatus,
    kind: &'static str,
    file: PathBuf,
    renewed_by: &'static str,
    renew_from: Option<OffsetDateTime>,
}

/// The renewal window of the state folder's settings (the default when it
/// has none).
fn renew_within(global: &GlobalArgs) -> Duration {
    let paths = k8s_manager::model::config::Paths::new(&global.state_dir);
    let days = k8s_manager::model::settings::load(&paths.settings_file)
        .ok()
        .flatten()
        .map_or(pki::DEFAULT_RENEW_WITHIN.whole_days(), |s| {
            s.certs.renew_within_days.into()
        });
    Duration::days(days)
}

fn rows(
    pki_dir: &Path,
    kubeconfig_dir: Option<&Path>,
    renew_within: Duration,
) -> anyhow::Result<Vec<Row>> {
    let now = OffsetDateTime::now_utc();
    let statuses = pki::check(pki_dir, now, renew_within)
        .with_context(|| format!("cannot check the PKI in {}", pki_dir.display()))?;
    let mut rows: Vec<Row> = statuses
        .into_iter()
        .map(|status| {
            let is_ca = status.ca.is_none();
            Row {
                file: pki_dir.join(format!("{}.crt", status.name)),
                kind: if is_ca { "ca" } else { "leaf" },
                renewed_by: if is_ca {
                    RENEWED_BY_ROTATION
                } else {
                    RENEWED_BY_UNIT
                },
                renew_from: status
                    .not_after
                    .map(|t| t - if is_ca { CA_WARNING } else { renew_within }),
                status,
            }
        })
        .collect();
    if let Some(dir) = kubeconfig_dir {
        let statuses = kubeconfigs::check(pki_dir, dir, now, renew_within)
            .with_context(|| format!("cannot check the kubeconfigs in {}", dir.display()))?;
        rows.extend(statuses.into_iter().map(|status| Row {
            file: dir.join(&status.name),
            kind: "client",
            renewed_by: RENEWED_BY_UNIT,
            renew_from: status.not_after.map(|t| t - renew_within),
            status,
        }));
    }
    Ok(rows)
}

/// Who renews a leaf or a client certificate: the manager, by itself.
const RENEWED_BY_UNIT: &str = "certs-renewal unit, enable";
/// Who renews a CA: nobody yet (no rotation in place); told from a year
/// before.
const RENEWED_BY_ROTATION: &str = "nobody: reset";
use k8s_manager::pki::due::CA_WARNING;

fn check(args: CheckArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let pki_dir = args.pki_dir.resolve(global);
    // The kubeconfigs sit next to the PKI of a state folder.
    let kubeconfig_dir = args
        .pki_dir
        .pki_dir
        .is_none()
        .then(|| k8s_manager::model::config::Paths::new(&global.state_dir).kubeconfigs);
    let rows = rows(&pki_dir, kubeconfig_dir.as_deref(), renew_within(global))?;
    // Each unusable certificate is one problem: what is wrong, what to do.
    let broken: Vec<String> = rows
        .iter()
        .map(|row| &row.status)
        .filter(|s| {
            matches!(
                s.state,
                CertState::Expired | CertState::Missing | CertState::Invalid
            )
        })
        .map(|s| match &s.problem {
            Some(problem) => problem.clone(),
            None => format!("{}: {}", s.name, s.state),
        })
        .collect();
    let error = (!broken.is_empty()).then(|| {
        ErrorReport::new(
            "PkiInvalid",
            "certificates are unusable, expired or missing; `k8s-manager enable` makes them again (or run `k8s-manager certs generate`, `certs renew`)",
        )
        .with_problems(broken)
    });
    match args.output.value {
        Output::Text => {
            print_status_table(&rows);
            if let Some(error) = &error {
                for problem in &error.problems {
                    eprintln!("error: {problem}");
                }
                eprintln!("error: {}", error.message);
            }
        }
        Output::Json => {
            let mut json = status_json(&pki_dir, &rows)?;
            if let Some(error) = &error {
                error.attach_to(&mut json);
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(error.map_or(ExitCode::SUCCESS, |error| error.exit_code()))
}

fn date_text(date: Option<OffsetDateTime>) -> anyhow::Result<String> {
    Ok(match date {
        Some(date) => date.format(&Rfc3339)?,
        None => "-".to_string(),
    })
}

fn print_status_table(rows: &[Row]) {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            let s = &row.status;
            [
                s.name.clone(),
                row.kind.to_string(),
                date_text(s.not_after).unwrap_or_else(|_| "?".to_string()),
                s.days_left
                    .map_or_else(|| "-".to_string(), |days| days.to_string()),
                s.state.to_string(),
                row.renewed_by.to_string(),
                date_text(row.renew_from).unwrap_or_else(|_| "?".to_string()),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "KIND",
        "NOT AFTER",
        "DAYS LEFT",
        "STATUS",
        "RENEWED BY",
        "FROM",
    ]
    .map(str::to_string);
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&cells) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&cells) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn status_json(pki_dir: &Path, rows: &[Row]) -> anyhow::Result<serde_json::Value> {
    let certificates = rows
        .iter()
        .map(|row| {
            let s = &row.status;
            Ok(json!({
                "name": s.name,
                "kind": row.kind,
                "file": row.file,
                "ca": s.ca,
                "notAfter": s.not_after.map(|t| date_text(Some(t))).transpose()?,
                "daysLeft": s.days_left,
                "status": s.state.name(),
                "renewedBy": row.renewed_by,
                "renewFrom": row.renew_from.map(|t| date_text(Some(t))).transpose()?,
                "problem": s.problem,
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(json!({ "pkiDir": pki_dir, "certificates": certificates }))
}

fn renew(args: RenewArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    // The state folder's PKI goes through its manager when a cluster runs.
    if args.pki_dir.pki_dir.is_none()
        && let Some(code) = renew_running(&args, global)?
    {
        return Ok(code);
    }
    let pki_dir = args.pki_dir.resolve(global);
    let renewed = pki::renew(&pki_dir, &args.names, days(args.validity_days))
        .with_context(|| format!("cannot renew certificates in {}", pki_dir.display()))?;
    let width = renewed
        .iter()
        .map(|cert| cert.name.len())
        .max()
        .unwrap_or(0);
    for cert in renewed {
        println!(
            "{:<width$}  renewed, valid until {}",
            cert.name,
            cert.not_after.format(&Rfc3339)?
        );
    }
    println!(
        "no cluster runs from these files: the next `k8s-manager enable` loads them (and renews the kubeconfigs)"
    );
    Ok(ExitCode::SUCCESS)
}

/// The renewal through the running manager; `None` when no cluster runs
/// (no manager answers, or it runs none): the files are then renewed here.
fn renew_running(args: &RenewArgs, global: &GlobalArgs) -> anyhow::Result<Option<ExitCode>> {
    let paths = k8s_manager::model::config::Paths::new(&global.state_dir);
    let request = k8s_manager::model::api::RenewRequest {
        names: args.names.clone(),
        due_only: false,
        validity_days: args.validity_days,
    };
    let body = serde_json::to_vec(&request)?;
    let rt = super::cluster::runtime()?;
    rt.block_on(async {
        let client = k8s_manager::client::Client::new(&paths.socket);
        if !client.is_up().await {
            return Ok(None);
        }
        let progress = super::cluster::Progress::new(Output::Text);
        let done = client
            .operation(k8s_manager::api::CERTS_RENEW, body, |e| progress.show(e))
            .await?;
        if let k8s_manager::model::event::Event::Done {
            error: Some(error), ..
        } = &done
            && error.code == k8s_manager::model::error::code::NOT_RUNNING
        {
            return Ok(None);
        }
        super::cluster::outcome(done).map(Some)
    })
}

/// The CA rotation, through the running manager (it restarts components:
/// there is no offline variant).
fn rotate_ca(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let paths = k8s_manager::model::config::Paths::new(&global.state_dir);
    let rt = super::cluster::runtime()?;
    rt.block_on(async {
        let client = k8s_manager::client::Client::new(&paths.socket);
        if !client.is_up().await {
            anyhow::bail!(
                "no manager answers on {}: CAs are rotated on a running cluster (`k8s-manager enable` first)",
                paths.socket.display()
            );
        }
        let progress = super::cluster::Progress::new(Output::Text);
        let done = client
            .operation(k8s_manager::api::CERTS_ROTATE_CA, Vec::new(), |e| {
                progress.show(e)
            })
            .await?;
        super::cluster::outcome(done)
    })
}

fn write_kubeconfigs(args: KubeconfigsArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let mut config = KubeconfigsConfig::new(
        args.pki_dir.resolve(global),
        args.out_dir,
        args.server,
        args.node_name,
    );
    config.cluster_name = args.cluster_name;
    config.key_algorithm = args.key_algorithm.value;
    let outcomes = kubeconfigs::write_all(&config)
        .with_context(|| format!("cannot write kubeconfigs into {}", config.out_dir.display()))?;
    print_outcomes(&outcomes);
    Ok(ExitCode::SUCCESS)
}

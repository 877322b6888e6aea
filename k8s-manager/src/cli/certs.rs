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
    /// Show every certificate's expiry, and whether it can be used (readable,
    /// signed by its CA, with its own key); exit code 1 if one is expired,
    /// missing or invalid.
    Check(CheckArgs),
    /// Re-issue leaf certificates (all, or those named) under the same CA,
    /// with the same subject and names. CAs are never renewed.
    Renew(RenewArgs),
    /// Write the components' kubeconfig files (admin, super-admin,
    /// controller-manager, scheduler, kubelet) with embedded credentials.
    Kubeconfigs(KubeconfigsArgs),
}

impl CertsCommand {
    pub fn output(&self) -> Output {
        match self {
            CertsCommand::Check(args) => args.output.value,
            CertsCommand::Generate(_) | CertsCommand::Renew(_) | CertsCommand::Kubeconfigs(_) => {
                Output::Text
            }
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
            .unwrap_or_else(|| k8s_manager::cluster::config::Paths::new(&global.state_dir).pki)
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
    /// Leaves to renew, by name (apiserver, etcd/server, ...) [default: every leaf].
    #[arg(value_name = "NAME")]
    names: Vec<String>,
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

fn check(args: CheckArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let pki_dir = args.pki_dir.resolve(global);
    let statuses = pki::check(
        &pki_dir,
        OffsetDateTime::now_utc(),
        pki::DEFAULT_RENEW_WITHIN,
    )
    .with_context(|| format!("cannot check the PKI in {}", pki_dir.display()))?;
    // Each unusable certificate is one problem: what is wrong, what to do.
    let broken: Vec<String> = statuses
        .iter()
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
            "certificates are unusable, expired or missing; run `k8s-manager certs generate` (or `certs renew`) to replace them",
        )
        .with_problems(broken)
    });
    match args.output.value {
        Output::Text => {
            print_status_table(&statuses);
            if let Some(error) = &error {
                for problem in &error.problems {
                    eprintln!("error: {problem}");
                }
                eprintln!("error: {}", error.message);
            }
        }
        Output::Json => {
            let mut json = status_json(&pki_dir, &statuses)?;
            if let Some(error) = &error {
                error.attach_to(&mut json);
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(error.map_or(ExitCode::SUCCESS, |error| error.exit_code()))
}

fn not_after_text(status: &CertStatus) -> anyhow::Result<String> {
    Ok(match status.not_after {
        Some(not_after) => not_after.format(&Rfc3339)?,
        None => "-".to_string(),
    })
}

fn print_status_table(statuses: &[CertStatus]) {
    let rows: Vec<[String; 5]> = statuses
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.ca.clone().unwrap_or_else(|| "-".to_string()),
                not_after_text(s).unwrap_or_else(|_| "?".to_string()),
                s.days_left
                    .map_or_else(|| "-".to_string(), |days| days.to_string()),
                s.state.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "CA", "NOT AFTER", "DAYS LEFT", "STATUS"].map(str::to_string);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn status_json(pki_dir: &Path, statuses: &[CertStatus]) -> anyhow::Result<serde_json::Value> {
    let certificates = statuses
        .iter()
        .map(|s| {
            Ok(json!({
                "name": s.name,
                "ca": s.ca,
                "notAfter": s.not_after.map(|_| not_after_text(s)).transpose()?,
                "daysLeft": s.days_left,
                "status": s.state.name(),
                "problem": s.problem,
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(json!({ "pkiDir": pki_dir, "certificates": certificates }))
}

fn renew(args: RenewArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
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
        "restart the components that use them (`k8s-manager disable` then `enable`) to load the new certificates"
    );
    Ok(ExitCode::SUCCESS)
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

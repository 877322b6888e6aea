//! The cluster's PKI, kubeadm-equivalent, made from the `certs/pki.yaml`
//! declaration.
//!
//! - [`ensure`] makes what is missing and re-issues what no longer serves,
//!   idempotently: the `certs` phase of every enable calls it.
//! - [`check`] reports every certificate's expiry, or why it cannot be used.
//! - [`renew`] re-issues leaves on demand with the same subject and names.
//! - [`kubeconfigs::write_all`] writes the components' kubeconfig files.
//! - [`usage`] says which component reads which file, and whether it takes a
//!   new one by itself or needs a restart; [`due`] what a renewal renews.
//!
//! The renewal on a running cluster (the daemon's `certs-renewal` unit and
//! `certs renew`) is [`crate::cluster::renewal`]: it re-issues with
//! [`renew`] and [`kubeconfigs::write_all`], then moves each component over.
//!
//! All of them are pure functions over their arguments and the files: they
//! print nothing and return typed errors that say what to do next.

mod assess;
mod ca;
mod check;
pub mod due;
mod ensure;
mod inspect;
mod issue;
pub mod kubeconfigs;
mod renew;
pub mod rotation;
mod sans;
mod spec;
mod store;
#[cfg(test)]
mod testutil;
pub mod usage;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use time::{Duration, OffsetDateTime};

pub use check::{CertState, CertStatus, check};
pub use ensure::ensure;
pub use inspect::BadPem;
pub use issue::{KeyAlgorithm, UnknownKeyAlgorithm};
pub use renew::{RenewedCert, renew};
pub use sans::{InvalidSan, InvalidServiceCidr, ServiceCidr, SubjectAltName};
pub use spec::{CertSpec, DeclarationError, ExtendedKeyUsage, KeyUsage, PkiDeclaration, SanRule};

/// A leaf is re-issued when it expires within this window (kubeadm warns at
/// the same distance, and it leaves a quarter of a year to notice failures).
pub const DEFAULT_RENEW_WITHIN: Duration = Duration::days(90);

/// The settings a PKI is made from.
#[derive(Debug, Clone)]
pub struct PkiConfig {
    pub pki_dir: PathBuf,
    /// The node's name: etcd's CN and a SAN of the API server and etcd.
    pub node_name: String,
    /// The address the API server and etcd advertise.
    pub advertise_address: IpAddr,
    /// More names and addresses for the API server certificate.
    pub extra_sans: Vec<SubjectAltName>,
    pub service_cidr: ServiceCidr,
    pub dns_domain: String,
    /// The algorithm of new keys; existing keys are kept whatever theirs.
    pub key_algorithm: KeyAlgorithm,
    /// Validity of new leaves; `None` is the declaration's (one year).
    pub leaf_validity: Option<Duration>,
    pub renew_within: Duration,
}

impl PkiConfig {
    /// A config with kubeadm's defaults: service CIDR 10.96.0.0/12, domain
    /// cluster.local, ECDSA P-256 keys, declared validity, 90-day window.
    pub fn new(
        pki_dir: impl Into<PathBuf>,
        node_name: impl Into<String>,
        advertise_address: IpAddr,
    ) -> Self {
        PkiConfig {
            pki_dir: pki_dir.into(),
            node_name: node_name.into(),
            advertise_address,
            extra_sans: Vec::new(),
            service_cidr: ServiceCidr::kubeadm_default(),
            dns_domain: "cluster.local".to_string(),
            key_algorithm: KeyAlgorithm::default(),
            leaf_validity: None,
            renew_within: DEFAULT_RENEW_WITHIN,
        }
    }
}

/// What was done to one file (or key pair) of the PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The certificate's declared name (`etcd/server`), `sa`, or a kubeconfig
    /// file name (`admin.conf`).
    pub name: String,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Created,
    Kept,
    Reissued(ReissueReason),
}

/// Why an existing certificate was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReissueReason {
    /// Expires within the renewal window (or has expired: `days_left <= 0`).
    Expiring {
        days_left: i64,
    },
    /// The names asked for that the certificate lacks.
    SansNotCovered(Vec<SubjectAltName>),
    SubjectChanged {
        found: String,
    },
    UsagesChanged,
    /// Not signed by the CA in the folder now.
    CaChanged,
    KeyMissing,
    KeyMismatch,
    /// The certificate's file does not hold a certificate.
    CertUnreadable(BadPem),
    /// The key's file does not hold a usable private key.
    KeyUnreadable(BadPem),
    /// Not valid yet: made by a clock ahead of this one.
    NotYetValid {
        not_before: OffsetDateTime,
    },
    /// A kubeconfig file, or the service account's public key, that does not
    /// read as one.
    Unreadable(String),
    /// A kubeconfig that points at another API server.
    ServerChanged {
        found: String,
    },
    /// A kubeconfig whose cluster, user or context names differ.
    KubeconfigChanged,
    /// Renewed because it was asked for (`certs renew NAME`).
    Requested,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Created => f.write_str("created"),
            Action::Kept => f.write_str("kept"),
            Action::Reissued(reason) => write!(f, "reissued ({reason})"),
        }
    }
}

impl fmt::Display for ReissueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReissueReason::Expiring { days_left } if *days_left <= 0 => f.write_str("expired"),
            ReissueReason::Expiring { days_left } => write!(f, "expires in {days_left} days"),
            ReissueReason::SansNotCovered(missing) => {
                let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
                write!(f, "does not cover {}", names.join(", "))
            }
            ReissueReason::SubjectChanged { found } => write!(f, "subject was {found}"),
            ReissueReason::UsagesChanged => f.write_str("key usages changed"),
            ReissueReason::CaChanged => f.write_str("not signed by the current CA"),
            ReissueReason::KeyMissing => f.write_str("key missing"),
            ReissueReason::KeyMismatch => f.write_str("key does not match"),
            ReissueReason::CertUnreadable(reason) => write!(f, "certificate unreadable: {reason}"),
            ReissueReason::KeyUnreadable(reason) => write!(f, "key unreadable: {reason}"),
            ReissueReason::NotYetValid { not_before } => {
                write!(f, "not valid before {not_before}")
            }
            ReissueReason::Unreadable(reason) => write!(f, "unreadable: {reason}"),
            ReissueReason::ServerChanged { found } => write!(f, "server was {found}"),
            ReissueReason::KubeconfigChanged => f.write_str("cluster or user names changed"),
            ReissueReason::Requested => f.write_str("renewal asked for"),
        }
    }
}

/// Why the PKI could not be made, checked or renewed, with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Declaration(#[from] DeclarationError),
    #[error(
        "node name {0:?} is not a valid DNS name (RFC 1123: lowercase letters, digits, '-' and '.'); use a name like \"docker-desktop\""
    )]
    InvalidNodeName(String),
    #[error(
        "DNS domain {0:?} is not a valid DNS name; use the cluster's domain, like \"cluster.local\""
    )]
    InvalidDnsDomain(String),
    #[error(
        "server URL {0:?} is not an https:// URL; use the API server's address, like https://127.0.0.1:6443"
    )]
    InvalidServerUrl(String),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is a symbolic link, and k8s-manager follows no link inside the PKI folder (it could lead to another PKI's files, or out of the folder); put the file itself there, or delete the link so that the file is made again"
    )]
    Symlink { path: PathBuf },
    #[error(
        "{path} is a {kind}, not a file; delete it so that the file is made again (`k8s-manager certs generate`)"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "{path} is larger than {limit} bytes, far more than a certificate or key holds; delete it so that the file is made again (`k8s-manager certs generate`)"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{path} is not a readable {what} ({reason}); restore it, or delete it so that it is made again"
    )]
    Unreadable {
        path: PathBuf,
        what: &'static str,
        reason: BadPem,
    },
    #[error(
        "CA {name}: {cert} exists but its key {key} is missing; restore the key, or delete the certificate to make a new CA (every certificate it signed is then re-issued)"
    )]
    CaKeyMissing {
        name: String,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error(
        "a validity of {days} days is out of range; give between 1 and {MAX_VALIDITY_DAYS} days"
    )]
    InvalidValidity { days: i64 },
    #[error(
        "CA {name}: the key {key} does not belong to the certificate {cert}; restore the matching key, or delete both to make a new CA (every certificate it signed is then re-issued)"
    )]
    CaKeyMismatch {
        name: String,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error(
        "CA {name}: {cert} is not a CA certificate that may sign others (it needs basicConstraints CA:TRUE, and keyCertSign if it has a key usage); put the CA certificate there, or delete it and {key} to make a new CA"
    )]
    NotACa {
        name: String,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error(
        "CA {name}: {cert} expired on {not_after}; reset the cluster (`k8s-manager reset`) to make a new PKI, or put a valid CA there"
    )]
    CaExpired {
        name: String,
        cert: PathBuf,
        not_after: OffsetDateTime,
    },
    #[error(
        "CA {name}: {cert} is not valid before {not_before}; check this machine's clock, or reset the cluster (`k8s-manager reset`) to make a new PKI"
    )]
    CaNotYetValid {
        name: String,
        cert: PathBuf,
        not_before: OffsetDateTime,
    },
    #[error("CA {name} is missing ({cert}); run `k8s-manager certs generate` first")]
    CaMissing { name: String, cert: PathBuf },
    #[error("unknown certificate {name:?}; the leaves are: {}", known.join(", "))]
    UnknownCertificate { name: String, known: Vec<String> },
    #[error(
        "{name} is a CA, and CAs are never renewed in place (every certificate and kubeconfig trusting it would break); renew its leaves, or reset the cluster for a new PKI"
    )]
    CaNotRenewable { name: String },
    #[error("certificate {name} is missing ({path}); run `k8s-manager certs generate` to make it")]
    CertificateMissing { name: String, path: PathBuf },
    #[error(
        "certificate {name} ({path}) is not signed by its CA {ca}, so its subject and names are not k8s-manager's to copy; run `k8s-manager certs generate` to re-issue it from the settings"
    )]
    NotSignedByCa {
        name: String,
        path: PathBuf,
        ca: String,
    },
    #[error(
        "certificate {name} ({path}) has a subject k8s-manager cannot write again ({subject}); run `k8s-manager certs generate` to replace it"
    )]
    UnrenewableSubject {
        name: String,
        path: PathBuf,
        subject: String,
    },
    #[error("cannot make {name}")]
    Issue { name: String, source: rcgen::Error },
    #[error("cannot write kubeconfig {name}: {reason}")]
    KubeconfigSerialize { name: String, reason: String },
}

impl PkiError {
    /// A stable reason a GUI can act on, in Kubernetes' CamelCase.
    pub fn code(&self) -> &'static str {
        match self {
            // The declaration is compiled in: a broken one is a bug of the build.
            PkiError::Declaration(_) => "Internal",
            PkiError::InvalidNodeName(_)
            | PkiError::InvalidDnsDomain(_)
            | PkiError::InvalidServerUrl(_)
            | PkiError::UnknownCertificate { .. }
            | PkiError::CaNotRenewable { .. } => "InvalidArgument",
            PkiError::Io { .. } => "IoError",
            PkiError::InvalidValidity { .. } => "InvalidArgument",
            PkiError::Symlink { .. } | PkiError::NotAFile { .. } | PkiError::TooLarge { .. } => {
                "PkiInvalid"
            }
            PkiError::Unreadable { .. }
            | PkiError::CaKeyMissing { .. }
            | PkiError::CaKeyMismatch { .. }
            | PkiError::NotACa { .. }
            | PkiError::UnrenewableSubject { .. }
            | PkiError::NotSignedByCa { .. } => "PkiInvalid",
            PkiError::CaExpired { .. } => "CaExpired",
            PkiError::CaNotYetValid { .. } => "CaNotYetValid",
            PkiError::CaMissing { .. } | PkiError::CertificateMissing { .. } => {
                "CertificateMissing"
            }
            PkiError::Issue { .. } | PkiError::KubeconfigSerialize { .. } => "Internal",
        }
    }
}

/// The longest validity a new certificate may be given: a century. Far past
/// any use, and it keeps every expiry a four-digit year (X.509's and RFC 3339's
/// limit) whatever the day.
pub const MAX_VALIDITY_DAYS: i64 = 36_500;

/// Validity of new leaves: the configured one, or the declaration's default;
/// an error when it is not between a day and [`MAX_VALIDITY_DAYS`].
fn leaf_validity(
    declaration: &PkiDeclaration,
    configured: Option<Duration>,
) -> Result<Duration, PkiError> {
    let validity =
        configured.unwrap_or_else(|| Duration::days(declaration.validity.leaf_days.into()));
    if validity < Duration::days(1) || validity > Duration::days(MAX_VALIDITY_DAYS) {
        return Err(PkiError::InvalidValidity {
            days: validity.whole_days(),
        });
    }
    Ok(validity)
}

fn ca_validity(declaration: &PkiDeclaration) -> Duration {
    Duration::days(declaration.validity.ca_days.into())
}

/// Whole days from `now` to `not_after`; negative once expired.
fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (not_after - now).whole_days()
}

//! Whether an existing leaf certificate still serves: the checks that let
//! [`super::ensure`] and the kubeconfig writer keep files byte for byte and
//! replace only what no longer does its job.

use time::{Duration, OffsetDateTime};

use super::inspect::{CertInfo, key_from_pem};
use super::issue::Subject;
use super::sans::SubjectAltName;
use super::spec::CertSpec;
use super::{Action, ReissueReason, days_left};

/// What a leaf is expected to be.
#[derive(Debug, Clone)]
pub struct ExpectedLeaf<'a> {
    pub spec: &'a CertSpec,
    pub subject: &'a Subject,
    pub sans: &'a [SubjectAltName],
    /// The CA's certificate; `None` when the CA is about to be made, so that
    /// nothing existing can be signed by it.
    pub ca: Option<&'a CertInfo>,
    pub now: OffsetDateTime,
    pub renew_within: Duration,
}

/// `None` when the existing certificate and key serve as they are; else
/// what issuing a new one is (`Created` or `Reissued` with the reason).
pub fn leaf_action(
    cert_pem: Option<&[u8]>,
    key_pem: Option<&[u8]>,
    expected: &ExpectedLeaf<'_>,
) -> Option<Action> {
    let Some(cert_pem) = cert_pem else {
        return Some(Action::Created);
    };
    reissue_reason(cert_pem, key_pem, expected).map(Action::Reissued)
}

fn reissue_reason(
    cert_pem: &[u8],
    key_pem: Option<&[u8]>,
    expected: &ExpectedLeaf<'_>,
) -> Option<ReissueReason> {
    let cert = match sound_leaf(cert_pem, key_pem, expected.spec, expected.ca, expected.now) {
        Ok(cert) => cert,
        Err(reason) => return Some(reason),
    };
    if !cert.has_subject(expected.subject) {
        return Some(ReissueReason::SubjectChanged {
            found: cert.subject_text(),
        });
    }
    let missing = cert.missing_sans(expected.sans);
    if !missing.is_empty() {
        return Some(ReissueReason::SansNotCovered(missing));
    }
    if cert.not_after - expected.now < expected.renew_within {
        return Some(ReissueReason::Expiring {
            days_left: days_left(cert.not_after, expected.now),
        });
    }
    None
}

/// The leaf, when it is whole whatever the settings: its file holds one
/// certificate, valid from `now` on, signed by `ca`, with the declared usages,
/// and its key is there and belongs to it. Else why it is not: what
/// [`super::check`] reports, and what [`super::ensure`] re-issues for before
/// it looks at names and expiry. `ca` is `None` when the CA is missing or
/// unusable: nothing existing can be trusted to be signed by it.
pub fn sound_leaf(
    cert_pem: &[u8],
    key_pem: Option<&[u8]>,
    spec: &CertSpec,
    ca: Option<&CertInfo>,
    now: OffsetDateTime,
) -> Result<CertInfo, ReissueReason> {
    let cert = CertInfo::from_pem(cert_pem).map_err(ReissueReason::CertUnreadable)?;
    match ca {
        Some(ca) if cert.is_signed_by(ca) => {}
        _ => return Err(ReissueReason::CaChanged),
    }
    let key_pem = key_pem.ok_or(ReissueReason::KeyMissing)?;
    let key = key_from_pem(key_pem).map_err(ReissueReason::KeyUnreadable)?;
    if !cert.matches_key(&key) {
        return Err(ReissueReason::KeyMismatch);
    }
    if !cert.has_usages(spec) {
        return Err(ReissueReason::UsagesChanged);
    }
    if now < cert.not_before {
        return Err(ReissueReason::NotYetValid {
            not_before: cert.not_before,
        });
    }
    Ok(cert)
}

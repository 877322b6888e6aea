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
    let cert = match CertInfo::from_pem(cert_pem) {
        Ok(cert) => cert,
        Err(reason) => return Some(ReissueReason::CertUnreadable(reason)),
    };
    match expected.ca {
        Some(ca) if cert.is_signed_by(ca) => {}
        _ => return Some(ReissueReason::CaChanged),
    }
    let Some(key_pem) = key_pem else {
        return Some(ReissueReason::KeyMissing);
    };
    match key_from_pem(key_pem) {
        Ok(key) if cert.matches_key(&key) => {}
        Ok(_) => return Some(ReissueReason::KeyMismatch),
        Err(reason) => return Some(ReissueReason::KeyUnreadable(reason)),
    }
    if !cert.has_subject(expected.subject) {
        return Some(ReissueReason::SubjectChanged {
            found: cert.subject_text(),
        });
    }
    if !cert.has_usages(expected.spec) {
        return Some(ReissueReason::UsagesChanged);
    }
    if expected.now < cert.not_before {
        return Some(ReissueReason::NotYetValid {
            not_before: cert.not_before,
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

//! `check`: every declared certificate's expiry, for `certs check` and for the
//! daemon's status.

use std::fmt;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::inspect::CertInfo;
use super::spec::PkiDeclaration;
use super::{PkiError, days_left, store};

/// One certificate of the PKI folder and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    pub name: String,
    /// The signing CA's name; `None` for a CA.
    pub ca: Option<String>,
    /// `None` when the certificate is missing.
    pub not_after: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    pub status: ExpiryStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryStatus {
    Ok,
    /// Expires within the renewal window: the next `ensure` re-issues it (a
    /// CA: plan a reset).
    RenewSoon,
    Expired,
    Missing,
}

impl ExpiryStatus {
    pub fn name(self) -> &'static str {
        match self {
            ExpiryStatus::Ok => "ok",
            ExpiryStatus::RenewSoon => "renew-soon",
            ExpiryStatus::Expired => "expired",
            ExpiryStatus::Missing => "missing",
        }
    }
}

impl fmt::Display for ExpiryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The status of every declared certificate in `pki_dir` at `now`, in
/// declaration order. A certificate that cannot be read is an error, not a
/// status: it needs a person.
pub fn check(
    pki_dir: &Path,
    now: OffsetDateTime,
    renew_within: Duration,
) -> Result<Vec<CertStatus>, PkiError> {
    let declaration = PkiDeclaration::embedded()?;
    declaration
        .certificates
        .iter()
        .map(|spec| {
            let path = store::cert_path(pki_dir, &spec.name);
            let Some(pem) = store::read_cert(pki_dir, &spec.name)? else {
                return Ok(CertStatus {
                    name: spec.name.clone(),
                    ca: spec.ca.clone(),
                    not_after: None,
                    days_left: None,
                    status: ExpiryStatus::Missing,
                });
            };
            let info = CertInfo::from_pem(&pem).map_err(|reason| PkiError::Unreadable {
                path: path.clone(),
                what: "certificate",
                reason,
            })?;
            let status = if info.not_after <= now {
                ExpiryStatus::Expired
            } else if info.not_after - now < renew_within {
                ExpiryStatus::RenewSoon
            } else {
                ExpiryStatus::Ok
            };
            Ok(CertStatus {
                name: spec.name.clone(),
                ca: spec.ca.clone(),
                not_after: Some(info.not_after),
                days_left: Some(days_left(info.not_after, now)),
                status,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::config;
    use super::super::{DEFAULT_RENEW_WITHIN, ensure};
    use super::*;

    fn status_of(statuses: &[CertStatus], name: &str) -> ExpiryStatus {
        statuses.iter().find(|s| s.name == name).unwrap().status
    }

    #[test]
    fn statuses_follow_the_renewal_window_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let now = OffsetDateTime::now_utc();
        let statuses = check(dir.path(), now, DEFAULT_RENEW_WITHIN).unwrap();
        let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names[..3], ["ca", "apiserver", "apiserver-kubelet-client"]);
        assert_eq!(
            statuses.len(),
            PkiDeclaration::embedded().unwrap().certificates.len()
        );
        assert!(
            statuses.iter().all(|s| s.status == ExpiryStatus::Ok),
            "{statuses:?}"
        );
        let apiserver = statuses.iter().find(|s| s.name == "apiserver").unwrap();
        assert_eq!(apiserver.ca.as_deref(), Some("ca"));
        assert!(matches!(apiserver.days_left, Some(364..=365)));
        assert_eq!(statuses[0].ca, None);

        let not_after = apiserver.not_after.unwrap();
        let at = |moment| check(dir.path(), moment, DEFAULT_RENEW_WITHIN).unwrap();
        let second = Duration::seconds(1);
        assert_eq!(
            status_of(&at(not_after - DEFAULT_RENEW_WITHIN - second), "apiserver"),
            ExpiryStatus::Ok
        );
        assert_eq!(
            status_of(&at(not_after - DEFAULT_RENEW_WITHIN + second), "apiserver"),
            ExpiryStatus::RenewSoon
        );
        assert_eq!(
            status_of(&at(not_after - second), "apiserver"),
            ExpiryStatus::RenewSoon
        );
        let expired = at(not_after);
        assert_eq!(status_of(&expired, "apiserver"), ExpiryStatus::Expired);
        assert_eq!(status_of(&expired, "ca"), ExpiryStatus::Ok);
        let much_later = at(not_after + Duration::days(10));
        let apiserver_later = much_later.iter().find(|s| s.name == "apiserver").unwrap();
        assert_eq!(apiserver_later.days_left, Some(-10));
    }

    #[test]
    fn missing_certificates_are_reported_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let empty = check(dir.path(), now, DEFAULT_RENEW_WITHIN).unwrap();
        assert!(
            empty
                .iter()
                .all(|s| s.status == ExpiryStatus::Missing && s.not_after.is_none())
        );
        ensure(&config(dir.path())).unwrap();
        std::fs::write(
            store::cert_path(dir.path(), "apiserver"),
            b"not a certificate",
        )
        .unwrap();
        let err = check(dir.path(), now, DEFAULT_RENEW_WITHIN).unwrap_err();
        assert!(
            matches!(&err, PkiError::Unreadable { path, .. } if path.ends_with("apiserver.crt")),
            "{err}"
        );
    }
}

//! `renew`: re-issue leaves on demand, under the same CA, with the subject
//! and names they already carry. CAs are never renewed in place: that would
//! change what every component and kubeconfig trusts.

use std::collections::HashMap;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::ca::CaMaterial;
use super::inspect::CertInfo;
use super::issue::{self, CertRequest};
use super::spec::{CertSpec, PkiDeclaration};
use super::{PkiError, leaf_validity, store};

/// A leaf that was re-issued, and its new expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewedCert {
    pub name: String,
    pub not_after: OffsetDateTime,
}

/// Re-issues the named leaves (all leaves when `names` is empty) with a new
/// key of the same algorithm, the same subject and SANs as the existing
/// certificate, the declared usages, and `validity` (the declaration's when
/// `None`). Every name and file is checked before anything is written: an
/// unknown name, a CA, or a missing certificate is an error.
pub fn renew(
    pki_dir: &Path,
    names: &[String],
    validity: Option<Duration>,
) -> Result<Vec<RenewedCert>, PkiError> {
    let declaration = PkiDeclaration::embedded()?;
    let now = OffsetDateTime::now_utc();
    let validity = leaf_validity(&declaration, validity)?;
    let specs = select_leaves(&declaration, names)?;

    let mut cas: HashMap<&str, CaMaterial> = HashMap::new();
    let mut requests = Vec::with_capacity(specs.len());
    let mut algorithms = Vec::with_capacity(specs.len());
    for spec in specs {
        let path = store::cert_path(pki_dir, &spec.name);
        let pem =
            store::read_cert(pki_dir, &spec.name)?.ok_or_else(|| PkiError::CertificateMissing {
                name: spec.name.clone(),
                path: path.clone(),
            })?;
        let existing = CertInfo::from_pem(&pem).map_err(|reason| PkiError::Unreadable {
            path: path.clone(),
            what: "certificate",
            reason,
        })?;
        let subject = existing
            .subject()
            .ok_or_else(|| PkiError::UnrenewableSubject {
                name: spec.name.clone(),
                path: path.clone(),
                subject: existing.subject_text(),
            })?;
        let ca_name = spec.ca.as_deref().unwrap_or_default();
        if !cas.contains_key(ca_name) {
            cas.insert(ca_name, CaMaterial::load(pki_dir, ca_name, now)?);
        }
        // The subject and names are copied only from what the CA vouched for:
        // a certificate put there by someone else must not pass them on.
        if !cas
            .get(ca_name)
            .is_some_and(|ca| existing.is_signed_by(&ca.info))
        {
            return Err(PkiError::NotSignedByCa {
                name: spec.name.clone(),
                path,
                ca: ca_name.to_string(),
            });
        }
        algorithms.push(existing.key_algorithm().unwrap_or_default());
        requests.push(CertRequest {
            spec,
            subject,
            sans: existing.sans,
            validity,
            now,
        });
    }

    let keys = issue::generate_keys(&algorithms).map_err(|source| PkiError::Issue {
        name: "keys".to_string(),
        source,
    })?;
    let mut renewed = Vec::with_capacity(requests.len());
    let mut writes = Vec::with_capacity(requests.len());
    for (request, key) in requests.iter().zip(keys) {
        let name = &request.spec.name;
        let ca = &cas[request.spec.ca.as_deref().unwrap_or_default()];
        let cert_pem =
            request
                .signed_by(&key, &ca.issuer()?)
                .map_err(|source| PkiError::Issue {
                    name: name.clone(),
                    source,
                })?;
        writes.push(store::key_and_cert(
            pki_dir,
            name,
            &key.serialize_pem(),
            &cert_pem,
        ));
        renewed.push(RenewedCert {
            name: name.clone(),
            not_after: request.not_after(),
        });
    }
    store::write_groups(&writes)?;
    Ok(renewed)
}

/// The declared leaves named, each once, in the order given; all leaves when
/// none is named.
fn select_leaves<'a>(
    declaration: &'a PkiDeclaration,
    names: &[String],
) -> Result<Vec<&'a CertSpec>, PkiError> {
    if names.is_empty() {
        return Ok(declaration.leaves().collect());
    }
    let mut selected: Vec<&CertSpec> = Vec::new();
    for name in names {
        let spec = declaration
            .certificate(name)
            .ok_or_else(|| PkiError::UnknownCertificate {
                name: name.clone(),
                known: declaration.leaves().map(|spec| spec.name.clone()).collect(),
            })?;
        if spec.is_ca() {
            return Err(PkiError::CaNotRenewable { name: name.clone() });
        }
        if !selected.iter().any(|chosen| chosen.name == spec.name) {
            selected.push(spec);
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::testutil::{cert, changed_files, config, snapshot};
    use super::super::{KeyAlgorithm, SubjectAltName, ensure};
    use super::*;
    use crate::fsutil::existing_mode;

    #[test]
    fn renew_keeps_subject_sans_and_ca_and_changes_cert_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.extra_sans = vec![SubjectAltName::Dns("extra.example".to_string())];
        ensure(&config).unwrap();
        let before = snapshot(dir.path());
        let leaves: Vec<String> = PkiDeclaration::embedded()
            .unwrap()
            .leaves()
            .map(|s| s.name.clone())
            .collect();
        let old: Vec<CertInfo> = leaves.iter().map(|name| cert(dir.path(), name)).collect();

        let renewed = renew(dir.path(), &[], Some(Duration::days(100))).unwrap();
        let renewed_names: Vec<&str> = renewed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            renewed_names,
            leaves.iter().map(String::as_str).collect::<Vec<_>>()
        );

        let mut changed = changed_files(&before, &snapshot(dir.path()));
        changed.sort();
        let mut expected: Vec<String> = leaves
            .iter()
            .flat_map(|name| [format!("{name}.crt"), format!("{name}.key")])
            .collect();
        expected.sort();
        assert_eq!(changed, expected, "CAs and sa are untouched");
        for (name, old) in leaves.iter().zip(&old) {
            let new = cert(dir.path(), name);
            assert_ne!(new.der, old.der, "{name}");
            assert_eq!(new.subject_text(), old.subject_text(), "{name}");
            assert_eq!(new.sans, old.sans, "{name}");
            let spec = PkiDeclaration::embedded()
                .unwrap()
                .certificate(name)
                .unwrap()
                .clone();
            assert!(
                new.is_signed_by(&cert(dir.path(), spec.ca.as_deref().unwrap())),
                "{name}"
            );
            assert!(
                (new.not_after - OffsetDateTime::now_utc()).whole_days() >= 99,
                "{name}"
            );
            assert_eq!(
                existing_mode(&store::key_path(dir.path(), name)).unwrap(),
                Some(0o600)
            );
            assert_eq!(
                existing_mode(&store::cert_path(dir.path(), name)).unwrap(),
                Some(0o644)
            );
        }
        assert!(
            cert(dir.path(), "apiserver")
                .sans
                .contains(&SubjectAltName::Dns("extra.example".to_string()))
        );
    }

    #[test]
    fn renew_by_name_touches_only_those() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let before = snapshot(dir.path());
        let names = vec![
            "etcd/server".to_string(),
            "apiserver".to_string(),
            "etcd/server".to_string(),
        ];
        let renewed = renew(dir.path(), &names, None).unwrap();
        assert_eq!(
            renewed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["etcd/server", "apiserver"]
        );
        let mut changed = changed_files(&before, &snapshot(dir.path()));
        changed.sort();
        assert_eq!(
            changed,
            [
                "apiserver.crt",
                "apiserver.key",
                "etcd/server.crt",
                "etcd/server.key"
            ]
        );
    }

    #[test]
    fn unknown_names_cas_and_missing_files_are_errors_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let before = snapshot(dir.path());
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();

        let err = renew(dir.path(), &names(&["apiserver", "apiservr"]), None).unwrap_err();
        assert!(
            matches!(&err, PkiError::UnknownCertificate { name, .. } if name == "apiservr"),
            "{err}"
        );
        assert!(
            err.to_string().contains("etcd/healthcheck-client"),
            "lists the leaves: {err}"
        );
        let err = renew(dir.path(), &names(&["apiserver", "etcd/ca"]), None).unwrap_err();
        assert!(
            matches!(&err, PkiError::CaNotRenewable { name } if name == "etcd/ca"),
            "{err}"
        );
        assert_eq!(
            changed_files(&before, &snapshot(dir.path())),
            Vec::<String>::new()
        );

        fs::remove_file(store::cert_path(dir.path(), "front-proxy-client")).unwrap();
        let err = renew(dir.path(), &[], None).unwrap_err();
        assert!(
            matches!(&err, PkiError::CertificateMissing { name, .. } if name == "front-proxy-client"),
            "{err}"
        );
        assert!(err.to_string().contains("certs generate"), "{err}");
    }

    #[test]
    fn a_validity_out_of_range_is_an_error_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let before = snapshot(dir.path());
        let names = ["apiserver".to_string()];
        let err = renew(dir.path(), &names, Some(Duration::days(u32::MAX.into()))).unwrap_err();
        assert!(matches!(err, PkiError::InvalidValidity { .. }), "{err}");
        assert_eq!(
            changed_files(&before, &snapshot(dir.path())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_leaf_not_signed_by_its_ca_does_not_pass_on_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let mut other_config = config(other.path());
        other_config.extra_sans = vec![SubjectAltName::Dns("attacker.example".to_string())];
        ensure(&other_config).unwrap();
        fs::copy(
            store::cert_path(other.path(), "apiserver"),
            store::cert_path(dir.path(), "apiserver"),
        )
        .unwrap();
        let before = snapshot(dir.path());
        let err = renew(dir.path(), &["apiserver".to_string()], None).unwrap_err();
        assert!(
            matches!(&err, PkiError::NotSignedByCa { name, ca, .. } if name == "apiserver" && ca == "ca"),
            "{err}"
        );
        assert!(err.to_string().contains("certs generate"), "{err}");
        assert_eq!(
            changed_files(&before, &snapshot(dir.path())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn renew_keeps_the_key_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.key_algorithm = KeyAlgorithm::Rsa2048;
        ensure(&config).unwrap();
        renew(dir.path(), &["apiserver".to_string()], None).unwrap();
        assert_eq!(
            cert(dir.path(), "apiserver").key_algorithm(),
            Some(KeyAlgorithm::Rsa2048)
        );
    }
}

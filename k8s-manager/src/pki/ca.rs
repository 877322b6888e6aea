//! The CAs: found on disk and checked before they sign anything. A CA is
//! never replaced behind the user's back: every certificate it signed (and
//! every kubeconfig that trusts it) would silently stop working.

use std::path::Path;

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::PkiError;
use super::inspect::{CertInfo, key_from_pem};
use super::store;

/// A CA that may sign: its certificate is a CA certificate, its key belongs to
/// it, and it has not expired.
#[derive(Debug)]
pub struct CaMaterial {
    pub name: String,
    pub cert_pem: Vec<u8>,
    pub info: CertInfo,
    pub key: KeyPair,
}

/// What the PKI folder holds for one CA.
#[derive(Debug)]
pub enum FoundCa {
    /// Certificate and key, checked.
    Usable(Box<CaMaterial>),
    /// A key without its certificate: what a crash between writing a new
    /// CA's key and its certificate leaves. Nothing can have been signed by a
    /// certificate that was never written, so a certificate is made for it.
    KeyOnly(KeyPair),
    /// Neither file: a new CA is made.
    Missing,
}

impl CaMaterial {
    /// The CA in `pki_dir`, which must be there and usable.
    pub fn load(pki_dir: &Path, name: &str, now: OffsetDateTime) -> Result<Self, PkiError> {
        match find(pki_dir, name, now)? {
            FoundCa::Usable(ca) => Ok(*ca),
            FoundCa::KeyOnly(_) | FoundCa::Missing => Err(PkiError::CaMissing {
                name: name.to_string(),
                cert: store::cert_path(pki_dir, name),
            }),
        }
    }

    /// rcgen's signer for this CA; the leaf's issuer name and authority key
    /// identifier are taken from the CA certificate itself.
    pub fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&CertificateDer::from(self.info.der.as_slice()), &self.key)
            .map_err(|source| PkiError::Issue {
                name: self.name.clone(),
                source,
            })
    }
}

/// Looks at the CA's files and says whether it can be used, must be made, or
/// is broken in a way only the user can settle.
pub fn find(pki_dir: &Path, name: &str, now: OffsetDateTime) -> Result<FoundCa, PkiError> {
    let cert_path = store::cert_path(pki_dir, name);
    let key_path = store::key_path(pki_dir, name);
    let cert_pem = store::read_cert(pki_dir, name)?;
    let key_pem = store::read_key(pki_dir, name)?;
    let read_key = |pem: &[u8]| {
        key_from_pem(pem).map_err(|reason| PkiError::Unreadable {
            path: key_path.clone(),
            what: "CA private key",
            reason,
        })
    };
    match (cert_pem, key_pem) {
        (None, None) => Ok(FoundCa::Missing),
        (None, Some(key_pem)) => Ok(FoundCa::KeyOnly(read_key(&key_pem)?)),
        (Some(_), None) => Err(PkiError::CaKeyMissing {
            name: name.to_string(),
            cert: cert_path,
            key: key_path,
        }),
        (Some(cert_pem), Some(key_pem)) => {
            let info = CertInfo::from_pem(&cert_pem).map_err(|reason| PkiError::Unreadable {
                path: cert_path.clone(),
                what: "CA certificate",
                reason,
            })?;
            if !info.may_sign_certificates {
                return Err(PkiError::NotACa {
                    name: name.to_string(),
                    cert: cert_path,
                    key: key_path,
                });
            }
            let key = read_key(&key_pem)?;
            if !info.matches_key(&key) {
                return Err(PkiError::CaKeyMismatch {
                    name: name.to_string(),
                    cert: cert_path,
                    key: key_path,
                });
            }
            if now < info.not_before {
                return Err(PkiError::CaNotYetValid {
                    name: name.to_string(),
                    cert: cert_path,
                    not_before: info.not_before,
                });
            }
            if info.not_after <= now {
                return Err(PkiError::CaExpired {
                    name: name.to_string(),
                    cert: cert_path,
                    not_after: info.not_after,
                });
            }
            Ok(FoundCa::Usable(Box::new(CaMaterial {
                name: name.to_string(),
                cert_pem,
                info,
                key,
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    use time::Duration;

    use super::super::issue::{CertRequest, KeyAlgorithm, Subject, generate_key};
    use super::super::spec::PkiDeclaration;
    use super::*;

    /// Writes a CA certificate and its key as `ca`.
    fn put_ca(pki_dir: &Path, cert_pem: &str, key: &KeyPair) {
        std::fs::write(store::cert_path(pki_dir, "ca"), cert_pem).unwrap();
        std::fs::write(store::key_path(pki_dir, "ca"), key.serialize_pem()).unwrap();
    }

    #[test]
    fn a_ca_whose_key_usage_forbids_signing_is_not_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        put_ca(dir.path(), &params.self_signed(&key).unwrap().pem(), &key);
        let err = find(dir.path(), "ca", OffsetDateTime::now_utc()).unwrap_err();
        assert!(
            matches!(&err, PkiError::NotACa { name, .. } if name == "ca"),
            "{err}"
        );
        assert!(err.to_string().contains("keyCertSign"), "{err}");
    }

    #[test]
    fn a_ca_not_valid_yet_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let declaration = PkiDeclaration::embedded().unwrap();
        let spec = declaration.certificate("ca").unwrap();
        let now = OffsetDateTime::now_utc();
        let request = CertRequest {
            spec,
            subject: Subject::for_node(spec, "node"),
            sans: Vec::new(),
            validity: Duration::days(3650),
            now: now + Duration::days(1),
        };
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        put_ca(dir.path(), &request.self_signed(&key).unwrap(), &key);
        let err = find(dir.path(), "ca", now).unwrap_err();
        assert!(matches!(&err, PkiError::CaNotYetValid { .. }), "{err}");
        assert!(err.to_string().contains("clock"), "{err}");
        assert!(matches!(
            find(dir.path(), "ca", now + Duration::days(1)),
            Ok(FoundCa::Usable(_))
        ));
    }
}

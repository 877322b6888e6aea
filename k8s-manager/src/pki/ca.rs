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
    Usable(CaMaterial),
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
            FoundCa::Usable(ca) => Ok(ca),
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
            if !info.is_ca {
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
            if info.not_after <= now {
                return Err(PkiError::CaExpired {
                    name: name.to_string(),
                    cert: cert_path,
                    not_after: info.not_after,
                });
            }
            Ok(FoundCa::Usable(CaMaterial {
                name: name.to_string(),
                cert_pem,
                info,
                key,
            }))
        }
    }
}

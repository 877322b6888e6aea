//! Reading existing certificates and keys: the facts ensure, check and renew
//! decide on, taken from PEM files with x509-parser.

use std::net::IpAddr;

use rcgen::KeyPair;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::issue::{KeyAlgorithm, Subject};
use super::sans::SubjectAltName;
use super::spec::{CertSpec, ExtendedKeyUsage, KeyUsage};

/// What a certificate says, owned, so that it outlives the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    pub is_ca: bool,
    pub not_after: OffsetDateTime,
    pub sans: Vec<SubjectAltName>,
    key_usage_flags: u16,
    server_auth: bool,
    client_auth: bool,
    other_extended_usages: bool,
    /// The subject public key, as a key pair's `public_key_raw` gives it.
    public_key: Vec<u8>,
    key_algorithm: Option<KeyAlgorithm>,
}

impl CertInfo {
    /// Parses one PEM `CERTIFICATE`. The error says what is wrong, for a
    /// message that names the file.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<Self, String> {
        let block = pem::parse(pem_bytes).map_err(|err| format!("not PEM: {err}"))?;
        if block.tag() != "CERTIFICATE" {
            return Err(format!("PEM block is {:?}, not CERTIFICATE", block.tag()));
        }
        Self::from_der(block.into_contents())
    }

    fn from_der(der: Vec<u8>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|err| format!("not an X.509 certificate: {err}"))?;
        let text = |values: Vec<Result<&str, _>>| -> Result<Vec<String>, String> {
            values
                .into_iter()
                .map(|value| {
                    value
                        .map(str::to_string)
                        .map_err(|err| format!("subject: {err}"))
                })
                .collect()
        };
        let common_names = text(
            cert.subject()
                .iter_common_name()
                .map(|attr| attr.as_str())
                .collect(),
        )?;
        let organizations = text(
            cert.subject()
                .iter_organization()
                .map(|attr| attr.as_str())
                .collect(),
        )?;
        let bad_extension = |err| format!("bad extension: {err}");
        let sans = match cert.subject_alternative_name().map_err(bad_extension)? {
            Some(ext) => ext
                .value
                .general_names
                .iter()
                .filter_map(subject_alt_name)
                .collect(),
            None => Vec::new(),
        };
        let key_usage_flags = cert
            .key_usage()
            .map_err(bad_extension)?
            .map_or(0, |ext| ext.value.flags);
        let (server_auth, client_auth, other_extended_usages) =
            match cert.extended_key_usage().map_err(bad_extension)? {
                Some(ext) => (
                    ext.value.server_auth,
                    ext.value.client_auth,
                    ext.value.any
                        || ext.value.code_signing
                        || ext.value.email_protection
                        || ext.value.time_stamping
                        || ext.value.ocsp_signing
                        || !ext.value.other.is_empty(),
                ),
                None => (false, false, false),
            };
        let key_algorithm = match cert.public_key().parsed() {
            Ok(PublicKey::EC(_)) => Some(KeyAlgorithm::EcdsaP256),
            Ok(PublicKey::RSA(_)) => Some(KeyAlgorithm::Rsa2048),
            _ => None,
        };
        Ok(CertInfo {
            common_names,
            organizations,
            is_ca: cert.is_ca(),
            not_after: cert.validity().not_after.to_datetime(),
            sans,
            key_usage_flags,
            server_auth,
            client_auth,
            other_extended_usages,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            key_algorithm,
            der,
        })
    }

    /// Whether `ca`'s key made this certificate's signature (and the names
    /// chain): a new CA with the same name does not pass.
    pub fn is_signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok((_, cert)), Ok((_, ca_cert))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&ca.der),
        ) else {
            return false;
        };
        cert.issuer().as_raw() == ca_cert.subject().as_raw()
            && cert.verify_signature(Some(ca_cert.public_key())).is_ok()
    }

    /// Whether `key` is the private half of this certificate's public key.
    pub fn matches_key(&self, key: &KeyPair) -> bool {
        self.public_key == key.public_key_raw()
    }

    /// Whether the subject is exactly `subject`.
    pub fn has_subject(&self, subject: &Subject) -> bool {
        self.common_names == [subject.common_name.as_str()]
            && self
                .organizations
                .iter()
                .map(String::as_str)
                .eq(subject.organization.as_deref())
    }

    /// The subject as written in the certificate, if k8s-manager can write it
    /// again (one CN, at most one O).
    pub fn subject(&self) -> Option<Subject> {
        match (self.common_names.as_slice(), self.organizations.as_slice()) {
            ([common_name], organizations) if organizations.len() <= 1 => Some(Subject {
                common_name: common_name.clone(),
                organization: organizations.first().cloned(),
            }),
            _ => None,
        }
    }

    pub fn subject_text(&self) -> String {
        let organizations = self.organizations.iter().map(|o| format!("O={o}"));
        let common_names = self.common_names.iter().map(|cn| format!("CN={cn}"));
        organizations
            .chain(common_names)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the key and extended key usages are exactly the declared ones.
    pub fn has_usages(&self, spec: &CertSpec) -> bool {
        let declared_flags = spec
            .key_usages
            .iter()
            .fold(0u16, |flags, usage| flags | key_usage_flag(*usage));
        let declared = |usage| spec.extended_key_usages.contains(&usage);
        self.key_usage_flags == declared_flags
            && self.server_auth == declared(ExtendedKeyUsage::ServerAuth)
            && self.client_auth == declared(ExtendedKeyUsage::ClientAuth)
            && !self.other_extended_usages
    }

    /// The asked names this certificate does not cover.
    pub fn missing_sans(&self, wanted: &[SubjectAltName]) -> Vec<SubjectAltName> {
        wanted
            .iter()
            .filter(|name| !self.sans.contains(name))
            .cloned()
            .collect()
    }

    /// The algorithm of the certificate's key, so that a renewal makes a key
    /// of the same kind.
    pub fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        self.key_algorithm
    }
}

/// x509-parser's key usage bits: bit 0 is digitalSignature, as in RFC 5280's
/// BIT STRING order.
fn key_usage_flag(usage: KeyUsage) -> u16 {
    match usage {
        KeyUsage::DigitalSignature => 1 << 0,
        KeyUsage::KeyEncipherment => 1 << 2,
        KeyUsage::KeyCertSign => 1 << 5,
    }
}

fn subject_alt_name(name: &GeneralName<'_>) -> Option<SubjectAltName> {
    match name {
        GeneralName::DNSName(dns) => Some(SubjectAltName::Dns(dns.to_string())),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Some(SubjectAltName::Ip(IpAddr::from(
                <[u8; 4]>::try_from(*bytes).ok()?,
            ))),
            16 => Some(SubjectAltName::Ip(IpAddr::from(
                <[u8; 16]>::try_from(*bytes).ok()?,
            ))),
            _ => None,
        },
        _ => None,
    }
}

/// Parses a PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(pem_bytes: &[u8]) -> Result<KeyPair, String> {
    let text = std::str::from_utf8(pem_bytes).map_err(|_| "not PEM text".to_string())?;
    KeyPair::from_pem(text).map_err(|err| format!("not a private key: {err}"))
}

/// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) into its raw key bytes.
pub fn public_key_from_pem(pem_bytes: &[u8]) -> Result<Vec<u8>, String> {
    let block = pem::parse(pem_bytes).map_err(|err| format!("not PEM: {err}"))?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(block.contents())
        .map_err(|err| format!("not a public key: {err}"))?;
    Ok(spki.subject_public_key.data.to_vec())
}

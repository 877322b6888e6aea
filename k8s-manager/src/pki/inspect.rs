//! Reading existing certificates and keys: the facts ensure, check and renew
//! decide on, taken from PEM files with x509-parser.

use std::net::IpAddr;

use rcgen::KeyPair;
use rustls::pki_types::PrivateKeyDer;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::issue::{KeyAlgorithm, Subject};
use super::sans::SubjectAltName;
use super::spec::{CertSpec, ExtendedKeyUsage, KeyUsage};

/// Why a file does not hold the one PEM block it should, in the user's terms:
/// never the file's bytes (a key is secret) nor a parser's internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPem {
    #[error("it is empty")]
    Empty,
    #[error("it is not PEM text")]
    NotPem,
    #[error("it is cut short: its PEM block has no END line")]
    Truncated,
    #[error("it holds {0} PEM blocks where k8s-manager writes one")]
    SeveralBlocks(usize),
    #[error("it holds {found}, not {expected}")]
    WrongBlock {
        found: &'static str,
        expected: &'static str,
    },
    #[error("it holds an encrypted private key; k8s-manager needs it unencrypted")]
    EncryptedKey,
    #[error("it is not a valid {0}")]
    Malformed(&'static str),
    #[error("its {0} cannot be read")]
    UnreadableField(&'static str),
    #[error(
        "its key is not of a kind k8s-manager can use (ECDSA P-256 or P-384, Ed25519, RSA of 2048 bits or more)"
    )]
    UnsupportedKey,
}

const CERTIFICATE: &str = "certificate";
const PRIVATE_KEY: &str = "private key";
const PUBLIC_KEY: &str = "public key";

/// The one block of a PEM file, whose tag must be one of `tags`. Blocks of EC
/// parameters are skipped: `openssl ecparam -genkey` writes one before the key.
fn single_block(bytes: &[u8], expected: &'static str, tags: &[&str]) -> Result<pem::Pem, BadPem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BadPem::Empty);
    }
    let cut_short = || {
        let has = |marker: &[u8]| memchr::memmem::find(bytes, marker).is_some();
        if has(b"-----BEGIN ") && !has(b"-----END ") {
            BadPem::Truncated
        } else {
            BadPem::NotPem
        }
    };
    let mut blocks = pem::parse_many(bytes).map_err(|_| cut_short())?;
    blocks.retain(|block| block.tag() != "EC PARAMETERS");
    let block = match blocks.len() {
        0 => return Err(cut_short()),
        1 => blocks.remove(0),
        count => return Err(BadPem::SeveralBlocks(count)),
    };
    if block.tag() == "ENCRYPTED PRIVATE KEY" || block.headers().get("Proc-Type").is_some() {
        return Err(BadPem::EncryptedKey);
    }
    if !tags.contains(&block.tag()) {
        return Err(BadPem::WrongBlock {
            found: block_kind(block.tag()),
            expected,
        });
    }
    Ok(block)
}

/// What a PEM block holds, by its tag, in the user's words. The tag itself is
/// not repeated: it is whatever the file says.
fn block_kind(tag: &str) -> &'static str {
    match tag {
        "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => "a certificate",
        "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => "a private key",
        "PUBLIC KEY" | "RSA PUBLIC KEY" => "a public key",
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => "a certificate request",
        _ => "an unknown kind of PEM block",
    }
}

/// What a certificate says, owned, so that it outlives the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    pub is_ca: bool,
    /// A CA whose key usage, if it has one, allows signing certificates: what
    /// TLS clients (Go's crypto/x509 among them) ask of an issuer.
    pub may_sign_certificates: bool,
    pub not_before: OffsetDateTime,
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
    /// Parses a file that holds one PEM `CERTIFICATE`. The error says what is
    /// wrong, for a message that names the file.
    pub fn from_pem(pem_bytes: &[u8]) -> Result<Self, BadPem> {
        let block = single_block(pem_bytes, "a certificate", &["CERTIFICATE"])?;
        Self::from_der(block.into_contents())
    }

    fn from_der(der: Vec<u8>) -> Result<Self, BadPem> {
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|_| BadPem::Malformed(CERTIFICATE))?;
        let text = |values: Vec<Result<&str, _>>| -> Result<Vec<String>, BadPem> {
            values
                .into_iter()
                .map(|value| {
                    value
                        .map(str::to_string)
                        .map_err(|_| BadPem::UnreadableField("subject"))
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
        let bad_extension = |_| BadPem::UnreadableField("extensions");
        let sans = match cert.subject_alternative_name().map_err(bad_extension)? {
            Some(ext) => ext
                .value
                .general_names
                .iter()
                .filter_map(subject_alt_name)
                .collect(),
            None => Vec::new(),
        };
        let key_usage = cert.key_usage().map_err(bad_extension)?;
        let key_usage_flags = key_usage.as_ref().map_or(0, |ext| ext.value.flags);
        let may_sign_certificates =
            cert.is_ca() && key_usage.is_none_or(|ext| ext.value.key_cert_sign());
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
            may_sign_certificates,
            not_before: cert.validity().not_before.to_datetime(),
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

/// Parses a file that holds one PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(pem_bytes: &[u8]) -> Result<KeyPair, BadPem> {
    let block = single_block(
        pem_bytes,
        "a private key",
        &["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"],
    )?;
    let der =
        PrivateKeyDer::try_from(block.contents()).map_err(|_| BadPem::Malformed(PRIVATE_KEY))?;
    KeyPair::try_from(&der).map_err(|_| BadPem::UnsupportedKey)
}

/// Parses a file that holds one PEM `PUBLIC KEY` (SubjectPublicKeyInfo) into
/// its raw key bytes.
pub fn public_key_from_pem(pem_bytes: &[u8]) -> Result<Vec<u8>, BadPem> {
    let block = single_block(pem_bytes, "a public key", &["PUBLIC KEY"])?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(block.contents())
        .map_err(|_| BadPem::Malformed(PUBLIC_KEY))?;
    Ok(spki.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::{KeyAlgorithm, generate_key};

    fn key_pem() -> String {
        generate_key(KeyAlgorithm::EcdsaP256)
            .unwrap()
            .serialize_pem()
    }

    #[test]
    fn files_that_are_not_one_pem_block_say_what_they_hold() {
        let key = key_pem();
        let public = generate_key(KeyAlgorithm::EcdsaP256)
            .unwrap()
            .public_key_pem();
        let two_keys = format!("{key}{}", key_pem());
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let garbage: Vec<u8> = (0..=255).collect();
        for (bytes, expected) in [
            (&b""[..], BadPem::Empty),
            (b" \n\t\n", BadPem::Empty),
            (&garbage, BadPem::NotPem),
            (&key.as_bytes()[..key.len() / 2], BadPem::Truncated),
            (two_keys.as_bytes(), BadPem::SeveralBlocks(2)),
            (encrypted.as_bytes(), BadPem::EncryptedKey),
            (
                public.as_bytes(),
                BadPem::WrongBlock {
                    found: "a public key",
                    expected: "a private key",
                },
            ),
        ] {
            let err = key_from_pem(bytes).unwrap_err();
            assert_eq!(err, expected);
            let secret_line = key.lines().nth(1).unwrap();
            assert!(!err.to_string().contains(secret_line));
        }
        assert_eq!(
            CertInfo::from_pem(key.as_bytes()).unwrap_err(),
            BadPem::WrongBlock {
                found: "a private key",
                expected: "a certificate",
            }
        );
        let not_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = CertInfo::from_pem(not_der.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "it is not a valid certificate");
        let err = public_key_from_pem(key.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "it holds a private key, not a public key");
    }

    #[test]
    fn a_key_after_ec_parameters_is_read() {
        let params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let key = key_pem();
        let with_params = format!("{params}{key}");
        assert!(key_from_pem(with_params.as_bytes()).is_ok());
    }
}

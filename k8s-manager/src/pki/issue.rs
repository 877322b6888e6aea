//! Making keys and certificates with rcgen (aws-lc-rs backend), the way
//! kubeadm's pkiutil makes them: random serials, a backdated not-before,
//! explicit basic constraints and key identifiers.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::sans::SubjectAltName;
use super::spec::{CertSpec, ExtendedKeyUsage, KeyUsage};

/// How far back a certificate's validity starts, so that a component whose
/// clock is a little behind accepts a certificate made just now (kubeadm's
/// `CertificateBackdate`).
pub const BACKDATE: Duration = Duration::minutes(5);

/// The algorithm of every new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// Fast to make and to use; what a laptop cluster wants.
    #[default]
    EcdsaP256,
    /// kubeadm's default, for tools that insist on RSA.
    Rsa2048,
}

impl KeyAlgorithm {
    pub const NAMES: [&'static str; 2] = ["ecdsa-p256", "rsa-2048"];

    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => Self::NAMES[0],
            KeyAlgorithm::Rsa2048 => Self::NAMES[1],
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key algorithm {0:?}; use ecdsa-p256 or rsa-2048")]
pub struct UnknownKeyAlgorithm(pub String);

impl FromStr for KeyAlgorithm {
    type Err = UnknownKeyAlgorithm;

    fn from_str(value: &str) -> Result<Self, UnknownKeyAlgorithm> {
        match value {
            "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            "rsa-2048" => Ok(KeyAlgorithm::Rsa2048),
            other => Err(UnknownKeyAlgorithm(other.to_string())),
        }
    }
}

/// A new private key.
pub fn generate_key(algorithm: KeyAlgorithm) -> Result<KeyPair, rcgen::Error> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
    }
}

/// One new key per entry of `algorithms`, in that order, made on every core:
/// an RSA-2048 key takes tens of milliseconds and a full PKI needs a dozen.
pub fn generate_keys(algorithms: &[KeyAlgorithm]) -> Result<Vec<KeyPair>, rcgen::Error> {
    let count = algorithms.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count);
    if workers <= 1 {
        return algorithms
            .iter()
            .map(|algorithm| generate_key(*algorithm))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let made = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(algorithm) = algorithms.get(index) else {
                        break;
                    };
                    let key = generate_key(*algorithm);
                    made.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push((index, key));
                }
            });
        }
    });
    let mut made = made
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    made.sort_by_key(|(index, _)| *index);
    made.into_iter().map(|(_, key)| key).collect()
}

/// A certificate's subject: kubeadm's certificates carry a CN and at most one O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organization: Option<String>,
}

impl Subject {
    pub fn for_node(spec: &CertSpec, node_name: &str) -> Self {
        Subject {
            common_name: spec.common_name_for(node_name),
            organization: spec.organization.clone(),
        }
    }

    /// In Go's order (O before CN), so that our subjects read like kubeadm's.
    fn distinguished_name(&self) -> DistinguishedName {
        let mut name = DistinguishedName::new();
        if let Some(organization) = &self.organization {
            name.push(DnType::OrganizationName, organization.as_str());
        }
        name.push(DnType::CommonName, self.common_name.as_str());
        name
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(organization) = &self.organization {
            write!(f, "O={organization}, ")?;
        }
        write!(f, "CN={}", self.common_name)
    }
}

/// Everything that goes into one certificate besides the keys.
#[derive(Debug, Clone)]
pub struct CertRequest<'a> {
    pub spec: &'a CertSpec,
    pub subject: Subject,
    pub sans: Vec<SubjectAltName>,
    pub validity: Duration,
    pub now: OffsetDateTime,
}

impl CertRequest<'_> {
    fn params(&self) -> Result<CertificateParams, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = self.subject.distinguished_name();
        params.serial_number = Some(random_serial()?);
        params.not_before = self.now - BACKDATE;
        params.not_after = self.not_after();
        params.key_usages = self
            .spec
            .key_usages
            .iter()
            .map(|usage| key_usage(*usage))
            .collect();
        params.extended_key_usages = self
            .spec
            .extended_key_usages
            .iter()
            .map(|usage| extended_key_usage(*usage))
            .collect();
        params.subject_alt_names = self.sans.iter().map(san_type).collect::<Result<_, _>>()?;
        if self.spec.is_ca() {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        } else {
            // Explicit CA:FALSE, as kubeadm writes it; rcgen also adds the
            // subject key identifier only when basic constraints are written.
            params.is_ca = IsCa::ExplicitNoCa;
            params.use_authority_key_identifier_extension = true;
        }
        Ok(params)
    }

    /// When the certificate expires. Saturating: callers bound the validity
    /// (see `leaf_validity`), and a clock near year 9999 must not panic.
    pub fn not_after(&self) -> OffsetDateTime {
        self.now.saturating_add(self.validity)
    }

    /// A self-signed CA certificate, PEM.
    pub fn self_signed(&self, key: &KeyPair) -> Result<String, rcgen::Error> {
        Ok(self.params()?.self_signed(key)?.pem())
    }

    /// A certificate for `key` signed by `issuer`, PEM.
    pub fn signed_by(
        &self,
        key: &KeyPair,
        issuer: &Issuer<'_, &KeyPair>,
    ) -> Result<String, rcgen::Error> {
        Ok(self.params()?.signed_by(key, issuer)?.pem())
    }
}

fn key_usage(usage: KeyUsage) -> KeyUsagePurpose {
    match usage {
        KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
        KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
        KeyUsage::KeyCertSign => KeyUsagePurpose::KeyCertSign,
    }
}

fn extended_key_usage(usage: ExtendedKeyUsage) -> rcgen::ExtendedKeyUsagePurpose {
    match usage {
        ExtendedKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    }
}

fn san_type(san: &SubjectAltName) -> Result<SanType, rcgen::Error> {
    Ok(match san {
        SubjectAltName::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
        SubjectAltName::Ip(ip) => SanType::IpAddress(*ip),
    })
}

/// A random 128-bit serial number from the process's crypto provider
/// (aws-lc-rs): unpredictable serials are what RFC 5280 asks of a CA. rcgen
/// writes it as a positive DER integer (a leading zero byte when the top bit
/// is set), as Go does with its 128-bit serials.
fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    let mut bytes = [0u8; 16];
    // Zero is not a valid serial: draw again in the 2^-128 case.
    while bytes == [0u8; 16] {
        random
            .fill(&mut bytes)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_algorithm_names_round_trip() {
        for name in KeyAlgorithm::NAMES {
            assert_eq!(name.parse::<KeyAlgorithm>().unwrap().to_string(), name);
        }
        assert!("ed25519".parse::<KeyAlgorithm>().is_err());
    }

    #[test]
    fn keys_are_made_in_the_asked_number_and_algorithm() {
        use KeyAlgorithm::{EcdsaP256, Rsa2048};
        let asked = [EcdsaP256, Rsa2048, EcdsaP256, EcdsaP256, Rsa2048];
        let keys = generate_keys(&asked).unwrap();
        let algorithms: Vec<_> = keys.iter().map(KeyPair::algorithm).collect();
        assert_eq!(
            algorithms,
            [
                &PKCS_ECDSA_P256_SHA256,
                &PKCS_RSA_SHA256,
                &PKCS_ECDSA_P256_SHA256,
                &PKCS_ECDSA_P256_SHA256,
                &PKCS_RSA_SHA256
            ]
        );
        assert!(generate_keys(&[]).unwrap().is_empty());
    }

    #[test]
    fn serials_are_random_and_128_bits() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }
}

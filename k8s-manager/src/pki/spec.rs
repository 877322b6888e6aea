//! The PKI declared as data: `certs/pki.yaml`, embedded in the binary so that
//! it is self-contained, parsed into typed [`CertSpec`]s and validated before
//! any certificate is made from it.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

/// The declaration the binary was built with.
const EMBEDDED_DECLARATION: &str = include_str!("../../../certs/pki.yaml");

/// Placeholder in a common name for the node's name.
const NODE_PLACEHOLDER: &str = "{node}";

/// Why a PKI declaration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    #[error("the PKI declaration does not parse: {0}")]
    Parse(String),
    #[error("certificate name {0:?} is declared twice")]
    DuplicateName(String),
    #[error(
        "certificate name {0:?} is not a relative file name (lowercase letters, digits, '-', and '/' between folder and file)"
    )]
    InvalidName(String),
    #[error("certificate {cert:?} is signed by {ca:?}, which is not a declared certificate")]
    UnknownCa { cert: String, ca: String },
    #[error(
        "certificate {cert:?} is signed by {ca:?}, which is not a CA (a CA has no `ca` of its own)"
    )]
    SignerNotCa { cert: String, ca: String },
    #[error("the signing chain {} loops", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("certificate {0:?} is a CA but its key usages lack key-cert-sign")]
    CaWithoutCertSign(String),
    #[error("certificate {0:?} is a leaf but has key-cert-sign, which only a CA may have")]
    LeafWithCertSign(String),
    #[error("kubeconfig client certificate {0:?} must name the CA that signs it")]
    KubeconfigWithoutCa(String),
    #[error(
        "common name {common_name:?} of {cert:?} has a placeholder other than {NODE_PLACEHOLDER}"
    )]
    UnknownPlaceholder { cert: String, common_name: String },
}

/// The whole declaration: validity defaults, the PKI folder's certificates and
/// the client certificates embedded in kubeconfig files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PkiDeclaration {
    pub validity: ValidityDefaults,
    pub certificates: Vec<CertSpec>,
    pub kubeconfigs: Vec<CertSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ValidityDefaults {
    pub ca_days: u32,
    pub leaf_days: u32,
}

/// One certificate as declared: what to put in it, not how to make it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CertSpec {
    /// File name under the PKI folder without extension (`etcd/server`); for a
    /// kubeconfig client certificate, the kubeconfig's name (`admin`).
    pub name: String,
    /// The signing CA's name; `None` for a (self-signed) CA.
    #[serde(default)]
    pub ca: Option<String>,
    /// Subject CN, possibly with the `{node}` placeholder.
    pub common_name: String,
    /// Subject O. One at most: rcgen holds one value per subject attribute,
    /// and no kubeadm certificate carries more than one.
    #[serde(default)]
    pub organization: Option<String>,
    pub key_usages: Vec<KeyUsage>,
    #[serde(default)]
    pub extended_key_usages: Vec<ExtendedKeyUsage>,
    #[serde(default)]
    pub sans: Vec<SanRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyUsage {
    DigitalSignature,
    KeyEncipherment,
    KeyCertSign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtendedKeyUsage {
    ServerAuth,
    ClientAuth,
}

/// A symbolic subject-alternative-name rule, resolved against the node's
/// settings by [`super::sans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SanRule {
    CommonName,
    NodeName,
    AdvertiseAddress,
    ServiceIp,
    Localhost,
    LoopbackV4,
    LoopbackV6,
    KubernetesNames,
    DesktopNames,
    Extra,
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyUsage::DigitalSignature => "digital-signature",
            KeyUsage::KeyEncipherment => "key-encipherment",
            KeyUsage::KeyCertSign => "key-cert-sign",
        })
    }
}

impl fmt::Display for ExtendedKeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtendedKeyUsage::ServerAuth => "server-auth",
            ExtendedKeyUsage::ClientAuth => "client-auth",
        })
    }
}

impl CertSpec {
    pub fn is_ca(&self) -> bool {
        self.ca.is_none()
    }

    /// The subject CN for a node.
    pub fn common_name_for(&self, node_name: &str) -> String {
        self.common_name.replace(NODE_PLACEHOLDER, node_name)
    }
}

impl PkiDeclaration {
    /// The declaration embedded in this binary, parsed and validated.
    pub fn embedded() -> Result<Self, DeclarationError> {
        Self::parse(EMBEDDED_DECLARATION)
    }

    /// Parses and validates a declaration.
    pub fn parse(yaml: &str) -> Result<Self, DeclarationError> {
        let declaration: PkiDeclaration =
            serde_saphyr::from_str(yaml).map_err(|err| DeclarationError::Parse(err.to_string()))?;
        declaration.validate()?;
        Ok(declaration)
    }

    /// A certificate of the PKI folder by name.
    pub fn certificate(&self, name: &str) -> Option<&CertSpec> {
        self.certificates.iter().find(|spec| spec.name == name)
    }

    /// The CAs, which must exist before any leaf is signed.
    pub fn cas(&self) -> impl Iterator<Item = &CertSpec> {
        self.certificates.iter().filter(|spec| spec.is_ca())
    }

    /// The PKI folder's leaves, in declaration order.
    pub fn leaves(&self) -> impl Iterator<Item = &CertSpec> {
        self.certificates.iter().filter(|spec| !spec.is_ca())
    }

    fn validate(&self) -> Result<(), DeclarationError> {
        let mut names = HashSet::new();
        for spec in &self.certificates {
            if !names.insert(spec.name.as_str()) {
                return Err(DeclarationError::DuplicateName(spec.name.clone()));
            }
        }
        let mut kubeconfig_names = HashSet::new();
        for spec in &self.kubeconfigs {
            if !kubeconfig_names.insert(spec.name.as_str()) {
                return Err(DeclarationError::DuplicateName(spec.name.clone()));
            }
            if spec.ca.is_none() {
                return Err(DeclarationError::KubeconfigWithoutCa(spec.name.clone()));
            }
        }
        let by_name: HashMap<&str, &CertSpec> = self
            .certificates
            .iter()
            .map(|spec| (spec.name.as_str(), spec))
            .collect();
        for spec in self.certificates.iter().chain(&self.kubeconfigs) {
            validate_name(&spec.name)?;
            validate_common_name(spec)?;
            validate_signing_chain(spec, &by_name)?;
            let has_cert_sign = spec.key_usages.contains(&KeyUsage::KeyCertSign);
            if spec.is_ca() && !has_cert_sign {
                return Err(DeclarationError::CaWithoutCertSign(spec.name.clone()));
            }
            if !spec.is_ca() && has_cert_sign {
                return Err(DeclarationError::LeafWithCertSign(spec.name.clone()));
            }
        }
        Ok(())
    }
}

/// Names become file paths under the PKI folder: keep them to plain,
/// relative segments so that no declaration can write outside it.
fn validate_name(name: &str) -> Result<(), DeclarationError> {
    let valid_segment = |segment: &str| {
        !segment.is_empty()
            && !segment.starts_with('-')
            && segment
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if name.split('/').all(valid_segment) {
        Ok(())
    } else {
        Err(DeclarationError::InvalidName(name.to_string()))
    }
}

fn validate_common_name(spec: &CertSpec) -> Result<(), DeclarationError> {
    let rendered = spec.common_name.replace(NODE_PLACEHOLDER, "");
    if rendered.contains('{') || rendered.contains('}') {
        return Err(DeclarationError::UnknownPlaceholder {
            cert: spec.name.clone(),
            common_name: spec.common_name.clone(),
        });
    }
    Ok(())
}

/// Follows the `ca` links from `spec` up to a self-signed CA: every link must
/// name a declared certificate, the walk must not come back on itself, and the
/// signer must be a CA.
fn validate_signing_chain(
    spec: &CertSpec,
    by_name: &HashMap<&str, &CertSpec>,
) -> Result<(), DeclarationError> {
    let mut chain = vec![spec.name.clone()];
    let mut current = spec;
    while let Some(ca_name) = &current.ca {
        let Some(signer) = by_name.get(ca_name.as_str()) else {
            return Err(DeclarationError::UnknownCa {
                cert: current.name.clone(),
                ca: ca_name.clone(),
            });
        };
        let looped = chain.contains(&signer.name);
        chain.push(signer.name.clone());
        if looped {
            return Err(DeclarationError::Cycle(chain));
        }
        current = signer;
    }
    if let Some(ca_name) = &spec.ca
        && let Some(signer) = by_name.get(ca_name.as_str())
        && !signer.is_ca()
    {
        return Err(DeclarationError::SignerNotCa {
            cert: spec.name.clone(),
            ca: ca_name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_declaration_is_kubeadms_set_plus_kubelet_serving_and_kube_proxy() {
        let declaration = PkiDeclaration::embedded().expect("embedded declaration is valid");
        let summary: Vec<(&str, Option<&str>, &str, Option<&str>)> = declaration
            .certificates
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.ca.as_deref(),
                    c.common_name.as_str(),
                    c.organization.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("ca", None, "kubernetes", None),
                ("apiserver", Some("ca"), "kube-apiserver", None),
                (
                    "apiserver-kubelet-client",
                    Some("ca"),
                    "kube-apiserver-kubelet-client",
                    Some("kubeadm:cluster-admins")
                ),
                ("front-proxy-ca", None, "front-proxy-ca", None),
                (
                    "front-proxy-client",
                    Some("front-proxy-ca"),
                    "front-proxy-client",
                    None
                ),
                ("etcd/ca", None, "etcd-ca", None),
                ("etcd/server", Some("etcd/ca"), "{node}", None),
                ("etcd/peer", Some("etcd/ca"), "{node}", None),
                (
                    "etcd/healthcheck-client",
                    Some("etcd/ca"),
                    "kube-etcd-healthcheck-client",
                    None
                ),
                (
                    "apiserver-etcd-client",
                    Some("etcd/ca"),
                    "kube-apiserver-etcd-client",
                    None
                ),
                // Beyond kubeadm: the kubelet's serving certificate, signed by the
                // cluster CA so that the API server can verify the kubelet.
                (
                    "kubelet",
                    Some("ca"),
                    "system:node:{node}",
                    Some("system:nodes")
                ),
            ]
        );
        let kubeconfigs: Vec<(&str, &str, Option<&str>)> = declaration
            .kubeconfigs
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.common_name.as_str(),
                    c.organization.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            kubeconfigs,
            vec![
                ("admin", "kubernetes-admin", Some("kubeadm:cluster-admins")),
                (
                    "super-admin",
                    "kubernetes-super-admin",
                    Some("system:masters")
                ),
                ("controller-manager", "system:kube-controller-manager", None),
                ("scheduler", "system:kube-scheduler", None),
                ("kubelet", "system:node:{node}", Some("system:nodes")),
                // Beyond kubeadm: kube-proxy runs as a process, not a DaemonSet.
                ("kube-proxy", "system:kube-proxy", None),
            ]
        );
        assert_eq!(
            declaration.validity,
            ValidityDefaults {
                ca_days: 3650,
                leaf_days: 365
            }
        );

        use ExtendedKeyUsage::{ClientAuth, ServerAuth};
        let usages = |name: &str| {
            declaration
                .certificate(name)
                .unwrap()
                .extended_key_usages
                .clone()
        };
        assert_eq!(usages("apiserver"), vec![ServerAuth]);
        assert_eq!(usages("etcd/server"), vec![ServerAuth, ClientAuth]);
        assert_eq!(usages("etcd/peer"), vec![ServerAuth, ClientAuth]);
        assert_eq!(usages("kubelet"), vec![ServerAuth]);
        for client in [
            "apiserver-kubelet-client",
            "front-proxy-client",
            "etcd/healthcheck-client",
            "apiserver-etcd-client",
        ] {
            assert_eq!(usages(client), vec![ClientAuth], "{client}");
        }
        for spec in declaration.cas() {
            assert_eq!(
                spec.key_usages,
                vec![
                    KeyUsage::DigitalSignature,
                    KeyUsage::KeyEncipherment,
                    KeyUsage::KeyCertSign
                ]
            );
        }
        for spec in declaration.leaves().chain(&declaration.kubeconfigs) {
            assert_eq!(
                spec.key_usages,
                vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
            );
        }
        assert_eq!(
            declaration.certificate("apiserver").unwrap().sans,
            vec![
                SanRule::NodeName,
                SanRule::KubernetesNames,
                SanRule::ServiceIp,
                SanRule::AdvertiseAddress,
                SanRule::LoopbackV4,
                SanRule::Localhost,
                SanRule::DesktopNames,
                SanRule::Extra,
            ]
        );
    }

    const LEAF_USAGES: &str = "key-usages: [digital-signature, key-encipherment]";
    const CA_USAGES: &str = "key-usages: [digital-signature, key-encipherment, key-cert-sign]";

    fn declaration_with(certificates: &str) -> String {
        format!(
            "validity: {{ca-days: 3650, leaf-days: 365}}\ncertificates:\n{certificates}\nkubeconfigs: []\n"
        )
    }

    #[test]
    fn unknown_ca_is_rejected() {
        let yaml = declaration_with(&format!(
            "  - {{name: leaf, ca: nope, common-name: x, {LEAF_USAGES}}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&yaml),
            Err(DeclarationError::UnknownCa { cert, ca }) if cert == "leaf" && ca == "nope"
        ));
    }

    #[test]
    fn signing_cycle_is_rejected() {
        let yaml = declaration_with(&format!(
            "  - {{name: a, ca: b, common-name: a, {LEAF_USAGES}}}\n  - {{name: b, ca: a, common-name: b, {LEAF_USAGES}}}"
        ));
        let err = PkiDeclaration::parse(&yaml).unwrap_err();
        assert!(
            matches!(&err, DeclarationError::Cycle(chain) if chain == &["a", "b", "a"]),
            "{err}"
        );
        let self_signed_leaf = declaration_with(&format!(
            "  - {{name: a, ca: a, common-name: a, {LEAF_USAGES}}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&self_signed_leaf),
            Err(DeclarationError::Cycle(_))
        ));
    }

    #[test]
    fn leaf_cannot_sign() {
        let yaml = declaration_with(&format!(
            "  - {{name: ca, common-name: ca, {CA_USAGES}}}\n  - {{name: a, ca: ca, common-name: a, {LEAF_USAGES}}}\n  - {{name: b, ca: a, common-name: b, {LEAF_USAGES}}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&yaml),
            Err(DeclarationError::SignerNotCa { cert, ca }) if cert == "b" && ca == "a"
        ));
    }

    #[test]
    fn unknown_san_rule_is_rejected() {
        let yaml = declaration_with(&format!(
            "  - {{name: ca, common-name: ca, {CA_USAGES}}}\n  - {{name: a, ca: ca, common-name: a, {LEAF_USAGES}, sans: [node-name, everything]}}"
        ));
        let err = PkiDeclaration::parse(&yaml).unwrap_err();
        assert!(
            matches!(&err, DeclarationError::Parse(msg) if msg.contains("everything")),
            "{err}"
        );
    }

    #[test]
    fn usages_must_match_the_role() {
        let ca_without_sign =
            declaration_with(&format!("  - {{name: ca, common-name: ca, {LEAF_USAGES}}}"));
        assert!(matches!(
            PkiDeclaration::parse(&ca_without_sign),
            Err(DeclarationError::CaWithoutCertSign(_))
        ));
        let signing_leaf = declaration_with(&format!(
            "  - {{name: ca, common-name: ca, {CA_USAGES}}}\n  - {{name: a, ca: ca, common-name: a, {CA_USAGES}}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&signing_leaf),
            Err(DeclarationError::LeafWithCertSign(_))
        ));
    }

    #[test]
    fn names_and_placeholders_are_checked() {
        for bad in ["../escape", "/abs", "Upper", "a//b", ""] {
            let yaml = declaration_with(&format!(
                "  - {{name: '{bad}', common-name: x, {CA_USAGES}}}"
            ));
            assert!(
                matches!(
                    PkiDeclaration::parse(&yaml),
                    Err(DeclarationError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        let yaml = declaration_with(&format!(
            "  - {{name: ca, common-name: '{{host}}', {CA_USAGES}}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&yaml),
            Err(DeclarationError::UnknownPlaceholder { .. })
        ));
        let twice = declaration_with(&format!(
            "  - {{name: ca, common-name: x, {CA_USAGES}}}\n  - {{name: ca, common-name: y, {CA_USAGES}}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&twice),
            Err(DeclarationError::DuplicateName(_))
        ));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let yaml = declaration_with(&format!(
            "  - {{name: ca, common-name: x, {CA_USAGES}, organisation: typo}}"
        ));
        assert!(matches!(
            PkiDeclaration::parse(&yaml),
            Err(DeclarationError::Parse(_))
        ));
    }

    #[test]
    fn node_placeholder_is_filled() {
        let declaration = PkiDeclaration::embedded().unwrap();
        assert_eq!(
            declaration
                .certificate("etcd/server")
                .unwrap()
                .common_name_for("desktop"),
            "desktop"
        );
        let kubelet = declaration
            .kubeconfigs
            .iter()
            .find(|c| c.name == "kubelet")
            .unwrap();
        assert_eq!(kubelet.common_name_for("desktop"), "system:node:desktop");
    }
}

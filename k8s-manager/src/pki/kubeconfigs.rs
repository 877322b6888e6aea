//! The components' kubeconfig files, as kubeadm's `kubeconfig` phase writes
//! them: one per declared client certificate (`admin.conf`, `kubelet.conf`,
//! ...), each with the CA, the client certificate and its key embedded, so
//! that a file alone is enough to reach the API server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::assess::{self, ExpectedLeaf};
use super::ca::CaMaterial;
use super::issue::{self, CertRequest, KeyAlgorithm, Subject};
use super::sans::is_dns_subdomain;
use super::spec::{CertSpec, PkiDeclaration};
use super::store::PendingWrite;
use super::{Action, DEFAULT_RENEW_WITHIN, Outcome, PkiError, ReissueReason, leaf_validity, store};
use crate::fsutil;

/// kubeadm's cluster name, the default of `--cluster-name`.
pub const DEFAULT_CLUSTER_NAME: &str = "kubernetes";

/// Where and how the kubeconfig files are written.
#[derive(Debug, Clone)]
pub struct KubeconfigsConfig {
    /// The PKI folder holding the CAs that sign the client certificates.
    pub pki_dir: PathBuf,
    pub out_dir: PathBuf,
    /// The API server URL every file points at (`https://127.0.0.1:6443`).
    pub server_url: String,
    /// For the kubelet's identity, `system:node:<name>`.
    pub node_name: String,
    pub cluster_name: String,
    pub key_algorithm: KeyAlgorithm,
    /// Validity of new client certificates; `None` is the declaration's.
    pub client_validity: Option<Duration>,
    pub renew_within: Duration,
    /// Kubeconfigs (`admin`, `kubelet`) whose client certificate is
    /// re-issued whatever its expiry: a renewal asked for by name.
    pub renew: Vec<String>,
}

impl KubeconfigsConfig {
    pub fn new(
        pki_dir: impl Into<PathBuf>,
        out_dir: impl Into<PathBuf>,
        server_url: impl Into<String>,
        node_name: impl Into<String>,
    ) -> Self {
        KubeconfigsConfig {
            pki_dir: pki_dir.into(),
            out_dir: out_dir.into(),
            server_url: server_url.into(),
            node_name: node_name.into(),
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            key_algorithm: KeyAlgorithm::default(),
            client_validity: None,
            renew_within: DEFAULT_RENEW_WITHIN,
            renew: Vec::new(),
        }
    }
}

/// The declared kubeconfigs' names (`admin`, `kubelet`, ...).
pub fn names() -> Result<Vec<String>, PkiError> {
    Ok(PkiDeclaration::embedded()?
        .kubeconfigs
        .into_iter()
        .map(|spec| spec.name)
        .collect())
}

/// The state of the client certificate of every declared kubeconfig in
/// `dir`, named by file (`admin.conf`), judged against the CA of `pki_dir`
/// as [`write_all`] judges it (an unreadable file, or one of another CA, is
/// invalid: the next write replaces it).
pub fn check(
    pki_dir: &Path,
    dir: &Path,
    now: OffsetDateTime,
    renew_within: Duration,
) -> Result<Vec<super::CertStatus>, PkiError> {
    let declaration = PkiDeclaration::embedded()?;
    let mut statuses = Vec::new();
    for spec in &declaration.kubeconfigs {
        let ca_name = spec.ca.as_deref().unwrap_or_default();
        let ca = store::read_cert(pki_dir, ca_name)?;
        let file = store::read_optional(dir, Path::new(&file_name(&spec.name)))?;
        statuses.push(super::check::client_status(
            &file_name(&spec.name),
            spec,
            file.as_deref().map(client_certificate),
            ca.as_deref(),
            now,
            renew_within,
        ));
    }
    Ok(statuses)
}

/// The client certificate (PEM) embedded in a kubeconfig file as written here.
fn client_certificate(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    serde_saphyr::from_str::<KubeconfigFile>(text)
        .ok()?
        .client_credentials()
}

/// The file name of a declared kubeconfig (`admin` → `admin.conf`).
pub fn file_name(name: &str) -> String {
    format!("{name}.conf")
}

/// Writes every declared kubeconfig into `out_dir` (mode 0600), keeping a
/// file byte for byte while it points at the same server and CA and its
/// client certificate still serves (see [`super::ensure`] for what that
/// means); returns one outcome per file, in declaration order.
pub fn write_all(config: &KubeconfigsConfig) -> Result<Vec<Outcome>, PkiError> {
    if !config.server_url.starts_with("https://") || config.server_url.len() == "https://".len() {
        return Err(PkiError::InvalidServerUrl(config.server_url.clone()));
    }
    if !is_dns_subdomain(&config.node_name) {
        return Err(PkiError::InvalidNodeName(config.node_name.clone()));
    }
    let declaration = PkiDeclaration::embedded()?;
    let now = OffsetDateTime::now_utc();
    let validity = leaf_validity(&declaration, config.client_validity)?;
    let mut cas: HashMap<&str, CaMaterial> = HashMap::new();
    // What each kubeconfig trusts: the CA's trust bundle (both CAs during a
    // rotation, see [`super::rotation`]).
    let mut trust: HashMap<&str, Vec<u8>> = HashMap::new();
    for spec in &declaration.kubeconfigs {
        let ca_name = spec.ca.as_deref().unwrap_or_default();
        if !cas.contains_key(ca_name) {
            let ca = CaMaterial::load(&config.pki_dir, ca_name, now)?;
            trust.insert(
                ca_name,
                super::rotation::trust_bundle(&config.pki_dir, ca_name, &ca.cert_pem)?,
            );
            cas.insert(ca_name, ca);
        }
    }
    if !config.out_dir.exists() {
        fsutil::create_dir_all_mode(&config.out_dir, store::DIR_MODE).map_err(|source| {
            PkiError::Io {
                action: "create folder",
                path: config.out_dir.clone(),
                source,
            }
        })?;
    }

    let mut actions: HashMap<&str, Action> = HashMap::new();
    let mut to_write: Vec<(CertRequest<'_>, Action)> = Vec::new();
    for spec in &declaration.kubeconfigs {
        let ca = &cas[spec.ca.as_deref().unwrap_or_default()];
        let request = CertRequest {
            spec,
            subject: Subject::for_node(spec, &config.node_name),
            sans: Vec::new(),
            validity,
            now,
        };
        let existing = store::read_optional(&config.out_dir, Path::new(&file_name(&spec.name)))?;
        let trusted = &trust[spec.ca.as_deref().unwrap_or_default()];
        match file_action(existing.as_deref(), &request, ca, trusted, config) {
            None => {
                actions.insert(&spec.name, Action::Kept);
            }
            Some(action) => to_write.push((request, action)),
        }
    }

    let keys =
        issue::generate_keys(&vec![config.key_algorithm; to_write.len()]).map_err(|source| {
            PkiError::Issue {
                name: "keys".to_string(),
                source,
            }
        })?;
    let mut writes = Vec::with_capacity(to_write.len());
    for ((request, action), key) in to_write.into_iter().zip(keys) {
        let spec = request.spec;
        let ca = &cas[spec.ca.as_deref().unwrap_or_default()];
        let cert_pem =
            request
                .signed_by(&key, &ca.issuer()?)
                .map_err(|source| PkiError::Issue {
                    name: spec.name.clone(),
                    source,
                })?;
        let file = KubeconfigFile::new(
            config,
            &request.subject,
            &trust[spec.ca.as_deref().unwrap_or_default()],
            cert_pem.as_bytes(),
            key.serialize_pem().as_bytes(),
        );
        writes.push(vec![pending_file(&config.out_dir, spec, &file)?]);
        actions.insert(&spec.name, action);
    }
    store::write_groups(&writes)?;
    Ok(declaration
        .kubeconfigs
        .iter()
        .map(|spec| Outcome {
            name: file_name(&spec.name),
            action: actions[spec.name.as_str()].clone(),
        })
        .collect())
}

/// `None` when the existing file can stay as it is.
fn file_action(
    existing: Option<&[u8]>,
    request: &CertRequest<'_>,
    ca: &CaMaterial,
    trusted: &[u8],
    config: &KubeconfigsConfig,
) -> Option<Action> {
    let Some(existing) = existing else {
        return Some(Action::Created);
    };
    if config.renew.contains(&request.spec.name) {
        return Some(Action::Reissued(ReissueReason::Requested));
    }
    // The parser's message is not passed on: it quotes the file, key included.
    let parsed = std::str::from_utf8(existing)
        .ok()
        .and_then(|text| serde_saphyr::from_str::<KubeconfigFile>(text).ok());
    let Some(file) = parsed else {
        return Some(Action::Reissued(ReissueReason::Unreadable(
            "not a kubeconfig file as k8s-manager writes it".to_string(),
        )));
    };
    let Some((cert_pem, key_pem)) = file.client_credentials() else {
        return Some(Action::Reissued(ReissueReason::Unreadable(
            "no embedded client certificate and key".to_string(),
        )));
    };
    if let Some(found) = file.server().filter(|server| *server != config.server_url) {
        return Some(Action::Reissued(ReissueReason::ServerChanged {
            found: found.to_string(),
        }));
    }
    if file.certificate_authority().as_deref() != Some(trusted) {
        return Some(Action::Reissued(ReissueReason::CaChanged));
    }
    if file != KubeconfigFile::new(config, &request.subject, trusted, &cert_pem, &key_pem) {
        return Some(Action::Reissued(ReissueReason::KubeconfigChanged));
    }
    let expected = ExpectedLeaf {
        spec: request.spec,
        subject: &request.subject,
        sans: &request.sans,
        ca: Some(&ca.info),
        now: request.now,
        renew_within: config.renew_within,
    };
    assess::leaf_action(Some(&cert_pem), Some(&key_pem), &expected)
}

/// The file to write for a kubeconfig: YAML, owner only (it holds a key).
fn pending_file(
    out_dir: &Path,
    spec: &CertSpec,
    file: &KubeconfigFile,
) -> Result<PendingWrite, PkiError> {
    let name = file_name(&spec.name);
    // Plain scalars, as kubeadm and kubectl write them: the long base64 values
    // would otherwise become folded block scalars that some tools misread.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    let yaml = serde_saphyr::to_string_with_options(file, options).map_err(|err| {
        PkiError::KubeconfigSerialize {
            name: name.clone(),
            reason: err.to_string(),
        }
    })?;
    Ok(PendingWrite::new(
        out_dir.join(name),
        yaml,
        store::PRIVATE_MODE,
    ))
}

/// A kubeconfig with one cluster, one user and one context, in kubeadm's
/// names: the user is the certificate's CN, the context `<user>@<cluster>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KubeconfigFile {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<NamedCluster>,
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    current_context: String,
    users: Vec<NamedUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    certificate_authority_data: String,
    server: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

impl KubeconfigFile {
    fn new(
        config: &KubeconfigsConfig,
        subject: &Subject,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Self {
        let user = subject.common_name.clone();
        let context = format!("{user}@{}", config.cluster_name);
        KubeconfigFile {
            api_version: "v1".to_string(),
            kind: "Config".to_string(),
            clusters: vec![NamedCluster {
                name: config.cluster_name.clone(),
                cluster: Cluster {
                    certificate_authority_data: BASE64.encode(ca_pem),
                    server: config.server_url.clone(),
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: Context {
                    cluster: config.cluster_name.clone(),
                    user: user.clone(),
                },
            }],
            current_context: context,
            users: vec![NamedUser {
                name: user,
                user: User {
                    client_certificate_data: BASE64.encode(cert_pem),
                    client_key_data: BASE64.encode(key_pem),
                },
            }],
        }
    }

    fn server(&self) -> Option<&str> {
        self.clusters
            .first()
            .map(|cluster| cluster.cluster.server.as_str())
    }

    fn certificate_authority(&self) -> Option<Vec<u8>> {
        BASE64
            .decode(&self.clusters.first()?.cluster.certificate_authority_data)
            .ok()
    }

    /// The embedded client certificate and key, PEM.
    fn client_credentials(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let user = &self.users.first()?.user;
        Some((
            BASE64.decode(&user.client_certificate_data).ok()?,
            BASE64.decode(&user.client_key_data).ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::inspect::CertInfo;
    use super::super::testutil::{NODE, changed_files, changes, config, snapshot};
    use super::super::{PkiConfig, ensure};
    use super::*;
    use crate::fsutil::existing_mode;

    const SERVER: &str = "https://127.0.0.1:6443";

    fn setup() -> (tempfile::TempDir, PkiConfig, KubeconfigsConfig) {
        let dir = tempfile::tempdir().unwrap();
        let pki = config(&dir.path().join("pki"));
        ensure(&pki).unwrap();
        let kubeconfigs =
            KubeconfigsConfig::new(&pki.pki_dir, dir.path().join("kube"), SERVER, NODE);
        (dir, pki, kubeconfigs)
    }

    fn read(config: &KubeconfigsConfig, name: &str) -> KubeconfigFile {
        serde_saphyr::from_str(&fs::read_to_string(config.out_dir.join(name)).unwrap()).unwrap()
    }

    #[test]
    fn writes_every_kubeconfig_with_embedded_credentials() {
        let (_dir, pki, config) = setup();
        let outcomes = write_all(&config).unwrap();
        let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "admin.conf",
                "super-admin.conf",
                "controller-manager.conf",
                "scheduler.conf",
                "kubelet.conf",
                "kube-proxy.conf"
            ]
        );
        assert!(outcomes.iter().all(|o| o.action == Action::Created));
        let ca_pem = fs::read(store::cert_path(&pki.pki_dir, "ca")).unwrap();
        let ca = CertInfo::from_pem(&ca_pem).unwrap();
        for (file, subject, user) in [
            (
                "admin.conf",
                "O=kubeadm:cluster-admins, CN=kubernetes-admin",
                "kubernetes-admin",
            ),
            (
                "super-admin.conf",
                "O=system:masters, CN=kubernetes-super-admin",
                "kubernetes-super-admin",
            ),
            (
                "controller-manager.conf",
                "CN=system:kube-controller-manager",
                "system:kube-controller-manager",
            ),
            (
                "scheduler.conf",
                "CN=system:kube-scheduler",
                "system:kube-scheduler",
            ),
            (
                "kubelet.conf",
                "O=system:nodes, CN=system:node:desktop",
                "system:node:desktop",
            ),
            (
                "kube-proxy.conf",
                "CN=system:kube-proxy",
                "system:kube-proxy",
            ),
        ] {
            assert_eq!(
                existing_mode(&config.out_dir.join(file)).unwrap(),
                Some(0o600),
                "{file}"
            );
            let kubeconfig = read(&config, file);
            assert_eq!(kubeconfig.server(), Some(SERVER));
            assert_eq!(kubeconfig.certificate_authority().unwrap(), ca_pem);
            assert_eq!(kubeconfig.users[0].name, user);
            assert_eq!(kubeconfig.current_context, format!("{user}@kubernetes"));
            assert_eq!(kubeconfig.contexts[0].context.cluster, "kubernetes");
            let (cert_pem, key_pem) = kubeconfig.client_credentials().unwrap();
            let cert = CertInfo::from_pem(&cert_pem).unwrap();
            assert_eq!(cert.subject_text(), subject, "{file}");
            assert!(cert.is_signed_by(&ca), "{file}");
            assert!(
                cert.matches_key(&super::super::inspect::key_from_pem(&key_pem).unwrap()),
                "{file}"
            );
        }
    }

    #[test]
    fn kept_while_valid_and_rewritten_when_server_or_ca_change() {
        let (dir, pki, mut config) = setup();
        write_all(&config).unwrap();
        let before = snapshot(&config.out_dir);
        assert_eq!(changes(&write_all(&config).unwrap()), vec![]);
        assert_eq!(
            changed_files(&before, &snapshot(&config.out_dir)),
            Vec::<String>::new()
        );

        config.server_url = "https://kubernetes.docker.internal:6443".to_string();
        let server_changed = Action::Reissued(ReissueReason::ServerChanged {
            found: SERVER.to_string(),
        });
        let outcomes = write_all(&config).unwrap();
        assert!(
            outcomes.iter().all(|o| o.action == server_changed),
            "{outcomes:?}"
        );

        fs::remove_file(store::cert_path(&pki.pki_dir, "ca")).unwrap();
        fs::remove_file(store::key_path(&pki.pki_dir, "ca")).unwrap();
        ensure(&pki).unwrap();
        let outcomes = write_all(&config).unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| o.action == Action::Reissued(ReissueReason::CaChanged)),
            "{outcomes:?}"
        );

        config.node_name = "renamed".to_string();
        let outcomes = write_all(&config).unwrap();
        assert_eq!(
            changes(&outcomes),
            vec![(
                "kubelet.conf",
                &Action::Reissued(ReissueReason::KubeconfigChanged)
            )]
        );
        drop(dir);
    }

    #[test]
    fn a_kubeconfig_that_does_not_parse_is_replaced_without_quoting_it() {
        let (_dir, _pki, config) = setup();
        write_all(&config).unwrap();
        let path = config.out_dir.join("admin.conf");
        let text = fs::read_to_string(&path).unwrap();
        // Broken next to the key, where a parser's excerpt would quote it.
        let broken = text.replace("client-key-data: ", "client-key-data: [");
        assert_ne!(broken, text);
        fs::write(&path, &broken).unwrap();
        let outcomes = write_all(&config).unwrap();
        let (name, action) = changes(&outcomes)[0];
        assert_eq!(name, "admin.conf");
        let shown = action.to_string();
        assert!(shown.starts_with("reissued (unreadable"), "{shown}");
        let key_data = read(&config, "admin.conf").users[0]
            .user
            .client_key_data
            .clone();
        let old_key_data = broken
            .lines()
            .find_map(|line| line.trim().strip_prefix("client-key-data: ["))
            .unwrap();
        assert_ne!(key_data, old_key_data);
        assert!(!shown.contains(&old_key_data[..16]), "{shown}");
        assert!(!shown.contains("client-key-data"), "{shown}");
    }

    #[test]
    fn short_lived_client_certificates_are_renewed() {
        let (_dir, _pki, mut config) = setup();
        config.client_validity = Some(Duration::days(10));
        write_all(&config).unwrap();
        let outcomes = write_all(&config).unwrap();
        assert!(
            outcomes.iter().all(|o| matches!(
                o.action,
                Action::Reissued(ReissueReason::Expiring { days_left: 9..=10 })
            )),
            "{outcomes:?}"
        );
    }

    #[test]
    fn missing_ca_and_bad_server_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let config = KubeconfigsConfig::new(
            dir.path().join("pki"),
            dir.path().join("kube"),
            SERVER,
            NODE,
        );
        let err = write_all(&config).unwrap_err();
        assert!(
            matches!(&err, PkiError::CaMissing { name, .. } if name == "ca"),
            "{err}"
        );
        assert!(err.to_string().contains("certs generate"), "{err}");
        let bad = KubeconfigsConfig::new(
            dir.path().join("pki"),
            dir.path().join("kube"),
            "127.0.0.1:6443",
            NODE,
        );
        assert!(matches!(
            write_all(&bad),
            Err(PkiError::InvalidServerUrl(_))
        ));
        assert!(!dir.path().join("kube").exists());
    }
}

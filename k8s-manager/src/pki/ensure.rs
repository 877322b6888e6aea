//! `ensure`: the one loop that brings the PKI folder to what the declaration
//! and the settings ask, touching only what is missing or no longer serves.

use std::collections::HashMap;
use std::path::Path;

use rcgen::KeyPair;
use time::OffsetDateTime;

use super::assess::{self, ExpectedLeaf};
use super::ca::{self, CaMaterial, FoundCa};
use super::inspect::{CertInfo, key_from_pem, public_key_from_pem};
use super::issue::{self, CertRequest, Subject};
use super::sans::{self, SanInputs, SubjectAltName, is_dns_subdomain};
use super::spec::{CertSpec, PkiDeclaration};
use super::store::{self, PendingWrite};
use super::{Action, Outcome, PkiConfig, PkiError, ReissueReason, ca_validity, leaf_validity};

/// Makes every missing certificate and key of the PKI, reuses existing CAs
/// (after checking them), keeps valid leaves byte for byte, and re-issues a
/// leaf whose CA changed, whose subject, usages or names no longer match, or
/// that expires within `renew_within`. Returns one outcome per certificate in
/// declaration order, then the service-account key pair.
pub fn ensure(config: &PkiConfig) -> Result<Vec<Outcome>, PkiError> {
    if !is_dns_subdomain(&config.node_name) {
        return Err(PkiError::InvalidNodeName(config.node_name.clone()));
    }
    if !is_dns_subdomain(&config.dns_domain) {
        return Err(PkiError::InvalidDnsDomain(config.dns_domain.clone()));
    }
    let declaration = PkiDeclaration::embedded()?;
    let leaf_validity = leaf_validity(&declaration, config.leaf_validity)?;
    let now = OffsetDateTime::now_utc();
    let pki_dir = config.pki_dir.as_path();
    store::prepare_dirs(
        pki_dir,
        declaration
            .certificates
            .iter()
            .map(|spec| spec.name.as_str()),
    )?;
    let mut actions: HashMap<&str, Action> = HashMap::new();
    // Everything is signed first and written at the end, in one batch.
    let mut writes: Vec<Vec<PendingWrite>> = Vec::new();
    let request = |spec, validity| CertRequest {
        spec,
        subject: Subject::for_node(spec, &config.node_name),
        sans: resolve_sans(spec, config),
        validity,
        now,
    };

    // CAs first: leaves are judged against them. A CA left half-made by a
    // crash (key, no certificate) gets its certificate now; missing CAs wait
    // for the key batch below.
    let mut ready_cas: HashMap<&str, CaMaterial> = HashMap::new();
    let mut new_cas: Vec<&CertSpec> = Vec::new();
    for spec in declaration.cas() {
        match ca::find(pki_dir, &spec.name, now)? {
            FoundCa::Usable(ca) => {
                actions.insert(&spec.name, Action::Kept);
                ready_cas.insert(&spec.name, *ca);
            }
            FoundCa::KeyOnly(key) => {
                let (ca, files) = make_ca(
                    pki_dir,
                    &request(spec, ca_validity(&declaration)),
                    key,
                    KeyOnDisk::Yes,
                )?;
                writes.push(files);
                actions.insert(&spec.name, Action::Created);
                ready_cas.insert(&spec.name, ca);
            }
            FoundCa::Missing => new_cas.push(spec),
        }
    }

    let mut leaves_to_issue: Vec<(CertRequest<'_>, Action)> = Vec::new();
    for spec in declaration.leaves() {
        let leaf = request(spec, leaf_validity);
        let ca_name = spec.ca.as_deref().unwrap_or_default();
        let expected = ExpectedLeaf {
            spec,
            subject: &leaf.subject,
            sans: &leaf.sans,
            ca: ready_cas.get(ca_name).map(|ca| &ca.info),
            now,
            renew_within: config.renew_within,
        };
        let cert_pem = store::read_cert(pki_dir, &spec.name)?;
        let key_pem = store::read_key(pki_dir, &spec.name)?;
        match assess::leaf_action(cert_pem.as_deref(), key_pem.as_deref(), &expected) {
            None => {
                actions.insert(&spec.name, Action::Kept);
            }
            Some(action) => leaves_to_issue.push((leaf, action)),
        }
    }
    let service_account = plan_service_account(pki_dir)?;

    // Every new key in one batch, on every core: RSA keys dominate the time.
    let key_count = new_cas.len()
        + leaves_to_issue.len()
        + usize::from(matches!(service_account, ServiceAccountPlan::NewPair(_)));
    let mut keys = issue::generate_keys(&vec![config.key_algorithm; key_count])
        .map_err(|source| PkiError::Issue {
            name: "keys".to_string(),
            source,
        })?
        .into_iter();
    let mut next_key = || {
        keys.next()
            .expect("one key was made per certificate to issue")
    };

    for spec in new_cas {
        let (ca, files) = make_ca(
            pki_dir,
            &request(spec, ca_validity(&declaration)),
            next_key(),
            KeyOnDisk::No,
        )?;
        writes.push(files);
        actions.insert(&spec.name, Action::Created);
        ready_cas.insert(&spec.name, ca);
    }
    for (leaf, action) in leaves_to_issue {
        let name = &leaf.spec.name;
        let ca = &ready_cas[leaf.spec.ca.as_deref().unwrap_or_default()];
        let key = next_key();
        let cert_pem = leaf
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
        actions.insert(name, action);
    }

    let mut outcomes: Vec<Outcome> = declaration
        .certificates
        .iter()
        .map(|spec| Outcome {
            name: spec.name.clone(),
            action: actions[spec.name.as_str()].clone(),
        })
        .collect();
    let (service_account_outcomes, service_account_files) =
        apply_service_account(pki_dir, service_account, next_key);
    outcomes.extend(service_account_outcomes);
    writes.push(service_account_files);
    store::write_groups(&writes)?;
    // What the components trust: the CAs themselves, unless a rotation is
    // in progress (see [`super::rotation`]).
    super::rotation::sync_trust(pki_dir)?;
    Ok(outcomes)
}

fn resolve_sans(spec: &CertSpec, config: &PkiConfig) -> Vec<SubjectAltName> {
    let common_name = spec.common_name_for(&config.node_name);
    let inputs = SanInputs {
        common_name: &common_name,
        node_name: &config.node_name,
        advertise_address: config.advertise_address,
        service_cidr: config.service_cidr,
        dns_domain: &config.dns_domain,
        extra: &config.extra_sans,
    };
    sans::resolve(&spec.sans, &inputs)
}

/// Whether a CA's key already sits in the folder.
enum KeyOnDisk {
    Yes,
    No,
}

/// A self-signed CA certificate for `key`, and the files to write for it.
fn make_ca(
    pki_dir: &Path,
    request: &CertRequest<'_>,
    key: KeyPair,
    key_on_disk: KeyOnDisk,
) -> Result<(CaMaterial, Vec<PendingWrite>), PkiError> {
    let name = &request.spec.name;
    let cert_pem = request
        .self_signed(&key)
        .map_err(|source| PkiError::Issue {
            name: name.clone(),
            source,
        })?;
    let files = match key_on_disk {
        KeyOnDisk::Yes => vec![PendingWrite::new(
            store::cert_path(pki_dir, name),
            cert_pem.as_bytes(),
            store::PUBLIC_MODE,
        )],
        KeyOnDisk::No => store::key_and_cert(pki_dir, name, &key.serialize_pem(), &cert_pem),
    };
    let info = CertInfo::from_pem(cert_pem.as_bytes()).map_err(|reason| PkiError::Unreadable {
        path: store::cert_path(pki_dir, name),
        what: "new CA certificate",
        reason,
    })?;
    let ca = CaMaterial {
        name: name.clone(),
        cert_pem: cert_pem.into_bytes(),
        info,
        key,
    };
    Ok((ca, files))
}

/// The service-account key pair signs and verifies the cluster's tokens. It
/// is not a certificate and never expires: it is made once, and only its
/// public half is rewritten when it does not match.
enum ServiceAccountPlan {
    Keep,
    PublicFromKey(KeyPair, Action),
    NewPair(Action),
}

fn plan_service_account(pki_dir: &Path) -> Result<ServiceAccountPlan, PkiError> {
    let key_pem = store::read_key(pki_dir, store::SERVICE_ACCOUNT)?;
    let Some(key_pem) = key_pem else {
        return Ok(ServiceAccountPlan::NewPair(Action::Created));
    };
    let key = match key_from_pem(&key_pem) {
        Ok(key) => key,
        Err(reason) => {
            return Ok(ServiceAccountPlan::NewPair(Action::Reissued(
                ReissueReason::KeyUnreadable(reason),
            )));
        }
    };
    let public_pem = store::read_optional(pki_dir, &store::service_account_public_file())?;
    Ok(match public_pem.map(|pem| public_key_from_pem(&pem)) {
        None => ServiceAccountPlan::PublicFromKey(key, Action::Created),
        Some(Err(reason)) => ServiceAccountPlan::PublicFromKey(
            key,
            Action::Reissued(ReissueReason::Unreadable(reason.to_string())),
        ),
        Some(Ok(public)) if public != key.public_key_raw() => {
            ServiceAccountPlan::PublicFromKey(key, Action::Reissued(ReissueReason::KeyMismatch))
        }
        Some(Ok(_)) => ServiceAccountPlan::Keep,
    })
}

/// The service-account outcomes and the files to write for them.
fn apply_service_account(
    pki_dir: &Path,
    plan: ServiceAccountPlan,
    mut next_key: impl FnMut() -> KeyPair,
) -> (Vec<Outcome>, Vec<PendingWrite>) {
    let public_path = store::service_account_public_path(pki_dir);
    let outcome = |name: &str, action| Outcome {
        name: name.to_string(),
        action,
    };
    match plan {
        ServiceAccountPlan::Keep => (vec![outcome(store::SERVICE_ACCOUNT, Action::Kept)], vec![]),
        ServiceAccountPlan::PublicFromKey(key, action) => (
            vec![
                outcome(store::SERVICE_ACCOUNT, Action::Kept),
                outcome("sa.pub", action),
            ],
            vec![PendingWrite::new(
                public_path,
                key.public_key_pem(),
                store::PUBLIC_MODE,
            )],
        ),
        ServiceAccountPlan::NewPair(action) => {
            let key = next_key();
            let key_path = store::key_path(pki_dir, store::SERVICE_ACCOUNT);
            // Private half first, for the same reason as a certificate's key.
            let files = vec![
                PendingWrite::new(key_path, key.serialize_pem(), store::PRIVATE_MODE),
                PendingWrite::new(public_path, key.public_key_pem(), store::PUBLIC_MODE),
            ];
            (vec![outcome(store::SERVICE_ACCOUNT, action)], files)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use time::Duration;

    use super::super::testutil::{ADVERTISE, NODE, cert, changed_files, changes, config, snapshot};
    use super::super::{KeyAlgorithm, MAX_VALIDITY_DAYS};
    use super::*;
    use crate::fsutil::existing_mode;

    /// The leaves in declaration order.
    const LEAVES: [&str; 8] = [
        "apiserver",
        "apiserver-kubelet-client",
        "front-proxy-client",
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
        "apiserver-etcd-client",
        "kubelet",
    ];

    fn dns(name: &str) -> SubjectAltName {
        SubjectAltName::Dns(name.to_string())
    }

    fn ip(address: &str) -> SubjectAltName {
        SubjectAltName::Ip(address.parse().unwrap())
    }

    #[test]
    fn fresh_pki_has_kubeadms_layout_subjects_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let outcomes = ensure(&config(&pki)).unwrap();
        assert!(
            outcomes
                .iter()
                .all(|outcome| outcome.action == Action::Created),
            "{outcomes:?}"
        );
        assert_eq!(outcomes.len(), 3 + LEAVES.len() + 1);

        let mut expected_files: Vec<String> = ["ca", "front-proxy-ca", "etcd/ca"]
            .iter()
            .chain(&LEAVES)
            .flat_map(|name| [format!("{name}.crt"), format!("{name}.key")])
            .chain(["sa.key".to_string(), "sa.pub".to_string()])
            // The trust bundles (see pki::rotation).
            .chain(
                [
                    "trust/ca.crt",
                    "trust/etcd/ca.crt",
                    "trust/front-proxy-ca.crt",
                ]
                .map(String::from),
            )
            .collect();
        expected_files.sort();
        let mut files: Vec<String> = snapshot(&pki)
            .keys()
            .map(|path| path.display().to_string())
            .collect();
        files.sort();
        assert_eq!(files, expected_files);
        for file in &files {
            let mode = existing_mode(&pki.join(file)).unwrap().unwrap();
            let want = if file.ends_with(".key") { 0o600 } else { 0o644 };
            assert_eq!(mode, want, "{file}");
        }
        assert_eq!(existing_mode(&pki).unwrap(), Some(0o700));
        assert_eq!(existing_mode(&pki.join("etcd")).unwrap(), Some(0o700));

        for (ca, common_name) in [
            ("ca", "kubernetes"),
            ("front-proxy-ca", "front-proxy-ca"),
            ("etcd/ca", "etcd-ca"),
        ] {
            let info = cert(&pki, ca);
            assert!(info.is_ca, "{ca}");
            assert_eq!(info.subject_text(), format!("CN={common_name}"));
            assert!(info.is_signed_by(&info), "{ca} is self-signed");
            let years = (info.not_after - OffsetDateTime::now_utc()).whole_days();
            assert!((3649..=3650).contains(&years), "{ca}: {years} days");
        }
        let apiserver = cert(&pki, "apiserver");
        assert!(!apiserver.is_ca);
        assert_eq!(apiserver.subject_text(), "CN=kube-apiserver");
        assert_eq!(
            apiserver.sans,
            vec![
                dns(NODE),
                dns("kubernetes"),
                dns("kubernetes.default"),
                dns("kubernetes.default.svc"),
                dns("kubernetes.default.svc.cluster.local"),
                ip("10.96.0.1"),
                ip(ADVERTISE),
                ip("127.0.0.1"),
                dns("localhost"),
                dns("kubernetes.docker.internal"),
                dns("host.docker.internal"),
            ]
        );
        assert_eq!(
            cert(&pki, "apiserver-kubelet-client").subject_text(),
            "O=kubeadm:cluster-admins, CN=kube-apiserver-kubelet-client"
        );
        let kubelet = cert(&pki, "kubelet");
        assert_eq!(
            kubelet.subject_text(),
            format!("O=system:nodes, CN=system:node:{NODE}")
        );
        assert_eq!(
            kubelet.sans,
            vec![dns(NODE), ip(ADVERTISE), dns("localhost"), ip("127.0.0.1")]
        );
        for etcd in ["etcd/server", "etcd/peer"] {
            let info = cert(&pki, etcd);
            assert_eq!(info.subject_text(), format!("CN={NODE}"));
            assert_eq!(
                info.sans,
                vec![
                    dns(NODE),
                    dns("localhost"),
                    ip(ADVERTISE),
                    ip("127.0.0.1"),
                    ip("::1")
                ]
            );
        }
        let declaration = PkiDeclaration::embedded().unwrap();
        for name in LEAVES {
            let spec = declaration.certificate(name).unwrap();
            let info = cert(&pki, name);
            assert!(
                info.is_signed_by(&cert(&pki, spec.ca.as_deref().unwrap())),
                "{name}"
            );
            assert!(info.has_usages(spec), "{name}");
            let key = key_from_pem(&fs::read(store::key_path(&pki, name)).unwrap()).unwrap();
            assert!(info.matches_key(&key), "{name}");
            let days = (info.not_after - OffsetDateTime::now_utc()).whole_days();
            assert!((364..=365).contains(&days), "{name}: {days} days");
        }
    }

    #[test]
    fn second_ensure_keeps_every_file_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let before = snapshot(dir.path());
        let outcomes = ensure(&config(dir.path())).unwrap();
        assert_eq!(changes(&outcomes), vec![]);
        assert_eq!(
            changed_files(&before, &snapshot(dir.path())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_new_san_reissues_only_the_apiserver() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let ca_before = cert(dir.path(), "ca");
        let before = snapshot(dir.path());
        let mut config = config(dir.path());
        config.extra_sans = vec![dns("desktop.example"), ip("10.0.0.5"), dns("kubernetes")];
        let outcomes = ensure(&config).unwrap();
        let missing = vec![dns("desktop.example"), ip("10.0.0.5")];
        assert_eq!(
            changes(&outcomes),
            vec![(
                "apiserver",
                &Action::Reissued(ReissueReason::SansNotCovered(missing))
            )]
        );
        assert_eq!(
            changed_files(&before, &snapshot(dir.path())),
            vec!["apiserver.crt", "apiserver.key"]
        );
        let apiserver = cert(dir.path(), "apiserver");
        assert!(
            apiserver
                .sans
                .ends_with(&[dns("desktop.example"), ip("10.0.0.5")]),
            "{:?}",
            apiserver.sans
        );
        assert!(apiserver.is_signed_by(&ca_before));
        // Covered now: a third run keeps it, and dropping the SAN again keeps
        // it too (it still covers everything asked).
        assert_eq!(changes(&ensure(&config).unwrap()), vec![]);
        config.extra_sans.clear();
        assert_eq!(changes(&ensure(&config).unwrap()), vec![]);
    }

    #[test]
    fn a_new_node_name_reissues_the_certificates_that_carry_it() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let mut config = config(dir.path());
        config.node_name = "other-node".to_string();
        let outcomes = ensure(&config).unwrap();
        let changed: Vec<&str> = changes(&outcomes)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            changed,
            vec!["apiserver", "etcd/server", "etcd/peer", "kubelet"]
        );
        let subject_changed = Action::Reissued(ReissueReason::SubjectChanged {
            found: format!("CN={NODE}"),
        });
        assert_eq!(
            outcomes
                .iter()
                .find(|o| o.name == "etcd/server")
                .unwrap()
                .action,
            subject_changed
        );
        assert_eq!(
            cert(dir.path(), "etcd/server").subject_text(),
            "CN=other-node"
        );
    }

    #[test]
    fn a_replaced_ca_reissues_its_leaves_only() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let before = snapshot(dir.path());
        fs::remove_file(store::cert_path(dir.path(), "etcd/ca")).unwrap();
        fs::remove_file(store::key_path(dir.path(), "etcd/ca")).unwrap();
        let outcomes = ensure(&config(dir.path())).unwrap();
        let ca_changed = Action::Reissued(ReissueReason::CaChanged);
        assert_eq!(
            changes(&outcomes),
            vec![
                ("etcd/ca", &Action::Created),
                ("etcd/server", &ca_changed),
                ("etcd/peer", &ca_changed),
                ("etcd/healthcheck-client", &ca_changed),
                ("apiserver-etcd-client", &ca_changed),
            ]
        );
        let changed = changed_files(&before, &snapshot(dir.path()));
        assert!(
            changed.iter().all(|file| file.starts_with("etcd/")
                || file.starts_with("trust/etcd/")
                || file.starts_with("apiserver-etcd-client")),
            "{changed:?}"
        );
        let etcd_ca = cert(dir.path(), "etcd/ca");
        assert!(cert(dir.path(), "etcd/server").is_signed_by(&etcd_ca));
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_an_error_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        // A foreign key next to our CA certificate, e.g. a restore gone wrong.
        fs::copy(
            store::key_path(dir.path(), "front-proxy-ca"),
            store::key_path(dir.path(), "ca"),
        )
        .unwrap();
        let before = snapshot(dir.path());
        let err = ensure(&config(dir.path())).unwrap_err();
        assert!(
            matches!(&err, PkiError::CaKeyMismatch { name, .. } if name == "ca"),
            "{err}"
        );
        assert!(
            err.to_string().contains("restore the matching key"),
            "{err}"
        );
        assert_eq!(
            changed_files(&before, &snapshot(dir.path())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_ca_without_its_key_or_that_is_no_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        fs::remove_file(store::key_path(dir.path(), "ca")).unwrap();
        assert!(matches!(
            ensure(&config(dir.path())),
            Err(PkiError::CaKeyMissing { .. })
        ));

        let other = tempfile::tempdir().unwrap();
        ensure(&config(other.path())).unwrap();
        for extension in ["crt", "key"] {
            let from = other.path().join(format!("apiserver.{extension}"));
            fs::copy(
                from,
                other.path().join(format!("front-proxy-ca.{extension}")),
            )
            .unwrap();
        }
        let err = ensure(&config(other.path())).unwrap_err();
        assert!(
            matches!(&err, PkiError::NotACa { name, .. } if name == "front-proxy-ca"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_key_without_certificate_gets_its_certificate_back() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let key_before = fs::read(store::key_path(dir.path(), "ca")).unwrap();
        fs::remove_file(store::cert_path(dir.path(), "ca")).unwrap();
        let outcomes = ensure(&config(dir.path())).unwrap();
        // Same key, so everything it signed still chains to the new certificate.
        assert_eq!(changes(&outcomes), vec![("ca", &Action::Created)]);
        assert_eq!(
            fs::read(store::key_path(dir.path(), "ca")).unwrap(),
            key_before
        );
        assert!(cert(dir.path(), "apiserver").is_signed_by(&cert(dir.path(), "ca")));
    }

    #[test]
    fn leaves_within_the_renewal_window_are_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.leaf_validity = Some(Duration::days(30));
        ensure(&config).unwrap();
        let outcomes = ensure(&config).unwrap();
        let reissued: Vec<&str> = changes(&outcomes)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(reissued, LEAVES);
        assert!(
            outcomes
                .iter()
                .filter(|o| LEAVES.contains(&o.name.as_str()))
                .all(|o| matches!(
                    o.action,
                    Action::Reissued(ReissueReason::Expiring { days_left: 29..=30 })
                ))
        );
        // With a window shorter than what is left, they are kept.
        config.renew_within = Duration::days(7);
        assert_eq!(changes(&ensure(&config).unwrap()), vec![]);
    }

    #[test]
    fn a_leaf_key_missing_or_not_matching_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        fs::remove_file(store::key_path(dir.path(), "front-proxy-client")).unwrap();
        fs::copy(
            store::key_path(dir.path(), "etcd/peer"),
            store::key_path(dir.path(), "etcd/server"),
        )
        .unwrap();
        fs::write(
            store::cert_path(dir.path(), "apiserver-etcd-client"),
            b"garbage",
        )
        .unwrap();
        let outcomes = ensure(&config(dir.path())).unwrap();
        let changes: Vec<(&str, String)> = changes(&outcomes)
            .into_iter()
            .map(|(n, a)| (n, a.to_string()))
            .collect();
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(
            changes[0],
            ("front-proxy-client", "reissued (key missing)".to_string())
        );
        assert_eq!(
            changes[1],
            ("etcd/server", "reissued (key does not match)".to_string())
        );
        assert_eq!(changes[2].0, "apiserver-etcd-client");
        assert!(
            changes[2]
                .1
                .starts_with("reissued (certificate unreadable: it is not PEM text"),
            "{changes:?}"
        );
    }

    #[test]
    fn the_service_account_key_is_kept_and_its_public_half_repaired() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let key_before = fs::read(store::key_path(dir.path(), "sa")).unwrap();
        let public_before = fs::read(store::service_account_public_path(dir.path())).unwrap();
        fs::copy(
            store::cert_path(dir.path(), "ca"),
            store::service_account_public_path(dir.path()),
        )
        .unwrap();
        let outcomes = ensure(&config(dir.path())).unwrap();
        assert_eq!(changes(&outcomes).len(), 1);
        assert_eq!(changes(&outcomes)[0].0, "sa.pub");
        assert_eq!(
            fs::read(store::key_path(dir.path(), "sa")).unwrap(),
            key_before
        );
        assert_eq!(
            fs::read(store::service_account_public_path(dir.path())).unwrap(),
            public_before
        );
    }

    #[test]
    fn rsa_keys_are_made_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.key_algorithm = KeyAlgorithm::Rsa2048;
        ensure(&config).unwrap();
        for name in ["ca", "apiserver", "etcd/server"] {
            assert_eq!(
                cert(dir.path(), name).key_algorithm(),
                Some(KeyAlgorithm::Rsa2048),
                "{name}"
            );
        }
        let sa = key_from_pem(&fs::read(store::key_path(dir.path(), "sa")).unwrap()).unwrap();
        assert_eq!(sa.algorithm(), &rcgen::PKCS_RSA_SHA256);
        // Asking for ECDSA later keeps the RSA files: keys are never swapped for
        // their algorithm alone.
        config.key_algorithm = KeyAlgorithm::EcdsaP256;
        assert_eq!(changes(&ensure(&config).unwrap()), vec![]);
    }

    #[test]
    fn a_validity_out_of_range_is_an_error_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let mut config = config(&pki);
        for days in [i64::from(u32::MAX), MAX_VALIDITY_DAYS + 1, 0] {
            config.leaf_validity = Some(Duration::days(days));
            let err = ensure(&config).unwrap_err();
            assert!(
                matches!(err, PkiError::InvalidValidity { days: found } if found == days),
                "{err}"
            );
            assert!(
                err.to_string().contains("between 1 and 36500 days"),
                "{err}"
            );
        }
        assert!(!pki.exists());
        config.leaf_validity = Some(Duration::days(MAX_VALIDITY_DAYS));
        ensure(&config).unwrap();
        let days = (cert(&pki, "apiserver").not_after - OffsetDateTime::now_utc()).whole_days();
        assert_eq!(days, MAX_VALIDITY_DAYS - 1);
    }

    #[test]
    fn invalid_settings_are_rejected_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let mut config = config(&pki);
        config.node_name = "Desktop_1".to_string();
        let err = ensure(&config).unwrap_err();
        assert!(matches!(err, PkiError::InvalidNodeName(_)), "{err}");
        config.node_name = NODE.to_string();
        config.dns_domain = "bad domain".to_string();
        assert!(matches!(
            ensure(&config),
            Err(PkiError::InvalidDnsDomain(_))
        ));
        assert!(!pki.exists());
    }
}

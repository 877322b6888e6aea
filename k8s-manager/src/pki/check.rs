//! `check`: every declared certificate's state, for `certs check` and for the
//! daemon's status. It judges with the same functions `ensure` uses, so that
//! what `ensure` would re-issue or refuse is never reported as ok.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::assess;
use super::ca::{self, FoundCa};
use super::inspect::CertInfo;
use super::spec::{CertSpec, PkiDeclaration};
use super::{PkiError, ReissueReason, days_left, store};

/// One certificate of the PKI folder and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    pub name: String,
    /// The signing CA's name; `None` for a CA.
    pub ca: Option<String>,
    /// `None` when the certificate is missing or cannot be used.
    pub not_after: Option<OffsetDateTime>,
    pub days_left: Option<i64>,
    pub state: CertState,
    /// What is wrong, in the user's terms, and what to do: set when the state
    /// is [`CertState::Invalid`]. It names the file, so it reads on its own.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    Ok,
    /// Expires within the renewal window: the next `ensure` re-issues it (a
    /// CA: plan a reset).
    RenewSoon,
    Expired,
    Missing,
    /// There but unusable: unreadable, a key that is missing or not its own,
    /// signed by another CA, a CA that may not sign, ...
    Invalid,
}

impl CertState {
    pub fn name(self) -> &'static str {
        match self {
            CertState::Ok => "ok",
            CertState::RenewSoon => "renew-soon",
            CertState::Expired => "expired",
            CertState::Missing => "missing",
            CertState::Invalid => "invalid",
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state of every declared certificate in `pki_dir` at `now`, in
/// declaration order. A CA is judged as `ensure` judges it before it signs
/// with it, a leaf as `ensure` judges it before it looks at the settings
/// (subject and names depend on them; `check` has none).
pub fn check(
    pki_dir: &Path,
    now: OffsetDateTime,
    renew_within: Duration,
) -> Result<Vec<CertStatus>, PkiError> {
    let declaration = PkiDeclaration::embedded()?;
    let mut cas: HashMap<&str, (CertStatus, Option<CertInfo>)> = HashMap::new();
    for spec in declaration.cas() {
        cas.insert(&spec.name, ca_status(pki_dir, spec, now, renew_within));
    }
    Ok(declaration
        .certificates
        .iter()
        .map(|spec| match (&spec.ca, cas.get(spec.name.as_str())) {
            (None, Some((status, _))) => status.clone(),
            (ca_name, _) => {
                let ca_name = ca_name.as_deref().unwrap_or_default();
                let ca = cas.get(ca_name).and_then(|(_, info)| info.as_ref());
                leaf_status(pki_dir, spec, ca, now, renew_within)
            }
        })
        .collect())
}

/// A CA's status, and its certificate when it may sign.
fn ca_status(
    pki_dir: &Path,
    spec: &CertSpec,
    now: OffsetDateTime,
    renew_within: Duration,
) -> (CertStatus, Option<CertInfo>) {
    match ca::find(pki_dir, &spec.name, now) {
        Ok(FoundCa::Usable(ca)) => (
            dated(spec, ca.info.not_after, now, renew_within),
            Some(ca.info),
        ),
        // A key alone: `ensure` makes its certificate.
        Ok(FoundCa::KeyOnly(_) | FoundCa::Missing) => (missing(spec), None),
        Err(PkiError::CaExpired { not_after, .. }) => {
            (dated(spec, not_after, now, renew_within), None)
        }
        Err(err) => (invalid(spec, err.to_string()), None),
    }
}

/// A leaf's status; `ca` is its CA's certificate, `None` when the CA is
/// missing or may not sign.
fn leaf_status(
    pki_dir: &Path,
    spec: &CertSpec,
    ca: Option<&CertInfo>,
    now: OffsetDateTime,
    renew_within: Duration,
) -> CertStatus {
    let (cert_pem, key_pem) = match (
        store::read_cert(pki_dir, &spec.name),
        store::read_key(pki_dir, &spec.name),
    ) {
        (Ok(None), _) => return missing(spec),
        (Ok(Some(cert_pem)), Ok(key_pem)) => (cert_pem, key_pem),
        (Err(err), _) | (_, Err(err)) => return invalid(spec, err.to_string()),
    };
    match assess::sound_leaf(&cert_pem, key_pem.as_deref(), spec, ca, now) {
        Ok(cert) => dated(spec, cert.not_after, now, renew_within),
        Err(reason) => invalid(spec, leaf_problem(pki_dir, spec, ca.is_some(), &reason)),
    }
}

/// Why a leaf is invalid, with the files named and what to do.
fn leaf_problem(
    pki_dir: &Path,
    spec: &CertSpec,
    ca_usable: bool,
    reason: &ReissueReason,
) -> String {
    let name = &spec.name;
    let ca_name = spec.ca.as_deref().unwrap_or_default();
    let cert = store::cert_path(pki_dir, name);
    let cert = cert.display();
    let key = store::key_path(pki_dir, name);
    let key = key.display();
    let generate = "`k8s-manager certs generate`";
    match reason {
        ReissueReason::CaChanged if !ca_usable => format!(
            "{cert} cannot be trusted while its CA {ca_name} is missing or unusable; fix the CA first, then run {generate} to re-issue it"
        ),
        ReissueReason::CaChanged => format!(
            "{cert} is not signed by the CA {ca_name} ({}); run {generate} to re-issue it",
            store::cert_path(pki_dir, ca_name).display()
        ),
        ReissueReason::CertUnreadable(bad) => {
            format!("{cert} is not a readable certificate ({bad}); run {generate} to make it again")
        }
        ReissueReason::KeyMissing => {
            format!("the key {key} of {cert} is missing; run {generate} to re-issue both")
        }
        ReissueReason::KeyUnreadable(bad) => format!(
            "{key} is not a readable private key ({bad}); run {generate} to re-issue it and {cert}"
        ),
        ReissueReason::KeyMismatch => {
            format!("{key} does not belong to {cert}; run {generate} to re-issue both")
        }
        ReissueReason::UsagesChanged => format!(
            "{cert} does not have the key usages declared for {name}; run {generate} to re-issue it"
        ),
        ReissueReason::NotYetValid { not_before } => format!(
            "{cert} is not valid before {not_before}; check this machine's clock, or run {generate} to re-issue it"
        ),
        other => format!("{cert}: {other}; run {generate} to re-issue it"),
    }
}

/// The status of a usable certificate, by its expiry.
fn dated(
    spec: &CertSpec,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    renew_within: Duration,
) -> CertStatus {
    let state = if not_after <= now {
        CertState::Expired
    } else if not_after - now < renew_within {
        CertState::RenewSoon
    } else {
        CertState::Ok
    };
    CertStatus {
        not_after: Some(not_after),
        days_left: Some(days_left(not_after, now)),
        state,
        ..missing(spec)
    }
}

/// The status of a kubeconfig's client certificate, shown under `file`
/// (`admin.conf`): `credentials` are the embedded certificate and key
/// (`None` inside when the file holds none), `ca_pem` its CA's certificate.
pub(super) fn client_status(
    file: &str,
    spec: &CertSpec,
    credentials: Option<Option<(Vec<u8>, Vec<u8>)>>,
    ca_pem: Option<&[u8]>,
    now: OffsetDateTime,
    renew_within: Duration,
) -> CertStatus {
    let named = CertSpec {
        name: file.to_string(),
        ..spec.clone()
    };
    let Some(credentials) = credentials else {
        return missing(&named);
    };
    let Some((cert_pem, key_pem)) = credentials else {
        return invalid(
            &named,
            format!(
                "{file} holds no embedded client certificate and key; the next enable writes it again"
            ),
        );
    };
    let ca = ca_pem.and_then(|pem| CertInfo::from_pem(pem).ok());
    match assess::sound_leaf(&cert_pem, Some(&key_pem), spec, ca.as_ref(), now) {
        Ok(cert) => dated(&named, cert.not_after, now, renew_within),
        Err(reason) => invalid(
            &named,
            format!(
                "{file}: {reason}; the next enable or `k8s-manager certs renew` writes it again"
            ),
        ),
    }
}

fn missing(spec: &CertSpec) -> CertStatus {
    CertStatus {
        name: spec.name.clone(),
        ca: spec.ca.clone(),
        not_after: None,
        days_left: None,
        state: CertState::Missing,
        problem: None,
    }
}

fn invalid(spec: &CertSpec, problem: String) -> CertStatus {
    CertStatus {
        state: CertState::Invalid,
        problem: Some(problem),
        ..missing(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ca::CaMaterial;
    use super::super::issue::{CertRequest, KeyAlgorithm, Subject, generate_key};
    use super::super::testutil::{NODE, config};
    use super::super::{DEFAULT_RENEW_WITHIN, ensure};
    use super::*;

    fn status_of(statuses: &[CertStatus], name: &str) -> CertState {
        statuses.iter().find(|s| s.name == name).unwrap().state
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
            statuses.iter().all(|s| s.state == CertState::Ok),
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
            CertState::Ok
        );
        assert_eq!(
            status_of(&at(not_after - DEFAULT_RENEW_WITHIN + second), "apiserver"),
            CertState::RenewSoon
        );
        assert_eq!(
            status_of(&at(not_after - second), "apiserver"),
            CertState::RenewSoon
        );
        let expired = at(not_after);
        assert_eq!(status_of(&expired, "apiserver"), CertState::Expired);
        assert_eq!(status_of(&expired, "ca"), CertState::Ok);
        let much_later = at(not_after + Duration::days(10));
        let apiserver_later = much_later.iter().find(|s| s.name == "apiserver").unwrap();
        assert_eq!(apiserver_later.days_left, Some(-10));
    }

    /// The state and problem of `name`.
    fn judged(statuses: &[CertStatus], name: &str) -> (CertState, String) {
        let status = statuses.iter().find(|s| s.name == name).unwrap();
        (status.state, status.problem.clone().unwrap_or_default())
    }

    fn check_now(dir: &Path) -> Vec<CertStatus> {
        check(dir, OffsetDateTime::now_utc(), DEFAULT_RENEW_WITHIN).unwrap()
    }

    /// A PKI in `dir`, and another one (its own CAs) beside it.
    fn two_pkis() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
        ensure(&config(&ours)).unwrap();
        ensure(&config(&theirs)).unwrap();
        (dir, ours, theirs)
    }

    /// The other certificates are still judged on their own.
    fn only_invalid(statuses: &[CertStatus]) -> Vec<&str> {
        statuses
            .iter()
            .filter(|s| s.state != CertState::Ok)
            .map(|s| {
                assert_eq!(s.state, CertState::Invalid, "{s:?}");
                s.name.as_str()
            })
            .collect()
    }

    #[test]
    fn missing_certificates_are_reported_and_garbage_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let empty = check_now(dir.path());
        assert!(
            empty
                .iter()
                .all(|s| s.state == CertState::Missing && s.not_after.is_none())
        );
        ensure(&config(dir.path())).unwrap();
        std::fs::write(
            store::cert_path(dir.path(), "apiserver"),
            b"not a certificate",
        )
        .unwrap();
        let statuses = check_now(dir.path());
        assert_eq!(only_invalid(&statuses), ["apiserver"]);
        let (_, problem) = judged(&statuses, "apiserver");
        assert!(
            problem.contains("apiserver.crt is not a readable certificate (it is not PEM text)")
                && problem.ends_with("run `k8s-manager certs generate` to make it again"),
            "{problem}"
        );
    }

    #[test]
    fn a_leaf_key_of_another_pki_is_invalid_and_not_quoted() {
        let (_dir, ours, theirs) = two_pkis();
        let foreign_key = std::fs::read_to_string(store::key_path(&theirs, "apiserver")).unwrap();
        std::fs::write(store::key_path(&ours, "apiserver"), &foreign_key).unwrap();
        let statuses = check_now(&ours);
        assert_eq!(only_invalid(&statuses), ["apiserver"]);
        let (_, problem) = judged(&statuses, "apiserver");
        assert!(
            problem.contains("apiserver.key does not belong to")
                && problem.contains("run `k8s-manager certs generate` to re-issue both"),
            "{problem}"
        );
        let secret_line = foreign_key.lines().nth(1).unwrap();
        assert!(!problem.contains(secret_line), "{problem}");
    }

    #[test]
    fn a_leaf_signed_by_another_ca_is_invalid() {
        let (_dir, ours, theirs) = two_pkis();
        for path in [store::cert_path, store::key_path] {
            std::fs::copy(path(&theirs, "etcd/peer"), path(&ours, "etcd/peer")).unwrap();
        }
        let statuses = check_now(&ours);
        assert_eq!(only_invalid(&statuses), ["etcd/peer"]);
        let (_, problem) = judged(&statuses, "etcd/peer");
        assert!(
            problem.contains("etcd/peer.crt is not signed by the CA etcd/ca"),
            "{problem}"
        );
    }

    #[test]
    fn a_ca_certificate_not_matching_its_key_makes_it_and_its_leaves_invalid() {
        let (_dir, ours, theirs) = two_pkis();
        std::fs::copy(
            store::cert_path(&theirs, "ca"),
            store::cert_path(&ours, "ca"),
        )
        .unwrap();
        let statuses = check_now(&ours);
        assert_eq!(
            only_invalid(&statuses),
            ["ca", "apiserver", "apiserver-kubelet-client", "kubelet"]
        );
        let (_, problem) = judged(&statuses, "ca");
        assert!(
            problem.contains("the key") && problem.contains("does not belong to the certificate"),
            "{problem}"
        );
        let (_, problem) = judged(&statuses, "kubelet");
        assert!(
            problem
                .contains("kubelet.crt cannot be trusted while its CA ca is missing or unusable"),
            "{problem}"
        );
    }

    #[test]
    fn truncated_missing_misplaced_and_linked_keys_are_invalid() {
        let (_dir, ours, theirs) = two_pkis();
        let key = |name| store::key_path(&ours, name);
        let pem = std::fs::read(key("apiserver")).unwrap();
        std::fs::write(key("apiserver"), &pem[..pem.len() / 2]).unwrap();
        std::fs::remove_file(key("etcd/server")).unwrap();
        std::fs::copy(store::cert_path(&ours, "kubelet"), key("kubelet")).unwrap();
        std::fs::remove_file(key("front-proxy-client")).unwrap();
        std::os::unix::fs::symlink(
            store::key_path(&theirs, "front-proxy-client"),
            key("front-proxy-client"),
        )
        .unwrap();
        let statuses = check_now(&ours);
        assert_eq!(
            only_invalid(&statuses),
            ["apiserver", "front-proxy-client", "etcd/server", "kubelet"]
        );
        for (name, expected) in [
            (
                "apiserver",
                "apiserver.key is not a readable private key (it is cut short",
            ),
            ("etcd/server", "etcd/server.key of"),
            (
                "kubelet",
                "kubelet.key is not a readable private key (it holds a certificate, not a private key)",
            ),
            (
                "front-proxy-client",
                "front-proxy-client.key is a symbolic link",
            ),
        ] {
            let (_, problem) = judged(&statuses, name);
            assert!(problem.contains(expected), "{name}: {problem}");
        }
    }

    #[test]
    fn a_leaf_in_place_of_a_ca_is_invalid() {
        let (_dir, ours, _theirs) = two_pkis();
        for path in [store::cert_path, store::key_path] {
            std::fs::copy(
                path(&ours, "front-proxy-client"),
                path(&ours, "front-proxy-ca"),
            )
            .unwrap();
        }
        let statuses = check_now(&ours);
        assert_eq!(
            only_invalid(&statuses),
            ["front-proxy-ca", "front-proxy-client"]
        );
        let (_, problem) = judged(&statuses, "front-proxy-ca");
        assert!(problem.contains("is not a CA certificate"), "{problem}");
    }

    #[test]
    fn a_leaf_not_valid_yet_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        ensure(&config(dir.path())).unwrap();
        let now = OffsetDateTime::now_utc();
        let declaration = PkiDeclaration::embedded().unwrap();
        let spec = declaration.certificate("apiserver-kubelet-client").unwrap();
        let request = CertRequest {
            spec,
            subject: Subject::for_node(spec, NODE),
            sans: Vec::new(),
            validity: Duration::days(365),
            now: now + Duration::days(2),
        };
        let ca = CaMaterial::load(dir.path(), "ca", now).unwrap();
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let cert = request.signed_by(&key, &ca.issuer().unwrap()).unwrap();
        let name = &spec.name;
        std::fs::write(store::cert_path(dir.path(), name), cert).unwrap();
        std::fs::write(store::key_path(dir.path(), name), key.serialize_pem()).unwrap();
        let statuses = check_now(dir.path());
        assert_eq!(only_invalid(&statuses), [name.as_str()]);
        assert!(judged(&statuses, name).1.contains("is not valid before"));
    }
}

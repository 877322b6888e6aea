//! The cluster CAs replaced on a running cluster (`certs rotate-ca`): the
//! files of each step, and the trust bundles the components read.
//!
//! Each CA (`ca`, `front-proxy-ca`, `etcd/ca`) has two roles, kept in two
//! files so that they can differ during a rotation:
//!
//! - it signs: `<name>.crt` and `<name>.key` (the controller-manager's
//!   `--cluster-signing-*` and every leaf and kubeconfig client certificate
//!   made here); always a single CA;
//! - it is trusted: `trust/<name>.crt`, a bundle read by every flag that
//!   verifies a peer (`--client-ca-file`, `--requestheader-client-ca-file`,
//!   etcd's `--trusted-ca-file`, `--etcd-cafile`, the kubelet's
//!   `clientCAFile`, `--root-ca-file`, which fills every namespace's
//!   `kube-root-ca.crt`) and embedded in every kubeconfig.
//!
//! Outside a rotation the bundle is the CA itself ([`sync_trust`]). A rotation
//! goes through [`Step`]s, each recorded in `rotate-ca/step` once its files are
//! written (atomically) and each idempotent, so that a crash at any point is
//! resumed by running the current step again:
//!
//! 1. [`Step::New`]: the old CAs are copied to `rotate-ca/old/`, new ones made
//!    in `rotate-ca/new/`; nothing the components read changed;
//! 2. [`Step::TrustBoth`]: each bundle holds the old and the new CA;
//! 3. [`Step::Switched`]: the new CAs sign (`<name>.crt`/`.key`); the caller
//!    re-issues every leaf and kubeconfig under them;
//! 4. [`Step::TrustNew`]: each bundle holds the new CA only;
//! 5. [`finish`]: the rotation folder is removed.
//!
//! The service-account key pair is not a CA and is never touched: tokens
//! signed before the rotation stay valid.

use std::fmt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::inspect::CertInfo;
use super::issue::{CertRequest, KeyAlgorithm, Subject, generate_key};
use super::spec::PkiDeclaration;
use super::{PkiError, ca, ca_validity, store};

/// The CAs a rotation replaces.
pub const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd/ca"];

/// The folder of a rotation in progress, inside the PKI folder.
const ROTATION_DIR: &str = "rotate-ca";
/// The folder of the trust bundles, inside the PKI folder.
const TRUST_DIR: &str = "trust";

/// Where a rotation is; recorded once the step's files are all written.
/// Serialised as in the step file (`trust-both`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    New,
    TrustBoth,
    Switched,
    TrustNew,
}

impl Step {
    const ALL: [Step; 4] = [Step::New, Step::TrustBoth, Step::Switched, Step::TrustNew];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::New => "new",
            Step::TrustBoth => "trust-both",
            Step::Switched => "switched",
            Step::TrustNew => "trust-new",
        }
    }

    /// The step a step file's text names (surrounding whitespace allowed).
    pub fn parse(text: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == text.trim())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The trust bundle of the CA `name` (`trust/etcd/ca.crt`).
pub fn trust_path(pki_dir: &Path, name: &str) -> PathBuf {
    store::cert_path(&pki_dir.join(TRUST_DIR), name)
}

fn rotation_dir(pki_dir: &Path) -> PathBuf {
    pki_dir.join(ROTATION_DIR)
}

fn step_path(pki_dir: &Path) -> PathBuf {
    rotation_dir(pki_dir).join("step")
}

fn old_dir(pki_dir: &Path) -> PathBuf {
    rotation_dir(pki_dir).join("old")
}

fn new_dir(pki_dir: &Path) -> PathBuf {
    rotation_dir(pki_dir).join("new")
}

/// The step of the rotation in progress, if one is.
pub fn current(pki_dir: &Path) -> Result<Option<Step>, PkiError> {
    let Some(bytes) =
        store::read_optional(pki_dir, Path::new(ROTATION_DIR).join("step").as_path())?
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    Step::parse(&text)
        .map(Some)
        .ok_or_else(|| PkiError::Unreadable {
            path: step_path(pki_dir),
            what: "CA rotation step",
            reason: super::BadPem::Malformed("a step name"),
        })
}

fn record(pki_dir: &Path, step: Step) -> Result<(), PkiError> {
    store::write(
        &step_path(pki_dir),
        format!("{step}\n").as_bytes(),
        store::PUBLIC_MODE,
    )
}

/// The trust bundle of `name` as it should be outside a rotation: the CA
/// certificate itself. Written when it differs (a new PKI, an upgrade from a
/// version without bundles); left alone while a rotation is in progress.
pub fn sync_trust(pki_dir: &Path) -> Result<(), PkiError> {
    if current(pki_dir)?.is_some() {
        return Ok(());
    }
    for name in CAS {
        let Some(cert) = store::read_cert(pki_dir, name)? else {
            continue;
        };
        write_trust(pki_dir, name, &cert)?;
    }
    Ok(())
}

/// The bundle that verifies what `name` signed: its trust file when there is
/// one, else the CA certificate.
pub fn trust_bundle(pki_dir: &Path, name: &str, ca_pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    let relative = Path::new(TRUST_DIR).join(store::cert_file(name));
    Ok(store::read_optional(pki_dir, &relative)?.unwrap_or_else(|| ca_pem.to_vec()))
}

fn write_trust(pki_dir: &Path, name: &str, bundle: &[u8]) -> Result<(), PkiError> {
    let trust_dir = pki_dir.join(TRUST_DIR);
    store::prepare_dirs(&trust_dir, [name])?;
    let path = trust_path(pki_dir, name);
    if store::read_optional(&trust_dir, &store::cert_file(name))?.as_deref() == Some(bundle) {
        return Ok(());
    }
    store::write(&path, bundle, store::PUBLIC_MODE)
}

/// Step 1: copies the CAs aside and makes the new ones. Returns the step the
/// rotation is at (a rotation already in progress is not started again).
pub fn begin(pki_dir: &Path, key_algorithm: KeyAlgorithm) -> Result<Step, PkiError> {
    if let Some(step) = current(pki_dir)? {
        return Ok(step);
    }
    let declaration = PkiDeclaration::embedded()?;
    let now = OffsetDateTime::now_utc();
    let (old, new) = (old_dir(pki_dir), new_dir(pki_dir));
    store::prepare_dirs(&old, CAS)?;
    store::prepare_dirs(&new, CAS)?;
    for name in CAS {
        // Checked: only a usable CA is rotated away from.
        let current = ca::CaMaterial::load(pki_dir, name, now)?;
        let key_pem = store::read_key(pki_dir, name)?.unwrap_or_default();
        store::write_groups(&[store::key_and_cert(
            &old,
            name,
            &String::from_utf8_lossy(&key_pem),
            &String::from_utf8_lossy(&current.cert_pem),
        )])?;
        let spec = declaration
            .certificate(name)
            .ok_or_else(|| PkiError::UnknownCertificate {
                name: name.to_string(),
                known: Vec::new(),
            })?;
        let request = CertRequest {
            spec,
            subject: Subject::for_node(spec, "node"),
            sans: Vec::new(),
            validity: ca_validity(&declaration),
            now,
        };
        let key = generate_key(key_algorithm).map_err(|source| PkiError::Issue {
            name: name.to_string(),
            source,
        })?;
        let cert_pem = request
            .self_signed(&key)
            .map_err(|source| PkiError::Issue {
                name: name.to_string(),
                source,
            })?;
        store::write_groups(&[store::key_and_cert(
            &new,
            name,
            &key.serialize_pem(),
            &cert_pem,
        )])?;
    }
    record(pki_dir, Step::New)?;
    Ok(Step::New)
}

fn saved(dir: &Path, name: &str) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let missing = || PkiError::CertificateMissing {
        name: name.to_string(),
        path: store::cert_path(dir, name),
    };
    let cert = store::read_cert(dir, name)?.ok_or_else(missing)?;
    let key = store::read_key(dir, name)?.ok_or_else(missing)?;
    Ok((cert, key))
}

fn bundle(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = first.to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(second);
    out
}

/// The certificate of the CA `name` that a rotation moves to: the new one of
/// the rotation in progress, else the one that signs now.
pub fn new_ca(pki_dir: &Path, name: &str) -> Result<Vec<u8>, PkiError> {
    let dir = if current(pki_dir)?.is_some() {
        new_dir(pki_dir)
    } else {
        pki_dir.to_path_buf()
    };
    Ok(saved(&dir, name)?.0)
}

/// Step 2: every bundle trusts the old and the new CA.
pub fn trust_both(pki_dir: &Path) -> Result<(), PkiError> {
    for name in CAS {
        let (old, _) = saved(&old_dir(pki_dir), name)?;
        let (new, _) = saved(&new_dir(pki_dir), name)?;
        write_trust(pki_dir, name, &bundle(&old, &new))?;
    }
    record(pki_dir, Step::TrustBoth)
}

/// Step 3: the new CAs sign. The leaves are re-issued by the caller (or, after
/// a crash, by the next enable: a leaf not signed by its CA is re-issued).
pub fn switch(pki_dir: &Path) -> Result<(), PkiError> {
    for name in CAS {
        let (cert, key) = saved(&new_dir(pki_dir), name)?;
        store::write_groups(&[store::key_and_cert(
            pki_dir,
            name,
            &String::from_utf8_lossy(&key),
            &String::from_utf8_lossy(&cert),
        )])?;
    }
    record(pki_dir, Step::Switched)
}

/// Step 4: every bundle trusts the new CA only.
pub fn trust_new(pki_dir: &Path) -> Result<(), PkiError> {
    for name in CAS {
        let (new, _) = saved(&new_dir(pki_dir), name)?;
        write_trust(pki_dir, name, &new)?;
    }
    record(pki_dir, Step::TrustNew)
}

/// Step 5: the rotation is over; its folder (old keys included) removed.
pub fn finish(pki_dir: &Path) -> Result<(), PkiError> {
    let dir = rotation_dir(pki_dir);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PkiError::Io {
            action: "remove",
            path: dir,
            source,
        }),
    }
}

/// The certificates (PEM blocks) of a bundle, parsed.
pub fn bundle_certs(pem: &[u8]) -> Vec<CertInfo> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let end = "-----END CERTIFICATE-----";
    let mut rest = text.as_ref();
    while let Some(at) = rest.find(end) {
        let block = &rest[..at + end.len()];
        if let Ok(info) = CertInfo::from_pem(block.trim().as_bytes()) {
            out.push(info);
        }
        rest = &rest[at + end.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{PkiConfig, ensure};
    use super::*;

    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let config = PkiConfig::new(dir.path(), "node", "10.0.0.2".parse().unwrap());
        ensure(&config).unwrap();
        dir
    }

    fn ca_der(dir: &Path, name: &str) -> Vec<u8> {
        CertInfo::from_pem(&store::read_cert(dir, name).unwrap().unwrap())
            .unwrap()
            .der
    }

    fn trusted(dir: &Path, name: &str) -> Vec<Vec<u8>> {
        bundle_certs(&std::fs::read(trust_path(dir, name)).unwrap())
            .into_iter()
            .map(|c| c.der)
            .collect()
    }

    #[test]
    fn the_step_is_read_from_its_file_and_none_outside_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // No PKI folder at all, then one without a rotation.
        assert_eq!(current(&p.join("pki")).unwrap(), None);
        assert_eq!(current(p).unwrap(), None);
        std::fs::create_dir_all(p.join(ROTATION_DIR)).unwrap();
        assert_eq!(current(p).unwrap(), None, "a folder without its step");
        for step in Step::ALL {
            record(p, step).unwrap();
            assert_eq!(current(p).unwrap(), Some(step));
            // What status says is the file's own word.
            assert_eq!(
                serde_json::to_value(step).unwrap(),
                serde_json::json!(step.to_string())
            );
            let text = std::fs::read_to_string(step_path(p)).unwrap();
            assert_eq!(Step::parse(&text), Some(step));
        }
        assert_eq!(Step::parse(" trust-new \r\n"), Some(Step::TrustNew));
        for bad in ["", "finish", "Trust-Both", "trust both"] {
            assert_eq!(Step::parse(bad), None, "{bad:?}");
        }
        std::fs::write(step_path(p), "halfway\n").unwrap();
        let err = current(p).unwrap_err().to_string();
        assert!(err.contains("rotate-ca/step"), "{err}");
    }

    #[test]
    fn outside_a_rotation_each_ca_trusts_itself() {
        let dir = pki();
        for name in CAS {
            assert_eq!(trusted(dir.path(), name), [ca_der(dir.path(), name)]);
        }
    }

    #[test]
    fn a_rotation_trusts_both_then_signs_with_new_then_trusts_new_only() {
        let dir = pki();
        let p = dir.path();
        let old: Vec<Vec<u8>> = CAS.iter().map(|n| ca_der(p, n)).collect();
        let sa = std::fs::read(p.join("sa.key")).unwrap();
        assert_eq!(begin(p, KeyAlgorithm::default()).unwrap(), Step::New);
        // Begun again: the same rotation, not a new one.
        assert_eq!(begin(p, KeyAlgorithm::default()).unwrap(), Step::New);
        for (i, name) in CAS.iter().enumerate() {
            assert_eq!(ca_der(p, name), old[i], "{name} still signs");
            assert_eq!(trusted(p, name), [old[i].clone()]);
        }
        trust_both(p).unwrap();
        trust_both(p).unwrap();
        let new: Vec<Vec<u8>> = CAS.iter().map(|n| trusted(p, n)[1].clone()).collect();
        for (i, name) in CAS.iter().enumerate() {
            assert_eq!(trusted(p, name), [old[i].clone(), new[i].clone()]);
            assert_ne!(old[i], new[i]);
        }
        // The next enable keeps the bundles of a rotation in progress.
        sync_trust(p).unwrap();
        assert_eq!(trusted(p, "ca").len(), 2);
        switch(p).unwrap();
        assert_eq!(current(p).unwrap(), Some(Step::Switched));
        for (i, name) in CAS.iter().enumerate() {
            assert_eq!(ca_der(p, name), new[i]);
            ca::CaMaterial::load(p, name, OffsetDateTime::now_utc()).unwrap();
        }
        trust_new(p).unwrap();
        for (i, name) in CAS.iter().enumerate() {
            assert_eq!(trusted(p, name), [new[i].clone()]);
        }
        // The leaves re-issued by the next ensure are signed by the new CA.
        ensure(&PkiConfig::new(p, "node", "10.0.0.2".parse().unwrap())).unwrap();
        let ca = CertInfo::from_pem(&store::read_cert(p, "ca").unwrap().unwrap()).unwrap();
        let leaf = CertInfo::from_pem(&store::read_cert(p, "apiserver").unwrap().unwrap()).unwrap();
        assert!(leaf.is_signed_by(&ca));
        finish(p).unwrap();
        assert_eq!(current(p).unwrap(), None);
        assert!(!p.join(ROTATION_DIR).exists());
        assert_eq!(std::fs::read(p.join("sa.key")).unwrap(), sa);
    }
}

//! The bundle's images (pause, CoreDNS) go into containerd's `k8s.io`
//! namespace from their OCI archives, so that a cluster starts offline.
//!
//! A warm start must cost nothing: the archive's `index.json` names each
//! image and its manifest digest, and when containerd already has every one
//! of those references at that digest, nothing is imported. After an import
//! the references are awaited in CRI, which learns about images through
//! containerd's events: a pod started a moment too early would otherwise make
//! containerd try to pull the image from the network.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::cri::Cri;
use super::ctr::{Ctr, IMPORT_TIMEOUT};
use super::{RuntimeError, exec::Finished};

/// How long CRI may take to see an image `ctr` just created.
const CRI_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
const CRI_SYNC_POLL: Duration = Duration::from_millis(20);
/// `index.json` of an image archive is a few hundred bytes; more means this
/// is not the file we think it is.
const INDEX_MAX_BYTES: u64 = 1 << 20;

/// One image an archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveImage {
    /// Full reference, as containerd will name it (`registry.k8s.io/pause:3.10.1`).
    pub reference: String,
    /// Digest of the image's manifest (or index, for a multi-platform image).
    pub digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    /// Every reference was already there at the archive's digest.
    AlreadyPresent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub archive: PathBuf,
    pub images: Vec<ArchiveImage>,
    pub outcome: ImportOutcome,
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// containerd names an imported image after this annotation.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation; a full reference in archives made for containerd.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Imports an OCI archive into containerd's `k8s.io` namespace unless every
/// image it holds is already there at the same digest, then waits until CRI
/// sees each of its references.
pub async fn import_archive(
    ctr: &Ctr,
    cri: &Cri,
    archive: &Path,
) -> Result<ImportReport, RuntimeError> {
    let images = archive_images(archive).await?;
    let present = ctr.image_digests().await?;
    if missing_images(&images, &present).is_empty() {
        return Ok(ImportReport {
            archive: archive.to_path_buf(),
            images,
            outcome: ImportOutcome::AlreadyPresent,
        });
    }
    let args = [
        OsStr::new("images"),
        OsStr::new("import"),
        archive.as_os_str(),
    ];
    let finished = ctr.run(args, IMPORT_TIMEOUT).await;
    import_result(archive, finished)?;
    for image in &images {
        wait_for_cri(cri, &image.reference).await?;
    }
    Ok(ImportReport {
        archive: archive.to_path_buf(),
        images,
        outcome: ImportOutcome::Imported,
    })
}

/// Turns a failed `ctr images import` into an error naming the archive and
/// what ctr said.
fn import_result(
    archive: &Path,
    finished: Result<Finished, RuntimeError>,
) -> Result<(), RuntimeError> {
    let reason = match finished {
        Ok(run) if run.status.success() => return Ok(()),
        Ok(run) => run.output_summary(),
        Err(err) => crate::error::chain(&err),
    };
    Err(RuntimeError::Import {
        path: archive.to_path_buf(),
        reason,
    })
}

/// Makes the pause image available under the name containerd starts pod
/// sandboxes from (its CRI `sandbox_image`), tagging it when that name
/// differs. Returns the sandbox image name.
pub async fn ensure_sandbox_image(
    ctr: &Ctr,
    cri: &Cri,
    pause_reference: &str,
) -> Result<String, RuntimeError> {
    let sandbox = cri.status().await?.sandbox_image;
    let target = normalize_reference(&sandbox);
    if target == normalize_reference(pause_reference) {
        return Ok(sandbox);
    }
    // ctr knows the pause image by the literal name it was imported under.
    let digests = ctr.image_digests().await?;
    let Some(pause_digest) = digests.get(pause_reference) else {
        return Err(RuntimeError::Image {
            reference: pause_reference.to_string(),
            reason: "not in containerd's k8s.io namespace: import the bundle's pause archive first"
                .into(),
        });
    };
    if digests.get(&target) != Some(pause_digest) {
        ctr.tag(pause_reference, &target).await?;
    }
    wait_for_cri(cri, &target).await?;
    Ok(sandbox)
}

pub(crate) async fn wait_for_cri(cri: &Cri, reference: &str) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + CRI_SYNC_TIMEOUT;
    while !cri.image_present(reference).await? {
        if Instant::now() >= deadline {
            return Err(RuntimeError::Image {
                reference: reference.to_string(),
                reason: format!(
                    "containerd has it but its CRI did not list it within {CRI_SYNC_TIMEOUT:?}"
                ),
            });
        }
        tokio::time::sleep(CRI_SYNC_POLL).await;
    }
    Ok(())
}

/// The images an OCI archive holds, read from its `index.json`.
pub async fn archive_images(archive: &Path) -> Result<Vec<ArchiveImage>, RuntimeError> {
    let path = archive.to_path_buf();
    tokio::task::spawn_blocking(move || {
        read_index(&path).and_then(|index| parse_index(&path, &index))
    })
    .await
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}

/// The bytes of `index.json` in a tar, found by seeking over the blobs.
fn read_index(archive: &Path) -> Result<Vec<u8>, RuntimeError> {
    let io_error = |source| RuntimeError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let bad = |reason: String| RuntimeError::BadArchive {
        path: archive.to_path_buf(),
        reason,
    };
    let mut tar = tar::Archive::new(File::open(archive).map_err(io_error)?);
    for entry in tar
        .entries_with_seek()
        .map_err(|err| bad(err.to_string()))?
    {
        let entry = entry.map_err(|err| bad(err.to_string()))?;
        let is_index = entry
            .path()
            .map(|p| p.as_os_str() == "index.json" || p.as_os_str() == "./index.json");
        if is_index.map_err(|err| bad(err.to_string()))? {
            if entry.size() > INDEX_MAX_BYTES {
                return Err(bad(format!("index.json is {} bytes", entry.size())));
            }
            let mut bytes = Vec::new();
            entry
                .take(INDEX_MAX_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|err| bad(err.to_string()))?;
            return Ok(bytes);
        }
    }
    Err(bad(
        "no index.json (a docker-save archive? the bundle carries OCI layouts)".into(),
    ))
}

/// The named images of an OCI `index.json`. containerd imports a manifest
/// under its `io.containerd.image.name`, else under a full reference in
/// `org.opencontainers.image.ref.name`; an unnamed one would need a base name
/// we do not give, so it is an error here rather than a nameless image there.
pub fn parse_index(archive: &Path, index: &[u8]) -> Result<Vec<ArchiveImage>, RuntimeError> {
    let bad = |reason: String| RuntimeError::BadArchive {
        path: archive.to_path_buf(),
        reason,
    };
    let index: OciIndex =
        serde_json::from_slice(index).map_err(|err| bad(format!("index.json: {err}")))?;
    let mut images = Vec::new();
    for descriptor in index.manifests {
        let name = descriptor
            .annotations
            .get(CONTAINERD_NAME)
            .or_else(|| {
                descriptor
                    .annotations
                    .get(OCI_REF_NAME)
                    .filter(|r| r.contains('/'))
            })
            .ok_or_else(|| {
                bad(format!(
                    "manifest {} carries no full image reference annotation",
                    descriptor.digest
                ))
            })?;
        // ctr takes the name literally, so it is compared literally too.
        images.push(ArchiveImage {
            reference: name.clone(),
            digest: descriptor.digest,
        });
    }
    if images.is_empty() {
        return Err(bad("index.json lists no image".into()));
    }
    Ok(images)
}

/// The archive images containerd does not have at the archive's digest.
pub fn missing_images<'a>(
    images: &'a [ArchiveImage],
    present: &HashMap<String, String>,
) -> Vec<&'a ArchiveImage> {
    images
        .iter()
        .filter(|image| present.get(&image.reference) != Some(&image.digest))
        .collect()
}

/// The full form of an image reference, as containerd's CRI resolves it:
/// `pause:3.9` is `docker.io/library/pause:3.9`, a reference without tag or
/// digest means `:latest`. `ctr` takes names literally, so a tag made for CRI
/// must use this form.
pub fn normalize_reference(reference: &str) -> String {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (has_domain, first.is_empty()) {
        (true, _) if first == "docker.io" && !rest.contains('/') => {
            format!("docker.io/library/{rest}")
        }
        (true, _) => reference.to_string(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{reference}"),
    };
    let last_component = full.rsplit('/').next().unwrap_or_default();
    if !last_component.contains(':') && !last_component.contains('@') {
        full.push_str(":latest");
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE_DIGEST: &str =
        "sha256:40dc1fb0ce6856d444b4ca9d19d42bd5d672b9c712ac28d5d1c6eee74073fdd9";

    fn pause_index() -> String {
        format!(
            r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{PAUSE_DIGEST}","size":400,
               "annotations":{{"io.containerd.image.name":"registry.k8s.io/pause:3.10.1",
                              "org.opencontainers.image.ref.name":"registry.k8s.io/pause:3.10.1"}},
               "platform":{{"architecture":"amd64","os":"linux"}}}}],
               "mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}}"#
        )
    }

    fn write_tar(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("image.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    #[test]
    fn index_names_each_image_with_its_manifest_digest() {
        let images = parse_index(Path::new("pause.tar"), pause_index().as_bytes()).unwrap();
        assert_eq!(
            images,
            vec![ArchiveImage {
                reference: "registry.k8s.io/pause:3.10.1".into(),
                digest: PAUSE_DIGEST.into()
            }]
        );
    }

    #[test]
    fn oci_ref_name_alone_counts_only_when_it_is_a_full_reference() {
        let full = r#"{"manifests":[{"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"example.test/app:1"}}]}"#;
        assert_eq!(
            parse_index(Path::new("a.tar"), full.as_bytes()).unwrap()[0].reference,
            "example.test/app:1"
        );
        let tag_only = r#"{"manifests":[{"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"1"}}]}"#;
        let err = parse_index(Path::new("a.tar"), tag_only.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.tar: not an OCI image archive"), "{err}");
        assert!(err.contains("sha256:aa"), "{err}");
    }

    #[test]
    fn empty_or_broken_index_is_an_error_naming_the_file() {
        let err = parse_index(Path::new("x.tar"), br#"{"manifests":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.tar") && err.contains("lists no image"),
            "{err}"
        );
        let err = parse_index(Path::new("x.tar"), b"<html>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.tar") && err.contains("index.json"), "{err}");
    }

    #[test]
    fn import_needed_only_for_missing_or_different_digests() {
        let images = parse_index(Path::new("pause.tar"), pause_index().as_bytes()).unwrap();
        let mut present = HashMap::new();
        assert_eq!(missing_images(&images, &present).len(), 1, "absent: import");
        present.insert(
            "registry.k8s.io/pause:3.10.1".to_string(),
            "sha256:other".to_string(),
        );
        assert_eq!(
            missing_images(&images, &present).len(),
            1,
            "another image under that name: import"
        );
        present.insert(
            "registry.k8s.io/pause:3.10.1".to_string(),
            PAUSE_DIGEST.to_string(),
        );
        assert!(
            missing_images(&images, &present).is_empty(),
            "same digest: nothing to do"
        );
    }

    #[tokio::test]
    async fn archive_index_is_read_from_the_tar() {
        let dir = tempfile::tempdir().unwrap();
        let index = pause_index();
        let archive = write_tar(
            dir.path(),
            &[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                ("blobs/sha256/aa", &[0u8; 4096]),
                ("index.json", index.as_bytes()),
            ],
        );
        let images = archive_images(&archive).await.unwrap();
        assert_eq!(images[0].digest, PAUSE_DIGEST);
    }

    #[tokio::test]
    async fn archive_without_index_or_missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let archive = write_tar(dir.path(), &[("manifest.json", b"[]")]);
        let err = archive_images(&archive).await.unwrap_err().to_string();
        assert!(
            err.contains("image.tar") && err.contains("no index.json"),
            "{err}"
        );
        let err = crate::error::chain(
            &archive_images(&dir.path().join("nope.tar"))
                .await
                .unwrap_err(),
        );
        assert!(
            err.contains("nope.tar") && err.contains("No such file"),
            "{err}"
        );
    }

    #[test]
    fn failed_import_names_the_archive_and_what_ctr_said() {
        use std::os::unix::process::ExitStatusExt;
        let run = Finished {
            command: "ctr images import /b/images/pause.tar".into(),
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: String::new(),
            stderr: "ctr: unrecognized image format\n".into(),
        };
        let err = import_result(Path::new("/b/images/pause.tar"), Ok(run))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "importing /b/images/pause.tar into containerd failed: ctr: unrecognized image format"
        );
    }

    #[test]
    fn references_normalize_like_containerd_cri() {
        assert_eq!(
            normalize_reference("registry.k8s.io/pause:3.10.1"),
            "registry.k8s.io/pause:3.10.1"
        );
        assert_eq!(
            normalize_reference("pause:3.9"),
            "docker.io/library/pause:3.9"
        );
        assert_eq!(
            normalize_reference("rancher/pause:3.9"),
            "docker.io/rancher/pause:3.9"
        );
        assert_eq!(
            normalize_reference("docker.io/pause:3.9"),
            "docker.io/library/pause:3.9"
        );
        assert_eq!(
            normalize_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_reference("localhost/pause"),
            "localhost/pause:latest"
        );
        assert_eq!(
            normalize_reference("localhost:5000/pause:1"),
            "localhost:5000/pause:1"
        );
        assert_eq!(
            normalize_reference("example.test/app@sha256:aa"),
            "example.test/app@sha256:aa"
        );
    }
}

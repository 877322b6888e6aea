//! Docker's own image store, read in place: an image's config and, for
//! each of its layers, the exact tar Docker would export, put together from
//! the layer's files and the tar-split record Docker kept when it made the
//! layer.
//!
//! Why: `docker save` of dockerd 20.10 writes the whole image to a temporary
//! folder before it streams it, so a 200 MB image costs three passes over its
//! bytes before containerd sees the first one, and a rebuild that changed one
//! small layer moves every layer again. Read here, an image costs one pass over
//! the layers containerd lacks, and nothing for the others.
//!
//! The layout (overlay2, the driver of the VM's dockerd; another driver is
//! refused, and the sync then exports as before):
//! - `<root>/image/overlay2/imagedb/content/sha256/<id>`: the config, whose
//!   digest is the image ID; its `rootfs.diff_ids` name the layers;
//! - `<root>/image/overlay2/layerdb/sha256/<chain id>/`: `cache-id` (the
//!   layer's folder under `<root>/overlay2/`) and `tar-split.json.gz`;
//! - `<root>/overlay2/<cache-id>/diff/`: the layer's files.
//!
//! tar-split (github.com/vbatts/tar-split) records a tar as JSON lines:
//! segments (type 2, raw bytes: headers, padding, the end) and files
//! (type 1: a name and a size, whose bytes are the file's). Replaying them
//! gives the layer's tar byte for byte, so its digest is the diff ID;
//! containerd checks that digest when it writes the blob.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

/// What the store could not give, said in one line.
pub type StoreError = String;

/// The store of one dockerd, overlay2 only.
#[derive(Debug, Clone)]
pub struct DockerStore {
    /// `<root>/image/overlay2`.
    images: PathBuf,
    /// `<root>/overlay2`.
    layers: PathBuf,
}

/// An image's config as Docker stores it: what names its layers.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// The config's bytes, as stored (their digest is the image ID).
    pub bytes: Vec<u8>,
    /// The config's digest, `sha256:…`.
    pub digest: String,
    /// The layers' diff IDs, bottom layer first.
    pub diff_ids: Vec<String>,
}

/// An image as Docker stores it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The config's bytes, as stored (their digest is the image ID).
    pub config: Vec<u8>,
    /// The config's digest, `sha256:…`.
    pub config_digest: String,
    /// Bottom layer first.
    pub layers: Vec<StoredLayer>,
}

/// One layer of a stored image.
#[derive(Debug, Clone)]
pub struct StoredLayer {
    /// The digest of the layer's uncompressed tar, `sha256:…`.
    pub diff_id: String,
    /// The tar's length in bytes.
    pub size: u64,
    files: PathBuf,
    tar_split: PathBuf,
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One line of a tar-split record.
#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    /// The name's bytes, base64, when they are not UTF-8.
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: u64,
    /// A segment's bytes, base64 (a file's CRC-64, unused here).
    #[serde(default)]
    payload: Option<String>,
}

const FILE: u8 = 1;
const SEGMENT: u8 = 2;

impl DockerStore {
    /// The store under Docker's root folder `root` (`docker info`'s
    /// `DockerRootDir`) for the storage driver `driver`.
    pub fn new(root: &Path, driver: &str) -> Result<DockerStore, StoreError> {
        if driver != "overlay2" {
            return Err(format!(
                "Docker's storage driver is {driver}, not overlay2: its layers are not read in place"
            ));
        }
        let images = root.join("image").join("overlay2");
        if !images.join("layerdb").is_dir() {
            return Err(format!("no layer database in {}", images.display()));
        }
        Ok(DockerStore {
            images,
            layers: root.join("overlay2"),
        })
    }

    /// The config of the image whose ID is `id` (`sha256:…`).
    pub fn config(&self, id: &str) -> Result<ImageConfig, StoreError> {
        let hex = digest_hex(id)?;
        let path = self.images.join("imagedb/content/sha256").join(hex);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let digest = sha256_digest(&bytes);
        if digest != id {
            return Err(format!("{}: its digest is {digest}", path.display()));
        }
        let parsed: ConfigRootfs = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not an image config: {e}", path.display()))?;
        Ok(ImageConfig {
            bytes,
            digest,
            diff_ids: parsed.rootfs.diff_ids,
        })
    }

    /// The image of `config`, its layers found in the store. A layer whose
    /// tar length is in `known` (containerd has a blob of that digest: the
    /// same bytes) is not measured again; the others are, from their
    /// tar-split records.
    pub fn image(
        &self,
        config: ImageConfig,
        known: &HashMap<String, u64>,
    ) -> Result<StoredImage, StoreError> {
        let layers = chain_ids(&config.diff_ids)
            .into_iter()
            .zip(&config.diff_ids)
            .map(|(chain, diff_id)| self.layer(&chain, diff_id, known.get(diff_id).copied()))
            .collect::<Result<_, _>>()?;
        Ok(StoredImage {
            config: config.bytes,
            config_digest: config.digest,
            layers,
        })
    }

    fn layer(
        &self,
        chain_id: &str,
        diff_id: &str,
        known_size: Option<u64>,
    ) -> Result<StoredLayer, StoreError> {
        let dir = self
            .images
            .join("layerdb/sha256")
            .join(digest_hex(chain_id)?);
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let recorded = read("diff")?;
        if recorded != diff_id {
            return Err(format!(
                "{}: the layer is {recorded}, the image names {diff_id}",
                dir.display()
            ));
        }
        let cache_id = read("cache-id")?;
        if cache_id.is_empty() || cache_id.contains('/') || cache_id.starts_with('.') {
            return Err(format!("{}: a bad cache-id {cache_id:?}", dir.display()));
        }
        let tar_split = dir.join("tar-split.json.gz");
        let size = match known_size {
            Some(size) => size,
            None => tar_size(&tar_split)?,
        };
        Ok(StoredLayer {
            diff_id: diff_id.to_string(),
            size,
            files: self.layers.join(cache_id).join("diff"),
            tar_split,
        })
    }
}

impl StoredLayer {
    /// Writes the layer's tar into `out`; returns its length, checked
    /// against [`StoredLayer::size`].
    pub fn write_tar(&self, out: &mut dyn Write) -> Result<u64, StoreError> {
        let written = replay(&self.tar_split, &self.files, out)?;
        if written != self.size {
            return Err(format!(
                "layer {}: {written} bytes written, {} recorded",
                self.diff_id, self.size
            ));
        }
        Ok(written)
    }
}

/// The chain IDs of layers `diff_ids` (bottom first): the first is its diff
/// ID, each next one the digest of "<chain below> <diff ID>".
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(below) => sha256_digest(format!("{below} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", crate::bundle::verify::sha256_hex(data))
}

fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("not a sha256 digest: {digest:?}"))
}

fn entries(
    tar_split: &Path,
) -> Result<impl Iterator<Item = Result<Entry, StoreError>>, StoreError> {
    let file = File::open(tar_split).map_err(|e| format!("{}: {e}", tar_split.display()))?;
    let shown = tar_split.display().to_string();
    let lines = BufReader::new(flate2::read::GzDecoder::new(file)).lines();
    Ok(lines.filter_map(move |line| match line {
        Ok(line) if line.trim().is_empty() => None,
        Ok(line) => Some(serde_json::from_str::<Entry>(&line).map_err(|e| format!("{shown}: {e}"))),
        Err(e) => Some(Err(format!("{shown}: {e}"))),
    }))
}

/// The length of the tar a tar-split record makes.
fn tar_size(tar_split: &Path) -> Result<u64, StoreError> {
    let mut size = 0;
    for entry in entries(tar_split)? {
        let entry = entry?;
        size += match entry.kind {
            SEGMENT => segment(&entry)?.len() as u64,
            FILE => entry.size,
            other => return Err(format!("{}: an entry of type {other}", tar_split.display())),
        };
    }
    Ok(size)
}

fn segment(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    match &entry.payload {
        None => Ok(Vec::new()),
        Some(text) => BASE64
            .decode(text)
            .map_err(|e| format!("a tar-split segment is not base64: {e}")),
    }
}

/// Opens a file entry's file under the layer's folder `files`, never
/// leaving it: a name with `..` is refused, and so is a link on the way (a
/// layer may hold a link `a` → `/etc` and a file recorded as `a/x` that
/// Docker wrote, inside the layer, at `etc/x`; followed here, the link would
/// read the host's file). Only a regular file is read.
fn open_file(files: &Path, entry: &Entry) -> Result<File, StoreError> {
    let name: PathBuf = match (&entry.name, &entry.name_raw) {
        (_, Some(raw)) => {
            let bytes = BASE64
                .decode(raw)
                .map_err(|e| format!("a tar-split name is not base64: {e}"))?;
            PathBuf::from(OsStr::from_bytes(&bytes))
        }
        (Some(name), None) => PathBuf::from(name),
        (None, None) => return Err("a tar-split file entry has no name".into()),
    };
    let mut parts = Vec::new();
    for part in name.components() {
        match part {
            Component::Normal(p) => parts.push(p),
            Component::CurDir | Component::RootDir => {}
            _ => {
                return Err(format!(
                    "a layer entry leaves the layer: {}",
                    name.display()
                ));
            }
        }
    }
    let Some((_, folders)) = parts.split_last() else {
        return Err(format!("a layer entry names no file: {}", name.display()));
    };
    let mut path = files.to_path_buf();
    for folder in folders {
        path.push(folder);
        let is_folder = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir());
        if !is_folder {
            return Err(format!(
                "{}: not a folder of the layer (a link?), on the way to {}",
                path.display(),
                name.display()
            ));
        }
    }
    path.push(parts[parts.len() - 1]);
    // No link followed at the end either; and no wait on a FIFO's writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    if !regular {
        return Err(format!("{}: not a regular file", path.display()));
    }
    Ok(file)
}

/// Writes the tar `tar_split` records, its files read under `files`.
fn replay(tar_split: &Path, files: &Path, out: &mut dyn Write) -> Result<u64, StoreError> {
    let mut written = 0;
    for entry in entries(tar_split)? {
        let entry = entry?;
        match entry.kind {
            SEGMENT => {
                let bytes = segment(&entry)?;
                out.write_all(&bytes).map_err(|e| format!("writing: {e}"))?;
                written += bytes.len() as u64;
            }
            FILE if entry.size == 0 => {}
            FILE => {
                let file = open_file(files, &entry)?;
                let shown = || entry.name.clone().unwrap_or_default();
                let copied = std::io::copy(&mut file.take(entry.size), out)
                    .map_err(|e| format!("{} in {}: {e}", shown(), files.display()))?;
                if copied != entry.size {
                    return Err(format!(
                        "{} in {}: {copied} bytes, the layer recorded {}",
                        shown(),
                        files.display(),
                        entry.size
                    ));
                }
                written += copied;
            }
            other => return Err(format!("{}: an entry of type {other}", tar_split.display())),
        }
    }
    Ok(written)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Records `tar` (an archive made by the `tar` crate, its files' bytes
    /// also under `files`) as tar-split does: headers and padding as
    /// segments, each file's bytes as a file entry.
    pub fn record(tar: &[u8], files: &Path, out: &Path) {
        let mut lines = String::new();
        let segment_line = |lines: &mut String, bytes: &[u8]| {
            lines.push_str(
                &serde_json::json!({"type": SEGMENT, "payload": BASE64.encode(bytes)}).to_string(),
            );
            lines.push('\n');
        };
        let mut archive = tar::Archive::new(tar);
        let mut at = 0usize;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let data = entry.raw_file_position() as usize;
            // Everything from the end of the last file's bytes to this
            // file's bytes (padding, header) is one segment.
            segment_line(&mut lines, &tar[at..data]);
            let size = entry.size() as usize;
            let name = entry.path().unwrap().to_string_lossy().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            if entry.header().entry_type().is_file() {
                let path = files.join(&name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let line = serde_json::json!({"type": FILE, "name": name, "size": size});
            lines.push_str(&line.to_string());
            lines.push('\n');
            at = data + size;
        }
        segment_line(&mut lines, &tar[at..]);
        let mut gz =
            flate2::write::GzEncoder::new(File::create(out).unwrap(), flate2::Compression::fast());
        gz.write_all(lines.as_bytes()).unwrap();
        gz.finish().unwrap();
    }

    /// A small layer: a folder, two files (one of 3000 bytes: padding), a
    /// symlink and an empty file.
    pub fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, data).unwrap();
        };
        add("app/", tar::EntryType::Directory, b"", None);
        add("app/a.txt", tar::EntryType::Regular, b"hello\n", None);
        add("app/big", tar::EntryType::Regular, &[7u8; 3000], None);
        add("app/link", tar::EntryType::Symlink, b"", Some("a.txt"));
        add("app/empty", tar::EntryType::Regular, b"", None);
        builder.into_inner().unwrap()
    }

    /// The sample layer recorded in a folder of its own: (the folder, the
    /// tar, the layer's files, its tar-split record).
    fn recorded_sample() -> (tempfile::TempDir, Vec<u8>, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tar = sample_tar();
        let files = dir.path().join("diff");
        let split = dir.path().join("tar-split.json.gz");
        record(&tar, &files, &split);
        (dir, tar, files, split)
    }

    fn file_entry(name: &str) -> Entry {
        Entry {
            kind: FILE,
            name: Some(name.into()),
            name_raw: None,
            size: 1,
            payload: None,
        }
    }

    #[test]
    fn a_recorded_layer_is_replayed_byte_for_byte() {
        let (_dir, tar, files, split) = recorded_sample();
        assert_eq!(tar_size(&split).unwrap(), tar.len() as u64);
        let mut out = Vec::new();
        assert_eq!(replay(&split, &files, &mut out).unwrap(), tar.len() as u64);
        assert_eq!(out, tar);
    }

    #[test]
    fn a_changed_file_is_caught_by_its_length_and_a_name_may_not_leave_the_layer() {
        let (_dir, _, files, split) = recorded_sample();
        std::fs::write(files.join("app/big"), b"short").unwrap();
        let err = replay(&split, &files, &mut Vec::new()).unwrap_err();
        assert!(err.contains("5 bytes, the layer recorded 3000"), "{err}");

        let err = open_file(&files, &file_entry("../../etc/passwd")).unwrap_err();
        assert!(err.contains("leaves the layer"), "{err}");
    }

    #[test]
    fn a_link_in_the_layer_is_never_followed_out_of_it() {
        let (dir, _, files, _) = recorded_sample();
        // Outside the layer: what a link must not lead the replay to.
        let outside = dir.path().join("host");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, files.join("app/etc")).unwrap();
        let err = open_file(&files, &file_entry("app/etc/secret")).unwrap_err();
        assert!(err.contains("not a folder of the layer"), "{err}");
        std::os::unix::fs::symlink(outside.join("secret"), files.join("app/last")).unwrap();
        let err = open_file(&files, &file_entry("app/last")).unwrap_err();
        assert!(err.contains("app/last"), "{err}");
        // A file of the layer opens.
        assert!(open_file(&files, &file_entry("app/a.txt")).is_ok());
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_digest(format!("{a} {b}").as_bytes()));
        // The independent SHA-256 agrees.
        use sha2::Digest as _;
        let hex: String = sha2::Sha256::digest(format!("{a} {b}").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(chain[1], format!("sha256:{hex}"));
    }

    #[test]
    fn only_overlay2_is_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let err = DockerStore::new(dir.path(), "vfs").unwrap_err();
        assert!(err.contains("vfs, not overlay2"), "{err}");
        let err = DockerStore::new(dir.path(), "overlay2").unwrap_err();
        assert!(err.contains("no layer database"), "{err}");
    }
}

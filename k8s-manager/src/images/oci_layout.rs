//! An image from Docker's store as an OCI image layout tar holding only the
//! blobs containerd lacks: `oci-layout`, the config, the missing layers,
//! the manifest and `index.json`, which names the image. `ctr images
//! import` writes those blobs, finds the others already in its content
//! store, makes the image and unpacks what is not yet unpacked.
//!
//! The manifest is the one containerd makes when it imports the same image
//! from `docker save` (Docker's schema 2, uncompressed layers, the same
//! fields in the same order), so an image has the same manifest digest
//! whichever way it came.

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use super::docker_store::{StoreError, StoredImage, sha256_digest};

pub const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// The annotation of `index.json` that `ctr images import` takes as the
/// image's name.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
const BLOCK: u64 = 512;

/// What an archive carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Carried {
    pub layers: usize,
    pub of_layers: usize,
    /// The layers' bytes written.
    pub bytes: u64,
}

/// The manifest of `image`, as JSON bytes.
pub fn manifest(image: &StoredImage) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = image
        .layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": LAYER_TYPE, "digest": l.diff_id, "size": l.size}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": CONFIG_TYPE,
            "digest": image.config_digest,
            "size": image.config.len(),
        },
        "layers": layers,
    }))
    .expect("a JSON value serialises")
}

fn index(name: &str, manifest: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": sha256_digest(manifest),
            "size": manifest.len(),
            "annotations": {NAME_ANNOTATION: name},
        }],
    }))
    .expect("a JSON value serialises")
}

/// Writes the layout tar of `image` named `name` into `out`, leaving out
/// the layers whose diff IDs are in `present`.
pub fn write(
    out: &mut dyn Write,
    name: &str,
    image: &StoredImage,
    present: &HashSet<String>,
) -> Result<Carried, StoreError> {
    let io = |e: std::io::Error| format!("writing the archive: {e}");
    let mut carried = Carried {
        of_layers: image.layers.len(),
        ..Carried::default()
    };
    member(out, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    member(out, &blob_path(&image.config_digest), &image.config).map_err(io)?;
    let mut written: HashSet<&str> = HashSet::new();
    for layer in &image.layers {
        // A layer twice in one image (the same empty layer) is one blob.
        if present.contains(&layer.diff_id) || !written.insert(&layer.diff_id) {
            continue;
        }
        header(out, &blob_path(&layer.diff_id), layer.size).map_err(io)?;
        carried.bytes += layer.write_tar(out)?;
        pad(out, layer.size).map_err(io)?;
        carried.layers += 1;
    }
    let manifest = manifest(image);
    member(out, &blob_path(&sha256_digest(&manifest)), &manifest).map_err(io)?;
    member(out, "index.json", &index(name, &manifest)).map_err(io)?;
    out.write_all(&[0u8; 2 * BLOCK as usize]).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(carried)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn header(out: &mut dyn Write, path: &str, size: u64) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    header.set_cksum();
    out.write_all(header.as_bytes())
}

fn pad(out: &mut dyn Write, size: u64) -> std::io::Result<()> {
    let rest = (BLOCK - size % BLOCK) % BLOCK;
    out.write_all(&[0u8; BLOCK as usize][..rest as usize])
}

fn member(out: &mut dyn Write, path: &str, data: &[u8]) -> std::io::Result<()> {
    header(out, path, data.len() as u64)?;
    out.write_all(data)?;
    pad(out, data.len() as u64)
}

/// A writer whose bytes become a stream, in chunks of [`CHUNK`] bytes, for
/// a process's standard input fed by a blocking thread.
pub struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Bytes>,
}

/// The chunk a [`ChannelWriter`] sends.
pub const CHUNK: usize = 1 << 20;
/// A [`ChannelWriter`]'s error once its stream is gone.
pub const READER_STOPPED: &str = "the reader of the archive stopped";

impl ChannelWriter {
    /// A writer and the stream of what it writes; `depth` chunks may wait.
    pub fn new(
        depth: usize,
    ) -> (
        ChannelWriter,
        impl Stream<Item = Result<Bytes, String>> + use<>,
    ) {
        let (sender, receiver) = mpsc::channel(depth);
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((Ok(chunk), receiver))
        });
        let writer = ChannelWriter {
            buffer: Vec::with_capacity(CHUNK),
            sender,
        };
        (writer, stream)
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, READER_STOPPED))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let taken = data.len().min(room);
        self.buffer.extend_from_slice(&data[..taken]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::docker_store::tests::{record, sample_tar};
    use crate::images::docker_store::{DockerStore, chain_ids};
    use std::collections::HashMap;
    use std::io::Read;
    use std::path::Path;

    /// A Docker root holding one image of two layers (the sample twice,
    /// the second with other file bytes): returns the image ID.
    fn docker_root(root: &Path) -> (String, Vec<Vec<u8>>) {
        let layerdb = root.join("image/overlay2/layerdb/sha256");
        let mut tars = Vec::new();
        let mut diff_ids = Vec::new();
        for (n, fill) in [b"one", b"two"].iter().enumerate() {
            let mut tar = sample_tar();
            // Make the second layer's bytes differ.
            if n == 1 {
                let mut builder = tar::Builder::new(Vec::new());
                let mut header = tar::Header::new_ustar();
                header.set_size(fill.len() as u64);
                header.set_mode(0o644);
                builder
                    .append_data(&mut header, "top.txt", &fill[..])
                    .unwrap();
                tar = builder.into_inner().unwrap();
            }
            diff_ids.push(sha256_digest(&tar));
            tars.push(tar);
        }
        let chains = chain_ids(&diff_ids);
        for (n, tar) in tars.iter().enumerate() {
            let cache_id = format!("cache{n}");
            let dir = layerdb.join(chains[n].strip_prefix("sha256:").unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("diff"), &diff_ids[n]).unwrap();
            std::fs::write(dir.join("cache-id"), &cache_id).unwrap();
            let files = root.join("overlay2").join(&cache_id).join("diff");
            record(tar, &files, &dir.join("tar-split.json.gz"));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let id = sha256_digest(&config);
        let imagedb = root.join("image/overlay2/imagedb/content/sha256");
        std::fs::create_dir_all(&imagedb).unwrap();
        std::fs::write(imagedb.join(id.strip_prefix("sha256:").unwrap()), &config).unwrap();
        (id, tars)
    }

    fn stored(store: &DockerStore, id: &str, known: &HashMap<String, u64>) -> StoredImage {
        store.image(store.config(id).unwrap(), known).unwrap()
    }

    fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut read = tar::Archive::new(archive);
        read.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().to_string_lossy().to_string(), data)
            })
            .collect()
    }

    #[test]
    fn the_layout_holds_what_containerd_lacks_and_names_the_image() {
        let root = tempfile::tempdir().unwrap();
        let (id, tars) = docker_root(root.path());
        let store = DockerStore::new(root.path(), "overlay2").unwrap();
        let image = stored(&store, &id, &HashMap::new());
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[0].size, tars[0].len() as u64);
        // A length containerd knows is taken as it is, not measured again.
        let known = HashMap::from([(image.layers[0].diff_id.clone(), 7)]);
        assert_eq!(stored(&store, &id, &known).layers[0].size, 7);

        // Nothing present: both layers, byte for byte.
        let mut archive = Vec::new();
        let carried = write(
            &mut archive,
            "docker.io/library/app:1",
            &image,
            &HashSet::new(),
        )
        .unwrap();
        assert_eq!(carried.layers, 2);
        assert_eq!(carried.bytes, (tars[0].len() + tars[1].len()) as u64);
        let found = members(&archive);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "oci-layout");
        assert_eq!(names.last().copied(), Some("index.json"));
        for (tar, layer) in tars.iter().zip(&image.layers) {
            let path = blob_path(&layer.diff_id);
            let (_, data) = found.iter().find(|(n, _)| *n == path).expect("the layer");
            assert_eq!(data, tar);
        }
        // Every blob is named by its digest.
        for (name, data) in &found {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_digest(data), format!("sha256:{hex}"));
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&found.last().unwrap().1).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"][NAME_ANNOTATION],
            "docker.io/library/app:1"
        );

        // The bottom layer present: only the top one is carried; the
        // manifest still names both.
        let present = HashSet::from([image.layers[0].diff_id.clone()]);
        let mut archive = Vec::new();
        let carried = write(&mut archive, "docker.io/library/app:1", &image, &present).unwrap();
        assert_eq!((carried.layers, carried.of_layers), (1, 2));
        let found = members(&archive);
        assert!(
            !found
                .iter()
                .any(|(n, _)| *n == blob_path(&image.layers[0].diff_id))
        );
        let manifest: serde_json::Value = serde_json::from_slice(&manifest(&image)).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
        assert_eq!(manifest["config"]["digest"], id);
    }

    #[test]
    fn the_manifest_is_containerds_own_for_a_docker_archive() {
        let root = tempfile::tempdir().unwrap();
        let (id, _) = docker_root(root.path());
        let store = DockerStore::new(root.path(), "overlay2").unwrap();
        let image = stored(&store, &id, &HashMap::new());
        let text = String::from_utf8(manifest(&image)).unwrap();
        let expected = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_TYPE}\",\"config\":{{\"mediaType\":\"{CONFIG_TYPE}\",\"digest\":\"{id}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"{LAYER_TYPE}\",\"digest\":\"{}\",\"size\":{}}},",
            image.config.len(),
            image.layers[0].diff_id,
            image.layers[0].size
        );
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn a_store_that_disagrees_with_the_image_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (id, _) = docker_root(root.path());
        let imagedb = root.path().join("image/overlay2/imagedb/content/sha256");
        let path = imagedb.join(id.strip_prefix("sha256:").unwrap());
        let mut config = std::fs::read(&path).unwrap();
        config.push(b' ');
        std::fs::write(&path, config).unwrap();
        let store = DockerStore::new(root.path(), "overlay2").unwrap();
        let err = store.config(&id).unwrap_err();
        assert!(err.contains("its digest is"), "{err}");
    }

    #[tokio::test]
    async fn the_channel_writer_says_so_when_its_reader_is_gone() {
        let (mut writer, stream) = ChannelWriter::new(1);
        drop(stream);
        let err = tokio::task::spawn_blocking(move || writer.write_all(&vec![0u8; 2 * CHUNK]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(err.to_string().contains(READER_STOPPED));
    }

    #[tokio::test]
    async fn the_channel_writer_streams_every_byte_in_order() {
        use futures::StreamExt;
        let (mut writer, stream) = ChannelWriter::new(2);
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let thread = tokio::task::spawn_blocking(move || {
            writer.write_all(&data).unwrap();
            writer.flush().unwrap();
        });
        let got: Vec<u8> = stream
            .map(|c| c.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat();
        thread.await.unwrap();
        assert_eq!(got, expected);
    }
}

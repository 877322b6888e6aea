//! `bundle fetch`: the production way to get a bundle — the official release
//! binaries for linux/amd64, each checked against the checksum published next
//! to it, written in the same layout as the builder's.
//!
//! Downloads land in a staging folder beside the destination and survive an
//! interrupted run: the next run resumes each partial file with an HTTP range
//! request (or starts it over when the server ignores ranges), and a file
//! whose checksum does not match is downloaded once more from scratch before
//! the fetch fails. The destination only appears, by rename, when every file
//! is verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::BundleError;
use super::manifest::{Executable, FileEntry, MANIFEST_FILE, Manifest, SCHEMA_VERSION};
use super::verify::digest_file;

pub const DEFAULT_KUBERNETES_MIRROR: &str = "https://dl.k8s.io";
pub const DEFAULT_ETCD_MIRROR: &str = "https://github.com/etcd-io/etcd/releases/download";
pub const DEFAULT_ETCD_VERSION: &str = "v3.6.16";

/// The Kubernetes binaries a bundle carries, each published with a checksum.
pub const KUBERNETES_BINARIES: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "kubeadm",
];
const ETCD_BINARIES: [&str; 3] = ["etcd", "etcdctl", "etcdutl"];
/// Attempts per file: transfer errors resume, a checksum mismatch restarts.
const ATTEMPTS: u32 = 3;
/// A checksum file is a line, SHA256SUMS a few dozen: a mirror that sends
/// more is not sending one.
const MAX_CHECKSUM_BYTES: usize = 64 * 1024;
/// The largest release binary is about 150 MB: a mirror that sends more is
/// not sending one, and must not fill the disk.
const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Kubernetes version, e.g. `v1.34.4`.
    pub version: String,
    pub etcd_version: String,
    /// Base of the Kubernetes release tree (`<mirror>/release/<v>/bin/linux/amd64/<name>`).
    pub mirror: String,
    /// Base of the etcd releases (`<mirror>/<v>/etcd-<v>-linux-amd64.tar.gz` and `SHA256SUMS`).
    pub etcd_mirror: String,
    pub dest: PathBuf,
    /// Show progress bars (a terminal) rather than one line per file.
    pub progress_bars: bool,
}

#[derive(Debug)]
pub struct FetchReport {
    pub dest: PathBuf,
    pub downloaded_bytes: u64,
    pub resumed: Vec<String>,
}

/// A published checksum: which algorithm and the expected hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checksum {
    Sha256(String),
    Sha512(String),
}

impl Checksum {
    fn matches(&self, path: &Path) -> std::io::Result<Option<String>> {
        let (actual, expected) = match self {
            Checksum::Sha256(e) => (digest_file(path, &aws_lc_rs::digest::SHA256)?, e),
            Checksum::Sha512(e) => (digest_file(path, &aws_lc_rs::digest::SHA512)?, e),
        };
        Ok(if actual.eq_ignore_ascii_case(expected) {
            None
        } else {
            Some(actual)
        })
    }
}

/// A version as a bundle names it (`v1.34.4`): see [`super::manifest`].
pub use super::manifest::validate_version;

pub async fn fetch(opts: &FetchOptions) -> Result<FetchReport, BundleError> {
    validate_version(&opts.version)?;
    validate_version(&opts.etcd_version)?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("k8s-manager/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| BundleError::Download {
            url: opts.mirror.clone(),
            reason: err.to_string(),
        })?;
    let staging = staging_dir(&opts.dest);
    let bin = staging.join("bin");
    for dir in [&bin, &staging.join("images")] {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| BundleError::Io {
                path: dir.clone(),
                source,
            })?;
    }
    let mut downloader = Downloader {
        client,
        progress_bars: opts.progress_bars,
        downloaded_bytes: 0,
        resumed: Vec::new(),
    };

    let k8s_base = format!(
        "{}/release/{}/bin/linux/amd64",
        opts.mirror.trim_end_matches('/'),
        opts.version
    );
    for name in KUBERNETES_BINARIES {
        let url = format!("{k8s_base}/{name}");
        let checksum = downloader.published_checksum(&url).await?;
        downloader
            .download_verified(&url, &bin.join(name), &checksum)
            .await?;
        set_executable(&bin.join(name))?;
    }

    let etcd_dir = format!(
        "{}/{}",
        opts.etcd_mirror.trim_end_matches('/'),
        opts.etcd_version
    );
    let tarball_name = format!("etcd-{}-linux-amd64.tar.gz", opts.etcd_version);
    let sums = downloader
        .get_text(&format!("{etcd_dir}/SHA256SUMS"))
        .await?;
    let checksum = sha256sums_entry(&sums, &tarball_name)
        .map(Checksum::Sha256)
        .ok_or_else(|| BundleError::MissingChecksum {
            url: format!("{etcd_dir}/SHA256SUMS (no line for {tarball_name})"),
        })?;
    let tarball = staging.join(&tarball_name);
    downloader
        .download_verified(&format!("{etcd_dir}/{tarball_name}"), &tarball, &checksum)
        .await?;
    extract_etcd(
        &tarball,
        &format!("etcd-{}-linux-amd64", opts.etcd_version),
        &bin,
    )?;
    std::fs::remove_file(&tarball).map_err(|source| BundleError::Io {
        path: tarball.clone(),
        source,
    })?;

    write_manifest(&staging, &opts.version, &opts.etcd_version)?;
    if opts.dest.exists() {
        std::fs::remove_dir_all(&opts.dest).map_err(|source| BundleError::Io {
            path: opts.dest.clone(),
            source,
        })?;
    }
    std::fs::rename(&staging, &opts.dest).map_err(|source| BundleError::Io {
        path: opts.dest.clone(),
        source,
    })?;
    Ok(FetchReport {
        dest: opts.dest.clone(),
        downloaded_bytes: downloader.downloaded_bytes,
        resumed: downloader.resumed,
    })
}

/// `<dest>.partial`: beside the destination, so the final rename stays on one
/// file system, and findable by the next run to resume.
pub fn staging_dir(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

struct Downloader {
    client: reqwest::Client,
    progress_bars: bool,
    downloaded_bytes: u64,
    resumed: Vec<String>,
}

impl Downloader {
    async fn get_text(&self, url: &str) -> Result<String, BundleError> {
        let fail = |reason: String| BundleError::Download {
            url: url.to_string(),
            reason,
        };
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(BundleError::MissingChecksum {
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let too_large = || {
            fail(format!(
                "larger than the {MAX_CHECKSUM_BYTES} bytes a checksum file can be: is the mirror right?"
            ))
        };
        let mut resp = resp;
        if resp
            .content_length()
            .is_some_and(|len| len > MAX_CHECKSUM_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut text = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            if text.len() + chunk.len() > MAX_CHECKSUM_BYTES {
                return Err(too_large());
            }
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).map_err(|_| fail("not a text file: is the mirror right?".into()))
    }

    /// The checksum published next to a release binary: `<url>.sha256`, else
    /// `<url>.sha512`. A binary with neither is refused, never run unverified.
    async fn published_checksum(&self, url: &str) -> Result<Checksum, BundleError> {
        for (suffix, len) in [("sha256", 64), ("sha512", 128)] {
            let sum_url = format!("{url}.{suffix}");
            match self.get_text(&sum_url).await {
                Ok(text) => {
                    let digest = text
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    if digest.len() != len || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                        let start: String = text.trim().chars().take(80).collect();
                        return Err(BundleError::Download {
                            url: sum_url,
                            reason: format!("not a {suffix} checksum: it starts {start:?}"),
                        });
                    }
                    return Ok(if len == 64 {
                        Checksum::Sha256(digest)
                    } else {
                        Checksum::Sha512(digest)
                    });
                }
                Err(BundleError::MissingChecksum { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(BundleError::MissingChecksum {
            url: format!("{url}.sha256 (nor .sha512)"),
        })
    }

    async fn download_verified(
        &mut self,
        url: &str,
        dest: &Path,
        checksum: &Checksum,
    ) -> Result<(), BundleError> {
        let io_err = |source| BundleError::Io {
            path: dest.to_path_buf(),
            source,
        };
        if dest.exists() && checksum.matches(dest).map_err(io_err)?.is_none() {
            tracing::info!("{}: already downloaded and verified", display_name(dest));
            return Ok(());
        }
        let part = dest.with_extension("part");
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            match self.download(url, &part).await {
                Ok(()) => {}
                Err(err) => {
                    tracing::warn!("{url}: attempt {attempt} of {ATTEMPTS} failed: {err}");
                    last_error = Some(err);
                    continue;
                }
            }
            match checksum.matches(&part).map_err(io_err)? {
                None => {
                    std::fs::rename(&part, dest).map_err(io_err)?;
                    return Ok(());
                }
                Some(actual) => {
                    tracing::warn!(
                        "{url}: checksum mismatch (got {actual}); downloading it again from the start"
                    );
                    std::fs::remove_file(&part).map_err(io_err)?;
                    let expected = match checksum {
                        Checksum::Sha256(e) | Checksum::Sha512(e) => e.clone(),
                    };
                    last_error = Some(BundleError::ChecksumMismatch {
                        url: url.to_string(),
                        expected,
                        actual,
                    });
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Downloads `url` into `part`, continuing a partial file when there is one.
    async fn download(&mut self, url: &str, part: &Path) -> Result<(), BundleError> {
        let fail = |reason: String| BundleError::Download {
            url: url.to_string(),
            reason,
        };
        let have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut request = self.client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut resp = request.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let append = match status {
            reqwest::StatusCode::PARTIAL_CONTENT if have > 0 => {
                self.resumed.push(display_name(part));
                true
            }
            // The part is already whole (or longer than the file): start over and let the checksum decide.
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
                tokio::fs::remove_file(part)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                return Box::pin(self.download(url, part)).await;
            }
            s if s.is_success() => false,
            reqwest::StatusCode::NOT_FOUND => {
                return Err(fail("not found (HTTP 404): is the version right?".into()));
            }
            s => return Err(fail(format!("HTTP {s}"))),
        };
        let total = resp
            .content_length()
            .map(|len| if append { len + have } else { len });
        let too_large = || {
            fail(format!(
                "larger than the {MAX_DOWNLOAD_BYTES} bytes a release binary can be: is the mirror right?"
            ))
        };
        if total.is_some_and(|len| len > MAX_DOWNLOAD_BYTES) {
            return Err(too_large());
        }
        let start_len = if append { have } else { 0 };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let progress = Progress::new(self.progress_bars, &display_name(part), total, start_len);
        let start = Instant::now();
        let mut got = 0u64;
        let received = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if start_len + got + chunk.len() as u64 > MAX_DOWNLOAD_BYTES {
                        break Err(too_large());
                    }
                    if let Err(err) = file.write_all(&chunk).await {
                        break Err(fail(err.to_string()));
                    }
                    got += chunk.len() as u64;
                    progress.advance(chunk.len() as u64);
                }
                Ok(None) => break Ok(()),
                Err(err) => break Err(fail(err.to_string())),
            }
        };
        // tokio writes in the background: what arrived must be in the file
        // before the next attempt resumes from the file's length, also when
        // the transfer broke off.
        file.flush().await.map_err(|e| fail(e.to_string()))?;
        received?;
        file.sync_all().await.map_err(|e| fail(e.to_string()))?;
        self.downloaded_bytes += got;
        progress.finish(got, start.elapsed());
        Ok(())
    }
}

/// One progress bar on a terminal; otherwise one log line when a file is done.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    name: String,
}

impl Progress {
    fn new(bars: bool, name: &str, total: Option<u64>, done: u64) -> Progress {
        let bar = bars.then(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(name.to_string());
            bar.set_position(done);
            bar
        });
        Progress {
            bar,
            name: name.to_string(),
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn finish(&self, bytes: u64, took: Duration) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => tracing::info!(
                "{}: {:.1} MB in {:.1} s",
                self.name,
                bytes as f64 / 1e6,
                took.as_secs_f64()
            ),
        }
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".part").to_string())
        .unwrap_or_default()
}

fn set_executable(path: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        BundleError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The digest for `name` in a `sha256sum`-style listing.
fn sha256sums_entry(listing: &str, name: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let digest = fields.next()?;
        let file = fields.next()?.trim_start_matches('*');
        (file == name && digest.len() == 64).then(|| digest.to_ascii_lowercase())
    })
}

/// Takes etcd, etcdctl and etcdutl out of the release tarball; nothing else of
/// it is written, and no entry of it can name a path outside `bin`.
fn extract_etcd(tarball: &Path, top: &str, bin: &Path) -> Result<(), BundleError> {
    let io_err = |source| BundleError::Io {
        path: tarball.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(tarball).map_err(io_err)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found = Vec::new();
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path().map_err(io_err)?.into_owned();
        let Some(name) = ETCD_BINARIES
            .iter()
            .find(|n| path == Path::new(top).join(n))
        else {
            continue;
        };
        let out = bin.join(name);
        let io_out = |source| BundleError::Io {
            path: out.clone(),
            source,
        };
        // A new file, never through whatever is in its place (a link left
        // in the staging folder would have the write land outside it).
        match std::fs::remove_file(&out) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_out(err)),
        }
        let mut dest = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&out)
            .map_err(io_out)?;
        std::io::copy(&mut entry, &mut dest).map_err(io_err)?;
        set_executable(&out)?;
        found.push(*name);
    }
    if found.len() != ETCD_BINARIES.len() {
        let missing: Vec<_> = ETCD_BINARIES
            .iter()
            .filter(|n| !found.contains(n))
            .collect();
        return Err(BundleError::Download {
            url: tarball.display().to_string(),
            reason: format!("tarball lacks {missing:?} under {top}/"),
        });
    }
    Ok(())
}

fn write_manifest(dir: &Path, version: &str, etcd_version: &str) -> Result<(), BundleError> {
    let mut files = Vec::new();
    for name in KUBERNETES_BINARIES.iter().chain(ETCD_BINARIES.iter()) {
        let rel = format!("bin/{name}");
        let path = dir.join(&rel);
        let size = std::fs::metadata(&path)
            .map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        let sha256 = super::verify::sha256_file(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        files.push(FileEntry {
            path: rel,
            sha256,
            size,
            executable: true,
        });
    }
    let etcd_bare = etcd_version.trim_start_matches('v');
    let exe = |name: &str, args: &[&str], expect: String| Executable {
        path: format!("bin/{name}"),
        args: args.iter().map(|a| a.to_string()).collect(),
        expect,
    };
    let mut executables: Vec<Executable> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    ]
    .iter()
    .map(|n| exe(n, &["--version"], format!("Kubernetes {version}")))
    .collect();
    executables.push(exe(
        "kubectl",
        &["version", "--client"],
        format!("Client Version: {version}"),
    ));
    executables.push(exe(
        "kubeadm",
        &["version", "-o", "short"],
        version.to_string(),
    ));
    executables.push(exe(
        "etcd",
        &["--version"],
        format!("etcd Version: {etcd_bare}"),
    ));
    executables.push(exe(
        "etcdctl",
        &["version"],
        format!("etcdctl version: {etcd_bare}"),
    ));
    executables.push(exe(
        "etcdutl",
        &["version"],
        format!("etcdutl version: {etcd_bare}"),
    ));
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        kubernetes: version.to_string(),
        components: BTreeMap::from([
            ("kubernetes".to_string(), version.to_string()),
            ("etcd".to_string(), etcd_version.to_string()),
        ]),
        executables,
        images: Vec::new(),
        files,
        links: Vec::new(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    let path = dir.join(MANIFEST_FILE);
    crate::fsutil::write_atomic(&path, &json, 0o644)
        .map_err(|source| BundleError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sums_lines_are_found() {
        let listing = "aa  other.tar.gz\n".to_string()
            + &"b".repeat(64)
            + "  etcd-v3.6.16-linux-amd64.tar.gz\n"
            + &"c".repeat(64)
            + " *etcd-v3.6.16-linux-arm64.tar.gz\n";
        assert_eq!(
            sha256sums_entry(&listing, "etcd-v3.6.16-linux-amd64.tar.gz"),
            Some("b".repeat(64))
        );
        assert_eq!(
            sha256sums_entry(&listing, "etcd-v3.6.16-linux-arm64.tar.gz"),
            Some("c".repeat(64))
        );
        assert_eq!(sha256sums_entry(&listing, "other.tar.gz"), None);
    }

    #[test]
    fn staging_is_beside_the_destination() {
        assert_eq!(
            staging_dir(Path::new("/c/bundles/v1.34.4")),
            PathBuf::from("/c/bundles/v1.34.4.partial")
        );
    }
}

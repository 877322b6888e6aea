//! containerd's own client, `ctr`, for what CRI does not offer: importing an
//! image archive, tagging an image, and the containers and tasks CRI no
//! longer tracks. `ctr` ships with containerd (same package, same version), so
//! it speaks exactly the API of the daemon it is installed with; importing
//! through containerd's gRPC API instead would mean streaming every blob into
//! the content store and unpacking the layers ourselves, which is what `ctr`
//! already does.
//!
//! Everything here works in containerd's `k8s.io` namespace, the one CRI (and
//! so Kubernetes) uses. Other namespaces belong to others — dockerd uses
//! `moby`, nerdctl `default` — and are never touched.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RuntimeError;
use super::exec::{self, Finished};

/// containerd's namespace for CRI: everything Kubernetes runs lives here.
pub const K8S_NAMESPACE: &str = "k8s.io";

const CTR: &str = "ctr";
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Importing unpacks every layer into the snapshotter; CoreDNS is ~80 MB.
pub(crate) const IMPORT_TIMEOUT: Duration = Duration::from_secs(180);
/// Killing a task waits for it to exit.
const TASK_TIMEOUT: Duration = Duration::from_secs(30);

/// `ctr` pointed at one containerd socket, working in [`K8S_NAMESPACE`].
#[derive(Debug, Clone)]
pub struct Ctr {
    address: PathBuf,
}

/// What [`Ctr::remove_k8s_namespace_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Tasks (running or exited processes) killed and deleted.
    pub tasks: Vec<String>,
    /// Containers deleted, each with its snapshot.
    pub containers: Vec<String>,
}

impl Ctr {
    pub fn new(address: &Path) -> Ctr {
        Ctr {
            address: address.to_path_buf(),
        }
    }

    /// Runs `ctr --address SOCKET -n k8s.io ARGS...`.
    pub(crate) async fn run<I, S>(&self, args: I, limit: Duration) -> Result<Finished, RuntimeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        exec::run(CTR, self.args(args), None, limit).await
    }

    /// `--address SOCKET --namespace k8s.io ARGS...`
    fn args<I, S>(&self, args: I) -> Vec<std::ffi::OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            "--address".into(),
            self.address.clone().into(),
            "--namespace".into(),
            K8S_NAMESPACE.into(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        all
    }

    /// `ctr images import -`: imports the archive `input` streams
    /// (docker-archive or OCI), unpacked for this node's platform, under the
    /// names the archive gives, normalised (`myapp:dev` →
    /// `docker.io/library/myapp:dev`).
    pub async fn import_stream<B, E>(&self, input: B, limit: Duration) -> Result<(), RuntimeError>
    where
        B: futures::Stream<Item = Result<bytes::Bytes, E>>,
        E: std::fmt::Display,
    {
        exec::run_streamed(CTR, self.args(["images", "import", "-"]), input, limit)
            .await?
            .success()
            .map(|_| ())
    }

    /// Every image reference in the namespace with the digest of its target
    /// (the manifest, for a single-platform image).
    pub async fn image_digests(&self) -> Result<HashMap<String, String>, RuntimeError> {
        let listing = self
            .run(["images", "list"], QUERY_TIMEOUT)
            .await?
            .success()?;
        Ok(parse_images_list(&listing))
    }

    /// Points `target` at the image `source` points at, replacing whatever
    /// `target` pointed at before.
    pub async fn tag(&self, source: &str, target: &str) -> Result<(), RuntimeError> {
        self.run(["images", "tag", "--force", source, target], QUERY_TIMEOUT)
            .await?
            .success()?;
        Ok(())
    }

    /// Removes what is left in the `k8s.io` namespace once the pod sandboxes
    /// are gone through CRI: tasks and containers that CRI lost track of (a
    /// containerd restart mid-removal, a wiped CRI state). Their snapshots go
    /// with the containers; snapshots referenced by nothing are collected by
    /// containerd's own garbage collector. Images stay: they are what makes
    /// the next start fast.
    pub async fn remove_k8s_namespace_leftovers(&self) -> Result<Leftovers, RuntimeError> {
        let mut removed = Leftovers::default();
        let tasks = self
            .run(["tasks", "list", "--quiet"], QUERY_TIMEOUT)
            .await?
            .success()?;
        for task in ids(&tasks) {
            // `--force` kills a running task with SIGKILL before deleting it.
            let finished = self
                .run(["tasks", "delete", "--force", task], TASK_TIMEOUT)
                .await?;
            if !finished.status.success() && !is_not_found(&finished) {
                return Err(RuntimeError::Command {
                    output: finished.output_summary(),
                    command: finished.command,
                });
            }
            removed.tasks.push(task.to_string());
        }
        let containers = self
            .run(["containers", "list", "--quiet"], QUERY_TIMEOUT)
            .await?
            .success()?;
        for container in ids(&containers) {
            let finished = self
                .run(["containers", "delete", container], QUERY_TIMEOUT)
                .await?;
            if !finished.status.success() && !is_not_found(&finished) {
                return Err(RuntimeError::Command {
                    output: finished.output_summary(),
                    command: finished.command,
                });
            }
            removed.containers.push(container.to_string());
        }
        Ok(removed)
    }
}

/// The IDs `ctr ... list --quiet` prints, one a line.
fn ids(listing: &str) -> impl Iterator<Item = &str> {
    listing
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
}

/// Whether the object vanished between listing and removal (CRI or containerd
/// removed it meanwhile): the goal is reached either way.
fn is_not_found(finished: &Finished) -> bool {
    finished.stderr.contains("not found")
}

/// Parses `ctr images list`: a header, then `REF TYPE DIGEST SIZE PLATFORMS
/// LABELS` per image, columns separated by spaces (no column but SIZE holds
/// a space, and it comes after DIGEST).
pub fn parse_images_list(listing: &str) -> HashMap<String, String> {
    listing
        .lines()
        .skip_while(|line| !line.starts_with("REF "))
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            let reference = columns.next()?;
            let digest = columns.nth(1)?;
            digest
                .starts_with("sha256:")
                .then(|| (reference.to_string(), digest.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real output of containerd 1.6.20's `ctr -n k8s.io images list`: CRI adds
    // a `sha256:<image id>` reference for every image it sees.
    const LISTING: &str = "\
REF                                                                     TYPE                                       DIGEST                                                                  SIZE      PLATFORMS   LABELS                          
example.test/busybox:1                                                  application/vnd.oci.image.manifest.v1+json sha256:9dc42db754c0e5dcb0e082f24f211ebd203d4bb0d7d81b6da119cdd5d0de9e80 3.8 MiB   linux/amd64 io.cri-containerd.image=managed 
registry.k8s.io/pause:3.10.1                                            application/vnd.oci.image.manifest.v1+json sha256:40dc1fb0ce6856d444b4ca9d19d42bd5d672b9c712ac28d5d1c6eee74073fdd9 752.2 KiB linux/amd64 io.cri-containerd.image=managed 
sha256:20485b8b02f0bc44cfd8ec8b492abb46c748018a199bb045244af65bc7c6e9f0 application/vnd.oci.image.manifest.v1+json sha256:40dc1fb0ce6856d444b4ca9d19d42bd5d672b9c712ac28d5d1c6eee74073fdd9 752.2 KiB linux/amd64 io.cri-containerd.image=managed 
";

    #[test]
    fn image_list_maps_each_reference_to_its_manifest_digest() {
        let images = parse_images_list(LISTING);
        assert_eq!(images.len(), 3);
        assert_eq!(
            images["registry.k8s.io/pause:3.10.1"],
            "sha256:40dc1fb0ce6856d444b4ca9d19d42bd5d672b9c712ac28d5d1c6eee74073fdd9"
        );
        assert_eq!(
            images["example.test/busybox:1"],
            "sha256:9dc42db754c0e5dcb0e082f24f211ebd203d4bb0d7d81b6da119cdd5d0de9e80"
        );
    }

    #[test]
    fn empty_image_list_is_empty() {
        let header_only = "REF TYPE DIGEST SIZE PLATFORMS LABELS \n";
        assert!(parse_images_list(header_only).is_empty());
        assert!(parse_images_list("").is_empty());
    }

    #[test]
    fn quiet_listing_ids_skip_blank_lines() {
        assert_eq!(
            ids("abc\n\n  def  \n").collect::<Vec<_>>(),
            vec!["abc", "def"]
        );
    }
}

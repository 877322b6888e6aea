//! What a sync pass does, decided from what Docker has and what containerd's
//! `k8s.io` namespace has: a pure function, so that every rule is a unit test.
//!
//! Identity is Docker's image ID, which is the digest of the image's config;
//! containerd's image of the same content has the same config digest, so an
//! image is "already there" when the name Kubernetes resolves points at an
//! image with that config. An image needs moving once (one export, one
//! import); any further tag of it is a new name for what is already there.

use std::collections::{BTreeMap, BTreeSet};

use super::reference::k8s_name;
use crate::model::images::ImageEntry;

/// An image of the Docker engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerImage {
    /// `sha256:<config digest>`.
    pub id: String,
    /// Its tags as Docker shows them (`myapp:dev`).
    pub tags: Vec<String>,
    pub size: u64,
}

/// An image of containerd's `k8s.io` namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sImage {
    /// Its full name (`docker.io/library/myapp:dev`).
    pub name: String,
    /// The digest of its config for this node's platform, when it could be
    /// read (`sha256:...`).
    pub config: Option<String>,
    /// Put there by the sync (it carries our label): ours to remove.
    pub synced: bool,
}

/// One step of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Export `docker_tag` from Docker and import it: it becomes `name`.
    Import {
        id: String,
        docker_tag: String,
        name: String,
    },
    /// Point `name` at the image `source` is (imported before, or there).
    Tag {
        id: String,
        source: String,
        name: String,
    },
    /// A name whose Docker tag is gone: remove it from `k8s.io`.
    Remove { name: String },
    /// A name that is Docker's image under Docker's tag but lost our label
    /// (CRI's pull of a `:latest` through the image endpoint rewrites the
    /// labels): label it again, so it is removed with its tag.
    Mark { id: String, name: String },
}

/// Why a name of ours stays although Docker no longer has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Names already right: nothing to do.
    pub present: Vec<String>,
    pub kept: Vec<Kept>,
}

/// What a pass does. `only`, when given, limits the imports and tags to
/// those Docker tags (or the names they resolve to); removals are decided
/// only in a whole pass. `in_use` holds the config digests of images that
/// containers use.
pub fn plan(
    docker: &[DockerImage],
    k8s: &[K8sImage],
    in_use: &BTreeSet<String>,
    only: Option<&[String]>,
) -> Plan {
    let by_name: BTreeMap<&str, &K8sImage> = k8s.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut plan = Plan::default();
    let mut wanted = BTreeSet::new();
    let selected = |tag: &str, name: &str| {
        only.is_none_or(|refs| {
            refs.iter()
                .any(|r| r == tag || k8s_name(r).as_deref() == Some(name))
        })
    };
    for image in docker {
        // A name of this content already in k8s.io, to tag from.
        let mut source: Option<String> = k8s
            .iter()
            .find(|i| {
                i.config.as_deref() == Some(image.id.as_str()) && !i.name.starts_with("sha256:")
            })
            .map(|i| i.name.clone());
        let mut tags: Vec<&String> = image.tags.iter().collect();
        tags.sort();
        for tag in tags {
            let Some(name) = k8s_name(tag) else { continue };
            wanted.insert(name.clone());
            if !selected(tag, &name) {
                continue;
            }
            let there = by_name
                .get(name.as_str())
                .filter(|i| i.config.as_deref() == Some(image.id.as_str()));
            if let Some(there) = there {
                if !there.synced {
                    plan.actions.push(Action::Mark {
                        id: image.id.clone(),
                        name: name.clone(),
                    });
                }
                plan.present.push(name);
                continue;
            }
            match &source {
                Some(from) => plan.actions.push(Action::Tag {
                    id: image.id.clone(),
                    source: from.clone(),
                    name,
                }),
                None => {
                    plan.actions.push(Action::Import {
                        id: image.id.clone(),
                        docker_tag: tag.clone(),
                        name: name.clone(),
                    });
                    source = Some(name);
                }
            }
        }
    }
    if only.is_none() {
        for image in k8s.iter().filter(|i| i.synced && !wanted.contains(&i.name)) {
            match &image.config {
                Some(config) if in_use.contains(config) => plan.kept.push(Kept {
                    name: image.name.clone(),
                    reason: "a container uses it".into(),
                }),
                _ => {
                    plan.actions.push(Action::Remove {
                        name: image.name.clone(),
                    });
                    // A pull of it through the image endpoint (a `:latest`)
                    // made CRI add `<repository>@<digest>` names of the same
                    // image: they go with it.
                    let repository = super::reference::split_tag(&image.name).0;
                    for pulled in k8s.iter().filter(|i| {
                        !i.synced
                            && i.config == image.config
                            && i.name
                                .strip_prefix(repository)
                                .is_some_and(|rest| rest.starts_with("@sha256:"))
                    }) {
                        plan.actions.push(Action::Remove {
                            name: pulled.name.clone(),
                        });
                    }
                }
            }
        }
    }
    plan
}

/// Each Docker tag with its state in the cluster.
pub fn entries(docker: &[DockerImage], k8s: &[K8sImage]) -> Vec<ImageEntry> {
    let by_name: BTreeMap<&str, &K8sImage> = k8s.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut entries = Vec::new();
    for image in docker {
        for tag in &image.tags {
            let name = k8s_name(tag);
            let (synced, why) = match name.as_deref().map(|n| by_name.get(n)) {
                None => (false, Some("not a name Kubernetes can pull".to_string())),
                Some(None) => (
                    false,
                    Some("not in containerd's k8s.io namespace yet".into()),
                ),
                Some(Some(found)) if found.config.as_deref() == Some(image.id.as_str()) => {
                    (true, None)
                }
                Some(Some(_)) => (
                    false,
                    Some("k8s.io holds another image under this name".into()),
                ),
            };
            entries.push(ImageEntry {
                docker_ref: tag.clone(),
                k8s_name: name,
                image_id: image.id.clone(),
                size: image.size,
                synced,
                why,
            });
        }
    }
    entries.sort_by(|a, b| a.docker_ref.cmp(&b.docker_ref));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(id: &str, tags: &[&str]) -> DockerImage {
        DockerImage {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            size: 1,
        }
    }

    fn k8s(name: &str, config: &str, synced: bool) -> K8sImage {
        K8sImage {
            name: name.into(),
            config: Some(config.into()),
            synced,
        }
    }

    const APP: &str = "docker.io/library/myapp:dev";

    #[test]
    fn a_new_image_is_imported_once_and_its_other_tags_are_tagged() {
        let plan = plan(
            &[docker(
                "sha256:a",
                &["myapp:dev", "myapp:latest", "user/app"],
            )],
            &[],
            &BTreeSet::new(),
            None,
        );
        assert_eq!(
            plan.actions,
            vec![
                Action::Import {
                    id: "sha256:a".into(),
                    docker_tag: "myapp:dev".into(),
                    name: APP.into()
                },
                Action::Tag {
                    id: "sha256:a".into(),
                    source: APP.into(),
                    name: "docker.io/library/myapp:latest".into()
                },
                Action::Tag {
                    id: "sha256:a".into(),
                    source: APP.into(),
                    name: "docker.io/user/app:latest".into()
                },
            ]
        );
    }

    #[test]
    fn the_same_image_under_its_name_is_skipped() {
        let plan = plan(
            &[docker("sha256:a", &["myapp:dev"])],
            &[k8s(APP, "sha256:a", true)],
            &BTreeSet::new(),
            None,
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.present, vec![APP.to_string()]);
    }

    #[test]
    fn the_same_image_without_our_label_is_labelled_again() {
        let plan = plan(
            &[docker("sha256:a", &["myapp:dev"])],
            &[k8s(APP, "sha256:a", false)],
            &BTreeSet::new(),
            None,
        );
        assert_eq!(
            plan.actions,
            vec![Action::Mark {
                id: "sha256:a".into(),
                name: APP.into()
            }]
        );
        assert_eq!(plan.present, vec![APP.to_string()]);
    }

    #[test]
    fn a_new_tag_of_an_image_there_is_only_a_tag() {
        let plan = plan(
            &[docker("sha256:a", &["myapp:dev", "myapp:v2"])],
            &[k8s(APP, "sha256:a", true)],
            &BTreeSet::new(),
            None,
        );
        assert_eq!(
            plan.actions,
            vec![Action::Tag {
                id: "sha256:a".into(),
                source: APP.into(),
                name: "docker.io/library/myapp:v2".into()
            }]
        );
    }

    #[test]
    fn a_rebuilt_tag_is_imported_again() {
        let plan = plan(
            &[docker("sha256:b", &["myapp:dev"])],
            &[k8s(APP, "sha256:a", true)],
            &BTreeSet::new(),
            None,
        );
        assert!(matches!(&plan.actions[..], [Action::Import { id, .. }] if id == "sha256:b"));
    }

    #[test]
    fn a_name_of_ours_docker_dropped_is_removed_unless_in_use() {
        let ours = k8s(APP, "sha256:a", true);
        let pulled = k8s("docker.io/library/redis:7", "sha256:r", false);
        let removed = plan(&[], &[ours.clone(), pulled.clone()], &BTreeSet::new(), None);
        assert_eq!(
            removed.actions,
            vec![Action::Remove { name: APP.into() }],
            "only ours goes"
        );
        let used = BTreeSet::from(["sha256:a".to_string()]);
        let kept = plan(&[], std::slice::from_ref(&ours), &used, None);
        assert!(kept.actions.is_empty());
        assert_eq!(kept.kept[0].name, APP);
        let partial = plan(&[], &[ours], &BTreeSet::new(), Some(&["other:1".into()]));
        assert!(
            partial.actions.is_empty(),
            "a pass for some refs removes nothing"
        );
    }

    #[test]
    fn the_digest_names_a_pull_added_go_with_the_name() {
        let ours = k8s("docker.io/library/app:latest", "sha256:a", true);
        let pulled = k8s("docker.io/library/app@sha256:d1", "sha256:a", false);
        let other = k8s("docker.io/library/app@sha256:d2", "sha256:b", false);
        let plan = plan(&[], &[ours, pulled, other], &BTreeSet::new(), None);
        assert_eq!(
            plan.actions,
            vec![
                Action::Remove {
                    name: "docker.io/library/app:latest".into()
                },
                Action::Remove {
                    name: "docker.io/library/app@sha256:d1".into()
                },
            ]
        );
    }

    #[test]
    fn a_pass_for_some_refs_touches_only_those() {
        let images = [docker("sha256:a", &["a:1"]), docker("sha256:b", &["b:1"])];
        let only = ["docker.io/library/b:1".to_string()];
        let plan = plan(&images, &[], &BTreeSet::new(), Some(&only));
        assert!(
            matches!(&plan.actions[..], [Action::Import { docker_tag, .. }] if docker_tag == "b:1")
        );
    }

    #[test]
    fn cri_image_id_names_are_never_a_source() {
        let plan = plan(
            &[docker("sha256:a", &["myapp:dev"])],
            &[k8s("sha256:a", "sha256:a", false)],
            &BTreeSet::new(),
            None,
        );
        assert!(matches!(&plan.actions[..], [Action::Import { .. }]));
    }

    #[test]
    fn entries_say_whether_each_tag_is_synced_and_why_not() {
        let images = [docker(
            "sha256:a",
            &["myapp:dev", "other:1", "<none>:<none>"],
        )];
        let there = [
            k8s(APP, "sha256:a", true),
            k8s("docker.io/library/other:1", "sha256:z", false),
        ];
        let list = entries(&images, &there);
        let by: BTreeMap<_, _> = list.iter().map(|e| (e.docker_ref.as_str(), e)).collect();
        assert!(by["myapp:dev"].synced);
        assert!(
            by["other:1"]
                .why
                .as_deref()
                .unwrap()
                .contains("another image")
        );
        assert!(!by["<none>:<none>"].synced);
    }
}

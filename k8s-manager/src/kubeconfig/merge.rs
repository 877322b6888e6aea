//! The merge and remove rules, as pure functions on documents (no IO), in the
//! spirit of kind's small and exact kubeconfig merge:
//!
//! - merge upserts every cluster, user and context of the source by name: an
//!   entry of the same name is replaced where it stands, a new one is
//!   appended; every other entry, and everything else in the file, is left as
//!   it was;
//! - remove deletes one context, plus its cluster and user unless another
//!   context still uses them;
//! - `current-context` is only set or cleared when it is ours to change.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::document::{Kubeconfig, Section, entry_name};

/// When a merge sets `current-context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CurrentContextMode {
    /// Only when none is set (unset, null or ""): never take the user's
    /// context away from them.
    #[default]
    Auto,
    Always,
    Never,
}

impl FromStr for CurrentContextMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CurrentContextMode::Auto),
            "always" => Ok(CurrentContextMode::Always),
            "never" => Ok(CurrentContextMode::Never),
            other => Err(format!(
                "unknown current-context mode {other:?}: expected auto, always or never"
            )),
        }
    }
}

impl fmt::Display for CurrentContextMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CurrentContextMode::Auto => "auto",
            CurrentContextMode::Always => "always",
            CurrentContextMode::Never => "never",
        })
    }
}

/// One named entry of a kubeconfig: `cluster docker-desktop`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct EntryRef {
    pub kind: Section,
    pub name: String,
}

impl EntryRef {
    fn new(kind: Section, name: &str) -> Self {
        EntryRef {
            kind,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Section::Cluster => "cluster",
            Section::Context => "context",
            Section::User => "user",
        };
        write!(f, "{kind} {}", self.name)
    }
}

/// What a merge changed in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeChanges {
    pub added: Vec<EntryRef>,
    /// Entries of ours that existed with other content (an old server or CA).
    pub replaced: Vec<EntryRef>,
    /// Entries of ours that were already exactly as wanted.
    pub unchanged: Vec<EntryRef>,
    /// The new `current-context`, when the merge set it.
    pub current_context_set: Option<String>,
}

impl MergeChanges {
    /// Whether the document differs from before the merge.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.current_context_set.is_none()
    }
}

/// The names a source kubeconfig brings: "our entries".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnNames {
    names: Vec<EntryRef>,
}

impl OwnNames {
    pub fn of(src: &Kubeconfig) -> Self {
        let names = Section::ALL
            .into_iter()
            .flat_map(|section| {
                src.names(section)
                    .map(move |name| EntryRef::new(section, name))
            })
            .collect();
        OwnNames { names }
    }

    /// Whether `doc` already holds one of these entries.
    pub fn any_in(&self, doc: &Kubeconfig) -> bool {
        self.names
            .iter()
            .any(|entry| doc.contains(entry.kind, &entry.name))
    }
}

/// Merges `src` into `dest`; see the module documentation for the rules.
pub fn merge(dest: &mut Kubeconfig, src: &Kubeconfig, mode: CurrentContextMode) -> MergeChanges {
    let mut changes = MergeChanges::default();
    for section in Section::ALL {
        // Names are unique in a parsed document (kubectl refuses duplicates,
        // and so does `Kubeconfig::parse`); an entry without a name cannot
        // be matched.
        for entry in src.entries(section) {
            let Some(name) = entry_name(entry) else {
                continue;
            };
            let entry_ref = EntryRef::new(section, name);
            let position = dest
                .entries(section)
                .iter()
                .position(|e| entry_name(e) == Some(name));
            match position {
                None => {
                    dest.push_entry(section, entry.clone());
                    changes.added.push(entry_ref);
                }
                Some(i) if dest.entries(section)[i] == *entry => changes.unchanged.push(entry_ref),
                Some(i) => {
                    dest.replace_entry(section, i, entry.clone());
                    changes.replaced.push(entry_ref);
                }
            }
        }
    }

    // The source's own current context, else its first context.
    let ours = src
        .current_context()
        .or_else(|| src.names(Section::Context).next())
        .map(str::to_string);
    if let Some(ours) = ours {
        let set = match mode {
            CurrentContextMode::Never => false,
            CurrentContextMode::Auto => dest.current_context().is_none(),
            CurrentContextMode::Always => dest.current_context() != Some(ours.as_str()),
        };
        if set {
            dest.set_current_context(&ours);
            changes.current_context_set = Some(ours);
        }
    }
    changes
}

/// Clusters and users that contexts outside the document (other files of a
/// KUBECONFIG list) point at: removing a context must not take them away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    clusters: HashSet<String>,
    users: HashSet<String>,
}

impl References {
    /// The references of every context of `doc` except `skip_context`.
    pub fn add_from(&mut self, doc: &Kubeconfig, skip_context: &str) {
        for (name, cluster, user) in doc.context_refs() {
            if name == skip_context {
                continue;
            }
            self.clusters.extend(cluster.map(str::to_string));
            self.users.extend(user.map(str::to_string));
        }
    }

    pub fn extend(&mut self, other: &References) {
        self.clusters.extend(other.clusters.iter().cloned());
        self.users.extend(other.users.iter().cloned());
    }
}

/// What a remove changed in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoveChanges {
    pub removed: Vec<EntryRef>,
    /// The context's cluster or user, left in place because another
    /// context still uses it.
    pub kept_shared: Vec<EntryRef>,
    pub cleared_current_context: bool,
}

impl RemoveChanges {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && !self.cleared_current_context
    }
}

/// Removes context `name`, its cluster and its user unless still referenced
/// (by a remaining context of `doc`, or by `elsewhere`), and clears
/// `current-context` only if it named `name`. Absent entries are a no-op.
pub fn remove_context(doc: &mut Kubeconfig, name: &str, elsewhere: &References) -> RemoveChanges {
    let mut changes = RemoveChanges::default();
    let targets = doc
        .context_refs()
        .find(|(context, _, _)| *context == name)
        .map(|(_, cluster, user)| (cluster.map(str::to_string), user.map(str::to_string)));

    if let Some((cluster, user)) = targets {
        if remove_named(doc, Section::Context, name) {
            changes.removed.push(EntryRef::new(Section::Context, name));
        }
        let mut remaining = elsewhere.clone();
        remaining.add_from(doc, name);
        if let Some(cluster) = cluster {
            remove_unless_shared(
                doc,
                Section::Cluster,
                &cluster,
                &remaining.clusters,
                &mut changes,
            );
        }
        if let Some(user) = user {
            remove_unless_shared(doc, Section::User, &user, &remaining.users, &mut changes);
        }
    }

    if doc.current_context() == Some(name) {
        doc.set_current_context("");
        changes.cleared_current_context = true;
    }
    changes
}

fn remove_unless_shared(
    doc: &mut Kubeconfig,
    section: Section,
    name: &str,
    still_used: &HashSet<String>,
    changes: &mut RemoveChanges,
) {
    if !doc.contains(section, name) {
        return;
    }
    if still_used.contains(name) {
        changes.kept_shared.push(EntryRef::new(section, name));
    } else if remove_named(doc, section, name) {
        changes.removed.push(EntryRef::new(section, name));
    }
}

/// Removes every entry called `name` from one list; whether any was there.
fn remove_named(doc: &mut Kubeconfig, section: Section, name: &str) -> bool {
    doc.remove_named(section, name) > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn doc(text: &str) -> Kubeconfig {
        Kubeconfig::parse(text.as_bytes(), Path::new("test")).unwrap()
    }

    const OURS: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: docker-desktop
  cluster:
    server: https://kubernetes.docker.internal:6443
    certificate-authority-data: TkVXLUNB
users:
- name: docker-desktop
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
contexts:
- name: docker-desktop
  context:
    cluster: docker-desktop
    user: docker-desktop
current-context: docker-desktop
"#;

    const USERS_FILE: &str = r#"apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: prod
  cluster:
    server: https://prod.example:443
    extensions:
    - name: note
      extension: {owner: sre}
- name: staging
  cluster:
    server: https://staging.example:443
users:
- name: sso
  user:
    auth-provider:
      name: oidc
      config: {client-id: k8s, idp-issuer-url: https://login.example}
contexts:
- name: prod
  context: {cluster: prod, user: sso, namespace: shop}
- name: staging
  context: {cluster: staging, user: sso}
current-context: prod
x-tool-state: {last: prod}
"#;

    fn names(doc: &Kubeconfig, section: Section) -> Vec<&str> {
        doc.names(section).collect()
    }

    #[test]
    fn merge_appends_new_entries_and_keeps_everything_else() {
        let mut dest = doc(USERS_FILE);
        let before = dest.clone();
        let changes = merge(&mut dest, &doc(OURS), CurrentContextMode::Auto);
        assert_eq!(changes.added.len(), 3);
        assert!(changes.replaced.is_empty());
        assert_eq!(
            names(&dest, Section::Cluster),
            ["prod", "staging", "docker-desktop"]
        );
        assert_eq!(names(&dest, Section::User), ["sso", "docker-desktop"]);
        assert_eq!(
            names(&dest, Section::Context),
            ["prod", "staging", "docker-desktop"]
        );
        // Auto: the user had a current context, it stays.
        assert_eq!(dest.current_context(), Some("prod"));
        assert_eq!(changes.current_context_set, None);
        for key in ["preferences", "x-tool-state", "apiVersion", "kind"] {
            assert_eq!(dest.root()[key], before.root()[key], "{key}");
        }
        for section in Section::ALL {
            assert_eq!(
                dest.entries(section)[..before.entries(section).len()],
                *before.entries(section)
            );
        }
        let keys: Vec<&String> = dest.root().keys().collect();
        let keys_before: Vec<&String> = before.root().keys().collect();
        assert_eq!(keys, keys_before);
    }

    #[test]
    fn merge_replaces_stale_entries_in_place() {
        let stale = USERS_FILE.replace(
            "- name: staging\n  cluster:\n    server: https://staging.example:443\n",
            "- name: docker-desktop\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: T0xE\n- name: staging\n  cluster:\n    server: https://staging.example:443\n",
        );
        let mut dest = doc(&stale);
        let changes = merge(&mut dest, &doc(OURS), CurrentContextMode::Auto);
        assert_eq!(
            changes.replaced,
            [EntryRef::new(Section::Cluster, "docker-desktop")]
        );
        assert_eq!(
            names(&dest, Section::Cluster),
            ["prod", "docker-desktop", "staging"]
        );
        assert_eq!(
            dest.entries(Section::Cluster)[1]["cluster"]["server"],
            json!("https://kubernetes.docker.internal:6443")
        );
    }

    #[test]
    fn merge_twice_changes_nothing_the_second_time() {
        let mut dest = doc(USERS_FILE);
        merge(&mut dest, &doc(OURS), CurrentContextMode::Always);
        let once = dest.clone();
        let changes = merge(&mut dest, &doc(OURS), CurrentContextMode::Always);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(changes.unchanged.len(), 3);
        assert_eq!(dest, once);
    }

    #[test]
    fn current_context_modes() {
        let cases = [
            (
                "current-context: prod\n",
                CurrentContextMode::Auto,
                Some("prod"),
            ),
            (
                "current-context: \"\"\n",
                CurrentContextMode::Auto,
                Some("docker-desktop"),
            ),
            (
                "current-context:\n",
                CurrentContextMode::Auto,
                Some("docker-desktop"),
            ),
            (
                "kind: Config\n",
                CurrentContextMode::Auto,
                Some("docker-desktop"),
            ),
            (
                "current-context: prod\n",
                CurrentContextMode::Always,
                Some("docker-desktop"),
            ),
            (
                "current-context: prod\n",
                CurrentContextMode::Never,
                Some("prod"),
            ),
            ("kind: Config\n", CurrentContextMode::Never, None),
            // A context defined in another file of a KUBECONFIG list is not ours to "fix".
            (
                "current-context: defined-elsewhere\n",
                CurrentContextMode::Auto,
                Some("defined-elsewhere"),
            ),
        ];
        for (text, mode, want) in cases {
            let mut dest = doc(text);
            merge(&mut dest, &doc(OURS), mode);
            assert_eq!(dest.current_context(), want, "{text:?} {mode}");
        }
    }

    #[test]
    fn current_context_set_in_place() {
        let mut dest = doc("current-context: \"\"\nkind: Config\n");
        merge(&mut dest, &doc(OURS), CurrentContextMode::Auto);
        assert_eq!(
            dest.root().keys().next().map(String::as_str),
            Some("current-context")
        );
    }

    #[test]
    fn source_without_current_context_offers_its_first_context() {
        let src = doc(&OURS.replace("current-context: docker-desktop\n", ""));
        let mut dest = Kubeconfig::empty();
        let changes = merge(&mut dest, &src, CurrentContextMode::Auto);
        assert_eq!(
            changes.current_context_set.as_deref(),
            Some("docker-desktop")
        );
    }

    #[test]
    fn merge_into_empty_gives_a_kubectl_shaped_file() {
        let mut dest = Kubeconfig::empty();
        merge(&mut dest, &doc(OURS), CurrentContextMode::Auto);
        let keys: Vec<&str> = dest.root().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "apiVersion",
                "kind",
                "clusters",
                "contexts",
                "users",
                "current-context"
            ]
        );
    }

    #[test]
    fn merge_then_remove_gives_back_the_original() {
        for text in [
            USERS_FILE,
            &USERS_FILE.replace("current-context: prod\n", "current-context: \"\"\n"),
        ] {
            for mode in [CurrentContextMode::Auto, CurrentContextMode::Never] {
                let original = doc(text);
                let mut dest = original.clone();
                merge(&mut dest, &doc(OURS), mode);
                assert_ne!(dest, original);
                let changes = remove_context(&mut dest, "docker-desktop", &References::default());
                assert_eq!(changes.removed.len(), 3);
                assert_eq!(dest, original, "{mode}");
            }
        }
    }

    #[test]
    fn remove_keeps_cluster_and_user_still_used_by_another_context() {
        let mut dest = doc(USERS_FILE);
        merge(&mut dest, &doc(OURS), CurrentContextMode::Always);
        // The user points a context of their own at our cluster.
        dest.push_entry(
            Section::Context,
            json!({
                "name": "mine", "context": {"cluster": "docker-desktop", "user": "sso"}
            }),
        );
        let changes = remove_context(&mut dest, "docker-desktop", &References::default());
        assert_eq!(
            changes.removed,
            [
                EntryRef::new(Section::Context, "docker-desktop"),
                EntryRef::new(Section::User, "docker-desktop")
            ]
        );
        assert_eq!(
            changes.kept_shared,
            [EntryRef::new(Section::Cluster, "docker-desktop")]
        );
        assert!(changes.cleared_current_context);
        assert_eq!(dest.current_context(), None);
        assert!(dest.contains(Section::Cluster, "docker-desktop"));
    }

    #[test]
    fn remove_keeps_what_another_file_still_uses() {
        let mut dest = doc(OURS);
        let mut elsewhere = References::default();
        elsewhere.add_from(
            &doc("contexts:\n- name: other\n  context: {cluster: x, user: docker-desktop}\n"),
            "docker-desktop",
        );
        let changes = remove_context(&mut dest, "docker-desktop", &elsewhere);
        assert_eq!(
            changes.kept_shared,
            [EntryRef::new(Section::User, "docker-desktop")]
        );
        assert!(dest.contains(Section::User, "docker-desktop"));
        assert!(!dest.contains(Section::Cluster, "docker-desktop"));
    }

    #[test]
    fn remove_clears_current_context_only_if_it_was_ours() {
        let mut dest = doc(USERS_FILE);
        merge(&mut dest, &doc(OURS), CurrentContextMode::Never);
        let changes = remove_context(&mut dest, "docker-desktop", &References::default());
        assert!(!changes.cleared_current_context);
        assert_eq!(dest.current_context(), Some("prod"));
    }

    #[test]
    fn removing_an_absent_context_is_a_no_op() {
        let original = doc(USERS_FILE);
        let mut dest = original.clone();
        let changes = remove_context(&mut dest, "docker-desktop", &References::default());
        assert!(changes.is_empty());
        assert_eq!(dest, original);

        let mut empty = Kubeconfig::empty();
        assert!(remove_context(&mut empty, "docker-desktop", &References::default()).is_empty());
        assert!(empty.root().is_empty());
    }

    #[test]
    fn a_dangling_current_context_of_ours_is_cleared() {
        let mut dest = doc("current-context: docker-desktop\ncontexts: []\n");
        let changes = remove_context(&mut dest, "docker-desktop", &References::default());
        assert!(changes.cleared_current_context && changes.removed.is_empty());
    }

    #[test]
    fn own_names_find_our_entries() {
        let names = OwnNames::of(&doc(OURS));
        assert!(!names.any_in(&doc(USERS_FILE)));
        assert!(names.any_in(&doc("users:\n- name: docker-desktop\n  user: {}\n")));
    }

    #[test]
    fn mode_parses_from_the_command_line_words() {
        for mode in [
            CurrentContextMode::Auto,
            CurrentContextMode::Always,
            CurrentContextMode::Never,
        ] {
            assert_eq!(mode.to_string().parse::<CurrentContextMode>(), Ok(mode));
        }
        assert!("sometimes".parse::<CurrentContextMode>().is_err());
    }
}

//! The top-level names of a kubeconfig that every part of the editor shares:
//! its three named lists and `current-context`. Below the document and the
//! in-place editor (`edit`, `layout`, `outline`), which all read them.

/// The three named lists of a kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    Cluster,
    Context,
    User,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::Cluster, Section::Context, Section::User];

    /// The position in [`Section::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The top-level key holding the list (`clusters`, ...).
    pub fn list_key(self) -> &'static str {
        match self {
            Section::Cluster => "clusters",
            Section::Context => "contexts",
            Section::User => "users",
        }
    }
}

pub(crate) const CURRENT_CONTEXT: &str = "current-context";

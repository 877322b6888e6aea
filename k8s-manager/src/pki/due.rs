//! What a renewal renews: pure decisions over the statuses of
//! [`super::check`] and [`super::kubeconfigs::check`].

use std::path::Path;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{CertState, CertStatus};
use crate::error::chain;

/// From this long before a CA expires, its rotation is asked for.
pub const CA_WARNING: time::Duration = time::Duration::days(365);
/// What to do about a CA that expires within [`CA_WARNING`]: rotate it in
/// place (`k8s-manager certs rotate-ca`), workloads and data kept.
pub const CA_ADVICE: &str = "run `k8s-manager certs rotate-ca` before that date (the cluster keeps running, its workloads and data are kept)";

/// What the PKI and the kubeconfigs hold now.
pub struct Statuses {
    pub leaves: Vec<CertStatus>,
    pub kubeconfigs: Vec<CertStatus>,
}

impl Statuses {
    /// Reads the PKI folder `pki` and the kubeconfigs in `kubeconfigs`.
    pub fn read(
        pki: &Path,
        kubeconfigs: &Path,
        renew_within: time::Duration,
    ) -> Result<Statuses, String> {
        let now = OffsetDateTime::now_utc();
        Ok(Statuses {
            leaves: super::check(pki, now, renew_within).map_err(|e| chain(&e))?,
            kubeconfigs: super::kubeconfigs::check(pki, kubeconfigs, now, renew_within)
                .map_err(|e| chain(&e))?,
        })
    }

    /// The CAs that expire within [`CA_WARNING`], with what to do.
    pub fn ca_warnings(&self) -> Vec<String> {
        self.leaves
            .iter()
            .filter(|s| s.ca.is_none())
            .filter_map(|s| {
                let days = s.days_left?;
                (days < CA_WARNING.whole_days()).then(|| {
                    let not_after = s.not_after.and_then(|t| t.format(&Rfc3339).ok());
                    format!(
                        "CA {} expires on {} ({days} days): {CA_ADVICE}",
                        s.name,
                        not_after.unwrap_or_default()
                    )
                })
            })
            .collect()
    }
}

/// The certificates to re-issue: leaves of the PKI folder by declared name
/// (`etcd/server`), kubeconfigs by declared name (`admin`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub leaves: Vec<String>,
    pub kubeconfigs: Vec<String>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty() && self.kubeconfigs.is_empty()
    }

    /// The names the renewed files go under in [`super::usage`]:
    /// certificates by name, kubeconfigs by file (`admin.conf`).
    pub fn files(&self) -> Vec<String> {
        self.leaves
            .iter()
            .cloned()
            .chain(self.kubeconfigs.iter().map(|k| format!("{k}.conf")))
            .collect()
    }
}

fn is_due(status: &CertStatus) -> bool {
    matches!(status.state, CertState::RenewSoon | CertState::Expired)
}

/// What is due: the leaves and kubeconfigs that expire within the window
/// (their statuses say `renew-soon`) or have expired. CAs are never due here
/// (they are told a year ahead, see `cluster::renewal`); a missing or invalid file is not
/// renewed in place either: the next `enable` makes it again.
pub fn due(leaves: &[CertStatus], kubeconfigs: &[CertStatus]) -> Selection {
    Selection {
        leaves: leaves
            .iter()
            .filter(|s| s.ca.is_some() && is_due(s))
            .map(|s| s.name.clone())
            .collect(),
        kubeconfigs: kubeconfigs
            .iter()
            .filter(|s| is_due(s))
            .filter_map(|s| s.name.strip_suffix(".conf").map(str::to_string))
            .collect(),
    }
}

/// What `certs renew NAME...` names: each a leaf (`apiserver`) or a
/// kubeconfig (`admin` or `admin.conf`); every one of both when `names` is
/// empty. An unknown name is an error naming the known ones.
pub fn named(
    names: &[String],
    leaves: &[String],
    kubeconfigs: &[String],
) -> Result<Selection, String> {
    if names.is_empty() {
        return Ok(Selection {
            leaves: leaves.to_vec(),
            kubeconfigs: kubeconfigs.to_vec(),
        });
    }
    let mut selection = Selection::default();
    for name in names {
        let bare = name.strip_suffix(".conf").unwrap_or(name);
        let (list, found) = if leaves.iter().any(|l| l == name) {
            (&mut selection.leaves, name.as_str())
        } else if kubeconfigs.iter().any(|k| k == bare) {
            (&mut selection.kubeconfigs, bare)
        } else {
            let known: Vec<String> = leaves
                .iter()
                .cloned()
                .chain(kubeconfigs.iter().map(|k| format!("{k}.conf")))
                .collect();
            return Err(format!(
                "unknown certificate {name:?}; the renewable ones are: {}",
                known.join(", ")
            ));
        };
        if !list.iter().any(|l| l == found) {
            list.push(found.to_string());
        }
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, ca: Option<&str>, state: CertState) -> CertStatus {
        CertStatus {
            name: name.into(),
            ca: ca.map(str::to_string),
            not_after: None,
            days_left: None,
            state,
            problem: None,
        }
    }

    #[test]
    fn due_are_the_leaves_and_kubeconfigs_in_the_window_or_expired() {
        let leaves = [
            status("ca", None, CertState::Expired),
            status("apiserver", Some("ca"), CertState::RenewSoon),
            status("etcd/server", Some("etcd/ca"), CertState::Ok),
            status("kubelet", Some("ca"), CertState::Expired),
            status(
                "front-proxy-client",
                Some("front-proxy-ca"),
                CertState::Invalid,
            ),
        ];
        let kubeconfigs = [
            status("admin.conf", Some("ca"), CertState::RenewSoon),
            status("kubelet.conf", Some("ca"), CertState::Missing),
        ];
        let selection = due(&leaves, &kubeconfigs);
        assert_eq!(selection.leaves, ["apiserver", "kubelet"]);
        assert_eq!(selection.kubeconfigs, ["admin"]);
        assert_eq!(selection.files(), ["apiserver", "kubelet", "admin.conf"]);
        assert!(due(&leaves[2..3], &[]).is_empty());
    }

    #[test]
    fn named_takes_leaves_and_kubeconfigs_each_once() {
        let leaves = vec!["apiserver".to_string(), "kubelet".to_string()];
        let kubeconfigs = vec!["admin".to_string(), "kubelet".to_string()];
        let names: Vec<String> = ["kubelet", "admin.conf", "kubelet.conf", "admin"]
            .map(String::from)
            .to_vec();
        let selection = named(&names, &leaves, &kubeconfigs).unwrap();
        assert_eq!(selection.leaves, ["kubelet"]);
        assert_eq!(selection.kubeconfigs, ["admin", "kubelet"]);
        let all = named(&[], &leaves, &kubeconfigs).unwrap();
        assert_eq!(all.leaves, leaves);
        assert_eq!(all.kubeconfigs, kubeconfigs);
        let err = named(&["etcd/ca".into()], &leaves, &kubeconfigs).unwrap_err();
        assert!(
            err.contains("apiserver, kubelet, admin.conf, kubelet.conf"),
            "{err}"
        );
    }
}

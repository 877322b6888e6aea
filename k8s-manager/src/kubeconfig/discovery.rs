//! Finding the Windows user's kubeconfig from inside the VM.
//!
//! kubectl on Windows reads `%KUBECONFIG%`, else `%USERPROFILE%\.kube\config`.
//! From the VM we see the host's drives under a mount root (`/mnt/c/...` in
//! WSL) and only what the host hands over of its environment. The rules, in
//! order, first match wins:
//! 1. an explicit setting (a path or a list, VM or Windows style);
//! 2. the host's `KUBECONFIG`, as the host handed it over (Windows style);
//! 3. the host's `USERPROFILE` (`C:\Users\me`, or already a VM path) + `.kube\config`;
//! 4. the host's `USERNAME`, when `<mount>/c/Users/<name>` exists;
//! 5. the only real profile under `<mount>/c/Users`; with several, the only
//!    one that already has a `.kube\config`.
//!
//! The function reads only the folders under the mount root it is given,
//! so tests run it on temporary folders.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::KubeconfigError;
use super::host::{HostKubeconfig, host_path_to_vm};

/// Profile folders Windows itself creates, never a person's: the first four
/// are in every install (two are junctions), the others appear after
/// setup or with Application Guard.
const SYSTEM_PROFILES: [&str; 7] = [
    "Public",
    "Default",
    "Default User",
    "All Users",
    "defaultuser0",
    "Default.migrated",
    "WDAGUtilityAccount",
];

/// What the VM knows about the host; each value is what the host handed
/// over, empty strings count as unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnvironment {
    /// A configured kubeconfig path or list, overriding everything.
    pub explicit: Option<String>,
    /// The host's `%KUBECONFIG%`.
    pub kubeconfig: Option<String>,
    /// The host's `%USERPROFILE%`.
    pub user_profile: Option<String>,
    /// The host's `%USERNAME%`.
    pub user_name: Option<String>,
    /// Where the host's drives are mounted in the VM (`/mnt` in WSL).
    pub mount_root: PathBuf,
}

impl HostEnvironment {
    pub const DEFAULT_MOUNT_ROOT: &'static str = "/mnt";
}

impl Default for HostEnvironment {
    fn default() -> Self {
        HostEnvironment {
            explicit: None,
            kubeconfig: None,
            user_profile: None,
            user_name: None,
            mount_root: PathBuf::from(Self::DEFAULT_MOUNT_ROOT),
        }
    }
}

/// Which rule found the kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoverySource {
    Explicit,
    HostKubeconfig,
    HostUserProfile,
    HostUserName,
    OnlyProfile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// The kubeconfig file(s), as VM paths, in kubectl's order.
    pub files: Vec<PathBuf>,
    pub source: DiscoverySource,
    /// Why these files, in words.
    pub reason: String,
}

impl Discovery {
    /// The files as a merge destination.
    pub fn destination(&self) -> Result<HostKubeconfig, KubeconfigError> {
        HostKubeconfig::from_files(self.files.clone())
    }
}

/// Finds the Windows user's kubeconfig; see the module documentation.
pub fn discover(env: &HostEnvironment) -> Result<Discovery, KubeconfigError> {
    let root = env.mount_root.as_path();
    let set = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };

    if let Some(explicit) = set(&env.explicit) {
        return found(
            HostKubeconfig::parse(&explicit, root)?,
            DiscoverySource::Explicit,
            format!("set explicitly to {explicit:?}"),
        );
    }
    if let Some(list) = set(&env.kubeconfig) {
        return found(
            HostKubeconfig::parse(&list, root)?,
            DiscoverySource::HostKubeconfig,
            format!("the host's KUBECONFIG is {list:?}"),
        );
    }
    if let Some(profile) = set(&env.user_profile) {
        let dir = host_path_to_vm(&profile, root)?;
        return found(
            HostKubeconfig::from_files(vec![kubeconfig_in(&dir)])?,
            DiscoverySource::HostUserProfile,
            format!("the host's USERPROFILE is {profile:?}"),
        );
    }

    let users = root.join("c").join("Users");
    // A user name is one folder name; anything else (`..\\x`, `a/b`) would
    // lead out of the profiles folder, and is not a Windows user name.
    let one_name = |name: &String| {
        !matches!(name.as_str(), "." | "..") && !name.contains(['/', '\\', ':', '\0'])
    };
    if let Some(name) = set(&env.user_name).filter(one_name) {
        let dir = users.join(&name);
        if dir.is_dir() {
            return found(
                HostKubeconfig::from_files(vec![kubeconfig_in(&dir)])?,
                DiscoverySource::HostUserName,
                format!(
                    "the host's USERNAME is {name:?} and {} exists",
                    dir.display()
                ),
            );
        }
    }

    let profiles = person_profiles(&users)?;
    let chosen = match profiles.as_slice() {
        [] => return Err(KubeconfigError::NoHostProfile { users_dir: users }),
        [only] => (
            only.clone(),
            format!("{} is the only user profile", users.join(only).display()),
        ),
        several => {
            let with_config: Vec<&String> = several
                .iter()
                .filter(|p| kubeconfig_in(&users.join(p)).is_file())
                .collect();
            match with_config.as_slice() {
                [only] => (
                    (*only).clone(),
                    format!(
                        "{} is the only user profile with a .kube\\config",
                        users.join(only).display()
                    ),
                ),
                _ => {
                    return Err(KubeconfigError::AmbiguousHostProfile {
                        users_dir: users,
                        candidates: profiles.clone(),
                    });
                }
            }
        }
    };
    let (name, reason) = chosen;
    found(
        HostKubeconfig::from_files(vec![kubeconfig_in(&users.join(name))])?,
        DiscoverySource::OnlyProfile,
        reason,
    )
}

fn found(
    dest: HostKubeconfig,
    source: DiscoverySource,
    reason: String,
) -> Result<Discovery, KubeconfigError> {
    Ok(Discovery {
        files: dest.files().to_vec(),
        source,
        reason,
    })
}

fn kubeconfig_in(profile: &Path) -> PathBuf {
    profile.join(".kube").join("config")
}

/// The profile folders of people under `users`, sorted. Links (the
/// `Default User`/`All Users` junctions) and files (`desktop.ini`) are not
/// profiles.
fn person_profiles(users: &Path) -> Result<Vec<String>, KubeconfigError> {
    let entries = match fs::read_dir(users) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(KubeconfigError::NoHostProfile {
                users_dir: users.to_path_buf(),
            });
        }
        Err(err) => return Err(KubeconfigError::io("list", users, err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| KubeconfigError::io("list", users, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_dir
            && !SYSTEM_PROFILES
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&name))
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    /// A fake host mount with the given profile folders under c/Users.
    fn host(profiles: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mnt");
        let users = root.join("c/Users");
        fs::create_dir_all(&users).unwrap();
        for profile in profiles {
            fs::create_dir_all(users.join(profile)).unwrap();
        }
        Host { _dir: dir, root }
    }

    fn env(host: &Host) -> HostEnvironment {
        HostEnvironment {
            mount_root: host.root.clone(),
            ..HostEnvironment::default()
        }
    }

    fn config_of(host: &Host, profile: &str) -> PathBuf {
        host.root.join("c/Users").join(profile).join(".kube/config")
    }

    #[test]
    fn explicit_setting_wins() {
        let host = host(&["me"]);
        let found = discover(&HostEnvironment {
            explicit: Some(r"D:\kube\config".into()),
            kubeconfig: Some(r"C:\x".into()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.source, DiscoverySource::Explicit);
        assert_eq!(found.files, [host.root.join("d/kube/config")]);
    }

    #[test]
    fn host_kubeconfig_list_is_translated_to_the_mount() {
        let host = host(&["me"]);
        let found = discover(&HostEnvironment {
            kubeconfig: Some(r"C:\Users\me\.kube\config;D:\x".into()),
            user_profile: Some(r"C:\Users\other".into()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.source, DiscoverySource::HostKubeconfig);
        assert_eq!(found.files, [config_of(&host, "me"), host.root.join("d/x")]);
        assert!(found.reason.contains("KUBECONFIG"));
    }

    #[test]
    fn user_profile_windows_or_already_translated() {
        let host = host(&["me", "other"]);
        let found = discover(&HostEnvironment {
            user_profile: Some(r"C:\Users\me".into()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.source, DiscoverySource::HostUserProfile);
        assert_eq!(found.files, [config_of(&host, "me")]);

        // WSLENV=USERPROFILE/p hands over the translated path.
        let translated = host.root.join("c/Users/other");
        let found = discover(&HostEnvironment {
            user_profile: Some(translated.display().to_string()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.files, [config_of(&host, "other")]);
    }

    #[test]
    fn user_name_when_its_profile_exists() {
        let host = host(&["anna", "bob"]);
        let found = discover(&HostEnvironment {
            user_name: Some("bob".into()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.source, DiscoverySource::HostUserName);
        assert_eq!(found.files, [config_of(&host, "bob")]);

        // A profile folder named unlike the account: fall through to the scan.
        let host = self::host(&["bob.CORP"]);
        let found = discover(&HostEnvironment {
            user_name: Some("bob".into()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.source, DiscoverySource::OnlyProfile);
        assert_eq!(found.files, [config_of(&host, "bob.CORP")]);
    }

    #[test]
    fn a_user_name_never_leads_out_of_the_profiles_folder() {
        let host = host(&["dev"]);
        fs::create_dir_all(host.root.join("etc")).unwrap();
        for name in ["../..", "..", "../../etc", r"..\..\etc", "dev/../..", "."] {
            let found = discover(&HostEnvironment {
                user_name: Some(name.into()),
                ..env(&host)
            })
            .unwrap();
            assert_eq!(found.source, DiscoverySource::OnlyProfile, "{name}");
            assert_eq!(found.files, [config_of(&host, "dev")], "{name}");
        }
    }

    #[test]
    fn only_person_profile_skipping_system_ones() {
        let host = host(&["Public", "Default", "Default User", "All Users", "dev"]);
        fs::write(host.root.join("c/Users/desktop.ini"), b"").unwrap();
        let found = discover(&env(&host)).unwrap();
        assert_eq!(found.source, DiscoverySource::OnlyProfile);
        assert_eq!(found.files, [config_of(&host, "dev")]);
    }

    #[test]
    fn junctions_are_not_profiles() {
        let host = host(&["Default", "dev"]);
        std::os::unix::fs::symlink(
            host.root.join("c/Users/Default"),
            host.root.join("c/Users/Link"),
        )
        .unwrap();
        assert_eq!(
            discover(&env(&host)).unwrap().files,
            [config_of(&host, "dev")]
        );
    }

    #[test]
    fn several_profiles_prefer_the_one_with_a_kubeconfig() {
        let host = host(&["anna", "bob"]);
        let err = discover(&env(&host)).unwrap_err();
        assert!(
            matches!(&err, KubeconfigError::AmbiguousHostProfile { candidates, .. } if candidates == &["anna", "bob"])
        );
        assert!(err.to_string().contains("USERNAME"), "{err}");

        let config = config_of(&host, "bob");
        fs::create_dir_all(config.parent().unwrap()).unwrap();
        fs::write(&config, b"").unwrap();
        let found = discover(&env(&host)).unwrap();
        assert_eq!(found.files, [config]);
    }

    #[test]
    fn no_profile_or_no_mount_is_a_clear_error() {
        let host = host(&["Public"]);
        assert!(matches!(
            discover(&env(&host)),
            Err(KubeconfigError::NoHostProfile { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let err = discover(&HostEnvironment {
            mount_root: dir.path().join("nothing-mounted"),
            ..HostEnvironment::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("nothing-mounted"), "{err}");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let host = host(&["dev"]);
        let found = discover(&HostEnvironment {
            explicit: Some("  ".into()),
            kubeconfig: Some(String::new()),
            ..env(&host)
        })
        .unwrap();
        assert_eq!(found.source, DiscoverySource::OnlyProfile);
        assert_eq!(
            found.destination().unwrap().files(),
            [config_of(&host, "dev")]
        );
    }
}

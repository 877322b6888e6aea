//! The `export` phase's pieces: the kubeconfig users get (context
//! `docker-desktop` by default, the server URL they reach, admin credentials
//! embedded), merged into the user's kubeconfig and the VM user's; and its
//! removal on reset.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::chain;
use crate::kubeconfig::{
    HostEnvironment, HostKubeconfig, Kubeconfig, MergeOptions, RemoveOptions, merge_into_host,
    remove_from_host,
};
use crate::model::config::ClusterConfig;

/// The kubeconfig for users, made from the admin kubeconfig of the PKI: one
/// cluster, user and context, all named `context`.
pub fn user_kubeconfig(
    admin_conf: &Path,
    context: &str,
    server: &str,
) -> Result<Kubeconfig, String> {
    let text = std::fs::read_to_string(admin_conf)
        .map_err(|e| format!("{}: {e}", admin_conf.display()))?;
    let admin: Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", admin_conf.display()))?;
    let ca = &admin["clusters"][0]["cluster"]["certificate-authority-data"];
    let user = &admin["users"][0]["user"];
    if !ca.is_string()
        || !user["client-certificate-data"].is_string()
        || !user["client-key-data"].is_string()
    {
        return Err(format!(
            "{}: lacks embedded CA or client credentials",
            admin_conf.display()
        ));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": context, "user": {
            "client-certificate-data": user["client-certificate-data"],
            "client-key-data": user["client-key-data"],
        }}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    });
    let bytes = serde_json::to_vec(&doc).expect("serialises");
    Kubeconfig::parse(&bytes, admin_conf).map_err(|e| chain(&e))
}

/// Every kubeconfig we merge into: the user's (a path or a KUBECONFIG-style
/// list, Windows paths mapped to their mount) and the VM user's `~/.kube/config`.
pub fn targets(config: &ClusterConfig) -> Result<Vec<HostKubeconfig>, String> {
    let mut targets = Vec::new();
    if let Some(spec) = &config.host_kubeconfig {
        let mount_root = PathBuf::from(HostEnvironment::DEFAULT_MOUNT_ROOT);
        targets.push(HostKubeconfig::parse(spec, &mount_root).map_err(|e| chain(&e))?);
    }
    if config.merge_vm_kubeconfig
        && let Some(home) = std::env::var_os("HOME")
    {
        let own = PathBuf::from(home).join(".kube").join("config");
        let duplicate = targets.iter().any(|t| t.files().contains(&own));
        if !duplicate {
            targets.push(HostKubeconfig::from_files(vec![own]).map_err(|e| chain(&e))?);
        }
    }
    Ok(targets)
}

/// Merges the user kubeconfig into every target; returns the files written.
pub fn merge(config: &ClusterConfig, admin_conf: &Path) -> Result<Vec<PathBuf>, String> {
    let doc = user_kubeconfig(admin_conf, &config.context_name, &config.server_url())?;
    let mut written = Vec::new();
    for target in targets(config)? {
        let report =
            merge_into_host(&doc, &target, &MergeOptions::default()).map_err(|e| chain(&e))?;
        written.push(report.file);
    }
    Ok(written)
}

/// Removes our context (and its cluster and user) from every target.
pub fn remove(config: &ClusterConfig) -> Vec<String> {
    let mut errors = Vec::new();
    match targets(config) {
        Ok(targets) => {
            for target in targets {
                if let Err(err) =
                    remove_from_host(&target, &config.context_name, &RemoveOptions::default())
                {
                    errors.push(chain(&err));
                }
            }
        }
        Err(err) => errors.push(err),
    }
    errors
}

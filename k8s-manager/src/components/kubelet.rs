//! kubelet on containerd's CRI socket. Secure defaults: no anonymous
//! requests, webhook authentication and authorization, no read-only port, a
//! serving certificate from the cluster CA (so the API server verifies it).
//! For a desktop: eviction thresholds low enough that a nearly full laptop
//! disk does not evict every pod, and swap tolerated.

use serde_json::json;

use super::{Component, Context, KUBELET_HEALTHZ_PORT, KUBELET_PORT, Probe, flags, write_config};
use crate::supervisor::ProcessSpec;

pub struct Kubelet;

const CONFIG_FILE: &str = "kubelet.json";

/// Each field of [`Kubelet::config`] (a dotted path) with the flag that
/// would override it, when the manager owns that: a flag wins over the
/// file. `None`: a default the user may change (or no flag sets it). Every
/// field has its row (a test checks it).
const CONFIG_FLAGS: &[(&str, Option<&str>)] = &[
    ("apiVersion", None),
    ("kind", None),
    ("address", Some("address")),
    ("port", Some("port")),
    ("readOnlyPort", Some("read-only-port")),
    ("healthzBindAddress", Some("healthz-bind-address")),
    ("healthzPort", Some("healthz-port")),
    ("authentication.anonymous.enabled", Some("anonymous-auth")),
    (
        "authentication.webhook.enabled",
        Some("authentication-token-webhook"),
    ),
    ("authentication.webhook.cacheTTL", None),
    ("authentication.x509.clientCAFile", Some("client-ca-file")),
    ("authorization.mode", Some("authorization-mode")),
    ("authorization.webhook.cacheAuthorizedTTL", None),
    ("authorization.webhook.cacheUnauthorizedTTL", None),
    ("tlsCertFile", Some("tls-cert-file")),
    ("tlsPrivateKeyFile", Some("tls-private-key-file")),
    ("rotateCertificates", Some("rotate-certificates")),
    ("serverTLSBootstrap", Some("rotate-server-certificates")),
    ("cgroupDriver", Some("cgroup-driver")),
    (
        "containerRuntimeEndpoint",
        Some("container-runtime-endpoint"),
    ),
    ("clusterDNS", Some("cluster-dns")),
    ("clusterDomain", Some("cluster-domain")),
    ("resolvConf", Some("resolv-conf")),
    ("staticPodPath", Some("pod-manifest-path")),
    ("failSwapOn", None),
    ("memorySwap", None),
    ("evictionHard", None),
    ("imageGCHighThresholdPercent", None),
    ("imageGCLowThresholdPercent", None),
    ("failCgroupV1", None),
];

impl Kubelet {
    /// The KubeletConfiguration (JSON is YAML, and kubelet reads either).
    pub fn config(ctx: &Context) -> serde_json::Value {
        let mut config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "0.0.0.0",
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": KUBELET_HEALTHZ_PORT,
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true, "cacheTTL": "0s"},
                "x509": {"clientCAFile": ctx.trust("ca")},
            },
            "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"}},
            "tlsCertFile": ctx.pki("kubelet.crt"),
            "tlsPrivateKeyFile": ctx.pki("kubelet.key"),
            "rotateCertificates": false,
            "serverTLSBootstrap": false,
            "cgroupDriver": ctx.cgroup.driver(),
            "containerRuntimeEndpoint": format!("unix://{}", ctx.config.containerd_socket.display()),
            "clusterDNS": [ctx.config.cluster_dns.to_string()],
            "clusterDomain": ctx.config.cluster_domain,
            "resolvConf": ctx.resolv_conf.display().to_string(),
            "staticPodPath": "",
            "failSwapOn": false,
            "memorySwap": {"swapBehavior": "NoSwap"},
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        });
        // cgroup v1 is deprecated; from v1.35 kubelet refuses it unless told.
        // The field exists from v1.31, so only name it there.
        if !ctx.cgroup.v2 && minor_version(&ctx.kubernetes_version).is_some_and(|m| m >= 31) {
            config["failCgroupV1"] = json!(false);
        }
        config
    }
}

fn minor_version(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

impl Component for Kubelet {
    fn stop_grace(&self) -> std::time::Duration {
        super::STATELESS_STOP_GRACE
    }

    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn needs(&self) -> &'static [&'static dyn Component] {
        &[&super::ApiServer]
    }

    fn prepare(&self, ctx: &Context) -> std::io::Result<()> {
        crate::fsutil::create_dir_all_mode(&ctx.paths.kubelet_root, 0o700)?;
        let yaml = serde_json::to_string_pretty(&Kubelet::config(ctx)).expect("serialises");
        write_config(ctx, CONFIG_FILE, &yaml).map(|_| ())
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        ctx.spec(
            "kubelet",
            flags([
                (
                    "config",
                    ctx.paths
                        .component_config
                        .join(CONFIG_FILE)
                        .display()
                        .to_string(),
                ),
                ("kubeconfig", ctx.kubeconfig("kubelet")),
                ("root-dir", ctx.paths.kubelet_root.display().to_string()),
                ("hostname-override", ctx.config.node_name.clone()),
                ("node-ip", ctx.advertise_address.to_string()),
                ("v", "1".into()),
            ]),
        )
    }

    /// Its log level: ours is `--v=1`, a user's comes after.
    fn defaults(&self) -> &'static [&'static str] {
        &["v"]
    }

    fn config_flags(&self) -> Vec<&'static str> {
        CONFIG_FLAGS.iter().filter_map(|(_, flag)| *flag).collect()
    }

    fn probe(&self, _ctx: &Context) -> Probe {
        Probe::http(format!("http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::Cgroups;
    use crate::components::test_support::{context, has_flag};

    #[test]
    fn secure_kubelet_configuration() {
        let ctx = context(std::path::Path::new("/s"));
        let config = Kubelet::config(&ctx);
        assert_eq!(config["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(config["authorization"]["mode"], "Webhook");
        assert_eq!(config["readOnlyPort"], 0);
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(
            config["containerRuntimeEndpoint"],
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(config["clusterDNS"][0], "10.96.0.10");
        assert_eq!(config["tlsCertFile"], "/s/pki/kubelet.crt");
        let spec = Kubelet.spec(&ctx);
        assert!(has_flag(&spec, "--node-ip=192.0.2.10"));
        assert!(has_flag(&spec, "--hostname-override=docker-desktop"));
        // Read at start only: new contents restart it.
        let inputs: Vec<String> = spec
            .inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            inputs.contains(&"/s/kubeconfig/kubelet.conf".to_string()),
            "{inputs:?}"
        );
        assert!(
            inputs.iter().any(|p| p.starts_with("/s/config/")),
            "{inputs:?}"
        );
        // Its serving certificate too (see pki::usage), and the trust bundle
        // of its client CA (changed by a CA rotation), not the CA itself.
        let pki: Vec<&String> = inputs.iter().filter(|p| p.starts_with("/s/pki/")).collect();
        assert_eq!(
            pki,
            [
                "/s/pki/kubelet.crt",
                "/s/pki/kubelet.key",
                "/s/pki/trust/ca.crt"
            ]
        );
    }

    #[test]
    fn every_configuration_field_says_whether_its_flag_is_owned() {
        // cgroup v1 on v1.34: every field there is.
        let config = Kubelet::config(&context(std::path::Path::new("/s")));
        crate::components::test_support::assert_every_field_has_its_row(&config, CONFIG_FLAGS);
    }

    #[test]
    fn cgroup_v1_is_allowed_where_the_field_exists() {
        let mut ctx = context(std::path::Path::new("/s"));
        assert_eq!(Kubelet::config(&ctx)["failCgroupV1"], false);
        ctx.kubernetes_version = "v1.30.2".into();
        assert!(Kubelet::config(&ctx).get("failCgroupV1").is_none());
        ctx.kubernetes_version = "v1.35.4".into();
        ctx.cgroup = Cgroups {
            v2: true,
            systemd: true,
        };
        let config = Kubelet::config(&ctx);
        assert!(config.get("failCgroupV1").is_none());
        assert_eq!(config["cgroupDriver"], "systemd");
    }

    #[test]
    fn prepare_writes_the_config_once() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        Kubelet.prepare(&ctx).unwrap();
        let path = dir.path().join("config").join(CONFIG_FILE);
        let first = std::fs::metadata(&path).unwrap().modified().unwrap();
        let parsed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(parsed["kind"], "KubeletConfiguration");
        Kubelet.prepare(&ctx).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            first,
            "unchanged config is not rewritten"
        );
    }
}

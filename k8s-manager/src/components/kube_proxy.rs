//! kube-proxy in iptables mode. It leaves the machine's conntrack sysctls
//! alone (`maxPerCore: 0`): a desktop VM or a container may not allow
//! changing them, and the defaults serve one node well.

use serde_json::json;

use super::{
    Component, Context, KUBE_PROXY_HEALTHZ_PORT, KUBE_PROXY_METRICS_PORT, Probe, write_config,
};
use crate::supervisor::ProcessSpec;

pub struct KubeProxy;

const CONFIG_FILE: &str = "kube-proxy.json";

/// Each field of [`KubeProxy::config`] (a dotted path) with the flag that
/// would set it, when the manager owns that; `None`: a default the user may
/// change. Every field has its row (a test checks it).
const CONFIG_FLAGS: &[(&str, Option<&str>)] = &[
    ("apiVersion", None),
    ("kind", None),
    ("mode", Some("proxy-mode")),
    ("clientConnection.kubeconfig", Some("kubeconfig")),
    ("clusterCIDR", Some("cluster-cidr")),
    ("hostnameOverride", Some("hostname-override")),
    ("bindAddress", Some("bind-address")),
    ("healthzBindAddress", Some("healthz-bind-address")),
    ("metricsBindAddress", Some("metrics-bind-address")),
    // Zero: the machine's conntrack sysctls are left alone (see above).
    ("conntrack.maxPerCore", Some("conntrack-max-per-core")),
    (
        "conntrack.tcpEstablishedTimeout",
        Some("conntrack-tcp-timeout-established"),
    ),
    (
        "conntrack.tcpCloseWaitTimeout",
        Some("conntrack-tcp-timeout-close-wait"),
    ),
    ("iptables.syncPeriod", None),
    ("iptables.minSyncPeriod", None),
    // 127.0.0.1:<nodePort> is the load-balancer unit's.
    (
        "iptables.localhostNodePorts",
        Some("iptables-localhost-nodeports"),
    ),
];

impl KubeProxy {
    pub fn config(ctx: &Context) -> serde_json::Value {
        json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": ctx.kubeconfig("kube-proxy")},
            "clusterCIDR": ctx.config.pod_cidr,
            "hostnameOverride": ctx.config.node_name,
            "bindAddress": "0.0.0.0",
            "healthzBindAddress": format!("127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}"),
            "metricsBindAddress": format!("127.0.0.1:{KUBE_PROXY_METRICS_PORT}"),
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            // 127.0.0.1:<nodePort> is the manager's own listener (the
            // load-balancer unit), not a DNAT inside the node: one path for
            // every localhost port, a port held by another process is said
            // rather than stolen, and no `route_localnet`.
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s", "localhostNodePorts": false},
        })
    }
}

impl Component for KubeProxy {
    fn stop_grace(&self) -> std::time::Duration {
        super::STATELESS_STOP_GRACE
    }

    fn name(&self) -> &'static str {
        "kube-proxy"
    }

    fn needs(&self) -> &'static [&'static dyn Component] {
        &[&super::ApiServer]
    }

    fn prepare(&self, ctx: &Context) -> std::io::Result<()> {
        let yaml = serde_json::to_string_pretty(&KubeProxy::config(ctx)).expect("serialises");
        write_config(ctx, CONFIG_FILE, &yaml).map(|_| ())
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        let config = ctx.paths.component_config.join(CONFIG_FILE);
        let mut spec = ctx.spec("kube-proxy", vec![format!("--config={}", config.display())]);
        // Named inside its configuration, not by a flag.
        spec.inputs
            .push(ctx.paths.kubeconfigs.join("kube-proxy.conf"));
        spec
    }

    fn config_flags(&self) -> Vec<&'static str> {
        CONFIG_FLAGS.iter().filter_map(|(_, flag)| *flag).collect()
    }

    fn probe(&self, _ctx: &Context) -> Probe {
        // /livez answers once the proxy runs; /healthz waits for a full sync
        // that depends on the node object, which the wait phase checks anyway.
        Probe::http(format!("http://127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}/livez"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::test_support::context;

    #[test]
    fn every_configuration_field_says_whether_its_flag_is_owned() {
        let config = KubeProxy::config(&context(std::path::Path::new("/s")));
        crate::components::test_support::assert_every_field_has_its_row(&config, CONFIG_FLAGS);
    }

    #[test]
    fn iptables_mode_without_conntrack_tuning() {
        let config = KubeProxy::config(&context(std::path::Path::new("/s")));
        assert_eq!(config["mode"], "iptables");
        assert_eq!(config["conntrack"]["maxPerCore"], 0);
        assert_eq!(config["iptables"]["localhostNodePorts"], false);
        assert_eq!(config["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(
            config["clientConnection"]["kubeconfig"],
            "/s/kubeconfig/kube-proxy.conf"
        );
        let spec = KubeProxy.spec(&context(std::path::Path::new("/s")));
        assert_eq!(
            spec.inputs,
            [
                std::path::PathBuf::from("/s/config/kube-proxy.json"),
                "/s/kubeconfig/kube-proxy.conf".into()
            ]
        );
    }
}

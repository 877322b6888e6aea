//! kube-controller-manager: kubeadm's flags, without leader election (one
//! node: waiting for a lease only slows the start), allocating node pod CIDRs
//! from the cluster CIDR.

use super::{CONTROLLER_MANAGER_PORT, Component, Context, Probe, flags};
use crate::supervisor::ProcessSpec;

pub struct ControllerManager;

impl Component for ControllerManager {
    fn stop_grace(&self) -> std::time::Duration {
        super::STATELESS_STOP_GRACE
    }

    fn name(&self) -> &'static str {
        "kube-controller-manager"
    }

    fn needs(&self) -> &'static [&'static dyn Component] {
        &[&super::ApiServer]
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        let kubeconfig = ctx.kubeconfig("controller-manager");
        ctx.spec(
            "kube-controller-manager",
            flags([
                ("kubeconfig", kubeconfig.clone()),
                ("authentication-kubeconfig", kubeconfig.clone()),
                ("authorization-kubeconfig", kubeconfig),
                ("bind-address", "127.0.0.1".into()),
                ("secure-port", CONTROLLER_MANAGER_PORT.to_string()),
                ("client-ca-file", ctx.trust("ca")),
                ("requestheader-client-ca-file", ctx.trust("front-proxy-ca")),
                ("cluster-name", "kubernetes".into()),
                ("cluster-signing-cert-file", ctx.pki("ca.crt")),
                ("cluster-signing-key-file", ctx.pki("ca.key")),
                ("controllers", "*,bootstrapsigner,tokencleaner".into()),
                ("leader-elect", "false".into()),
                ("root-ca-file", ctx.trust("ca")),
                ("service-account-private-key-file", ctx.pki("sa.key")),
                (
                    "service-cluster-ip-range",
                    ctx.config.service_cidr.to_string(),
                ),
                ("use-service-account-credentials", "true".into()),
                ("allocate-node-cidrs", "true".into()),
                ("cluster-cidr", ctx.config.pod_cidr.to_string()),
                (
                    "node-cidr-mask-size",
                    crate::model::config::NODE_POD_PREFIX.to_string(),
                ),
                ("profiling", "false".into()),
                // With per-controller credentials every controller's start
                // makes API calls; at the default 20 QPS those are throttled
                // to ~150 ms a controller, 5 s before Deployments are acted
                // on in a fresh cluster. Loopback to our own API server takes more.
                ("kube-api-qps", "200".into()),
                ("kube-api-burst", "300".into()),
            ]),
        )
    }

    /// Its API rates: a user's come after ours.
    fn defaults(&self) -> &'static [&'static str] {
        &["kube-api-qps", "kube-api-burst"]
    }

    fn probe(&self, _ctx: &Context) -> Probe {
        // /healthz is always allowed without credentials; the serving
        // certificate is self-signed by the component.
        Probe::http(format!(
            "https://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz"
        ))
        .insecure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::test_support::{context, has_flag};

    #[test]
    fn single_node_flags() {
        let spec = ControllerManager.spec(&context(std::path::Path::new("/s")));
        assert!(has_flag(&spec, "--leader-elect=false"));
        assert!(has_flag(
            &spec,
            "--kubeconfig=/s/kubeconfig/controller-manager.conf"
        ));
        assert!(has_flag(&spec, "--cluster-cidr=10.244.0.0/16"));
        assert!(has_flag(&spec, "--cluster-signing-key-file=/s/pki/ca.key"));
    }
}

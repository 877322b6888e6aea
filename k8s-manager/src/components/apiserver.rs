//! kube-apiserver with kubeadm's flags and secure defaults: no anonymous
//! requests, Node and RBAC authorization, TLS to etcd and to the kubelet with
//! client certificates, service-account keys from our PKI.

use super::{Component, Context, ETCD_CLIENT_PORT, Probe, flags};
use crate::supervisor::ProcessSpec;

pub struct ApiServer;

impl Component for ApiServer {
    fn name(&self) -> &'static str {
        "kube-apiserver"
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        let domain = &ctx.config.cluster_domain;
        ctx.spec(
            "kube-apiserver",
            flags([
                ("advertise-address", ctx.advertise_address.to_string()),
                ("secure-port", ctx.config.api_port.to_string()),
                ("allow-privileged", "true".into()),
                ("anonymous-auth", "false".into()),
                ("authorization-mode", "Node,RBAC".into()),
                ("enable-admission-plugins", "NodeRestriction".into()),
                ("client-ca-file", ctx.trust("ca")),
                ("tls-cert-file", ctx.pki("apiserver.crt")),
                ("tls-private-key-file", ctx.pki("apiserver.key")),
                (
                    "etcd-servers",
                    format!("https://127.0.0.1:{ETCD_CLIENT_PORT}"),
                ),
                ("etcd-cafile", ctx.trust("etcd/ca")),
                ("etcd-certfile", ctx.pki("apiserver-etcd-client.crt")),
                ("etcd-keyfile", ctx.pki("apiserver-etcd-client.key")),
                (
                    "kubelet-client-certificate",
                    ctx.pki("apiserver-kubelet-client.crt"),
                ),
                (
                    "kubelet-client-key",
                    ctx.pki("apiserver-kubelet-client.key"),
                ),
                // kubeadm leaves the kubelet's self-signed serving certificate
                // unverified; ours is issued by the cluster CA, so verify it.
                ("kubelet-certificate-authority", ctx.trust("ca")),
                // The node name is not resolvable; its InternalIP is.
                (
                    "kubelet-preferred-address-types",
                    "InternalIP,Hostname".into(),
                ),
                ("proxy-client-cert-file", ctx.pki("front-proxy-client.crt")),
                ("proxy-client-key-file", ctx.pki("front-proxy-client.key")),
                ("requestheader-client-ca-file", ctx.trust("front-proxy-ca")),
                ("requestheader-allowed-names", "front-proxy-client".into()),
                (
                    "requestheader-extra-headers-prefix",
                    "X-Remote-Extra-".into(),
                ),
                ("requestheader-group-headers", "X-Remote-Group".into()),
                ("requestheader-username-headers", "X-Remote-User".into()),
                (
                    "service-account-issuer",
                    format!("https://kubernetes.default.svc.{domain}"),
                ),
                ("service-account-key-file", ctx.pki("sa.pub")),
                ("service-account-signing-key-file", ctx.pki("sa.key")),
                (
                    "service-cluster-ip-range",
                    ctx.config.service_cidr.to_string(),
                ),
                ("profiling", "false".into()),
            ]),
        )
    }

    /// The API server keeps no state of its own (etcd does), and its graceful
    /// drain waits out idle client connections for many seconds after every
    /// component that talks to it has stopped: a short grace keeps `disable` fast.
    fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(2)
    }

    fn probe(&self, ctx: &Context) -> Probe {
        Probe::http(format!("https://127.0.0.1:{}/readyz", ctx.config.api_port)).client_cert(
            ctx.paths.pki.join("ca.crt"),
            ctx.paths.pki.join("apiserver-kubelet-client.crt"),
            ctx.paths.pki.join("apiserver-kubelet-client.key"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::test_support::{context, has_flag};

    #[test]
    fn secure_defaults() {
        let spec = ApiServer.spec(&context(std::path::Path::new("/s")));
        for flag in [
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            "--advertise-address=192.0.2.10",
            "--secure-port=6443",
            "--service-account-key-file=/s/pki/sa.pub",
            "--kubelet-client-certificate=/s/pki/apiserver-kubelet-client.crt",
            "--kubelet-certificate-authority=/s/pki/trust/ca.crt",
            "--service-cluster-ip-range=10.96.0.0/12",
        ] {
            assert!(has_flag(&spec, flag), "{flag} missing from {:?}", spec.args);
        }
    }
}

//! kube-apiserver with kubeadm's flags and secure defaults: no anonymous
//! requests, Node and RBAC authorization, TLS to etcd and to the kubelet with
//! client certificates, service-account keys from our PKI.

use super::{Component, Context, ETCD_CLIENT_PORT, Handover, Probe, flags};
use crate::supervisor::ProcessSpec;

pub struct ApiServer;

impl Component for ApiServer {
    fn name(&self) -> &'static str {
        "kube-apiserver"
    }

    fn needs(&self) -> &'static [&'static dyn Component] {
        &[&super::Etcd]
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        let domain = &ctx.config.cluster_domain;
        let mut spec = ctx.spec(
            "kube-apiserver",
            flags([
                ("advertise-address", ctx.advertise_address.to_string()),
                ("secure-port", ctx.config.api_port.to_string()),
                // A new instance can listen beside the running one, which a
                // restart for a renewed certificate then replaces without a
                // moment when the port refuses calls (see `handover`).
                ("permit-port-sharing", "true".into()),
                // The `kubernetes` Service's endpoint is the manager's
                // (manifests/apiserver-endpoints.yaml): the API server's own
                // reconciler takes the node's address out whenever an
                // instance starts or stops, which a handover does by design.
                ("endpoint-reconciler-type", "none".into()),
                // On SIGTERM, end the open watches (their clients watch again,
                // at the new instance in a handover) instead of leaving them
                // open: an open watch (CoreDNS's, say) keeps the HTTP server's
                // shutdown waiting until the stop's grace runs out and the
                // process is killed. Upstream ends at most 200 a second, and
                // stops waiting after this period.
                ("shutdown-watch-termination-grace-period", "1s".into()),
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
        );
        // Go (1.24+) makes its listeners MPTCP sockets where the kernel has
        // MPTCP, and an MPTCP socket takes no reuseport program: the
        // handover needs a plain TCP listener. Nothing here uses MPTCP.
        spec.env
            .push(("GODEBUG".to_string(), "multipathtcp=0".to_string()));
        spec
    }

    /// The API server keeps no state of its own (etcd does). It ends its
    /// watches on SIGTERM (above) and exits within 0.1 s, or 1.1 s when an
    /// idle HTTP/2 connection waits out Go's GOAWAY timeout; the grace bounds
    /// a drain that hangs (a client that never reads).
    fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(2)
    }

    fn probe(&self, ctx: &Context) -> Probe {
        Probe::http(format!(
            "https://127.0.0.1:{}{}",
            ctx.config.api_port,
            readyz(ctx)
        ))
        .client_cert(
            ctx.paths.pki.join("ca.crt"),
            ctx.paths.pki.join("apiserver-kubelet-client.crt"),
            ctx.paths.pki.join("apiserver-kubelet-client.key"),
        )
    }

    /// A newcomer is probed at `[::1]`, where the handover sends IPv6 calls
    /// while the running instance keeps every IPv4 client; `localhost` is
    /// among the serving certificate's names.
    fn handover(&self, ctx: &Context) -> Option<Handover> {
        let port = ctx.config.api_port;
        let probe = Probe::http(format!("https://localhost:{port}{}", readyz(ctx)))
            .client_cert(
                ctx.paths.pki.join("ca.crt"),
                ctx.paths.pki.join("apiserver-kubelet-client.crt"),
                ctx.paths.pki.join("apiserver-kubelet-client.key"),
            )
            .connect_to(std::net::SocketAddr::from((
                std::net::Ipv6Addr::LOCALHOST,
                port,
            )));
        Some(Handover { port, probe })
    }
}

/// The two post-start hooks that reconcile the API server's bootstrap
/// objects: on a start of a version that has made them on this etcd data
/// before, they only find every object there, and take ~0.8 s of a 2.5 s
/// start to do it (measured on a warm start here).
const BOOTSTRAP_HOOKS: [&str; 2] = [
    "poststarthook/rbac/bootstrap-roles",
    "poststarthook/scheduling/bootstrap-system-priority-classes",
];

/// The readiness path: every check, but the bootstrap hooks when the
/// objects they make are stored already. Ready still means ready: the
/// probe's own call passes RBAC only once the authorizer's informers
/// have synced (`informer-sync` is among the checks), and those informers
/// then hold the stored roles; the hooks go on in the background.
fn readyz(ctx: &Context) -> String {
    if !ctx.api_bootstrapped {
        return "/readyz".into();
    }
    let excluded: Vec<String> = BOOTSTRAP_HOOKS
        .iter()
        .map(|h| format!("exclude={h}"))
        .collect();
    format!("/readyz?{}", excluded.join("&"))
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

    #[test]
    fn readiness_waits_for_the_bootstrap_hooks_only_until_they_made_their_objects() {
        let mut ctx = context(std::path::Path::new("/s"));
        assert_eq!(ApiServer.probe(&ctx).url, "https://127.0.0.1:6443/readyz");
        ctx.api_bootstrapped = true;
        let url = ApiServer.probe(&ctx).url;
        assert_eq!(
            url,
            "https://127.0.0.1:6443/readyz?exclude=poststarthook/rbac/bootstrap-roles\
             &exclude=poststarthook/scheduling/bootstrap-system-priority-classes"
        );
        let handover = ApiServer.handover(&ctx).unwrap();
        assert!(
            handover
                .probe
                .url
                .ends_with(&url["https://127.0.0.1:6443".len()..])
        );
    }

    #[test]
    fn can_be_handed_over_on_its_port() {
        let ctx = context(std::path::Path::new("/s"));
        let spec = ApiServer.spec(&ctx);
        for flag in [
            "--permit-port-sharing=true",
            "--endpoint-reconciler-type=none",
            "--shutdown-watch-termination-grace-period=1s",
        ] {
            assert!(has_flag(&spec, flag), "{flag} missing from {:?}", spec.args);
        }
        assert!(
            spec.env
                .contains(&("GODEBUG".into(), "multipathtcp=0".into()))
        );
        let handover = ApiServer.handover(&ctx).unwrap();
        assert_eq!(handover.port, 6443);
        assert_eq!(handover.probe.url, "https://localhost:6443/readyz");
        assert_eq!(
            handover.probe.connect_to,
            Some("[::1]:6443".parse().unwrap())
        );
    }
}

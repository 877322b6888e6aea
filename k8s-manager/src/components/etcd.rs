//! etcd: the cluster's store, on loopback only (a single member; nothing
//! outside the VM needs it), TLS for clients and peers with client
//! certificates required, as kubeadm sets it up.

use super::{
    Component, Context, ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT, Probe, flags,
};
use crate::supervisor::ProcessSpec;

pub struct Etcd;

impl Component for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn needs(&self) -> &'static [&'static dyn Component] {
        &[]
    }

    fn prepare(&self, ctx: &Context) -> std::io::Result<()> {
        crate::fsutil::create_dir_all_mode(&ctx.paths.etcd_data, 0o700)
    }

    fn spec(&self, ctx: &Context) -> ProcessSpec {
        let node = &ctx.config.node_name;
        let client = format!("https://127.0.0.1:{ETCD_CLIENT_PORT}");
        let peer = format!("https://127.0.0.1:{ETCD_PEER_PORT}");
        ctx.local_spec(
            "etcd",
            flags([
                ("name", node.clone()),
                ("data-dir", ctx.paths.etcd_data.display().to_string()),
                ("listen-client-urls", client.clone()),
                ("advertise-client-urls", client),
                ("listen-peer-urls", peer.clone()),
                ("initial-advertise-peer-urls", peer.clone()),
                ("initial-cluster", format!("{node}={peer}")),
                (
                    "listen-metrics-urls",
                    format!("http://127.0.0.1:{ETCD_METRICS_PORT}"),
                ),
                ("cert-file", ctx.pki("etcd/server.crt")),
                ("key-file", ctx.pki("etcd/server.key")),
                ("client-cert-auth", "true".into()),
                ("trusted-ca-file", ctx.trust("etcd/ca")),
                ("peer-cert-file", ctx.pki("etcd/peer.crt")),
                ("peer-key-file", ctx.pki("etcd/peer.key")),
                ("peer-client-cert-auth", "true".into()),
                ("peer-trusted-ca-file", ctx.trust("etcd/ca")),
                ("snapshot-count", "10000".into()),
                // A single member elects itself once its election timer runs
                // out: etcd fast-forwards that timer on a single-node start,
                // but the timeout's random half still leaves 0.1-1.0 s with
                // the default 1000 ms; 500 ms (the least etcd allows with
                // the 100 ms heartbeat) leaves 0.1-0.5 s. The heartbeat,
                // and so the idle ticks, are unchanged.
                ("election-timeout", "500".into()),
            ]),
        )
    }

    /// How often it snapshots and how long it waits to elect itself: a
    /// user's value comes after ours.
    fn defaults(&self) -> &'static [&'static str] {
        &["snapshot-count", "election-timeout"]
    }

    /// Two lines for each /health it refuses, ten a second.
    fn log_noise(&self) -> &'static [&'static str] {
        &["\"/health error\"", "\"serving /health false"]
    }

    fn probe(&self, _ctx: &Context) -> Probe {
        // The metrics listener serves /health without TLS, as kubeadm's probe uses it.
        Probe::http(format!("http://127.0.0.1:{ETCD_METRICS_PORT}/health"))
            .expect_body("\"health\":\"true\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::test_support::{context, has_flag};

    #[test]
    fn etcd_requires_client_certificates_on_loopback() {
        let ctx = context(std::path::Path::new("/s"));
        let spec = Etcd.spec(&ctx);
        assert!(has_flag(&spec, "--client-cert-auth=true"));
        assert!(has_flag(
            &spec,
            "--listen-client-urls=https://127.0.0.1:2379"
        ));
        assert!(has_flag(
            &spec,
            "--initial-cluster=docker-desktop=https://127.0.0.1:2380"
        ));
        assert!(has_flag(&spec, "--data-dir=/s/etcd"));
        assert!(has_flag(
            &spec,
            "--trusted-ca-file=/s/pki/trust/etcd/ca.crt"
        ));
    }
}

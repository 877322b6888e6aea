//! Which component reads which certificate, and how it takes a new one.
//!
//! Checked on the v1.34 binaries of the bundle (see the README's
//! "Certificates" section and `tests/certs_e2e.rs`, which asserts each
//! row: the served certificate read with `openssl s_client` before and after
//! a renewal, and the component's pid):
//!
//! - kube-apiserver watches its serving certificate (`--tls-cert-file`) and
//!   its client CA (`--client-ca-file`, the request-header CA) and reloads
//!   them (its dynamic certificate controllers). Its client certificate for
//!   the kubelets is read again only when client-go's rotation check runs,
//!   every 5 minutes, and the old one stays on open connections until then
//!   (so `kubectl logs` fails for minutes once the old one expires); those
//!   for etcd (`--etcd-certfile`) and the aggregated APIs
//!   (`--proxy-client-cert-file`) and the trust bundles of `--etcd-cafile`
//!   and `--kubelet-certificate-authority` are read at start. So those are
//!   restart inputs of the API server, which is not restarted but handed
//!   over to a new instance listening beside it
//!   ([`crate::supervisor::handover`]): no call is refused meanwhile.
//! - etcd reads its serving and peer certificates on each TLS handshake.
//! - the kubelet: its client certificate is in its kubeconfig, read at
//!   start. Its serving certificate (`tlsCertFile`) has a file watch in 1.34
//!   (`kubelet-server-cert-files` in its log), but in the test the port
//!   10250 still served the old certificate 90 s after a renewal (the watch
//!   saw the key replaced before the certificate, logged "private key does
//!   not match public key", and did not serve the pair once both were
//!   there): so both are restart inputs. A kubelet restart keeps the pods'
//!   containers running (the test compares container ids and restarts).
//! - kube-controller-manager, kube-scheduler and kube-proxy read the client
//!   certificate embedded in their kubeconfig at start: a restart.
//! - `admin.conf` is the manager's own: its in-process units read it when
//!   they start (they are restarted), and it is what the user's kubeconfig
//!   is made of (merged again).
//!
//! A restart is made by the supervisor: a process whose input files changed
//! is restarted at its next start ([`crate::supervisor::ProcessSpec::inputs`]),
//! so a restart input listed here is one of the component's inputs.

/// How a component takes a renewed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pickup {
    /// It reads the file again by itself: nothing to do.
    Reloads,
    /// It reads the file at start only: restarted.
    Restart,
    /// The manager's own (the admin kubeconfig): its units are restarted and
    /// the user's kubeconfigs merged again.
    Manager,
}

/// One reader of a file of the PKI folder or of a kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use {
    /// The certificate's declared name (`apiserver`), or a kubeconfig's file
    /// name (`kubelet.conf`).
    pub cert: &'static str,
    /// The component's process name (`kube-apiserver`), or `manager`.
    pub component: &'static str,
    pub pickup: Pickup,
}

const fn reader(cert: &'static str, component: &'static str, pickup: Pickup) -> Use {
    Use {
        cert,
        component,
        pickup,
    }
}

/// The name the manager's own uses go under.
pub const MANAGER: &str = "manager";

/// Every reader of every renewable file. A certificate absent here is read
/// by no long-running process (`etcd/healthcheck-client` by the probes,
/// `super-admin.conf` by nobody until the user needs it).
pub const USES: &[Use] = &[
    reader("apiserver", "kube-apiserver", Pickup::Reloads),
    reader(
        "apiserver-kubelet-client",
        "kube-apiserver",
        Pickup::Restart,
    ),
    reader("front-proxy-client", "kube-apiserver", Pickup::Restart),
    reader("apiserver-etcd-client", "kube-apiserver", Pickup::Restart),
    reader("etcd/server", "etcd", Pickup::Reloads),
    reader("etcd/peer", "etcd", Pickup::Reloads),
    reader("kubelet", "kubelet", Pickup::Restart),
    reader("admin.conf", MANAGER, Pickup::Manager),
    reader(
        "controller-manager.conf",
        "kube-controller-manager",
        Pickup::Restart,
    ),
    reader("scheduler.conf", "kube-scheduler", Pickup::Restart),
    reader("kubelet.conf", "kubelet", Pickup::Restart),
    reader("kube-proxy.conf", "kube-proxy", Pickup::Restart),
];

/// The order components are moved over in: each one's clients after it
/// (etcd before the API server, the API server before what talks to it).
pub const ORDER: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// The PKI files (relative to the PKI folder: `apiserver-etcd-client.crt`)
/// that `component` reads only at start: its restart inputs.
pub fn restart_inputs(component: &str) -> Vec<String> {
    USES.iter()
        .filter(|u| u.component == component && u.pickup == Pickup::Restart)
        .filter(|u| !u.cert.ends_with(".conf"))
        .flat_map(|u| [format!("{}.crt", u.cert), format!("{}.key", u.cert)])
        .chain(
            TRUST_IN_CONFIG
                .iter()
                .filter(|(c, _)| *c == component)
                .map(|(_, file)| file.to_string()),
        )
        .collect()
}

/// Trust bundles a component reads from its configuration file rather than
/// a flag (flags naming a trust bundle make it an input by themselves): the
/// kubelet's `authentication.x509.clientCAFile`.
const TRUST_IN_CONFIG: &[(&str, &str)] = &[("kubelet", "trust/ca.crt")];

/// What renewing `renewed` (certificate names and kubeconfig file names)
/// asks of the components, in [`ORDER`]: those to restart, and whether the
/// manager's admin kubeconfig changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Moves {
    pub restart: Vec<&'static str>,
    pub manager: bool,
}

pub fn moves<S: AsRef<str>>(renewed: &[S]) -> Moves {
    let uses: Vec<&Use> = USES
        .iter()
        .filter(|u| renewed.iter().any(|r| r.as_ref() == u.cert))
        .collect();
    Moves {
        restart: ORDER
            .into_iter()
            .filter(|c| {
                uses.iter()
                    .any(|u| u.component == *c && u.pickup == Pickup::Restart)
            })
            .collect(),
        manager: uses.iter().any(|u| u.pickup == Pickup::Manager),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::PkiDeclaration;

    #[test]
    fn every_use_names_a_declared_certificate_and_a_known_component() {
        let declaration = PkiDeclaration::embedded().unwrap();
        for u in USES {
            let declared = match u.cert.strip_suffix(".conf") {
                Some(name) => declaration.kubeconfigs.iter().any(|k| k.name == name),
                None => declaration.leaves().any(|l| l.name == u.cert),
            };
            assert!(declared, "{}", u.cert);
            assert!(
                ORDER.contains(&u.component) || u.component == MANAGER,
                "{}",
                u.component
            );
        }
    }

    #[test]
    fn restart_inputs_are_the_files_read_at_start_only() {
        assert_eq!(
            restart_inputs("kube-apiserver"),
            [
                "apiserver-kubelet-client.crt",
                "apiserver-kubelet-client.key",
                "front-proxy-client.crt",
                "front-proxy-client.key",
                "apiserver-etcd-client.crt",
                "apiserver-etcd-client.key",
            ]
        );
        assert!(restart_inputs("etcd").is_empty());
        // kubelet.conf is an input by its flag.
        assert_eq!(
            restart_inputs("kubelet"),
            ["kubelet.crt", "kubelet.key", "trust/ca.crt"]
        );
    }

    #[test]
    fn moves_follow_the_order_and_skip_what_reloads() {
        assert_eq!(
            moves(&["apiserver", "etcd/server", "etcd/peer"]),
            Moves::default()
        );
        assert_eq!(moves(&["kubelet"]).restart, ["kubelet"]);
        assert_eq!(
            moves(&["kube-proxy.conf", "apiserver-etcd-client", "kubelet.conf"]),
            Moves {
                restart: vec!["kube-apiserver", "kubelet", "kube-proxy"],
                manager: false
            }
        );
        let all: Vec<&str> = USES.iter().map(|u| u.cert).collect();
        assert_eq!(
            moves(&all),
            Moves {
                restart: ORDER.into_iter().filter(|c| *c != "etcd").collect(),
                manager: true
            }
        );
    }
}

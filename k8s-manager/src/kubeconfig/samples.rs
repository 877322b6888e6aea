//! Kubeconfig texts shared by the unit tests of the readers and the editor.

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/kubeconfig/", $name))
    };
}

pub(crate) const CORPUS: [&str; 7] = [
    fixture!("eks.yaml"),
    fixture!("gke.yaml"),
    fixture!("oidc-preferences-unknown.yaml"),
    fixture!("ours-docker-desktop.yaml"),
    fixture!("stale-docker-desktop.yaml"),
    fixture!("minikube-windows-crlf.yaml"),
    fixture!("yaml11-scalars.yaml"),
];

/// A kubeconfig as kubectl writes it, with what users add by hand.
pub(crate) const TYPICAL: &str = r#"apiVersion: v1
kind: Config
preferences: {}
# prod first
clusters:
- cluster:
    certificate-authority-data: QUJD
    server: https://prod.example:443
  name: prod
- name: 'kind-dev'
  cluster:
    server: "https://127.0.0.1:40123"
    insecure-skip-tls-verify: true

contexts:
  - name: prod
    context: {cluster: prod, user: sso, namespace: shop}   # the shop
  - context:
      cluster: kind-dev
      user: kind-dev
    name: kind-dev
users:
- name: sso
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubelogin
      args: [get-token, --oidc-issuer-url=https://login.example, "--x=y z"]
      env: null
      provideClusterInfo: false
- name: kind-dev
  user:
    token: 0a1b2c3d4e5f
current-context: prod
"#;

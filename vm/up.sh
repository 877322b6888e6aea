#!/usr/bin/env bash
# One command from a fresh Debian machine to a running cluster: prepares the
# machine (containerd, CNI, kernel settings), installs what it builds with
# (vm/toolchains.sh: Go and Rust when the machine's are missing or too old),
# builds the Kubernetes bundle if the cache has none, builds k8s-manager,
# installs it (and the bundle's kubectl when there is no kubectl), and enables
# the cluster.
#
#   --setup-only   install and build everything (packages, toolchains, the
#                  bundle, k8s-manager, kubectl), start nothing: no containerd,
#                  no dockerd, no cluster
#
# Settings (environment):
#   K8S_MANAGER_HOST_KUBECONFIG  the Windows user's kubeconfig through its mount,
#                                e.g. /mnt/c/Users/me/.kube/config (default: only ~/.kube/config)
#   K8S_MANAGER_BUNDLE           a bundle folder to use instead of the cache's
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[up] %s\n' "$*" >&2; }
setup_only=0
case ${1:-} in
--setup-only) setup_only=1 ;;
"") ;;
*)
	echo "usage: $0 [--setup-only]" >&2
	exit 2
	;;
esac
[[ $(id -u) == 0 ]] || { log "run as root (sudo $0)"; exit 1; }

if ((setup_only)); then
	"$root/vm/prepare-vm.sh" --install-only
else
	"$root/vm/prepare-vm.sh"
fi

# Building needs a C compiler (pause), protoc (the CRI bindings), Go (the
# bundle) and Rust (k8s-manager).
# shellcheck source=vm/toolchains.sh
source "$root/vm/toolchains.sh"
tc_apt_install build-essential protobuf-compiler
tc_go
tc_rust

bundle=${K8S_MANAGER_BUNDLE:-}
if [[ -z $bundle ]]; then
	log "finding or building the Kubernetes bundle (a cold build takes ~15 minutes on 2 cores)"
	bundle=$("$root/vm/bundle/build.sh" | tail -1)
fi

log "building k8s-manager"
(cd "$root" && cargo build --release --locked -q)
install -m 0755 "${CARGO_TARGET_DIR:-$root/target}/release/k8s-manager" /usr/local/bin/k8s-manager
# The service definition runs prepare-vm.sh from here at every boot.
install -D -m 0755 "$root/vm/prepare-vm.sh" /usr/local/lib/k8s-manager/prepare-vm.sh

# kubectl: the bundle's (a link into its multi-call binary, which runs as the
# name it is called by), unless the machine has one of its own.
kubectl_link=/usr/local/bin/kubectl
if [[ -L $kubectl_link && $(readlink "$kubectl_link") == */k8s-manager/bundles/*/bin/kubectl ]] ||
	! command -v kubectl >/dev/null 2>&1; then
	ln -sfn "$bundle/bin/kubectl" "$kubectl_link"
	log "kubectl: $kubectl_link -> $bundle/bin/kubectl"
fi

if ((setup_only)); then
	log "set up: $(k8s-manager --version), bundle $bundle, $(command -v kubectl); nothing started (--setup-only)"
	exit 0
fi

args=(enable --bundle "$bundle")
if [[ -n ${K8S_MANAGER_HOST_KUBECONFIG:-} ]]; then
	args+=(--host-kubeconfig "$K8S_MANAGER_HOST_KUBECONFIG")
fi
k8s-manager "${args[@]}"

cat >&2 <<TEXT

The cluster runs. Try:
  kubectl --context docker-desktop get nodes           # $(command -v kubectl); ~/.kube/config of this VM
  kubectl --context docker-desktop get pods -A
  k8s-manager status
  k8s-manager disable                                   # then: k8s-manager enable, k8s-manager reset
  k8s-manager ui --url                                  # the settings page, to open in a browser
In a folder with a Dockerfile (no push, no load: the cluster sees Docker's images):
  docker build -t myapp:dev . && kubectl --context docker-desktop create deployment myapp --image=myapp:dev
To start it with the VM (systemd):
  install -m 0644 $root/vm/k8s-manager.service /etc/systemd/system/ && systemctl daemon-reload && systemctl enable k8s-manager
Without systemd, run 'k8s-manager daemon' from your init.
TEXT

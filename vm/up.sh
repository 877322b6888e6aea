#!/usr/bin/env bash
# One command from a fresh Debian machine to a running cluster: prepares the
# machine (containerd, CNI, kernel settings), builds the Kubernetes bundle if
# the cache has none, builds k8s-manager, installs it, and enables the cluster.
#
# Settings (environment):
#   K8S_MANAGER_HOST_KUBECONFIG  the Windows user's kubeconfig through its mount,
#                                e.g. /mnt/c/Users/me/.kube/config (default: only ~/.kube/config)
#   K8S_MANAGER_BUNDLE           a bundle folder to use instead of the cache's
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[up] %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { log "run as root (sudo $0)"; exit 1; }

"$root/vm/prepare-vm.sh"

# Building needs a C compiler (pause), protoc (the CRI bindings), Go (the
# bundle; go.mod asks for 1.24+, fetched through GOTOOLCHAIN when older) and Rust.
build_deps=(build-essential protobuf-compiler)
for p in "${build_deps[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
done
command -v go >/dev/null || { log "Go is needed to build the bundle: install Go 1.21 or newer"; exit 1; }
command -v cargo >/dev/null || { log "Rust is needed to build k8s-manager: install it with rustup"; exit 1; }

bundle=${K8S_MANAGER_BUNDLE:-}
if [[ -z $bundle ]]; then
	log "finding or building the Kubernetes bundle (a cold build takes ~15 minutes on 2 cores)"
	bundle=$("$root/vm/bundle/build.sh" | tail -1)
fi

log "building k8s-manager"
(cd "$root" && cargo build --release --locked -q)
install -m 0755 "$root/target/release/k8s-manager" /usr/local/bin/k8s-manager
# The service definition runs prepare-vm.sh from here at every boot.
install -D -m 0755 "$root/vm/prepare-vm.sh" /usr/local/lib/k8s-manager/prepare-vm.sh

args=(enable --bundle "$bundle")
if [[ -n ${K8S_MANAGER_HOST_KUBECONFIG:-} ]]; then
	args+=(--host-kubeconfig "$K8S_MANAGER_HOST_KUBECONFIG")
fi
k8s-manager "${args[@]}"

cat >&2 <<TEXT

The cluster runs. Try:
  kubectl --context docker-desktop get nodes          # ~/.kube/config of this VM
  $bundle/bin/kubectl --context docker-desktop get pods -A
  k8s-manager status
  k8s-manager disable | enable | reset
  k8s-manager ui --url                                # the settings page, to open in a browser
  docker build -t myapp:dev . && kubectl create deployment myapp --image=myapp:dev   # no push, no load
To start it with the VM: install vm/k8s-manager.service (systemd) or run 'k8s-manager daemon' from your init.
TEXT

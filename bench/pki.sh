#!/usr/bin/env bash
# Full PKI generation time: `k8s-manager certs generate` into an empty folder
# (10 certificates, 10 keys + the service-account pair, every file fsynced),
# the median of N runs of the release build, for each key algorithm; and the
# time of a second run over the same folder, where every file is kept (what a
# warm enable pays).
#
#   bench/pki.sh                 RUNS=21 by default
#   RUNS=51 bench/pki.sh
#   K8S_MANAGER_BIN=path/to/k8s-manager bench/pki.sh   (skip the build)
#   BENCH_DIR=/dev/shm bench/pki.sh                     (leave the disk out)
#
# Then, for comparison, `kubeadm init phase certs all` (RSA-2048, the same
# address and extra name) of the cached bundle's kubeadm (or $KUBEADM), the
# median of KUBEADM_RUNS runs (default 5); skipped when there is no kubeadm.
set -euo pipefail

runs="${RUNS:-21}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${K8S_MANAGER_BIN:-}"
if [[ -z "$bin" ]]; then
  cargo build --release --quiet -p k8s-manager --manifest-path "$root/Cargo.toml"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/k8s-manager"
fi
work="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/pki-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Reads microseconds, one per line; prints "median min max" in milliseconds.
summary() {
  sort -n | awk '{ t[NR] = $1 } END {
    printf "median %7.1f ms   min %7.1f ms   max %7.1f ms\n", t[int((NR + 1) / 2)] / 1000, t[1] / 1000, t[NR] / 1000
  }'
}

# Runs `certs generate` into $1 and prints the wall time in microseconds.
timed_generate() {
  local start end
  start=$(date +%s%N)
  "$bin" certs generate --pki-dir "$1" --node-name desktop --advertise-address 192.168.65.3 \
    --san kubernetes.docker.internal --key-algorithm "$2" >/dev/null
  end=$(date +%s%N)
  echo $(((end - start) / 1000))
}

echo "k8s-manager certs generate, $runs runs, work folder $work"
for algorithm in ecdsa-p256 rsa-2048; do
  cold=()
  warm=()
  for i in $(seq "$runs"); do
    dir="$work/$algorithm-$i"
    cold+=("$(timed_generate "$dir" "$algorithm")")
    warm+=("$(timed_generate "$dir" "$algorithm")")
    rm -rf "$dir"
  done
  printf "%-10s  full PKI  %s\n" "$algorithm" "$(printf '%s\n' "${cold[@]}" | summary)"
  printf "%-10s  all kept  %s\n" "$algorithm" "$(printf '%s\n' "${warm[@]}" | summary)"
done

kubeadm="${KUBEADM:-}"
if [[ -z "$kubeadm" ]]; then
  cache="${K8S_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager}"
  bundle="$(find "$cache/bundles" -maxdepth 1 -name 'v1.*' 2>/dev/null | sort -V | tail -1)"
  [[ -n "$bundle" ]] && kubeadm="$bundle/bin/kubeadm"
fi
if [[ -x "$kubeadm" ]]; then
  version="$("$kubeadm" version -o short)"
  times=()
  for i in $(seq "${KUBEADM_RUNS:-5}"); do
    dir="$work/kubeadm-$i"
    start=$(date +%s%N)
    "$kubeadm" init phase certs all --cert-dir "$dir" --kubernetes-version "$version" \
      --apiserver-advertise-address 192.168.65.3 --apiserver-cert-extra-sans kubernetes.docker.internal >/dev/null
    end=$(date +%s%N)
    times+=("$(((end - start) / 1000))")
    rm -rf "$dir"
  done
  printf "%-10s  kubeadm init phase certs all (%s)  %s\n" rsa-2048 "$version" "$(printf '%s\n' "${times[@]}" | summary)"
else
  echo "kubeadm init phase certs all: SKIPPED (no bundle in the cache, KUBEADM not set)"
fi

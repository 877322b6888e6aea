#!/usr/bin/env bash
# Measures `k8s-manager kubeconfig merge` and `remove` on user kubeconfigs
# with 1,500 contexts (design target: merge <= 50 ms).
#
# Two generated shapes, both with a cluster (and its ~1.1 kB CA bundle, as
# cloud providers write them) and a user per context:
#   token - a bearer-token user per context (Rancher-style tokens; ~2.3 MB);
#   exec  - an EKS `aws eks get-token` exec user per context (~2.6 MB).
# Each run starts from a fresh copy, so every merge really adds our entries
# and rewrites the file (backup + atomic write + fsync), and every remove
# really removes them. Prints the median wall and CPU (user + sys) times.
#
# Usage: bench/kubeconfig_merge.sh [runs]   (default 21)
# Environment: K8S_MANAGER_BIN=<binary> skips the release build.
set -euo pipefail

runs=${1:-21}
contexts=1500
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bin=${K8S_MANAGER_BIN:-}
if [[ -z $bin ]]; then
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p k8s-manager --bin k8s-manager
  bin=$repo/target/release/k8s-manager
fi
ours=$repo/tests/fixtures/kubeconfig/ours-docker-desktop.yaml

# A CA bundle as long as a real one, base64 on one line.
ca=$(head -c 1100 /dev/zero | tr '\0' 'Q')

generate() { # shape
  local shape=$1 i
  echo "apiVersion: v1"
  echo "kind: Config"
  echo "preferences: {}"
  echo "clusters:"
  for ((i = 0; i < contexts; i++)); do
    printf -- '- name: arn:aws:eks:eu-west-1:123456789012:cluster/team-%04d\n  cluster:\n    server: https://%032X.gr7.eu-west-1.eks.amazonaws.com\n    certificate-authority-data: %s\n' "$i" "$i" "$ca"
  done
  echo "contexts:"
  for ((i = 0; i < contexts; i++)); do
    printf -- '- name: team-%04d\n  context:\n    cluster: arn:aws:eks:eu-west-1:123456789012:cluster/team-%04d\n    user: team-%04d\n    namespace: team-%04d\n' "$i" "$i" "$i" "$i"
  done
  echo "users:"
  for ((i = 0; i < contexts; i++)); do
    if [[ $shape == token ]]; then
      printf -- '- name: team-%04d\n  user:\n    token: kubeconfig-u-%04d:%064x\n' "$i" "$i" "$i"
    else
      printf -- '- name: team-%04d\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args: [--region, eu-west-1, eks, get-token, --cluster-name, team-%04d]\n      env:\n      - name: AWS_PROFILE\n        value: team-%04d\n      interactiveMode: IfAvailable\n      provideClusterInfo: false\n' "$i" "$i" "$i"
    fi
  done
  echo "current-context: team-0000"
}

# One timed command: "<wall ms> <cpu ms>" (a busy machine inflates CPU time
# less than wall time).
timed() {
  local TIMEFORMAT='%R %U %S' t
  t=$({ time "$@" >/dev/null; } 2>&1)
  awk '{ printf "%.1f %.1f\n", $1 * 1000, ($2 + $3) * 1000 }' <<<"$t"
}

median() {
  sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] }'
}

for shape in token exec; do
  generate "$shape" >"$work/pristine"
  merge_wall=() merge_cpu=() remove_wall=() remove_cpu=()
  for ((r = 0; r < runs; r++)); do
    cp "$work/pristine" "$work/config"
    rm -f "$work/config.bak"
    read -r wall cpu < <(timed "$bin" kubeconfig merge --from "$ours" --into "$work/config")
    merge_wall+=("$wall") merge_cpu+=("$cpu")
    read -r wall cpu < <(timed "$bin" kubeconfig remove --context docker-desktop --from "$work/config")
    remove_wall+=("$wall") remove_cpu+=("$cpu")
  done
  echo "$shape: $contexts contexts, $(wc -c <"$work/pristine") bytes, $runs runs"
  echo "  merge  median: $(printf '%s\n' "${merge_wall[@]}" | median) ms wall, $(printf '%s\n' "${merge_cpu[@]}" | median) ms cpu"
  echo "  remove median: $(printf '%s\n' "${remove_wall[@]}" | median) ms wall, $(printf '%s\n' "${remove_cpu[@]}" | median) ms cpu"
done

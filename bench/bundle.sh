#!/usr/bin/env bash
# The Kubernetes bundle's build, measured:
#   - a cold build: empty Go build cache and module cache (both in a temporary
#     folder, so every module is downloaded and every package compiled); its
#     wall time, peak memory, and the time of each part (build.sh prints them);
#   - a second run with the bundle present (what vm/up.sh and tests/run.sh pay
#     at every run: the version lookup, the bundle tool's build, the digests);
#   - the size of each file of the bundle, and of the whole;
#   - the six components of the multi-call binary `kube` built as six separate
#     binaries instead (same module, flags and caches), and their sizes.
# The cold build is the long part (README, Figures: about 13 minutes on 2
# cores) and needs ~5 GB of disk for its caches; the real caches are not
# touched. Sizes are in MB of 10^6 bytes.
#
#   WARM=1  use this machine's caches and bundle instead (vm/bundle/build.sh
#           builds only what is missing): no cold-build figure, the rest as above
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=vm/toolchains.sh
source "$here/vm/toolchains.sh"
[[ -x /usr/bin/time ]] || tc_apt_install time
tc_go
scratch=$(mktemp -d)
trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
mb() { awk -v b="$1" 'BEGIN {printf "%.0f MB", b / 1e6}'; }

if [[ ${WARM:-0} != 1 ]]; then
	export GOCACHE=$scratch/gocache GOMODCACHE=$scratch/gomod K8S_MANAGER_CACHE=$scratch/cache
	/usr/bin/time -o "$scratch/time" -f '%e %M' "$here/vm/bundle/build.sh" >"$scratch/out" 2>"$scratch/log" ||
		{ tail -20 "$scratch/log" >&2; exit 1; }
	read -r wall rss <"$scratch/time"
	printf 'cold bundle build: %.0f s wall (%.1f min), %.2f GB peak RSS\n' "$wall" "$(awk -v s="$wall" 'BEGIN {print s / 60}')" \
		"$(awk -v k="$rss" 'BEGIN {print k / 1048576}')"
	sed -n 's/.*built in [0-9]* s: /parts: /p' "$scratch/log"
fi
cache=${K8S_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager}

start=$(date +%s.%N)
"$here/vm/bundle/build.sh" >"$scratch/out" 2>"$scratch/log" || { tail -20 "$scratch/log" >&2; exit 1; }
printf 'bundle build with the bundle present: %.1f s\n' "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
bundle=$(tail -1 "$scratch/out")

echo "bundle $bundle:"
total=0
while read -r size path; do
	printf '  %-24s %s\n' "${path#"$bundle"/}" "$(mb "$size")"
	total=$((total + size))
done < <(find "$bundle" -type f -printf '%s %p\n' | sort -k2)
echo "  all files: $(mb "$total") ($(awk -v b="$total" 'BEGIN {printf "%.0f", b / 1048576}') MiB)"

# The same six components as separate binaries: the upstream main packages,
# built in a copy of the bundle's wrapper module (go.sum may gain lines).
sep=$scratch/separate
mkdir -p "$sep/module" "$sep/bin"
cp "$cache/build/kubernetes/go.mod" "$cache/build/kubernetes/go.sum" "$cache/build/kubernetes/"*.go "$sep/module/"
packages=()
for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
	packages+=("k8s.io/kubernetes/cmd/$name")
done
start=$(date +%s)
(cd "$sep/module" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$sep/bin/" "${packages[@]}")
echo "the six as separate binaries (built in $(($(date +%s) - start)) s):"
total=0
for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
	size=$(stat -c %s "$sep/bin/$name")
	printf '  %-24s %s\n' "$name" "$(mb "$size")"
	total=$((total + size))
done
echo "  the six: $(mb "$total"), against kube (multi-call) $(mb "$(stat -c %s "$bundle/bin/kube")")"

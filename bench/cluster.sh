#!/usr/bin/env bash
# Times the cluster's life cycle on this machine with the release build and
# the cached bundle, and measures memory at rest. Prints one line per figure.
#
#   cold enable   no state, images not in containerd, no daemon → node Ready +
#                 CoreDNS Ready + kubeconfig merged
#   disable       of the cluster the cold enable brought up → nothing of it
#                 runs
#   warm enable   after disable (data, PKI and images kept)
#   again         enable of a running cluster, 5 s after it came up: every
#                 phase re-checked, nothing restarted
#   reset         reset of an enabled cluster → a fresh cluster Ready
#   idle memory   manager RSS (anonymous and file pages), each component's
#                 PSS, 30 s after an enable
#
# Run as root on a prepared machine (vm/prepare-vm.sh). RUNS=N repeats each
# timing (default 3) and prints the median. Uses its own state folder and HOME.
set -euo pipefail
runs=3
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

seconds() { # command... → elapsed seconds
	local start end
	start=$(date +%s.%N)
	"$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; m status >&2 || true; exit 1; }
	end=$(date +%s.%N)
	awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f\n", b - a}' 
}
forget_images() {
	# shellcheck disable=SC2046 # one reference a word
	ctr -n k8s.io images rm $(ctr -n k8s.io images ls -q | grep -E 'registry.k8s.io/(pause|coredns)') >/dev/null 2>&1 || true
}

cold=() disable=() warm=() again=() reset=()
for _ in $(seq "$runs"); do
	m reset --no-restart >/dev/null 2>&1 || true
	pkill -f -- "--state-dir $state daemon" || true
	sleep 0.5
	rm -rf "$state"
	forget_images
	cold+=("$(seconds m enable --bundle "$bundle")")
	disable+=("$(seconds m disable)")
	warm+=("$(seconds m enable)")
	sleep 5
	again+=("$(seconds m enable)")
	reset+=("$(seconds m reset)")
done
printf 'machine: %s, %s cores, %s\n' "$(uname -r)" "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
printf 'cold enable:  %s s (median of %s: %s; goal: ≤ 30 %% of kubeadm init, bench/kubeadm.sh)\n' "$(printf '%s\n' "${cold[@]}" | median)" "$runs" "${cold[*]}"
printf 'disable:      %s s (median of %s: %s)\n' "$(printf '%s\n' "${disable[@]}" | median)" "$runs" "${disable[*]}"
printf 'warm enable:  %s s (median of %s: %s; goal: ≤ 2 s)\n' "$(printf '%s\n' "${warm[@]}" | median)" "$runs" "${warm[*]}"
printf 'enable again: %s s (median of %s: %s)\n' "$(printf '%s\n' "${again[@]}" | median)" "$runs" "${again[*]}"
printf 'reset→Ready:  %s s (median of %s: %s; goal: ≤ 1/3 of kubeadm reset + init)\n' "$(printf '%s\n' "${reset[@]}" | median)" "$runs" "${reset[*]}"

sleep 30
daemon=$(pgrep -f -- "--state-dir $state daemon" | head -1)
read -r rss anon file < <(awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%.1f ", $2/1024} END {print ""}' "/proc/$daemon/status")
printf 'manager idle RSS: %s MB (goal: ≤ 30 MB; anonymous %s MB, file pages %s MB: its executable'"'"'s code, mostly)\n' "$rss" "$anon" "$file"
total=0
# shellcheck disable=SC2013 # one pid a word
for pid in $(grep -l "K8S_MANAGER_INSTANCE=$state" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
	name=$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^K8S_MANAGER_COMPONENT=//p')
	pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")
	total=$((total + pss))
	printf '  %-24s PSS %6.1f MB\n' "$name" "$(awk -v k="$pss" 'BEGIN {print k / 1024}')"
done
printf 'cluster processes PSS total: %.0f MB (CoreDNS and pods not included; goal with CoreDNS: ≤ 300 MB, bench/levers.sh counts it)\n' "$(awk -v k="$total" 'BEGIN {print k / 1024}')"

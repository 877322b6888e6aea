#!/usr/bin/env bash
# Measures what a lever gives: the same cluster with and without a set of
# settings (component flags and environment, through `--set`), one after the
# other on this machine, each on a fresh state folder (images kept):
#   warm enable   disable then enable, RUNS times (median)
#   memory        each component's PSS (its processes, CoreDNS's pods too),
#                 SETTLE s after the last enable
#   CPU           each component's share of one core over WINDOW s, from its
#                 cgroup (status' cpuMillis), and the pods'
#
#   bench/levers.sh                       the built-in levers below, each against "none"
#   bench/levers.sh NAME 'KEY=VALUE' ...  one lever of your own, against "none"
#
#   RUNS=N (default 3)  SETTLE=N (default 30)  WINDOW=N (default 60)
#
# Run as root on a prepared machine (vm/prepare-vm.sh). Uses its own state
# folder and HOME.
set -euo pipefail
runs=3
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
settle=${SETTLE:-30}
window=${WINDOW:-60}

declare -A levers
order=()
lever() { # NAME SETTING...
	local name=$1
	shift
	order+=("$name")
	levers[$name]=$(printf '%s\n' "$@")
}
if (($# > 0)); then
	lever none
	lever "$@"
else
	# Each against the build's own defaults ("none"): etcd back at its
	# upstream election timeout (the build sets 500 ms), and two memory
	# levers the build does not set.
	lever none
	lever etcd-election-1000 'components.etcd.extraArgs=["--election-timeout=1000"]'
	lever apiserver-memlimit 'components.kube-apiserver.env.GOMEMLIMIT=160MiB'
	lever gogc-50 'components.kube-apiserver.env.GOGC=50' 'components.kube-controller-manager.env.GOGC=50' \
		'components.kube-scheduler.env.GOGC=50' 'components.kubelet.env.GOGC=50' \
		'components.kube-proxy.env.GOGC=50' 'components.etcd.env.GOGC=50'
fi

# PSS in kB of every process of ours, by component, and CoreDNS's.
pss() {
	local pid name
	# shellcheck disable=SC2013 # one pid a word
	for pid in $(grep -l "K8S_MANAGER_INSTANCE=$state" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
		name=$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^K8S_MANAGER_COMPONENT=//p')
		echo "$name $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)"
	done
	for pid in $(pgrep -x coredns); do
		echo "coredns $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")"
	done
}

printf 'machine: %s, %s cores, %s; settle %s s, CPU window %s s, %s warm enables each\n' \
	"$(uname -r)" "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
	"$settle" "$window" "$runs"
for name in "${order[@]}"; do
	m reset --no-restart >/dev/null 2>&1 || true
	stop_daemon
	rm -rf "$state"
	sets=()
	while IFS= read -r setting; do
		[[ -n $setting ]] && sets+=(--set "$setting")
	done <<<"${levers[$name]}"
	m enable --bundle "$bundle" "${sets[@]}" >"$work/enable.log" 2>&1 || { cat "$work/enable.log"; exit 1; }
	warm=()
	for _ in $(seq "$runs"); do
		m disable >/dev/null 2>&1
		t=$EPOCHREALTIME
		m enable >/dev/null 2>&1
		warm+=("$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')")
	done
	sleep "$settle"
	memory=$(pss | awk '{kb[$1] += $2; all += $2} END {for (n in kb) printf "%s %.0f, ", n, kb[n] / 1024; printf "total %.0f MB", all / 1024}')
	before=$(cpu_snapshot) pods_before=$(pods_ns)
	sleep "$window"
	after=$(cpu_snapshot) pods_after=$(pods_ns)
	cpu=$(join <(sort <<<"$before") <(sort <<<"$after") | awk -v w="$window" '
		{ pct = ($3 - $2) / (w * 10); total += pct; printf "%s %.2f, ", $1, pct }
		END { printf "components %.2f %%", total }')
	pods=$(awk -v a="$pods_before" -v b="$pods_after" -v w="$window" 'BEGIN { printf "%.2f", (b - a) / (w * 1e7) }')
	printf '\n[%s] %s\n' "$name" "$(tr '\n' ' ' <<<"${levers[$name]}")"
	printf '  warm enable: %s s (median of %s: %s)\n' "$(printf '%s\n' "${warm[@]}" | median)" "$runs" "${warm[*]}"
	printf '  PSS (MB): %s\n' "$memory"
	printf '  CPU (%% of one core): %s; pods %s %%\n' "$cpu" "$pods"
done

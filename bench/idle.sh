#!/usr/bin/env bash
# The CPU an idle, awake cluster uses: each component's share of one core
# over a window (default 60 s), from the CPU time of its cgroup as `status
# --output json` reports it (every process the component started counted),
# plus the kubelet's pods (their cgroups' total) and the manager itself.
#
#   IDLE_WINDOW=N   seconds measured (default 60)
#   SETTLE=N        seconds waited after the enable before measuring (default 60:
#                   the start's own work is over)
#
# Run as root on a prepared machine (vm/prepare-vm.sh). Uses its own state
# folder and HOME; prints one line per component and the total.
set -euo pipefail
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
window=${IDLE_WINDOW:-60}
settle=${SETTLE:-60}

m enable --bundle "$bundle" >/dev/null 2>&1
sleep "$settle"

# name → CPU milliseconds, one line each.
snapshot() {
	m status --output json | python3 -c '
import json, sys
for c in json.load(sys.stdin)["components"]:
    if c.get("cpuMillis") is not None:
        print(c["name"], c["cpuMillis"])
'
}
# The pods: the kubelet's cgroup tree (v1 cpuacct or v2), in nanoseconds.
pods_ns() {
	local f
	for f in /sys/fs/cgroup/cpuacct/kubepods/cpuacct.usage /sys/fs/cgroup/cpu,cpuacct/kubepods/cpuacct.usage; do
		[[ -r $f ]] && { cat "$f"; return; }
	done
	for f in /sys/fs/cgroup/kubepods/cpu.stat /sys/fs/cgroup/kubepods.slice/cpu.stat; do
		[[ -r $f ]] && { awk '$1 == "usage_usec" {print $2 * 1000}' "$f"; return; }
	done
	echo 0
}
manager_ticks() {
	local daemon
	daemon=$(pgrep -f -- "--state-dir $state daemon" | head -1)
	awk '{print $14 + $15}' "/proc/$daemon/stat"
}

before=$(snapshot) pods_before=$(pods_ns) manager_before=$(manager_ticks)
sleep "$window"
after=$(snapshot) pods_after=$(pods_ns) manager_after=$(manager_ticks)

printf 'machine: %s, %s cores; idle %s s after an enable, measured over %s s\n' \
	"$(uname -r)" "$(nproc)" "$settle" "$window"
join <(sort <<<"$before") <(sort <<<"$after") | awk -v w="$window" '
	{ pct = ($3 - $2) / (w * 10); total += pct; printf "%-26s %5.2f %% of one core\n", $1, pct }
	END { printf "%-26s %5.2f %% of one core\n", "components", total }'
awk -v a="$pods_before" -v b="$pods_after" -v w="$window" \
	'BEGIN { printf "%-26s %5.2f %% of one core\n", "pods (kubepods)", (b - a) / (w * 1e7) }'
awk -v a="$manager_before" -v b="$manager_after" -v w="$window" -v hz="$(getconf CLK_TCK)" \
	'BEGIN { printf "%-26s %5.2f %% of one core\n", "k8s-manager", (b - a) * 100 / hz / w }'

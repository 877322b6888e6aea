#!/usr/bin/env bash
# Times cancel at any moment on this machine with the release build and the
# cached bundle: the toggle off (`settings set kubernetes.enabled=false`, as
# the GUI sends it), then `disable` (the CLI), each 1 s, 3 s and 6 s into a
# cold enable (no state; images kept in containerd), and the time from sending
# it until it returned and nothing of ours runs any more (no process of the
# cluster, no task in containerd's k8s.io namespace, no mount under the state
# folder, no CNI network namespace). Prints one line per way and delay, with
# the phase the enable was in and what the enable reported.
#
# Run as root on a prepared machine (vm/prepare-vm.sh). RUNS=N repeats each
# delay (default 1) and prints the median. Uses its own state folder and HOME.
set -euo pipefail
runs=1
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# What of ours still runs: one line per thing, nothing when all is stopped.
ours() {
	grep -l "K8S_MANAGER_INSTANCE=$state" /proc/[0-9]*/environ 2>/dev/null || true
	ctr -n k8s.io tasks ls -q 2>/dev/null || true
	awk -v s="$state" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo
	local netns
	for netns in /var/run/netns/cni-*; do [[ -e $netns ]] && echo "${netns##*/}"; done
	return 0
}

printf 'machine: %s, %s cores\n' "$(uname -r)" "$(nproc)"
# The two ways to turn it off: the setting, followed to its end (the GUI's
# toggle), and the CLI's disable.
turn_off() {
	case $1 in
	"toggle off") m settings set kubernetes.enabled=false --wait >/dev/null ;;
	disable) m disable >/dev/null ;;
	esac
}
for way in "toggle off" disable; do
	for delay in 1 3 6; do
		times=()
		for _ in $(seq "$runs"); do
			m reset --no-restart >/dev/null 2>&1 || true
			stop_daemon
			rm -rf "$state"
			m enable --output json --bundle "$bundle" >"$work/enable.out" 2>&1 &
			enable=$!
			sleep "$delay"
			phase=$(sed -n 's/.*"phase": *"\([a-z-]*\)".*/\1/p' "$state/state.json" 2>/dev/null | head -1)
			start=$(date +%s.%N)
			turn_off "$way"
			while [[ -n $(ours) ]]; do sleep 0.01; done
			end=$(date +%s.%N)
			wait "$enable" || true
			code=$(grep -o '"code": *"[A-Za-z]*"' "$work/enable.out" | head -1 | sed 's/.*"\([A-Za-z]*\)"$/\1/')
			times+=("$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')")
		done
		printf '%s %s s into a cold enable (%s; enable: %s): all stopped in %s s (median of %s: %s; goal: ≤ 1 s)\n' \
			"$way" "$delay" "${phase:-?}" "${code:-ok}" "$(printf '%s\n' "${times[@]}" | median)" "$runs" "${times[*]}"
	done
done

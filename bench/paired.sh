#!/usr/bin/env bash
# Warm enables of two builds, alternating on one machine: OLD_BIN (an older
# build of the manager, e.g. `git worktree add /tmp/old <commit>` then
# `cargo build --release` there) and this tree's release build (or
# K8S_MANAGER_BIN). Each has its own state folder, made by one cold enable;
# then RUNS rounds of: old enable (timed), disable, new enable (timed),
# disable. The daemon is stopped after each disable, so each timed enable
# starts its daemon, as a first toggle after the VM's start would. Prints each
# enable with its phases, then the medians, next to the goal (≤ 2 s).
#
#   OLD_BIN=/path/to/old/k8s-manager RUNS=5 bench/paired.sh
#
# Run as root on a prepared machine (vm/prepare-vm.sh).
set -euo pipefail
runs=5
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
old_bin=${OLD_BIN:?set OLD_BIN to the older build of k8s-manager to compare with}

side_bin() { if [[ $1 == old ]]; then echo "$old_bin"; else echo "$bin"; fi; }
on() { # SIDE ARGS...: the manager of SIDE on its own state folder
	local side=$1
	shift
	"$(side_bin "$side")" --state-dir "$work/$side" "$@"
}
stop_side() {
	on "$1" disable >/dev/null 2>&1 || true
	on "$1" daemon --stop >/dev/null 2>&1 || true
}
cleanup_sides() {
	local side
	for side in old new; do
		on "$side" reset --no-restart >/dev/null 2>&1 || true
		on "$side" daemon --stop >/dev/null 2>&1 || true
	done
	cleanup
}
trap cleanup_sides EXIT

for side in old new; do
	on "$side" enable --bundle "$bundle" >"$work/$side.out" 2>&1 || { cat "$work/$side.out"; exit 1; }
	stop_side "$side"
done
declare -A times
printf 'machine: %s, %s cores; old: %s\n' "$(uname -r)" "$(nproc)" "$old_bin"
for round in $(seq "$runs"); do
	for side in old new; do
		t=$EPOCHREALTIME
		on "$side" enable >"$work/$side.out" 2>&1 || { cat "$work/$side.out"; exit 1; }
		took=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')
		times[$side]="${times[$side]:-} $took"
		printf 'round %s %s %s s: %s\n' "$round" "$side" "$took" \
			"$(awk '$1 == "✓" {printf "%s %s  ", $2, $3}' "$work/$side.out")"
		awk -v side="$side" '$1 == "✓" {sub(/s$/, "", $3); print side, $2, $3}' "$work/$side.out" >>"$work/phases"
		stop_side "$side"
	done
done
for side in old new; do
	# shellcheck disable=SC2086 # one time a word
	printf '%s: warm enable %s s (median of %s:%s; goal: ≤ 2 s)\n' "$side" \
		"$(printf '%s\n' ${times[$side]} | median)" "$runs" "${times[$side]}"
	for phase in etcd kube-apiserver kube-proxy wait-dns; do
		printf '  %-16s median %s s\n' "$phase" \
			"$(awk -v side="$side" -v phase="$phase" '$1 == side && $2 == phase {print $3}' "$work/phases" | median)"
	done
done

#!/usr/bin/env bash
# Times the image sync: from the end of `docker build` to the image usable in
# containerd's k8s.io namespace, for a ~10 MB and a ~200 MB image of
# incompressible data (a new image each run), and for the everyday rebuild: a
# new 1 MB layer on a 200 MB base the cluster already has. "Usable" is the image imported
# AND unpacked into the snapshotter (what a pod start needs): the sync labels
# the image only after `ctr images import` has unpacked it, so the figure is
# the moment that label appears with the new image ID (then CRI sees it within
# milliseconds). For where the time goes it also times, on the same image,
# `docker save` alone (export) and `docker save | ctr images import` (export +
# import + unpack).
#
# Run as root on a prepared machine (vm/prepare-vm.sh, dockerd running). RUNS=N
# runs per size (default 3). Uses its own state folder and HOME; needs the
# cluster lock of the machine if other clusters run.
set -euo pipefail
runs=3
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

label=io.k8s-manager.image/docker-id
ctx=$work/ctx
mkdir -p "$ctx"
printf 'FROM scratch\nCOPY data /data\n' >"$ctx/Dockerfile"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f\n", b - a}'; }
cleanup_images() {
	docker rmi -f bench-img:10m bench-img:200m bench-img:rebuild >/dev/null 2>&1 || true
	ctr -n k8s.io images rm docker.io/library/bench-img:10m docker.io/library/bench-img:200m \
		docker.io/library/bench-img:rebuild >/dev/null 2>&1 || true
	ctr -n bench-split images rm docker.io/library/bench-img:10m docker.io/library/bench-img:200m >/dev/null 2>&1 || true
}
trap 'cleanup_images; cleanup' EXIT
# Seconds until the sync has labelled TAG's k8s.io image with Docker's ID.
until_synced() {
	local tag=$1 id=$2 start
	start=$(now)
	until ctr -n k8s.io images ls "name==docker.io/library/$tag" 2>/dev/null | grep -q "$label=$id"; do
		sleep 0.01
		[[ $(since "$start" | cut -d. -f1) -lt 120 ]] || { echo "FAILED: $tag not synced" >&2; m status >&2; exit 1; }
	done
	since "$start"
}

m enable --bundle "$bundle" >/dev/null 2>"$work/enable.log" || { cat "$work/enable.log"; exit 1; }
for size in 10 200; do
	tag=bench-img:${size}m
	usable=() export=() import=()
	for _ in $(seq "$runs"); do
		head -c "${size}M" /dev/urandom >"$ctx/data"
		id=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>/dev/null)
		usable+=("$(until_synced "$tag" "$id")")
		start=$(now)
		docker save "$tag" >/dev/null
		export+=("$(since "$start")")
		start=$(now)
		docker save "$tag" | ctr -n bench-split images import - >/dev/null
		import+=("$(since "$start")")
		ctr -n bench-split images rm "docker.io/library/$tag" >/dev/null
	done
	goal=1
	((size < 100)) || goal=3
	printf 'image %4d MB: build end → usable in k8s.io %s s (median of %d: %s; goal: ≤ %s s)\n' "$size" \
		"$(printf '%s\n' "${usable[@]}" | median)" "$runs" "${usable[*]}" "$goal"
	printf '               docker save alone %s s (%s); docker save | ctr import (unpacked) %s s (%s)\n' \
		"$(printf '%s\n' "${export[@]}" | median)" "${export[*]}" \
		"$(printf '%s\n' "${import[@]}" | median)" "${import[*]}"
done

# What containerd alone costs for one 200 MB blob through its content
# service (the data of the last 200 MB image, `ctr content ingest`): the wall
# time and containerd's own CPU time.
containerd_ticks() { awk '{print $14 + $15}' "/proc/$(pgrep -xo containerd)/stat"; }
ticks=$(containerd_ticks) start=$(now)
ctr -n bench-split content ingest --expected-size "$(stat -c %s "$ctx/data")" bench-ingest <"$ctx/data"
wall=$(since "$start")
printf 'containerd alone: a 200 MB blob ingested in %s s, %s s of containerd'"'"'s CPU\n' "$wall" \
	"$(awk -v a="$ticks" -v b="$(containerd_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / hz}')"
ctr -n bench-split content rm "sha256:$(sha256sum "$ctx/data" | cut -d' ' -f1)" >/dev/null

# The rebuild: the 200 MB image of the last run as the base, a new top layer.
rebuild=$work/rebuild
mkdir -p "$rebuild"
printf 'FROM bench-img:200m\nCOPY app /app\n' >"$rebuild/Dockerfile"
usable=()
for _ in $(seq "$runs"); do
	head -c 1M /dev/urandom >"$rebuild/app"
	id=$(DOCKER_BUILDKIT=0 docker build -q -t bench-img:rebuild "$rebuild" 2>/dev/null)
	usable+=("$(until_synced bench-img:rebuild "$id")")
done
printf 'rebuild (1 MB layer on the 200 MB base): build end → usable in k8s.io %s s (median of %d: %s; goal: ≤ 1 s)\n' \
	"$(printf '%s\n' "${usable[@]}" | median)" "$runs" "${usable[*]}"
ctr namespaces rm bench-split >/dev/null 2>&1 || true

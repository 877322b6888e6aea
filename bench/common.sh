# shellcheck shell=bash disable=SC2034 # bundle, runs: read by the scripts that source this
# Sourced by the cluster benchmarks: the release build, the cached bundle, a
# state folder and HOME of their own (removed at exit), and `m` to run the
# manager on them. Set `runs` before sourcing it to change RUNS' default.
# K8S_MANAGER_BIN=path measures that binary instead of this tree's release
# build (an older build, to compare).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${RUNS:-${runs:-3}}
bundle=${K8S_MANAGER_BUNDLE:-$("$root/vm/bundle/build.sh" 2>/dev/null | tail -1)}
bin=${K8S_MANAGER_BIN:-}
if [[ -z $bin ]]; then
	(cd "$root" && cargo build --release --locked -q)
	bin=${CARGO_TARGET_DIR:-$root/target}/release/k8s-manager
fi
work=$(mktemp -d)
state=$work/state
export HOME=$work/home
mkdir -p "$HOME"
m() { "$bin" --state-dir "$state" "$@"; }
stop_daemon() { m daemon --stop >/dev/null 2>&1 || true; }
cleanup() {
	m reset --no-restart >/dev/null 2>&1 || true
	stop_daemon
	rm -rf "$work"
}
trap cleanup EXIT
# The median of the numbers on stdin, with DIGITS decimals (default 2).
median() { sort -n | awk -v d="${1:-2}" '{a[NR]=$1} END {printf "%." d "f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Imports REF into containerd's k8s.io namespace: Debian's static busybox
# as /bin/busybox and /bin/sh, made with the bundle's image tool (needs Go:
# vm/toolchains.sh's tc_go, and busybox-static).
import_busybox() {
	local busybox
	busybox=$(command -v busybox)
	(cd "$root/vm/bundle/bundletool" && go build -o "$work/bundletool" .)
	"$work/bundletool" image --ref "$1" --out "$work/busybox.tar" --entrypoint /bin/busybox \
		--add "/bin/busybox=$busybox" --add "/bin/sh=$busybox" >/dev/null
	ctr -n k8s.io images import "$work/busybox.tar" >/dev/null
}
# Each component's CPU milliseconds (its cgroup, as status reports it), one
# line each: name, milliseconds.
cpu_snapshot() {
	m status --output json | python3 -c '
import json, sys
for c in json.load(sys.stdin)["components"]:
    if c.get("cpuMillis") is not None:
        print(c["name"], c["cpuMillis"])
'
}
# The pods' CPU: the kubelet's cgroup tree (v1 cpuacct or v2), in nanoseconds.
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

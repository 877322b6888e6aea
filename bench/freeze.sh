#!/usr/bin/env bash
# What a freeze of the whole cluster does to it: enables a cluster, freezes
# every component and the kubelet's pods (the manager's `pause`, or by hand
# through the v1 freezer's files), waits FREEZE seconds, thaws them as ORDER
# says, then watches the node for 30 s.
# Prints how long the freeze and the thaw took, the node's Ready condition and
# taints each second, the node's events, the pods' restarts, and from the
# kubelet's log whether it computed a stale NotReady and what of it the thaw
# guard refused.
#
#   FREEZE=N        seconds frozen (default 70: past the kubelet's 30 s runtime
#                   check, and past the controller-manager's 50 s grace)
#   ORDER=wake      (default) `k8s-manager pause`, then the first `kubectl get
#                   nodes` wakes the cluster (timed, the whole command)
#   ORDER=manager   `k8s-manager pause`, then `k8s-manager resume`: the
#                   manager's own freeze and thaw (timed, whole commands)
#   ORDER=api-first etcd, API server, pods, kubelet, kube-proxy; then, once
#                   the kubelet renewed its lease, scheduler, controller-manager
#   ORDER=kubelet-first  pods, kubelet, kube-proxy; KUBELET_FIRST s
#                   (default 0.3) later etcd and the API server; then as above
#
# Run as root on a prepared machine with cgroup v1 (vm/prepare-vm.sh).
set -euo pipefail
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
freeze=${FREEZE:-70}
order=${ORDER:-wake}
kubelet_first=${KUBELET_FIRST:-0.3}
k() { "$bundle/bin/kubectl" --kubeconfig "$state/kubeconfig/admin.conf" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

m enable --bundle "$bundle" >/dev/null 2>&1
sleep 20
api=$(for p in $(pgrep -x kube-apiserver); do
	grep -qa "K8S_MANAGER_INSTANCE=$state" "/proc/$p/environ" && echo "$p"
done | head -1)
cgroup=$(awk -F: '$2 == "freezer" {print $3}' "/proc/$api/cgroup")
cluster=/sys/fs/cgroup/freezer$(dirname "$cgroup")
pods=/sys/fs/cgroup/freezer/kubepods
[[ -d $cluster/kubelet && -d $pods ]] || { echo "no v1 freezer cgroups for this cluster" >&2; exit 1; }

freeze_one() {
	for _ in $(seq 500); do
		echo FROZEN >"$1/freezer.state"
		grep -q FROZEN "$1/freezer.state" && return
		sleep 0.01
	done
	echo "$1 did not freeze" >&2
	exit 1
}
thaw_one() { echo THAWED >"$1/freezer.state"; }
restarts() { k get pods -A -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount} {end}'; }

# By hand through the cgroup files, in ORDER.
by_hand() {
	local t thawed_at renewed=
	t=$(now)
	for c in kube-controller-manager kube-scheduler kube-proxy kubelet; do freeze_one "$cluster/$c"; done
	freeze_one "$pods"
	freeze_one "$cluster/kube-apiserver"
	freeze_one "$cluster/etcd"
	echo "frozen in $(since "$t") s; frozen for $freeze s, then thawed $order"
	sleep "$freeze"
	t=$(now)
	thawed_at=$(date +%s)
	case $order in
	api-first)
		thaw_one "$cluster/etcd"
		thaw_one "$cluster/kube-apiserver"
		thaw_one "$pods"
		thaw_one "$cluster/kubelet"
		thaw_one "$cluster/kube-proxy"
		;;
	kubelet-first)
		thaw_one "$pods"
		thaw_one "$cluster/kubelet"
		thaw_one "$cluster/kube-proxy"
		sleep "$kubelet_first"
		thaw_one "$cluster/etcd"
		thaw_one "$cluster/kube-apiserver"
		;;
	esac
	for _ in $(seq 200); do
		renewed=$(k -n kube-node-lease get lease -o jsonpath='{.items[0].spec.renewTime}' 2>/dev/null || true)
		[[ -n $renewed ]] && (($(date -d "$renewed" +%s) >= thawed_at)) && break
		sleep 0.05
	done
	echo "the kubelet's lease renewed $(since "$t") s after the thaw began ($renewed)"
	thaw_one "$cluster/kube-scheduler"
	thaw_one "$cluster/kube-controller-manager"
	echo "thawed in $(since "$t") s"
}
# The manager's own pause and resume, timed as whole commands.
by_manager() {
	local t
	t=$(now)
	m pause >/dev/null
	echo "k8s-manager pause: $(since "$t") s; frozen for $freeze s"
	sleep "$freeze"
	t=$(now)
	m resume >/dev/null
	echo "k8s-manager resume: $(since "$t") s"
	t=$(now)
	k get nodes >/dev/null
	echo "then kubectl get nodes: $(since "$t") s"
}

# The idle freeze's way: the first call wakes the cluster.
by_call() {
	local t
	t=$(now)
	m pause >/dev/null
	echo "k8s-manager pause: $(since "$t") s; frozen for $freeze s"
	sleep "$freeze"
	# Still frozen, nothing woke it on the way (else a wake shows here).
	m status | grep -E '^(Kubernetes|Last wake):' || true
	t=$(now)
	k get nodes >/dev/null
	echo "the first kubectl get nodes (it wakes the cluster): $(since "$t") s"
	m status | grep '^Last wake' || true
}

before=$(restarts)
case $order in
wake) by_call ;;
manager) by_manager ;;
api-first | kubelet-first) by_hand ;;
*) echo "ORDER is wake, manager, api-first or kubelet-first" >&2; exit 2 ;;
esac
for _ in $(seq 30); do
	echo "$(date +%T) $(k get node -o jsonpath='Ready={.items[0].status.conditions[?(@.type=="Ready")].status} ({.items[0].status.conditions[?(@.type=="Ready")].message}) taints={.items[0].spec.taints}')"
	sleep 1
done | uniq -c -f1
k get events -A --field-selector involvedObject.kind=Node --sort-by=.lastTimestamp | tail -3
echo "pods' restarts before: $before"
echo "pods' restarts after:  $(restarts)"
# What the kubelet said of the thaw: a stale NotReady it computed, and what
# the thaw guard refused of it (status and event), from its log.
log=$state/logs/kubelet.log
echo "the kubelet computed NotReady: $(grep -c 'Node became not ready' "$log" || true) time(s)"
echo "the thaw guard refused: $(grep -o "ValidatingAdmissionPolicy 'k8s-manager-thaw-guard[-a-z]*'" "$log" | sort | uniq -c | tr -s ' ' | paste -sd, || true)"

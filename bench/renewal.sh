#!/usr/bin/env bash
# Certificate renewal on a running cluster: how long `certs renew --all`
# takes (every leaf and kubeconfig re-issued, each component moved over, the
# API server handed over to a new instance), and how many calls to the API
# server fail meanwhile. A caller makes one call every 50 ms, alternately the
# way a pod makes it (the `kubernetes` Service's cluster IP, through
# kube-proxy) and the way kubectl on the host does (127.0.0.1), each a new
# TLS connection verified with the cluster CA and authenticated with a client
# certificate, and each a read of the Pods (the API server's cache and etcd).
#
# Run as root on a prepared machine (vm/prepare-vm.sh). RUNS=N renewals
# (default 3); prints the median time and every failed call.
set -euo pipefail
runs=3
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

m enable --bundle "$bundle" >/dev/null 2>&1 || { echo "enable failed" >&2; m status >&2; exit 1; }
pki=$state/pki
# The caller's credential, copied: the renewal replaces the files (the CA
# stays, so the copy stays valid) and a call must not read a half-renewed pair.
cp "$pki/ca.crt" "$pki/apiserver-kubelet-client.crt" "$pki/apiserver-kubelet-client.key" "$work/"
port=$(m status --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverUrl"].rsplit(":", 1)[1])')
call() { # url → HTTP code (000: no answer)
	curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$work/ca.crt" \
		--cert "$work/apiserver-kubelet-client.crt" --key "$work/apiserver-kubelet-client.key" "$1" || true
}
service_ip=$(curl -s --cacert "$work/ca.crt" --cert "$work/apiserver-kubelet-client.crt" \
	--key "$work/apiserver-kubelet-client.key" "https://127.0.0.1:$port/api/v1/namespaces/default/services/kubernetes" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["clusterIP"])')
targets=("https://$service_ip:443" "https://127.0.0.1:$port")

times=() total=0 failed=0
for run in $(seq "$runs"); do
	log=$work/calls-$run
	: >"$log"
	(
		i=0
		while [[ ! -e $work/stop-$run ]]; do
			url="${targets[$((i % 2))]}/api/v1/namespaces/kube-system/pods?limit=1"
			printf '%s %s %s\n' "$(date +%T.%N | cut -c1-12)" "$(call "$url")" "$url" >>"$log"
			i=$((i + 1))
			sleep 0.05
		done
	) &
	caller=$!
	sleep 1
	start=$(date +%s.%N)
	m certs renew --all >"$work/renew-$run" 2>&1 || { cat "$work/renew-$run" >&2; exit 1; }
	end=$(date +%s.%N)
	sleep 1
	touch "$work/stop-$run"
	wait "$caller"
	times+=("$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}')")
	total=$((total + $(wc -l <"$log")))
	bad=$(grep -vc ' 200 ' "$log" || true)
	failed=$((failed + bad))
	grep -v ' 200 ' "$log" | sed "s/^/  run $run failed: /" || true
	grep -E 'handed over|restarted' "$work/renew-$run" | sed "s/^ *! /  run $run: /" | head -2
done

echo "machine: $(uname -r), $(nproc) cores, $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo)"
echo "certs renew --all on a running cluster: $(printf '%s\n' "${times[@]}" | median) s (median of $runs: ${times[*]})"
echo "API calls during the renewals: $total, failed: $failed"

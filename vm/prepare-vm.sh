#!/usr/bin/env bash
# Prepares a Debian VM (or a machine like it) to run k8s-manager: installs
# containerd, runc, the CNI plugins and iptables from Debian's packages,
# configures containerd's CRI for Kubernetes, sets the kernel parameters a
# cluster needs, and starts containerd. Idempotent: run it at every boot.
#
#   --install-only   only install the packages, and start nothing: no
#                    configuration written, no kernel setting, no daemon
#                    started (apt's own starts of containerd and dockerd are
#                    refused for the install by a policy-rc.d). vm/up.sh and
#                    tests/run.sh use it for --setup-only.
#
# containerd's proxy is the manager's (settings proxy.http, proxy.https,
# proxy.noProxy): at each enable the manager writes HTTP_PROXY, HTTPS_PROXY,
# NO_PROXY and their lowercase twins to <state folder>/proxy.env, or removes
# the file when no proxy is set. Where systemd runs containerd, a drop-in
# (/etc/systemd/system/containerd.service.d/k8s-manager-proxy.conf) reads that
# file with EnvironmentFile=; elsewhere this script starts containerd with the
# file's variables and no other proxy variables. The file is read as text,
# never run. Either way containerd is restarted here when its running
# environment (/proc/<pid>/environ) differs from what the file says: a proxy
# change reaches containerd the next time this script runs (the manager's
# systemd unit runs it before each start of the daemon).
#
# Settings (environment):
#   K8S_MANAGER_SANDBOX_IMAGE  the pause image containerd uses for pod sandboxes
#                              (default registry.k8s.io/pause:3.10.1, the one the bundle carries)
#   K8S_MANAGER_STATE_DIR      the manager's state folder, which holds proxy.env
#                              (default /var/lib/k8s-manager)
#   K8S_MANAGER_IMAGE_MIRROR   host:port of the manager's read-only image endpoint on loopback,
#                              containerd's first mirror of docker.io (default 127.0.0.1:17431,
#                              the manager's images::mirror::DEFAULT_ADDRESS)
#   PREPARE_SKIP_APT=1         do not run apt-get (packages already there)
#   PREPARE_SKIP_DOCKER=1      no Docker engine on this VM (docker.io not installed, dockerd not started)
#
# The Docker engine (Debian's docker.io) runs on this containerd (--containerd
# to its socket, namespace moby), as in the product's VM: the manager copies
# the images it builds into containerd's k8s.io namespace.
set -euo pipefail

install_only=0
case ${1:-} in
--install-only) install_only=1 ;;
"") ;;
*)
	echo "usage: $0 [--install-only]" >&2
	exit 2
	;;
esac
sandbox_image=${K8S_MANAGER_SANDBOX_IMAGE:-registry.k8s.io/pause:3.10.1}
proxy_env=${K8S_MANAGER_STATE_DIR:-/var/lib/k8s-manager}/proxy.env
proxy_names='HTTP_PROXY|http_proxy|HTTPS_PROXY|https_proxy|NO_PROXY|no_proxy'
socket=/run/containerd/containerd.sock
mirror=${K8S_MANAGER_IMAGE_MIRROR:-127.0.0.1:17431}
skip_docker=${PREPARE_SKIP_DOCKER:-0}
log() { printf '[prepare-vm] %s\n' "$*" >&2; }
# Starts a daemon in a session of its own with no descriptor of ours but the
# three standard ones: a lock this script runs under (flock) would otherwise
# be held by containerd or dockerd for as long as they run.
daemon() {
	local log_file=$1 fd
	shift
	(
		for fd in /proc/"$BASHPID"/fd/*; do
			fd=${fd##*/}
			((fd > 2)) && eval "exec $fd>&-"
		done
		exec setsid "$@" >>"$log_file" 2>&1 </dev/null
	) &
}

[[ $(id -u) == 0 ]] || { log "run as root"; exit 1; }

# procps: pgrep and pkill, below.
packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 ethtool socat ca-certificates procps)
[[ $skip_docker == 1 ]] || packages+=(docker.io)
if [[ ${PREPARE_SKIP_APT:-0} != 1 ]]; then
	missing=()
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "installing ${missing[*]}"
		apt-get update -qq
		# Installing starts containerd and dockerd (Debian's maintainer
		# scripts) unless a policy-rc.d refuses: with --install-only, one
		# does for the install (an existing one is left as it is).
		policy=/usr/sbin/policy-rc.d
		if ((install_only)) && [[ ! -e $policy ]]; then
			trap 'rm -f "$policy"' EXIT
			printf '#!/bin/sh\n# k8s-manager prepare-vm.sh --install-only: start nothing while installing\nexit 101\n' >"$policy"
			chmod 0755 "$policy"
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
fi
if ((install_only)); then
	log "packages installed; nothing configured or started (--install-only)"
	exit 0
fi

# --- containerd's configuration ---------------------------------------------
# CAP_SYS_RESOURCE (bit 24) missing from the bounding set means no process may
# lower its oom_score_adj, and runc then fails every pod sandbox unless the CRI
# plugin is told to leave oom_score_adj alone.
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
restrict_oom=false
if (((0x$capbnd >> 24 & 1) == 0)); then
	restrict_oom=true
	log "CAP_SYS_RESOURCE is not available: setting restrict_oom_score_adj"
fi

cni_bin=/usr/lib/cni
[[ -x $cni_bin/bridge ]] || cni_bin=/opt/cni/bin
config=$(
	cat <<TOML
# Written by k8s-manager's prepare-vm.sh; changes here are overwritten.
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$sandbox_image"
    restrict_oom_score_adj = $restrict_oom
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$cni_bin"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
TOML
)
mkdir -p /etc/containerd /etc/cni/net.d
changed=0
if [[ ! -f /etc/containerd/config.toml ]] || [[ $(cat /etc/containerd/config.toml) != "$config" ]]; then
	printf '%s\n' "$config" >/etc/containerd/config.toml.tmp
	mv /etc/containerd/config.toml.tmp /etc/containerd/config.toml
	changed=1
	log "wrote /etc/containerd/config.toml"
fi

# The manager's image endpoint first, then the real registry: a pull of an
# image the manager has in k8s.io (a :latest built with docker build) works
# offline, and anything else (or everything, while the manager is down)
# comes from Docker Hub as before. No `server` line: containerd then ends
# the list with docker.io's own registry, as it does without this file.
hosts=$(
	cat <<TOML
# Written by k8s-manager's prepare-vm.sh; changes here are overwritten.
# No server line: after this host, containerd asks docker.io's own registry.
[host."http://$mirror"]
  capabilities = ["pull", "resolve"]
TOML
)
mkdir -p /etc/containerd/certs.d/docker.io
if [[ ! -f /etc/containerd/certs.d/docker.io/hosts.toml ]] || [[ $(cat /etc/containerd/certs.d/docker.io/hosts.toml) != "$hosts" ]]; then
	printf '%s\n' "$hosts" >/etc/containerd/certs.d/docker.io/hosts.toml.tmp
	mv /etc/containerd/certs.d/docker.io/hosts.toml.tmp /etc/containerd/certs.d/docker.io/hosts.toml
	log "wrote /etc/containerd/certs.d/docker.io/hosts.toml"
fi

# --- kernel ------------------------------------------------------------------
modprobe overlay 2>/dev/null || true
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.ipv4.ip_forward=1
if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
	sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
else
	log "warning: bridge netfilter is not available (modprobe br_netfilter failed): Services may not work"
fi
swapoff -a 2>/dev/null || true

# --- containerd's proxy --------------------------------------------------------
# The proxy variables of the manager's file, one KEY=VALUE a line, sorted.
file_proxy() { if [[ -f $proxy_env ]]; then grep -E "^($proxy_names)=" "$proxy_env" | sort || true; fi; }
# The proxy variables a running process has, the same way.
running_proxy() { tr '\0' '\n' <"/proc/$1/environ" | grep -E "^($proxy_names)=" | sort || true; }
# Later lines override earlier ones with the same name.
merge_env() { awk -F= '{v[$1] = $0} END {for (k in v) print v[k]}' | sort; }
# Sets changed=1 when a running containerd's proxy is not the one it should have.
check_proxy() {
	local want=$1 pid
	shift
	for pid in "$@"; do
		[[ $pid == 0 || ! -r /proc/$pid/environ ]] && continue
		if [[ $(running_proxy "$pid") != "$want" ]]; then
			changed=1
			log "containerd ($pid) runs with other proxy settings than $proxy_env: restarting it"
			return
		fi
	done
}

# --- start containerd ---------------------------------------------------------
# Without the socket, ctr would wait 10 s for it to appear.
containerd_answers() { [[ -S $socket ]] && ctr --address "$socket" --connect-timeout 2s version >/dev/null 2>&1; }
if [[ -d /run/systemd/system ]]; then
	dropin=/etc/systemd/system/containerd.service.d/k8s-manager-proxy.conf
	dropin_text="# Written by k8s-manager's prepare-vm.sh: containerd's proxy comes from the manager's settings.
[Service]
EnvironmentFile=-$proxy_env"
	if [[ ! -f $dropin ]] || [[ $(cat "$dropin") != "$dropin_text" ]]; then
		mkdir -p "${dropin%/*}"
		printf '%s\n' "$dropin_text" >"$dropin.tmp"
		mv "$dropin.tmp" "$dropin"
		systemctl daemon-reload
		changed=1
		log "wrote $dropin"
	fi
	# systemd applies EnvironmentFile= over the unit's own Environment=.
	want=$({
		systemctl show -p Environment --value containerd 2>/dev/null | tr ' ' '\n' | grep -E "^($proxy_names)=" || true
		file_proxy
	} | merge_env)
	check_proxy "$want" "$(systemctl show -p MainPID --value containerd 2>/dev/null || echo 0)"
	systemctl enable containerd >/dev/null 2>&1 || true
	if ((changed)); then systemctl restart containerd; else systemctl start containerd; fi
else
	# shellcheck disable=SC2046 # one pid a word
	check_proxy "$(file_proxy)" $(pgrep -x containerd || true)
	if containerd_answers && ((changed)); then
		log "restarting containerd for the new configuration"
		pkill -x containerd || true
		for _ in $(seq 50); do containerd_answers || break; sleep 0.1; done
	fi
	if ! containerd_answers; then
		mkdir -p /var/log
		unset_proxy=()
		for name in ${proxy_names//|/ }; do unset_proxy+=(-u "$name"); done
		mapfile -t proxy < <(file_proxy)
		daemon /var/log/containerd.log env "${unset_proxy[@]}" "${proxy[@]}" containerd
	fi
fi
for _ in $(seq 100); do
	containerd_answers && break
	sleep 0.1
done
containerd_answers || { log "containerd did not start; see /var/log/containerd.log"; exit 1; }
ctr --address "$socket" plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1 *cri *.*ok' ||
	{ log "containerd runs but its CRI plugin is not ok: ctr plugins ls"; exit 1; }
log "containerd ready ($(ctr --address "$socket" version | awk '/Version:/ {print $2; exit}')) with CRI"

# --- the Docker engine ---------------------------------------------------------
# dockerd on this containerd. Debian's unit already passes
# --containerd=/run/containerd/containerd.sock; without systemd it is started
# here the same way. A containerd restart above leaves a running dockerd
# working: it reconnects to the socket by itself.
docker_answers() { timeout 5 docker version >/dev/null 2>&1; }
if [[ $skip_docker != 1 ]]; then
	if [[ -d /run/systemd/system ]]; then
		systemctl cat docker 2>/dev/null | grep -q -- "--containerd=$socket" ||
			{ log "docker.service does not run dockerd with --containerd=$socket"; exit 1; }
		systemctl enable docker >/dev/null 2>&1 || true
		systemctl start docker
	elif ! docker_answers; then
		mkdir -p /var/log
		daemon /var/log/dockerd.log dockerd --containerd="$socket"
	fi
	for _ in $(seq 150); do
		docker_answers && break
		sleep 0.2
	done
	docker_answers || { log "dockerd did not start; see /var/log/dockerd.log"; exit 1; }
	log "dockerd ready ($(docker version --format '{{.Server.Version}}'))"
fi

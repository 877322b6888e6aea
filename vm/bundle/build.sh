#!/usr/bin/env bash
# Builds the Kubernetes bundle from Go modules: Kubernetes (one multi-call
# binary + kubeadm), etcd, CoreDNS, pause, and OCI image archives for pause and
# CoreDNS, into a versioned folder of the cache:
#
#   $K8S_MANAGER_CACHE/bundles/<kubernetes version>/{bin,images,bundle.json}
#
# The bundle records what it was built from (build-inputs: a fingerprint per
# part of its sources, the versions pinned for it and this script). A second
# run with the folder present, intact and built from the same inputs does
# nothing; when some inputs changed (a wrapper's source, a version), the parts
# they make are built again and the others are taken from the present bundle.
# Two runs at once take turns (a lock in the cache). A build ends by printing
# how long each part took. The last line printed is the bundle folder.
#
# Go comes from vm/toolchains.sh: the machine's when it is 1.24 or newer, else
# a pinned Go installed under the cache.
#
# Settings (environment):
#   K8S_VERSION      Kubernetes version; default: the newest v1.34.x the Go module proxy has
#   ETCD_VERSION     default v3.6.16
#   COREDNS_VERSION  default v1.12.4
#   K8S_MANAGER_CACHE  default ${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${K8S_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager}
etcd_version=${ETCD_VERSION:-v3.6.16}
coredns_version=${COREDNS_VERSION:-v1.12.4}
pause_version=3.10.1
k8s_minor=v1.34
# go.mod files ask for Go 1.24: tc_go puts one on PATH.
# shellcheck source=vm/toolchains.sh
source "$here/../toolchains.sh"
tc_go
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

log() { printf '[bundle %s] %s\n' "$(date +%T)" "$*" >&2; }
# timed NAME: the part that starts now; the times are printed at the end.
timings=() timed_name="" timed_start=0
timed() {
	local now
	now=$(date +%s)
	((timed_start == 0)) || timings+=("$timed_name $((now - timed_start)) s")
	timed_name=$1 timed_start=$now
}

newest_k8s() {
	local versions
	if versions=$(go list -m -versions k8s.io/kubernetes 2>/dev/null); then
		tr ' ' '\n' <<<"$versions" | grep -E "^${k8s_minor//./\\.}\.[0-9]+$" | sort -V | tail -1
	else
		# Offline: take the newest bundle already built for this minor version.
		find "$cache/bundles" -maxdepth 1 -name "${k8s_minor}.*" -printf '%f\n' 2>/dev/null | sort -V | tail -1
	fi
}

k8s_version=${K8S_VERSION:-$(newest_k8s)}
[[ $k8s_version =~ ^v1\.[0-9]+\.[0-9]+$ ]] || { log "cannot tell the Kubernetes version (got '$k8s_version'); set K8S_VERSION"; exit 1; }
k8s_staging_version=v0.${k8s_version#v1.}
bundle=$cache/bundles/$k8s_version
work=$cache/build

mkdir -p "$cache/bundles" "$work"
exec 9>"$cache/build.lock"
flock 9 || { log "cannot lock $cache/build.lock"; exit 1; }
(cd "$here/bundletool" && go build -trimpath -o "$work/bundletool" .)
bundletool=$work/bundletool

# fingerprint PART: the sha256 of what PART is made from: its sources, the
# versions pinned for it, and this script (how it is built).
fingerprint() {
	local sources=() pins
	case $1 in
	kube) sources=("$here"/kubernetes/*.go "$here/procname.go") pins="kubernetes $k8s_version" ;;
	kubeadm) pins="kubernetes $k8s_version" ;;
	etcd) sources=("$here"/etcd/*.go "$here/procname.go") pins="etcd $etcd_version" ;;
	coredns) sources=("$here"/coredns/*.go "$here"/bundletool/*.go) pins="coredns $coredns_version" ;;
	pause) sources=("$here/pause/pause.c" "$here"/bundletool/*.go) pins="pause $pause_version" ;;
	esac
	{
		echo "$1 $pins"
		sha256sum "${BASH_SOURCE[0]}" "${sources[@]}" | sed 's|  .*/bundle/|  |'
	} | sha256sum | cut -d' ' -f1
}
parts=(kube kubeadm etcd coredns pause)
inputs=$(for part in "${parts[@]}"; do echo "$part $(fingerprint "$part")"; done)

# What the present bundle was built from, if it is intact (else nothing).
built_from=""
if [[ -f $bundle/bundle.json ]] && "$bundletool" check "$bundle"; then
	built_from=$(cat "$bundle/build-inputs" 2>/dev/null || true)
	if [[ $built_from == "$inputs" ]]; then
		log "bundle $k8s_version present and intact"
		echo "$bundle"
		exit 0
	fi
fi
# reuse PART FILE...: when the present bundle made PART from the same inputs,
# copies its FILEs into the new one (and says so).
reuse() {
	local part=$1 file
	shift
	grep -qxF "$part $(fingerprint "$part")" <<<"$built_from" || return 1
	for file in "$@"; do cp -a "$bundle/$file" "$stage/$file" || return 1; done
	log "$part: unchanged, taken from the present bundle"
}

start=$(date +%s)
stage=$(mktemp -d "$cache/bundles/.${k8s_version}.XXXXXX")
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/images" "$work/rootfs"

# wrapper DIR MODULE VERSION [FILE...]: a module in $work/DIR that requires
# MODULE@VERSION, with the .go files of this folder's DIR and the FILEs.
wrapper() {
	local dir=$work/$1 module=$2 version=$3
	mkdir -p "$dir"
	cp "$here/$1/"*.go "${@:4}" "$dir/"
	if [[ -f $dir/go.mod ]] && grep -q "^require $module $version\$" "$dir/go.mod" && [[ -f $dir/go.sum ]]; then
		return
	fi
	rm -f "$dir/go.mod" "$dir/go.sum"
	{
		echo "module k8s-manager-bundle/$1"
		echo
		echo "go 1.24"
		echo
		echo "require $module $version"
	} >"$dir/go.mod"
}

# --- Kubernetes -------------------------------------------------------------
# k8s.io/kubernetes points its staging modules at ./staging/...; a module that
# requires it must replace each with the published v0.X.Y module. The list is
# taken from that version's own go.mod so that it is right for any version.
timed "kube, kubeadm"
reuse kube bin/kube && kube_reused=1 || kube_reused=0
reuse kubeadm bin/kubeadm && kubeadm_reused=1 || kubeadm_reused=0
if ((!kube_reused || !kubeadm_reused)); then
	log "kubernetes $k8s_version: resolving modules"
	wrapper kubernetes k8s.io/kubernetes "$k8s_version" "$here/procname.go"
	if ! grep -q '^replace' "$work/kubernetes/go.mod"; then
		upstream_mod=$(go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
		staging=$(sed -n 's|^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*$|\1|p' "$upstream_mod" | sort -u)
		[[ -n $staging ]] || { log "no staging modules found in $upstream_mod"; exit 1; }
		{
			echo
			echo "replace ("
			for m in $staging; do echo "	$m => $m $k8s_staging_version"; done
			echo ")"
		} >>"$work/kubernetes/go.mod"
		log "kubernetes: $(wc -w <<<"$staging") staging modules replaced"
	fi
	(cd "$work/kubernetes" && go mod tidy)

	minor=${k8s_version#v1.}
	minor=${minor%%.*}
	build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
	done
	if ((!kube_reused)); then
		log "kubernetes: building kube (multi-call)"
		(cd "$work/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/bin/kube" .)
	fi
	if ((!kubeadm_reused)); then
		log "kubernetes: building kubeadm"
		(cd "$work/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/bin/kubeadm" k8s.io/kubernetes/cmd/kubeadm)
	fi
fi
for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
	ln -s kube "$stage/bin/$name"
done

# --- etcd -------------------------------------------------------------------
timed "etcd"
reuse etcd bin/etcd bin/etcdctl bin/etcdutl || {
	log "etcd $etcd_version: building etcd, etcdctl, etcdutl"
	wrapper etcd go.etcd.io/etcd/server/v3 "$etcd_version" "$here/procname.go"
	(
		cd "$work/etcd"
		grep -q "go.etcd.io/etcd/etcdctl/v3 $etcd_version" go.mod ||
			go get "go.etcd.io/etcd/etcdctl/v3@$etcd_version" "go.etcd.io/etcd/etcdutl/v3@$etcd_version"
		go mod tidy
		ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_version}"
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/bin/etcd" .
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/bin/etcdutl" go.etcd.io/etcd/etcdutl/v3
	)
}

# --- CoreDNS ----------------------------------------------------------------
timed "coredns"
reuse coredns images/coredns.tar || {
	log "coredns $coredns_version: building"
	wrapper coredns github.com/coredns/coredns "$coredns_version"
	(
		cd "$work/coredns"
		go mod tidy
		CGO_ENABLED=0 go build -trimpath \
			-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$coredns_version" \
			-o "$work/rootfs/coredns" .
	)
	"$bundletool" image --ref "registry.k8s.io/coredns/coredns:$coredns_version" --out "$stage/images/coredns.tar" \
		--entrypoint /coredns --add "/coredns=$work/rootfs/coredns"
}

# --- pause ------------------------------------------------------------------
timed "pause, manifest"
reuse pause images/pause.tar || {
	log "pause $pause_version: building"
	cc -static -Os -Wall -Wextra -Werror -DPAUSE_VERSION="\"$pause_version\"" -o "$work/rootfs/pause" "$here/pause/pause.c"
	strip "$work/rootfs/pause"
	"$bundletool" image --ref "registry.k8s.io/pause:$pause_version" --out "$stage/images/pause.tar" \
		--entrypoint /pause --add "/pause=$work/rootfs/pause"
}

# --- manifest ---------------------------------------------------------------
echo "$inputs" >"$stage/build-inputs"
"$bundletool" manifest "$stage" <<JSON
{
  "kubernetes": "$k8s_version",
  "components": {
    "kubernetes": "$k8s_version",
    "etcd": "$etcd_version",
    "coredns": "$coredns_version",
    "pause": "$pause_version"
  },
  "executables": [
    {"path": "bin/kube-apiserver", "args": ["--version"], "expect": "Kubernetes $k8s_version"},
    {"path": "bin/kube-controller-manager", "args": ["--version"], "expect": "Kubernetes $k8s_version"},
    {"path": "bin/kube-scheduler", "args": ["--version"], "expect": "Kubernetes $k8s_version"},
    {"path": "bin/kubelet", "args": ["--version"], "expect": "Kubernetes $k8s_version"},
    {"path": "bin/kube-proxy", "args": ["--version"], "expect": "Kubernetes $k8s_version"},
    {"path": "bin/kubectl", "args": ["version", "--client"], "expect": "Client Version: $k8s_version"},
    {"path": "bin/kubeadm", "args": ["version", "-o", "short"], "expect": "$k8s_version"},
    {"path": "bin/etcd", "args": ["--version"], "expect": "etcd Version: ${etcd_version#v}"},
    {"path": "bin/etcdctl", "args": ["version"], "expect": "etcdctl version: ${etcd_version#v}"},
    {"path": "bin/etcdutl", "args": ["version"], "expect": "etcdutl version: ${etcd_version#v}"}
  ],
  "images": [
    {"path": "images/pause.tar", "ref": "registry.k8s.io/pause:$pause_version"},
    {"path": "images/coredns.tar", "ref": "registry.k8s.io/coredns/coredns:$coredns_version"}
  ]
}
JSON

rm -rf "$bundle"
mv "$stage" "$bundle"
trap - EXIT
timed "end"
times=$(printf '%s, ' "${timings[@]}")
log "bundle $k8s_version built in $(($(date +%s) - start)) s: ${times%, }"
echo "$bundle"

#!/usr/bin/env bash
# Proves the README's two commands on a bare Debian 12: makes a clean Debian 12
# root file system with debootstrap (minbase, plus python3 and ca-certificates:
# nothing else), from the Debian mirror this machine's apt uses, puts this
# repository's HEAD in it (git archive), and in a chroot of it runs
#
#   bash vm/up.sh --setup-only
#   bash tests/run.sh --setup-only
#
# then checks that `k8s-manager --version` runs, `k8s-manager bundle verify`
# passes on the bundle it built, `kubectl version --client` runs from PATH,
# and that nothing was left running in the chroot (--setup-only starts
# nothing). Prints each step's time and ends with PASS or FAIL per check.
#
# Everything is built from scratch (the bundle, the crate twice: release and
# tests): hours on a busy 2-core machine (README, Figures), and ~25 GB of disk
# (it refuses to start with less free; NEED_GB=N to change). Too long for CI.
# A step that fails is reported and the checks still run: the summary says
# what passed. Run as root on a Debian 12 machine.
#
#   BARE_DEBIAN_DIR=DIR  make the root file system there (default: a new folder
#                        under /var/tmp); it is removed at the end unless KEEP=1
#   KEEP=1               keep it (e.g. to look at it, or to chroot into it)
#
# apt in the chroot starts no service (a policy-rc.d that refuses every start);
# /proc, /sys and /dev are bind-mounted and unmounted on any exit. The chroot
# gets this machine's resolv.conf and the certificate authorities it adds to
# Debian's (/usr/local/share/ca-certificates): the network's, not the project's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[bare-debian %s] %s\n' "$(date +%T)" "$*" >&2; }
[[ $(id -u) == 0 ]] || { log "run as root"; exit 1; }
suite=bookworm

# The Debian mirror of this machine's apt, and its entries for $suite
# (vm/toolchains.sh: tc_apt_entries).
# shellcheck source=vm/toolchains.sh
source "$root/vm/toolchains.sh"
entries=$(tc_apt_entries "$suite")
mirror=$(tc_apt_mirror "$suite")
[[ -n $mirror ]] || { log "no apt entry for $suite in /etc/apt/sources.list(.d): cannot tell the mirror"; exit 1; }

command -v debootstrap >/dev/null || {
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# The first run here ran out of disk in its last build: check first.
parent=${BARE_DEBIAN_DIR:-/var/tmp}
[[ -d $parent ]] || parent=$(dirname "$parent")
free_gb=$(df -P -BG "$parent" | awk 'NR == 2 {print $4 + 0}')
((free_gb >= ${NEED_GB:-25})) ||
	{ log "only $free_gb GB free under $parent: a run needs ~${NEED_GB:-25} GB (NEED_GB=N to change)"; exit 1; }

target=${BARE_DEBIAN_DIR:-$(mktemp -d /var/tmp/bare-debian.XXXXXX)}
target=$(realpath "$target")
mounted=()
# The processes whose root is the chroot.
chroot_pids() {
	local d
	for d in /proc/[0-9]*; do
		[[ $(readlink "$d/root" 2>/dev/null) == "$target" ]] && echo "${d#/proc/}"
	done
	return 0
}
# shellcheck disable=SC2317 # a trap
cleanup() {
	local code=$? pid m i
	# Whatever still runs in the chroot (nothing should) is ours: end it.
	for pid in $(chroot_pids); do kill -9 "$pid" 2>/dev/null || true; done
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		m=${mounted[i]}
		umount -R "$m" 2>/dev/null || umount -Rl "$m" 2>/dev/null || log "could not unmount $m"
	done
	if [[ ${KEEP:-0} == 1 ]]; then
		log "kept $target"
	elif ! grep -q " $target/" /proc/self/mountinfo; then
		rm -rf --one-file-system "$target"
	else
		log "something is still mounted under $target: not removed"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

elapsed() { echo $(($(date +%s) - $1)); }
times=()

log "debootstrap $suite (minbase, python3, ca-certificates) from $mirror into $target"
t=$(date +%s)
debootstrap --variant=minbase --include=python3,ca-certificates "$suite" "$target" "$mirror" >"$target.debootstrap.log" 2>&1 ||
	{ tail -20 "$target.debootstrap.log" >&2; exit 1; }
rm -f "$target.debootstrap.log"
times+=("debootstrap $(elapsed "$t") s")

# The machine's Debian entries, as a fresh install has them.
while read -r uri s; do
	echo "deb $uri $s main"
done <<<"$entries" >"$target/etc/apt/sources.list"
cp /etc/resolv.conf "$target/etc/resolv.conf"
# The certificate authorities this machine trusts beyond Debian's list (a
# network that inspects TLS presents its own): the chroot reaches the same
# registries through the same network, so it trusts them too.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	mkdir -p "$target/usr/local/share/ca-certificates"
	cp /usr/local/share/ca-certificates/*.crt "$target/usr/local/share/ca-certificates/"
	chroot "$target" update-ca-certificates >/dev/null
fi
printf '#!/bin/sh\n# bench/bare-debian.sh: no service starts in this chroot\nexit 101\n' >"$target/usr/sbin/policy-rc.d"
chmod 0755 "$target/usr/sbin/policy-rc.d"
for m in proc sys dev; do
	mount --rbind "/$m" "$target/$m"
	mount --make-rslave "$target/$m"
	mounted+=("$target/$m")
done
mkdir -p "$target/root/k8s-manager"
commit=$(git -C "$root" rev-parse --short HEAD)
git -C "$root" archive "$commit" | tar -x -C "$target/root/k8s-manager"
log "repository: $commit"

# A login-like environment of the chroot's own, nothing of this machine's.
in_chroot() {
	chroot "$target" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		/bin/bash -c "cd /root/k8s-manager && $1"
}

checks=() failed=0
# step NAME: runs NAME in the chroot, timed; a failure is a FAIL, not the end.
step() {
	local t
	log "chroot: $1"
	t=$(date +%s)
	if in_chroot "$1"; then
		checks+=("PASS  $1 ($(elapsed "$t") s)")
	else
		checks+=("FAIL  $1 (exit $?, after $(elapsed "$t") s; its output is above)")
		failed=1
	fi
}
check() { # name command
	if out=$(in_chroot "$2" 2>&1); then
		checks+=("PASS  $1: $(tail -1 <<<"$out")")
	else
		checks+=("FAIL  $1: $(tail -3 <<<"$out" | tr '\n' ' ')")
		failed=1
	fi
}

step "bash vm/up.sh --setup-only"
# What vm/up.sh --setup-only promises, checked before the second command.
check "k8s-manager --version" "k8s-manager --version"
# shellcheck disable=SC2016 # expanded in the chroot
check "bundle verify" 'k8s-manager bundle verify "$(ls -d /root/.cache/k8s-manager/bundles/v1.* | tail -1)"'
check "kubectl on PATH" 'command -v kubectl && kubectl version --client'
step "bash tests/run.sh --setup-only"
left=$(for pid in $(chroot_pids); do ps -o pid=,args= -p "$pid" || true; done)
if [[ -z $left ]]; then
	checks+=("PASS  nothing left running in the chroot")
else
	checks+=("FAIL  left running in the chroot: $(tr '\n' ';' <<<"$left")")
	failed=1
fi
# -x: not into the proc, sys and dev mounted in it (du fails on what vanishes there).
used=$(du -shx "$target" 2>/dev/null | cut -f1) || used="unknown (du failed)"

echo
echo "=== bench/bare-debian.sh: Debian $suite from $mirror, repository $commit ==="
printf 'time: %s\n' "${times[@]}"
printf 'disk used by the chroot: %s\n' "$used"
printf '%s\n' "${checks[@]}"
exit "$failed"

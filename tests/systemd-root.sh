#!/usr/bin/env bash
# Makes once, and prints, the root file system the systemd tests of
# tests/prepare_vm.rs boots with systemd-nspawn: Debian 12 from debootstrap
# (minbase) with systemd as init (systemd, systemd-sysv, dbus), containerd,
# runc, iptables, procps, util-linux and ca-certificates, from the Debian
# mirror of this machine's apt (vm/toolchains.sh: tc_apt_mirror). containerd
# is enabled, as Debian's package leaves it; the timers of a fresh install
# (apt-daily, ...) and the console's getty are masked: the test's boots do
# nothing but what it asks.
#
# Cached under <cache>/systemd-root/<suite>-<key>, key: the digest of this
# script's lines but its comments, so a change here (the package list, the
# setup) makes a new root; the roots of other versions are removed a day after
# they were built. Built in a temporary folder next to it and renamed when
# complete (a root that is there is whole), under a lock (concurrent callers
# build it once). The tests boot it on an overlay (systemd-nspawn
# --volatile=overlay --read-only): nothing a test does is written to it.
#
# Prints the root's path, the last line of its output. Run as root. Cold:
# 1 to 3 minutes on this project's machine, by its load (README, Figures);
# then at once.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[systemd-root] %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { log "run as root"; exit 1; }
# shellcheck source=vm/toolchains.sh
source "$here/../vm/toolchains.sh"

suite=bookworm
packages=systemd,systemd-sysv,dbus,containerd,runc,iptables,procps,util-linux,ca-certificates
masked=(apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer console-getty.service)
key=$(grep -v '^[[:space:]]*#' "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
dir=${K8S_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager}/systemd-root
target=$dir/$suite-$key

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [[ ! -x $target/lib/systemd/systemd ]]; then
	mirror=$(tc_apt_mirror "$suite")
	[[ -n $mirror ]] || { log "no apt entry for $suite in /etc/apt/sources.list(.d): cannot tell the mirror"; exit 1; }
	tc_apt_install debootstrap
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	trap 'rm -rf --one-file-system "$tmp" "$tmp.log"' EXIT
	log "debootstrap $suite (minbase, $packages) into $target (cold: 1 to 3 minutes)"
	start=$(date +%s)
	debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
		{ tail -20 "$tmp.log" >&2; exit 1; }
	chroot "$tmp" systemctl mask "${masked[@]}" >/dev/null 2>&1
	chroot "$tmp" apt-get clean
	printf 'built %s in %s s by tests/systemd-root.sh\n' "$(date -u +%FT%TZ)" "$(($(date +%s) - start))" >"$tmp/.k8s-manager-root"
	chmod 0755 "$tmp"
	mv -T "$tmp" "$target"
	trap - EXIT
	rm -f "$tmp.log"
	log "$(cat "$target/.k8s-manager-root")"
	# The roots of other versions of this script (a day old: another
	# checkout may still use its own).
	for old in "$dir"/"$suite"-*; do
		if [[ $old != "$target" && -n $(find "$old/.k8s-manager-root" -mtime +0 2>/dev/null) ]]; then
			rm -rf --one-file-system "$old"
		fi
	done
fi
echo "$target"

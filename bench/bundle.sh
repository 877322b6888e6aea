#!/usr/bin/env bash
# Measures a cold build of the Kubernetes bundle: empty Go build cache and
# module cache (both in a temporary folder), so every module is downloaded and
# every package compiled. Prints wall time and peak memory. Takes ~15 minutes
# on 2 cores and ~5 GB of disk; the real caches are not touched.
set -euo pipefail
[[ -x /usr/bin/time ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d)
trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
export GOCACHE=$scratch/gocache GOMODCACHE=$scratch/gomod K8S_MANAGER_CACHE=$scratch/cache
/usr/bin/time -f 'cold bundle build: %e s wall, %M KB peak RSS' "$here/vm/bundle/build.sh" >/dev/null
du -sh "$scratch/cache/bundles/"* | sed 's/^/bundle size: /'

#!/usr/bin/env bash
# The settings page's first paint after load, in Debian's chromium (headless,
# driven by Selenium as in tests/ui/browser.py): a daemon of a state folder of
# its own serves the page (no cluster: the first paint does not wait for the
# cluster's data, which the page fetches after it), and the page is loaded
# RUNS times in one browser. Prints Chromium's first-paint and
# first-contentful-paint (`performance.getEntriesByType('paint')`) of each
# load and their medians; asserts nothing. Target: under 200 ms.
#
#   RUNS=10              loads to measure (after one warm-up load)
#   K8S_MANAGER_BIN=...  measure this binary instead of a release build
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${RUNS:-10}
# Selenium from the tests' venv (tests/run.sh makes it).
# shellcheck source=vm/toolchains.sh
source "$root/vm/toolchains.sh"
tc_python_venv "${tc_test_wheels[@]}"
bin=${K8S_MANAGER_BIN:-}
if [[ -z $bin ]]; then
	(cd "$root" && cargo build --release --locked -q)
	bin=${CARGO_TARGET_DIR:-$root/target}/release/k8s-manager
fi
work=$(mktemp -d)
state=$work/state
mkdir -p "$state"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '{"schemaVersion": 1, "ui": {"port": %s}}\n' "$port" >"$state/settings.json"
HOME=$work "$bin" --state-dir "$state" daemon >"$work/daemon.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
	grep -q "settings page on" "$work/daemon.log" 2>/dev/null && break
	sleep 0.1
done
url=$(HOME=$work "$bin" --state-dir "$state" ui --url)

python3 - "$url" "$runs" <<'PY'
import statistics, sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

url, runs = sys.argv[1], int(sys.argv[2])
options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--window-size=1000,1400"]:
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
read = """return Object.fromEntries(performance.getEntriesByType('paint')
          .map(e => [e.name, e.startTime]));"""
first, contentful = [], []
try:
    for i in range(runs + 1):
        driver.get("about:blank")
        driver.get(url)
        paints = {}
        for _ in range(100):
            paints = driver.execute_script(read)
            if "first-contentful-paint" in paints:
                break
        if i == 0:
            continue  # warm-up: the browser's own first page
        first.append(paints["first-paint"])
        contentful.append(paints["first-contentful-paint"])
        print(f"load {i}: first paint {paints['first-paint']:.0f} ms, "
              f"first contentful paint {paints['first-contentful-paint']:.0f} ms")
finally:
    driver.quit()
print(f"first paint: median {statistics.median(first):.0f} ms "
      f"(min {min(first):.0f}, max {max(first):.0f}) over {runs} loads; "
      f"first contentful paint: median {statistics.median(contentful):.0f} ms (target < 200 ms)")
PY

"""The settings page in a real browser (Debian's chromium, headless, driven by
Selenium), against a real daemon and cluster that tests/ui_browser.rs brought
up. Every element is found by its role and accessible name, as a screen
reader finds it; every wait has a deadline. A screenshot of each state goes to
$UI_ARTIFACTS.

Environment: UI_URL (the address `k8s-manager ui --url` printed), MANAGER and
STATE_DIR (the binary and its state folder, for `status`), KUBECTL and
KUBECONFIG_FILE (upstream kubectl and the kubeconfig the cluster was merged
into), UI_ARTIFACTS (where the screenshots go)."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

URL = os.environ["UI_URL"]
MANAGER = os.environ["MANAGER"]
STATE_DIR = os.environ["STATE_DIR"]
KUBECTL = os.environ["KUBECTL"]
KUBECONFIG = os.environ["KUBECONFIG_FILE"]
ARTIFACTS = os.environ["UI_ARTIFACTS"]
PORT = urllib.parse.urlparse(URL).port
TOKEN = urllib.parse.urlparse(URL).fragment.split("token=", 1)[1]


def step(text):
    print(f"[ui] {text}", flush=True)


def wait_until(what, seconds, check):
    """Polls `check` until it returns something true; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # an element replaced while read: try again
            last = err
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds}s (last: {last!r})")


def manager(*args):
    out = subprocess.run([MANAGER, "--state-dir", STATE_DIR, *args],
                         capture_output=True, text=True, timeout=120)
    return out


def cli_state():
    out = manager("status", "--output", "json")
    return json.loads(out.stdout)["state"]["state"]


def kubectl(*args):
    return subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, "--context", "docker-desktop", *args],
                          capture_output=True, text=True, timeout=60)


def browser():
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--window-size=1000,2200", "--disable-gpu"]:
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def by_name(driver, role, name, css):
    """The one element of `role` with accessible name `name` among `css`."""
    found = [e for e in driver.find_elements(By.CSS_SELECTOR, css)
             if e.is_displayed() and e.aria_role == role and e.accessible_name == name]
    assert len(found) == 1, f"{len(found)} {role} named {name!r}"
    return found[0]


def status_text(driver):
    found = [e for e in driver.find_elements(By.CSS_SELECTOR, "[role=status]") if e.get_attribute("id") == "status"]
    assert len(found) == 1
    return found[0].text.strip()


def shot(driver, name):
    path = os.path.join(ARTIFACTS, f"{name}.png")
    driver.save_screenshot(path)
    step(f"screenshot {path}")


def switch(driver):
    return by_name(driver, "switch", "Enable Kubernetes", "[role=switch]")


def security_checks():
    """Plain HTTP, as another site or a local process would send it."""
    def send(method, path, headers, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        conn.putrequest(method, path, skip_host=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        data = body.encode() if body else b""
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        answer = conn.getresponse()
        answer.read()
        lowered = {k.lower() for k, _ in answer.getheaders()}
        assert not any(k.startswith("access-control-") for k in lowered), answer.getheaders()
        conn.close()
        return answer.status

    own = f"127.0.0.1:{PORT}"
    origin = f"http://{own}"
    assert send("GET", "/", {"Host": f"rebound.example:{PORT}"}) == 403, "a foreign Host"
    assert send("GET", "/api/v1/status", {"Host": "rebound.example", "X-K8s-Manager-Token": TOKEN}) == 403
    assert send("GET", "/api/v1/status", {"Host": own}) == 401, "data without the token"
    assert send("POST", "/api/v1/disable", {"Host": own, "Origin": origin}) == 401, "a POST without the token"
    assert send("POST", "/api/v1/disable", {"Host": own, "Origin": "http://evil.example",
                                            "X-K8s-Manager-Token": TOKEN}) == 403, "a cross-origin POST"
    assert send("POST", "/api/v1/disable", {"Host": own, "Origin": origin, "Sec-Fetch-Site": "cross-site",
                                            "X-K8s-Manager-Token": TOKEN}) == 403, "a cross-site POST"
    assert send("OPTIONS", "/api/v1/disable", {"Host": own, "Origin": "http://evil.example",
                                               "Access-Control-Request-Method": "POST"}) == 401, "a preflight"
    assert send("GET", "/api/v1/status", {"Host": own, "X-K8s-Manager-Token": TOKEN}) == 200
    assert cli_state() == "running", "no refused request changed anything"
    step("security: foreign Host, no token, cross-origin and cross-site requests refused; no CORS header")


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    security_checks()
    driver = browser()
    try:
        run(driver)
    except BaseException:
        shot(driver, "failure")
        for entry in driver.get_log("browser"):
            print("[browser]", entry, flush=True)
        raise
    finally:
        driver.quit()


def run(driver):
    start = time.monotonic()
    driver.get(URL)
    assert "#token" not in driver.current_url, "the token stays out of the address bar"
    wait_until("the status reads Running", 60, lambda: status_text(driver) == "Running")
    assert switch(driver).get_attribute("aria-checked") == "true"
    by_name(driver, "button", "Reset Kubernetes Cluster", "button")
    for label in ["Kubernetes version", "Context name", "API server port", "LoadBalancer address",
                  "HTTP proxy", "HTTPS proxy", "Bypass the proxy for", "This page's port"]:
        found = [e for e in driver.find_elements(By.CSS_SELECTOR, "input, select") if e.accessible_name == label]
        assert len(found) == 1, f"a field named {label!r}"
    step(f"loaded: Running, in {time.monotonic() - start:.1f}s")

    # Live without reload: objects made with kubectl show up.
    marker = kubectl("create", "configmap", "ui-marker", "--from-literal=made=before-reset")
    assert marker.returncode == 0, marker.stderr
    lb = kubectl("create", "service", "loadbalancer", "ui-web", "--tcp=8080:80")
    assert lb.returncode == 0, lb.stderr
    wait_until("the LoadBalancer Service is listed", 20,
               lambda: "default/ui-web" in driver.find_element(By.ID, "services").text)
    wait_until("CoreDNS shows among the workloads", 20,
               lambda: "coredns" in driver.find_element(By.ID, "workloads").text)
    wait_until("the components show", 10,
               lambda: "kube-apiserver" in driver.find_element(By.ID, "components").text)
    wait_until("the kubeconfig files show", 10,
               lambda: KUBECONFIG in driver.find_element(By.ID, "c-kubeconfigs").text)
    # A Docker image appears as in the cluster, with no command: made with
    # `docker import` (an empty filesystem: no registry, no build context).
    made = subprocess.run(["sh", "-c", "tar cf - -T /dev/null | docker import - ui-probe:dev"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    try:
        wait_until("the Docker image shows as in the cluster", 30,
                   lambda: any("ui-probe:dev" in line and "in the cluster" in line
                               for line in driver.find_element(By.ID, "images").text.splitlines()))
        shot(driver, "running")
    finally:
        subprocess.run(["docker", "rmi", "ui-probe:dev"], capture_output=True, timeout=60)
    # The README's picture: the top of the page, small; it ends above the
    # kubeconfig files, whose temporary paths are this test's.
    driver.set_window_size(900, 1110)
    shot(driver, "readme")

    # Dark theme, at 800 px.
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    driver.set_window_size(800, 2200)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 800, f"the page is {width}px wide at 800"
    shot(driver, "running-dark-800")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.set_window_size(1000, 2200)

    # Off: Stopping, then Stopped, and the CLI agrees.
    switch(driver).click()
    seen = wait_until("the status leaves Running", 30,
                      lambda: status_text(driver) if status_text(driver) != "Running" else None)
    if seen == "Stopping":
        shot(driver, "stopping")
    wait_until("the status reads Stopped", 60, lambda: status_text(driver) == "Stopped")
    assert switch(driver).get_attribute("aria-checked") == "false"
    assert cli_state() == "stopped", "k8s-manager status agrees"
    shot(driver, "stopped")
    step("switch off: Stopped, and `k8s-manager status` says stopped")

    # A proxy password is write-only: the page shows the marker and a note,
    # never the password, and an Apply of another field keeps it.
    out = manager("settings", "set", "proxy.http=http://me:s3cret@192.0.2.1:3128")
    assert out.returncode == 0, out.stderr
    http_field = [e for e in driver.find_elements(By.CSS_SELECTOR, "input") if e.accessible_name == "HTTP proxy"][0]
    wait_until("the proxy shows with its password hidden", 10,
               lambda: "me:********@192.0.2.1:3128" in http_field.get_attribute("value"))
    hint = driver.find_element(By.ID, "h-proxy.http")
    assert hint.is_displayed() and "password is set" in hint.text, hint.text
    assert "s3cret" not in driver.page_source, "the password reached the page"
    bypass = [e for e in driver.find_elements(By.CSS_SELECTOR, "input") if e.accessible_name == "Bypass the proxy for"][0]
    bypass.clear()
    bypass.send_keys("example.test")
    by_name(driver, "button", "Apply", "button").click()
    saved_file = os.path.join(STATE_DIR, "settings.json")
    saved = wait_until("the bypass list is saved", 10, lambda: (lambda d: d if d["proxy"]["noProxy"] == ["example.test"]
                       else None)(json.load(open(saved_file))))
    assert saved["proxy"]["http"] == "http://me:s3cret@192.0.2.1:3128/", saved["proxy"]
    shown = json.loads(manager("settings", "get", "--output", "json").stdout)["proxy"]["http"]
    assert "s3cret" not in shown, shown
    shot(driver, "proxy-password")
    out = manager("settings", "set", "proxy.http=null", "proxy.noProxy=[]")
    assert out.returncode == 0, out.stderr
    wait_until("the proxy is cleared on the page", 10,
               lambda: http_field.get_attribute("value") == "" and not hint.is_displayed())
    step("a proxy password: shown as ******** with a note, kept by an Apply of another field, never on the page")

    # On: Starting — <phase> with its progress, then Running.
    switch(driver).click()
    starting = wait_until("the status reads Starting", 30,
                          lambda: status_text(driver) if status_text(driver).startswith("Starting — ") else None)
    progress = driver.find_element(By.ID, "progress")
    assert progress.is_displayed() and progress.accessible_name == "Start progress"
    shot(driver, "starting")
    step(f"switch on: {starting!r}")
    wait_until("the status reads Running", 120, lambda: status_text(driver) == "Running")
    assert cli_state() == "running", "k8s-manager status agrees"
    step("switch on: Running, and `k8s-manager status` says running")

    # Reset: a dialog that says what is lost; Cancel keeps everything.
    by_name(driver, "button", "Reset Kubernetes Cluster", "button").click()
    dialog = wait_until("the reset dialog opens", 5,
                        lambda: [d for d in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]") if d.is_displayed()])
    assert len(dialog) == 1 and "volumes and their data" in dialog[0].text, dialog[0].text
    assert dialog[0].accessible_name == "Reset Kubernetes Cluster?"
    shot(driver, "reset-dialog")
    by_name(driver, "button", "Cancel", "dialog button").click()
    wait_until("the dialog closes", 5, lambda: not driver.find_element(By.ID, "reset-dialog").is_displayed())
    assert kubectl("get", "configmap", "ui-marker").returncode == 0, "Cancel reset nothing"
    by_name(driver, "button", "Reset Kubernetes Cluster", "button").click()
    wait_until("the reset dialog opens", 5, lambda: driver.find_element(By.ID, "reset-dialog").is_displayed())
    by_name(driver, "button", "Reset", "dialog button").click()
    wait_until("the reset begins", 30, lambda: status_text(driver) != "Running")
    wait_until("the fresh cluster runs", 180, lambda: status_text(driver) == "Running")
    gone = wait_until("kubectl reaches the fresh cluster", 60,
                      lambda: (lambda r: r if "NotFound" in r.stderr else None)(kubectl("get", "configmap", "ui-marker")))
    assert gone.returncode != 0
    shot(driver, "after-reset")
    step("reset: a fresh cluster, the ConfigMap made before is gone")

    # A refused setting shows the daemon's message next to its field.
    port_field = [e for e in driver.find_elements(By.CSS_SELECTOR, "input") if e.accessible_name == "API server port"][0]
    port_field.clear()
    port_field.send_keys("70000")
    by_name(driver, "button", "Apply", "button").click()
    error = driver.find_element(By.ID, "e-kubernetes.apiPort")
    wait_until("the refusal shows next to the API port", 10, lambda: error.is_displayed() and error.text)
    assert port_field.get_attribute("aria-invalid") == "true"
    assert "e-kubernetes.apiPort" in port_field.get_attribute("aria-describedby")
    shot(driver, "refused-port")
    settings = json.loads(manager("settings", "get", "--output", "json").stdout)
    assert settings["kubernetes"]["apiPort"] == 6443, "a refused setting changes nothing"
    step(f"apply of API port 70000: refused next to its field ({error.text!r})")

    # An enable that fails (its API port taken): its error, with what it found
    # one click away; then the port back, and the cluster comes back.
    switch(driver).click()
    wait_until("the status reads Stopped", 60, lambda: status_text(driver) == "Stopped")
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    port_field.clear()
    port_field.send_keys(str(taken))
    by_name(driver, "button", "Apply", "button").click()
    wait_until("the port is saved", 10,
               lambda: json.loads(manager("settings", "get", "--output", "json").stdout)["kubernetes"]["apiPort"] == taken)
    switch(driver).click()
    failed = wait_until("the status reads Error", 60,
                        lambda: status_text(driver) if status_text(driver).startswith("Error — ") else None)
    by_name(driver, "button", "Show logs", "button").click()
    wait_until("what failed shows", 10,
               lambda: driver.find_element(By.ID, "logs").is_displayed()
               and str(taken) in driver.find_element(By.ID, "logs-text").text)
    shot(driver, "error")
    step(f"a failed enable: {failed[:120]!r}")
    holder.close()
    port_field.clear()
    port_field.send_keys("6443")
    by_name(driver, "button", "Apply", "button").click()
    wait_until("back to Running", 180, lambda: status_text(driver) == "Running")
    assert cli_state() == "running"
    step("API port back to 6443: Running")

    # Component overrides, folded: a flag the manager owns is refused next to
    # its field; one of the user's restarts its component, and only it.
    summary = driver.find_element(By.CSS_SELECTOR, "#overrides > summary")
    assert summary.accessible_name == "Component flags and environment", summary.accessible_name
    summary.click()
    api_flags = wait_until("the overrides unfold", 5, lambda: [
        e for e in driver.find_elements(By.CSS_SELECTOR, "textarea")
        if e.accessible_name == "kube-apiserver flags" and e.is_displayed()])[0]
    api_flags.send_keys("--anonymous-auth=true")
    by_name(driver, "button", "Apply", "button").click()
    error = driver.find_element(By.ID, "e-components.kube-apiserver.extraArgs")
    wait_until("the refusal shows next to the API server's flags", 10, lambda: error.is_displayed() and error.text)
    assert "--anonymous-auth is the manager's" in error.text, error.text
    assert api_flags.get_attribute("aria-invalid") == "true"
    settings = json.loads(manager("settings", "get", "--output", "json").stdout)
    assert settings["components"]["kube-apiserver"]["extraArgs"] == [], "a refused flag changes nothing"
    shot(driver, "refused-flag")
    step(f"a flag the manager owns: refused next to its field ({error.text[:60]!r}...)")

    def pids():
        status = json.loads(manager("status", "--output", "json").stdout)
        return {c["name"]: c.get("pid") for c in status["components"] if c.get("kind") != "task"}
    before = pids()
    api_flags.clear()
    scheduler_flags = [e for e in driver.find_elements(By.CSS_SELECTOR, "textarea")
                       if e.accessible_name == "kube-scheduler flags"][0]
    scheduler_flags.send_keys("--v=2")
    by_name(driver, "button", "Apply", "button").click()
    wait_until("the change is applied", 10,
               lambda: "kube-scheduler restarts" in driver.find_element(By.ID, "apply-status").text)
    after = wait_until("kube-scheduler restarted", 120, lambda: (lambda p: p if p.get("kube-scheduler") not in
                       (None, before["kube-scheduler"]) and cli_state() == "running" else None)(pids()))
    assert {k: v for k, v in after.items() if k != "kube-scheduler"} == \
        {k: v for k, v in before.items() if k != "kube-scheduler"}, (before, after)
    cmdline = open(f"/proc/{after['kube-scheduler']}/cmdline", "rb").read().split(b"\0")
    assert b"--v=2" in cmdline, cmdline
    wait_until("the status reads Running", 60, lambda: status_text(driver) == "Running")
    step("kube-scheduler --v=2 from the page: kube-scheduler restarted with it, the others kept running")

    # Script errors only: the refusals above are answers the page expects
    # (and /api/v1/images is a 404 until the image sync serves it).
    problems = [e for e in driver.get_log("browser")
                if e["level"] == "SEVERE" and e.get("source") != "network"]
    assert not problems, problems


if __name__ == "__main__":
    sys.exit(main())

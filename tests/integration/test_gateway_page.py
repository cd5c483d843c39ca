"""The GPU page as a person meets it: the gateway as a real process on the simulated cluster, the page
opened in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium).

The simulated cluster is slowed where a real switch is slow (the old pod's shutdown, R1's load) so the
phases last long enough to be seen on the page, at a speed factor that keeps the whole switch short.
With ``HOMELAB_GPU_PAGE_SCREENSHOTS=DIR`` the tests save ``gateway-page-desktop.png`` and
``gateway-page-phone.png`` there (``scripts/page-screenshots`` refreshes docs/images with them).
"""
import base64
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.gateway_helpers import (
    NS,
    POD,
    engine_switch_to,
    gateway_config,
    setup_namespace,
    start_gateway,
    writes,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = os.environ.get("HOMELAB_GPU_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HOMELAB_GPU_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = os.environ.get("HOMELAB_GPU_PAGE_SCREENSHOTS")
TOKEN = "page-token-5d1c9e"
IMAGE = "vllm/vllm-openai:v0.8.5.post1"
R1 = "casperhansen/deepseek-r1-distill-qwen-7b-awq"
SPEED = 20
# simulated seconds: the old pod takes 40 s to stop (2 s real), R1 100 s to load (5 s real)
SLOW = {"extends": "default", "images": {IMAGE: {"shutdown_seconds": 40}}, "models": {R1: {"load_seconds": 100}}}
INSTANCE = "vllm-server"
# the /v1 API keys are on in every test: the page works without them and never shows them
API_KEY = "page-api-key-0c4e8b2a71"

pytestmark = [pytest.mark.sim_only, pytest.mark.slow]


def role_modes():
    """The role's default catalog: the gateway and ``switch_mode.yml`` switch with the same modes."""
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)["vllm_modes"]


@pytest.fixture
def lab(kube_sim_factory, tmp_path):
    """(cluster, gateway): mode ml running, the gateway on it with the switch token and API keys for /v1."""
    cluster = kube_sim_factory(scenario=SLOW, speed=SPEED)
    setup_namespace(cluster)
    modes = role_modes()
    _result, error = engine_switch_to(cluster, "ml", modes=modes)
    assert error is None, error
    gateway = start_gateway(tmp_path, cluster, gateway_config({"modes": modes, "pod": POD}), token=TOKEN,
                            extra_env={"VLLM_GATEWAY_API_KEYS": json.dumps([{"name": "chat", "key": API_KEY}])})
    yield cluster, gateway
    gateway.stop()


@pytest.fixture
def browser(tmp_path):
    """``browser(width, height)`` -> a headless Chromium (closed after the test)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            pytest.fail("%s is missing: install the Debian package %s (scripts/setup does)." % (path, package))
    opened = []

    def start(width=1280, height=900):
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-extensions", "--window-size=%d,%d" % (width, height),
                    "--user-data-dir=%s" % (tmp_path / ("chromium-%d" % len(opened)))):
            options.add_argument(arg)
        if width < 500:
            # a phone: a desktop window cannot be that narrow, the device emulation can
            options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                                  "pixelRatio": 2.0}})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        opened.append(driver)
        return driver

    yield start
    for driver in opened:
        driver.quit()


def wait(driver, check, timeout=60, what="the page"):
    """The first true value of ``check(driver)`` within ``timeout`` s (polled every 0.1 s)."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(check)
    except TimeoutException:
        body = text_of(driver, "body")
        raise AssertionError("%s never came; the page shows:\n%s" % (what, body[:3000]))


def text_of(driver, css):
    """The rendered text of the first element matching ``css`` (read in one go: the page re-renders live)."""
    return driver.execute_script("var n = document.querySelector(arguments[0]); return n ? n.innerText : null;", css)


def shown_mode(driver):
    return driver.execute_script(
        "var s = document.querySelector('section.instance'); return s ? s.getAttribute('data-mode') : null;")


def message(driver):
    return driver.execute_script("var m = document.getElementById('message'); return m.hidden ? '' : m.textContent;")


def open_page(driver, gateway):
    driver.get(gateway.url + "/")
    wait(driver, shown_mode, what="the current mode")
    wait(driver, lambda d: text_of(d, "#live") == "Live", what="the live connection")


def save_token(driver, token):
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "token-save").click()


def click_mode(driver, mode):
    button = wait(driver, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, 'button[data-mode="%s"]' % mode)
                                          if b.is_enabled()), None), what="an enabled button for %s" % mode)
    button.click()


def screenshot(driver, name):
    """Save the whole page as docs would show it (only with HOMELAB_GPU_PAGE_SCREENSHOTS)."""
    if not SHOTS:
        return
    os.makedirs(SHOTS, exist_ok=True)
    width = driver.execute_script("return document.documentElement.clientWidth;")
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    with open(os.path.join(SHOTS, "gateway-page-%s.png" % name), "wb") as handle:
        handle.write(base64.b64decode(shot["data"]))


def test_the_page_shows_the_mode_with_strict_headers_and_every_cluster_text_escaped(lab, browser):
    cluster, gateway = lab
    status, html, headers = gateway.call("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in html and "style=" not in html and "http://" not in html and "https://" not in html
    # API keys are on for /v1 (a request without one is refused), the page needs none
    assert gateway.call("GET", "/v1/models")[0] == 401
    driver = browser()
    open_page(driver, gateway)
    assert shown_mode(driver) == "ml"
    facts = text_of(driver, "section.instance dl.facts")
    assert "Qwen/Qwen3-8B-AWQ" in facts and "0 in flight, 0 queued" in facts
    # the catalog's modes with their verdicts and expected switch time (the role's target_seconds)

    def r1_row(d):
        text = text_of(d, 'table.modes tr[data-mode="r1"]')
        return text if text and "90 s" in text else None

    row = wait(driver, r1_row, what="r1's expected switch time")
    assert "pass" in row and "unknown" not in row, row
    # text from the cluster (here the switch record's trigger) is shown as text, never run as HTML
    hostile = "<img src=x id=pwned onerror=\"document.title='pwned'\">"
    core = client.CoreV1Api(cluster.api_client())
    core.patch_namespaced_config_map(INSTANCE + "-switch", NS, {"data": {"trigger": hostile, "started_at":
                                                                         "2026-12-01T10:00:00.000000Z"}})
    wait(driver, lambda d: hostile in text_of(d, "table.history"),
         what="the record's trigger as text")
    assert driver.execute_script("return document.getElementById('pwned');") is None
    assert driver.title != "pwned"
    assert API_KEY not in driver.page_source and API_KEY not in json.dumps(gateway.status())
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert severe == [], severe


def test_a_click_on_r1_with_the_token_shows_each_phase_live_and_then_r1(lab, browser):
    cluster, gateway = lab
    driver = browser()
    open_page(driver, gateway)
    save_token(driver, TOKEN)
    assert TOKEN not in driver.current_url
    assert driver.get_cookies() == []
    click_mode(driver, "r1")
    seen = []
    elapsed = set()
    deadline = time.time() + 120
    while time.time() < deadline and (shown_mode(driver) != "r1" or driver.execute_script(
            "return !!document.querySelector('.switching');")):
        now = driver.execute_script(
            "var p = document.querySelector('.switching .phase-now'); var e = document.querySelector('.switching .elapsed');"
            "return p ? [p.textContent, e ? e.textContent : ''] : null;")
        if now and (not seen or seen[-1] != now[0]):
            seen.append(now[0])
        if now:
            elapsed.add(now[1])
        time.sleep(0.1)
    assert shown_mode(driver) == "r1", text_of(driver, "body")[-2000:]
    # the switch's phases appeared on the page one after another while it ran, with a running clock
    assert "ready" in seen and len(seen) >= 3, seen
    assert len(elapsed) >= 3, elapsed
    wait(driver, lambda d: "is now in mode r1" in message(d), what="the switch's answer")
    facts = text_of(driver, "section.instance dl.facts")
    assert R1 in facts
    history = text_of(driver, "table.history tbody tr")
    assert "ml \u2192 r1" in history and "person" in history and "ok" in history, history
    # and drawn as a stacked bar, one segment per phase
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.ph-ready")) >= 1
    assert gateway.status()["mode"] == "r1"


def test_a_wrong_or_missing_token_says_so_and_writes_nothing(lab, browser):
    cluster, gateway = lab
    driver = browser()
    open_page(driver, gateway)
    cluster.reset_requests()
    click_mode(driver, "r1")
    wait(driver, lambda d: "Enter the gateway token first" in message(d), what="the missing-token message")
    save_token(driver, "not-the-token")
    click_mode(driver, "r1")
    wait(driver, lambda d: "did not accept the token" in message(d), what="the wrong-token message")
    assert "nothing was changed" in message(driver)
    assert "not-the-token" not in text_of(driver, "body")
    # the refused token is forgotten: the next click asks for one again
    assert driver.execute_script("return window.sessionStorage.length;") == 0
    assert writes(cluster) == []
    assert shown_mode(driver) == "ml" and gateway.status()["mode"] == "ml"


def test_gaming_shows_the_reserved_banner_and_release_brings_the_default_back(lab, browser):
    cluster, gateway = lab
    driver = browser()
    open_page(driver, gateway)
    save_token(driver, TOKEN)
    click_mode(driver, "gaming")
    banner = wait(driver, lambda d: text_of(d, "#reserved-" + INSTANCE), what="the reserved banner")
    assert "Reserved" in banner and "gaming" in banner
    assert "gpu-mode ml" in banner and "ansible-playbook switch_mode.yml -e mode=ml" in banner
    assert gateway.status()["locked"] is True
    release = wait(driver, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "button.release")
                                           if b.is_enabled()), None), what="an enabled release button")
    release.click()
    wait(driver, lambda d: shown_mode(d) == "ml" and not d.find_elements(By.ID, "reserved-" + INSTANCE),
         what="mode ml without the banner")
    wait(driver, lambda d: "is now in mode ml" in message(d), what="the release's answer")
    status = gateway.status()
    assert status["mode"] == "ml" and status["locked"] is False


def test_when_no_live_stream_is_left_the_page_polls_and_still_follows_a_switch(lab, browser):
    cluster, gateway = lab
    streams = []
    try:
        # every live stream the gateway allows (32) is taken: the page's EventSource gets 503
        for _index in range(32):
            sock = socket.create_connection((gateway.host, gateway.port), timeout=10)
            sock.sendall(b"GET /gateway/events HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
            streams.append(sock)
        driver = browser()
        driver.get(gateway.url + "/")
        wait(driver, lambda d: "checking every 3 s" in (text_of(d, "#live") or ""), what="the polling notice")
        wait(driver, lambda d: shown_mode(d) == "ml", what="mode ml")
        # a switch at the console shows up through /gateway/status
        _result, error = engine_switch_to(cluster, "gaming", modes=role_modes())
        assert error is None, error
        wait(driver, lambda d: shown_mode(d) == "gaming" and text_of(d, "#reserved-" + INSTANCE),
             what="gaming and the reserved banner")
    finally:
        for sock in streams:
            sock.close()


def resident_modes():
    """The role's catalog with ml and r1 resident (vLLM sleep mode): both keep a pod on the one GPU."""
    modes = role_modes()
    modes["ml"].update(resident=True, sleeping_vram_mib=1024, weights_mib=5800)
    modes["r1"].update(resident=True, sleeping_vram_mib=1024, weights_mib=5300)
    return modes


def engines(driver):
    """Each mode's resident engine as the modes table shows it ({mode: awake/asleep/...})."""
    return driver.execute_script(
        "var out = {}; document.querySelectorAll('table.modes tr[data-mode] .engine').forEach(function (n) {"
        "out[n.closest('tr').getAttribute('data-mode')] = n.getAttribute('data-engine'); }); return out;")


def test_a_click_on_a_sleeping_resident_mode_shows_sleep_and_wake_live_and_a_request_needs_no_other_switch(
        kube_sim_factory, tmp_path, browser):
    # the GPU shared by two pods (time-slicing); sleep, wake and the warm-up's one token slowed so that
    # each lasts a second or more on the page (simulated seconds at speed 20)
    cluster = kube_sim_factory(speed=SPEED, scenario={
        "extends": "default", "models": {"Qwen/Qwen3-8B-AWQ": {"sleep_seconds": 30},
                                         R1: {"wake_seconds": 30, "tokens_per_second": 0.05}}})
    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "gpu": {"count": 2}}]})
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + 30
    while (core.read_node("k3s-gpu-worker").status.allocatable or {}).get("nvidia.com/gpu") != "2":
        assert time.monotonic() < deadline, "the node does not advertise two GPU slots"
        time.sleep(0.1)
    setup_namespace(cluster)
    modes = resident_modes()
    result, error = engine_switch_to(cluster, "ml", modes=modes)
    assert error is None, error
    assert result["resident"] == {"awake": "ml", "asleep": ["r1"], "plan": result["resident"]["plan"]}
    gateway = start_gateway(tmp_path, cluster, gateway_config({"modes": modes, "pod": POD}), token=TOKEN)
    try:
        driver = browser()
        open_page(driver, gateway)
        assert shown_mode(driver) == "ml"
        wait(driver, lambda d: engines(d) == {"ml": "awake", "r1": "asleep"}, what="ml awake and r1 asleep")
        assert "resident, asleep" in text_of(driver, 'table.modes tr[data-mode="r1"]')
        save_token(driver, TOKEN)
        click_mode(driver, "r1")
        seen = []
        deadline = time.time() + 120
        while time.time() < deadline and (shown_mode(driver) != "r1" or driver.execute_script(
                "return !!document.querySelector('.switching');")):
            now = driver.execute_script(
                "var p = document.querySelector('.switching .phase-now'); return p ? p.textContent : null;")
            if now and (not seen or seen[-1] != now):
                seen.append(now)
            time.sleep(0.05)
        assert shown_mode(driver) == "r1", text_of(driver, "body")[-2000:]
        # the resident phases, live and in the engine's order: ml falls asleep, r1 wakes and is warmed up
        # (no cold-start phase: schedule, pull and ready are not shown, start has nothing to start)
        order = ["terminate", "sleep", "start", "wake", "warmup", "verify"]
        assert all(p in order for p in seen) and seen == sorted(seen, key=order.index), seen
        assert {"sleep", "wake", "warmup"} <= set(seen), seen
        wait(driver, lambda d: "is now in mode r1" in message(d), what="the switch's answer")
        wait(driver, lambda d: engines(d) == {"ml": "asleep", "r1": "awake"}, what="r1 awake and ml asleep")
        assert R1 in text_of(driver, "section.instance dl.facts")
        row = text_of(driver, "table.history tbody tr")
        assert "ml \u2192 r1" in row and "ok" in row, row
        for phase in ("sleep", "wake", "warmup", "verify"):
            assert phase + " " in row, row
        assert "start 0.0 s" in row and "pull" not in row, row
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.ph-wake")) >= 1
        # r1 answers through the gateway at once: no other switch, no write to the cluster
        switches = len(gateway.status()["switches"])
        cluster.reset_requests()
        status, body, _headers = gateway.call("POST", "/v1/chat/completions", {
            "model": R1, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200 and body["model"] == R1, body
        assert writes(cluster) == []
        assert len(gateway.status()["switches"]) == switches and gateway.status()["mode"] == "r1"
        assert engines(driver) == {"ml": "asleep", "r1": "awake"}
    finally:
        gateway.stop()


def playbook_env(cluster):
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for key in ("ANSIBLE_INVENTORY", "K8S_AUTH_KUBECONFIG", "GPU_MODE_PROGRESS"):
        env.pop(key, None)
    return env


def test_a_switch_by_ansible_appears_on_the_open_page_without_a_reload(lab, browser, tmp_path):
    cluster, gateway = lab
    driver = browser()
    open_page(driver, gateway)
    driver.execute_script("window.notReloaded = true;")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"vllm_modes": role_modes()}))
    playbook = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "switch_mode.yml",
                                 "-e", "mode=r1", "-e", "@" + str(catalog)], cwd=ROOT, env=playbook_env(cluster),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        phase = wait(driver, lambda d: d.execute_script(
            "var p = document.querySelector('.switching .phase-now'); return p ? p.textContent : null;"),
            timeout=240, what="the switch Ansible started")
        text = text_of(driver, ".switching")
        assert "ml \u2192 r1" in text and "Ansible or gpu-mode" in text, text
        assert phase in ("terminate", "schedule", "pull", "start", "ready", "verify"), phase
        wait(driver, lambda d: d.execute_script(
            "var p = document.querySelector('.switching .phase-now'); return p && p.textContent === 'ready';"),
            timeout=120, what="phase ready")
        screenshot(driver, "desktop")
        out, _err = playbook.communicate(timeout=300)
    finally:
        if playbook.poll() is None:
            playbook.kill()
            playbook.wait()
    assert playbook.returncode == 0, out[-3000:]
    wait(driver, lambda d: shown_mode(d) == "r1" and not d.find_elements(By.CSS_SELECTOR, ".switching"),
         what="mode r1")
    assert driver.execute_script("return window.notReloaded === true;")
    row = text_of(driver, "table.history tbody tr")
    assert "ml \u2192 r1" in row and "Ansible/gpu-mode" in row, row
    # the same page on a 375 px wide phone: nothing wider than the screen
    phone = browser(375, 812)
    open_page(phone, gateway)
    assert phone.execute_script("return window.innerWidth;") == 375
    assert phone.execute_script("return document.documentElement.scrollWidth;") <= 375
    screenshot(phone, "phone")

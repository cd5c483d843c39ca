"""The gateway's HTTP edge under a hostile or careless client (issue 25), the gateway as a real process
(``python -m ansible_collections.homelab.gpu.gateway``) in front of the simulated cluster: slow and idle
connections are closed after the configured timeouts, connections beyond max_connections are refused,
the worst case of large bodies stays under the role's memory limit, paths cannot leave ``/v1/`` of
vLLM, metrics stay flat whatever names arrive, and a client that goes away costs no traceback.
Timeouts are set short in the configuration; no test waits through a default."""
import http.client
import json
import os
import socket
import struct
import threading
import time

import pytest
import yaml

from tests.integration.gateway_helpers import ROOT, gateway_config, serving_ml, start_gateway
from tests.kube_sim.pki import urlopen as kube_sim_urlopen

SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)
ROLE_DEFAULTS = os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")
UNITS = {"Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3}


@pytest.fixture
def cluster(kube_sim_factory):
    return serving_ml(kube_sim_factory, SPEED)


@pytest.fixture
def gateway(cluster, tmp_path):
    started = []

    def start(extra_env=None, **overrides):
        proc = start_gateway(tmp_path, cluster, gateway_config(**overrides), token="t", index=len(started),
                             extra_env=extra_env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def proc_status(gw, key):
    """A field of /proc/<gateway pid>/status as an int (VmRSS, VmHWM in kB; Threads)."""
    with open("/proc/%d/status" % gw.proc.pid) as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (key, gw.proc.pid))


def connect(gw, timeout=10):
    return socket.create_connection((gw.host, gw.port), timeout=timeout)


def read_until_closed(sock, timeout):
    """What the gateway sent before it closed the connection; None when it kept it open ``timeout`` s."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                return out
            out += piece
    except socket.timeout:
        return None
    except ConnectionError:
        return out


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_slow_clients_are_capped_at_max_connections_and_closed_after_header_timeout(gateway):
    # header_timeout well above the time the 60 connections take to open on a loaded machine: none of
    # the first 20 may time out (and free its place) before the last one has arrived
    gw = gateway(max_connections=20, header_timeout=3)
    threads_before = proc_status(gw, "Threads")
    slow = []
    for _round in range(60):
        sock = connect(gw)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\n")   # and never the rest
        slow.append(sock)
    # the gateway holds a thread for at most max_connections of them; the others got a 503 and were closed
    assert wait_for(lambda: proc_status(gw, "Threads") <= threads_before + 20, 5), proc_status(gw, "Threads")
    refused = 0
    for sock in slow[20:]:
        out = read_until_closed(sock, 5)
        assert out is not None, "a connection beyond max_connections stayed open"
        refused += out.startswith(b"HTTP/1.1 503 ")
    assert refused >= 30
    # the first 20 are closed once header_timeout has passed, with a 408
    for sock in slow[:20]:
        out = read_until_closed(sock, 10)
        assert out is not None and out.startswith(b"HTTP/1.1 408 "), out
        sock.close()
    assert wait_for(lambda: proc_status(gw, "Threads") <= threads_before, 5)
    metrics = gw.call("GET", "/metrics")[1]
    assert "\nvllm_gateway_connections_refused_total 40\n" in metrics
    # and the gateway still answers
    assert gw.call("GET", "/health")[0] == 200


def test_idle_keep_alive_connections_are_closed_after_keepalive_timeout(gateway):
    gw = gateway(keepalive_timeout=0.5)
    conns = []
    for _round in range(50):
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") != "close"
        resp.read()
        conns.append(conn)
    for conn in conns:
        assert read_until_closed(conn.sock, 5) == b"", "an idle keep-alive connection stayed open"
        conn.close()
    assert 'vllm_gateway_connections_open 1' in gw.call("GET", "/metrics")[1]


def memory_bytes(text):
    text = str(text)
    for suffix in sorted(UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[:-len(suffix)]) * UNITS[suffix])
    return int(text)


def test_the_worst_case_of_large_bodies_stays_under_the_roles_memory_limit(gateway):
    """24 clients at once send the largest body the role allows, of the kind that costs the most memory
    (ASCII text with one character outside the BMP, a mode name the gateway renames): the gateway's
    peak RSS stays under the pod's memory limit with a margin; the requests it has no room for get 503."""
    with open(ROLE_DEFAULTS) as handle:
        role = yaml.safe_load(handle)
    limit = memory_bytes(role["vllm_gateway_resources"]["limits"]["memory"])
    gw = gateway(max_body_bytes=role["vllm_gateway_max_body_bytes"],
                 max_body_memory_bytes=role["vllm_gateway_max_body_memory_bytes"],
                 max_connections=role["vllm_gateway_max_connections"])
    text = "a" * (role["vllm_gateway_max_body_bytes"] - 200) + "\U0001F600"
    body = json.dumps({"model": "ml", "prompt": text, "max_tokens": 1}, ensure_ascii=False).encode()
    assert len(body) <= role["vllm_gateway_max_body_bytes"]
    outcomes = []

    def client():
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=120)
        try:
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = json.loads(resp.read())
            outcomes.append(resp.status if resp.status == 200 else (resp.status, payload["error"]["code"]))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _round in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(200) >= 1, outcomes
    assert set(outcomes) <= {200, (503, "server_busy")}, outcomes
    peak = proc_status(gw, "VmHWM") * 1024
    print("24 bodies of %d bytes: %s; peak RSS %.1f MiB, limit %d MiB"
          % (len(body), sorted(map(str, outcomes)), peak / 2.0 ** 20, limit >> 20))
    assert peak < 0.8 * limit, "peak RSS %d MiB, the pod's limit %d MiB" % (peak >> 20, limit >> 20)


@pytest.mark.parametrize("target", ["/v1/../../../../api/v1/namespaces/ml/secrets",
                                    "/v1/%2e%2e/%2E%2E/%2e%2e/%2e%2e/api/v1/namespaces/ml/secrets",
                                    "http://gateway/v1/../../../../api/v1/namespaces/ml/secrets"])
def test_a_path_cannot_leave_v1_of_vllm_through_the_api_servers_proxy(cluster, gateway, target):
    gw = gateway()
    cluster.reset_requests()
    sock = connect(gw)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n" % target.encode())
    out = read_until_closed(sock, 10)
    sock.close()
    assert out.startswith(b"HTTP/1.1 404 ")
    assert not [r for r in cluster.requests()["log"] if "secrets" in r["path"] or "/proxy" in r["path"]]


def test_metrics_and_memory_stay_flat_whatever_model_names_arrive(gateway):
    gw = gateway()
    name = "m" * 1000000
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps({"model": "warm-up"}), headers={"Content-Type": "x"})
    conn.getresponse().read()
    rss_before = proc_status(gw, "VmRSS")
    for index in range(40):
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "%d%s" % (index, name)}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    conn.close()
    grown = proc_status(gw, "VmRSS") - rss_before
    status, metrics, _headers = gw.call("GET", "/metrics")
    assert status == 200 and len(metrics) < 10000
    assert 'vllm_gateway_requests_total{model="unknown",status="404"} 41' in metrics
    assert grown < 15 * 1024, "RSS grew by %d MiB" % (grown >> 10)


def test_a_client_that_goes_away_is_one_debug_line_and_no_traceback(gateway):
    gw = gateway(extra_env={"VLLM_GATEWAY_LOG_LEVEL": "DEBUG"})
    for index in range(30):
        sock = connect(gw)
        if index % 3 == 0:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\n")   # half a head
        elif index % 3 == 1:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\n{\"mo")
        else:
            sock.sendall(b"GET /gateway/status HTTP/1.1\r\nHost: gateway\r\n\r\n")
        # a reset, not a clean close: what a killed client leaves
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert gw.call("GET", "/health")[0] == 200
    wait_for(lambda: gw.log().count("went away") >= 20 or "Traceback" in gw.log(), 5)
    log = gw.log()
    assert "Traceback" not in log, log[-3000:]
    assert 20 <= log.count("went away") <= 30, log[-3000:]


def test_status_detail_reads_the_cluster_at_most_every_few_seconds(cluster, gateway):
    gw = gateway()

    def info_reads():
        return len([r for r in cluster.requests()["log"] if r["method"] == "GET" and "/pods" in r["path"]])

    gw.call("GET", "/gateway/status?detail=1")
    cluster.reset_requests()
    for _round in range(10):
        status, body, _headers = gw.call("GET", "/gateway/status?detail=1")
        assert status == 200 and body["instances"][0]["info"]
    assert info_reads() <= 1


def test_forwarded_answers_reuse_the_connections_to_the_api_servers_proxy(cluster, gateway):
    """Non-streamed completions through the gateway open no new upstream connection once the pool holds
    one per client (the simulator counts the TCP connections it accepts)."""
    gw = gateway()
    body = json.dumps({"model": "ml", "prompt": "Hello", "max_tokens": 1})

    def client(count):
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=30)
        for _round in range(count):
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["object"] == "text_completion"
        conn.close()

    def run(clients, count):
        threads = [threading.Thread(target=client, args=(count,)) for _round in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    run(4, 2)   # the pool grows to the concurrency
    before = sim_connections(cluster)
    run(4, 25)
    assert sim_connections(cluster) - before <= 2   # the two control requests of this count


def sim_connections(cluster):
    with kube_sim_urlopen(cluster.url + "/_sim/connections", timeout=10) as response:
        return json.loads(response.read())["connections"]

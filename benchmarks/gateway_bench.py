#!/usr/bin/env python
"""Benchmark of the on-demand gateway (issue 12) on the simulated cluster.

Run from the repository root with the project venv:

    .venv/bin/python benchmarks/gateway_bench.py [--speed 50] [--requests 400]

The simulated cluster and the gateway run as separate processes (as in a cluster); the clients
are threads of this process with one keep-alive connection each. Both paths reach vLLM through
the same upstream, the API server's service proxy:

  direct:  client -> /api/v1/namespaces/ml/services/vllm-api:8000/proxy/v1/completions
  gateway: client -> gateway /v1/completions -> the same proxy path

Measures, one run each:

(a) added latency of non-streamed completions at 1, 50 and 200 concurrent clients: p50 and p99
    of the gateway path minus those of the direct path (the same number of requests each);
(b) added time to the first byte of a ``"stream": true`` completion (sequential requests);
(c) wake overhead: a cold request's total time (GPU at the wakeable ``idle`` mode) minus the
    pod's own time to Ready-and-verified (the sum of the switch's phases, which the gateway
    reports in /gateway/status ``gateway_switch``);
(e) the gateway's CPU time per forwarded request at each level (user + system, /proc/PID/stat): a
    number the load of the machine does not inflate as much as latencies;
(d) the gateway's resident memory (VmRSS) at idle and with 200 streamed completions in flight at
    once (the simulated model slowed to 16 tokens in 4 s of real time).

Prints a table and writes benchmarks/results/gateway-<UTC time>.json (git-ignored).
"""
import argparse
import datetime
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, ".collections"), ROOT]

from tests.integration.gateway_helpers import (  # noqa: E402
    NS,
    engine_switch_to,
    gateway_config,
    setup_namespace,
)

PROXY = "/api/v1/namespaces/%s/services/vllm-api:8000/proxy" % NS
BODY = json.dumps({"model": "Qwen/Qwen3-8B-AWQ", "prompt": "Hello", "max_tokens": 1}).encode()


class Sim(object):
    """The simulated cluster as a subprocess (``python -m tests.kube_sim serve``)."""

    def __init__(self, directory, speed):
        self.kubeconfig = os.path.join(directory, "kubeconfig")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.kube_sim", "serve", "--kubeconfig",
                                      self.kubeconfig, "--port", "0", "--speed", str(speed)],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().split()[1]
        self.is_real = False

    def api_client(self):
        from kubernetes import config
        return config.new_client_from_config(config_file=self.kubeconfig)

    def patch_scenario(self, patch):
        request = urllib.request.Request(self.url + "/_sim/scenario", data=json.dumps(patch).encode(), method="PATCH",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(15)


def start_gateway(directory, sim):
    path = os.path.join(directory, "gateway.json")
    config = gateway_config(drain_timeout=30)
    with open(path, "w") as handle:
        json.dump(config, handle)
    env = dict(os.environ, VLLM_GATEWAY_TOKEN="bench", VLLM_GATEWAY_LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = os.path.join(ROOT, ".collections") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.homelab.gpu.gateway", "--config", path,
                             "--kubeconfig", sim.kubeconfig, "--listen", "127.0.0.1:0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split()[1]
    return proc, url


def host_port(url):
    host, port = url.split("//", 1)[1].split(":")
    return host, int(port)


def timed_requests(url, path, count, token=None, first_byte=False, stream=False):
    """``count`` POSTs over one keep-alive connection; returns the latencies (seconds)."""
    host, port = host_port(url)
    conn = http.client.HTTPConnection(host, port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    body = BODY if not stream else json.dumps({"model": "Qwen/Qwen3-8B-AWQ", "prompt": "Hello",
                                               "stream": True}).encode()
    out = []
    for _index in range(count):
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        if first_byte:
            resp.read(1)
            out.append(time.perf_counter() - start)
            resp.read()
        else:
            resp.read()
            out.append(time.perf_counter() - start)
        if resp.status != 200:
            raise RuntimeError("HTTP %s from %s%s" % (resp.status, url, path))
    conn.close()
    return out


def concurrent(url, path, clients, total, token=None):
    per = max(1, total // clients)
    results = []
    lock = threading.Lock()

    def client():
        got = timed_requests(url, path, per, token)
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=client) for _index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time of a process (from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def gateway_status(url):
    with urllib.request.urlopen(url + "/gateway/status", timeout=30) as response:
        return json.loads(response.read())["instances"][0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=50)
    parser.add_argument("--requests", type=int, default=400, help="requests per path and concurrency level")
    args = parser.parse_args()
    out = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "speed": args.speed, "requests": args.requests}
    with tempfile.TemporaryDirectory() as directory:
        sim = Sim(directory, args.speed)
        gateway = None
        try:
            setup_namespace(sim)
            _result, error = engine_switch_to(sim, "ml")
            assert error is None, error
            gateway, gw_url = start_gateway(directory, sim)
            token = None   # the simulator takes any token; the gateway sends the kubeconfig's
            out["rss_idle_kib"] = rss_kib(gateway.pid)
            # warm both paths
            timed_requests(sim.url, PROXY + "/v1/completions", 20, token)
            timed_requests(gw_url, "/v1/completions", 20)
            out["latency"] = {}
            for clients in (1, 50, 200):
                direct = concurrent(sim.url, PROXY + "/v1/completions", clients, args.requests, token)
                cpu = cpu_seconds(gateway.pid)
                via = concurrent(gw_url, "/v1/completions", clients, args.requests)
                cpu = cpu_seconds(gateway.pid) - cpu
                row = {"direct_p50_ms": pct(direct, 50) * 1000, "direct_p99_ms": pct(direct, 99) * 1000,
                       "gateway_p50_ms": pct(via, 50) * 1000, "gateway_p99_ms": pct(via, 99) * 1000,
                       "requests": len(via), "gateway_cpu_ms_per_request": cpu * 1000.0 / len(via)}
                row["added_p50_ms"] = row["gateway_p50_ms"] - row["direct_p50_ms"]
                row["added_p99_ms"] = row["gateway_p99_ms"] - row["direct_p99_ms"]
                out["latency"][clients] = row
            direct = timed_requests(sim.url, PROXY + "/v1/completions", 100, token, first_byte=True, stream=True)
            via = timed_requests(gw_url, "/v1/completions", 100, first_byte=True, stream=True)
            out["first_byte"] = {"direct_p50_ms": statistics.median(direct) * 1000,
                                 "gateway_p50_ms": statistics.median(via) * 1000,
                                 "added_p50_ms": (statistics.median(via) - statistics.median(direct)) * 1000}
            # (d) 200 streams at once, each 16 tokens long and lasting 4 s of real time
            sim.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"tokens_per_second": 16.0 / (4.0 * args.speed),
                                                                 "answer_tokens": 16}}})
            peak = []
            threads = [threading.Thread(target=timed_requests, args=(gw_url, "/v1/completions", 1),
                                        kwargs={"first_byte": True, "stream": True})
                       for _index in range(200)]
            for thread in threads:
                thread.start()
            for _index in range(15):
                time.sleep(0.1)
                peak.append(rss_kib(gateway.pid))
            in_flight = gateway_status(gw_url)["in_flight"]
            for thread in threads:
                thread.join()
            sim.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"tokens_per_second": 50, "answer_tokens": 16}}})
            out["rss_200_in_flight_kib"] = max(peak)
            out["in_flight_seen"] = in_flight
            # (c) wake from idle
            _result, error = engine_switch_to(sim, "idle")
            assert error is None, error
            deadline = time.time() + 30
            while gateway_status(gw_url)["mode"] != "idle" and time.time() < deadline:
                time.sleep(0.05)
            start = time.perf_counter()
            timed_requests(gw_url, "/v1/completions", 1)
            total = time.perf_counter() - start
            last = gateway_status(gw_url)["gateway_switch"]
            pod = sum(v for v in (last.get("phases") or {}).values() if v)
            out["wake"] = {"cold_request_s": total, "pod_ready_and_verified_s": pod, "overhead_s": total - pod,
                           "switch_elapsed_s": last.get("elapsed")}
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(15)
            sim.stop()
    print("gateway benchmark, speed %s, %d requests per path and level" % (args.speed, args.requests))
    print("%-26s %10s %10s %10s %10s %10s %10s %10s" % ("non-streamed", "direct p50", "gw p50", "added p50",
                                                        "direct p99", "gw p99", "added p99", "gw CPU/req"))
    for clients, row in out["latency"].items():
        print("%-26s %7.2f ms %7.2f ms %7.2f ms %7.2f ms %7.2f ms %7.2f ms %7.2f ms" % (
            "%d concurrent client(s)" % clients, row["direct_p50_ms"], row["gateway_p50_ms"], row["added_p50_ms"],
            row["direct_p99_ms"], row["gateway_p99_ms"], row["added_p99_ms"], row["gateway_cpu_ms_per_request"]))
    fb = out["first_byte"]
    print("first byte of a stream: direct %.2f ms, gateway %.2f ms, added %.2f ms" % (
        fb["direct_p50_ms"], fb["gateway_p50_ms"], fb["added_p50_ms"]))
    wake = out["wake"]
    print("wake from idle: cold request %.3f s, pod ready+verified %.3f s, overhead %.3f s (switch %.3f s)" % (
        wake["cold_request_s"], wake["pod_ready_and_verified_s"], wake["overhead_s"], wake["switch_elapsed_s"]))
    print("gateway RSS: idle %.1f MiB, 200 streams in flight %.1f MiB (in flight seen: %d)" % (
        out["rss_idle_kib"] / 1024.0, out["rss_200_in_flight_kib"] / 1024.0, out["in_flight_seen"]))
    results = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, "gateway-%s.json" % out["when"].replace(":", ""))
    with open(path, "w") as handle:
        json.dump(out, handle, indent=2)
    print("written", path)


if __name__ == "__main__":
    main()

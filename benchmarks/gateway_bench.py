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
(f) nginx as a third path (when an ``nginx`` binary is installed, e.g. Debian's nginx-light): one
    process (``master_process off``) on a loopback port, ``proxy_pass`` to the same proxy path with an
    upstream keepalive pool, measured in the same run: its p50/p99, its CPU time per request and the
    gateway's CPU per request as a multiple of nginx's; and the new upstream connections per request
    of each path (the simulator counts the TCP connections it accepts);
(g) ``--part edge``: the gateway's RSS and threads while 2000 clients hold a connection open with
    half a request head, and while 24 clients send a 10 MiB body at once (ASCII text with one
    character outside the BMP, a mode name the gateway renames: the body that costs it the most
    memory). ``--gateway-root DIR`` runs the gateway of another checkout (a ``git worktree`` of an
    older commit, with its ``.collections`` link) for a before/after comparison.

``--part forward`` runs (a), (e) and (f) only; ``--part all`` (the default) everything but (g).

Prints a table and writes benchmarks/results/gateway-<UTC time>.json (git-ignored).
"""
import argparse
import datetime
import http.client
import json
import os
import shutil
import socket
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
        # Plain HTTP (--insecure-http): the three paths compared (direct, gateway, nginx) reach the
        # simulator alike, and the numbers stay comparable with the earlier runs; the gateway's TLS
        # transport is tested in tests/integration/test_api_tls.py.
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.kube_sim", "serve", "--kubeconfig",
                                      self.kubeconfig, "--port", "0", "--speed", str(speed), "--insecure-http"],
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

    def connections(self):
        """TCP connections the simulator accepted since its start (control requests included)."""
        with urllib.request.urlopen(self.url + "/_sim/connections", timeout=30) as response:
            return json.loads(response.read())["connections"]


def start_gateway(directory, sim, root=ROOT, **overrides):
    path = os.path.join(directory, "gateway.json")
    config = gateway_config(drain_timeout=30, **overrides)
    with open(path, "w") as handle:
        json.dump(config, handle)
    env = dict(os.environ, VLLM_GATEWAY_TOKEN="bench", VLLM_GATEWAY_LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = os.path.join(root, ".collections") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.homelab.gpu.gateway", "--config", path,
                             "--kubeconfig", sim.kubeconfig, "--listen", "127.0.0.1:0"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().split()[1]
    return proc, url


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(dir)s/client_body;
    proxy_temp_path %(dir)s/proxy;
    fastcgi_temp_path %(dir)s/fastcgi;
    uwsgi_temp_path %(dir)s/uwsgi;
    scgi_temp_path %(dir)s/scgi;
    upstream sim {
        server %(upstream)s;
        keepalive 256;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location /v1/ {
            proxy_pass http://sim%(proxy)s/v1/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
"""


def start_nginx(directory, sim):
    """nginx in one process in front of the simulator's proxy path, or None without an nginx binary."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        return None, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as handle:
        handle.write(NGINX_CONF % {"dir": directory, "upstream": sim.url.split("//", 1)[1], "port": port,
                                   "proxy": PROXY})
    proc = subprocess.Popen([binary, "-c", conf, "-p", directory], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr.strip()
    return proc, (url, version)


def threads_of(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def hwm_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def edge(directory, sim, root):
    """(g): RSS and threads of the gateway under 2000 slow clients and under 24 concurrent 10 MiB bodies."""
    out = {}
    gateway, gw_url = start_gateway(directory, sim, root, max_body_bytes=10485760)
    host, port = host_port(gw_url)
    try:
        out["idle"] = {"rss_mib": rss_kib(gateway.pid) / 1024.0, "threads": threads_of(gateway.pid)}
        socks = []
        for _index in range(2000):
            sock = socket.create_connection((host, port), timeout=30)
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gateway\r\n")
            socks.append(sock)
        time.sleep(2)
        still_open = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                sock.recv(1)   # an answer (503) or the end: not held
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        out["slow_2000"] = {"rss_mib": rss_kib(gateway.pid) / 1024.0, "threads": threads_of(gateway.pid),
                            "connections_held": still_open}
        for sock in socks:
            sock.close()
    finally:
        gateway.terminate()
        gateway.wait(15)
    gateway, gw_url = start_gateway(directory, sim, root, max_body_bytes=10485760)
    try:
        body = json.dumps({"model": "ml", "prompt": "a" * (10485760 - 200) + "\U0001F600", "max_tokens": 1},
                          ensure_ascii=False).encode()
        statuses = []
        peak_threads = [0]

        def client():
            conn = http.client.HTTPConnection(*host_port(gw_url), timeout=300)
            try:
                conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                statuses.append(resp.status)
            except OSError as exc:
                statuses.append(type(exc).__name__)
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _index in range(24)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak_threads[0] = max(peak_threads[0], threads_of(gateway.pid))
            time.sleep(0.05)
        out["bodies_24x10mib"] = {"peak_rss_mib": hwm_kib(gateway.pid) / 1024.0, "peak_threads": peak_threads[0],
                                  "statuses": dict((str(k), statuses.count(k)) for k in set(statuses))}
    finally:
        gateway.terminate()
        gateway.wait(15)
    return out


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
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50, 200], help="concurrency levels")
    parser.add_argument("--part", choices=("all", "forward", "edge"), default="all")
    parser.add_argument("--gateway-root", default=ROOT, help="checkout whose gateway runs (before/after)")
    args = parser.parse_args()
    out = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "speed": args.speed, "requests": args.requests, "gateway_root": args.gateway_root}
    with tempfile.TemporaryDirectory() as directory:
        sim = Sim(directory, args.speed)
        gateway = None
        try:
            setup_namespace(sim)
            _result, error = engine_switch_to(sim, "ml")
            assert error is None, error
            if args.part == "edge":
                out["edge"] = edge(directory, sim, args.gateway_root)
                return report_edge(out)
            gateway, gw_url = start_gateway(directory, sim, args.gateway_root)
            nginx, nginx_at = start_nginx(directory, sim)
            out["nginx"] = nginx_at[1] if nginx_at else None
            token = None   # the simulator (plain HTTP) takes any token; the gateway sends the kubeconfig's
            out["rss_idle_kib"] = rss_kib(gateway.pid)
            # warm every path
            timed_requests(sim.url, PROXY + "/v1/completions", 20, token)
            timed_requests(gw_url, "/v1/completions", 20)
            if nginx_at:
                timed_requests(nginx_at[0], "/v1/completions", 20)
            out["latency"] = {}
            for clients in args.clients:
                # steady load: every path's pool of upstream connections has grown to the level first
                for url, path in [(gw_url, "/v1/completions")] + ([(nginx_at[0], "/v1/completions")] if nginx_at else []):
                    concurrent(url, path, clients, clients * 2)
                direct = concurrent(sim.url, PROXY + "/v1/completions", clients, args.requests, token)
                cpu = cpu_seconds(gateway.pid)
                opened = sim.connections()
                via = concurrent(gw_url, "/v1/completions", clients, args.requests)
                opened = sim.connections() - opened - 1
                cpu = cpu_seconds(gateway.pid) - cpu
                row = {"direct_p50_ms": pct(direct, 50) * 1000, "direct_p99_ms": pct(direct, 99) * 1000,
                       "gateway_p50_ms": pct(via, 50) * 1000, "gateway_p99_ms": pct(via, 99) * 1000,
                       "requests": len(via), "gateway_cpu_ms_per_request": cpu * 1000.0 / len(via),
                       "gateway_new_upstream_per_request": opened / float(len(via))}
                row["added_p50_ms"] = row["gateway_p50_ms"] - row["direct_p50_ms"]
                row["added_p99_ms"] = row["gateway_p99_ms"] - row["direct_p99_ms"]
                if nginx_at:
                    cpu = cpu_seconds(nginx.pid)
                    opened = sim.connections()
                    ngx = concurrent(nginx_at[0], "/v1/completions", clients, args.requests)
                    opened = sim.connections() - opened - 1
                    cpu = cpu_seconds(nginx.pid) - cpu
                    row.update({"nginx_p50_ms": pct(ngx, 50) * 1000, "nginx_p99_ms": pct(ngx, 99) * 1000,
                                "nginx_cpu_ms_per_request": cpu * 1000.0 / len(ngx),
                                "nginx_new_upstream_per_request": opened / float(len(ngx))})
                    row["nginx_added_p50_ms"] = row["nginx_p50_ms"] - row["direct_p50_ms"]
                    row["cpu_ratio_gateway_to_nginx"] = (row["gateway_cpu_ms_per_request"] /
                                                         max(row["nginx_cpu_ms_per_request"], 1e-6))
                out["latency"][clients] = row
            if nginx is not None:
                nginx.terminate()
                nginx.wait(15)
            if args.part == "forward":
                return report_forward(out)
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
    report_forward(out)
    fb = out["first_byte"]
    print("first byte of a stream: direct %.2f ms, gateway %.2f ms, added %.2f ms" % (
        fb["direct_p50_ms"], fb["gateway_p50_ms"], fb["added_p50_ms"]))
    wake = out["wake"]
    print("wake from idle: cold request %.3f s, pod ready+verified %.3f s, overhead %.3f s (switch %.3f s)" % (
        wake["cold_request_s"], wake["pod_ready_and_verified_s"], wake["overhead_s"], wake["switch_elapsed_s"]))
    print("gateway RSS: idle %.1f MiB, 200 streams in flight %.1f MiB (in flight seen: %d)" % (
        out["rss_idle_kib"] / 1024.0, out["rss_200_in_flight_kib"] / 1024.0, out["in_flight_seen"]))
    write_results(out)


def write_results(out):
    results = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, "gateway-%s.json" % out["when"].replace(":", ""))
    with open(path, "w") as handle:
        json.dump(out, handle, indent=2)
    print("written", path)


def report_forward(out):
    print("gateway benchmark, speed %s, %d requests per path and level, gateway of %s" % (
        out["speed"], out["requests"], out["gateway_root"]))
    columns = ("non-streamed", "direct p50", "gw p50", "added p50", "direct p99", "gw p99", "added p99", "gw CPU/req",
               "gw new/r")
    print("%-26s %10s %10s %10s %10s %10s %10s %10s %8s" % columns)
    for clients, row in out["latency"].items():
        print("%-26s %7.2f ms %7.2f ms %7.2f ms %7.2f ms %7.2f ms %7.2f ms %7.2f ms %8.2f" % (
            "%d concurrent client(s)" % clients, row["direct_p50_ms"], row["gateway_p50_ms"], row["added_p50_ms"],
            row["direct_p99_ms"], row["gateway_p99_ms"], row["added_p99_ms"], row["gateway_cpu_ms_per_request"],
            row["gateway_new_upstream_per_request"]))
    if out.get("nginx"):
        print("nginx (%s), same run:" % out["nginx"])
        print("%-26s %10s %10s %10s %10s %8s %12s" % ("", "nginx p50", "added p50", "nginx p99", "CPU/req", "new/r",
                                                      "gw/nginx CPU"))
        for clients, row in out["latency"].items():
            print("%-26s %7.2f ms %7.2f ms %7.2f ms %7.2f ms %8.2f %11.1fx" % (
                "%d concurrent client(s)" % clients, row["nginx_p50_ms"], row["nginx_added_p50_ms"],
                row["nginx_p99_ms"], row["nginx_cpu_ms_per_request"], row["nginx_new_upstream_per_request"],
                row["cpu_ratio_gateway_to_nginx"]))
    else:
        print("nginx: not installed (apt-get install nginx-light), its path was skipped")
    if "first_byte" not in out:
        write_results(out)


def report_edge(out):
    edge_out = out["edge"]
    print("gateway edge, gateway of %s" % out["gateway_root"])
    print("idle: RSS %.1f MiB, %d threads" % (edge_out["idle"]["rss_mib"], edge_out["idle"]["threads"]))
    slow = edge_out["slow_2000"]
    print("2000 slow clients (half a head each, 2 s later): RSS %.1f MiB, %d threads, %d connections held open" % (
        slow["rss_mib"], slow["threads"], slow["connections_held"]))
    big = edge_out["bodies_24x10mib"]
    print("24 concurrent 10 MiB bodies: peak RSS %.1f MiB, peak %d threads, answers %s" % (
        big["peak_rss_mib"], big["peak_threads"], big["statuses"]))
    write_results(out)


if __name__ == "__main__":
    main()

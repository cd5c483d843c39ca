#!/usr/bin/env python
"""Benchmark of the gateway's answers while the GPU cannot answer at once (issue 23), on the simulated cluster.

Run from the repository root with the project venv:

    .venv/bin/python benchmarks/gateway_degrade_bench.py [--speed 50] [--swaps 6] [--requests 200]

The simulated cluster and the gateway run as separate processes; the stand-in CPU fallback
(tests/integration/gateway_helpers.StandInFallback, OpenAI-shaped, stdlib HTTP) and the clients run in
this process, so the fallback's arrival times share the clients' clock.

(1) a ``"stream": true`` completion that needs a swap (ml <-> r1, alternating): the time from the
    request to the first byte of the answer, with progress on (``progress: comment``) and off, and
    the time to the model's first token (``data:``) in both;
(2) a completion under the gaming lock with a fallback: the time until the gateway has chosen the
    fallback (the request's arrival at the fallback, measured from the client's send), and the
    added latency of the whole answer over calling the fallback directly (p50, p99; sequential,
    one keep-alive connection each).

Prints a table and writes benchmarks/results/gateway-degrade-<UTC time>.json (git-ignored).
"""
import argparse
import datetime
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, ".collections"), ROOT, os.path.join(ROOT, "benchmarks")]

from gateway_bench import Sim, host_port, pct  # noqa: E402
from tests.integration.gateway_helpers import (  # noqa: E402
    StandInFallback,
    engine_switch_to,
    gateway_config,
    setup_namespace,
)

CPU_MODEL = "qwen2.5:3b"


def start_gateway(directory, sim, name, instance):
    path = os.path.join(directory, name + ".json")
    with open(path, "w") as handle:
        json.dump(gateway_config(instance), handle)
    env = dict(os.environ, VLLM_GATEWAY_TOKEN="bench", VLLM_GATEWAY_LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = os.path.join(ROOT, ".collections") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.homelab.gpu.gateway", "--config", path,
                             "--kubeconfig", sim.kubeconfig, "--listen", "127.0.0.1:0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().split()[1]


def stop(proc):
    proc.terminate()
    proc.wait(15)


def post(conn, path, body, headers=None):
    conn.request("POST", path, body=json.dumps(body).encode(), headers=dict({"Content-Type": "application/json"},
                                                                            **(headers or {})))
    return conn.getresponse()


def streamed_swaps(url, swaps):
    """[(first byte s, first token s, total s)] of ``swaps`` streamed completions that each need a swap."""
    host, port = host_port(url)
    out = []
    for index in range(swaps):
        model = "r1" if index % 2 == 0 else "ml"
        conn = http.client.HTTPConnection(host, port, timeout=300)
        start = time.perf_counter()
        resp = post(conn, "/v1/completions", {"model": model, "prompt": "Hello", "stream": True, "max_tokens": 4})
        first = resp.read1(1)
        first_byte = time.perf_counter() - start
        seen, first_token = first, None
        while True:
            data = resp.read1(65536)
            if not data:
                break
            seen += data
            if first_token is None and b"data: " in seen:
                first_token = time.perf_counter() - start
        if first_token is None and b"data: " in seen:
            first_token = first_byte
        total = time.perf_counter() - start
        conn.close()
        if resp.status != 200 or b"[DONE]" not in seen:
            raise RuntimeError("swap %d to %s: HTTP %s %r" % (index, model, resp.status, seen[-300:]))
        out.append((first_byte, first_token, total))
    return out


def sequential(url, path, body, count, marks=None):
    """Latencies (s) of ``count`` POSTs on one keep-alive connection; ``marks`` gets each send time."""
    host, port = host_port(url)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    out = []
    for _index in range(count):
        start = time.perf_counter()
        if marks is not None:
            marks.append(start)
        resp = post(conn, path, body)
        resp.read()
        out.append(time.perf_counter() - start)
        if resp.status != 200:
            raise RuntimeError("HTTP %s from %s%s" % (resp.status, url, path))
    conn.close()
    return out


def ms(value):
    return round(value * 1000, 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=50)
    parser.add_argument("--swaps", type=int, default=6, help="streamed requests that each need a swap, per setting")
    parser.add_argument("--requests", type=int, default=200, help="requests under the lock, per path")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="gateway-degrade-bench-")
    sim = Sim(directory, args.speed)
    standin = StandInFallback()
    standin.start()
    results = {"speed": args.speed, "swaps": args.swaps, "requests": args.requests}
    try:
        setup_namespace(sim)
        _result, error = engine_switch_to(sim, "ml")
        assert error is None, error
        for form in ("comment", "off"):
            proc, url = start_gateway(directory, sim, "progress-" + form,
                                      {"progress": form, "progress_interval": 0.5})
            try:
                results["progress_" + form] = streamed_swaps(url, args.swaps)
            finally:
                stop(proc)
        fallback = {"endpoint": standin.url, "models": {"ml": CPU_MODEL, "r1": CPU_MODEL}, "on": ["locked"]}
        proc, url = start_gateway(directory, sim, "fallback", {"fallback": fallback})
        try:
            host, port = host_port(url)
            conn = http.client.HTTPConnection(host, port, timeout=300)
            resp = post(conn, "/gateway/switch", {"mode": "gaming"}, {"Authorization": "Bearer bench"})
            assert resp.status == 200, resp.read()
            conn.close()
            body = {"model": "r1", "prompt": "Hello", "max_tokens": 4}
            direct = sequential(standin.url.rsplit("/v1", 1)[0], "/v1/completions", dict(body, model=CPU_MODEL),
                                args.requests)
            del standin.arrived[:]
            sends = []
            through = sequential(url, "/v1/completions", body, args.requests, sends)
            chosen = [arrived - sent for sent, arrived in zip(sends, standin.arrived)]
            results["lock"] = {"direct": direct, "gateway": through, "chosen": chosen}
        finally:
            stop(proc)
    finally:
        standin.stop()
        sim.stop()
    rows = []
    for form in ("comment", "off"):
        runs = results["progress_" + form]
        rows.append(("progress %-7s first byte p50 / max" % form, ms(pct([r[0] for r in runs], 50)),
                     ms(max(r[0] for r in runs))))
        rows.append(("progress %-7s first token p50 / max" % form, ms(pct([r[1] for r in runs], 50)),
                     ms(max(r[1] for r in runs))))
    lock = results["lock"]
    rows.append(("lock: fallback chosen p50 / p99", ms(pct(lock["chosen"], 50)), ms(pct(lock["chosen"], 99))))
    rows.append(("lock: direct to fallback p50 / p99", ms(pct(lock["direct"], 50)), ms(pct(lock["direct"], 99))))
    rows.append(("lock: through the gateway p50 / p99", ms(pct(lock["gateway"], 50)), ms(pct(lock["gateway"], 99))))
    rows.append(("lock: added latency p50 / p99", ms(pct(lock["gateway"], 50) - pct(lock["direct"], 50)),
                 ms(pct(lock["gateway"], 99) - pct(lock["direct"], 99))))
    print("%-44s %10s %10s" % ("measure (ms)", "p50", "max/p99"))
    for name, first, second in rows:
        print("%-44s %10.2f %10.2f" % (name, first, second))
    out_dir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(out_dir, "gateway-degrade-%s.json" % stamp), "w") as handle:
        json.dump({"results": results, "table": rows}, handle, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What the simulated cluster adds to vLLM answers through the API server's service proxy.

Run from the repository root with the project venv:

    .venv/bin/python benchmarks/sim_stream_bench.py [--clients 1,50,200] [--tokens 16] [--rate 50]

Starts the simulator as its own process (``python -m tests.kube_sim serve --speed 1``, so the
clients of this process do not share its interpreter), deploys one vLLM Deployment with
``--max-num-seqs`` above the largest client count behind Service ``vllm-api``, then, for each
client count, lets that many clients (threads with plain http.client connections) send at once:

* a streamed chat completion of ``--tokens`` tokens: the time to the first event and to
  ``[DONE]``, minus what the engine itself takes at ``--rate`` tokens per second (one token
  before the first event, ``--tokens`` before the last): the proxy's and server's added time;
* a non-streamed completion of one token: its latency minus one token's time.

These are the upstream figures a gateway's own overhead is measured against. Prints a table and
writes benchmarks/results/sim-stream-<UTC time>.json (git-ignored).
"""
import argparse
import datetime
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

from kubernetes import client, config  # noqa: E402

from tests.kube_sim.kubeconfig import ssl_context  # noqa: E402
from tests.kube_sim.world_testing import QWEN, vllm_container, vllm_deployment, vllm_service  # noqa: E402

PATH = "/api/v1/namespaces/ml/services/vllm-api:8000/proxy"


def start_simulator(kubeconfig, rate):
    """The simulator process and its URL (scenario: the reference lab at ``rate`` tokens per second)."""
    fd, scenario = tempfile.mkstemp(prefix="sim-stream-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump({"extends": "default", "models": {QWEN: {"tokens_per_second": rate}}}, handle)
    proc = subprocess.Popen([sys.executable, "-m", "tests.kube_sim", "serve", "--port", "0", "--speed", "1",
                             "--kubeconfig", kubeconfig, "--scenario", scenario], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit("the simulator did not start: %r" % line)
    return proc, line.split()[1]


def deploy(kubeconfig, seqs):
    api = config.new_client_from_config(config_file=kubeconfig)
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "ml"}})
    container = vllm_container(QWEN, served=[QWEN], extra_args=["--max-num-seqs", str(seqs)])
    client.AppsV1Api(api).create_namespaced_deployment("ml", vllm_deployment(container=container))
    v1.create_namespaced_service("ml", vllm_service())
    return api


SSL = {}   # the kubeconfig's TLS context (CA, admin client certificate), set by main()


def request(url, path, body):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=300, context=SSL["context"])
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def wait_serving(url):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        conn, response = request(url, PATH + "/v1/completions", {"model": QWEN, "prompt": "hi", "max_tokens": 1})
        response.read()
        conn.close()
        if response.status == 200:
            return
        time.sleep(0.5)
    raise SystemExit("vLLM never served through the service proxy")


def streamed(url, tokens, out, barrier):
    barrier.wait()
    start = time.monotonic()
    conn, response = request(url, PATH + "/v1/chat/completions", {
        "model": QWEN, "messages": [{"role": "user", "content": "hello"}], "stream": True, "max_tokens": tokens})
    first = response.read1(65536)
    first_at = time.monotonic()
    rest = response.read()
    done_at = time.monotonic()
    conn.close()
    ok = response.status == 200 and first.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
    out.append((ok, first_at - start, done_at - start))


def plain(url, out, barrier):
    barrier.wait()
    start = time.monotonic()
    conn, response = request(url, PATH + "/v1/completions", {"model": QWEN, "prompt": "hello", "max_tokens": 1})
    body = response.read()
    took = time.monotonic() - start
    conn.close()
    out.append((response.status == 200 and b'"usage"' in body, took))


def run(clients, target, *args):
    out = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=target, args=args + (out, barrier)) for _index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--clients", default="1,50,200", help="client counts (default 1,50,200)")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per streamed answer (default 16)")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second of the model (default 50)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    token = 1.0 / args.rate
    kubeconfig = os.path.join(tempfile.mkdtemp(prefix="sim-stream-bench-"), "kubeconfig")
    proc, url = start_simulator(kubeconfig, args.rate)
    SSL["context"] = ssl_context(kubeconfig)
    rows = []
    try:
        deploy(kubeconfig, max(counts) + 1)
        wait_serving(url)
        for clients in counts:
            stream = run(clients, streamed, url, args.tokens)
            single = run(clients, plain, url)
            first = [f - token for _ok, f, _d in stream]
            whole = [d - args.tokens * token for _ok, _f, d in stream]
            alone = [t - token for _ok, t in single]
            rows.append({"clients": clients, "ok": all(ok for ok, _f, _d in stream) and all(ok for ok, _t in single),
                         "first_event_added_ms": {"p50": pct(first, 50) * 1e3, "p99": pct(first, 99) * 1e3},
                         "whole_stream_added_ms": {"p50": pct(whole, 50) * 1e3, "p99": pct(whole, 99) * 1e3},
                         "non_streamed_added_ms": {"p50": pct(alone, 50) * 1e3, "p99": pct(alone, 99) * 1e3}})
    finally:
        proc.terminate()
        proc.wait(10)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "tokens": args.tokens, "rate": args.rate, "rows": rows}
    print("simulated vLLM through the service proxy: %d-token streams at %g tokens/s; added ms p50 / p99"
          % (args.tokens, args.rate))
    print("%8s %22s %22s %22s %4s" % ("clients", "first event", "whole stream", "non-streamed", "ok"))
    for row in rows:
        print("%8d %22s %22s %22s %4s" % (row["clients"], *["%.1f / %.1f" % (row[k]["p50"], row[k]["p99"]) for k in (
            "first_event_added_ms", "whole_stream_added_ms", "non_streamed_added_ms")], row["ok"]))
    outdir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "sim-stream-%s.json" % result["date"].replace(":", ""))
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    print("written: %s" % os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark of resident modes (vLLM sleep mode) against cold switches (issue 22).

Run from the repository root with the project venv:

    .venv/bin/python benchmarks/resident_bench.py [--speed 1]

One run measures, side by side, ml -> r1 -> ml on the reference-lab scenario (RTX 3060 12 GB behind a
Thunderbolt 3 link of 2.5 GiB/s, both AWQ models cached, the GPU time-sliced into 2 by the device
plugin) with the role's catalog as it is (cold: every switch terminates one pod and loads the other)
and with ml and r1 declared resident (the same entries plus ``resident: true``, ``weights_mib`` and
``sleeping_vram_mib``: a switch sleeps one engine and wakes the other):

* through the module: ``ansible-playbook`` running ``homelab.gpu.vllm_mode`` for each step; the
  module's ``elapsed`` and its ``phases`` (the engine's own clock), and the playbook's wall time;
* through a gateway request: the gateway as its own process (``python -m ...gateway``), starting in
  ml; a streamed chat completion naming r1's model, then ml's: the time to the first token (the first
  server-sent event carrying generated text, progress comments not counted), the whole answer, and
  the phases of the switch the gateway ran (``/gateway/status`` ``gateway_switch``).

Each variant gets a fresh simulated cluster (in this process; the gateway talks to it over HTTP).
The first step (deploying ml, for resident modes starting the whole set cold) is reported apart.
Times of the simulated world scale with --speed; the module's and the gateway's own work does not,
so figures are real seconds at the given speed (at --speed 1: the reference lab's seconds).

Prints a table and writes benchmarks/results/resident-<UTC time>.json (git-ignored).
"""
import argparse
import copy
import datetime
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, ".collections"), ROOT]

import yaml  # noqa: E402
from kubernetes import config  # noqa: E402

from tests.integration.gateway_helpers import engine_switch_to, gateway_config, setup_namespace  # noqa: E402
from tests.kube_sim.__main__ import Cluster  # noqa: E402

NS = "ml"
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
# The reference lab with its GPU shared by the device plugin (time-slicing, 2 replicas): resident pods
# need one nvidia.com/gpu each.
SCENARIO = {"extends": "default", "nodes": {"k3s-gpu-worker": {"gpu": {"time_slicing": {"replicas": 2}}}}}
# What resident modes add to the role's entries: the weights a sleep parks in host RAM (the AWQ
# checkpoints) and the GPU memory a sleeping engine keeps (the simulated lab's 1.1 GiB; the catalog's
# default of 1536 MiB would not fit beside an awake engine at --gpu-memory-utilization 0.90). The role's
# 0.90 stays because the simulator cannot load ml below its fixed 10820 MiB; on a real RTX 3060 use 0.80
# and the default residue (docs/vllm_mode.md, "Resident modes").
RESIDENT = {"ml": {"resident": True, "weights_mib": 5800, "sleeping_vram_mib": 1126},
            "r1": {"resident": True, "weights_mib": 5300, "sleeping_vram_mib": 1126}}
STEPS = ("ml", "r1", "ml")


def catalogs():
    """(cold, resident) catalogs: the role's ml, r1 and gaming, and the same with ml and r1 resident."""
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        modes = yaml.safe_load(handle)["vllm_modes"]
    cold = dict((name, modes[name]) for name in ("ml", "r1", "gaming"))
    resident = copy.deepcopy(cold)
    for name, extra in RESIDENT.items():
        resident[name].update(extra)
    return cold, resident


def start_cluster(tmpdir, name, speed):
    path = os.path.join(tmpdir, "scenario.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(SCENARIO, handle)
    cluster = Cluster(scenario=path, speed=speed, kubeconfig=os.path.join(tmpdir, "kc-" + name)).start()
    cluster.api_client = lambda: config.new_client_from_config(config_file=cluster.kubeconfig)
    setup_namespace(cluster)
    return cluster


def ansible_switch(tmpdir, kubeconfig, mode, modes):
    """One switch with the module through ansible-playbook: (module result, playbook wall seconds)."""
    path = os.path.join(tmpdir, "switch.yml")
    with open(path, "w") as handle:
        yaml.safe_dump([{"name": "switch", "hosts": "localhost", "connection": "local", "gather_facts": False,
                         "vars": {"ansible_python_interpreter": sys.executable},
                         "tasks": [{"name": "switch", "homelab.gpu.vllm_mode": {
                             "mode": mode, "modes": modes, "pod": POD, "registry": {"offline": True},
                             "lock_timeout": 120}}]}], handle)
    env = dict(os.environ, KUBECONFIG=kubeconfig, K8S_AUTH_KUBECONFIG=kubeconfig,
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    start = time.monotonic()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), path, "-i", "localhost,"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - start
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    result = list(data["plays"][0]["tasks"][-1]["hosts"].values())[0]
    if proc.returncode != 0:
        raise RuntimeError("the switch to %s failed: %s" % (mode, result.get("msg")))
    return result, wall


def phases(result):
    """The phases that took time, rounded: {phase: seconds}."""
    return dict((name, round(value, 2)) for name, value in (result.get("phases") or {}).items() if value)


def bench_module(tmpdir, variant, modes, speed):
    cluster = start_cluster(tmpdir, "module-" + variant, speed)
    try:
        out = []
        for index, mode in enumerate(STEPS):
            result, wall = ansible_switch(tmpdir, cluster.kubeconfig, mode, modes)
            out.append({"step": ("deploy " if index == 0 else "") + mode, "elapsed_s": result.get("elapsed"),
                        "playbook_wall_s": round(wall, 2), "phases_s": phases(result),
                        "changed": result.get("changed")})
        return out
    finally:
        cluster.stop()


def stream_chat(url, model):
    """A streamed chat completion through the gateway: (status, seconds to the first token, seconds to [DONE])."""
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": True, "max_tokens": 8}
    start = time.monotonic()
    first = None
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            return response.status, None, time.monotonic() - start, response.read()[:300]
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: "):])
            delta = ((event.get("choices") or [{}])[0]).get("delta") or {}
            if first is None and (delta.get("content") or delta.get("reasoning_content")):
                first = time.monotonic() - start
        return 200, first, time.monotonic() - start, b""
    finally:
        conn.close()


def gateway_status(url):
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/gateway/status")
        return json.loads(conn.getresponse().read())["instances"][0]
    finally:
        conn.close()


def bench_gateway(tmpdir, variant, modes, speed):
    cluster = start_cluster(tmpdir, "gateway-" + variant, speed)
    proc = None
    try:
        start = time.monotonic()
        result, error = engine_switch_to(cluster, "ml", modes=modes)
        if error:
            raise RuntimeError("deploying ml failed: %s" % error)
        out = [{"step": "deploy ml (engine, before the gateway starts)", "elapsed_s": round(time.monotonic() - start, 2),
                "phases_s": phases(result)}]
        path = os.path.join(tmpdir, "gateway-%s.json" % variant)
        with open(path, "w") as handle:
            json.dump(gateway_config(instance={"modes": modes}, drain_timeout=30), handle)
        env = dict(os.environ, VLLM_GATEWAY_TOKEN="bench", VLLM_GATEWAY_LOG_LEVEL="WARNING")
        env["PYTHONPATH"] = os.path.join(ROOT, ".collections") + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.homelab.gpu.gateway", "--config", path,
                                 "--kubeconfig", cluster.kubeconfig, "--listen", "127.0.0.1:0"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)
        url = proc.stdout.readline().split()[1]
        deadline = time.monotonic() + 30
        while gateway_status(url).get("mode") != "ml" and time.monotonic() < deadline:
            time.sleep(0.1)
        for mode in STEPS[1:]:
            model = modes[mode]["model"]
            status, first, whole, error_body = stream_chat(url, model)
            if status != 200:
                raise RuntimeError("the request for %s answered %s: %r" % (mode, status, error_body))
            switch = gateway_status(url).get("gateway_switch") or {}
            out.append({"step": mode, "first_token_s": round(first, 2) if first is not None else None,
                        "whole_answer_s": round(whole, 2), "switch_elapsed_s": switch.get("elapsed"),
                        "switch_outcome": switch.get("outcome"),
                        "phases_s": dict((k, round(v, 2)) for k, v in (switch.get("phases") or {}).items() if v)})
        return out
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
        cluster.stop()


def table(results):
    lines = ["| path | step | cold | resident |", "|---|---|---|---|"]

    def cell(entry, key):
        value = entry.get(key)
        parts = "" if not entry.get("phases_s") else " (%s)" % ", ".join(
            "%s %s" % (k, v) for k, v in entry["phases_s"].items())
        return ("%.2f s" % value if isinstance(value, (int, float)) else "-") + parts
    for path, key in (("module", "elapsed_s"), ("gateway", "first_token_s")):
        cold, resident = results[path]["cold"], results[path]["resident"]
        for index, entry in enumerate(cold):
            column = key if index else "elapsed_s"
            lines.append("| %s | %s | %s | %s |" % (path, entry["step"], cell(entry, column), cell(resident[index], column)))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=1.0)
    args = parser.parse_args()
    cold, resident = catalogs()
    results = {"speed": args.speed, "started": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
               "module": {}, "gateway": {}}
    with tempfile.TemporaryDirectory(prefix="resident-bench-") as tmpdir:
        for variant, modes in (("cold", cold), ("resident", resident)):
            results["module"][variant] = bench_module(tmpdir, variant, modes, args.speed)
            print("module %s: %s" % (variant, json.dumps(results["module"][variant])), flush=True)
        for variant, modes in (("cold", cold), ("resident", resident)):
            results["gateway"][variant] = bench_gateway(tmpdir, variant, modes, args.speed)
            print("gateway %s: %s" % (variant, json.dumps(results["gateway"][variant])), flush=True)
    results["load_average"] = os.getloadavg()
    print(table(results))
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    out = os.path.join(ROOT, "benchmarks", "results", "resident-%s.json"
                       % datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ"))
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
    print("written to %s" % out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Fault audit of homelab.gpu.vllm_mode on the simulated cluster (issue 11).

Run from the repository root with the project venv:

    .venv/bin/python benchmarks/fault_audit.py [--speed 20] [--only NAME]

For each fault, on a fresh simulated cluster serving r1: start a switch to ml, inject the fault
(before the switch, right after the Deployment write, or once the new pod is scheduled), and
report the time from the injection to the end of the run (time to fail, real seconds), the
failure reason, whether it rolled back, the state left (mode of the Deployment, a Ready pod, the
client ConfigMap's VLLM_MODE), whether the switch record was closed and whether the Lease stays.
The goal: the previous mode (r1) serving, or a message saying why it cannot.

Prints a table and writes benchmarks/results/faults-<UTC time>.json (git-ignored).
"""
import argparse
import copy
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, ".collections"), ROOT]

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402

from tests.kube_sim.__main__ import Cluster  # noqa: E402
from tests.kube_sim.pki import client_context  # noqa: E402

NS = "ml"
WORKER = "k3s-gpu-worker"
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
MODES = {
    "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1", "vram_mib": 10820,
           "args": ["--quantization", "awq_marlin", "--max-model-len", "8192", "--enforce-eager"],
           "wait_timeout": 60},
    "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--quantization", "awq_marlin", "--max-model-len", "8192", "--enforce-eager"],
           "vram_mib": 10600, "wait_timeout": 60},
    "gaming": {"replicas": 0, "wait_timeout": 30},
}
IMAGE = "vllm/vllm-openai:v0.8.5.post1"
SLOW_STOP = {"images": {IMAGE: {"shutdown_seconds": 29}}}
SLOW_LOAD = {"models": {"Qwen/Qwen3-8B-AWQ": {"load_seconds": 400, "first_load_seconds": 400}}}


def ml_with(**entry):
    modes = copy.deepcopy(MODES)
    modes["ml"].update(entry)
    return modes


# name: (scenario before, when to inject: before | written | scheduled, the fault, switch options)
FAULTS = {
    "image pull error": ({"images": {"vllm/vllm-openai:v0.8.6-typo": {"pull": "error"}}}, "before", None,
                         dict(modes=ml_with(image="vllm/vllm-openai:v0.8.6-typo",
                                            image_cuda={"cuda_version": "12.4.1"}))),
    "CUDA 804 crash loop (CDI)": ({"nodes": [{"name": WORKER, "nvidia_runtime": "cdi"}],
                                   "images": {"vllm/vllm-openai:v0.15.1": {"pull_seconds": 2}}}, "before", None,
                                  dict(modes=ml_with(image="vllm/vllm-openai:v0.15.1"), cuda_check="skip")),
    "engine crash": ({"models": {"Qwen/Qwen3-8B-AWQ": {"crash": "RuntimeError: engine core failed"}}}, "before",
                     None, {}),
    "OOM (model over GPU memory)": ({"models": {"Qwen/Qwen3-8B-AWQ": {"vram_mib": 15500}}}, "before", None,
                                    dict(modes=ml_with(vram_mib=None))),
    "missing HF token Secret": (None, "before", None, dict(pod=dict(POD, hf_token_secret="hf-token"))),
    "unschedulable (selector)": (None, "before", None,
                                 dict(pod=dict(POD, node_selector=dict(POD["node_selector"], disk="nvme")),
                                      cuda_check="warn")),
    "API 503 on 20% of requests": ({"faults": {"error_rate": 0.2, "seed": 7}}, "before", None, {}),
    "watches dropped (50%)": ({"faults": {"drop_watch_rate": 0.5, "seed": 7}}, "before", None, {}),
    "API latency 300 ms": ({"faults": {"latency_ms": 300}}, "before", None, {}),
    "no RBAC right to patch the Deployment": ({"faults": {"forbid": ["patch deployments.apps"]}}, "before", None,
                                              {}),
    "worker NotReady right after the write": (SLOW_STOP, "written", {"nodes": [{"name": WORKER, "ready": False}]},
                                              {}),
    "GPU unplugged right after the write": (SLOW_STOP, "written",
                                            {"nodes": [{"name": WORKER, "gpu": {"unplugged": True}}]}, {}),
    "worker NotReady while the model loads": (SLOW_LOAD, "scheduled",
                                              {"nodes": [{"name": WORKER, "ready": False}]}, {}),
    "GPU unplugged while the model loads": (SLOW_LOAD, "scheduled",
                                            {"nodes": [{"name": WORKER, "gpu": {"unplugged": True}}]}, {}),
}


def env_for(kubeconfig):
    env = dict(os.environ, KUBECONFIG=kubeconfig, K8S_AUTH_KUBECONFIG=kubeconfig,
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def play(tmpdir, mode, **options):
    args = {"mode": mode, "modes": MODES, "pod": POD, "registry": {"offline": True}}
    args.update(options)
    path = os.path.join(tmpdir, "switch-%s-%d.yml" % (mode, time.monotonic_ns()))
    with open(path, "w") as handle:
        yaml.safe_dump([{"name": "switch", "hosts": "localhost", "connection": "local", "gather_facts": False,
                         "vars": {"ansible_python_interpreter": sys.executable},
                         "tasks": [{"name": "switch", "homelab.gpu.vllm_mode": args, "ignore_errors": True}]}],
                       handle)
    return [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", path]


def result_of(stdout):
    try:
        data = json.loads(stdout[stdout.index("{"):])
    except ValueError:
        return {}
    for p in data.get("plays", []):
        for task in p.get("tasks", []):
            for res in task.get("hosts", {}).values():
                return res
    return {}


def patch_scenario(cluster, patch):
    req = urllib.request.Request(cluster.url + "/_sim/scenario", data=json.dumps(patch).encode(), method="PATCH",
                                 headers={"Content-Type": "application/merge-patch+json"})
    urllib.request.urlopen(req, timeout=10, context=client_context()).read()


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def audit_one(name, fault, speed, tmpdir):
    before, when, injected, options = fault
    kubeconfig = os.path.join(tmpdir, "kc-%d" % time.monotonic_ns())
    cluster = Cluster(speed=speed, kubeconfig=kubeconfig).start()
    try:
        api = config.new_client_from_config(config_file=kubeconfig)
        core, apps, coord = client.CoreV1Api(api), client.AppsV1Api(api), client.CoordinationV1Api(api)
        core.create_namespace({"metadata": {"name": NS}})
        core.create_namespaced_service(NS, {"metadata": {"name": "vllm-api"}, "spec": {
            "selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-server"},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
        subprocess.run(play(tmpdir, "r1"), cwd=ROOT, env=env_for(kubeconfig), capture_output=True, check=True)
        old = set(p.metadata.uid for p in core.list_namespaced_pod(NS).items)
        if before:
            patch_scenario(cluster, before)
        proc = subprocess.Popen(play(tmpdir, "ml", **options), cwd=ROOT, env=env_for(kubeconfig),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        injected_at = time.monotonic()
        if when == "written":
            wait_for(lambda: apps.read_namespaced_deployment("vllm-server", NS).metadata.labels.get("gpu-mode") == "ml")
        elif when == "scheduled":
            wait_for(lambda: any(p.metadata.uid not in old and p.spec.node_name and not p.metadata.deletion_timestamp
                                 for p in core.list_namespaced_pod(NS).items))
        if injected:
            patch_scenario(cluster, injected)
            injected_at = time.monotonic()
        stdout, _stderr = proc.communicate(timeout=900)
        took = time.monotonic() - injected_at
        res = result_of(stdout)
        # The API faults end with the run, so that this reads the state left behind.
        patch_scenario(cluster, {"faults": {"error_rate": 0, "drop_watch_rate": 0, "latency_ms": 0, "forbid": []}})
        dep = apps.read_namespaced_deployment("vllm-server", NS)
        ready = [p.metadata.name for p in core.list_namespaced_pod(NS).items if not p.metadata.deletion_timestamp
                 and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        rec = core.read_namespaced_config_map("vllm-server-switch", NS).data or {}
        try:
            coord.read_namespaced_lease("vllm-server-switch", NS)
            lease_left = True
        except client.ApiException:
            lease_left = False
        cm = core.read_namespaced_config_map("llm-fallback-config", NS).data or {}
        return {"fault": name, "injected": when, "time_to_end_s": round(took, 1), "failed": bool(res.get("failed")),
                "reason": (res.get("failure") or {}).get("reason"), "rolled_back": res.get("rolled_back"),
                "deployment_mode": dep.metadata.labels.get("gpu-mode"), "ready_pods": len(ready),
                "client_mode": cm.get("VLLM_MODE"), "record": "%s/%s" % (rec.get("in_progress"), rec.get("result")),
                "lease_left": lease_left, "msg": (res.get("msg") or "")[-400:]}
    finally:
        cluster.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--speed", type=float, default=20)
    parser.add_argument("--only", action="append", help="run only the faults whose name contains this")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for name, fault in FAULTS.items():
            if args.only and not any(o in name for o in args.only):
                continue
            row = audit_one(name, fault, args.speed, tmpdir)
            rows.append(row)
            print("%-40s %-9s %6.1f s  %-24s rolled back %-5s -> %s, %d Ready pod(s), clients %s, record %s%s"
                  % (row["fault"], row["injected"], row["time_to_end_s"], row["reason"], row["rolled_back"],
                     row["deployment_mode"], row["ready_pods"], row["client_mode"], row["record"],
                     ", lease left" if row["lease_left"] else ""), flush=True)
    out = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "faults-%s.json" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    with open(path, "w") as handle:
        json.dump({"speed": args.speed, "faults": rows}, handle, indent=1)
    print("written %s" % path)


if __name__ == "__main__":
    main()

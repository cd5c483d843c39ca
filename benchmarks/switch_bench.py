#!/usr/bin/env python
"""Benchmark of homelab.gpu.vllm_mode on the simulated cluster (issue 4).

Run from the repository root with the project venv:

    .venv/bin/python benchmarks/switch_bench.py [--speed 10] [--scenario FILE]

Measures, on the default scenario (the reference home lab) unless --scenario is given, one run each:

(a) the module's overhead on a switch ml -> r1: the switch's wall time minus the pod's own time
    from the Deployment write to Ready (as seen by an independent watch in this process). The
    overhead is real time spent by the module (preflight, lease, record, write, watch latency,
    verification through the service proxy) and does not scale with --speed, so the number is
    already the --speed 1 equivalent; pod times are reported in simulated seconds (real x speed).
(b) a no-op switch: `ansible-playbook switch_mode.yml -e mode=r1` wall time and the number of
    API requests it made (the simulator's /_sim/requests).
(c) the same switch done the old way: apply the old script's R1 manifest (readiness probe
    initialDelaySeconds 90, liveness 120) and poll the Deployment every 5 s until it is ready.
(d) the switch as a person types it, `ansible-playbook switch_mode.yml -e mode=r1` (demo inventory)
    after `-e mode=ml`, on a cluster of its own: its wall time, Ansible's start and the summary
    included, and the old way's wall time over it at this --speed (run at --speed 1 and 2).

Prints a table and writes benchmarks/results/switch-<UTC time>.json (git-ignored).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, ".collections"), ROOT]

import yaml  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from tests.kube_sim.__main__ import Cluster  # noqa: E402
from tests.kube_sim.pki import client_context  # noqa: E402

NS = "ml"
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}


def catalog():
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)["vllm_modes"]


def env_for(kubeconfig):
    env = dict(os.environ, KUBECONFIG=kubeconfig, K8S_AUTH_KUBECONFIG=kubeconfig,
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def ansible(args, kubeconfig):
    """Run ansible-playbook; returns (rc, wall seconds, list of task results)."""
    start = time.monotonic()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook")] + args, cwd=ROOT,
                          env=env_for(kubeconfig), capture_output=True, text=True, timeout=900, check=False)
    wall = time.monotonic() - start
    results = []
    try:
        data = json.loads(proc.stdout[proc.stdout.index("{"):])
        for play in data.get("plays", []):
            for task in play.get("tasks", []):
                for res in task.get("hosts", {}).values():
                    results.append(dict(res, _task=task["task"]["name"]))
    except ValueError:
        pass
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc.returncode, wall, results


def module_play(tmpdir, mode, modes):
    path = os.path.join(tmpdir, "switch-%s.yml" % mode)
    with open(path, "w") as handle:
        yaml.safe_dump([{"name": "switch", "hosts": "localhost", "connection": "local", "gather_facts": False,
                         "vars": {"ansible_python_interpreter": sys.executable},
                         "tasks": [{"name": "switch", "homelab.gpu.vllm_mode": {
                             "mode": mode, "modes": modes, "pod": POD, "registry": {"offline": True}}}]}], handle)
    return [path, "-i", "localhost,"]


class Observer(threading.Thread):
    """Independent watch: when the Deployment's generation changes and when a pod turns Ready."""

    def __init__(self, api):
        super().__init__(daemon=True)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.marks = {}
        self.stop_flag = False
        self.generation = None

    def run(self):
        threading.Thread(target=self._deployments, daemon=True).start()
        w = watch.Watch()
        for ev in w.stream(self.core.list_namespaced_pod, NS, timeout_seconds=600):
            if self.stop_flag:
                break
            pod = ev["object"]
            conds = pod.status.conditions or []
            if any(c.type == "Ready" and c.status == "True" for c in conds) and not pod.metadata.deletion_timestamp:
                self.marks.setdefault("ready:" + pod.metadata.uid, time.monotonic())

    def _deployments(self):
        w = watch.Watch()
        for ev in w.stream(self.apps.list_namespaced_deployment, NS, timeout_seconds=600):
            if self.stop_flag:
                break
            dep = ev["object"]
            gen = dep.metadata.generation
            if self.generation is not None and gen != self.generation:
                self.marks.setdefault("write:%s" % gen, time.monotonic())
            self.generation = gen


def setup(cluster):
    api = config.new_client_from_config(config_file=cluster.kubeconfig)
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    core.create_namespaced_service(NS, {"metadata": {"name": "vllm-api"}, "spec": {
        "selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-server"},
        "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
    return api


def sim_requests(cluster):
    import urllib.request
    with urllib.request.urlopen(cluster.url + "/_sim/requests", timeout=10, context=client_context()) as resp:
        return json.loads(resp.read())


def reset_requests(cluster):
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(cluster.url + "/_sim/requests", method="DELETE"), timeout=10,
                           context=client_context()).read()


def bench_module(args, tmpdir):
    modes = catalog()
    cluster = Cluster(scenario=args.scenario, speed=args.speed, kubeconfig=os.path.join(tmpdir, "kc-module")).start()
    try:
        api = setup(cluster)
        rc, _wall, _res = ansible(module_play(tmpdir, "ml", modes), cluster.kubeconfig)
        assert rc == 0, "deploying ml failed"
        obs = Observer(api)
        obs.start()
        time.sleep(0.5)
        start = time.monotonic()
        rc, wall, res = ansible(module_play(tmpdir, "r1", modes), cluster.kubeconfig)
        assert rc == 0, "the switch to r1 failed"
        switch = [r for r in res if r["_task"] == "switch"][-1]
        writes = sorted(v for k, v in obs.marks.items() if k.startswith("write:") and v >= start)
        ready = sorted(v for k, v in obs.marks.items() if k.startswith("ready:") and v >= start)
        pod_own = ready[0] - writes[0]
        out = {
            "speed": args.speed,
            "playbook_wall_s": round(wall, 3),
            "module_elapsed_s": switch["elapsed"],
            "pod_write_to_ready_real_s": round(pod_own, 3),
            "pod_write_to_ready_sim_s": round(pod_own * args.speed, 2),
            "module_overhead_s": round(switch["elapsed"] - pod_own, 3),
            "playbook_overhead_s": round(wall - pod_own, 3),
            "phases_real_s": switch["phases"],
            "switch_at_speed1_equiv_s": round(pod_own * args.speed + (switch["elapsed"] - pod_own), 2),
            "switch_api_requests": switch["api_requests"],
        }
        obs.stop_flag = True

        # (b) a no-op: switch_mode.yml (the user's command) when it is there, else the module play.
        if os.path.exists(os.path.join(ROOT, "switch_mode.yml")):
            noop_cmd, how = ["switch_mode.yml", "-i", os.path.join(ROOT, "inventory", "demo", "hosts.yml"),
                             "-e", "mode=r1"], "ansible-playbook switch_mode.yml -e mode=r1"
        else:
            noop_cmd, how = module_play(tmpdir, "r1", modes), "module play"
        reset_requests(cluster)
        rc, wall, res = ansible(noop_cmd, cluster.kubeconfig)
        if rc != 0 and how != "module play":
            noop_cmd, how = module_play(tmpdir, "r1", modes), "module play (switch_mode.yml failed)"
            reset_requests(cluster)
            rc, wall, res = ansible(noop_cmd, cluster.kubeconfig)
        time.sleep(1.0)
        log = sim_requests(cluster)
        # Watches of the previous run are logged when the server notices they were closed, which
        # can fall after the reset: they are not the no-op's (a no-op never watches).
        own = [r for r in log.get("log", []) if "watch=true" not in (r.get("query") or "")]
        out["noop"] = {"command": how, "rc": rc, "wall_s": round(wall, 3), "api_requests": len(own),
                       "requests": ["%s %s" % (r["method"], r["path"]) for r in own],
                       "late_watches_of_the_previous_run": len(log.get("log", [])) - len(own),
                       "module_api_requests": [r.get("api_requests") for r in res if r.get("api_requests")],
                       "changed": any(r.get("changed") for r in res)}
        return out
    finally:
        cluster.stop()


def bench_typed(args, tmpdir):
    cluster = Cluster(scenario=args.scenario, speed=args.speed, kubeconfig=os.path.join(tmpdir, "kc-typed")).start()
    try:
        setup(cluster)
        typed = ["switch_mode.yml", "-i", os.path.join(ROOT, "inventory", "demo", "hosts.yml"), "-e"]
        rc, _wall, _res = ansible(typed + ["mode=ml"], cluster.kubeconfig)
        assert rc == 0, "switch_mode.yml -e mode=ml failed"
        rc, wall, res = ansible(typed + ["mode=r1"], cluster.kubeconfig)
        assert rc == 0, "switch_mode.yml -e mode=r1 failed"
        own = [r["elapsed"] for r in res if isinstance(r.get("elapsed"), (int, float))]
        return {"command": "ansible-playbook switch_mode.yml -e mode=r1", "wall_real_s": round(wall, 3),
                "module_elapsed_real_s": own[-1] if own else None}
    finally:
        cluster.stop()


def old_manifest(mode):
    with open(os.path.join(ROOT, "tests", "integration", "fixtures", "old_script", "vllm-%s.yaml" % mode)) as handle:
        docs = yaml.safe_load(handle)["items"]
    return [d for d in docs if d["kind"] == "Deployment"][0]


def bench_old_way(args, tmpdir):
    cluster = Cluster(scenario=args.scenario, speed=args.speed, kubeconfig=os.path.join(tmpdir, "kc-old")).start()
    try:
        api = setup(cluster)
        apps = client.AppsV1Api(api)
        poll = 5.0 / args.speed

        def apply_and_poll(body):
            start = time.monotonic()
            try:
                live = apps.read_namespaced_deployment("vllm-server", NS)
                body["metadata"]["resourceVersion"] = live.metadata.resource_version
                apps.replace_namespaced_deployment("vllm-server", NS, body)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
                apps.create_namespaced_deployment(NS, body)
            gen = apps.read_namespaced_deployment("vllm-server", NS).metadata.generation
            while True:
                time.sleep(poll)
                dep = apps.read_namespaced_deployment("vllm-server", NS)
                st = dep.status
                if (st.observed_generation or 0) >= gen and (st.ready_replicas or 0) >= 1 and \
                        (st.updated_replicas or 0) >= 1 and (st.replicas or 0) == 1:
                    return time.monotonic() - start
                if time.monotonic() - start > 600 / args.speed * 2:
                    raise RuntimeError("the old way did not become ready")

        apply_and_poll(old_manifest("ml"))
        real = apply_and_poll(old_manifest("r1"))
        return {"poll_every_sim_s": 5, "wall_real_s": round(real, 3), "switch_sim_s": round(real * args.speed, 2)}
    finally:
        cluster.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--speed", type=float, default=10.0, help="simulator speed factor (default 10)")
    parser.add_argument("--scenario", default=None, help="scenario file (default: the reference home lab)")
    args = parser.parse_args()
    tmpdir = tempfile.mkdtemp(prefix="switch-bench-")
    module = bench_module(args, tmpdir)
    old = bench_old_way(args, tmpdir)
    typed = bench_typed(args, tmpdir)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "scenario": args.scenario or "default (reference home lab)", "module": module, "old_way": old,
              "typed": typed,
              "ratio_old_over_module": round(old["switch_sim_s"] / module["switch_at_speed1_equiv_s"], 2),
              "ratio_old_over_typed_wall": round(old["wall_real_s"] / typed["wall_real_s"], 2)}
    lines = [
        "switch ml -> r1 on the simulated cluster (speed %g, times at --speed 1 equivalent unless noted)" % args.speed,
        "(a) module overhead           %7.3f s  (target <= 1 s; module elapsed %.3f s real - pod write->Ready %.3f s real)"
        % (module["module_overhead_s"], module["module_elapsed_s"], module["pod_write_to_ready_real_s"]),
        "    playbook overhead         %7.3f s  (ansible-playbook wall incl. Ansible start-up)" % module["playbook_overhead_s"],
        "    pod write->Ready          %7.2f s  (simulated)" % module["pod_write_to_ready_sim_s"],
        "    switch total              %7.2f s  (pod time + module overhead)" % module["switch_at_speed1_equiv_s"],
        "(b) no-op (%s)  wall %.3f s, %s API requests (target <= 5), changed=%s"
        % (module["noop"]["command"], module["noop"]["wall_s"], module["noop"]["api_requests"],
           module["noop"]["changed"]),
        "(c) old way (apply + poll 5 s, probe delay 90 s)  %7.2f s  -> old/new = %.2f"
        % (old["switch_sim_s"], result["ratio_old_over_module"]),
        "(d) as typed (%s)  wall %.2f s real at speed %g (module %s s) -> old wall %.2f s / typed wall = %.2f"
        % (typed["command"], typed["wall_real_s"], args.speed, typed["module_elapsed_real_s"], old["wall_real_s"],
           result["ratio_old_over_typed_wall"]),
    ]
    print("\n".join(lines))
    outdir = os.path.join(ROOT, "benchmarks", "results")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "switch-%s.json" % result["date"].replace(":", ""))
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    print("written: %s" % os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()

"""Resident modes (vLLM sleep mode) through homelab.gpu.vllm_mode (ansible-playbook) and the switch
engine over the standard-library transport, against the simulated cluster.

The reference lab's GPU is shared by two pods here (time-slicing: nvidia.com/gpu 2). Resident
modes keep a pod each: the current one awake and behind the Service, the others asleep.
"""
import copy
import itertools
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from kubernetes import client

from ansible_collections.homelab.gpu.plugins.module_utils.api import Api as EngineApi
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.plugins.module_utils.run import switch as engine_switch
from tests.integration.resident_helpers import (NS, POD, SERVICE_SELECTOR, behind_service, engine_for, pods,
                                                resident_cluster, sleeping, wait_for, writes)

MODES = {
    "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--quantization", "awq_marlin", "--max-model-len", "8192", "--gpu-memory-utilization", "0.90"],
           "vram_mib": 10820, "wait_timeout": 120, "resident": True, "sleeping_vram_mib": 1024, "weights_mib": 5700},
    "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--quantization", "awq_marlin", "--max-model-len", "8192", "--gpu-memory-utilization", "0.90"],
           "vram_mib": 10650, "wait_timeout": 120, "resident": True, "sleeping_vram_mib": 1024, "weights_mib": 5600},
    "gaming": {"replicas": 0, "wait_timeout": 30},
}


engine = engine_for(MODES)


@pytest.fixture
def kube_sim(kube_sim_factory):
    return resident_cluster(kube_sim_factory, 2)


def models_through_service(cluster):
    return str(cluster.core.connect_get_namespaced_service_proxy_with_path("vllm-api:8000", NS, "v1/models"))


@pytest.mark.sim_only
def test_ml_r1_ml_resident_through_the_module_wakes_instead_of_loading(playbook, kube_sim):
    tasks = []
    for index, mode in enumerate(("ml", "r1", "ml", "ml")):
        tasks.append({"name": "switch%d" % index, "ignore_errors": True,
                      "homelab.gpu.vllm_mode": {"mode": mode, "modes": MODES, "pod": POD,
                                                "registry": {"offline": True}}})
    tasks.append({"name": "status", "homelab.gpu.vllm_mode_info": {"modes": MODES, "pod": POD,
                                                                   "registry": {"offline": True}}})
    run = playbook.run(tasks, kubeconfig=kube_sim.kubeconfig)
    first, second, third, again = (run.result("switch%d" % i) for i in range(4))
    for res in (first, second, third):
        assert res.get("failed") is not True, res.get("msg")
        assert res["changed"] is True
    assert first["plan"] == "switch" and first["resident"]["plan"]["start"] == ["r1", "ml"]
    # r1 and back: no pod starts, the target wakes, the other one sleeps
    assert second["resident"]["plan"]["start"] == [] and second["resident"]["plan"]["wake"] is True
    assert second["resident"]["plan"]["sleep"] == ["ml"]
    for phase in ("wake", "warmup", "verify"):
        assert isinstance(second["phases"][phase], float), second["phases"]
    assert third["mode"] == "ml" and third["previous_mode"] == "r1" and third["served_model_names"] == [
        "Qwen/Qwen3-8B-AWQ", "local-llm"]
    assert again["changed"] is False and again["plan"] == "noop"
    status = run.result("status")
    assert status["mode"] == "ml" and status["ready"] is True and status["model"] == "Qwen/Qwen3-8B-AWQ"
    assert status["pod"].startswith("vllm-server-ml-") and status["resident"] == {"awake": "ml", "asleep": ["r1"]}
    assert sleeping(kube_sim, "r1") is True and sleeping(kube_sim, "ml") is False
    assert behind_service(kube_sim) == ["ml"]
    assert "Qwen/Qwen3-8B-AWQ" in models_through_service(kube_sim)
    cm = kube_sim.core.read_namespaced_config_map("llm-fallback-config", NS).data
    assert cm["VLLM_MODE"] == "ml" and cm["VLLM_MODEL"] == "Qwen/Qwen3-8B-AWQ"
    dep = client.AppsV1Api(kube_sim.api_client()).read_namespaced_deployment("vllm-server", NS)
    assert dep.spec.replicas == 0 and dep.metadata.annotations["homelab.gpu/mode"] == "ml"


@pytest.mark.sim_only
def test_a_phase_with_nothing_to_do_takes_no_time_however_slow_the_machine(kube_sim):
    """ml -> r1 with both resident starts nothing: its start phase is 0 s, not the time the engine spent
    between two steps (a loaded CI machine wrote the record's progress there: start 0.023 s)."""
    assert engine(kube_sim, "ml")["failed"] is False
    readings = itertools.count()

    def crawling():   # each reading of the clock 50 ms later than the one before: a machine that crawls
        return time.monotonic() + 0.05 * next(readings)
    res = engine(kube_sim, "r1", now=crawling)
    assert res["failed"] is False, res["msg"]
    assert res["resident"]["plan"]["start"] == [] and res["resident"]["plan"]["wake"] is True
    assert res["phases"]["start"] == 0.0 and res["phases"]["wake"] > 0, res["phases"]


def site_summary(cluster, tmp_path, extra_vars=None):
    """ansible-playbook site.yml as a user runs it (the repository's ansible.cfg, the demo inventory),
    with the JSON callback; returns the lines of the switch summary and the vllm_mode result."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, ANSIBLE_CONFIG=os.path.join(root, "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_INVENTORY", None)
    args = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), os.path.join(root, "site.yml")]
    if extra_vars is not None:
        path = tmp_path / "resident-vars.yml"
        path.write_text(yaml.safe_dump(extra_vars))
        args += ["-e", "@%s" % path]
    proc = subprocess.run(args, cwd=root, env=env, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    tasks = [t for play in json.loads(proc.stdout[proc.stdout.index("{"):])["plays"] for t in play["tasks"]]
    summary = [t for t in tasks if t["task"]["name"].endswith("Show what the switch did (default mode)")]
    switch = [t for t in tasks if "Switch the Deployment to the target mode" in t["task"]["name"]]
    assert summary and switch, [t["task"]["name"] for t in tasks]
    msg = summary[-1]["hosts"]["localhost"]["msg"]
    return (msg.splitlines() if isinstance(msg, str) else msg), switch[-1]["hosts"]["localhost"]


@pytest.mark.sim_only
def test_site_yml_with_a_resident_default_mode_says_it_deployed_it_resident_and_where_it_is_awake(kube_sim,
                                                                                                  tmp_path):
    """A cold ml becomes resident (ml awake, r1 asleep) through site.yml: the summary says so and names the
    node the awake engine runs on, not "switched ml -> ml" with an empty node."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "roles", "vllm", "defaults", "main.yml")) as handle:
        modes = yaml.safe_load(handle)["vllm_modes"]
    cold = engine(kube_sim, "ml", modes=copy.deepcopy(modes))     # the role's ml, as an earlier site.yml left it
    assert cold["failed"] is False and cold["mode"] == "ml" and "resident" not in cold, cold["msg"]
    for name, weights in (("ml", 5800), ("r1", 5300)):
        modes[name].update({"resident": True, "weights_mib": weights, "sleeping_vram_mib": 1126})
    lines, result = site_summary(kube_sim, tmp_path, {"vllm_modes": modes})
    assert result["previous_mode"] == "ml" and result["resident"]["awake"] == "ml", result
    assert result["node"] == "k3s-gpu-worker", result
    assert lines[0].startswith("vllm-server: deployed ml resident in ") and \
        lines[0].endswith(" s, awake on node k3s-gpu-worker"), lines
    assert "  asleep: r1" in lines, lines
    assert any(line.startswith("  pod: vllm-server-ml-") and line.endswith(" on node k3s-gpu-worker")
               for line in lines), lines


@pytest.mark.sim_only
def test_a_no_op_writes_nothing_and_a_refused_preflight_writes_nothing(kube_sim):
    first = engine(kube_sim, "ml")
    assert first["failed"] is False, first["msg"]
    kube_sim.reset_requests()
    res = engine(kube_sim, "ml")
    assert res["failed"] is False and res["changed"] is False and res["plan"] == "noop"
    assert writes(kube_sim) == []
    heavy = copy.deepcopy(MODES)
    heavy["ml"]["sleeping_vram_mib"] = 2048
    res = engine(kube_sim, "r1", modes=heavy)
    assert res["failed"] is True
    assert "resident mode r1 awake needs 10650 MiB and the 1 sleeping mode(s) ml keep 2048 MiB, 12698 MiB in all, " \
           "but the GPU has 12288 MiB: lower --gpu-memory-utilization and vram_mib of r1 by 410 MiB" in res["msg"]
    assert writes(kube_sim) == []
    assert sleeping(kube_sim, "ml") is False and behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_a_restarted_resident_pod_is_started_again_and_put_back_to_sleep(kube_sim):
    assert engine(kube_sim, "ml")["failed"] is False
    old = pods(kube_sim, "homelab.gpu/resident=r1")[0].metadata.name
    kube_sim.core.delete_namespaced_pod(old, NS, grace_period_seconds=0)
    deadline = time.monotonic() + 60
    while not [p for p in pods(kube_sim, "homelab.gpu/resident=r1") if p.metadata.name != old]:
        assert time.monotonic() < deadline, "no new r1 pod"
        time.sleep(0.2)
    # It comes back awake and cannot load beside the awake ml engine; it is not behind the Service.
    assert behind_service(kube_sim) == ["ml"]
    res = engine(kube_sim, "ml")
    assert res["failed"] is False and res["changed"] is True, res["msg"]
    assert res["resident"]["plan"]["start"] == ["r1"] and res["resident"]["plan"]["sleep"] == ["ml"]
    assert sleeping(kube_sim, "r1") is True and sleeping(kube_sim, "ml") is False
    assert behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_gaming_stops_every_resident_pod_and_leaving_it_starts_them_again(kube_sim):
    assert engine(kube_sim, "r1")["failed"] is False
    res = engine(kube_sim, "gaming")
    assert res["failed"] is False, res["msg"]
    assert pods(kube_sim) == []
    res = engine(kube_sim, "ml")
    assert res["failed"] is False, res["msg"]
    assert res["resident"]["plan"]["start"] == ["r1", "ml"]
    assert sleeping(kube_sim, "r1") is True and sleeping(kube_sim, "ml") is False
    assert behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_gaming_stops_resident_pods_left_running_even_when_the_deployment_already_is_in_gaming(kube_sim):
    assert engine(kube_sim, "ml")["failed"] is False
    assert engine(kube_sim, "gaming")["failed"] is False
    # a resident Deployment that runs again behind the switch's back (a stop that was cut off, kubectl scale)
    client.AppsV1Api(kube_sim.api_client()).patch_namespaced_deployment_scale(
        "vllm-server-r1", NS, {"spec": {"replicas": 1}})
    wait_for(lambda: pods(kube_sim, "homelab.gpu/resident=r1"), "the r1 pod did not come back")
    res = engine(kube_sim, "gaming")
    assert res["failed"] is False and res["changed"] is True, res["msg"]
    assert pods(kube_sim) == []


@pytest.mark.sim_only
def test_a_wake_that_times_out_rolls_back_to_the_previous_mode_awake_and_verified(kube_sim):
    kube_sim.patch_scenario({"models": {"casperhansen/deepseek-r1-distill-qwen-7b-awq": {"wake_seconds": 3000}}})
    assert engine(kube_sim, "ml")["failed"] is False
    res = engine(kube_sim, "r1", wait_timeout=10)
    assert res["failed"] is True and res["rolled_back"] is True
    assert res["failure"]["phase"] == "wake"
    assert res["final_state"]["mode"] == "ml" and res["final_state"]["ready"] is True
    assert "Rolled back to ml: ready and verified" in res["msg"]
    assert sleeping(kube_sim, "ml") is False and behind_service(kube_sim) == ["ml"]
    assert pods(kube_sim, "homelab.gpu/resident=r1") == []      # the failed engine is stopped
    cm = kube_sim.core.read_namespaced_config_map("llm-fallback-config", NS).data
    assert cm["VLLM_MODE"] == "ml"


@pytest.mark.sim_only
def test_a_wake_that_runs_out_of_memory_rolls_back_to_the_previous_mode(kube_sim):
    # r1 really takes 95 % of the GPU awake while its catalog entry claims 10650 MiB: the budget passes,
    # the wake does not fit beside sleeping ml's residue and vLLM answers 500 (CUDA out of memory).
    greedy = copy.deepcopy(MODES)
    greedy["r1"]["args"] = ["--quantization", "awq_marlin", "--max-model-len", "8192",
                            "--gpu-memory-utilization", "0.95"]
    first = engine(kube_sim, "ml", modes=greedy)
    assert first["failed"] is False, first["msg"]
    res = engine(kube_sim, "r1", modes=greedy)
    assert res["failed"] is True and res["rolled_back"] is True, res["msg"]
    assert res["failure"]["phase"] == "wake" and res["failure"]["reason"] in ("WakeFailed", "OutOfMemory")
    assert any("out of memory" in line for line in res["failure"]["logs"]), res["failure"]["logs"]
    assert "Rolled back to ml: ready and verified" in res["msg"]
    assert sleeping(kube_sim, "ml") is False and behind_service(kube_sim) == ["ml"]
    assert "Qwen/Qwen3-8B-AWQ" in models_through_service(kube_sim)
    assert pods(kube_sim, "homelab.gpu/resident=r1") == []


# --------------------------------------------------------------------------------------------
# rollbacks across the resident set and the main Deployment

CODER = "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"


def with_coder(modes=None):
    """The catalog plus a non-resident mode, coder, that runs in the main Deployment."""
    modes = copy.deepcopy(modes or MODES)
    modes["coder"] = {"model": CODER, "image": "vllm/vllm-openai:v0.8.5.post1",
                      "args": ["--quantization", "awq_marlin", "--max-model-len", "8192",
                               "--gpu-memory-utilization", "0.90"], "vram_mib": 10820, "wait_timeout": 60}
    return modes


def switch_record(cluster):
    return cluster.core.read_namespaced_config_map("vllm-server-switch", NS).data


def main_deployment(cluster):
    return client.AppsV1Api(cluster.api_client()).read_namespaced_deployment("vllm-server", NS)


@pytest.mark.sim_only
def test_a_failed_switch_from_a_resident_mode_to_a_cold_one_puts_the_resident_set_back(playbook, kube_sim):
    # coder's engine crashes at start: the switch stopped the resident set for it, the rollback starts it again
    kube_sim.patch_scenario({"models": {CODER: {"crash": "RuntimeError: the coder checkpoint is corrupt"}}})
    modes = with_coder()
    tasks = []
    for index, mode in enumerate(("ml", "coder")):
        tasks.append({"name": "switch%d" % index, "ignore_errors": True,
                      "homelab.gpu.vllm_mode": {"mode": mode, "modes": modes, "pod": POD,
                                                "registry": {"offline": True}}})
    run = playbook.run(tasks, kubeconfig=kube_sim.kubeconfig)
    first, res = run.result("switch0"), run.result("switch1")
    assert first.get("failed") is not True, first.get("msg")
    assert res["failed"] is True and res["rolled_back"] is True, res.get("msg")
    assert res["failure"]["reason"] in ("CrashLoopBackOff", "ContainerExited"), res["failure"]
    assert any("checkpoint is corrupt" in line for line in res["failure"]["logs"]), res["failure"]["logs"]
    assert "Rolled back to ml: ready and verified" in res["msg"], res["msg"]
    final = res["final_state"]
    assert final["mode"] == "ml" and final["ready"] is True and final["pod"].startswith("vllm-server-ml-"), final
    assert final["resident"] == {"awake": "ml", "asleep": ["r1"]}, final
    # exactly as before the switch: ml awake and behind the Service, r1 asleep, nothing in the main Deployment
    assert sleeping(kube_sim, "ml") is False and sleeping(kube_sim, "r1") is True
    assert behind_service(kube_sim) == ["ml"]
    assert "Qwen/Qwen3-8B-AWQ" in models_through_service(kube_sim)
    dep = main_deployment(kube_sim)
    assert dep.spec.replicas == 0 and dep.metadata.annotations["homelab.gpu/mode"] == "ml"
    assert pods(kube_sim, "app.kubernetes.io/instance=vllm-server,!homelab.gpu/resident") == []
    cm = kube_sim.core.read_namespaced_config_map("llm-fallback-config", NS).data
    assert cm["VLLM_MODE"] == "ml" and cm["VLLM_MODEL"] == "Qwen/Qwen3-8B-AWQ", cm
    rec = switch_record(kube_sim)
    assert rec["mode"] == "coder" and rec["previous_mode"] == "ml" and rec["result"] == "rolled back", rec
    # and the next switch between resident modes is a wake again, not a cold start
    again = engine(kube_sim, "r1", modes=modes)
    assert again["failed"] is False, again["msg"]
    assert again["resident"]["plan"]["start"] == [] and again["resident"]["plan"]["wake"] is True


@pytest.mark.sim_only
def test_a_failed_switch_from_a_cold_mode_to_a_resident_one_stops_the_set_and_puts_the_deployment_back(kube_sim):
    # r1's engine crashes at start: ml was started (cold, then asleep) for the switch, r1 never comes up
    kube_sim.patch_scenario({"models": {"casperhansen/deepseek-r1-distill-qwen-7b-awq": {
        "crash": "RuntimeError: the r1 checkpoint is corrupt"}}})
    modes = with_coder()
    first = engine(kube_sim, "coder", modes=modes)
    assert first["failed"] is False, first["msg"]
    before = main_deployment(kube_sim)
    res = engine(kube_sim, "r1", modes=modes)
    assert res["failed"] is True and res["rolled_back"] is True, res["msg"]
    assert res["failure"]["phase"] == "start", res["failure"]
    assert "Rolled back to coder: ready and verified" in res["msg"], res["msg"]
    assert res["final_state"]["mode"] == "coder" and res["final_state"]["ready"] is True
    # no resident pod is left (ml was started by the switch), coder serves from the main Deployment again
    assert pods(kube_sim, "app.kubernetes.io/instance=vllm-server,homelab.gpu/resident") == []
    assert behind_service(kube_sim) == ["main"]
    assert CODER in models_through_service(kube_sim)
    dep = main_deployment(kube_sim)
    assert dep.spec.replicas == 1 and dep.metadata.annotations["homelab.gpu/mode"] == "coder"
    assert dep.spec.template.spec.containers[0].args == before.spec.template.spec.containers[0].args
    cm = kube_sim.core.read_namespaced_config_map("llm-fallback-config", NS).data
    assert cm["VLLM_MODE"] == "coder" and cm["VLLM_MODEL"] == CODER, cm
    rec = switch_record(kube_sim)
    assert rec["mode"] == "r1" and rec["previous_mode"] == "coder" and rec["result"] == "rolled back", rec


@pytest.mark.sim_only
def test_a_resident_switch_checks_the_service_reaches_the_awake_pod_and_says_so_when_it_does_not(kube_sim):
    # a Service of the user's whose selector asks for one more label: the awake pod is routed but no client
    # of the Service reaches it; the switch verifies through the Service and names the mismatch
    kube_sim.core.patch_namespaced_service("vllm-api", NS, {"spec": {"selector": dict(SERVICE_SELECTOR,
                                                                                      tier="gpu")}})
    warnings = []
    params = {"mode": "ml", "modes": MODES, "pod": POD, "registry": {"offline": True}, "holder": "test",
              "wait_timeout": None}
    result, error = engine_switch(EngineApi(HttpTransport.from_kubeconfig(kube_sim.kubeconfig)), params,
                                  warn=warnings.append)
    assert error is None, error
    assert any(w.startswith("Service ml/vllm-api has no endpoints for pod %s (its selector does not match"
                            % result["pod"]) for w in warnings), warnings
    # with the role's selector the Service answers at once, and no warning is given
    kube_sim.core.patch_namespaced_service("vllm-api", NS, {"spec": {"selector": {"tier": None}}})
    del warnings[:]
    result, error = engine_switch(EngineApi(HttpTransport.from_kubeconfig(kube_sim.kubeconfig)),
                                  dict(params, mode="r1"), warn=warnings.append)
    assert error is None and warnings == [], (error, warnings)
    assert "casperhansen/deepseek-r1-distill-qwen-7b-awq" in models_through_service(kube_sim)
    # verify: health (an image without /v1/models, or a health check asked for): the Service is asked /health only
    kube_sim.reset_requests()
    result, error = engine_switch(EngineApi(HttpTransport.from_kubeconfig(kube_sim.kubeconfig)),
                                  dict(params, mode="ml", verify="health"), warn=warnings.append)
    assert error is None and warnings == [] and result["mode"] == "ml", (error, warnings)
    service = "/api/v1/namespaces/ml/services/vllm-api:8000/proxy"
    log = kube_sim.requests()["log"]
    asked = set(r["path"] for r in log if r["path"].startswith(service))
    assert asked == {service + "/health"}, asked
    # and the woken ml pod is checked with /health too, never asked /v1/models (nor /is_sleeping after its wake)
    pod = "/api/v1/namespaces/ml/pods/%s:8000/proxy" % result["pod"]
    woken = min(r["seq"] for r in log if r["method"] == "POST" and r["path"] == pod + "/wake_up")
    checks = [r["path"] for r in log if r["seq"] > woken and r["method"] == "GET" and r["path"].startswith(pod)]
    assert checks == [pod + "/health"], checks
    assert not [r["path"] for r in log if "/pods/" in r["path"] and r["path"].endswith("/v1/models")]


@pytest.mark.sim_only
def test_a_failed_reconcile_says_what_failed_and_leaves_the_current_mode_awake_through_the_module(
        playbook, kube_sim):
    # ml serves, r1 sleeps; r1's pod restarts and its engine can no longer start (a corrupt checkpoint), so the
    # reconcile (the switch to ml, the current mode) must start it afresh while ml sleeps, and that fails
    assert engine(kube_sim, "ml")["failed"] is False
    kube_sim.patch_scenario({"models": {"casperhansen/deepseek-r1-distill-qwen-7b-awq": {
        "crash": "RuntimeError: the r1 checkpoint is corrupt"}}})
    old = pods(kube_sim, "homelab.gpu/resident=r1")[0].metadata.name
    kube_sim.core.delete_namespaced_pod(old, NS, grace_period_seconds=0)
    wait_for(lambda: [p for p in pods(kube_sim, "homelab.gpu/resident=r1") if p.metadata.name != old],
             "no new r1 pod")
    run = playbook.run([{"name": "reconcile", "ignore_errors": True,
                         "homelab.gpu.vllm_mode": {"mode": "ml", "modes": MODES, "pod": POD,
                                                   "registry": {"offline": True}}},
                        {"name": "status", "homelab.gpu.vllm_mode_info": {"modes": MODES, "pod": POD,
                                                                          "registry": {"offline": True}}}],
                       kubeconfig=kube_sim.kubeconfig)
    res = run.result("reconcile")
    # one sentence, no Python traceback: what failed, where the set stands, what to do
    assert res["failed"] is True and "Traceback" not in run.stdout + run.stderr, res
    assert res["rolled_back"] is True and res["failure"]["mode"] == "r1", res
    assert res["msg"].startswith("Reconcile of ml/vllm-server in resident mode ml failed in phase start of resident "
                                 "mode r1 ("), res["msg"]
    assert "Rolled back to ml: ready and verified; resident mode r1, whose start failed, is stopped: the next " \
           "switch to a resident mode starts it again" in res["msg"], res["msg"]
    final = res["final_state"]
    assert final["mode"] == "ml" and final["ready"] is True and final["stopped"] == ["r1"], final
    assert final["resident"] == {"awake": "ml", "asleep": []}, final
    # ml serves as before, the r1 engine that cannot start is stopped (not crash-looping beside it)
    assert sleeping(kube_sim, "ml") is False and behind_service(kube_sim) == ["ml"]
    assert "Qwen/Qwen3-8B-AWQ" in models_through_service(kube_sim)
    assert pods(kube_sim, "homelab.gpu/resident=r1") == []
    rec = switch_record(kube_sim)
    assert rec["mode"] == "ml" and rec["result"] == "rolled back" and rec["failed_mode"] == "r1", rec
    # the status names the mode and the phase whose step failed, as the message did
    last = run.result("status")["last_switch"]
    assert last["result"] == "rolled back" and last["in_progress"] is False, last
    assert last["failed_mode"] == "r1" and last["failed_phase"] == "start", last


# --------------------------------------------------------------------------------------------
# the gateway, a real process

def gateway_modes():
    """Both models fit awake together on a 24 GiB GPU at 45 % each: a restarted engine loads awake."""
    modes = copy.deepcopy(MODES)
    for mode in ("ml", "r1"):
        modes[mode]["args"] = ["--quantization", "awq_marlin", "--max-model-len", "8192",
                               "--gpu-memory-utilization", "0.45"]
        modes[mode]["vram_mib"] = 11059
        modes[mode]["wait_timeout"] = 60
    modes["idle"] = {"replicas": 0, "lock": False}
    return modes


def chat(gw, model):
    status, body, _headers = gw.call("POST", "/v1/chat/completions", {
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    return status, body


@pytest.mark.sim_only
def test_the_gateway_routes_to_the_awake_engine_wakes_a_sleeping_one_and_puts_a_restarted_one_back_to_sleep(
        tmp_path, kube_sim):
    from tests.integration.gateway_helpers import gateway_config, start_gateway
    kube_sim.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "gpu": {"count": 2, "memory_mib": 24576}}]})
    modes = gateway_modes()
    first = engine(kube_sim, "ml", modes=modes)
    assert first["failed"] is False, first["msg"]
    # as its ServiceAccount, with the Role the vllm role renders for a catalog with resident modes
    gw = start_gateway(tmp_path, kube_sim, gateway_config({"modes": modes}), as_service_account=True)
    try:
        assert gw.status()["mode"] == "ml" and gw.status()["ready"] is True
        status, body = chat(gw, "Qwen/Qwen3-8B-AWQ")
        assert status == 200, body
        # a request for the sleeping r1 makes the gateway wake it (the engine's resident switch)
        status, body = chat(gw, "casperhansen/deepseek-r1-distill-qwen-7b-awq")
        assert status == 200, body
        last = gw.status()["gateway_switch"]
        assert last["to"] == "r1" and last["outcome"] == "ok", last
        assert isinstance(last["phases"]["wake"], float) and last["phases"]["start"] == 0.0, last["phases"]
        assert sleeping(kube_sim, "ml") is True and sleeping(kube_sim, "r1") is False
        assert behind_service(kube_sim) == ["r1"]
        # the sleeping ml engine restarts: it comes back awake, the gateway's watch puts it back to sleep
        old = pods(kube_sim, "homelab.gpu/resident=ml")[0].metadata.name
        kube_sim.core.delete_namespaced_pod(old, NS, grace_period_seconds=0)
        wait_for(lambda: any(p.metadata.name != old for p in pods(kube_sim, "homelab.gpu/resident=ml")),
                 "no new ml pod")

        def reconciled():
            last = gw.status()["gateway_switch"] or {}
            return last.get("trigger") == "reconcile" and last.get("outcome") == "ok"
        wait_for(reconciled, "the gateway did not reconcile: %s" % gw.log()[-2000:], timeout=90)
        assert sleeping(kube_sim, "ml") is True and sleeping(kube_sim, "r1") is False
        assert behind_service(kube_sim) == ["r1"]
        status, body = chat(gw, "local-llm")
        assert status == 200 and body["model"] == "local-llm", body
    finally:
        gw.stop()

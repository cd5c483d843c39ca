"""vllm_mode failure paths: each failure class is recognised quickly, reported with its phase,
logs and events, and the previous mode is restored (rollback) — against the simulated cluster,
whose scenario makes the failures happen (sim_only)."""
import copy
import time

import pytest

from tests.integration.test_vllm_mode import SPEED, MODES, NS, Api, assert_serving, switch, task

pytestmark = pytest.mark.sim_only

FAST_PULL = {"pull_seconds": 2}


@pytest.fixture
def kube_sim(kube_sim_factory):
    """The simulated cluster at speed 50, as in test_vllm_mode.py."""
    return kube_sim_factory(speed=SPEED)


def broken(modes=None, **entry):
    """The catalog with ``ml`` changed (and its CUDA check relaxed where the test says so)."""
    out = copy.deepcopy(modes or MODES)
    out["ml"].update(entry)
    return out


@pytest.fixture
def r1_running(playbook, kube_sim):
    """A cluster serving r1 (the mode a failed switch must come back to)."""
    api = Api(kube_sim).setup()
    res = switch(playbook, kube_sim, "r1")
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    return api


def assert_rolled_back_to_r1(res, api, reason, phase):
    assert res["failed"] is True and res["changed"] is True
    assert res["failure"]["reason"] == reason, res["failure"]
    assert res["failure"]["phase"] == phase
    assert res["rolled_back"] is True
    assert res["final_state"]["mode"] == "r1" and res["final_state"]["ready"] is True, res["final_state"]
    assert "Rolled back to r1: ready and verified" in res["msg"]
    assert "phase %s (%s)" % (phase, reason) in res["msg"]
    dep = api.deployment()
    assert dep.metadata.labels["gpu-mode"] == "r1"
    assert "casperhansen/deepseek-r1-distill-qwen-7b-awq" in dep.spec.template.spec.containers[0].args
    assert api.configmap()["VLLM_MODE"] == "r1"
    ready = [p for p in api.pods() if not p.metadata.deletion_timestamp]
    assert len(ready) == 1


def test_image_pull_error_rolls_back(playbook, kube_sim, r1_running):
    kube_sim.patch_scenario({"images": {"vllm/vllm-openai:v0.8.6-typo": {"pull": "error"}}})
    modes = broken(image="vllm/vllm-openai:v0.8.6-typo", image_cuda={"cuda_version": "12.4.1"})
    res = switch(playbook, kube_sim, "ml", modes=modes)
    assert res["failure"]["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert_rolled_back_to_r1(res, r1_running, res["failure"]["reason"], "pull")
    assert any(e["reason"] in ("Failed", "BackOff") for e in res["failure"]["events"])


def test_nvidia_runtime_requirement_error_rolls_back(playbook, kube_sim, r1_running):
    kube_sim.patch_scenario({"images": {"vllm/vllm-openai:v0.15.1": FAST_PULL}})
    res = switch(playbook, kube_sim, "ml", modes=broken(image="vllm/vllm-openai:v0.15.1"), cuda_check="skip")
    assert_rolled_back_to_r1(res, r1_running, "NvidiaRequirementError", "start")
    assert "unsatisfied condition: cuda>=12.9" in res["failure"]["message"]


def test_cuda_804_crash_loop_rolls_back_with_the_log_lines(playbook, kube_sim, r1_running):
    # The CDI runtime does not evaluate NVIDIA_REQUIRE_*: the container starts and dies at CUDA init.
    kube_sim.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "nvidia_runtime": "cdi"}],
                             "images": {"vllm/vllm-openai:v0.15.1": FAST_PULL}})
    res = switch(playbook, kube_sim, "ml", modes=broken(image="vllm/vllm-openai:v0.15.1"), cuda_check="warn")
    assert any(w.startswith("cuda check: ") and "v0.15.1" in w for w in res.get("warnings", []))
    assert res["failure"]["reason"] in ("CrashLoopBackOff", "ContainerExited")
    assert_rolled_back_to_r1(res, r1_running, res["failure"]["reason"], "start")
    assert any("804" in line for line in res["failure"]["logs"]), res["failure"]["logs"]


def test_oom_rolls_back(playbook, kube_sim, r1_running):
    kube_sim.patch_scenario({"models": {"Qwen/Qwen3-14B-AWQ": {"vram_mib": 15500, "load_seconds": 5}}})
    res = switch(playbook, kube_sim, "ml", modes=broken(model="Qwen/Qwen3-14B-AWQ", vram_mib=None))
    assert res["checks"]["vram"]["verdict"] == "unknown"
    assert res["failure"]["reason"] in ("OOMKilled", "CrashLoopBackOff", "ContainerExited")
    assert_rolled_back_to_r1(res, r1_running, res["failure"]["reason"], "start")


def test_missing_hf_token_secret_rolls_back_and_names_the_secret(playbook, kube_sim, r1_running):
    # pod.hf_token_secret names a Secret nobody created: the kubelet cannot build the container's
    # environment (CreateContainerConfigError); seen at once, not at the timeout.
    pod = {"node_selector": {"nvidia.com/gpu.present": "true"}, "hf_token_secret": "hf-token",
           "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
    res = switch(playbook, kube_sim, "ml", pod=pod)
    assert_rolled_back_to_r1(res, r1_running, "CreateContainerConfigError", "start")
    assert 'secret "hf-token" not found' in res["failure"]["message"]
    assert "kubectl -n ml create secret generic hf-token --from-literal=HF_TOKEN=<value>" in res["msg"]
    assert any('secret "hf-token" not found' in e["message"] for e in res["failure"]["events"])
    assert res["elapsed"] < res["wait_timeout"]


def test_vram_need_over_the_gpu_memory_is_refused_before_any_write(playbook, kube_sim, r1_running):
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", modes=broken(vram_mib=15500))
    assert res["failed"] is True and res["checks"]["vram"]["verdict"] == "fail"
    assert "15500 MiB" in res["msg"] and "12288 MiB" in res["msg"]
    assert [r for r in kube_sim.requests()["log"] if r["method"] not in ("GET",)] == []


def test_unschedulable_rolls_back(playbook, kube_sim, r1_running):
    pod = {"node_selector": {"nvidia.com/gpu.present": "true", "homelab/disk": "nvme"},
           "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
    res = switch(playbook, kube_sim, "ml", pod=pod, cuda_check="warn")
    assert_rolled_back_to_r1(res, r1_running, "Unschedulable", "schedule")
    assert "didn't match" in res["failure"]["message"] or "node(s)" in res["failure"]["message"]


def test_rollback_off_leaves_the_failed_mode_and_says_so(playbook, kube_sim, r1_running):
    kube_sim.patch_scenario({"images": {"vllm/vllm-openai:v0.8.6-typo": {"pull": "error"}}})
    modes = broken(image="vllm/vllm-openai:v0.8.6-typo", image_cuda={"cuda_version": "12.4.1"})
    res = switch(playbook, kube_sim, "ml", modes=modes, rollback=False)
    assert res["failed"] is True and res["rolled_back"] is False
    assert "Not rolled back (rollback is off)" in res["msg"]
    assert r1_running.deployment().metadata.labels["gpu-mode"] == "ml"


def start_switch(playbook, kube_sim, mode, **options):
    return playbook.start([task(mode, **options)], kubeconfig=kube_sim.kubeconfig)


def wait_for_new_pod(api, old_uids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [p for p in api.pods() if p.metadata.uid not in old_uids and not p.metadata.deletion_timestamp
               and p.spec.node_name]
        if new:
            return new[0]
        time.sleep(0.05)
    raise AssertionError("no new pod was scheduled")


def test_gpu_unplugged_mid_switch_fails_fast_and_reports_the_final_state(playbook, kube_sim, r1_running):
    old = set(r1_running.pod_uids())
    kube_sim.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"load_seconds": 200}}})
    proc = start_switch(playbook, kube_sim, "ml")
    wait_for_new_pod(r1_running, old)
    kube_sim.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "gpu": {"count": 0}}]})
    run = playbook.finish(proc)
    res = run.result("switch")
    assert res["failed"] is True
    assert res["failure"]["reason"] in ("NoGPUCapacity", "ContainerExited", "CrashLoopBackOff"), res["failure"]
    assert res["rolled_back"] is True
    assert res["final_state"]["ready"] is False                # no GPU for r1 either
    assert "Rolled back to r1" in res["msg"]


def test_node_not_ready_mid_switch_fails_fast(playbook, kube_sim, r1_running):
    old = set(r1_running.pod_uids())
    kube_sim.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"load_seconds": 200}}})
    proc = start_switch(playbook, kube_sim, "ml", rollback=False)
    wait_for_new_pod(r1_running, old)
    kube_sim.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "ready": False}]})
    res = playbook.finish(proc).result("switch")
    assert res["failed"] is True and res["failure"]["reason"] == "NodeNotReady", res["failure"]
    assert "k3s-gpu-worker" in res["failure"]["message"]


def test_a_run_killed_mid_switch_is_rolled_back_by_the_next_run(playbook, kube_sim, r1_running):
    # A switch to a crashing image is killed before it can roll back; the lease it held expires
    # and the next run (same mode) finds the unfinished switch in the record and restores r1.
    kube_sim.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "nvidia_runtime": "cdi"}],
                             "images": {"vllm/vllm-openai:v0.15.1": dict(FAST_PULL, pull_seconds=100)}})
    modes = broken(image="vllm/vllm-openai:v0.15.1")
    old = set(r1_running.pod_uids())
    proc = start_switch(playbook, kube_sim, "ml", modes=modes, cuda_check="skip")
    wait_for_new_pod(r1_running, old)
    playbook.kill(proc)
    lease = r1_running.coord.read_namespaced_lease("vllm-server-switch", NS)
    lease.spec.renew_time = lease.spec.renew_time.replace(year=2020)
    r1_running.coord.replace_namespaced_lease("vllm-server-switch", NS, lease)
    res = switch(playbook, kube_sim, "ml", modes=modes, cuda_check="skip")
    assert res["failed"] is True and res["plan"] == "resume", res["msg"]
    assert any("did not finish" in w for w in res.get("warnings", []))
    assert res["rolled_back"] is True and res["final_state"]["mode"] == "r1" and res["final_state"]["ready"]

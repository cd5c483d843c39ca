"""GPU failure modes of the simulated node: CUDA requirements, error 804, GPU memory, unplug, NotReady."""

import pytest
from kubernetes import client

from tests.kube_sim.world_testing import (QWEN, condition, container_status, gpu_pod_spec, proxy, vllm_container,
                                          vllm_deployment, vllm_service, wait_for, wait_until,
                                          waiting_reasons)

pytestmark = pytest.mark.sim_only
REQUIREMENT = ("nvidia-container-cli: requirement error: unsatisfied condition: %s, please update your driver to a "
               "newer version, or use an earlier cuda container")


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "ml"}})
    return cluster, api, v1


def start(v1, name, **kw):
    runtime_class = kw.pop("runtime_class", "nvidia")
    v1.create_namespaced_pod("ml", {"metadata": {"name": name},
                                    "spec": gpu_pod_spec(vllm_container(**kw), runtime_class=runtime_class)})


def status_of(v1, name):
    return container_status(v1.read_namespaced_pod(name, "ml"))


def waiting(v1, name, reason):
    def check():
        status = status_of(v1, name)
        return status is not None and status.state.waiting is not None and \
            status.state.waiting.reason == reason and status
    return wait_for(check, what="%s waiting with %s" % (name, reason))


def crash_looping(v1, name):
    status = waiting(v1, name, "CrashLoopBackOff")
    assert status.restart_count >= 1
    return status


def ready(v1, name):
    def check():
        pod = v1.read_namespaced_pod(name, "ml")
        cond = condition(pod, "Ready") if pod.status.conditions else None
        return cond is not None and cond.status == "True" and pod
    return wait_for(check, what="%s Ready" % name)


@pytest.mark.parametrize("image, condition_text", [("vllm/vllm-openai:v0.15.1", "cuda>=12.9"),
                                                   ("vllm/vllm-openai:v0.20.0", "cuda>=13.0")])
def test_unmet_nvidia_require_cuda_fails_container_create(lab, image, condition_text):
    _cluster, _api, v1 = lab
    start(v1, "too-new", image=image)
    states, _pod = waiting_reasons(v1, "ml", "too-new", "CrashLoopBackOff")
    run_errors = [message for reason, message in states if reason == "RunContainerError"]
    assert run_errors and states[-1][0] == "CrashLoopBackOff"
    assert run_errors[0].startswith("failed to create containerd task: failed to create shim task: ")
    assert REQUIREMENT % condition_text in run_errors[0]
    messages = [e.message for e in v1.list_namespaced_event("ml").items if e.reason == "Failed"]
    status = crash_looping(v1, "too-new")
    terminated = status.last_state.terminated
    assert (terminated.reason, terminated.exit_code) == ("StartError", 128)
    assert REQUIREMENT % condition_text in terminated.message
    assert any(m.startswith("Error: failed to create containerd task: failed to create shim task: ") and
               REQUIREMENT % condition_text in m for m in messages)


def test_newer_cuda_without_requirement_check_crashes_with_error_804(lab):
    cluster, _api, v1 = lab
    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "nvidia_runtime": "cdi"}]})
    start(v1, "cdi", image="vllm/vllm-openai:v0.15.1")
    crash_looping(v1, "cdi")
    logs = v1.read_namespaced_pod_log("cdi", "ml", previous=True)
    assert "Error 804: forward compatibility was attempted on non supported HW" in logs
    assert "vLLM API server version 0.15.1" in logs
    status = status_of(v1, "cdi")
    assert (status.last_state.terminated.exit_code, status.last_state.terminated.reason) == (1, "Error")


def test_disable_require_env_skips_the_requirement_check(lab):
    _cluster, _api, v1 = lab
    container = vllm_container(image="vllm/vllm-openai:v0.15.1")
    container["env"] = [{"name": "NVIDIA_DISABLE_REQUIRE", "value": "1"}]
    v1.create_namespaced_pod("ml", {"metadata": {"name": "forced"}, "spec": gpu_pod_spec(container)})
    crash_looping(v1, "forced")
    assert "Error 804" in v1.read_namespaced_pod_log("forced", "ml", previous=True)


def test_a_data_center_gpu_runs_a_newer_cuda_by_forward_compatibility(kube_sim_factory):
    cluster = kube_sim_factory(speed=100, scenario={"nodes": [
        {"name": "k3s-server", "role": "server"},
        {"name": "dc-worker", "labels": {"gpu": "true"}, "taints": [{"key": "gpu", "value": "true",
                                                                     "effect": "NoSchedule"}],
         "gpu": {"product": "NVIDIA L4", "memory_mib": 23034, "driver_version": "570.195.03", "compute": "8.9"},
         "nvidia_runtime": "cdi"}]})
    v1 = client.CoreV1Api(cluster.api_client())
    v1.create_namespace({"metadata": {"name": "ml"}})
    start(v1, "l4", image="vllm/vllm-openai:v0.15.1")
    assert ready(v1, "l4").spec.node_name == "dc-worker"
    labels = v1.read_node("dc-worker").metadata.labels
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L4" and labels["nvidia.com/cuda.runtime-version.full"] == "12.8"


def test_model_too_big_for_gpu_memory_runs_out_of_memory(lab):
    cluster, _api, v1 = lab
    cluster.patch_scenario({"models": {"Qwen/Qwen3-14B-AWQ": {"vram_mib": 14500}}})
    start(v1, "big", model="Qwen/Qwen3-14B-AWQ")
    crash_looping(v1, "big")
    logs = v1.read_namespaced_pod_log("big", "ml", previous=True)
    assert "torch.OutOfMemoryError: CUDA out of memory." in logs
    assert "GPU 0 has a total capacity of 11.64 GiB" in logs


def test_model_crash_text_and_missing_nvidia_runtime(lab):
    cluster, _api, v1 = lab
    cluster.patch_scenario({"models": {"broken/model": {"crash": "ValueError: Unknown quantization method: awq2"}}})
    start(v1, "broken", model="broken/model")
    crash_looping(v1, "broken")
    logs = v1.read_namespaced_pod_log("broken", "ml", previous=True)
    assert "ValueError: Unknown quantization method: awq2" in logs
    v1.delete_namespaced_pod("broken", "ml", grace_period_seconds=0)
    start(v1, "runc", runtime_class=None)
    crash_looping(v1, "runc")
    assert "RuntimeError: Failed to infer device type" in v1.read_namespaced_pod_log("runc", "ml", previous=True)


def test_gpu_unplugged_mid_run_and_plugged_back(lab):
    cluster, api, v1 = lab
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("ml", vllm_deployment())
    v1.create_namespaced_service("ml", vllm_service())
    pod = wait_until(lambda: v1.list_namespaced_pod("ml").items, bool)[0]
    ready(v1, pod.metadata.name)

    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "gpu": {"unplugged": True}}]})
    node = v1.read_node("k3s-gpu-worker")
    assert node.status.capacity["nvidia.com/gpu"] == "0" and node.status.allocatable["nvidia.com/gpu"] == "0"
    crash_looping(v1, pod.metadata.name)
    logs = v1.read_namespaced_pod_log(pod.metadata.name, "ml", previous=True)
    assert "RuntimeError: No CUDA GPUs are available" in logs or "CUDA error: unspecified launch failure" in logs
    assert proxy(api, "ml", "services", "vllm-api:http", "/health")[0] == 503
    dep = apps.read_namespaced_deployment("vllm-server", "ml")
    assert condition(dep, "Available").status == "False"
    # a new GPU pod cannot be placed now
    start(v1, "another")
    msg = wait_until(lambda: condition(v1.read_namespaced_pod("another", "ml"), "PodScheduled"),
                     lambda c: c is not None and c.status == "False").message
    assert msg.startswith("0/2 nodes are available: 1 Insufficient nvidia.com/gpu,")
    v1.delete_namespaced_pod("another", "ml")

    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "gpu": {"unplugged": False}}]})
    ready(v1, pod.metadata.name)
    assert proxy(api, "ml", "services", "vllm-api:http", "/v1/models")[1]["data"][0]["id"] == QWEN


def test_node_not_ready_stops_serving_and_recovers(lab):
    cluster, api, v1 = lab
    start(v1, "engine")
    v1.create_namespaced_service("ml", {"metadata": {"name": "engine"}, "spec": {
        "selector": {"app": "engine"}, "ports": [{"port": 8000}]}})
    v1.patch_namespaced_pod("engine", "ml", {"metadata": {"labels": {"app": "engine"}}})
    ready(v1, "engine")
    assert proxy(api, "ml", "services", "engine", "/health")[0] == 200

    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "ready": False}]})
    node = v1.read_node("k3s-gpu-worker")
    cond = [c for c in node.status.conditions if c.type == "Ready"][0]
    assert (cond.status, cond.reason) == ("False", "KubeletNotReady")
    assert ("node.kubernetes.io/not-ready", "NoSchedule") in [(t.key, t.effect) for t in node.spec.taints]
    wait_for(lambda: condition(v1.read_namespaced_pod("engine", "ml"), "Ready").status == "False",
             what="the pod to turn unready")
    wait_for(lambda: not (v1.read_namespaced_endpoints("engine", "ml").subsets or [None])[0] or
             not v1.read_namespaced_endpoints("engine", "ml").subsets[0].addresses, what="no ready endpoints")
    status, body = proxy(api, "ml", "services", "engine", "/health")
    assert (status, body["message"]) == (503, 'no endpoints available for service "engine"')

    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "ready": "Unknown"}]})
    cond = [c for c in v1.read_node("k3s-gpu-worker").status.conditions if c.type == "Ready"][0]
    assert (cond.status, cond.reason, cond.message) == ("Unknown", "NodeStatusUnknown",
                                                        "Kubelet stopped posting node status.")
    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "ready": True}]})
    ready(v1, "engine")
    assert proxy(api, "ml", "services", "engine", "/health")[0] == 200


def test_host_memory_limit_oom_kills_and_a_shared_gpu_lacks_free_memory(lab):
    cluster, _api, v1 = lab
    cluster.patch_scenario({"models": {QWEN: {"ram_mib": 20000}}})
    container = vllm_container(QWEN)
    container["resources"]["limits"]["memory"] = "16Gi"
    v1.create_namespaced_pod("ml", {"metadata": {"name": "limited"}, "spec": gpu_pod_spec(container)})
    status = crash_looping(v1, "limited")
    assert (status.last_state.terminated.reason, status.last_state.terminated.exit_code) == ("OOMKilled", 137)
    v1.delete_namespaced_pod("limited", "ml", grace_period_seconds=0)

    # two engines that do not request nvidia.com/gpu see the same GPU: the second finds it full
    start(v1, "first", gpu=False)
    ready(v1, "first")
    start(v1, "second", gpu=False)
    crash_looping(v1, "second")
    logs = v1.read_namespaced_pod_log("second", "ml", previous=True)
    assert "ValueError: Free memory on device" in logs and "less than desired GPU memory utilization (0.9" in logs

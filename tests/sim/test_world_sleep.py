"""Resident engines on one GPU: sleep and wake over the host link, GPU memory per process, out of memory on a
wake that does not fit, host RAM for parked weights, old vLLM images, and time-slicing by the device plugin.

What a user of a real lab would see is asserted: the engine's answers and logs, the pod's status, the node's
advertised capacity and labels, and the simulator's nvidia-smi view (``cluster.gpu()``). Times appear only as
the figures vLLM logs ("It took N seconds"), computed from the scenario, never as measured durations.
"""

import pytest
from kubernetes import client

from tests.kube_sim.world_testing import (QWEN, R1, container_status, gpu_pod_spec, proxy, restarts, vllm_container,
                                          wait_for, wait_until)

pytestmark = pytest.mark.sim_only

DEV_MODE = [{"name": "VLLM_SERVER_DEV_MODE", "value": "1"}]
WORKER = "k3s-gpu-worker"
PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.4"


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "ml"}})
    return cluster, api, v1


def start(v1, name, model=QWEN, image=None, args=("--enable-sleep-mode",), env=None, gpu=False, limits=None):
    """A vLLM pod on the GPU worker (``gpu=False``: no nvidia.com/gpu request, as two resident pods on one card
    without time-slicing)."""
    kwargs = {"image": image} if image else {}
    container = vllm_container(model, extra_args=list(args), gpu=gpu, **kwargs)
    env = DEV_MODE if env is None else env
    if env:
        container["env"] = env
    if limits:
        container.setdefault("resources", {}).setdefault("limits", {}).update(limits)
    v1.create_namespaced_pod("ml", {"metadata": {"name": name}, "spec": gpu_pod_spec(container)})


def ready(v1, name):
    def check():
        pod = v1.read_namespaced_pod(name, "ml")
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    wait_for(check, what="%s Ready" % name)


def post(api, name, path):
    return proxy(api, "ml", "pods", name + ":8000", path, "POST")


def sleeping(api, name):
    return proxy(api, "ml", "pods", name + ":8000", "/is_sleeping")


def processes(cluster):
    return {p["pod"]: p for p in cluster.gpu()[WORKER]["processes"]}


def log(v1, name):
    return v1.read_namespaced_pod_log(name, "ml")


def test_sleep_and_wake_copy_the_weights_over_the_host_link(lab):
    cluster, api, v1 = lab
    start(v1, "ml-engine")
    ready(v1, "ml-engine")
    gpu = cluster.gpu()[WORKER]
    assert gpu["memory_mib"] == 12288
    assert processes(cluster)["ml-engine"]["used_mib"] == int(12288 * 0.9)   # --gpu-memory-utilization 0.9

    assert post(api, "ml-engine", "/sleep?level=1")[0] == 200
    engine = processes(cluster)["ml-engine"]
    assert (engine["state"], engine["used_mib"], engine["parked_mib"]) == ("asleep", 1126, 5800)
    assert cluster.gpu()[WORKER]["host_parked_mib"] == 5800
    # a slower link makes the copy back longer: 5800 MiB at 1 GiB/s, plus the model's 0.5 s
    cluster.patch_scenario({"nodes": {WORKER: {"gpu": {"host_link_gib_per_s": 1}}}})
    assert post(api, "ml-engine", "/wake_up")[0] == 200
    assert "It took %.6f seconds to wake up" % (0.5 + 5800 / 1024.0) in log(v1, "ml-engine")
    engine = processes(cluster)["ml-engine"]
    assert (engine["state"], engine["used_mib"], engine["parked_mib"]) == ("awake", int(12288 * 0.9), 0)

    # level 2 discards the weights: nothing parked in host RAM, no copy on the way down
    assert post(api, "ml-engine", "/sleep?level=2")[0] == 200
    assert "It took %.6f seconds to fall asleep." % 0.3 in log(v1, "ml-engine")
    assert processes(cluster)["ml-engine"]["parked_mib"] == 0


def test_a_wake_that_does_not_fit_runs_out_of_memory_and_the_engine_stays_asleep(lab):
    cluster, api, v1 = lab
    start(v1, "ml-engine")
    ready(v1, "ml-engine")
    assert post(api, "ml-engine", "/sleep")[0] == 200
    start(v1, "r1-engine", model=R1)
    ready(v1, "r1-engine")     # fits beside the sleeping engine: 1126 + 0.9 x 12288 MiB

    # waking ml while r1 is awake: 0.9 x 12288 - 1126 MiB do not fit in what r1 left free
    free = 12288 - 1126 - int(12288 * 0.9)
    status, body = post(api, "ml-engine", "/wake_up")
    assert (status, body) == (500, "Internal Server Error")
    text = log(v1, "ml-engine")
    assert "CUDA Error: out of memory at /workspace/csrc/cumem_allocator.cpp:62" in text
    assert "Invocation of wake_up method failed" in text
    assert sleeping(api, "ml-engine") == (200, {"is_sleeping": True})
    # the blocks mapped before the failure stay mapped: the device is full
    engine = processes(cluster)["ml-engine"]
    assert engine["state"] == "asleep" and engine["used_mib"] == 1126 + free
    assert cluster.gpu()[WORKER]["used_mib"] == 12288
    completion = proxy(api, "ml", "pods", "r1-engine:8000", "/v1/completions", "POST",
                       {"model": R1, "prompt": "hi", "max_tokens": 1})
    assert completion[0] == 200, "the awake engine keeps serving"

    # once r1 sleeps, the wake fits and the engine serves again
    assert post(api, "r1-engine", "/sleep")[0] == 200
    assert post(api, "ml-engine", "/wake_up")[0] == 200
    assert sleeping(api, "ml-engine") == (200, {"is_sleeping": False})
    assert processes(cluster)["ml-engine"]["used_mib"] == int(12288 * 0.9)


def test_a_wake_out_of_memory_can_kill_the_engine_which_restarts_awake(lab):
    cluster, api, v1 = lab
    cluster.patch_scenario({"models": {QWEN: {"wake_oom": "crash"}}})
    start(v1, "ml-engine")
    ready(v1, "ml-engine")
    assert post(api, "ml-engine", "/sleep")[0] == 200
    start(v1, "r1-engine", model=R1)
    ready(v1, "r1-engine")

    status, body = post(api, "ml-engine", "/wake_up")
    assert status == 503 and "error trying to reach service: EOF" in str(body)
    pod = wait_until(lambda: v1.read_namespaced_pod("ml-engine", "ml"),
                     lambda p: restarts(p) >= 1, what="ml-engine restarted")
    assert container_status(pod).last_state.terminated.exit_code == 1
    # it starts cold and awake: with r1 awake there is no room until r1 sleeps
    assert post(api, "r1-engine", "/sleep")[0] == 200
    ready(v1, "ml-engine")
    assert sleeping(api, "ml-engine") == (200, {"is_sleeping": False})
    assert processes(cluster)["ml-engine"]["used_mib"] == int(12288 * 0.9)


def test_host_ram_for_parked_weights_is_counted(lab):
    cluster, api, v1 = lab
    # a container limit that holds the engine but not its parked weights: the kernel kills it at sleep
    cluster.patch_scenario({"models": {QWEN: {"ram_mib": 3000}}})
    start(v1, "tight", limits={"memory": "6Gi"})
    ready(v1, "tight")
    status, body = post(api, "tight", "/sleep")
    assert status == 503 and "EOF" in str(body)
    pod = wait_until(lambda: v1.read_namespaced_pod("tight", "ml"),
                     lambda p: restarts(p) >= 1, what="tight OOMKilled")
    assert container_status(pod).last_state.terminated.reason == "OOMKilled"
    assert container_status(pod).last_state.terminated.exit_code == 137
    v1.delete_namespaced_pod("tight", "ml", grace_period_seconds=0)
    wait_for(lambda: not v1.list_namespaced_pod("ml").items, what="tight gone")

    # the node's memory bounds the sum of engines and parked weights
    cluster.patch_scenario({"nodes": {WORKER: {"memory": "8Gi"}}})
    start(v1, "ml-engine")
    ready(v1, "ml-engine")
    assert post(api, "ml-engine", "/sleep")[0] == 503
    pod = wait_until(lambda: v1.read_namespaced_pod("ml-engine", "ml"),
                     lambda p: restarts(p) >= 1, what="ml-engine OOMKilled")
    assert container_status(pod).last_state.terminated.reason == "OOMKilled"


def test_old_vllm_images_have_no_http_sleep_endpoints(lab):
    cluster, api, v1 = lab
    # 0.7.2: --enable-sleep-mode exists, the HTTP routes come with 0.7.3 (/is_sleeping with 0.8.0)
    start(v1, "old", image="vllm/vllm-openai:v0.7.2")
    ready(v1, "old")
    for path, method in (("/sleep?level=1", "POST"), ("/wake_up", "POST"), ("/is_sleeping", "GET")):
        assert proxy(api, "ml", "pods", "old:8000", path, method) == (404, {"detail": "Not Found"})
    v1.delete_namespaced_pod("old", "ml", grace_period_seconds=0)
    start(v1, "mid", image="vllm/vllm-openai:v0.7.3")
    ready(v1, "mid")
    assert sleeping(api, "mid") == (404, {"detail": "Not Found"})
    assert post(api, "mid", "/sleep")[0] == 200
    v1.delete_namespaced_pod("mid", "ml", grace_period_seconds=0)

    # a scenario can take the endpoints away from any image
    cluster.patch_scenario({"images": {"vllm/vllm-openai:v0.8.5.post1": {"sleep_endpoints": False}}})
    start(v1, "patched")
    ready(v1, "patched")
    assert post(api, "patched", "/sleep") == (404, {"detail": "Not Found"})

    # before 0.7.0 the flag itself is unknown: vllm serve exits with a usage error
    start(v1, "ancient", image="vllm/vllm-openai:v0.6.6")
    pod = wait_until(lambda: v1.read_namespaced_pod("ancient", "ml"),
                     lambda p: restarts(p) >= 1, what="ancient exiting")
    assert container_status(pod).last_state.terminated.exit_code == 2
    assert "vllm serve: error: unrecognized arguments: --enable-sleep-mode" in \
        v1.read_namespaced_pod_log("ancient", "ml", previous=True)


def plugin_config(replicas, rename=False):
    text = "version: v1\nsharing:\n  timeSlicing:\n"
    if rename:
        text += "    renameByDefault: true\n"
    return text + "    resources:\n      - name: nvidia.com/gpu\n        replicas: %d\n" % replicas


def plugin_daemonset(config_map="nvidia-device-plugin-config"):
    """The device plugin as NVIDIA's static manifest runs it, reading its config from a ConfigMap."""
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
                     "template": {"metadata": {"labels": {"name": "nvidia-device-plugin-ds"}},
                                  "spec": {"runtimeClassName": "nvidia",
                                           "nodeSelector": {"nvidia.com/gpu.present": "true"},
                                           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                            "effect": "NoSchedule"},
                                                           {"key": "gpu", "operator": "Exists",
                                                            "effect": "NoSchedule"}],
                                           "containers": [{"name": "nvidia-device-plugin-ctr", "image": PLUGIN_IMAGE,
                                                           "env": [{"name": "CONFIG_FILE",
                                                                    "value": "/config/config.yaml"}],
                                                           "volumeMounts": [{"name": "config",
                                                                             "mountPath": "/config"}]}],
                                           "volumes": [{"name": "config", "configMap": {"name": config_map}}]}}}}


def node_gpu(v1):
    node = v1.read_node(WORKER)
    labels = node.metadata.labels
    return ({k: v for k, v in node.status.allocatable.items() if k.startswith("nvidia.com/")},
            labels["nvidia.com/gpu.replicas"], labels["nvidia.com/gpu.sharing-strategy"],
            labels["nvidia.com/gpu.product"])


def test_the_device_plugin_config_makes_the_gpu_time_sliced(lab):
    _cluster, api, v1 = lab
    apps = client.AppsV1Api(api)
    assert node_gpu(v1) == ({"nvidia.com/gpu": "1"}, "1", "none", "NVIDIA-GeForce-RTX-3060")
    start(v1, "first", gpu=True)
    ready(v1, "first")
    start(v1, "second", model=R1, gpu=True)
    wait_for(lambda: "Insufficient nvidia.com/gpu" in str(v1.read_namespaced_pod("second", "ml").status.conditions),
             what="second pending for lack of nvidia.com/gpu")

    v1.create_namespaced_config_map("kube-system", {"metadata": {"name": "nvidia-device-plugin-config"},
                                                    "data": {"config.yaml": plugin_config(2)}})
    apps.create_namespaced_daemon_set("kube-system", plugin_daemonset())
    shared = ({"nvidia.com/gpu": "2"}, "2", "time-slicing", "NVIDIA-GeForce-RTX-3060-SHARED")
    wait_for(lambda: node_gpu(v1) == shared, what="the node advertising 2 time-sliced GPUs")
    wait_for(lambda: v1.read_namespaced_pod("second", "ml").spec.node_name == WORKER, what="second scheduled")
    status = apps.read_namespaced_daemon_set("nvidia-device-plugin-daemonset", "kube-system").status
    assert (status.desired_number_scheduled, status.number_ready) == (1, 1)

    # renamed: the shared resource has its own name and the product keeps its own
    v1.patch_namespaced_config_map("nvidia-device-plugin-config", "kube-system",
                                   {"data": {"config.yaml": plugin_config(4, rename=True)}})
    wait_for(lambda: node_gpu(v1) == ({"nvidia.com/gpu": "0", "nvidia.com/gpu.shared": "4"}, "4", "time-slicing",
                                      "NVIDIA-GeForce-RTX-3060"), what="nvidia.com/gpu.shared: 4")

    # without the plugin the GPU is one again
    apps.delete_namespaced_daemon_set("nvidia-device-plugin-daemonset", "kube-system")
    wait_for(lambda: node_gpu(v1) == ({"nvidia.com/gpu": "1"}, "1", "none", "NVIDIA-GeForce-RTX-3060"),
             what="one GPU again")


def test_a_broken_plugin_config_advertises_no_gpu(lab):
    _cluster, api, v1 = lab
    v1.create_namespaced_config_map("kube-system", {"metadata": {"name": "nvidia-device-plugin-config"},
                                                    "data": {"config.yaml": "version: v2\n"}})
    client.AppsV1Api(api).create_namespaced_daemon_set("kube-system", plugin_daemonset())
    wait_for(lambda: node_gpu(v1)[0] == {"nvidia.com/gpu": "0"}, what="no GPU advertised")
    events = [e.message for e in v1.list_namespaced_event("kube-system").items]
    assert "error starting plugins: unable to load config: unknown version: 'v2' (the plugin reads version: v1)" \
        in events


def test_the_scenario_can_start_with_a_time_sliced_gpu(kube_sim_factory):
    cluster = kube_sim_factory(scenario={"nodes": {WORKER: {"gpu": {"time_slicing": {"replicas": 3}}}}}, speed=100)
    v1 = client.CoreV1Api(cluster.api_client())
    wait_for(lambda: node_gpu(v1) == ({"nvidia.com/gpu": "3"}, "3", "time-slicing", "NVIDIA-GeForce-RTX-3060-SHARED"),
             what="three time-sliced GPUs")


@pytest.mark.parametrize("patch, text", [
    ({"nodes": {WORKER: {"gpu": {"host_link_gib_per_s": 0}}}},
     "nodes.k3s-gpu-worker.gpu.host_link_gib_per_s is 0; it must be a number greater than 0"),
    ({"nodes": {WORKER: {"gpu": {"time_slicing": {"replicas": 1}}}}},
     "nodes.k3s-gpu-worker.gpu.time_slicing must be {replicas: N} with an integer N of at least 2"),
    ({"models": {QWEN: {"wake_oom": "explode"}}}, "models.%s.wake_oom is 'explode'; it must be one of asleep, crash" % QWEN),
    ({"models": {QWEN: {"weights_mib": -1}}}, "models.%s.weights_mib is -1; it must be a number at least 0" % QWEN),
])
def test_bad_sleep_and_sharing_settings_are_refused_and_change_nothing(kube_sim_factory, patch, text):
    cluster = kube_sim_factory(speed=100)
    before = cluster.scenario()
    with pytest.raises(RuntimeError) as err:
        cluster.patch_scenario(patch)
    assert "400" in str(err.value) and text in str(err.value)
    assert cluster.scenario() == before

"""The simulated scheduler: GPU capacity, node selectors, affinity, taints and its messages."""

import pytest
from kubernetes import client

from tests.kube_sim.version import k3s_version
from tests.kube_sim.world_testing import condition, gpu_pod_spec, plain_pod, vllm_container, wait_for, wait_until

pytestmark = pytest.mark.sim_only
PREEMPTION = "preemption: 0/2 nodes are available: "


@pytest.fixture
def cluster(kube_sim_factory):
    return kube_sim_factory(speed=100)


@pytest.fixture
def v1(cluster):
    api = client.CoreV1Api(cluster.api_client())
    api.create_namespace({"metadata": {"name": "ml"}})
    return api


def gpu_pod(name, **kw):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": gpu_pod_spec(vllm_container(**kw))}


def unschedulable(v1, name):
    def check():
        pod = v1.read_namespaced_pod(name, "ml")
        cond = condition(pod, "PodScheduled") if pod.status.conditions else None
        return cond is not None and cond.status == "False" and cond
    return wait_for(check, what="%s to be unschedulable" % name)


def test_second_gpu_pod_waits_for_the_gpu_until_the_first_is_gone(cluster, v1):
    # vLLM takes 150 simulated seconds to shut down here, so the terminating pod is seen holding the GPU
    cluster.patch_scenario({"images": {"vllm/vllm-openai:v0.8.5.post1": {"shutdown_seconds": 150}}})
    v1.create_namespaced_pod("ml", gpu_pod("first"))
    wait_for(lambda: v1.read_namespaced_pod("first", "ml").spec.node_name, what="the first pod to be bound")
    v1.create_namespaced_pod("ml", gpu_pod("second"))
    cond = unschedulable(v1, "second")
    assert cond.reason == "Unschedulable"
    assert cond.message == ("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) didn't match Pod's "
                            "node affinity/selector. " + PREEMPTION + "1 No preemption victims found for incoming "
                            "pod, 1 Preemption is not helpful for scheduling.")
    events = [e for e in v1.list_namespaced_event("ml").items if e.involved_object.name == "second"]
    assert [(e.type, e.reason, e.source.component) for e in events] == \
        [("Warning", "FailedScheduling", "default-scheduler")]
    assert events[0].message == cond.message

    v1.delete_namespaced_pod("first", "ml")
    # the terminating first pod still holds the GPU: the second pod stays Pending while it shuts down
    terminating = v1.read_namespaced_pod("first", "ml")
    assert terminating.metadata.deletion_timestamp is not None
    assert v1.read_namespaced_pod("second", "ml").spec.node_name is None
    wait_for(lambda: v1.read_namespaced_pod("second", "ml").spec.node_name == "k3s-gpu-worker",
             what="the second pod to get the GPU")
    assert not [p for p in v1.list_namespaced_pod("ml").items if p.metadata.name == "first"]
    reasons = [e.reason for e in v1.list_namespaced_event("ml").items if e.involved_object.name == "second"]
    assert "Scheduled" in reasons


def test_untolerated_taint_and_affinity_messages(v1):
    spec = gpu_pod_spec(vllm_container())
    spec.pop("tolerations")
    v1.create_namespaced_pod("ml", {"metadata": {"name": "no-toleration"}, "spec": spec})
    cond = unschedulable(v1, "no-toleration")
    assert cond.message == ("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                            "1 node(s) had untolerated taint {gpu: true}. " + PREEMPTION +
                            "2 Preemption is not helpful for scheduling.")

    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["16000"]}]}]}}}
    v1.create_namespaced_pod("ml", plain_pod("big-gpu", affinity=affinity))
    cond = unschedulable(v1, "big-gpu")
    assert cond.message.startswith("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                                   "1 node(s) had untolerated taint {gpu: true}.")
    v1.patch_namespaced_pod("big-gpu", "ml", {"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}})
    message = wait_until(lambda: condition(v1.read_namespaced_pod("big-gpu", "ml"), "PodScheduled"),
                         lambda c: "untolerated" not in c.message).message
    assert message.startswith("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.")

    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"] = ["12000"]
    v1.create_namespaced_pod("ml", plain_pod("fits", affinity=affinity, tolerations=[
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]))
    wait_for(lambda: v1.read_namespaced_pod("fits", "ml").spec.node_name == "k3s-gpu-worker",
             what="affinity to the GPU node")
    v1.create_namespaced_pod("ml", plain_pod("anywhere"))
    pod = wait_until(lambda: v1.read_namespaced_pod("anywhere", "ml"), lambda p: p.spec.node_name)
    assert pod.spec.node_name == "k3s-server"


def test_gpu_node_shape(v1):
    node = v1.read_node("k3s-gpu-worker")
    labels = node.metadata.labels
    expected = {
        "gpu": "true", "nvidia.com/gpu": "true", "kubernetes.io/hostname": "k3s-gpu-worker",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-3060", "nvidia.com/gpu.memory": "12288",
        "nvidia.com/gpu.count": "1", "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "6",
        "nvidia.com/cuda.driver-version.major": "570", "nvidia.com/cuda.driver-version.minor": "195",
        "nvidia.com/cuda.driver-version.revision": "03", "nvidia.com/cuda.driver-version.full": "570.195.03",
        "nvidia.com/cuda.runtime-version.major": "12", "nvidia.com/cuda.runtime-version.minor": "8",
        "nvidia.com/cuda.runtime-version.full": "12.8", "nvidia.com/cuda.driver.major": "570",
        "nvidia.com/cuda.driver.minor": "195", "nvidia.com/cuda.driver.rev": "03",
        "nvidia.com/cuda.runtime.major": "12", "nvidia.com/cuda.runtime.minor": "8"}
    assert {k: labels.get(k) for k in expected} == expected
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("gpu", "true", "NoSchedule")]
    assert node.status.capacity["nvidia.com/gpu"] == "1" and node.status.allocatable["nvidia.com/gpu"] == "1"
    assert node.status.node_info.kubelet_version == k3s_version()   # what the gpu_worker role installs
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    ready = [c for c in node.status.conditions if c.type == "Ready"][0]
    assert (ready.status, ready.reason) == ("True", "KubeletReady")
    server = v1.read_node("k3s-server")
    assert server.metadata.labels["node-role.kubernetes.io/control-plane"] == "true"
    assert "nvidia.com/gpu" not in server.status.capacity
    runtime = client.NodeV1Api(v1.api_client).read_runtime_class("nvidia")
    assert runtime.handler == "nvidia"

"""One object the simulated controllers cannot handle never stops the others.

The bad objects are created through the API with the real client, as a test fixture, a kubelet
or a user would create them; the proof is another pod that still gets scheduled and started.
"""

import logging

import pytest
from kubernetes import client

from tests.kube_sim.world_testing import (gpu_pod_spec, is_ready, plain_pod, vllm_container, wait_for,
                                          wait_until)

pytestmark = pytest.mark.sim_only


@pytest.fixture
def cluster(kube_sim_factory):
    return kube_sim_factory(speed=100)


@pytest.fixture
def v1(cluster):
    api = client.CoreV1Api(cluster.api_client())
    api.create_namespace({"metadata": {"name": "ml"}})
    return api


def _running_pod(v1, name):
    return wait_until(lambda: v1.read_namespaced_pod(name, "ml"), lambda p: p.status.phase == "Running",
                      what="pod %s to run" % name)


def test_a_node_with_metadata_and_a_ready_condition_only_keeps_no_pod_pending(v1):
    # the node a test fixture or a bare kubelet registers: no spec, no capacity
    v1.create_node({"metadata": {"name": "bare-node"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    v1.create_namespaced_pod("ml", plain_pod("after"))
    pod = _running_pod(v1, "after")
    # a node that advertises no pod capacity takes no pod, as the scheduler's NodeResourcesFit decides
    assert pod.spec.node_name in ("k3s-server", "k3s-gpu-worker")


def test_a_node_the_scheduler_cannot_read_is_reported_once_and_the_gpu_pod_starts_elsewhere(cluster, v1, caplog):
    caplog.set_level(logging.ERROR, logger="kube_sim")
    # "1k" is a valid quantity for the apiserver; the simulated scheduler only counts whole numbers
    labels = {"gpu": "true", "nvidia.com/gpu": "true", "nvidia.com/gpu.present": "true"}
    v1.create_node({"metadata": {"name": "odd-gpu-node", "labels": labels},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "allocatable": {"nvidia.com/gpu": "1k", "pods": "110"}}})
    v1.create_namespaced_pod("ml", {"metadata": {"name": "vllm"}, "spec": gpu_pod_spec(vllm_container())})
    pod = wait_until(lambda: v1.read_namespaced_pod("vllm", "ml"), is_ready, what="the vLLM pod to be Ready")
    assert pod.spec.node_name == "k3s-gpu-worker"

    # more passes of the scheduler over the same unchanged node
    for index in range(3):
        v1.create_namespaced_pod("ml", {"metadata": {"name": "gpu-%d" % index},
                                        "spec": gpu_pod_spec(vllm_container())})
    for index in range(3):
        wait_for(lambda index=index: (v1.read_namespaced_pod("gpu-%d" % index, "ml").status.conditions or []),
                 what="gpu-%d to be looked at by the scheduler" % index)

    events = [e for e in v1.list_namespaced_event("default").items
              if e.involved_object.name == "odd-gpu-node" and e.reason == "SimulatorError"]
    assert len(events) == 1 and events[0].type == "Warning" and events[0].count == 1
    assert events[0].message == ("The simulated default-scheduler could not handle this Node: "
                                 "ValueError: invalid literal for int() with base 10: '1k'")
    logged = [r for r in caplog.records if "odd-gpu-node" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]

    # the waiting GPU pods say why, counting the node the simulator could not evaluate
    message = v1.read_namespaced_pod("gpu-0", "ml").status.conditions[0].message
    assert "1 node(s) the simulated scheduler could not evaluate (see their Warning events)" in message
    assert "1 Insufficient nvidia.com/gpu" in message

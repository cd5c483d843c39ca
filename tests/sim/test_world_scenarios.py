"""Scenario files: the bundled reference lab, the ready-made failure scenarios and run-time patches."""

import glob
import os

import pytest
import yaml
from kubernetes import client, utils

from tests.kube_sim.scenario import ScenarioError, evaluate_require, load_scenario, merge_scenario
from tests.kube_sim.world_testing import R1, condition, vllm_container, vllm_deployment, wait_for, wait_until

SCENARIOS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "kube_sim", "scenarios", "*.yaml")))


def test_reference_lab_defaults():
    data = load_scenario(None).data
    worker = [n for n in data["nodes"] if n["name"] == "k3s-gpu-worker"][0]
    assert worker["gpu"]["product"] == "NVIDIA GeForce RTX 3060" and worker["gpu"]["memory_mib"] == 12288
    assert worker["gpu"]["driver_version"] == "570.195.03" and worker["gpu"]["cuda_version"] == "12.8"
    assert data["models"]["Qwen/Qwen3-8B-AWQ"]["vram_mib"] == 10820
    assert data["images"]["vllm/vllm-openai:v0.8.5.post1"]["cuda_version"] == "12.4.1"
    assert data["faults"] == {"error_rate": 0.0, "error_status": 503, "latency_ms": 0, "drop_watch_rate": 0.0,
                              "seed": 1, "forbid": []}


# The seed lab's ML manifest, as its vLLM README applies it: the worker chosen by nvidia.com/gpu=true.
SEED_ML_MANIFEST = """
apiVersion: v1
kind: Namespace
metadata:
  name: ml
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: vllm-server
  namespace: ml
spec:
  replicas: 1
  selector:
    matchLabels: {app: vllm-server}
  template:
    metadata:
      labels: {app: vllm-server}
    spec:
      runtimeClassName: nvidia
      nodeSelector:
        nvidia.com/gpu: "true"
      tolerations:
        - {key: gpu, operator: Equal, value: "true", effect: NoSchedule}
      containers:
        - name: vllm-server
          image: vllm/vllm-openai:v0.8.5.post1
          args: ["--model", "Qwen/Qwen3-8B-AWQ", "--port", "8000"]
          ports:
            - containerPort: 8000
          readinessProbe:
            httpGet: {path: /health, port: 8000}
          resources:
            limits:
              nvidia.com/gpu: "1"
"""


def test_reference_lab_is_the_seed_lab():
    nodes = {n["name"]: n for n in load_scenario(None).data["nodes"]}
    assert set(nodes) == {"k3s-server", "k3s-gpu-worker"}
    worker = nodes["k3s-gpu-worker"]
    assert worker["labels"]["nvidia.com/gpu"] == "true"
    assert worker["taints"] == [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]


@pytest.mark.sim_only
def test_the_seed_labs_ml_manifest_runs_on_the_reference_lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    api = cluster.api_client()
    utils.create_from_yaml(api, yaml_objects=list(yaml.safe_load_all(SEED_ML_MANIFEST)))
    v1 = client.CoreV1Api(api)

    def ready_pod():
        for pod in v1.list_namespaced_pod("ml", label_selector="app=vllm-server").items:
            if condition(pod, "Ready") is not None and condition(pod, "Ready").status == "True":
                return pod
        return None
    pod = wait_for(ready_pod, what="the seed's vllm-server pod to be Ready")
    assert pod.spec.node_name == "k3s-gpu-worker"
    deployment = wait_until(lambda: client.AppsV1Api(api).read_namespaced_deployment("vllm-server", "ml"),
                            lambda d: d.status.available_replicas == 1, what="the Deployment to be available")
    assert deployment.status.ready_replicas == 1


@pytest.mark.parametrize("path", SCENARIOS, ids=[os.path.basename(p) for p in SCENARIOS])
def test_ready_made_scenarios_load(path):
    data = load_scenario(path).data
    assert {n["name"] for n in data["nodes"]} == {"k3s-server", "k3s-gpu-worker"}
    assert "vllm/vllm-openai:v0.8.5.post1" in data["images"]


def test_bad_scenarios_are_refused_with_a_clear_sentence(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes: [{labels: {}}]\n")
    with pytest.raises(ScenarioError, match="scenario node #1 needs a name"):
        load_scenario(str(path))
    with pytest.raises(ScenarioError, match="cannot read the scenario file"):
        load_scenario(str(tmp_path / "missing.yaml"))
    with pytest.raises(ScenarioError, match="every node in a scenario patch needs a name"):
        merge_scenario(load_scenario(None).data, {"nodes": [{"ready": False}]})
    path.write_text("extends: default\nfaults: {forbid: [create]}\n")
    with pytest.raises(ScenarioError, match='faults.forbid must be a list of "VERB RESOURCE" rules'):
        load_scenario(str(path))


def test_requirement_evaluation_like_nvidia_container_cli():
    rtx = {"product": "NVIDIA GeForce RTX 3060", "driver_version": "570.195.03", "cuda_version": "12.8",
           "compute": "8.6"}
    assert evaluate_require("cuda>=12.4 brand=tesla,driver>=470,driver<471", rtx) is None
    assert evaluate_require("cuda>=12.9 brand=tesla,driver>=570,driver<571", rtx) == "cuda>=12.9"
    assert evaluate_require("cuda>=12.9 brand=geforcertx,driver>=570,driver<571", rtx) is None
    assert evaluate_require("cuda>=12.0,arch>=9.0", rtx) == "arch>=9.0"
    assert evaluate_require("", rtx) is None


@pytest.mark.sim_only
def test_no_nvidia_runtime_rejects_pods_of_the_runtime_class(kube_sim_factory):
    path = [p for p in SCENARIOS if p.endswith("no-nvidia-runtime.yaml")][0]
    cluster = kube_sim_factory(speed=100, scenario=path)
    api = cluster.api_client()
    v1, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert not client.NodeV1Api(api).list_runtime_class().items
    v1.create_namespace({"metadata": {"name": "ml"}})
    apps.create_namespaced_deployment("ml", vllm_deployment())
    event = wait_for(lambda: [e for e in v1.list_namespaced_event("ml").items if e.reason == "FailedCreate"])[0]
    assert event.involved_object.kind == "ReplicaSet" and event.type == "Warning"
    assert event.message.endswith('is forbidden: pod rejected: RuntimeClass "nvidia" not found')
    assert not v1.list_namespaced_pod("ml").items
    dep = wait_until(lambda: apps.read_namespaced_deployment("vllm-server", "ml"),
                     lambda d: condition(d, "ReplicaFailure") is not None, what="ReplicaFailure")
    failure = condition(dep, "ReplicaFailure")
    assert (failure.status, failure.reason) == ("True", "FailedCreate")
    assert failure.message.endswith('pod rejected: RuntimeClass "nvidia" not found')


@pytest.mark.sim_only
def test_cold_cache_pulls_the_image_and_downloads_the_model(kube_sim_factory):
    path = [p for p in SCENARIOS if p.endswith("cold-cache.yaml")][0]
    cluster = kube_sim_factory(speed=100, scenario=path)
    v1 = client.CoreV1Api(cluster.api_client())
    v1.create_namespace({"metadata": {"name": "ml"}})
    client.AppsV1Api(v1.api_client).create_namespaced_deployment("ml", vllm_deployment(
        container=vllm_container(R1)))
    pod = wait_for(lambda: [p for p in v1.list_namespaced_pod("ml").items
                            if p.status.conditions and any(c.type == "Ready" and c.status == "True"
                                                           for c in p.status.conditions)], what="Ready")[0]
    messages = [e.message for e in v1.list_namespaced_event("ml").items if e.involved_object.name == pod.metadata.name]
    assert 'Pulling image "vllm/vllm-openai:v0.8.5.post1"' in messages
    assert "Time spent downloading weights for %s" % R1 in v1.read_namespaced_pod_log(pod.metadata.name, "ml")
    worker = [n for n in cluster.scenario()["nodes"] if n["name"] == "k3s-gpu-worker"][0]
    assert worker["images_present"] == ["vllm/vllm-openai:v0.8.5.post1"] and worker["cached_models"] == [R1]

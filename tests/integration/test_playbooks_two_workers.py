"""A second GPU worker is a variable change (issue: "don't assume one GPU worker").

The reference lab plus a second NUC, k3s-gpu-worker-2, and a second item in vllm_instances:
site.yml deploys one Deployment per worker, each pinned to its node, each in its own default
mode, each with its own Service and client ConfigMap; switch_mode.yml switches one of them
(-e instance=...) without touching the other, or all of them.
"""
import json

import pytest

from tests.integration.test_playbooks import NS, ansible_playbook, recap, start_sim, stop_sim

pytestmark = [pytest.mark.slow, pytest.mark.sim_only]

SCENARIO = """
extends: default
nodes:
  - name: k3s-gpu-worker-2
    role: agent
    ip: 192.168.1.21
    labels: {gpu: "true"}
    taints: [{key: gpu, value: "true", effect: NoSchedule}]
    images_present: [vllm/vllm-openai:v0.8.5.post1]
    cached_models: [Qwen/Qwen3-8B-AWQ, casperhansen/deepseek-r1-distill-qwen-7b-awq]
    gpu: {product: NVIDIA GeForce RTX 3060, memory_mib: 12288, driver_version: 570.195.03}
"""
INSTANCES = [
    {"name": "vllm-server", "service_name": "vllm-api",
     "node_selector": {"kubernetes.io/hostname": "k3s-gpu-worker", "nvidia.com/gpu.present": "true"}},
    {"name": "vllm-server-2", "service_name": "vllm-api-2", "default_mode": "r1",
     "node_selector": {"kubernetes.io/hostname": "k3s-gpu-worker-2", "nvidia.com/gpu.present": "true"}},
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    (tmp / "scenario.yaml").write_text(SCENARIO)
    (tmp / "vars.json").write_text(json.dumps({"vllm_instances": INSTANCES}))
    proc, cluster = start_sim(tmp, scenario=tmp / "scenario.yaml")
    try:
        yield cluster, "@%s" % (tmp / "vars.json")
    finally:
        stop_sim(proc)


def state(cluster, name):
    """(mode label, replicas, [(pod uid, node) of live pods]) of one Deployment."""
    dep = cluster.apps.read_namespaced_deployment(name, NS)
    pods = cluster.core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=%s" % name).items
    return (dep.metadata.labels["gpu-mode"], dep.spec.replicas,
            sorted((p.metadata.uid, p.spec.node_name) for p in pods if not p.metadata.deletion_timestamp))


def test_site_deploys_one_deployment_per_worker_in_its_default_mode(lab):
    cluster, extra = lab
    rc, out = ansible_playbook(cluster, "site.yml", "-e", extra)
    mode, replicas, pods = state(cluster, "vllm-server")
    assert (mode, replicas, [pod[1] for pod in pods]) == ("ml", 1, ["k3s-gpu-worker"])
    mode, replicas, pods = state(cluster, "vllm-server-2")
    assert (mode, replicas, [pod[1] for pod in pods]) == ("r1", 1, ["k3s-gpu-worker-2"])
    assert cluster.core.read_namespaced_service("vllm-api-2", NS).spec.selector[
        "app.kubernetes.io/instance"] == "vllm-server-2"
    first = cluster.core.read_namespaced_config_map("llm-fallback-config", NS).data
    second = cluster.core.read_namespaced_config_map("vllm-server-2-fallback-config", NS).data
    assert (first["VLLM_MODE"], second["VLLM_MODE"]) == ("ml", "r1")
    assert second["VLLM_ENDPOINT"] == "http://vllm-api-2.ml.svc.cluster.local:8000"
    rc, out = ansible_playbook(cluster, "site.yml", "-e", extra)
    assert recap(out)["changed"] == 0, out[-3000:]


def test_switching_one_instance_leaves_the_other_alone(lab):
    cluster, extra = lab
    before = state(cluster, "vllm-server")
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=gaming", "-e", "instance=vllm-server-2", "-e", extra)
    assert state(cluster, "vllm-server-2") == ("gaming", 0, [])
    assert state(cluster, "vllm-server") == before          # same pod: not restarted

    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=status", "-e", extra)
    assert "vllm-server: mode ml" in out and "vllm-server-2: mode gaming" in out, out[-3000:]

    # every instance: the first is already in ml (nothing restarted), the second comes back in ml
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml", "-e", extra)
    assert state(cluster, "vllm-server") == before
    mode, replicas, pods = state(cluster, "vllm-server-2")
    assert (mode, replicas, [pod[1] for pod in pods]) == ("ml", 1, ["k3s-gpu-worker-2"])


def test_an_unknown_instance_is_refused_naming_the_instances(lab):
    cluster, extra = lab
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1", "-e", "instance=vllm-server-3",
                               "-e", extra, check=False)
    assert rc != 0
    text = " ".join(out.split())
    assert 'Unknown instance "vllm-server-3": choose one of vllm-server, vllm-server-2' in text
    assert "nothing was changed" in text

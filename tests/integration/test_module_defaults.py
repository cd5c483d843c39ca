"""One module_defaults entry for the cluster connection of both collections.

meta/runtime.yml's action group ``homelab.gpu.k8s`` extends kubernetes.core's ``k8s`` group, so
``module_defaults: {group/homelab.gpu.k8s: {kubeconfig: ..., context: ...}}`` reaches
kubernetes.core.k8s_info and homelab.gpu.vllm_mode_info alike. The plays run with no KUBECONFIG
and a HOME without ~/.kube/config: the connection can only come from module_defaults.
"""
import sys

import yaml
from kubernetes import client

NS = "ml"


def plays(kubeconfig, context, defaults=True):
    play = {"name": "connection from module_defaults", "hosts": "localhost", "connection": "local",
            "gather_facts": False, "vars": {"ansible_python_interpreter": sys.executable}, "tasks": [
                {"name": "nodes", "kubernetes.core.k8s_info": {"kind": "Node"}, "ignore_errors": True},
                {"name": "status", "homelab.gpu.vllm_mode_info": {
                    "modes": {"ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1"},
                              "gaming": {"replicas": 0}},
                    "registry": {"offline": True}}, "ignore_errors": True}]}
    if defaults:
        play["module_defaults"] = {"group/homelab.gpu.k8s": {"kubeconfig": kubeconfig, "context": context}}
    return [play]


def test_one_module_defaults_group_sets_the_connection_of_both_collections(
        playbook, kube_sim, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("K8S_AUTH_KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    client.CoreV1Api(kube_sim.api_client()).create_namespace({"metadata": {"name": NS}})
    with open(kube_sim.kubeconfig) as handle:
        context = yaml.safe_load(handle)["current-context"]

    run = playbook.run(plays(str(kube_sim.kubeconfig), context))
    nodes, status = run.result("nodes"), run.result("status")
    assert not nodes.get("failed"), nodes.get("msg")
    assert "k3s-gpu-worker" in [n["metadata"]["name"] for n in nodes["resources"]]
    assert not status.get("failed"), status.get("msg")
    assert status["available_modes"] == ["gaming", "ml"] and status["api_requests"]["requests"] > 0, status

    without = playbook.run(plays(str(kube_sim.kubeconfig), context, defaults=False))
    assert without.result("nodes").get("failed") is True
    assert without.result("status").get("failed") is True

    wrong = playbook.run(plays(str(kube_sim.kubeconfig), "no-such-context"))
    assert wrong.result("status").get("failed") is True
    assert "no-such-context" in wrong.result("status")["msg"]

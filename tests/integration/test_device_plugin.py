"""The vllm role's opt-in NVIDIA device plugin with time-slicing (tasks/device_plugin.yml).

Real ansible-playbook runs the role's task file against the simulated cluster, whose GPU worker
advertises ``nvidia.com/gpu`` as the device plugin the role deployed says (the ConfigMap's
``sharing.timeSlicing`` replicas): the collection's own setup is what lets two vLLM pods share the
GPU. Writes are counted with the simulator's request log.
"""
import pytest
import yaml
from kubernetes import client

from tests.kube_sim.world_testing import QWEN, R1, gpu_pod_spec, vllm_container, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sim_only]

WORKER = "k3s-gpu-worker"
APPLY = "homelab.gpu.vllm : Apply the device plugin's ConfigMap and DaemonSet"


def plugin_play(**role_vars):
    return [{"name": "Deploy the device plugin", "ansible.builtin.include_role": {
        "name": "homelab.gpu.vllm", "tasks_from": "device_plugin.yml"},
        "vars": dict({"vllm_device_plugin_enabled": True}, **role_vars)}]


def writes(cluster):
    return [e for e in cluster.requests()["log"] if e["method"] not in ("GET", "HEAD") and
            "dryRun" not in (e.get("query") or "")]


def advertised(core):
    node = core.read_node(WORKER)
    return node.status.allocatable.get("nvidia.com/gpu"), node.metadata.labels.get("nvidia.com/gpu.replicas")


def changed_tasks(run):
    return [t["name"] for t in run.tasks if t["result"].get("changed")]


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=50)
    api = cluster.api_client()
    return cluster, client.CoreV1Api(api), client.AppsV1Api(api)


def test_the_plugin_shares_the_gpu_and_a_rerun_changes_nothing(lab, playbook):
    cluster, core, apps = lab
    assert advertised(core) == ("1", "1")
    run = playbook.run(plugin_play(vllm_device_plugin_replicas=3), kubeconfig=cluster.kubeconfig)
    assert run.rc == 0, run.stdout[-3000:]
    config = yaml.safe_load(core.read_namespaced_config_map("nvidia-device-plugin-config", "kube-system")
                            .data["config.yaml"])
    assert config == {"version": "v1", "sharing": {"timeSlicing": {
        "failRequestsGreaterThanOne": True, "resources": [{"name": "nvidia.com/gpu", "replicas": 3}]}}}
    spec = apps.read_namespaced_daemon_set("nvidia-device-plugin-daemonset", "kube-system").spec.template.spec
    assert spec.runtime_class_name == "nvidia"
    assert spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert {(t.key, t.effect) for t in spec.tolerations} == {("nvidia.com/gpu", "NoSchedule"), ("gpu", "NoSchedule")}
    assert spec.containers[0].image == "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
    assert advertised(core) == ("3", "3")
    # every field the role wrote is one Kubernetes 1.32 knows (the API server warns of unknown fields)
    applies = [e for e in cluster.requests()["log"] if e["method"] == "PATCH" and "device-plugin" in e["path"]]
    assert len(applies) == 2 and [e.get("warnings") for e in applies] == [None, None], applies

    # two vLLM pods that each ask for one GPU now both land on the one card
    core.create_namespace({"metadata": {"name": "ml"}})
    for name, model in (("ml-engine", QWEN), ("r1-engine", R1)):
        container = vllm_container(model, extra_args=["--enable-sleep-mode"], probes=False)
        core.create_namespaced_pod("ml", {"metadata": {"name": name}, "spec": gpu_pod_spec(container)})
    wait_for(lambda: all(p.spec.node_name == WORKER for p in core.list_namespaced_pod("ml").items),
             what="both pods scheduled")

    versions = (core.read_namespaced_config_map("nvidia-device-plugin-config", "kube-system").metadata.resource_version,
                apps.read_namespaced_daemon_set("nvidia-device-plugin-daemonset", "kube-system").metadata.resource_version)
    again = playbook.run(plugin_play(vllm_device_plugin_replicas=3), kubeconfig=cluster.kubeconfig)
    assert again.rc == 0 and changed_tasks(again) == []
    # the applies change nothing: the objects keep their resourceVersion
    assert versions == (core.read_namespaced_config_map("nvidia-device-plugin-config", "kube-system").metadata.resource_version,
                        apps.read_namespaced_daemon_set("nvidia-device-plugin-daemonset", "kube-system").metadata.resource_version)


def test_check_mode_shows_the_diff_and_writes_nothing(lab, playbook):
    cluster, core, _apps = lab
    cluster.reset_requests()
    run = playbook.run(plugin_play(vllm_device_plugin_replicas=2), kubeconfig=cluster.kubeconfig, check=True,
                       diff=True)
    assert run.rc == 0, run.stdout[-3000:]
    assert APPLY in changed_tasks(run)
    assert writes(cluster) == []
    assert advertised(core) == ("1", "1")

    assert playbook.run(plugin_play(vllm_device_plugin_replicas=2), kubeconfig=cluster.kubeconfig).rc == 0
    run = playbook.run(plugin_play(vllm_device_plugin_replicas=4), kubeconfig=cluster.kubeconfig, check=True,
                       diff=True)
    diffs = [item.get("diff") for item in run.result(APPLY)["results"]]
    assert "replicas: 4" in str(diffs) and "replicas: 2" in str(diffs)
    assert advertised(core) == ("2", "2")


def test_another_plugin_in_the_cluster_is_refused_with_zero_writes(lab, playbook):
    cluster, core, apps = lab
    core.create_namespace({"metadata": {"name": "nvidia-device-plugin"}})
    apps.create_namespaced_daemon_set("nvidia-device-plugin", {
        "metadata": {"name": "nvdp-nvidia-device-plugin"},
        "spec": {"selector": {"matchLabels": {"app": "nvdp"}},
                 "template": {"metadata": {"labels": {"app": "nvdp"}},
                              "spec": {"containers": [{"name": "nvidia-device-plugin-ctr",
                                                       "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"}]}}}})
    cluster.reset_requests()
    run = playbook.run(plugin_play(), kubeconfig=cluster.kubeconfig)
    assert run.rc != 0
    message = run.result("homelab.gpu.vllm : Refuse to run a second device plugin beside the lab's own")["msg"]
    assert message == ("The cluster already runs NVIDIA's device plugin as DaemonSet "
                       "nvidia-device-plugin/nvdp-nvidia-device-plugin: set the time-slicing replicas in that plugin's "
                       "config (docs/gpu-sharing.md) and set vllm_device_plugin_enabled: false, or delete that DaemonSet "
                       "and re-run; nothing was changed.")
    assert writes(cluster) == []


def test_nodes_that_never_advertise_the_shared_gpu_are_named(lab, playbook):
    cluster, _core, _apps = lab
    run = playbook.run(plugin_play(vllm_device_plugin_node_selector={"nvidia.com/gpu.present": "true"},
                                   vllm_device_plugin_tolerations=[], vllm_device_plugin_wait_timeout=2),
                       kubeconfig=cluster.kubeconfig)
    # without the gpu toleration the plugin's pods cannot run on the tainted worker
    assert run.rc != 0
    assert run.result("homelab.gpu.vllm : Say which nodes do not advertise the shared GPU")["msg"] == (
        "After 2 s these GPU nodes do not advertise 4 nvidia.com/gpu per GPU (advertised in brackets): "
        "k3s-gpu-worker (1); check the plugin's pods (kubectl -n kube-system logs ds/nvidia-device-plugin-daemonset).")

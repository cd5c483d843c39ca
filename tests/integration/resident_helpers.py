"""What the resident-mode tests share: a simulated cluster whose GPU node advertises several
time-sliced GPU slots, with the namespace and the Service the resident pods stand behind."""
import os
import time

from kubernetes import client

NS = "ml"
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
WRITES = ("POST", "PUT", "PATCH", "DELETE")
SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)
SERVICE_SELECTOR = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-server"}


def resident_cluster(kube_sim_factory, slots, models=None):
    """A simulator at SPEED whose node advertises ``slots`` nvidia.com/gpu (time-slicing), with the
    namespace NS and the Service vllm-api; ``models``: the scenario's model entries to change."""
    cluster = kube_sim_factory(speed=SPEED)
    scenario = {"nodes": [{"name": "k3s-gpu-worker", "gpu": {"count": slots}}]}
    if models:
        scenario["models"] = models
    cluster.patch_scenario(scenario)
    api = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + 30
    while (api.read_node("k3s-gpu-worker").status.allocatable or {}).get("nvidia.com/gpu") != str(slots):
        assert time.monotonic() < deadline, "the node does not advertise %d GPU slots" % slots
        time.sleep(0.1)
    api.create_namespace({"metadata": {"name": NS}})
    api.create_namespaced_service(NS, {"metadata": {"name": "vllm-api"},
                                       "spec": {"selector": SERVICE_SELECTOR,
                                                "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
    cluster.core = api
    return cluster

"""What the resident-mode tests share: a simulated cluster whose GPU node advertises several
time-sliced GPU slots, with the namespace and the Service the resident pods stand behind, a switch
through the engine, and what the tests read back (writes, pods, a pod's proxy, who sleeps, who is
behind the Service)."""
import os
import time

from kubernetes import client

from ansible_collections.homelab.gpu.plugins.module_utils.api import Api as EngineApi
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.plugins.module_utils.run import switch as engine_switch

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


def engine_for(catalog):
    """``engine(cluster, mode, modes=None, now=time.monotonic, **options)``: one switch through the
    engine, as the gateway makes it (standard-library transport), with ``catalog`` unless ``modes``."""
    def engine(cluster, mode, modes=None, now=time.monotonic, **options):
        params = {"mode": mode, "modes": modes or catalog, "pod": POD, "registry": {"offline": True},
                  "holder": "test", "wait_timeout": None}
        params.update(options)
        api = EngineApi(HttpTransport.from_kubeconfig(cluster.kubeconfig))
        result, error = engine_switch(api, params, now=now)
        return dict(result, failed=error is not None, msg=error)
    return engine


def writes(cluster):
    return [r for r in cluster.requests()["log"] if r["method"] in WRITES and not r["path"].startswith("/_sim")]


def pods(cluster, selector="app.kubernetes.io/instance=vllm-server"):
    return [p for p in cluster.core.list_namespaced_pod(NS, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def the_pod(cluster, mode):
    found = pods(cluster, "homelab.gpu/resident=%s" % mode)
    assert len(found) == 1, [p.metadata.name for p in found]
    return found[0]


def proxy(cluster, pod, path):
    return cluster.core.connect_get_namespaced_pod_proxy_with_path(pod + ":8000", NS, path.lstrip("/"))


def sleeping(cluster, mode):
    return "true" in str(proxy(cluster, the_pod(cluster, mode).metadata.name, "is_sleeping")).lower()


def behind_service(cluster):
    """The resident modes whose pod the Service selects."""
    selector = ",".join("%s=%s" % kv for kv in SERVICE_SELECTOR.items())
    return sorted(p.metadata.labels.get("homelab.gpu/resident") or "main" for p in pods(cluster, selector))


def wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)

"""site.yml and switch_mode.yml as a user runs them: ansible-playbook from the
repository root with the demo inventory, against the simulated k3s cluster
(started through its documented entry point) or, with HOMELAB_GPU_KUBECONFIG
set, against that real cluster.

The tests of one module share one cluster and run in file order: deploy,
re-run, switch ml -> r1 -> status -> gaming -> ml, refusals, check mode.
"""
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from kubernetes import client, config

from tests.kube_sim.kubeconfig import ssl_context as kube_sim_ssl_context

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
REAL = os.environ.get("HOMELAB_GPU_KUBECONFIG")
NS = "ml"

pytestmark = pytest.mark.slow


class Cluster(object):
    def __init__(self, kubeconfig, url=None):
        self.kubeconfig = kubeconfig
        self.url = url  # the simulator's base URL (None for a real cluster)
        self._ssl_context = None
        api = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)

    # -- simulator control endpoints (sim_only tests) --
    def _sim(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/merge-patch+json"})
        with self.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def urlopen(self, request, timeout=10):
        """urllib's urlopen over the simulator's TLS with the kubeconfig's CA and client certificate."""
        if self._ssl_context is None:
            self._ssl_context = kube_sim_ssl_context(self.kubeconfig)
        return urllib.request.urlopen(request, timeout=timeout, context=self._ssl_context)

    def reset_requests(self):
        self._sim("DELETE", "/_sim/requests")

    def requests(self):
        return self._sim("GET", "/_sim/requests")["log"]

    def writes(self):
        return [r for r in self.requests() if r["method"] not in ("GET", "HEAD", "OPTIONS")
                and "dryRun" not in (r.get("query") or "")]

    def patch_scenario(self, patch):
        self._sim("PATCH", "/_sim/scenario", patch)

    def deployment(self, name="vllm-server"):
        return self.apps.read_namespaced_deployment(name, NS)

    def configmap(self, name="llm-fallback-config"):
        return self.core.read_namespaced_config_map(name, NS).data or {}

    def namespace_exists(self):
        return any(n.metadata.name == NS for n in self.core.list_namespace().items)


def start_sim(tmp_path, speed="50", scenario=None):
    kubeconfig = str(tmp_path / "kubeconfig")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kube_sim", "serve", "--kubeconfig", kubeconfig, "--speed", speed]
        + (["--scenario", str(scenario)] if scenario else []),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    while line and not line.startswith("ready "):
        line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail("the simulated cluster did not print its ready line")
    return proc, Cluster(kubeconfig, line.split()[1].strip())


def stop_sim(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if REAL:
        yield Cluster(REAL)
        return
    proc, cl = start_sim(tmp_path_factory.mktemp("sim"))
    yield cl
    stop_sim(proc)


def ansible_playbook(cluster, *args, check=True):
    """Run ansible-playbook like a user, from the repository root with its ansible.cfg."""
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_INVENTORY", None)
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook")] + list(args), cwd=ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, out[-6000:]
    return proc.returncode, out


def recap(out):
    """The PLAY RECAP counts, summed over hosts."""
    rows = re.findall(r"^\S+\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M)
    assert rows, out[-3000:]
    return {"ok": sum(int(r[0]) for r in rows), "changed": sum(int(r[1]) for r in rows),
            "failed": sum(int(r[3]) for r in rows)}


def pod_uids(cluster):
    pods = cluster.core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=vllm-server").items
    return sorted(p.metadata.uid for p in pods if not p.metadata.deletion_timestamp)


# --------------------------------------------------------------------------------------------

def test_site_deploys_vllm_in_mode_ml(cluster):
    rc, out = ansible_playbook(cluster, "site.yml")
    assert recap(out)["changed"] > 0
    assert re.search(r"vllm-server: deployed in mode ml in [\d.]+ s", out) or REAL, out[-3000:]
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml"
    assert dep.metadata.labels["app.kubernetes.io/part-of"] == "home-lab"
    assert dep.status.ready_replicas == 1
    args = dep.spec.template.spec.containers[0].args
    assert "Qwen/Qwen3-8B-AWQ" in args and "local-llm" in args
    svc = cluster.core.read_namespaced_service("vllm-api", NS)
    assert [(p.name, p.port) for p in svc.spec.ports] == [("http", 8000)]
    assert cluster.policy.read_namespaced_pod_disruption_budget("vllm-server", NS).spec.max_unavailable == 1
    data = cluster.configmap()
    assert data["VLLM_ENDPOINT"] == "http://vllm-api.ml.svc.cluster.local:8000"
    assert data["OPENAI_BASE_URL"] == "http://vllm-api.ml.svc.cluster.local:8000/v1"
    assert data["VLLM_MODE"] == "ml"
    assert "local-llm" in data["VLLM_SERVED_MODEL_NAMES"]


def test_site_rerun_changes_nothing_and_restarts_nothing(cluster):
    before = pod_uids(cluster)
    rc, out = ansible_playbook(cluster, "site.yml")
    assert recap(out)["changed"] == 0, out[-4000:]
    assert pod_uids(cluster) == before


def test_switch_to_r1_serves_the_reasoning_model_under_the_same_alias(cluster):
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1")
    assert recap(out)["changed"] >= 1
    assert re.search(r"vllm-server: switched ml -> r1 in [\d.]+ s", out), out[-3000:]
    assert re.search(r"target: met, [\d.]+ s of 90 s", out) or REAL, out[-3000:]
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "r1"
    assert dep.status.ready_replicas == 1
    args = dep.spec.template.spec.containers[0].args
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert "local-llm" in args
    data = cluster.configmap()
    assert data["VLLM_MODE"] == "r1"
    assert data["VLLM_MODEL"] == "casperhansen/deepseek-r1-distill-qwen-7b-awq"


def test_status_reports_mode_model_image_and_verdicts(cluster):
    if not REAL:
        cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=status")
    assert recap(out)["changed"] == 0
    assert "vllm-server: mode r1" in out
    assert "casperhansen/deepseek-r1-distill-qwen-7b-awq" in out
    assert "vllm/vllm-openai:v0.8.5.post1" in out
    assert re.search(r"driver 570\.\d+", out) or REAL, out[-3000:]
    # the architecture verdict per mode, beside the CUDA and VRAM verdicts
    assert "modes (CUDA / architecture / VRAM check)" in out
    assert re.search(r"\* r1: pass / pass / pass", out) or REAL, out[-3000:]
    assert re.search(r"- gaming: skipped / skipped / skipped", out), out[-3000:]
    if not REAL:
        assert "compute capability 8.6" in out
        assert cluster.writes() == []


def test_switch_to_gaming_frees_the_gpu(cluster):
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=gaming")
    assert "GPU free" in out
    dep = cluster.deployment()
    assert dep.spec.replicas == 0
    assert dep.metadata.labels["gpu-mode"] == "gaming"
    assert pod_uids(cluster) == []
    assert cluster.configmap()["VLLM_MODE"] == "gaming"


def test_switch_back_to_ml_then_same_mode_again_is_a_no_op(cluster):
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml")
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml" and dep.status.ready_replicas == 1
    before = pod_uids(cluster)
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml")
    assert recap(out)["changed"] == 0
    assert "already in mode ml, nothing changed" in out
    assert pod_uids(cluster) == before


@pytest.mark.parametrize("extra, expected", [
    (["-e", "mode=turbo"], 'Unknown mode "turbo": choose one of gaming, idle, ml, r1 or status'),
    ([], "No mode given: choose one of gaming, idle, ml, r1 or status"),
])
def test_unknown_or_missing_mode_is_refused_before_any_api_call(cluster, extra, expected):
    if not REAL:
        cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", *extra, check=False)
    assert rc != 0
    assert expected in re.sub(r"\s+", " ", out)
    assert "nothing was changed" in out
    if not REAL:
        assert cluster.requests() == []
    assert cluster.deployment().metadata.labels["gpu-mode"] == "ml"


@pytest.mark.parametrize("entry, name, expected", [
    ({"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1", "imgae": "typo"}, "ml2",
     "mode 'ml2' has unknown setting(s) imgae"),
    ({"replicas": 0}, "r1-", "mode name 'r1-' is not allowed: a mode name is a Kubernetes label value"),
    ({"replicas": 1, "image": "vllm/vllm-openai:v0.8.5.post1"}, "half", "mode 'half' serves a model"),
    ({"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1", "target_seconds": 200}, "slow",
     "mode 'slow': target_seconds (200) is longer than wait_timeout (120), so it could never be missed: lower "
     "target_seconds or raise wait_timeout."),
])
def test_a_bad_catalog_entry_is_one_sentence_from_the_engine_schema_before_any_api_call(cluster, tmp_path, entry,
                                                                                        name, expected):
    """The role checks vllm_modes with the engine's own schema (the one the module and the gateway
    use): the same sentence, and not one request reaches the cluster."""
    extra = tmp_path / "catalog.json"
    extra.write_text(json.dumps({"vllm_modes": {"ml": {"model": "Qwen/Qwen3-8B-AWQ",
                                                       "image": "vllm/vllm-openai:v0.8.5.post1"},
                                                name: entry}}))
    if not REAL:
        cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml", "-e", "@%s" % extra, check=False)
    assert rc != 0
    text = re.sub(r"\s+", " ", out)
    assert "vllm_modes is not usable: " + expected in text, out[-3000:]
    if not REAL:
        assert cluster.requests() == []


def test_gpu_mode_wrapper_runs_switch_mode(cluster):
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(ROOT, "scripts", "gpu-mode"), "status"], cwd="/", env=env,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "vllm-server: mode ml" in proc.stdout
    proc = subprocess.run([os.path.join(ROOT, "scripts", "gpu-mode")], env=env, check=False, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: gpu-mode MODE|status" in proc.stderr


@pytest.mark.sim_only
def test_image_too_new_for_the_driver_is_refused_before_the_cluster_is_touched(cluster, tmp_path):
    """A catalog entry on vllm/vllm-openai:v0.15.1 (CUDA 12.9) on the RTX 3060 with driver 570
    (CUDA 12.8): refused with the reason, ml keeps serving, nothing is written."""
    catalog = {
        "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1",
               "served_model_names": ["Qwen/Qwen3-8B-AWQ"], "vram_mib": 10820,
               "args": ["--quantization", "awq_marlin", "--max-model-len", "8192",
                        "--gpu-memory-utilization", "0.90", "--enforce-eager"]},
        "ml-new": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.15.1", "vram_mib": 10820},
        "gaming": {"replicas": 0},
    }
    extra = tmp_path / "catalog.json"
    extra.write_text(json.dumps({"vllm_modes": catalog}))
    before = cluster.deployment().metadata.resource_version
    cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml-new", "-e", "@%s" % extra, check=False)
    assert rc != 0
    text = re.sub(r"\s+", " ", out)
    assert "vllm/vllm-openai:v0.15.1" in text and "12.9" in text and "570" in text, out[-3000:]
    assert cluster.writes() == []
    assert cluster.deployment().metadata.resource_version == before


@pytest.mark.sim_only
def test_failed_switch_restores_the_previous_mode_and_says_why(cluster):
    r1 = "casperhansen/deepseek-r1-distill-qwen-7b-awq"
    cluster.patch_scenario({"models": {r1: {"crash": "RuntimeError: simulated engine failure"}}})
    try:
        rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1", check=False)
    finally:
        cluster.patch_scenario({"models": {r1: {"crash": None}}})
    assert rc != 0
    assert "vllm-server: switch to r1 FAILED in phase" in out, out[-3000:]
    assert "rolled back: the cluster is in mode ml and ready" in out
    assert "RuntimeError: simulated engine failure" in out
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml" and dep.status.ready_replicas == 1


def test_check_mode_switch_reports_and_writes_nothing(cluster):
    if not REAL:
        cluster.reset_requests()
    before = cluster.deployment()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1", "--check", "--diff")
    assert "would switch ml -> r1" in out, out[-3000:]
    after = cluster.deployment()
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.metadata.labels["gpu-mode"] == "ml"
    if not REAL:
        assert cluster.writes() == []


@pytest.mark.sim_only
def test_site_in_check_mode_on_a_fresh_cluster_creates_nothing(tmp_path):
    proc, fresh = start_sim(tmp_path)
    try:
        rc, out = ansible_playbook(fresh, "site.yml", "--check", "--diff")
        assert "namespace ml does not exist yet" in re.sub(r"\s+", " ", out)
        assert not fresh.namespace_exists()
        assert fresh.writes() == []
    finally:
        stop_sim(proc)


def test_switch_mode_checks_vllm_modes_like_site_yml(cluster, tmp_path):
    # vllm_modes given as a list: the role's own sentence, not a Jinja error, and nothing written.
    extra = tmp_path / "catalog.json"
    extra.write_text(json.dumps({"vllm_modes": [{"ml": {"model": "Qwen/Qwen3-8B-AWQ"}}]}))
    cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml", "-e", "@%s" % extra, check=False)
    assert rc != 0
    text = re.sub(r"\s+", " ", out)
    assert "vllm_modes is not usable: the mode catalog" in text and "must be a non-empty dict" in text, out[-3000:]
    assert "dict2items" not in text
    assert cluster.writes() == []


@pytest.mark.sim_only
def test_once_the_gpu_node_caches_every_model_vllm_runs_offline_and_a_rerun_restarts_nothing(cluster):
    """The gpu_worker role lists the completed downloads in the Node annotation
    homelab.gpu/cached-models; with every model of the catalog there, the next switch runs
    vLLM with HF_HUB_OFFLINE=1 (one restart), and the run after it changes nothing. An inventory
    that prefetches nothing does not read the Nodes for it: its no-op stays at three requests."""
    import yaml
    from ansible_collections.homelab.gpu.plugins.filter.models_cached import catalog_models
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        models = catalog_models(yaml.safe_load(handle)["vllm_modes"])
    cluster.core.patch_node("k3s-gpu-worker", {"metadata": {"annotations": {
        "homelab.gpu/cached-models": json.dumps(models)}}})
    # An inventory that prefetches nothing never reads the Nodes for it: no request, no restart.
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml")
    before = pod_uids(cluster)
    cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml")
    served = ["%s %s" % (r["method"], r["path"]) for r in cluster.requests()
              if not r["path"].startswith("/_sim")]
    assert recap(out)["changed"] == 0 and pod_uids(cluster) == before
    assert not [r for r in served if r.startswith("GET /api/v1/nodes")], served
    assert len(served) <= 3, served
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml", "-e", "gpu_worker_prefetch_models=true")
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml" and dep.status.ready_replicas == 1
    pods = cluster.core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=vllm-server").items
    env = [dict((e.name, e.value) for e in p.spec.containers[0].env) for p in pods
           if not p.metadata.deletion_timestamp]
    assert env and all(e.get("HF_HUB_OFFLINE") == "1" for e in env), env
    before = pod_uids(cluster)
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml", "-e", "gpu_worker_prefetch_models=true")
    assert recap(out)["changed"] == 0
    assert pod_uids(cluster) == before

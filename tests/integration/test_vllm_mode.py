"""homelab.gpu.vllm_mode and vllm_mode_info through ansible-playbook against the simulated cluster.

Every test gets a fresh cluster (kube_sim fixture, default scenario: the reference home lab with
an RTX 3060 on driver 570.195.03). The module reaches it through KUBECONFIG; the tests look at
the cluster through the kubernetes client and, where marked sim_only, at the simulator's request
log (what the module wrote) and its scenario controls.
"""
import copy
import datetime
import json
import os
import re
import time
import urllib.parse

import pytest
from kubernetes import client

NS = "ml"
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
MODES = {
    "ml": {"description": "Qwen3 8B AWQ", "model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--quantization", "awq_marlin", "--max-model-len", "8192", "--gpu-memory-utilization", "0.90",
                    "--enforce-eager"],
           "vram_mib": 10820, "wait_timeout": 120},
    "r1": {"description": "R1 distill", "model": "casperhansen/deepseek-r1-distill-qwen-7b-awq",
           "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--tokenizer", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "--reasoning-parser", "deepseek_r1",
                    "--quantization", "awq_marlin", "--max-model-len", "8192", "--enforce-eager"],
           "vram_mib": 10600, "wait_timeout": 120},
    "gaming": {"description": "GPU free", "replicas": 0, "wait_timeout": 30},
}
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)


@pytest.fixture
def kube_sim(kube_sim_factory):
    """The simulated cluster at speed 50 (these tests wait for real switches; $HOMELAB_GPU_SIM_SPEED
    overrides), or the real cluster of $HOMELAB_GPU_KUBECONFIG."""
    return kube_sim_factory(speed=SPEED)


def task(mode, modes=None, name="switch", **options):
    args = {"mode": mode, "modes": modes or MODES, "pod": POD, "registry": {"offline": True}}
    args.update(options)
    return {"name": name, "homelab.gpu.vllm_mode": args, "ignore_errors": True}


def switch(playbook, cluster, mode, modes=None, check=False, diff=False, **options):
    run = playbook.run([task(mode, modes, **options)], kubeconfig=cluster.kubeconfig, check=check, diff=diff)
    assert run.tasks, run.stdout[-3000:] + run.stderr[-3000:]
    return run.result("switch")


def writes(cluster):
    return [r for r in cluster.requests()["log"]
            if r["method"] in WRITE_METHODS and not r["path"].startswith("/_sim")]


class Api(object):
    def __init__(self, cluster):
        api = cluster.api_client()
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.coord = client.CoordinationV1Api(api)

    def setup(self, service=True):
        self.core.create_namespace({"metadata": {"name": NS}})
        if service:
            self.core.create_namespaced_service(NS, {
                "metadata": {"name": "vllm-api"},
                "spec": {"selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-server"},
                         "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
        return self

    def deployment(self):
        return self.apps.read_namespaced_deployment("vllm-server", NS)

    def pods(self, selector="app.kubernetes.io/instance=vllm-server"):
        return self.core.list_namespaced_pod(NS, label_selector=selector).items

    def pod_uids(self, selector="app.kubernetes.io/instance=vllm-server"):
        return sorted(p.metadata.uid for p in self.pods(selector))

    def configmap(self, name="llm-fallback-config"):
        return self.core.read_namespaced_config_map(name, NS).data or {}


@pytest.fixture
def api(kube_sim):
    return Api(kube_sim).setup()


def assert_serving(res, mode, model):
    assert res.get("failed") is not True, res.get("msg")
    assert res["mode"] == mode and res["model"] == model
    assert res["pod"] and res["node"] == "k3s-gpu-worker"
    assert res["within_budget"] is True
    for phase in ("terminate", "schedule", "pull", "start", "ready", "verify"):
        assert isinstance(res["phases"][phase], float), (phase, res["phases"])


# --------------------------------------------------------------------------------------------

@pytest.mark.sim_only
def test_deploy_then_ml_r1_gaming_ml_with_no_op_reruns(playbook, kube_sim, api):
    res = switch(playbook, kube_sim, "ml")
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    assert res["changed"] is True and res["previous_mode"] is None and res["plan"] == "apply"
    assert res["checks"]["cuda"]["verdict"] == "pass"
    assert res["checks"]["cuda"]["inputs"]["image_cuda_source"] == "table"
    assert res["checks"]["cuda"]["inputs"]["driver_version"] == "570.195.03"
    assert res["checks"]["vram"]["verdict"] == "pass"
    assert res["served_model_names"] == ["Qwen/Qwen3-8B-AWQ", "local-llm"]
    dep = api.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml"
    assert dep.metadata.annotations["homelab.gpu/fingerprint"].startswith("sha256:")
    assert dep.spec.strategy.type == "Recreate"
    data = api.configmap()
    assert data["VLLM_MODE"] == "ml" and data["VLLM_MODEL"] == "Qwen/Qwen3-8B-AWQ"
    assert data["VLLM_SERVED_MODEL_NAMES"] == "Qwen/Qwen3-8B-AWQ,local-llm"
    assert data["VLLM_ENDPOINT"] == "http://vllm-api.ml.svc.cluster.local:8000"
    assert data["OPENAI_BASE_URL"] == "http://vllm-api.ml.svc.cluster.local:8000/v1"
    assert "OLLAMA_ENDPOINT" not in data and "OLLAMA_GENERATE_ENDPOINT" not in data    # no CPU fallback set
    ml_pods = api.pod_uids()

    # The same mode again: nothing written, nothing restarted, a handful of reads.
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is False and res["plan"] == "noop"
    assert writes(kube_sim) == []
    # (watches of the previous run show up in the log when the server notices they were closed)
    reads = [r for r in kube_sim.requests()["log"] if "watch=true" not in (r.get("query") or "")]
    assert len(reads) <= 5, reads
    # the module's own budget: the Deployment, /v1/models through the proxy, one list of ConfigMaps
    assert res["api_requests"]["requests"] <= 3, res["api_requests"]
    assert api.pod_uids() == ml_pods

    res = switch(playbook, kube_sim, "r1")
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    assert res["changed"] is True and res["previous_mode"] == "ml"
    assert api.deployment().metadata.labels["gpu-mode"] == "r1"
    assert api.configmap()["VLLM_MODE"] == "r1"
    assert set(api.pod_uids()).isdisjoint(ml_pods)

    res = switch(playbook, kube_sim, "gaming")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is True and res["previous_mode"] == "r1" and res["model"] is None
    assert api.pods() == []                                    # no pod left, terminating ones included
    assert api.deployment().spec.replicas == 0
    assert api.configmap()["VLLM_MODE"] == "gaming" and api.configmap()["VLLM_MODEL"] == ""

    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "gaming")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is False and writes(kube_sim) == []

    res = switch(playbook, kube_sim, "ml")
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    assert res["previous_mode"] == "gaming"
    assert api.configmap()["VLLM_MODE"] == "ml"


@pytest.mark.sim_only
def test_verify_completion_gets_a_token_and_verify_health_asks_health_only(playbook, kube_sim, api):
    proxy = "/api/v1/namespaces/ml/services/vllm-api:8000/proxy"
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", verify="completion")
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    log = [(r["method"], r["path"]) for r in kube_sim.requests()["log"]]
    assert ("GET", proxy + "/v1/models") in log
    assert ("POST", proxy + "/v1/completions") in log, log

    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "r1", verify="health")
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    paths = [r["path"] for r in kube_sim.requests()["log"] if r["path"].startswith(proxy)]
    assert paths and set(paths) == {proxy + "/health"}, paths


def n8n_request(env):
    """The first request of docs/usage.md's n8n snippet, its ``{{ $env.KEY }}`` filled from ``env``
    (the pod's environment: the client ConfigMap): (method, url, JSON body)."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "usage.md")) as handle:
        text = handle.read()
    block = re.search(r"```text\n(POST \{\{ \$env\.VLLM_ENDPOINT \}\}.*?)```", text, re.S).group(1)
    line, body = block.strip().split("\n\n")[0].splitlines()
    method, url = line.split(" ", 1)
    return method, re.sub(r"\{\{ \$env\.(\w+) \}\}", lambda m: env[m.group(1)], url), json.loads(body)


def through_service_proxy(cluster, method, url, body):
    """Send a request to an in-cluster Service URL (``http://SVC.NS.svc.cluster.local:PORT/PATH``, what a
    pod reaches through the cluster's DNS) through the API server's service proxy; returns (status, JSON)."""
    parts = urllib.parse.urlsplit(url)
    service, namespace, rest = parts.hostname.split(".", 2)
    assert rest == "svc.cluster.local", url
    path = "/api/v1/namespaces/%s/services/%s:%d/proxy%s" % (namespace, service, parts.port, parts.path)
    api_client = cluster.api_client()
    request = api_client.param_serialize(method, path, body=body, auth_settings=["BearerToken"],
                                         header_params={"Content-Type": "application/json",
                                                        "Accept": "application/json"})
    response = api_client.call_api(*request)
    return response.status, json.loads(response.read())


@pytest.mark.sim_only
def test_an_older_client_configmap_is_corrected_by_a_no_op_and_the_n8n_snippet_answers(playbook, kube_sim, api):
    base = "http://vllm-api.ml.svc.cluster.local:8000"
    fallback = "http://ollama-cpu.ml.svc.cluster.local:11434/v1"     # an older inventory's value (OpenAI path)
    res = switch(playbook, kube_sim, "ml", cpu_fallback_endpoint=fallback)
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    # the layout an older version of the collection left (VLLM_ENDPOINT with /v1, CPU_FALLBACK_ENDPOINT)
    cm = api.core.read_namespaced_config_map("llm-fallback-config", NS)
    cm.data = {"VLLM_ENDPOINT": base + "/v1", "VLLM_HEALTH_ENDPOINT": base + "/health",
               "CPU_FALLBACK_ENDPOINT": fallback, "VLLM_MODE": "ml", "VLLM_MODEL": "Qwen/Qwen3-8B-AWQ",
               "VLLM_SERVED_MODEL_NAMES": "Qwen/Qwen3-8B-AWQ,local-llm"}
    api.core.replace_namespaced_config_map("llm-fallback-config", NS, cm)

    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", cpu_fallback_endpoint=fallback)
    assert res.get("failed") is not True, res.get("msg")
    assert res["plan"] == "noop" and res["changed"] is True
    # one write, the ConfigMap's; the Deployment and its pod are left alone
    assert [(w["method"], w["path"]) for w in writes(kube_sim)] == [
        ("PATCH", "/api/v1/namespaces/ml/configmaps/llm-fallback-config")]
    data = api.configmap()
    assert data == {"VLLM_ENDPOINT": base, "VLLM_HEALTH_ENDPOINT": base + "/health", "OPENAI_BASE_URL": base + "/v1",
                    "OLLAMA_ENDPOINT": "http://ollama-cpu.ml.svc.cluster.local:11434",
                    "OLLAMA_GENERATE_ENDPOINT": "http://ollama-cpu.ml.svc.cluster.local:11434/api/generate",
                    "VLLM_MODE": "ml", "VLLM_MODEL": "Qwen/Qwen3-8B-AWQ",
                    "VLLM_SERVED_MODEL_NAMES": "Qwen/Qwen3-8B-AWQ,local-llm"}

    # a workflow written for the old README: VLLM_ENDPOINT + /v1/completions
    method, url, body = n8n_request(data)
    assert url == base + "/v1/completions"
    status, answer = through_service_proxy(kube_sim, method, url, body)
    assert status == 200, answer
    assert answer["model"] == body["model"] and answer["choices"][0]["text"]

    # a later no-op finds nothing to correct
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", cpu_fallback_endpoint=fallback)
    assert res["changed"] is False and writes(kube_sim) == []


def test_profile_edit_is_a_change_and_restarts_the_pod(playbook, kube_sim, api):
    assert switch(playbook, kube_sim, "ml")["changed"] is True
    before = api.pod_uids()
    edited = copy.deepcopy(MODES)
    edited["ml"]["args"] = edited["ml"]["args"] + ["--max-num-seqs", "8"]
    res = switch(playbook, kube_sim, "ml", modes=edited)
    assert res["changed"] is True and res["plan"] == "apply" and "profile" in res["reason"]
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    assert api.pod_uids() != before
    assert "--max-num-seqs" in api.deployment().spec.template.spec.containers[0].args


@pytest.mark.sim_only
def test_check_mode_reports_verdicts_and_the_diff_and_writes_nothing(playbook, kube_sim, api):
    switch(playbook, kube_sim, "ml")
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "r1", check=True, diff=True)
    assert res["changed"] is True
    assert res["would"] == {"from": "ml", "to": "r1", "action": "apply", "image": "vllm/vllm-openai:v0.8.5.post1",
                            "model": "casperhansen/deepseek-r1-distill-qwen-7b-awq"}
    assert res["checks"]["cuda"]["verdict"] == "pass" and res["checks"]["vram"]["verdict"] == "pass"
    before = res["diff"]["before"]["spec"]["template"]["spec"]["containers"][0]["args"]
    after = res["diff"]["after"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "Qwen/Qwen3-8B-AWQ" in before and "casperhansen/deepseek-r1-distill-qwen-7b-awq" in after
    assert writes(kube_sim) == []
    assert api.deployment().metadata.labels["gpu-mode"] == "ml"


@pytest.mark.sim_only
def test_image_with_too_new_cuda_is_refused_before_any_write(playbook, kube_sim, api):
    switch(playbook, kube_sim, "ml")
    before = api.pod_uids()
    modes = copy.deepcopy(MODES)
    modes["ml"]["image"] = "vllm/vllm-openai:v0.15.1"
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", modes=modes)
    assert res["failed"] is True and res["changed"] is False
    msg = res["msg"]
    for words in ("vllm/vllm-openai:v0.15.1", "12.9", "570.195.03", "12.8", "RTX-3060", "rule", "before touching"):
        assert words in msg, (words, msg)
    assert res["failure"]["phase"] == "preflight"
    assert res["checks"]["cuda"]["verdict"] == "fail"
    assert writes(kube_sim) == []
    assert api.pod_uids() == before and api.deployment().spec.template.spec.containers[0].image.endswith("v0.8.5.post1")

    # An image whose CUDA nobody can tell (not in the table, registry not asked) is refused under
    # strict, with the way out; cuda_check=warn lets the user take the risk.
    modes["ml"]["image"] = "ghcr.io/example/vllm:custom"
    res = switch(playbook, kube_sim, "ml", modes=modes)
    assert res["failed"] is True and res["checks"]["cuda"]["verdict"] == "unknown"
    assert "image_cuda" in res["msg"] and "cuda_check=warn" in res["msg"]
    assert writes(kube_sim) == []


def test_unknown_mode_lists_the_modes_and_missing_namespace_is_one_sentence(playbook, kube_sim):
    res = switch(playbook, kube_sim, "turbo")
    assert res["failed"] is True and "Unknown mode 'turbo': choose one of gaming, ml, r1" in res["msg"]
    res = switch(playbook, kube_sim, "ml")                     # namespace ml does not exist yet
    assert res["failed"] is True
    assert res["msg"].startswith("Namespace ml does not exist: create it first")


@pytest.mark.sim_only
def test_no_permission_is_one_clear_sentence_and_nothing_is_written(playbook, kube_sim, api):
    # The kubeconfig's user may read but not take the switch lock (RBAC without leases).
    kube_sim.patch_scenario({"faults": {"forbid": ["create leases", "update leases"]}})
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml")
    assert res["failed"] is True and res["changed"] is False
    assert res["msg"].startswith("No permission: POST /apis/coordination.k8s.io/v1/namespaces/ml/leases"), res["msg"]
    assert "Grant the user of this kubeconfig the RBAC rights" in res["msg"]
    assert [(w["method"], w["status"]) for w in writes(kube_sim)] == [("POST", 403)]   # not retried
    with pytest.raises(client.ApiException) as err:
        api.deployment()
    assert err.value.status == 404


def test_wrong_kubeconfig_is_one_clear_sentence(playbook, kube_sim, tmp_path):
    res = switch(playbook, kube_sim, "ml", kubeconfig=str(tmp_path / "missing.yaml"))
    assert res["failed"] is True
    # (Ansible masks the path: the kubeconfig option is no_log)
    assert res["msg"].startswith("Could not load the cluster connection: the kubeconfig file "), res["msg"]
    assert "(kubeconfig option or K8S_AUTH_KUBECONFIG) does not exist" in res["msg"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    res = switch(playbook, kube_sim, "ml", kubeconfig=str(bad))
    assert res["failed"] is True and res["msg"].startswith("Could not load the cluster connection from the kubeconfig")


def test_a_missing_kubeconfig_env_file_and_a_wrong_context_are_named(playbook, kube_sim, tmp_path):
    missing = str(tmp_path / "gone.yaml")
    run = playbook.run([task("ml")], kubeconfig=kube_sim.kubeconfig,
                       env={"KUBECONFIG": missing, "K8S_AUTH_KUBECONFIG": ""})
    res = run.result("switch")
    assert res["failed"] is True
    assert res["msg"].startswith("Could not load the cluster connection: the kubeconfig file %s named by "
                                 "$KUBECONFIG does not exist" % missing), res["msg"]
    assert "~/.kube/config" not in res["msg"]
    res = switch(playbook, kube_sim, "ml", context="no-such-context")
    assert res["failed"] is True
    assert res["msg"].startswith("Could not load the cluster connection from the kubeconfig file %s"
                                 % kube_sim.kubeconfig), res["msg"]
    assert "(context no-such-context)" in res["msg"] and "kubectl config get-contexts" in res["msg"]


@pytest.mark.sim_only
def test_a_held_lease_fails_fast_naming_its_holder_and_an_expired_one_is_taken_over(playbook, kube_sim, api):
    switch(playbook, kube_sim, "ml")
    now = datetime.datetime.now(datetime.timezone.utc)
    api.coord.create_namespaced_lease(NS, {
        "metadata": {"name": "vllm-server-switch"},
        "spec": {"holderIdentity": "nuc-admin/4242", "leaseDurationSeconds": 30,
                 "acquireTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "r1")
    assert res["failed"] is True
    assert "held by nuc-admin/4242 since" in res["msg"] and "nothing was changed" in res["msg"]
    assert writes(kube_sim) == []
    assert api.deployment().metadata.labels["gpu-mode"] == "ml"

    # The holder was killed: its lease stops being renewed and expires.
    old = now - datetime.timedelta(seconds=120)
    lease = api.coord.read_namespaced_lease("vllm-server-switch", NS)
    lease.spec.renew_time = old
    lease.spec.acquire_time = old
    api.coord.replace_namespaced_lease("vllm-server-switch", NS, lease)
    res = switch(playbook, kube_sim, "r1")
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    assert any("took over the switch lock" in w for w in res.get("warnings", []))
    assert [x.metadata.name for x in api.coord.list_namespaced_lease(NS).items] == []


@pytest.mark.sim_only
def test_injected_api_faults_are_retried_and_the_switch_succeeds(playbook, kube_sim, api):
    switch(playbook, kube_sim, "ml")
    kube_sim.patch_scenario({"faults": {"error_rate": 0.2, "error_status": 503, "drop_watch_rate": 0.5, "seed": 7}})
    res = switch(playbook, kube_sim, "r1")
    kube_sim.patch_scenario({"faults": {"error_rate": 0.0, "drop_watch_rate": 0.0}})
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    assert res["api_requests"]["retries"] > 0
    assert any(r["status"] == 503 for r in kube_sim.requests()["log"])


def test_status_info_reports_mode_node_driver_and_verdicts(playbook, kube_sim, api):
    switch(playbook, kube_sim, "r1")
    modes = copy.deepcopy(MODES)
    modes["next"] = dict(modes["ml"], image="vllm/vllm-openai:v0.15.1")
    run = playbook.run([{"name": "info", "homelab.gpu.vllm_mode_info": {
        "modes": modes, "pod": POD, "registry": {"offline": True}}}], kubeconfig=kube_sim.kubeconfig)
    res = run.result("info")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is False
    assert res["mode"] == "r1" and res["ready"] is True and res["ready_since"]
    assert res["model"] == "casperhansen/deepseek-r1-distill-qwen-7b-awq"
    assert "local-llm" in res["served_model_names"]
    assert res["image"] == "vllm/vllm-openai:v0.8.5.post1"
    assert res["node"] == "k3s-gpu-worker" and res["pod"]
    assert res["driver_version"] == "570.195.03" and res["driver_cuda"] == "12.8"
    assert "3060" in res["gpu_product"]
    assert res["available_modes"] == ["gaming", "ml", "next", "r1"]
    assert res["modes"]["r1"]["current"] is True
    assert res["modes"]["ml"]["cuda"]["verdict"] == "pass"
    assert res["modes"]["next"]["cuda"]["verdict"] == "fail"
    assert res["modes"]["gaming"]["cuda"]["verdict"] == "skipped"
    assert res["last_switch"]["mode"] == "r1" and res["last_switch"]["in_progress"] is False


def wait_ready(api, selector, timeout=60):
    """Until a pod matching ``selector`` is Ready (a setup helper, not an assertion on time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in api.pods(selector):
            if not p.metadata.deletion_timestamp and any(
                    c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])):
                return p
        time.sleep(0.1)
    raise AssertionError("no Ready pod for %s after %d s" % (selector, timeout))


def apply_old_script(cluster, name):
    import os
    from kubernetes import utils
    path = os.path.join(os.path.dirname(__file__), "fixtures", "old_script", name)
    utils.create_from_yaml(cluster.api_client(), path)


def test_a_cluster_set_up_by_the_old_script_is_taken_over_without_a_restart(playbook, kube_sim):
    api = Api(kube_sim)
    apply_old_script(kube_sim, "vllm-ml.yaml")
    old_pod = wait_ready(api, "app=vllm-server")

    run = playbook.run([{"name": "info", "homelab.gpu.vllm_mode_info": {
        "modes": MODES, "pod": POD, "registry": {"offline": True}}}], kubeconfig=kube_sim.kubeconfig)
    info = run.result("info")
    assert info["mode"] == "ml" and info["old_script"] is True and info["managed"] is False
    assert info["model"] == "Qwen/Qwen3-8B-AWQ" and info["ready"] is True

    res = switch(playbook, kube_sim, "ml")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is True and res["plan"] == "adopt" and res["previous_mode"] == "ml"
    assert res["pod"] == old_pod.metadata.name
    dep = api.deployment()
    assert dep.metadata.annotations["homelab.gpu/adopted"] == "old-script"
    assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "homelab.gpu"
    assert [p.metadata.uid for p in api.pods("app=vllm-server")] == [old_pod.metadata.uid]   # not restarted
    assert api.configmap()["VLLM_MODE"] == "ml"

    # The same mode again: the adopted pod still serves what the old script gave it (no alias
    # until the next real change); the run must verify that, not the alias, and write nothing.
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is False and res["plan"] == "noop"
    assert writes(kube_sim) == []
    assert res["served_model_names"] == ["Qwen/Qwen3-8B-AWQ"]
    assert api.configmap()["VLLM_SERVED_MODEL_NAMES"] == "Qwen/Qwen3-8B-AWQ"

    res = switch(playbook, kube_sim, "r1")
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    assert res["plan"] == "replace"
    dep = api.deployment()
    assert dep.spec.selector.match_labels == {"app": "vllm-server"}        # immutable, kept
    containers = dep.spec.template.spec.containers
    assert [c.name for c in containers] == ["vllm"]                        # the old container is gone
    assert containers[0].readiness_probe.initial_delay_seconds in (0, None)
    assert containers[0].startup_probe.http_get.path == "/health"
    assert "HUGGING_FACE_HUB_TOKEN" not in [e.name for e in containers[0].env or []]
    assert "homelab.gpu/adopted" not in (dep.metadata.annotations or {})

    res = switch(playbook, kube_sim, "r1")
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is False


def test_old_script_gaming_is_recognised(playbook, kube_sim):
    api = Api(kube_sim)
    apply_old_script(kube_sim, "vllm-ml.yaml")
    api.apps.patch_namespaced_deployment_scale("vllm-server", NS, {"spec": {"replicas": 0}})
    run = playbook.run([{"name": "info", "homelab.gpu.vllm_mode_info": {
        "modes": MODES, "pod": POD, "registry": {"offline": True}}}], kubeconfig=kube_sim.kubeconfig)
    assert run.result("info")["mode"] == "gaming"
    res = switch(playbook, kube_sim, "gaming")
    assert res.get("failed") is not True, res.get("msg")
    assert res["previous_mode"] == "gaming" and res["plan"] == "scale_down"
    assert api.deployment().metadata.labels["gpu-mode"] == "gaming"
    assert switch(playbook, kube_sim, "gaming")["changed"] is False


@pytest.mark.sim_only
def test_two_concurrent_switches_one_fails_fast_one_waits_for_the_lock(playbook, kube_sim, api):
    switch(playbook, kube_sim, "ml")
    # A slow r1 (1000 s simulated load, 20 s at speed 50, within the startup probe's budget of twice its
    # wait_timeout): long enough that the second ansible-playbook starts while the first still holds the
    # lock even on a loaded machine.
    modes = copy.deepcopy(MODES)
    modes["r1"]["wait_timeout"] = 600
    kube_sim.patch_scenario({"models": {"casperhansen/deepseek-r1-distill-qwen-7b-awq": {"load_seconds": 1000}}})
    first = playbook.start([task("r1", modes)], kubeconfig=kube_sim.kubeconfig)
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
    while not api.coord.list_namespaced_lease(NS).items:       # the first run holds the lock
        assert datetime.datetime.now() < deadline, "the first switch never took the lock"
        time.sleep(0.05)
    holder = api.coord.read_namespaced_lease("vllm-server-switch", NS).spec.holder_identity
    second = switch(playbook, kube_sim, "gaming")
    assert second["failed"] is True
    assert "held by %s since" % holder in second["msg"] and "nothing was changed" in second["msg"]
    third = playbook.start([task("r1", modes, lock_timeout=120)], kubeconfig=kube_sim.kubeconfig)
    res = playbook.finish(first).result("switch")
    assert_serving(res, "r1", "casperhansen/deepseek-r1-distill-qwen-7b-awq")
    res = playbook.finish(third).result("switch")
    assert res.get("failed") is not True, res.get("msg")
    # it waited for the lock, then found r1 in place (or, when it read the Deployment while the first
    # run was still loading, followed that rollout to its end): nothing changed either way
    assert res["changed"] is False and res["plan"] in ("noop", "resume")


def test_an_offline_pod_runs_with_hf_hub_offline_and_a_rerun_changes_nothing(playbook, kube_sim, api):
    offline = dict(POD, hf_hub_offline=True)
    res = switch(playbook, kube_sim, "ml", pod=offline)
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    pod_env = dict((e.name, e.value) for e in api.pods()[0].spec.containers[0].env)
    assert pod_env["HF_HUB_OFFLINE"] == "1"
    again = switch(playbook, kube_sim, "ml", pod=offline)
    assert again["changed"] is False and again["plan"] == "noop", again.get("reason")

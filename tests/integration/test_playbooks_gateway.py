"""The on-demand gateway as site.yml deploys it (issue: point 1) and as
`switch_mode.yml -e mode=status` shows it, against the simulated cluster.

The tests share one cluster and run in file order: deploy with the gateway on
(the default), re-run (nothing changes, nothing restarts, the token stays and
is never printed), RBAC covers every request the switch engine makes, status
shows what the gateway answers, a vault token rolls the pod, then
vllm_gateway_enabled: false removes every gateway object. The one-line answers
of status when the gateway does not answer are unit-tested
(tests/unit/plugins/modules/test_vllm_gateway_info.py).

In the simulator the gateway's container is a plain Python image that answers
"ok"; for the status test the scenario's images.<ref>.forward sends its
requests to a local HTTP server standing for the gateway process (the gateway's
own behaviour is tested with the real process in test_gateway*.py).
"""
import base64
import glob
import io
import json
import os
import re
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client
import yaml

from ansible_collections.homelab.gpu.gateway import config as gateway_config_mod
from tests.integration.test_playbooks import NS, ROOT, ansible_playbook, recap, start_sim, stop_sim

pytestmark = [pytest.mark.slow, pytest.mark.sim_only]

with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as _handle:
    DEFAULTS = yaml.safe_load(_handle)
IMAGE = DEFAULTS["vllm_gateway_image"]
GATEWAY_LABEL = "app.kubernetes.io/name=vllm-gateway"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    proc, cluster = start_sim(tmp_path_factory.mktemp("gateway"))
    api = client.ApiClient(cluster.core.api_client.configuration)
    cluster.rbac = client.RbacAuthorizationV1Api(api)
    state = {}
    yield cluster, state
    stop_sim(proc)


def gateway_pods(cluster):
    return [p for p in cluster.core.list_namespaced_pod(NS, label_selector=GATEWAY_LABEL).items
            if not p.metadata.deletion_timestamp]


def token_of(cluster):
    secret = cluster.core.read_namespaced_secret("vllm-gateway-token", NS)
    return base64.b64decode(secret.data["token"]).decode()


# ------------------------------------------------------------------ a tiny RBAC authorizer
def attributes(entry):
    """(verb, api group, resource[/subresource], namespace, name) of one logged API request."""
    parts = [p for p in entry["path"].split("/") if p]
    query = urllib.parse.parse_qs(entry.get("query") or "")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = urllib.parse.unquote(rest[1]) if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    method = entry["method"]
    if sub == "proxy":
        verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}[method]
    elif method == "GET" and name is None:
        verb = "watch" if query.get("watch", [""])[0] in ("true", "1") else "list"
        selector = query.get("fieldSelector", [""])[0]
        if selector.startswith("metadata.name="):
            name = selector[len("metadata.name="):]
    else:
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return verb, group, resource + ("/" + sub if sub else ""), namespace, name


def allowed(rules, verb, group, resource, name):
    for rule in rules:
        if group not in (rule.api_groups or []) or resource not in (rule.resources or []):
            continue
        if verb not in (rule.verbs or []):
            continue
        if rule.resource_names and name not in rule.resource_names:
            continue
        return True
    return False


def forbidden_requests(cluster, log):
    """The logged requests the gateway's Role (namespace) and ClusterRole (nodes) would refuse."""
    role = cluster.rbac.read_namespaced_role("vllm-gateway", NS).rules
    cluster_role = cluster.rbac.read_cluster_role("vllm-gateway-" + NS).rules
    refused = []
    for entry in log:
        verb, group, resource, namespace, name = attributes(entry)
        rules = role if namespace == NS else cluster_role
        if not allowed(rules, verb, group, resource, name):
            refused.append("%s %s %s %s" % (verb, resource, name or "", entry["path"]))
    return refused


# ------------------------------------------------------------------ a stand-in gateway process
class StandIn(BaseHTTPRequestHandler):
    document = {}

    def do_GET(self):  # pylint: disable=invalid-name
        body = json.dumps(self.document if self.path == "/gateway/status" else {"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# ------------------------------------------------------------------ tests, in order
def test_site_deploys_every_gateway_object_and_it_becomes_ready(lab):
    cluster, state = lab
    rc, out = ansible_playbook(cluster, "site.yml")
    assert rc == 0 and recap(out)["failed"] == 0
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    assert dep.status.ready_replicas == 1 and dep.spec.replicas == 1
    pod_spec = dep.spec.template.spec
    container = pod_spec.containers[0]
    assert container.image == IMAGE
    assert container.command == ["python", "-m", "ansible_collections.homelab.gpu.gateway", "--config",
                                 "/etc/vllm-gateway/config.json"]
    assert pod_spec.service_account_name == "vllm-gateway"
    assert pod_spec.security_context.run_as_non_root and container.security_context.read_only_root_filesystem
    assert container.readiness_probe.http_get.path == "/healthz"
    env = {e.name: e for e in container.env}
    assert env["PYTHONPATH"].value == "/opt/homelab/code.zip"
    assert env["VLLM_GATEWAY_TOKEN"].value_from.secret_key_ref.name == "vllm-gateway-token"
    # the gateway stays off the tainted GPU worker
    (pod,) = gateway_pods(cluster)
    assert pod.spec.node_name == "k3s-server"
    svc = cluster.core.read_namespaced_service("vllm-gateway", NS)
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(8080, "http")]
    assert cluster.core.read_namespaced_service_account("vllm-gateway", NS)
    binding = cluster.rbac.read_namespaced_role_binding("vllm-gateway", NS)
    assert binding.role_ref.name == "vllm-gateway" and binding.subjects[0].name == "vllm-gateway"
    cluster_binding = cluster.rbac.read_cluster_role_binding("vllm-gateway-" + NS)
    assert cluster_binding.subjects[0].namespace == NS
    # the configuration the gateway reads: the catalog and the instance as the role knows them
    config = json.loads(cluster.configmap("vllm-gateway-config")["config.json"])
    # the demo inventory sends the gateway through the service proxy (it runs outside the cluster there)
    assert config["listen"] == "0.0.0.0:8080" and config["namespace"] == NS and config["upstream"] == "proxy"
    (instance,) = config["instances"]
    assert instance["name"] == "vllm-server" and instance["service_name"] == "vllm-api"
    assert instance["default_mode"] == "ml" and sorted(instance["modes"]) == sorted(DEFAULTS["vllm_modes"])
    assert instance["switch"]["status_configmap"] == "llm-fallback-config"
    assert "password" not in json.dumps(config)
    # the HTTP edge's bounds, as the role's defaults set them
    assert [config[key] for key in ("header_timeout", "body_timeout", "keepalive_timeout", "max_connections",
                                    "max_body_memory_bytes")] == [DEFAULTS["vllm_gateway_" + key] for key in (
                                        "header_timeout", "body_timeout", "keepalive_timeout", "max_connections",
                                        "max_body_memory_bytes")]
    state["token"] = token_of(cluster)
    assert len(state["token"]) >= 32
    assert state["token"] not in out
    state["pod_uid"] = pod.metadata.uid
    state["generation"] = dep.metadata.generation


def code_zip_files(cluster):
    """The files of the code ConfigMap's zip (archive path to bytes) and the ConfigMap's keys."""
    code = cluster.core.read_namespaced_config_map("vllm-gateway-code", NS)
    keys = sorted(code.data or {}) + sorted(code.binary_data or {})
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(code.binary_data["code.zip"]))) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}, keys


def test_code_configmap_carries_every_python_file_of_the_gateway_and_the_engine_in_one_zip(lab):
    cluster, _state = lab
    files, keys = code_zip_files(cluster)
    assert keys == ["code.zip"]
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    volume = next(v for v in dep.spec.template.spec.volumes if v.name == "code")
    assert [(item.key, item.path) for item in volume.config_map.items] == [("code.zip", "code.zip")]
    mount = next(m for m in dep.spec.template.spec.containers[0].volume_mounts if m.name == "code")
    assert mount.mount_path == "/opt/homelab"
    expected = {}
    for folder in ("gateway", "plugins/module_utils"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.py"))):
            expected["ansible_collections/homelab/gpu/%s/%s" % (folder, os.path.basename(path))] = path
    assert sorted(files) == sorted(expected)
    for name, path in expected.items():
        with open(path, "rb") as handle:
            assert files[name] == handle.read(), name


def test_rerun_changes_nothing_restarts_nothing_and_never_prints_the_token(lab):
    cluster, state = lab
    rc, out = ansible_playbook(cluster, "site.yml", "--diff", "-v")
    assert rc == 0 and recap(out)["changed"] == 0, out[-4000:]
    # the code zip is built byte for byte the same: check mode shows no difference either
    rc, out = ansible_playbook(cluster, "site.yml", "--check", "--diff")
    assert rc == 0 and recap(out)["changed"] == 0, out[-4000:]
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    assert dep.metadata.generation == state["generation"]
    assert [p.metadata.uid for p in gateway_pods(cluster)] == [state["pod_uid"]]
    assert token_of(cluster) == state["token"]
    assert state["token"] not in out
    assert base64.b64encode(state["token"].encode()).decode() not in out


def old_code_layout():
    """The code ConfigMap's data and the volume's items as releases before the zip shipped them: one
    plain data key per file (gateway.app.py, module_utils.api.py) projected to its collection path."""
    data, items = {}, []
    for folder, prefix in (("gateway", "gateway"), ("plugins/module_utils", "module_utils")):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.py"))):
            key = "%s.%s" % (prefix, os.path.basename(path))
            with open(path) as handle:
                data[key] = handle.read()
            items.append({"key": key, "path": "ansible_collections/homelab/gpu/%s/%s" % (folder, os.path.basename(path))})
    return data, items


def test_an_upgrade_from_one_data_key_per_file_leaves_only_the_zip_and_rolls_the_pod(lab):
    cluster, state = lab
    api = client.ApiClient(cluster.core.api_client.configuration)
    old_data, old_items = old_code_layout()
    # the cluster as the previous release's role left it: the same objects, applied by the same field manager
    code = api.sanitize_for_serialization(cluster.core.read_namespaced_config_map("vllm-gateway-code", NS))
    dep = api.sanitize_for_serialization(cluster.apps.read_namespaced_deployment("vllm-gateway", NS))
    for obj, kind, api_version in ((code, "ConfigMap", "v1"), (dep, "Deployment", "apps/v1")):
        obj.pop("status", None)
        obj.update(kind=kind, apiVersion=api_version,
                   metadata={k: obj["metadata"][k] for k in ("name", "namespace", "labels")})
    del code["binaryData"]
    code["data"] = old_data
    template = dep["spec"]["template"]
    template["metadata"]["annotations"]["homelab.gpu/code-checksum"] = "the-previous-release"
    container = template["spec"]["containers"][0]
    next(e for e in container["env"] if e["name"] == "PYTHONPATH")["value"] = "/opt/homelab"
    next(v for v in template["spec"]["volumes"] if v["name"] == "code")["configMap"]["items"] = old_items
    apply = {"field_manager": DEFAULTS["vllm_field_manager"], "force": True, "_content_type": "application/apply-patch+yaml"}
    cluster.core.patch_namespaced_config_map("vllm-gateway-code", NS, code, **apply)
    cluster.apps.patch_namespaced_deployment("vllm-gateway", NS, dep, **apply)
    assert sorted(cluster.configmap("vllm-gateway-code")) == sorted(old_data)
    old_dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    assert len(next(v for v in old_dep.spec.template.spec.volumes if v.name == "code").config_map.items) == len(old_items)

    rc, out = ansible_playbook(cluster, "site.yml")
    assert rc == 0 and recap(out)["failed"] == 0, out[-3000:]
    files, keys = code_zip_files(cluster)
    assert keys == ["code.zip"], "the old data keys were left behind: %s" % keys
    assert sorted(files) == sorted(item["path"] for item in old_items)
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    volume = next(v for v in dep.spec.template.spec.volumes if v.name == "code")
    assert [(item.key, item.path) for item in volume.config_map.items] == [("code.zip", "code.zip")]
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env["PYTHONPATH"] == "/opt/homelab/code.zip"
    assert dep.metadata.generation > old_dep.metadata.generation and dep.status.ready_replicas == 1
    (pod,) = gateway_pods(cluster)
    assert pod.metadata.uid != state["pod_uid"]
    state["pod_uid"] = pod.metadata.uid
    state["generation"] = dep.metadata.generation


def test_the_role_allows_every_request_a_switch_makes_and_no_more(lab):
    cluster, _state = lab
    cluster.reset_requests()
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1")
    # a failing switch also reads the pod's log and events, and rolls back
    cluster.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"crash": "RuntimeError: simulated crash"}}})
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml", check=False)
    cluster.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"crash": None}}})
    assert rc != 0 and "simulated crash" in out, out[-3000:]
    # a switch to the mode that runs (rolled back to r1) is a no-op: it lists the instance's ConfigMaps
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1")
    log = cluster.requests()
    resources = {attributes(e)[2] for e in log}
    assert {"pods/log", "events", "leases", "nodes", "services/proxy", "deployments"} <= resources, resources
    assert forbidden_requests(cluster, log) == []
    # and nothing broader than the vLLM objects: no secrets, no other Deployment
    role = cluster.rbac.read_namespaced_role("vllm-gateway", NS).rules
    assert not allowed(role, "get", "", "secrets", "vllm-gateway-token")
    assert not allowed(role, "patch", "apps", "deployments", "vllm-gateway")
    assert all("*" not in (r.verbs + r.resources + r.api_groups) for r in role)


def test_status_shows_the_gateways_state(lab):
    cluster, _state = lab
    StandIn.document = {"instances": [{
        "name": "vllm-server", "mode": "gaming", "model": None, "ready": True,
        "ready_since": "2026-11-29T18:00:00Z", "locked": True, "locked_since": "2026-11-29T18:00:00Z",
        "in_flight": 0, "queued": 3,
        "last_switch": {"mode": "gaming", "previous_mode": "r1", "in_progress": False, "result": "ok",
                        "started_at": "2026-11-29T17:59:50Z", "finished_at": "2026-11-29T18:00:00Z",
                        "trigger": "person"}}]}
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cluster.patch_scenario({"images": {IMAGE: {"forward": "http://127.0.0.1:%d" % server.server_address[1]}}})
        cluster.reset_requests()
        rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=status")
    finally:
        cluster.patch_scenario({"images": {IMAGE: None}})
        server.shutdown()
        server.server_close()
    assert rc == 0
    text = re.sub(r"\s+", " ", out)
    assert "gateway vllm-gateway (port 8080): vllm-server: mode gaming, ready since 2026-11-29T18:00:00Z" in text
    assert "requests: 0 in flight, 3 queued" in text
    assert "locked since 2026-11-29T18:00:00Z: a person reserved the GPU" in text
    assert "last switch: r1 -> gaming (person), ok at 2026-11-29T18:00:00Z" in text
    assert cluster.writes() == []
    proxied = [e["path"] for e in cluster.requests() if "/proxy/" in e["path"]]
    assert proxied == ["/api/v1/namespaces/ml/services/vllm-gateway:8080/proxy/gateway/status"]


def test_a_vault_token_replaces_the_generated_one_and_rolls_the_pod(lab):
    cluster, state = lab
    vault_token = "vault-token-" + "x" * 30
    rc, out = ansible_playbook(cluster, "site.yml", "-e", "vllm_gateway_token=" + vault_token)
    assert rc == 0 and vault_token not in out
    assert token_of(cluster) == vault_token
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    assert dep.metadata.generation == state["generation"] + 1
    assert dep.status.ready_replicas == 1
    assert [p.metadata.uid for p in gateway_pods(cluster)] != [state["pod_uid"]]


API_KEYS = [{"name": "n8n", "key": "n8n-key-0123456789abcdef", "swap": False},
            {"name": "webui", "key": "webui-key-0123456789abcdef"}]


def test_api_keys_fallback_progress_and_network_policy_are_rendered_keys_only_into_the_secret(lab, tmp_path):
    cluster, state = lab
    vault_token = token_of(cluster)
    generation = cluster.apps.read_namespaced_deployment("vllm-gateway", NS).metadata.generation
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vllm_gateway_api_keys": [{"name": "n8n", "key": "too-short-key"}]}))
    cluster.reset_requests()
    rc, out = ansible_playbook(cluster, "site.yml", "-e", "@" + str(bad), check=False)
    assert rc != 0 and "check the entries n8n; nothing was changed" in out and "too-short-key" not in out
    assert cluster.writes() == []
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({
        "vllm_gateway_api_keys": API_KEYS, "vllm_gateway_progress": "reasoning",
        "vllm_gateway_fallback_models": {"r1": "qwen2.5:3b", "ml": "qwen2.5:3b"},
        "vllm_gateway_fallback_on": ["locked", "failed"], "vllm_gateway_fallback_wait_seconds": 5,
        "vllm_gateway_network_policy": True, "vllm_gateway_network_policy_namespaces": ["open-webui", "n8n"]}))
    rc, out = ansible_playbook(cluster, "site.yml", "--diff", "-e", "@" + str(extra))
    assert rc == 0 and all(k["key"] not in out for k in API_KEYS)
    secret = cluster.core.read_namespaced_secret("vllm-gateway-token", NS)
    assert json.loads(base64.b64decode(secret.data["api-keys"])) == [
        {"name": "n8n", "key": API_KEYS[0]["key"], "swap": False},
        {"name": "webui", "key": API_KEYS[1]["key"], "swap": True}]
    assert token_of(cluster) == vault_token
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    env = {e.name: e for e in dep.spec.template.spec.containers[0].env}
    ref = env["VLLM_GATEWAY_API_KEYS"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("vllm-gateway-token", "api-keys")
    assert dep.metadata.generation == generation + 1   # the new Secret rolls the pod
    text = cluster.configmap("vllm-gateway-config")["config.json"]
    assert all(k["key"] not in text for k in API_KEYS)
    (instance,) = json.loads(text)["instances"]
    assert instance["progress"] == "reasoning" and instance["progress_interval"] == 2
    assert instance["fallback"] == {"endpoint": None, "models": {"r1": "qwen2.5:3b", "ml": "qwen2.5:3b"},
                                    "on": ["locked", "failed"], "wait_seconds": 5, "timeout": 60,
                                    "max_connections": 8}
    # the gateway itself accepts what the role rendered (the default endpoint comes from the client ConfigMap's)
    config = gateway_config_mod.Config(json.loads(text))
    assert config.instances[0].fallback.enabled == bool(instance["switch"].get("cpu_fallback_endpoint"))
    net = client.NetworkingV1Api(client.ApiClient(cluster.core.api_client.configuration))
    policy = net.read_namespaced_network_policy("vllm-gateway", NS)
    assert policy.spec.pod_selector.match_labels["app.kubernetes.io/name"] == "vllm-gateway"
    (rule,) = policy.spec.ingress
    assert rule.var_from[0].namespace_selector.match_expressions[0].values == [NS, "open-webui", "n8n"]
    # back to the defaults: no keys, no policy, the pod rolls again
    rc, out = ansible_playbook(cluster, "site.yml")
    assert rc == 0
    assert "api-keys" not in (cluster.core.read_namespaced_secret("vllm-gateway-token", NS).data or {})
    assert [p.metadata.name for p in net.list_namespaced_network_policy(NS).items] == []
    dep = cluster.apps.read_namespaced_deployment("vllm-gateway", NS)
    assert "VLLM_GATEWAY_API_KEYS" not in {e.name for e in dep.spec.template.spec.containers[0].env}
    state["generation"] = dep.metadata.generation


def test_disabled_removes_every_gateway_object_and_status_says_so(lab):
    cluster, _state = lab
    vllm_pods = sorted(p.metadata.uid for p in cluster.core.list_namespaced_pod(
        NS, label_selector="app.kubernetes.io/name=vllm").items)
    rc, out = ansible_playbook(cluster, "site.yml", "-e", "vllm_gateway_enabled=false")
    assert rc == 0 and recap(out)["changed"] > 0
    labelled = "app.kubernetes.io/component=gateway"
    for listing in (cluster.apps.list_namespaced_deployment(NS, label_selector=labelled),
                    cluster.core.list_namespaced_service(NS, label_selector=labelled),
                    cluster.core.list_namespaced_config_map(NS, label_selector=labelled),
                    cluster.core.list_namespaced_secret(NS, label_selector=labelled),
                    cluster.core.list_namespaced_service_account(NS, label_selector=labelled),
                    cluster.rbac.list_namespaced_role(NS, label_selector=labelled),
                    cluster.rbac.list_namespaced_role_binding(NS, label_selector=labelled),
                    cluster.rbac.list_cluster_role(label_selector=labelled),
                    cluster.rbac.list_cluster_role_binding(label_selector=labelled)):
        assert [o.metadata.name for o in listing.items] == []
    assert sorted(p.metadata.uid for p in cluster.core.list_namespaced_pod(
        NS, label_selector="app.kubernetes.io/name=vllm").items) == vllm_pods
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=status", "-e", "vllm_gateway_enabled=false")
    assert rc == 0 and "gateway: disabled (vllm_gateway_enabled: false)" in out
